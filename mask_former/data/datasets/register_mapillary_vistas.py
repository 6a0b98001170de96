"""Mapillary Vistas v1.2, read as released (no preparation), under upstream Mask2Former's names:

- "mapillary_vistas_sem_seg_{train,val}" (65 classes; label 65 "Unlabeled" is the ignore label):
  mapillary_vistas/{training,validation}/images and .../labels.
- "mapillary_vistas_panoptic_{train,val}": .../panoptic/panoptic_2018.json and its PNGs, with the
  semantic labels of .../labels.
"""

import os
from typing import Dict

from .categories import MAPILLARY_VISTAS_CATEGORIES, MAPILLARY_VISTAS_IGNORE_LABEL
from .registration import datasets_root, panoptic_metadata, register_panoptic, register_sem_seg

__all__ = ["mapillary_vistas_panoptic_metadata"]

_SPLITS = {"train": "training", "val": "validation"}


def register_all_mapillary_vistas(root: str) -> None:
    root = os.path.join(root, "mapillary_vistas")
    for split, dirname in _SPLITS.items():
        register_sem_seg(
            f"mapillary_vistas_sem_seg_{split}",
            image_root=os.path.join(root, dirname, "images"),
            sem_seg_root=os.path.join(root, dirname, "labels"),
            stuff_classes=[cat["name"] for cat in MAPILLARY_VISTAS_CATEGORIES],
            stuff_colors=[cat["color"] for cat in MAPILLARY_VISTAS_CATEGORIES],
            ignore_label=MAPILLARY_VISTAS_IGNORE_LABEL,
        )


def mapillary_vistas_panoptic_metadata() -> Dict:
    """Metadata of Mapillary Vistas panoptic segmentation (65 categories, 37 things).

    As upstream, thing_classes/thing_colors list all 65 categories, so that a contiguous id
    indexes them directly.
    """
    metadata = panoptic_metadata(MAPILLARY_VISTAS_CATEGORIES)
    metadata.update(thing_classes=metadata["stuff_classes"], thing_colors=metadata["stuff_colors"])
    return metadata


def register_all_mapillary_vistas_panoptic(root: str) -> None:
    root = os.path.join(root, "mapillary_vistas")
    metadata = mapillary_vistas_panoptic_metadata()
    for split, dirname in _SPLITS.items():
        register_panoptic(
            f"mapillary_vistas_panoptic_{split}",
            metadata,
            image_root=os.path.join(root, dirname, "images"),
            panoptic_root=os.path.join(root, dirname, "panoptic"),
            panoptic_json=os.path.join(root, dirname, "panoptic", "panoptic_2018.json"),
            sem_seg_root=os.path.join(root, dirname, "labels"),
            instances_json=None,
            evaluator_type="mapillary_vistas_panoptic_seg",
            ignore_label=MAPILLARY_VISTAS_IGNORE_LABEL,
        )


register_all_mapillary_vistas(datasets_root())
register_all_mapillary_vistas_panoptic(datasets_root())
