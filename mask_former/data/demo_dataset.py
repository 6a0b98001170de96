"""The built-in demo dataset, "demo shapes": small synthetic scenes that a tiny Mask2Former learns
on a CPU in minutes, for all three tasks, with detectron2's real evaluators.

Each image (96 x 128 by default) shows stuff regions (sky, grass, wall) with distinct textures and
colour ranges, and up to four thing instances (circles, squares, triangles) with their own colour
ranges, shading and noise, possibly overlapping. Classes, in contiguous-id order (things first, as
COCO's panoptic classes; dataset id = contiguous id + 1):

    0 circle, 1 square, 2 triangle (things), 3 sky, 4 grass, 5 wall (stuff).

Files under the root (default ``$DETECTRON2_DATASETS/demo_shapes``), ``{split}`` in train, val::

    images/{split}/000001.jpg                 RGB images
    panoptic/{split}/000001.png               COCO panoptic PNGs (segment id = R + 256 G + 256^2 B)
    semantic/{split}/000001.png               contiguous class ids, 255 = unlabelled
    annotations/panoptic_{split}.json         COCO panoptic json (categories with isthing)
    annotations/instances_{split}.json        COCO instances json of the things (RLE masks)
    manifest.json                             written last: the dataset is complete

Unlabelled pixels (VOID in the panoptic PNG, 255 in the semantic PNG) are the grey rocks that
some images show, like the unannotated objects of real datasets, and any visible fragment smaller
than 16 pixels; the rest of the image is labelled.

Registered datasets (paths are fixed at registration, nothing is read before loading; loading
generates the dataset first where it is missing):

- ``demo_shapes_sem_seg_{split}``: semantic segmentation (evaluator "sem_seg", all six classes as
  ``stuff_classes``, ``ignore_label`` 255).
- ``demo_shapes_panoptic_{split}``: COCO panoptic (evaluator "coco_panoptic_seg"), and
  ``demo_shapes_panoptic_{split}_with_sem_seg``, the same with semantic labels, as COCO's
  ``coco_2017_{split}_panoptic[_with_sem_seg]``. Their metadata is laid out as Mask2Former's COCO
  panoptic metadata: ``thing_dataset_id_to_contiguous_id`` for the things and
  ``stuff_dataset_id_to_contiguous_id`` for all classes, contiguous ids over all classes;
  ``json_file`` is the instances json (for mask AP).
- ``demo_shapes_instance_{split}``: COCO instances of the things (evaluator "coco"); its
  contiguous ids 0-2 are the same as the panoptic ones.

Use :func:`register_demo_datasets` to register them under another root (tests do).
"""
import json
import logging
import os
import shutil
import uuid
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from panopticapi.utils import id2rgb
from PIL import Image
from tqdm import tqdm

from .datasets import panoptic_metadata, register_coco_panoptic_annos_sem_seg, register_sem_seg
from .datasets.registration import datasets_root

__all__ = [
    "DEMO_CATEGORIES",
    "DEMO_DATASET_NAMES",
    "demo_dataset_root",
    "ensure_demo_dataset",
    "generate_atomically",
    "generate_demo_dataset",
    "register_demo_datasets",
]

logger = logging.getLogger(__name__)

# In contiguous-id order; "id" is the dataset id written in the json files.
DEMO_CATEGORIES = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 60, 40]},
    {"id": 2, "name": "square", "isthing": 1, "color": [240, 210, 30]},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [190, 30, 210]},
    {"id": 4, "name": "sky", "isthing": 0, "color": [120, 175, 235]},
    {"id": 5, "name": "grass", "isthing": 0, "color": [60, 150, 50]},
    {"id": 6, "name": "wall", "isthing": 0, "color": [165, 90, 70]},
]
CIRCLE, SQUARE, TRIANGLE, SKY, GRASS, WALL = range(len(DEMO_CATEGORIES))
THING_IDS = [i for i, c in enumerate(DEMO_CATEGORIES) if c["isthing"]]

