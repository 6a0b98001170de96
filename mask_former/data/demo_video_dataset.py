"""The built-in demo video dataset, "demo shapes video": short synthetic clips of moving shapes, in the
YouTube-VIS format, that a tiny video model learns on a CPU in minutes.

Each video (6 to 10 frames of 120 x 160 by default) shows a still background of the demo shapes'
stuff (sky, grass, wall; a little pixel noise per frame) and one to three shapes (the demo shapes'
thing classes: 0 circle, 1 square, 2 triangle; dataset id = contiguous id + 1) that move and spin
at constant speed, drawn in order (the last on top). Some shapes enter after the first frame or
leave before the last, and a shape hidden behind another or by the border (fewer than 16 visible
pixels) is absent from that frame: its segmentation, box and area are None there, as in YouTube-VIS.

Files under the root (default ``$DETECTRON2_DATASETS/demo_shapes_video``), ``{split}`` in train,
val, laid out as ``ytvis_2019``::

    {split}/JPEGImages/00001/00000.jpg        frames of video 1
    {split}.json                              YouTube-VIS json (compressed RLE masks)
    manifest.json                             written last: the dataset is complete

Registered datasets: ``demo_shapes_video_{train,val}`` (evaluator "ytvis"); loading generates the
dataset first where it is missing. Use :func:`register_demo_video_datasets` to register them under
another root (tests do).
"""
import json
import os
from functools import partial

import numpy as np
from PIL import Image
from tqdm import tqdm

from .datasets import register_ytvis_instances, video_instances_metadata
from .datasets.preparation import segment_bbox
from .datasets.registration import datasets_root
from .demo_dataset import (
    DEMO_CATEGORIES,
    MIN_IMAGE_SIDE,
    MIN_SEGMENT_AREA,
    THING_IDS,
    draw_background,
    generate_atomically,
    generate_before_loading,
    mask_rle,
    read_manifest,
    shape_mask,
    thing_texture,
    unregister,
)

__all__ = [
    "DEMO_VIDEO_CATEGORIES",
    "DEMO_VIDEO_DATASET_NAMES",
    "demo_video_dataset_root",
    "ensure_demo_video_dataset",
    "generate_demo_video_dataset",
    "register_demo_video_datasets",
]

# The thing classes of the image demo, in its contiguous-id order.
DEMO_VIDEO_CATEGORIES = [
    {"id": c["id"], "name": c["name"], "color": c["color"]} for c in DEMO_CATEGORIES if c["isthing"]
]
SPLITS = ("train", "val")
DEMO_VIDEO_DATASET_NAMES = [f"demo_shapes_video_{split}" for split in SPLITS]
# Bump when the generated content changes, so that existing copies are regenerated.
FORMAT_VERSION = 1

# Probabilities of 1, 2 and 3 shapes in a video.
SHAPE_COUNT_PROBABILITIES = (0.3, 0.4, 0.3)
# Probability that a shape enters after the first frame, and (independently) that it leaves early.
LATE_PROBABILITY = 0.25
# Speed of a shape, in fractions of the shorter image side per frame, and spin in radians per frame.
MAX_SPEED = 0.05
MAX_SPIN = 0.2
FRAME_NOISE = 2.0


def demo_video_dataset_root():
    """The default folder: ``$DETECTRON2_DATASETS/demo_shapes_video``, read when called."""
    return os.path.join(datasets_root(), "demo_shapes_video")


def _split_paths(root, split):
    return {"image_root": os.path.join(root, split, "JPEGImages"), "json_file": os.path.join(root, f"{split}.json")}


