"""The model's linear layers on oneDNN in float32 CPU inference (fast path) against ``F.linear`` (reference)."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mask_former.layers import onednn_linear
from mask_former.layers.onednn_linear import Linear, uses_onednn_linear

needs_onednn = pytest.mark.skipif(
    not onednn_linear.ONEDNN_LINEAR_AVAILABLE, reason="oneDNN's linear operator or an x86 AVX2 CPU is missing"
)


def weights(out_features: int = 48, in_features: int = 40):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(out_features, in_features, generator=generator), torch.randn(out_features, generator=generator)


def inputs():
    """Name -> input ``[..., 40]``: the layouts the model passes (rows, sequence-first, views)."""
    generator = torch.Generator().manual_seed(1)
    return {
        "rows": torch.randn(300, 40, generator=generator),
        "sequence": torch.randn(7, 3, 40, generator=generator),
        "transposed": torch.randn(3, 7, 40, generator=generator).transpose(0, 1),
        "strided": torch.randn(5, 80, generator=generator)[:, ::2],
        "image batch": torch.randn(2, 3, 4, 40, generator=generator),
        "no rows": torch.randn(0, 40, generator=generator),
        "one vector": torch.randn(40, generator=generator),
    }


@needs_onednn
@pytest.mark.parametrize("name", list(inputs()))
@pytest.mark.parametrize("with_bias", [True, False])
def test_onednn_linear_equals_f_linear(name, with_bias):
    weight, bias = weights()
    bias = bias if with_bias else None
    x = inputs()[name]
    fast = onednn_linear.onednn_linear(x, weight, bias)
    torch.testing.assert_close(fast, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_onednn_linear_reads_weight_views():
    """The masked attention passes rows of ``in_proj_weight``: views at an offset."""
    weight, bias = weights(96)
    x = inputs()["sequence"]
    for rows, row_bias in zip(weight.split(48), bias.split(48)):
        torch.testing.assert_close(onednn_linear.onednn_linear(x, rows, row_bias), F.linear(x, rows, row_bias))
    # Not dense (copied dense first): a block of columns of a wider matrix, transposed, as mm_into passes it.
    block = torch.randn(40, 300, generator=torch.Generator().manual_seed(2))[:, 100:148].t()
    assert not (block.is_contiguous() or block.t().is_contiguous())
    torch.testing.assert_close(onednn_linear.onednn_linear(x, block), F.linear(x, block), rtol=1e-5, atol=1e-5)


def test_linear_keeps_nn_linear_parameters_and_checkpoint_keys():
    reference = nn.Linear(40, 48)
    layer = Linear(40, 48)
    assert isinstance(layer, nn.Linear)
    layer.load_state_dict(reference.state_dict())
    assert list(layer.state_dict()) == list(reference.state_dict())
    x = inputs()["sequence"]
    torch.testing.assert_close(layer(x), reference(x))  # training mode, autograd on: the reference path
    with torch.no_grad():
        torch.testing.assert_close(layer.eval()(x), reference(x), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_onednn_only_in_cpu_inference_in_float32_or_bfloat16_autocast():
    layer = Linear(40, 48)
    x = inputs()["rows"]
    with torch.no_grad():
        assert uses_onednn_linear(layer.eval(), x)
        assert not uses_onednn_linear(layer.train(), x)
        layer.eval()
        assert not uses_onednn_linear(layer, x.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert uses_onednn_linear(layer, x) == onednn_linear.ONEDNN_BFLOAT16_SUPPORTED
            assert not onednn_linear.takes_onednn(x)  # mm_into stays float32
            assert layer(x).dtype == torch.bfloat16
        with torch.autocast("cpu", dtype=torch.float16):
            assert not uses_onednn_linear(layer, x)
    assert not uses_onednn_linear(layer, x)  # under autograd


needs_onednn_bfloat16 = pytest.mark.skipif(
    not (onednn_linear.ONEDNN_LINEAR_AVAILABLE and onednn_linear.ONEDNN_BFLOAT16_SUPPORTED),
    reason="oneDNN runs no bfloat16 products on this CPU",
)


@needs_onednn_bfloat16
@pytest.mark.parametrize("name", ["rows", "sequence", "transposed", "image batch"])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_bfloat16_autocast_linear_equals_autocast_f_linear(name, with_bias, input_dtype):
    """Under the CPU's bfloat16 autocast, oneDNN's product on the bfloat16 casts against autocast's F.linear: both
    round the same float32 sums of the same bfloat16 operands (equal on the project's VM; a bfloat16 rounding
    apart at most)."""
    weight, bias = weights()
    bias = bias if with_bias else None
    x = inputs()[name].to(input_dtype)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = onednn_linear.onednn_linear(x, weight, bias)
        reference = F.linear(x, weight, bias)
    assert fast.dtype == reference.dtype == torch.bfloat16
    torch.testing.assert_close(fast, reference, rtol=1.6e-2, atol=1e-2)


def test_traced_graph_keeps_the_standard_linear():
    """An exported graph must hold the portable operator, not oneDNN's."""
    layer = Linear(40, 48).eval()
    with torch.no_grad():
        graph = torch.jit.trace(layer, inputs()["rows"]).graph
    kinds = {node.kind() for node in graph.nodes()}
    assert "aten::linear" in kinds and not any(kind.startswith("mkldnn::") for kind in kinds)