SPLITS = ("train", "val")
DEMO_DATASET_NAMES = [
    name
    for split in SPLITS
    for name in (
        f"demo_shapes_sem_seg_{split}",
        f"demo_shapes_panoptic_{split}",
        f"demo_shapes_panoptic_{split}_with_sem_seg",
        f"demo_shapes_instance_{split}",
    )
]

IGNORE_LABEL = 255
MIN_IMAGE_SIDE = 16
MANIFEST = "manifest.json"
# Bump when the generated content changes, so that existing copies are regenerated.
FORMAT_VERSION = 1

# Probabilities of 0, 1, 2, 3 and 4 shapes in an image.
THING_COUNT_PROBABILITIES = (0.08, 0.23, 0.23, 0.23, 0.23)
# A new shape is placed only where it leaves this fraction of each earlier shape uncovered.
MIN_VISIBLE_FRACTION = 0.5
PLACEMENT_ATTEMPTS = 10
# Fraction of images with an unlabelled grey rock.
ROCK_PROBABILITY = 0.25
# Visible fragments smaller than this (in pixels) are left unlabelled rather than annotated.
MIN_SEGMENT_AREA = 16

# Per-class colour ranges (RGB low, high) of the things.
THING_COLOR_RANGES = {
    CIRCLE: ((200, 40, 20), (255, 120, 70)),
    SQUARE: ((210, 185, 0), (255, 240, 80)),
    TRIANGLE: ((140, 0, 160), (220, 60, 255)),
}


def demo_dataset_root() -> str:
    """The demo dataset's default folder: ``$DETECTRON2_DATASETS/demo_shapes`` (``DETECTRON2_
    DATASETS`` defaults to "datasets"), read when called."""
    return os.path.join(datasets_root(), "demo_shapes")


def _split_paths(root: str, split: str) -> Dict[str, str]:
    return {
        "image_root": os.path.join(root, "images", split),
        "panoptic_root": os.path.join(root, "panoptic", split),
        "sem_seg_root": os.path.join(root, "semantic", split),
        "panoptic_json": os.path.join(root, "annotations", f"panoptic_{split}.json"),
        "instances_json": os.path.join(root, "annotations", f"instances_{split}.json"),
    }


# ---------------------------------------------------------------------------------------------
# Drawing one scene.


def _noise(rng: np.random.Generator, shape: Tuple[int, ...], sigma: float) -> np.ndarray:
    return rng.normal(0.0, sigma, shape)


def _sky_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Blue, brightening towards the horizon, nearly flat."""
    base = rng.uniform((90, 150, 215), (140, 195, 250))
    rows = np.linspace(0.0, 25.0, height)[:, None, None]
    return base + rows + _noise(rng, (height, width, 3), 3.0)


def _grass_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Green with strong pixel noise and vertical streaks."""
    base = rng.uniform((35, 115, 25), (80, 170, 65))
    streaks = _noise(rng, (1, width, 1), 12.0)
    return base + streaks + _noise(rng, (height, width, 3), 20.0)


def _wall_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Red-brown bricks (8 x 16 px, staggered rows) with light mortar lines."""
    brick = rng.uniform((145, 70, 50), (185, 105, 85))
    mortar = rng.uniform((185, 180, 170), (215, 210, 200))
    ys, xs = np.mgrid[:height, :width]
    shifted = xs + 8 * ((ys // 8) % 2)
    is_mortar = (ys % 8 == 0) | (shifted % 16 == 0)
    texture = np.where(is_mortar[..., None], mortar, brick)
    return texture + _noise(rng, (height, width, 3), 8.0)


# A segment of a scene: (contiguous class id, bool [H, W] mask).
Segment = Tuple[int, np.ndarray]

STUFF_TEXTURES: Dict[int, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    SKY: _sky_texture,
    GRASS: _grass_texture,
    WALL: _wall_texture,
}


def stuff_layout(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Sky above a wavy horizon, grass below, and sometimes a wall standing on one side.

    Returns:
        np.ndarray: ``[H, W]`` int64 contiguous stuff ids.
    """
    xs = np.arange(width)
    horizon = height * rng.uniform(0.35, 0.65) + height * rng.uniform(0.0, 0.08) * np.sin(
        2 * np.pi * xs / rng.uniform(0.5, 1.5) / width + rng.uniform(0, 2 * np.pi)
    )
    ys = np.arange(height)[:, None]
    layout = np.where(ys < horizon[None, :], SKY, GRASS)
    if rng.random() < 0.6:
        wall_width = int(width * rng.uniform(0.2, 0.45))
        columns = slice(0, wall_width) if rng.random() < 0.5 else slice(width - wall_width, width)
        top = height * rng.uniform(0.1, 0.35)
        bottom = horizon + height * rng.uniform(0.0, 0.1)
        in_wall = (ys >= top) & (ys < bottom[None, :])
        layout[:, columns][in_wall[:, columns]] = WALL
    return layout