def _shape_track(rng, height, width, length):
    """One moving shape.

    Returns:
        tuple: its contiguous class, its ``[H, W, 3]`` texture and its full bool ``[H, W]`` mask per
        frame (all False outside the frames it is in).
    """
    category = int(rng.choice(THING_IDS))
    side = min(height, width)
    radius = side * rng.uniform(0.12, 0.22)
    start = rng.uniform((0.15 * width, 0.15 * height), (0.85 * width, 0.85 * height))
    velocity = rng.uniform(-MAX_SPEED, MAX_SPEED, size=2) * side
    angle, spin = rng.uniform(0, 2 * np.pi), rng.uniform(-MAX_SPIN, MAX_SPIN)
    # The frames [first, end) that it is in (at least one); some enter late, some leave early.
    first = int(rng.integers(1, length // 2 + 1)) if rng.random() < LATE_PROBABILITY else 0
    earliest_end = max(first + 1, (length + 1) // 2)
    leaves = rng.random() < LATE_PROBABILITY
    end = int(rng.integers(earliest_end, length)) if leaves and earliest_end < length else length
    texture = thing_texture(rng, category, height, width)
    masks = [
        shape_mask(category, start + velocity * t, radius, angle + spin * t, height, width)
        if first <= t < end
        else np.zeros((height, width), dtype=bool)
        for t in range(length)
    ]
    return category, texture, masks


def _draw_video(rng, height, width, length):
    """One random video.

    Returns:
        tuple: the uint8 ``[H, W, 3]`` frames and, per shape, its contiguous class and its visible
        mask per frame (None where fewer than ``MIN_SEGMENT_AREA`` pixels show).
    """
    _, background = draw_background(rng, height, width)
    tracks = [
        _shape_track(rng, height, width, length)
        for _ in range(int(rng.choice(len(SHAPE_COUNT_PROBABILITIES), p=SHAPE_COUNT_PROBABILITIES)) + 1)
    ]
    frames, visible = [], [[] for _ in tracks]
    for t in range(length):
        image = background + rng.normal(0.0, FRAME_NOISE, background.shape)
        covered = np.zeros((height, width), dtype=bool)
        for index in reversed(range(len(tracks))):  # the last drawn is on top
            _, texture, masks = tracks[index]
            shown = masks[t] & ~covered
            image[shown] = texture[shown]
            covered |= masks[t]
            visible[index].append(shown if shown.sum() >= MIN_SEGMENT_AREA else None)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames, [(category, masks) for (category, _, _), masks in zip(tracks, visible)]


def _track_annotation(category, masks):
    """The YouTube-VIS annotation of one track (without ids), or None where it never shows."""
    if all(mask is None for mask in masks):
        return None
    return {
        "category_id": DEMO_VIDEO_CATEGORIES[category]["id"],
        "iscrowd": 0,
        "segmentations": [None if m is None else mask_rle(m) for m in masks],
        "bboxes": [None if m is None else segment_bbox(m) for m in masks],
        "areas": [None if m is None else int(m.sum()) for m in masks],
    }


def _write_split(root, split, num_videos, image_size, num_frames, seed, progress):
    paths = _split_paths(root, split)
    height, width = image_size
    videos, annotations = [], []
    for video_id in range(1, num_videos + 1):
        # One generator per video: a video does not depend on how many others are made.
        rng = np.random.default_rng([seed, SPLITS.index(split), video_id])
        length = int(rng.integers(num_frames[0], num_frames[1] + 1))
        frames, tracks = _draw_video(rng, height, width, length)
        file_names = [f"{video_id:05d}/{t:05d}.jpg" for t in range(length)]
        os.makedirs(os.path.join(paths["image_root"], f"{video_id:05d}"))
        for frame, name in zip(frames, file_names):
            Image.fromarray(frame).save(os.path.join(paths["image_root"], name), quality=95)
        videos.append(
            {"id": video_id, "file_names": file_names, "height": height, "width": width, "length": length}
        )
        for annotation in filter(None, (_track_annotation(c, m) for c, m in tracks)):
            annotations.append({"id": len(annotations) + 1, "video_id": video_id, **annotation})
        progress.update()
    content = {
        "info": {"description": f"demo shapes video, {split} split (mask_former built-in demo dataset)"},
        "videos": videos,
        "annotations": annotations,
        "categories": [{**c, "supercategory": "shape"} for c in DEMO_VIDEO_CATEGORIES],
    }
    with open(paths["json_file"], "w") as f:
        json.dump(content, f)


def generate_demo_video_dataset(
    root=None, num_train=24, num_val=8, image_size=(120, 160), num_frames=(6, 10), seed=0, force=False
):
    """Write the demo video dataset under ``root`` (a few seconds on a CPU).

    Deterministic given the arguments; skipped where ``root`` holds a complete one made with the same
    arguments, unless ``force`` (see :func:`mask_former.data.demo_dataset.generate_atomically`).

    Args:
        root (str, optional): target folder; default :func:`demo_video_dataset_root`.
        num_train, num_val (int): number of videos in each split.
        image_size (tuple[int, int]): (height, width) of every frame.
        num_frames (tuple[int, int]): the least and most frames of a video (at least 2).
        seed (int): random seed.
        force (bool): regenerate even if a matching dataset exists.

    Returns:
        str: ``root``.
    """
    root = root or demo_video_dataset_root()
    if min(num_train, num_val) < 1 or min(image_size) < MIN_IMAGE_SIDE or not 2 <= num_frames[0] <= num_frames[1]:
        raise ValueError(
            f"generate_demo_video_dataset needs at least one video per split, sides of at least {MIN_IMAGE_SIDE} "
            f"pixels and 2 <= num_frames[0] <= num_frames[1]; got num_train={num_train}, num_val={num_val}, "
            f"image_size={tuple(image_size)}, num_frames={tuple(num_frames)}"
        )
    settings = {
        "format_version": FORMAT_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": list(image_size),
        "num_frames": list(num_frames),
        "seed": seed,
    }

    def write(staging):
        with tqdm(total=num_train + num_val, desc="Generating demo shapes video", unit="video") as bar:
            for split, count in zip(SPLITS, (num_train, num_val)):
                _write_split(staging, split, count, tuple(image_size), tuple(num_frames), seed, bar)

    return generate_atomically(root, settings, write, force, "Demo video dataset")


def ensure_demo_video_dataset(root=None):
    """Generate the demo video dataset with default settings at ``root`` (default
    :func:`demo_video_dataset_root`) unless a complete one is there. Returns ``root``."""
    root = root or demo_video_dataset_root()
    if read_manifest(root) is None:
        generate_demo_video_dataset(root)
    return root


def register_demo_video_datasets(root=None):
    """Register (or re-register) ``demo_shapes_video_{train,val}`` under ``root`` (default
    :func:`demo_video_dataset_root`). No file is read or written here."""
    root = root or demo_video_dataset_root()
    metadata = video_instances_metadata(DEMO_VIDEO_CATEGORIES)
    for split, name in zip(SPLITS, DEMO_VIDEO_DATASET_NAMES):
        unregister(name)
        paths = _split_paths(root, split)
        register_ytvis_instances(name, metadata, paths["json_file"], paths["image_root"])
        generate_before_loading(name, partial(ensure_demo_video_dataset, root))


register_demo_video_datasets()
