"""YTVISDatasetMapper: upstream's frame draws and clip-consistent augmentations, targets per clip,
and (where an upstream Mask2Former checkout is present) the same clips as upstream's mapper."""
import importlib.util
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import base_cfg
from helpers_video import box_mask, rle, write_video_dataset
from mask_former.data.dataset_mappers import YTVISDatasetMapper, build_dataset_mapper
from mask_former.data.dataset_mappers.ytvis_dataset_mapper import sample_clip_frames
from mask_former.data.datasets import load_ytvis_json

UPSTREAM = Path("/work/upstream/Mask2Former/mask2former_video/data_video")
H, W, LENGTH = 24, 32, 7
NUM_CLASSES = 2


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """One 7-frame video: track 11 (class 0) moves right and is absent from frame 3; track 300
    (class 1, a polygon) is still at the right and appears at frame 2; track 5 is a crowd."""
    root = tmp_path_factory.mktemp("video")
    annotations = [
        {"id": 11, "video_id": 5, "category_id": 1, "iscrowd": 0,
         "segmentations": [rle(box_mask(H, W, 2 + t, 3, 10 + t, 12)) if t != 3 else None for t in range(LENGTH)],
         "bboxes": [[2 + t, 3, 8, 9] if t != 3 else None for t in range(LENGTH)]},
        {"id": 300, "video_id": 5, "category_id": 2, "iscrowd": 0,
         "segmentations": [[[20, 5, 30, 5, 30, 20, 20, 20]] if t >= 2 else None for t in range(LENGTH)],
         "bboxes": [[20, 5, 10, 15] if t >= 2 else None for t in range(LENGTH)]},
        {"id": 5, "video_id": 5, "category_id": 1, "iscrowd": 1,
         "segmentations": [rle(box_mask(H, W, 0, 20, 4, 24))] * LENGTH, "bboxes": [[0, 20, 4, 4]] * LENGTH},
    ]
    videos = [{"id": 5, "file_names": [f"v5/{t:05d}.jpg" for t in range(LENGTH)], "height": H, "width": W,
               "length": LENGTH}]
    json_file, image_root = write_video_dataset(root, videos, annotations, [{"id": 1, "name": "a"},
                                                                            {"id": 2, "name": "b"}])
    return load_ytvis_json(json_file, image_root)[0]


def clip_cfg(**input_keys):
    cfg = base_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (16, 20, 28), 64
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING, cfg.INPUT.RANDOM_FLIP = "choice_by_clip", "flip_by_clip"
    cfg.INPUT.SAMPLING_FRAME_NUM, cfg.INPUT.SAMPLING_FRAME_RANGE = 3, 2
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 12, 64
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = NUM_CLASSES
    for key, value in input_keys.items():
        setattr(cfg.INPUT, key, value)
    return cfg


