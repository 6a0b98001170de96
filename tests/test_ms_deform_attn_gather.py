"""The Gather form of multi-scale deformable attention (what exported graphs hold by default) against the PyTorch
reference, eager and exported to ONNX (no GridSample node), and the choice of form while exporting."""
import contextlib

import onnx
import onnxruntime
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import mask_former.ops as ops
from mask_former.ops import (
    EXPORT_FORMS,
    IMPLEMENTATION_ENV,
    choose_implementation,
    export_form,
    ms_deform_attn,
    ms_deform_attn_gather,
)
from test_ms_deform_attn import ODD_LEVELS, TOLERANCES, assert_matches_reference, make_inputs
from test_ms_deform_attn_triton import border_inputs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels", [1, 7])
def test_gather_form_matches_reference(dtype, channels):
    inputs = make_inputs(ODD_LEVELS, heads=3, channels=channels, queries=40, points=4, dtype=dtype)
    assert_matches_reference(inputs, dtype, kernel=ms_deform_attn_gather)


def test_gather_form_on_borders_and_outside():
    assert_matches_reference(list(border_inputs(torch.float64)), torch.float64, kernel=ms_deform_attn_gather)


def test_gather_form_takes_sizes_as_a_list_and_no_queries():
    value, shapes, starts, locations, weights = make_inputs(ODD_LEVELS)
    as_list = ms_deform_attn_gather(value, ODD_LEVELS, None, locations, weights)
    assert torch.equal(as_list, ms_deform_attn_gather(value, shapes, starts, locations, weights))
    empty = ms_deform_attn_gather(value, shapes, starts, locations[:, :0], weights[:, :0])
    assert empty.shape == (2, 0, 16)


class TwoLevels(nn.Module):
    """Deformable attention over a map and its 2x-pooled copy, sizes taken from the input (as the pixel decoder
    does): ``forward(map [1, M * D, H, W], locations [1, Lq, M, 2, P, 2], weights [1, Lq, M, 2, P])``."""

    heads = 2

    def forward(self, feature, locations, weights):
        maps = [feature, F.avg_pool2d(feature, 2)]
        shapes = [tuple(m.shape[-2:]) for m in maps]
        value = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
        value = value.view(1, value.shape[1], self.heads, -1)
        return ms_deform_attn(value, shapes, None, locations, weights)


def two_level_inputs(height, width, queries=30, seed=0):
    generator = torch.Generator().manual_seed(seed)
    feature = torch.randn(1, 2 * 3, height, width, generator=generator)
    locations = torch.rand(1, queries, 2, 2, 4, 2, generator=generator) * 1.2 - 0.1
    weights = torch.rand(1, queries, 2, 2, 4, generator=generator)
    return feature, locations, weights


def export_two_levels(path, form):
    with torch.no_grad(), export_form(form):
        torch.onnx.export(
            TwoLevels(), two_level_inputs(8, 12), str(path), dynamo=False, opset_version=18,
            input_names=["feature", "locations", "weights"],
            dynamic_axes={"feature": {2: "height", 3: "width"}, "locations": {1: "queries"}, "weights": {1: "queries"}},
        )
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("form, op", [("gather", "Gather"), ("grid-sample", "GridSample")])
def test_onnx_forms_equal_the_reference_at_other_sizes(tmp_path, form, op):
    operators = export_two_levels(tmp_path / "model.onnx", form)
    assert op in operators
    assert ("GridSample" in operators) == (form == "grid-sample")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for height, width in [(8, 12), (11, 7), (5, 16)]:
        feature, locations, weights = two_level_inputs(height, width, queries=17, seed=height)
        (result,) = session.run(None, {"feature": feature.numpy(), "locations": locations.numpy(),
                                       "weights": weights.numpy()})
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(IMPLEMENTATION_ENV, "pytorch")
            expected = TwoLevels()(feature, locations, weights)
        torch.testing.assert_close(torch.from_numpy(result), expected, rtol=TOLERANCES[torch.float32], atol=1e-6)


def test_tracing_chooses_the_export_form():
    value = make_inputs(ODD_LEVELS)[0]
    forms = []

    def record(*inputs):
        forms.append(choose_implementation(value))
        return inputs[0] * 2

    for form in [None, "grid-sample", "gather"]:
        with export_form(form) if form else contextlib.nullcontext():
            torch.jit.trace(record, (value,), check_trace=False)
    assert [name for name, _ in forms] == ["gather", "pytorch", "gather"]
    assert forms[1][1] == "exporting (standard operators only), --deform-attn grid-sample"
    assert ops._export_form == "gather"
    assert set(EXPORT_FORMS) == {"gather", "grid-sample"}
    with pytest.raises(ValueError, match="'gridsample'.*gather, grid-sample"):
        with export_form("gridsample"):
            pass


def test_gather_form_gradcheck():
    inputs = make_inputs([(4, 6), (2, 3)], heads=2, channels=4, queries=5, points=2, dtype=torch.float64)
    leaves = [inputs[0].requires_grad_(), inputs[3].requires_grad_(), inputs[4].requires_grad_()]

    def gather(value, locations, weights):
        return ms_deform_attn_gather(value, inputs[1], inputs[2], locations, weights)

    assert torch.autograd.gradcheck(gather, leaves, eps=1e-6, atol=1e-6)
