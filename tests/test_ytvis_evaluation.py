"""YTVISEvaluator: the YouTube-VIS metric on hand-checkable cases, the results file, and (where an
upstream Mask2Former checkout is present) the same numbers as upstream's ytvoseval."""
import importlib.util
import json
import logging
import math
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from helpers import base_cfg
from helpers_video import rle
from mask_former.data.datasets import register_ytvis_instances
from mask_former.evaluation import YTVISEvaluator, build_evaluator
from mask_former.evaluation.ytvis_evaluation import YTVISeval, video_iou

UPSTREAM_API = Path("/work/upstream/Mask2Former/mask2former_video/data_video/datasets/ytvis_api")
H, W = 20, 20
CATEGORIES = [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]  # contiguous 0 and 1


def box(x0, y0, x1, y1, height=H, width=W):
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


EMPTY = box(0, 0, 0, 0)
# Track A (class a): 100 pixels in frame 0, 28 in frame 1, absent in frame 2.
A = [box(0, 0, 10, 10), box(0, 0, 7, 4), EMPTY]
# Track B (class b): 100 pixels in frames 0 to 2.
B = [box(10, 10, 20, 20)] * 3


def annotation(track_id, category_id, masks):
    present = [m.any() for m in masks]
    return {
        "id": track_id, "video_id": 1, "category_id": category_id, "iscrowd": 0,
        "segmentations": [rle(m) if p else None for m, p in zip(masks, present)],
        "areas": [int(m.sum()) if p else None for m, p in zip(masks, present)],
        "bboxes": [[0, 0, 1, 1] if p else None for p in present],
    }


def register(name, tmp_path, annotations=True):
    content = {
        "videos": [{"id": 1, "file_names": [f"v/{t}.jpg" for t in range(3)], "height": H, "width": W, "length": 3}],
        "categories": CATEGORIES,
    }
    if annotations:
        content["annotations"] = [annotation(1, 3, A), annotation(2, 7, B)]
    json_file = tmp_path / f"{name}.json"
    json_file.write_text(json.dumps(content))
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    metadata = {
        "thing_classes": ["a", "b"], "thing_dataset_id_to_contiguous_id": {3: 0, 7: 1}, "thing_colors": [[0] * 3] * 2
    }
    register_ytvis_instances(name, metadata, str(json_file), str(tmp_path))
    return name


def evaluate(tmp_path, predictions, annotations=True):
    """predictions: (score, contiguous label, masks [T, H, W]) of video 1."""
    evaluator = YTVISEvaluator(register("test_ytvis_eval", tmp_path, annotations), distributed=False,
                               output_dir=str(tmp_path / "out"))
    evaluator.reset()
    scores, labels, masks = zip(*predictions)
    outputs = {"pred_scores": list(scores), "pred_labels": list(labels),
               "pred_masks": torch.from_numpy(np.stack([np.stack(m) for m in masks]))}
    evaluator.process([{"video_id": 1, "length": 3}], outputs)
    return evaluator.evaluate()


def test_perfect_predictions_score_100(tmp_path):
    segm = evaluate(tmp_path, [(0.9, 0, A), (0.8, 1, B)])["segm"]
    for metric in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AP-a", "AP-b"):
        assert segm[metric] == pytest.approx(100.0), metric
    assert math.isnan(segm["APm"]) and math.isnan(segm["APl"])  # no track of 128² pixels or more


def test_a_missed_track(tmp_path):
    segm = evaluate(tmp_path, [(0.8, 1, B)])["segm"]
    assert (segm["AP-a"], segm["AP-b"], segm["AP"]) == pytest.approx((0.0, 100.0, 50.0))


def test_a_wrong_class(tmp_path):
    # A predicted as b, ranked above the right prediction of B: class a is missed, class b reaches
    # recall 1 at precision 1/2.
    segm = evaluate(tmp_path, [(0.9, 1, A), (0.8, 1, B)])["segm"]
    assert (segm["AP-a"], segm["AP-b"], segm["AP"]) == pytest.approx((0.0, 50.0, 25.0))


def test_video_iou_sums_over_frames(tmp_path):
    # A found in frame 0 only: video IoU 100 / 128 = 0.78 (the mean of per-frame IoUs would be 0.5),
    # a match at the IoU thresholds 0.5 to 0.75, six of ten.
    segm = evaluate(tmp_path, [(0.9, 0, [A[0], EMPTY, EMPTY]), (0.8, 1, B)])["segm"]
    assert (segm["AP-a"], segm["AP"], segm["AP50"], segm["AP75"]) == pytest.approx((60.0, 80.0, 100.0, 100.0))


def test_partial_overlap_in_every_frame(tmp_path):
    half = [box(10, 10, 20, 15)] * 3  # half of B in each frame: IoU 0.5
    segm = evaluate(tmp_path, [(0.9, 0, A), (0.8, 1, half)])["segm"]
    assert (segm["AP-b"], segm["AP50"], segm["AP75"]) == pytest.approx((10.0, 100.0, 50.0))


def test_video_iou():
    masks = [rle(m) for m in (A[0], A[1], B[0])]
    assert video_iou([masks[0], masks[1], None], [masks[0], None, None]) == pytest.approx(100 / 128)
    assert video_iou([None, None], [None, None]) == 0.0
    with pytest.raises(ValueError, match="video 4, frame 0: predicted mask of size"):
        video_iou([rle(box(0, 0, 2, 2, 8, 8))], [masks[0]], video_id=4)


