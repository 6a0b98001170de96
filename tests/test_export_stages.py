"""The exported graph's post-processing stages (mask_former.export.graph_stages) against their references."""
import numpy as np
import pytest
import torch

from mask_former.assembly import assemble_panoptic
from mask_former.export.graph_stages import instance_rows, panoptic_rows, semantic_rows
from mask_former.modeling.fast_paths.kept_queries import panoptic_tensors
from mask_former.modeling.postprocessing import instance_tensors, semantic_inference

NUM_CLASSES, HEIGHT, WIDTH = 6, 9, 11


def inputs(seed, queries=10, kept_logit=6.0, kept=(1, 4, 7)):
    """Class logits where the queries ``kept`` score high on a real class, and mask logits with ties: the logits
    are rounded so that several queries reach the same probability at many pixels."""
    generator = torch.Generator().manual_seed(seed)
    mask_cls = torch.randn(queries, NUM_CLASSES + 1, generator=generator)
    for q in kept:
        mask_cls[q, q % NUM_CLASSES] = kept_logit
    logits = (torch.randn(queries, HEIGHT, WIDTH, generator=generator) * 3).round()
    logits[2, :3] = -200.0  # probabilities that underflow to 0
    return mask_cls, logits


def panoptic_case(seed, require_mask_confidence, **kwargs):
    mask_cls, logits = inputs(seed, **kwargs)
    prob = logits.sigmoid()
    options = {"num_classes": NUM_CLASSES, "object_mask_threshold": 0.8,
               "require_mask_confidence": require_mask_confidence}
    return panoptic_tensors(mask_cls, prob, **options), panoptic_rows(mask_cls, prob.flatten(1), **options)


@pytest.mark.parametrize("require_mask_confidence", [True, False])
@pytest.mark.parametrize("kept", [(1, 4, 7), (0,), (3, 9), ()])
def test_panoptic_rows_give_the_reference_segments(require_mask_confidence, kept):
    for seed in range(3):
        reference, rows = panoptic_case(seed, require_mask_confidence, kept=kept)
        assert torch.equal(rows["keep"], reference["keep"]) and torch.equal(rows["labels"], reference["labels"])
        assert reference["keep"].nonzero().flatten().tolist() == list(kept)
        shaped = {**rows, **{k: rows[k].view(HEIGHT, WIDTH) for k in ("owner", "pixel_kept")}}
        assert torch.equal(shaped["pixel_kept"], reference["pixel_kept"])
        # Equal wherever the assembly reads them: the owner where the pixel is kept, the kept queries' areas.
        pixel_kept = reference["pixel_kept"]
        assert torch.equal(shaped["owner"][pixel_kept], reference["owner"][pixel_kept])
        for name in ("owned_areas", "original_areas", "segment_areas"):
            assert torch.equal(rows[name][reference["keep"]], reference[name][reference["keep"]]), name
        for name in ("owned_areas", "segment_areas"):
            assert torch.equal(rows[name], reference[name]), name
        options = {"thing_classes": {1, 3}, "overlap_threshold": 0.8}
        expected = assemble_panoptic(**{k: v.numpy() for k, v in reference.items()}, **options)
        result = assemble_panoptic(**{k: v.numpy() for k, v in shaped.items()}, **options)
        np.testing.assert_array_equal(result[0], expected[0])
        assert result[1] == expected[1]


def test_panoptic_rows_ties_go_to_the_first_kept_query():
    mask_cls, logits = inputs(0, kept=(2, 5))
    mask_cls[5] = mask_cls[2]  # same score: every pixel where their masks tie goes to query 2
    logits[5] = logits[2]
    _, rows = panoptic_case_from(mask_cls, logits)
    assert set(rows["owner"].tolist()) == {2}


def panoptic_case_from(mask_cls, logits):
    prob = logits.sigmoid()
    options = {"num_classes": NUM_CLASSES, "object_mask_threshold": 0.8}
    return panoptic_tensors(mask_cls, prob, **options), panoptic_rows(mask_cls, prob.flatten(1), **options)


def test_semantic_and_instance_rows_equal_the_references():
    mask_cls, logits = inputs(1)
    prob = logits.sigmoid()
    sem_seg = semantic_rows(mask_cls, prob.flatten(1))
    assert sem_seg.shape == (NUM_CLASSES, HEIGHT * WIDTH)
    torch.testing.assert_close(sem_seg.view(NUM_CLASSES, HEIGHT, WIDTH), semantic_inference(mask_cls, prob))
    rows, reference = instance_rows(mask_cls, logits, prob.flatten(1)), instance_tensors(mask_cls, logits, prob)
    assert rows.keys() == reference.keys()
    for name in rows:
        torch.testing.assert_close(rows[name], reference[name], rtol=0, atol=0)


class PanopticRows(torch.nn.Module):
    def forward(self, mask_cls, mask_prob):
        stage = panoptic_rows(mask_cls, mask_prob, num_classes=NUM_CLASSES, object_mask_threshold=0.8)
        return tuple(stage.values())


def test_panoptic_rows_in_onnxruntime_with_any_number_of_kept_queries(tmp_path):
    """The graph holds a data-dependent number of kept rows (NonZero): one graph for none, one or several."""
    import onnxruntime

    mask_cls, logits = inputs(0)
    with torch.no_grad():
        torch.onnx.export(PanopticRows(), (mask_cls, logits.sigmoid().flatten(1)), str(tmp_path / "stage.onnx"),
                          dynamo=False, opset_version=18, input_names=["mask_cls", "mask_prob"],
                          dynamic_axes={"mask_prob": {1: "pixels"}})
    session = onnxruntime.InferenceSession(str(tmp_path / "stage.onnx"), providers=["CPUExecutionProvider"])
    for seed, kept in enumerate([(1, 4, 7), (), (9,)]):
        mask_cls, logits = inputs(seed, kept=kept)
        prob = logits.sigmoid().flatten(1)
        expected = PanopticRows()(mask_cls, prob)
        result = session.run(None, {"mask_cls": mask_cls.numpy(), "mask_prob": prob.numpy()})
        for name, ours, theirs in zip(["labels", "keep", "owner", "pixel_kept", "owned", "original", "segment"],
                                      result, expected):
            np.testing.assert_array_equal(ours, theirs.numpy(), err_msg=name)
