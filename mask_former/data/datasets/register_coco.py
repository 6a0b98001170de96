"""COCO datasets: panoptic (133 classes) with semantic labels derived from it, and COCO-Stuff-171
semantic segmentation. COCO instance segmentation ("coco_2017_train", ...) is detectron2's.

Names, folders and metadata follow upstream Mask2Former / MaskFormer:

- "coco_2017_{train,val}_panoptic": detectron2's builtin splits; their thing classes become the 80
  thing categories, as upstream.
- "coco_2017_{train,val}_panoptic_with_sem_seg": the same images, plus "sem_seg_file_name" from
  coco/panoptic_semseg_{train,val}2017 (made by
  datasets/prepare_coco_semantic_annos_from_panoptic.py).
- "coco_2017_{train,test}_stuff_sem_seg": coco/{train,val}2017 with labels in
  coco/stuffthingmaps_detectron2 (made by datasets/prepare_coco_stuff_164k_sem_seg.py).
- "coco_2017_{train,test}_stuff_10k_sem_seg": COCO-Stuff-10k v1.0, the same 171 classes, in
  coco/coco_stuff_10k/{images,annotations}_detectron2/{train,test} (made by
  datasets/prepare_coco_stuff_10k_sem_seg.py), as upstream MaskFormer (v1).
"""

import os
from functools import partial
from typing import Dict

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from .categories import COCO_STUFF_171_CATEGORIES
from .loaders import load_coco_panoptic_json
from .registration import (
    datasets_root,
    panoptic_metadata,
    register_panoptic,
    register_sem_seg,
    replace_dataset,
)

__all__ = ["coco_panoptic_metadata", "register_coco_panoptic_annos_sem_seg"]

# name -> (panoptic PNG folder, panoptic json, semantic label folder), under the datasets root.
_COCO_PANOPTIC_SPLITS = {
    "coco_2017_train_panoptic": (
        "coco/panoptic_train2017",
        "coco/annotations/panoptic_train2017.json",
        "coco/panoptic_semseg_train2017",
    ),
    "coco_2017_val_panoptic": (
        "coco/panoptic_val2017",
        "coco/annotations/panoptic_val2017.json",
        "coco/panoptic_semseg_val2017",
    ),
}

# name suffix -> (image folder, label folder), under <root>/coco.
_COCO_STUFF_SPLITS = {
    "train": ("train2017", "stuffthingmaps_detectron2/train2017"),
    "test": ("val2017", "stuffthingmaps_detectron2/val2017"),
}

# COCO-Stuff-10k splits, each a folder under <root>/coco/coco_stuff_10k/{images,annotations}_detectron2.
COCO_STUFF_10K_SPLITS = ("train", "test")


def coco_panoptic_metadata() -> Dict:
    """Metadata of the 133-category COCO panoptic datasets (80 things, 53 stuff)."""
    return panoptic_metadata(COCO_CATEGORIES)


def _adopt_builtin_panoptic(name: str, metadata: Dict, image_root: str, panoptic_root: str, panoptic_json: str) -> None:
    """detectron2's builtin split `name`: keep its metadata but name only the things as thing classes
    (upstream does the same), and load it with our checking loader."""
    existing = MetadataCatalog.get(name)
    for key in ("thing_classes", "thing_colors"):
        if hasattr(existing, key):
            delattr(existing, key)
    existing.set(thing_classes=metadata["thing_classes"], thing_colors=metadata["thing_colors"])
    replace_dataset(
        name,
        partial(load_coco_panoptic_json, panoptic_json, image_root, panoptic_root, None, metadata),
    )


def register_coco_panoptic_annos_sem_seg(
    name: str,
    metadata: Dict,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    instances_json: str,
) -> None:
    """
    Register a COCO-format panoptic dataset twice: `name` (panoptic only) and
    `name + "_with_sem_seg"` (with semantic labels, evaluated by the panoptic, instance and
    semantic evaluators).

    If `name` is already registered (detectron2's builtin COCO splits), its metadata is kept except
    for thing_classes/thing_colors, which become those of `metadata`.

    Args:
        name: e.g. "coco_2017_train_panoptic".
        metadata: e.g. `coco_panoptic_metadata()`, or `panoptic_metadata(categories)`.
        image_root: folder of the ".jpg" images.
        panoptic_root, panoptic_json: folder of panoptic PNGs and their json.
        sem_seg_root: folder of semantic label PNGs named like the panoptic PNGs.
        instances_json: COCO instances json of the same images (for instance evaluation).
    """
    files = dict(
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        instances_json=instances_json,
        evaluator_type="coco_panoptic_seg",
    )
    if name in DatasetCatalog.list():
        _adopt_builtin_panoptic(name, metadata, image_root, panoptic_root, panoptic_json)
    else:
        register_panoptic(name, metadata, sem_seg_root=None, **files)
    register_panoptic(name + "_with_sem_seg", metadata, sem_seg_root=sem_seg_root, **files)


def register_all_coco_panoptic_annos_sem_seg(root: str) -> None:
    metadata = coco_panoptic_metadata()
    for name, (panoptic_root, panoptic_json, sem_seg_root) in _COCO_PANOPTIC_SPLITS.items():
        instances_meta = MetadataCatalog.get(name[: -len("_panoptic")])
        register_coco_panoptic_annos_sem_seg(
            name,
            metadata,
            instances_meta.image_root,
            os.path.join(root, panoptic_root),
            os.path.join(root, panoptic_json),
            os.path.join(root, sem_seg_root),
            instances_meta.json_file,
        )


def coco_stuff_metadata() -> Dict:
    """Metadata of COCO-Stuff-171 semantic segmentation."""
    return {
        "stuff_classes": [cat["name"] for cat in COCO_STUFF_171_CATEGORIES],
        "stuff_dataset_id_to_contiguous_id": {
            cat["id"]: i for i, cat in enumerate(COCO_STUFF_171_CATEGORIES)
        },
    }


def register_all_coco_stuff_164k(root: str) -> None:
    metadata = coco_stuff_metadata()
    for split, (image_dir, label_dir) in _COCO_STUFF_SPLITS.items():
        register_sem_seg(
            f"coco_2017_{split}_stuff_sem_seg",
            image_root=os.path.join(root, "coco", image_dir),
            sem_seg_root=os.path.join(root, "coco", label_dir),
            ignore_label=255,
            **metadata,
        )


def register_all_coco_stuff_10k(root: str) -> None:
    metadata = coco_stuff_metadata()
    folder = os.path.join(root, "coco", "coco_stuff_10k")
    for split in COCO_STUFF_10K_SPLITS:
        register_sem_seg(
            f"coco_2017_{split}_stuff_10k_sem_seg",
            image_root=os.path.join(folder, "images_detectron2", split),
            sem_seg_root=os.path.join(folder, "annotations_detectron2", split),
            ignore_label=255,
            **metadata,
        )


register_all_coco_panoptic_annos_sem_seg(datasets_root())
register_all_coco_stuff_164k(datasets_root())
register_all_coco_stuff_10k(datasets_root())