@needs_onednn
@pytest.mark.parametrize("autocast_dtype", ["", "bfloat16"])
def test_model_inference_runs_on_onednn_and_matches_the_reference(monkeypatch, autocast_dtype):
    """A tiny Mask2Former's inference, in float32 and in bfloat16, reaches the fast path, and its outputs are the
    reference's up to float rounding (the golden fixtures then check them against upstream's)."""
    from detectron2.modeling import build_model

    from helpers import tiny_cfg

    if autocast_dtype and not onednn_linear.ONEDNN_BFLOAT16_SUPPORTED:
        pytest.skip("oneDNN runs no bfloat16 products on this CPU")
    calls = []
    fast = onednn_linear.onednn_linear
    monkeypatch.setattr(onednn_linear, "onednn_linear", lambda *a: calls.append(a[0].dtype) or fast(*a))
    cfg = tiny_cfg()
    cfg.MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE = autocast_dtype
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch = [{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), "height": 64, "width": 64}]
    with torch.no_grad():
        outputs = model(batch)[0]
        assert calls
        monkeypatch.setattr(onednn_linear, "ONEDNN_LINEAR_AVAILABLE", False)
        reference = model(batch)[0]
    tolerance = {"rtol": 1e-4, "atol": 1e-5} if not autocast_dtype else {"rtol": 1.6e-2, "atol": 1e-2}
    torch.testing.assert_close(outputs["sem_seg"], reference["sem_seg"], **tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mm_into_writes_the_product_into_a_strided_block(dtype):
    """As ``SemanticRows`` calls it: class probabilities ``[K, Q]`` (a transposed view) times a block of a band's
    columns ``[Q, n]`` into the same block of ``sem_seg``'s ``[K, H * W]`` view. float64 takes ``torch.mm``."""
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(10, 8, generator=generator, dtype=dtype)[:, :-1].t()  # [7, 10], strides (1, 8)
    band = torch.rand(10, 3 * 50, generator=generator, dtype=dtype)
    sem_seg = torch.full((7, 4 * 50), float("nan"), dtype=dtype)
    for first in range(0, 150, 64):
        block = slice(first, first + 64)
        onednn_linear.mm_into(probs, band[:, block], sem_seg[:, 50:][:, block])
    torch.testing.assert_close(sem_seg[:, 50:], probs @ band, rtol=1e-6, atol=1e-6)
    assert sem_seg[:, :50].isnan().all()
