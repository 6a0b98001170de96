"""Post-processing a band of rows at a time (mask_former.modeling.fast_paths.row_bands) against the reference on
whole tensors (postprocessing.full_size_inference), piece by piece and through the model."""
import dataclasses

import pytest
import torch
from detectron2.modeling import build_model

import mask_former.modeling.fast_paths.row_bands as row_bands
import mask_former.modeling.meta_arch.maskformer as meta
from helpers import tiny_cfg
from mask_former.modeling.fast_paths.row_bands import (
    SemanticRows,
    exact_resize,
    row_band_inference,
    upsampled_rows,
    uses_row_bands,
)
from mask_former.modeling.postprocessing import InferenceTasks, full_size_inference, upsample_masks


def test_exact_resize_needs_a_power_of_two_factor_both_ways():
    assert exact_resize((8, 3), (32, 12)) and exact_resize((8, 3), (8, 3)) and exact_resize((5, 2), (40, 4))
    assert not exact_resize((8, 3), (24, 12)) and not exact_resize((8, 3), (32, 9)) and not exact_resize((8, 3), (4, 3))


@pytest.mark.parametrize("block_columns", [1, 7, 64, 10**9])
def test_semantic_map_by_blocks_of_columns_is_the_semantic_product(block_columns):
    """Bands of rows, each a block of columns at a time (odd blocks, blocks past a band's end, one block per
    band): the reference's product of the class probabilities and the mask probabilities."""
    torch.manual_seed(0)
    mask_cls, prob = torch.randn(6, 5), torch.rand(6, 11, 13)
    rows = SemanticRows(mask_cls, (11, 13), block_columns)
    for start, stop in [(0, 4), (4, 5), (5, 11)]:
        rows.add(start, stop, prob[:, start:stop])
    expected = torch.einsum("qc,qhw->chw", mask_cls.softmax(-1)[:, :-1], prob)
    torch.testing.assert_close(rows.finish()["sem_seg"], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("low_size", [(9, 7), (5, 3), (40, 3), (6, 40)])
@pytest.mark.parametrize("reused_buffer", [False, True])
def test_upsampled_rows_are_the_resized_rows_bit_for_bit(factor, layout, low_size, reused_buffer):
    """Bands of every height, on whole resizes whose output spans less and more than SMALL_OUTPUT_SPAN (torch
    resizes the two with kernels that round differently), in fresh memory and in one buffer for every band."""
    torch.manual_seed(0)
    batch = torch.randn(2, 6, *low_size) * 5
    if layout == "channels_last":
        batch = batch.contiguous(memory_format=torch.channels_last)
    mask_pred = batch[1]
    size = (low_size[0] * factor, low_size[1] * factor)
    expected = torch.nn.functional.interpolate(batch, size=size, mode="bilinear", align_corners=False)[1]
    assert torch.equal(upsample_masks(mask_pred, size), expected)
    for band in (1, 3, factor, 5 * factor + 1, size[0]):
        for width in (size[1], max(size[1] - 3, 1), 1):
            buffer = mask_pred.new_empty(0) if reused_buffer else None
            rows = []
            for start in range(0, size[0], band):
                rows.append(upsampled_rows(mask_pred, size, start, min(start + band, size[0]), width, buffer))
                if reused_buffer:  # a view of the buffer, which the next band overwrites
                    assert rows[-1].untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
                    rows[-1] = rows[-1].clone()
            assert torch.equal(torch.cat(rows, dim=1), expected[..., :width]), (band, width)


def tasks_for(semantic=True, panoptic=True, instance=True, resize_before_inference=True, **options):
    settings = dict(num_classes=5, object_mask_threshold=0.3, overlap_threshold=0.2, require_mask_confidence=True,
                    topk=9, thing_classes=frozenset({0, 1, 3}) if panoptic else None)
    settings.update(options)
    return InferenceTasks(semantic=semantic, panoptic=panoptic, instance=instance,
                          resize_before_inference=resize_before_inference, **settings)


def predictions(queries=8, low_size=(10, 12), seed=0):
    """Class logits with many queries kept, a tie between two queries, and decisive mask logits."""
    torch.manual_seed(seed)
    mask_cls = torch.randn(queries, 6) * 3
    mask_cls[3] = mask_cls[1]
    mask_pred = torch.randn(queries, *low_size) * 4
    mask_pred[3, :5] = mask_pred[1, :5]
    return mask_cls, mask_pred


def assert_same_results(fast, reference):
    assert list(fast) == list(reference)
    if "sem_seg" in reference:
        assert fast["sem_seg"].shape == reference["sem_seg"].shape
        torch.testing.assert_close(fast["sem_seg"], reference["sem_seg"], rtol=1e-6, atol=1e-6)
    if "panoptic_seg" in reference:
        assert torch.equal(fast["panoptic_seg"][0], reference["panoptic_seg"][0])
        assert fast["panoptic_seg"][1] == reference["panoptic_seg"][1]
    if "instances" in reference:
        ours, theirs = fast["instances"], reference["instances"]
        assert ours.image_size == theirs.image_size
        assert ours.pred_masks.dtype == theirs.pred_masks.dtype == torch.float32
        assert torch.equal(ours.pred_masks, theirs.pred_masks)
        assert torch.equal(ours.pred_classes, theirs.pred_classes)
        assert torch.equal(ours.pred_boxes.tensor, theirs.pred_boxes.tensor)
        torch.testing.assert_close(ours.scores, theirs.scores, rtol=1e-6, atol=1e-7)


CASES = {
    # name: (tasks, image size in the 40 x 48 padded image, output size)
    "all tasks, output = image": (tasks_for(), (37, 45), (37, 45)),
    "all tasks, unpadded": (tasks_for(), (40, 48), (40, 48)),
    "all tasks, resized output": (tasks_for(), (37, 45), (50, 31)),
    "v1 panoptic rule": (tasks_for(require_mask_confidence=False), (37, 45), (37, 45)),
    "no query kept": (tasks_for(object_mask_threshold=1.0), (40, 48), (40, 48)),
    "instances of every class": (tasks_for(panoptic=False, semantic=False), (33, 48), (33, 48)),
    "semantic at the padded size": (tasks_for(panoptic=False, instance=False, resize_before_inference=False),
                                     (37, 45), (37, 45)),
    "semantic at the padded size, resized": (
        tasks_for(panoptic=False, instance=False, resize_before_inference=False), (37, 45), (60, 70)),
    "semantic, output = image": (tasks_for(panoptic=False, instance=False), (37, 45), (37, 45)),
}


@pytest.mark.parametrize("recycle", [False, True])
@pytest.mark.parametrize("band_bytes", [1, 8 * 6 * 48 * 4 * 7, 2**30])
@pytest.mark.parametrize("case", list(CASES))
def test_row_band_inference_matches_the_reference(case, band_bytes, recycle, monkeypatch):
    monkeypatch.setattr(row_bands, "BAND_BYTES", band_bytes)
    tasks, image_size, output_size = CASES[case]
    tasks = dataclasses.replace(tasks, recycle_output_memory=recycle)
    mask_cls, mask_pred = predictions()
    sizes = dict(padded_size=(40, 48), image_size=image_size, output_size=output_size)
    reference = full_size_inference(mask_cls, mask_pred.clone(), tasks=tasks, **sizes)
    fast = row_band_inference(mask_cls, mask_pred.clone(), tasks=tasks, **sizes)
    assert_same_results(fast, reference)
    if tasks.panoptic and tasks.object_mask_threshold < 1:
        assert len(reference["panoptic_seg"][1]) > 1


def test_row_band_inference_where_the_factor_is_not_a_power_of_two():
    mask_cls, mask_pred = predictions(low_size=(10, 12))
    sizes = dict(padded_size=(30, 36), image_size=(29, 36), output_size=(29, 36))
    assert not exact_resize((10, 12), (30, 36))
    reference = full_size_inference(mask_cls, mask_pred.clone(), tasks=tasks_for(), **sizes)
    assert_same_results(row_band_inference(mask_cls, mask_pred.clone(), tasks=tasks_for(), **sizes), reference)


def test_row_bands_are_taken_eagerly_and_the_reference_in_a_traced_graph():
    chosen = []

    def pick(x):
        chosen.append(uses_row_bands())
        return x + 1

    torch.jit.trace(pick, (torch.zeros(2),), check_trace=False)
    assert chosen == [False] and uses_row_bands()


@pytest.mark.parametrize(
    "sizes", [[(3, 61, 77, None)], [(3, 64, 64, (90, 70))], [(3, 61, 77, None), (3, 50, 70, None)]]
)
def test_model_results_match_the_reference(sizes, monkeypatch):
    """Whole models, batched or not, padded or not, resized or not: the row bands against the reference."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).eval()
    monkeypatch.setattr(row_bands, "BAND_BYTES", 6 * 70 * 4 * 9)
    generator = torch.Generator().manual_seed(1)
    inputs = []
    for channels, height, width, output in sizes:
        x = {"image": torch.randint(0, 256, (channels, height, width), dtype=torch.uint8, generator=generator)}
        if output is not None:
            x["height"], x["width"] = output
        inputs.append(x)
    with torch.no_grad():
        fast = model(inputs)
        monkeypatch.setattr(meta, "uses_row_bands", lambda: False)
        reference = model(inputs)
    for ours, theirs in zip(fast, reference):
        assert_same_results(ours, theirs)


def test_instance_mask_scores_are_sums_as_accurate_as_the_reference_on_large_masks():
    """The queries' mean probability inside their masks of 130k pixels, against the same in float64."""
    torch.manual_seed(2)
    mask_cls, mask_pred = torch.randn(3, 4) * 3, torch.randn(3, 128, 128) * 3
    tasks = tasks_for(semantic=False, panoptic=False, num_classes=3, topk=9)
    sizes = dict(padded_size=(512, 512), image_size=(512, 512), output_size=(512, 512))
    result = row_band_inference(mask_cls, mask_pred, tasks=tasks, **sizes)["instances"]
    logits = upsample_masks(mask_pred, (512, 512)).double().flatten(1)
    mask_scores = (logits.sigmoid() * (logits > 0)).sum(1) / (logits > 0).sum(1)
    pair_scores = mask_cls.softmax(-1)[:, :-1].flatten()
    top = pair_scores.topk(9, sorted=False).indices  # the instances' pairs, in their order
    expected = pair_scores[top].double() * mask_scores[top // 3]
    torch.testing.assert_close(result.scores.double(), expected, rtol=1e-6, atol=0)
