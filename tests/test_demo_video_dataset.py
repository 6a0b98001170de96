"""The demo video dataset: generated on demand, deterministic, in the YouTube-VIS format, with
objects that move and are sometimes absent; its ground truth scores AP 100 in YTVISEvaluator."""
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from helpers import base_cfg
from mask_former.data.dataset_mappers import YTVISDatasetMapper
from mask_former.data.demo_video_dataset import (
    DEMO_VIDEO_DATASET_NAMES,
    _draw_video,
    generate_demo_video_dataset,
    register_demo_video_datasets,
)
from mask_former.evaluation import YTVISEvaluator

SETTINGS = {"num_train": 3, "num_val": 2, "image_size": (48, 64), "num_frames": (4, 6)}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets") / "demo_shapes_video"
    register_demo_video_datasets(str(root))  # loading generates it
    yield root
    register_demo_video_datasets()


def test_registered_by_default():
    assert set(DEMO_VIDEO_DATASET_NAMES) == {"demo_shapes_video_train", "demo_shapes_video_val"}
    meta = MetadataCatalog.get("demo_shapes_video_val")
    assert meta.evaluator_type == "ytvis" and meta.thing_classes == ["circle", "square", "triangle"]


def test_generation_is_deterministic_and_in_the_youtube_vis_format(tmp_path):
    first = generate_demo_video_dataset(str(tmp_path / "a"), **SETTINGS)
    second = generate_demo_video_dataset(str(tmp_path / "b"), **SETTINGS)
    content = json.loads((tmp_path / "a" / "train.json").read_text())
    assert content == json.loads((tmp_path / "b" / "train.json").read_text())
    assert (tmp_path / "a/train/JPEGImages/00001/00000.jpg").read_bytes() == (
        tmp_path / "b/train/JPEGImages/00001/00000.jpg"
    ).read_bytes()
    assert first != second and len(content["videos"]) == 3
    for video in content["videos"]:
        assert 4 <= video["length"] == len(video["file_names"]) <= 6 and (video["height"], video["width"]) == (48, 64)
    for ann in content["annotations"]:
        assert len(ann["segmentations"]) == len(ann["bboxes"]) == len(ann["areas"])
        for segm, area in zip(ann["segmentations"], ann["areas"]):
            assert (segm is None) == (area is None)
            assert segm is None or int(mask_util.area(segm)) == area >= 16


def test_default_split_has_absent_objects_and_moving_ones():
    # The default dataset's first videos, drawn in memory: some frames lack an object.
    absent = moved = 0
    for video_id in range(1, 9):
        rng = np.random.default_rng([0, 0, video_id])
        length = int(rng.integers(6, 11))
        _, tracks = _draw_video(rng, 120, 160, length)
        for _, masks in tracks:
            absent += any(m is None for m in masks)
            shown = [m for m in masks if m is not None]
            moved += len(shown) > 1 and not (shown[0] == shown[-1]).all()
    assert absent > 0 and moved > 0


def test_loads_maps_and_scores_its_ground_truth_100(demo_root, tmp_path):
    videos = DatasetCatalog.get("demo_shapes_video_val")  # generates the default dataset
    assert len(videos) == 8 and (demo_root / "manifest.json").is_file()
    cfg = base_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = (120,), "choice_by_clip"
    clip = YTVISDatasetMapper(cfg, is_train=True)(videos[0])
    assert len(clip["image"]) == 2 and clip["image"][0].shape == (3, 120, 160)

    evaluator = YTVISEvaluator("demo_shapes_video_val", distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    content = json.loads((demo_root / "val.json").read_text())
    for video in content["videos"]:
        tracks = [a for a in content["annotations"] if a["video_id"] == video["id"]]
        masks = torch.zeros((len(tracks), video["length"], video["height"], video["width"]), dtype=torch.bool)
        for i, track in enumerate(tracks):
            for t, segm in enumerate(track["segmentations"]):
                if segm is not None:
                    masks[i, t] = torch.from_numpy(mask_util.decode(segm).astype(bool))
        evaluator.process(
            [{"video_id": video["id"]}],
            {"pred_scores": [1.0] * len(tracks), "pred_labels": [t["category_id"] - 1 for t in tracks],
             "pred_masks": masks},
        )
    assert evaluator.evaluate()["segm"]["AP"] == pytest.approx(100.0)