def draw_background(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Stuff regions (:func:`stuff_layout`) filled with their textures.

    Returns:
        tuple: ``[H, W]`` int64 contiguous stuff ids and the float ``[H, W, 3]`` RGB image.
    """
    layout = stuff_layout(rng, height, width)
    image = np.zeros((height, width, 3))
    for category, texture in STUFF_TEXTURES.items():
        region = layout == category
        image[region] = texture(rng, height, width)[region]
    return layout, image


def _shape_polygon(category: int, center: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Corners of a square or an equilateral triangle, rotated by ``angle``."""
    corners, scale = {SQUARE: (4, 1.2), TRIANGLE: (3, 1.25)}[category]
    angles = angle + 2 * np.pi * np.arange(corners) / corners
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * radius * scale + center


def shape_mask(
    category: int, center: np.ndarray, radius: float, angle: float, height: int, width: int
) -> np.ndarray:
    """Bool ``[H, W]`` mask of one shape (pixel centres inside it)."""
    ys, xs = np.mgrid[:height, :width] + 0.5
    if category == CIRCLE:
        return (xs - center[0]) ** 2 + (ys - center[1]) ** 2 <= radius**2
    polygon = _shape_polygon(category, center, radius, angle)
    # A convex polygon's inside is on the same side of every edge.
    sides = np.stack(
        [
            (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0)
            for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0))
        ]
    )
    return (sides >= 0).all(axis=0) | (sides <= 0).all(axis=0)


def _random_shape(rng: np.random.Generator, height: int, width: int) -> Tuple[int, np.ndarray]:
    category = int(rng.choice(THING_IDS))
    radius = min(height, width) * rng.uniform(0.1, 0.22)
    center = rng.uniform((0.05 * width, 0.05 * height), (0.95 * width, 0.95 * height))
    return category, shape_mask(category, center, radius, rng.uniform(0, 2 * np.pi), height, width)


def thing_texture(rng: np.random.Generator, category: int, height: int, width: int) -> np.ndarray:
    """The class's colour, a random linear shading and pixel noise."""
    low, high = THING_COLOR_RANGES[category]
    ys, xs = np.mgrid[:height, :width]
    gradient = rng.uniform(-0.4, 0.4, size=2)
    shading = (gradient[0] * (xs - width / 2) + gradient[1] * (ys - height / 2))[..., None]
    return rng.uniform(low, high) + shading + _noise(rng, (height, width, 3), 6.0)


def _place_things(rng: np.random.Generator, height: int, width: int) -> List[Segment]:
    """Shapes in drawing order; none covers more than 1 - MIN_VISIBLE_FRACTION of an earlier one.

    Returns:
        list[tuple[int, np.ndarray]]: (contiguous class id, full bool mask) per shape.
    """
    things = []
    for _ in range(int(rng.choice(len(THING_COUNT_PROBABILITIES), p=THING_COUNT_PROBABILITIES))):
        for _ in range(PLACEMENT_ATTEMPTS):
            category, mask = _random_shape(rng, height, width)
            if mask.any() and all(
                (earlier & ~mask).sum() >= MIN_VISIBLE_FRACTION * earlier.sum()
                for _, earlier in things
            ):
                things.append((category, mask))
                break
    return things