def test_results_file_in_the_server_format(tmp_path):
    evaluate(tmp_path, [(0.9, 0, A), (0.8, 1, B)])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["video_id"], r["category_id"], r["score"]) for r in results] == [(1, 3, 0.9), (1, 7, 0.8)]
    assert len(results[0]["segmentations"]) == 3 and isinstance(results[0]["segmentations"][0]["counts"], str)
    assert results[0]["segmentations"][0]["size"] == [H, W]


def test_without_annotations_only_results_are_written(tmp_path, logs):
    logs.set_level(logging.INFO)
    assert evaluate(tmp_path, [(0.9, 0, A)], annotations=False) == {}
    assert "has no annotations" in logs.text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.json"]


def test_predicted_class_out_of_range_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"predicted classes \[5\]"):
        evaluate(tmp_path, [(0.9, 5, A)])


def test_build_evaluator_chooses_it_for_ytvis(tmp_path):
    name = register("test_ytvis_build", tmp_path)
    cfg = base_cfg()
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    cfg.OUTPUT_DIR = str(tmp_path)
    assert isinstance(build_evaluator(cfg, name), YTVISEvaluator)


# ------------------------------------------------------------------ upstream's ytvoseval


def load_upstream(name):
    spec = importlib.util.spec_from_file_location(f"upstream_ytvis_api_{name}", UPSTREAM_API / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_video_set(seed):
    """Three 300 x 300 videos with tracks of all sizes (small, medium, large), absent frames, a crowd
    track, polygons and uncompressed RLE; and predictions that overlap them to various degrees."""
    rng = np.random.default_rng(seed)
    size, length = 300, 4
    videos, gts, preds = [], [], []
    for video_id in (1, 2, 3):
        videos.append({"id": video_id, "file_names": [f"{video_id}/{t}.jpg" for t in range(length)],
                       "height": size, "width": size, "length": length})
        for _ in range(4):
            side = int(rng.choice([40, 150, 280]))
            x0, y0 = rng.integers(0, size - side + 1, 2)
            category = int(rng.choice([1, 2, 4]))
            present = rng.random(length) > 0.2
            masks = [box(x0 + 3 * t, y0, min(size, x0 + side + 3 * t), y0 + side, size, size) if p
                     else None for t, p in enumerate(present)]
            segmentations = []
            for t, m in enumerate(masks):
                if m is None:
                    segmentations.append(None)
                elif t == 0:
                    ys, xs = np.nonzero(m)
                    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
                    segmentations.append([[x0, y0, x1, y0, x1, y1, x0, y1]])
                elif t == 1:
                    counts = rle(m)
                    decoded = mask_util.decode(counts).flatten(order="F")
                    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, decoded, -1]) != 0)).tolist()
                    if decoded[0] == 1:
                        runs = [0] + runs
                    segmentations.append({"size": [size, size], "counts": runs})
                else:
                    segmentations.append(rle(m))
            track_id = len(gts) + 1
            gts.append({"id": track_id, "video_id": video_id, "category_id": category,
                        "iscrowd": int(rng.random() < 0.1), "segmentations": segmentations,
                        "areas": [int(m.sum()) if m is not None else None for m in masks],
                        "bboxes": [[0, 0, 1, 1] if m is not None else None for m in masks]})
            for _ in range(int(rng.integers(0, 3))):
                shift = int(rng.integers(0, side // 6 + 1))
                pred = [rle(np.roll(m, shift, axis=1)) if m is not None and rng.random() > 0.2 else None
                        for m in masks]
                preds.append({"video_id": video_id, "category_id": int(rng.choice([category, category, 1, 2, 4])),
                              "score": float(rng.random()), "segmentations": pred})
    categories = [{"id": i, "name": f"c{i}"} for i in (1, 2, 4)]
    return {"videos": videos, "annotations": gts, "categories": categories}, preds


@pytest.mark.skipif(not UPSTREAM_API.is_dir(), reason="no upstream Mask2Former checkout")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_numbers_as_upstream_ytvoseval(tmp_path, monkeypatch, seed):
    monkeypatch.setattr(np, "float", float, raising=False)  # removed from NumPy, used by upstream
    ytvos, ytvoseval = load_upstream("ytvos"), load_upstream("ytvoseval")
    ground_truth, predictions = random_video_set(seed)
    json_file = tmp_path / "gt.json"
    json_file.write_text(json.dumps(ground_truth))

    ours = YTVISeval(json.loads(json_file.read_text()), json.loads(json.dumps(predictions)))
    gt_api = ytvos.YTVOS(str(json_file))
    theirs = ytvoseval.YTVOSeval(gt_api, gt_api.loadRes(json.loads(json.dumps(predictions))), "segm")
    theirs.params.maxDets = [1, 10, 100]
    for evaluation in (ours, theirs):
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    for key in ("precision", "recall", "scores"):
        np.testing.assert_array_equal(ours.eval[key], theirs.eval[key], err_msg=key)
    np.testing.assert_array_equal(ours.stats, theirs.stats)
    assert (ours.stats[:6] > 0).all()  # some AP in every area range: the comparison covers them