def seeded(mapper, record, seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return mapper(record)


def frame_indices(clip):
    return [int(Path(name).stem) for name in clip["file_names"]]


def test_frame_draw_is_upstreams():
    random.seed(3)
    np.random.seed(3)
    reference = random.randrange(10)
    others = np.random.choice([f for f in range(max(0, reference - 2), min(10, reference + 3)) if f != reference], 3)
    random.seed(3)
    np.random.seed(3)
    assert sample_clip_frames(10, 4, 2, shuffle=False) == sorted(others.tolist() + [reference])
    assert sample_clip_frames(1, 3, 5, shuffle=False) == [0, 0, 0]  # a one-frame video repeats it


def test_same_clip_for_the_same_seed(video):
    mapper = YTVISDatasetMapper(clip_cfg(), is_train=True)
    first, again = seeded(mapper, video, 4), seeded(mapper, video, 4)
    assert first["file_names"] == again["file_names"]
    assert all(torch.equal(a, b) for a, b in zip(first["image"], again["image"]))
    draws = [frame_indices(seeded(mapper, video, seed)) for seed in range(20)]
    for frames in draws:
        assert len(frames) == 3 and frames == sorted(frames) and max(frames) - min(frames) <= 4
    assert any(len(set(frames)) < 3 for frames in draws)  # drawn with replacement
    assert len({tuple(frames) for frames in draws}) > 3


def test_resize_and_flip_are_drawn_once_per_clip(video):
    mapper = YTVISDatasetMapper(clip_cfg(), is_train=True)
    sizes, flipped = set(), set()
    for seed in range(12):
        clip = seeded(mapper, video, seed)
        shapes = {tuple(image.shape) for image in clip["image"]}
        assert len(shapes) == 1
        sizes |= shapes
        # Track 11 stays in the left half of the original frames: in the right half of every frame
        # of a flipped clip, in the left half of every frame of the others.
        track_11 = [f.gt_masks.tensor[list(f.gt_ids).index(11)] for f in clip["instances"] if 11 in f.gt_ids]
        sides = {bool(m[:, m.shape[1] // 2:].sum() > m[:, : m.shape[1] // 2].sum()) for m in track_11}
        assert len(sides) <= 1
        flipped |= sides
    assert len(sizes) > 1 and flipped == {True, False}


def test_per_frame_draws_differ_within_a_clip(video):
    mapper = YTVISDatasetMapper(clip_cfg(MIN_SIZE_TRAIN_SAMPLING="choice"), is_train=True)
    assert any(len({tuple(i.shape) for i in seeded(mapper, video, seed)["image"]}) > 1 for seed in range(12))


def test_targets_line_up_across_frames(video):
    mapper = YTVISDatasetMapper(clip_cfg(RANDOM_FLIP="none", MIN_SIZE_TRAIN=(24,)), is_train=True)
    for seed in range(12):
        clip = seeded(mapper, video, seed)
        frames = frame_indices(clip)
        seen = {11 for f in frames if f != 3} | {300 for f in frames if f >= 2} | {5}
        for frame, instances in zip(frames, clip["instances"]):
            assert len(instances) == len(seen)
            assert instances.gt_ids.dtype == instances.gt_classes.dtype == torch.int64
            assert instances.gt_masks.tensor.dtype == torch.bool
            expected = {11: frame != 3, 300: frame >= 2, 5: False}  # crowd: never a target
            # Every frame holds the clip's tracks in one order; absent ones are -1, num_classes, empty.
            slots = {}
            for slot, (track_id, cls, mask) in enumerate(
                zip(instances.gt_ids.tolist(), instances.gt_classes.tolist(), instances.gt_masks.tensor)
            ):
                if track_id == -1:
                    assert cls == NUM_CLASSES and not mask.any()
                else:
                    slots[track_id] = slot
                    assert cls == {11: 0, 300: 1}[track_id] and mask.any()
            assert set(slots) == {t for t in seen if expected[t]}
        present = [dict(zip(i.gt_ids.tolist(), range(len(i)))) for i in clip["instances"]]
        for track_id in (11, 300):
            assert len({p[track_id] for p in present if track_id in p}) <= 1


def test_inference_clip_takes_every_frame(video):
    mapper = YTVISDatasetMapper(clip_cfg(), is_train=False)
    clip = mapper(video)
    assert frame_indices(clip) == list(range(LENGTH)) and clip["instances"] == []
    assert {tuple(i.shape) for i in clip["image"]} == {(3, 12, 16)}
    assert (clip["video_id"], clip["length"], clip["height"], clip["width"]) == (5, LENGTH, H, W)


def test_mapper_by_name_and_bad_augmentation_names():
    cfg = clip_cfg(DATASET_MAPPER_NAME="ytvis")
    assert isinstance(build_dataset_mapper(cfg), YTVISDatasetMapper)
    with pytest.raises(ValueError, match="INPUT.AUGMENTATIONS names \\['blur'\\]"):
        YTVISDatasetMapper(clip_cfg(AUGMENTATIONS=["blur"]), is_train=True)


# ------------------------------------------------------------------ upstream's mapper


def upstream_mapper_module():
    """Upstream's augmentation.py and dataset_mapper.py, loaded as a package of their own (its
    data_video/__init__ would register upstream's datasets a second time)."""
    package = types.ModuleType("upstream_data_video")
    package.__path__ = [str(UPSTREAM)]
    sys.modules.setdefault("upstream_data_video", package)
    for name in ("augmentation", "dataset_mapper"):
        full_name = f"upstream_data_video.{name}"
        if full_name not in sys.modules:
            spec = importlib.util.spec_from_file_location(full_name, UPSTREAM / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[full_name] = module
            spec.loader.exec_module(module)
    return sys.modules["upstream_data_video.dataset_mapper"]


@pytest.mark.skipif(not UPSTREAM.is_dir(), reason="no upstream Mask2Former checkout")
@pytest.mark.parametrize(
    "input_keys",
    [
        {},
        {"SAMPLING_FRAME_SHUFFLE": True, "MIN_SIZE_TRAIN_SAMPLING": "range_by_clip", "MIN_SIZE_TRAIN": (14, 30)},
        {"MIN_SIZE_TRAIN_SAMPLING": "choice", "RANDOM_FLIP": "horizontal",
         "AUGMENTATIONS": ["brightness", "contrast", "saturation"]},
    ],
    ids=["by_clip", "range_shuffle", "per_frame_photometric"],
)
def test_same_clips_as_upstream(video, input_keys):
    cfg = clip_cfg(**input_keys)
    ours = YTVISDatasetMapper(cfg, is_train=True)
    theirs = upstream_mapper_module().YTVISDatasetMapper(cfg, is_train=True)
    for seed in range(6):
        a, b = seeded(ours, video, seed), seeded(theirs, video, seed)
        assert a["file_names"] == b["file_names"]
        for image_a, image_b, frame_a, frame_b in zip(a["image"], b["image"], a["instances"], b["instances"]):
            assert torch.equal(image_a, image_b)
            assert torch.equal(frame_a.gt_classes, frame_b.gt_classes)
            assert torch.equal(frame_a.gt_ids, frame_b.gt_ids.long())
            assert torch.equal(frame_a.gt_masks.tensor, frame_b.gt_masks.tensor)
            assert torch.equal(frame_a.gt_boxes.tensor, frame_b.gt_boxes.tensor)