def _unlabelled_rock(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """A grey ellipse in the lower half of the image, left unlabelled like COCO's unannotated
    objects.

    Returns:
        tuple: its bool ``[H, W]`` mask and its ``[H, W, 3]`` texture.
    """
    ys, xs = np.mgrid[:height, :width] + 0.5
    center_x, center_y = rng.uniform((0.1 * width, 0.55 * height), (0.9 * width, 0.9 * height))
    axis_x, axis_y = rng.uniform((0.05 * width, 0.03 * height), (0.12 * width, 0.08 * height))
    mask = ((xs - center_x) / axis_x) ** 2 + ((ys - center_y) / axis_y) ** 2 <= 1
    texture = rng.uniform(100, 140) + _noise(rng, (height, width, 3), 10.0)
    return mask, texture


def _draw_scene(rng: np.random.Generator, height: int, width: int) -> Tuple[np.ndarray, List[Segment]]:
    """One random scene.

    Returns:
        tuple: the RGB image (uint8 ``[H, W, 3]``) and its segments, a list of
        (contiguous class id, bool ``[H, W]`` visible mask) that tile the image except for
        unlabelled fragments.
    """
    layout, image = draw_background(rng, height, width)

    unlabelled = np.zeros((height, width), dtype=bool)
    if rng.random() < ROCK_PROBABILITY:
        unlabelled, texture = _unlabelled_rock(rng, height, width)
        image[unlabelled] = texture[unlabelled]

    things = _place_things(rng, height, width)
    covered = np.zeros((height, width), dtype=bool)
    visible_things = []
    for category, mask in reversed(things):  # the last drawn is on top
        visible = mask & ~covered
        image[visible] = thing_texture(rng, category, height, width)[visible]
        covered |= mask
        visible_things.append((category, visible))

    stuff = [
        (category, (layout == category) & ~covered & ~unlabelled) for category in STUFF_TEXTURES
    ]
    segments = [(c, m) for c, m in visible_things[::-1] + stuff if m.sum() >= MIN_SEGMENT_AREA]
    return np.clip(image, 0, 255).astype(np.uint8), segments


# ---------------------------------------------------------------------------------------------
# Writing the files.


def _bbox(mask: np.ndarray) -> List[int]:
    """COCO [x, y, w, h] of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def mask_rle(mask: np.ndarray) -> Dict[str, Any]:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _write_sample(
    paths: Dict[str, str], stem: str, image: np.ndarray, segments: List[Segment]
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Write one image and its label files; returns its panoptic segments_info and instance
    annotations (without ids)."""
    height, width = image.shape[:2]
    pan_ids = np.zeros((height, width), dtype=np.uint32)
    sem_seg = np.full((height, width), IGNORE_LABEL, dtype=np.uint8)
    segments_info, instances = [], []
    for segment_id, (category, mask) in enumerate(segments, start=1):
        pan_ids[mask] = segment_id
        sem_seg[mask] = category
        dataset_id = DEMO_CATEGORIES[category]["id"]
        area, bbox = int(mask.sum()), _bbox(mask)
        segments_info.append(
            {"id": segment_id, "category_id": dataset_id, "area": area, "bbox": bbox, "iscrowd": 0}
        )
        if DEMO_CATEGORIES[category]["isthing"]:
            instances.append(
                {
                    "category_id": dataset_id,
                    "segmentation": mask_rle(mask),
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
    Image.fromarray(image).save(os.path.join(paths["image_root"], stem + ".jpg"), quality=95)
    Image.fromarray(id2rgb(pan_ids)).save(os.path.join(paths["panoptic_root"], stem + ".png"))
    Image.fromarray(sem_seg).save(os.path.join(paths["sem_seg_root"], stem + ".png"))
    return segments_info, instances


def _write_split(
    root: str, split: str, num_images: int, image_size: Tuple[int, int], seed: int, progress: tqdm
) -> None:
    paths = _split_paths(root, split)
    for key in ("image_root", "panoptic_root", "sem_seg_root"):
        os.makedirs(paths[key], exist_ok=True)
    os.makedirs(os.path.dirname(paths["panoptic_json"]), exist_ok=True)
    split_index = SPLITS.index(split)
    images, panoptic_annotations, instance_annotations = [], [], []
    for image_id in range(1, num_images + 1):
        # One generator per image: an image does not depend on how many others are made.
        rng = np.random.default_rng([seed, split_index, image_id])
        stem = f"{image_id:06d}"
        image, segments = _draw_scene(rng, *image_size)
        segments_info, instances = _write_sample(paths, stem, image, segments)
        height, width = image_size
        images.append(
            {"id": image_id, "file_name": stem + ".jpg", "height": height, "width": width}
        )
        panoptic_annotations.append(
            {"image_id": image_id, "file_name": stem + ".png", "segments_info": segments_info}
        )
        for instance in instances:
            instance_annotations.append(
                {"id": len(instance_annotations) + 1, "image_id": image_id, **instance}
            )
        progress.update()
    info = {"description": f"demo shapes, {split} split (mask_former built-in demo dataset)"}
    panoptic_categories = [
        {**c, "supercategory": "shape" if c["isthing"] else "background"} for c in DEMO_CATEGORIES
    ]
    instance_categories = [
        {"id": c["id"], "name": c["name"], "supercategory": "shape"}
        for c in DEMO_CATEGORIES
        if c["isthing"]
    ]
    _write_json(
        paths["panoptic_json"],
        {
            "info": info,
            "images": images,
            "annotations": panoptic_annotations,
            "categories": panoptic_categories,
        },
    )
    _write_json(
        paths["instances_json"],
        {
            "info": info,
            "images": images,
            "annotations": instance_annotations,
            "categories": instance_categories,
        },
    )


def _write_json(path: str, content: Dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(content, f)


def read_manifest(root: str) -> Optional[Dict[str, Any]]:
    """The manifest of a complete demo dataset at ``root``, or None."""
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _remove_previous(root: str) -> None:
    """Remove an earlier generated dataset (or an empty folder) at ``root``; refuse anything else."""
    if not os.path.exists(root):
        return
    if read_manifest(root) is None and os.listdir(root):
        raise FileExistsError(
            f"{root} exists and is not a demo shapes dataset (no {MANIFEST}); remove it or "
            "choose another root"
        )
    shutil.rmtree(root)


def generate_demo_dataset(
    root: Optional[str] = None,
    num_train: int = 240,
    num_val: int = 48,
    image_size: Tuple[int, int] = (96, 128),
    seed: int = 0,
    force: bool = False,
) -> str:
    """Write the demo shapes dataset under ``root`` (a few seconds on a CPU).

    Deterministic given the arguments. Skipped where ``root`` already holds a complete dataset
    made with the same arguments, unless ``force``; an earlier demo dataset with other arguments
    is replaced. The files are written to a temporary folder beside ``root`` and moved into place
    at the end, so an interrupted run leaves no partial dataset.

    Args:
        root (str, optional): target folder; default :func:`demo_dataset_root`.
        num_train, num_val (int): number of images in each split.
        image_size (tuple[int, int]): (height, width) of every image.
        seed (int): random seed.
        force (bool): regenerate even if a matching dataset exists.

    Returns:
        str: ``root``.
    """
    root = root or demo_dataset_root()
    if min(num_train, num_val) < 1 or min(image_size) < MIN_IMAGE_SIDE:
        raise ValueError(
            f"generate_demo_dataset needs at least one image per split and sides of at least "
            f"{MIN_IMAGE_SIDE} pixels; got num_train={num_train}, num_val={num_val}, "
            f"image_size={tuple(image_size)}"
        )
    settings = {
        "format_version": FORMAT_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": list(image_size),
        "seed": seed,
    }

    def write(staging):
        with tqdm(total=num_train + num_val, desc="Generating demo shapes", unit="img") as bar:
            for split, count in zip(SPLITS, (num_train, num_val)):
                _write_split(staging, split, count, tuple(image_size), seed, bar)

    return generate_atomically(root, settings, write, force, "Demo dataset")


def generate_atomically(root, settings, write, force=False, what="Dataset"):
    """Run ``write(folder)`` to generate a dataset at ``root`` with a manifest holding ``settings``.

    Skipped where ``root`` already holds a complete dataset (its manifest) of the same settings,
    unless ``force``; an earlier generated dataset with other settings is replaced, any other
    content of ``root`` refused. ``write`` fills a temporary folder beside ``root``, moved into
    place at the end, so an interrupted run leaves no partial dataset.

    Returns:
        str: ``root``.
    """
    if not force and read_manifest(root) == settings:
        logger.info(f"{what} already complete at {root}; not regenerating.")
        return root
    _remove_previous(root)

    parent, name = os.path.split(os.path.abspath(root))
    staging = os.path.join(parent, f".{name}-{uuid.uuid4().hex}")
    os.makedirs(staging)
    try:
        write(staging)
        _write_json(os.path.join(staging, MANIFEST), settings)
        os.rename(staging, root)
    except OSError:
        if read_manifest(root) is None:  # not another process finishing first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(f"{what} written to {root}.")
    return root


def ensure_demo_dataset(root: Optional[str] = None) -> str:
    """Generate the demo dataset with default settings at ``root`` (default
    :func:`demo_dataset_root`) unless a complete one is there. Returns ``root``."""
    root = root or demo_dataset_root()
    if read_manifest(root) is None:
        generate_demo_dataset(root)
    return root


# ---------------------------------------------------------------------------------------------
# Registration.


def generate_before_loading(name: str, ensure: Callable[[], Any]) -> None:
    """Make the loader registered as ``name`` call ``ensure()`` (which generates the dataset where it
    is missing) first."""
    load = DatasetCatalog.pop(name)

    def generate_and_load() -> List[Dict[str, Any]]:
        ensure()
        return load()

    DatasetCatalog.register(name, generate_and_load)


def unregister(name: str) -> None:
    """Remove ``name`` from detectron2's dataset and metadata catalogs where it is there."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


_INSTANCE_METADATA_KEYS = ("thing_classes", "thing_colors", "thing_dataset_id_to_contiguous_id")


def _register_split(root: str, split: str, metadata: Dict[str, Any]) -> None:
    paths = _split_paths(root, split)
    register_sem_seg(
        f"demo_shapes_sem_seg_{split}",
        image_root=paths["image_root"],
        sem_seg_root=paths["sem_seg_root"],
        ignore_label=IGNORE_LABEL,
        stuff_classes=metadata["stuff_classes"],
        stuff_colors=metadata["stuff_colors"],
    )
    register_coco_panoptic_annos_sem_seg(
        f"demo_shapes_panoptic_{split}",
        metadata,
        paths["image_root"],
        paths["panoptic_root"],
        paths["panoptic_json"],
        paths["sem_seg_root"],
        paths["instances_json"],
    )
    register_coco_instances(
        f"demo_shapes_instance_{split}",
        {key: metadata[key] for key in _INSTANCE_METADATA_KEYS},
        paths["instances_json"],
        paths["image_root"],
    )


def register_demo_datasets(root: Optional[str] = None) -> None:
    """Register (or re-register) the demo datasets of :data:`DEMO_DATASET_NAMES` under ``root``
    (default :func:`demo_dataset_root`). No file is read or written here."""
    root = root or demo_dataset_root()
    for name in DEMO_DATASET_NAMES:
        unregister(name)
    metadata = panoptic_metadata(DEMO_CATEGORIES)
    for split in SPLITS:
        _register_split(root, split, metadata)
    for name in DEMO_DATASET_NAMES:
        generate_before_loading(name, partial(ensure_demo_dataset, root))


register_demo_datasets()
