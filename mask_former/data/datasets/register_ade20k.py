"""ADE20K datasets, under the names, folders and metadata of upstream Mask2Former:

- "ade20k_sem_seg_{train,val}" (150 classes): detectron2's builtin splits, given "stuff_colors"
  and a loader that reports missing files. Labels in ADEChallengeData2016/annotations_detectron2
  (datasets/prepare_ade20k_sem_seg.py).
- "ade20k_full_sem_seg_{train,val}" (847 classes): ADE20K_2021_17_01/images_detectron2 and
  16-bit TIFF labels in ADE20K_2021_17_01/annotations_detectron2, ignore label 65535
  (datasets/prepare_ade20k_full_sem_seg.py).
- "ade20k_panoptic_{train,val}" (150 classes, 100 things), with semantic labels from
  annotations_detectron2 (datasets/prepare_ade20k_pan_seg.py).
- "ade20k_instance_{train,val}" (100 thing classes), COCO-format json
  (datasets/prepare_ade20k_ins_seg.py).
"""

import os
from functools import partial
from typing import Dict

from detectron2.data import DatasetCatalog, MetadataCatalog

from .categories import ADE20K_150_CATEGORIES, ADE20K_FULL_CATEGORIES, ADE20K_INSTANCE_CATEGORIES
from .loaders import load_coco_instances, load_sem_seg_pairs
from .registration import (
    datasets_root,
    panoptic_metadata,
    register_panoptic,
    register_sem_seg,
    replace_dataset,
)

__all__ = ["ade20k_instance_metadata", "ade20k_panoptic_metadata"]

ADE20K_FULL_IGNORE_LABEL = 65535

# name suffix -> folder name of the split, in every ADE20K layout.
_SPLITS = {"train": "training", "val": "validation"}


def _update_builtin_ade20k_sem_seg() -> None:
    colors = [cat["color"] for cat in ADE20K_150_CATEGORIES]
    for split in _SPLITS:
        name = f"ade20k_sem_seg_{split}"
        metadata = MetadataCatalog.get(name)
        replace_dataset(
            name, partial(load_sem_seg_pairs, metadata.sem_seg_root, metadata.image_root)
        )
        metadata.set(stuff_colors=colors)


def register_all_ade20k_full(root: str) -> None:
    root = os.path.join(root, "ADE20K_2021_17_01")
    stuff_classes = [name for _, name in ADE20K_FULL_CATEGORIES]
    for split, dirname in _SPLITS.items():
        register_sem_seg(
            f"ade20k_full_sem_seg_{split}",
            image_root=os.path.join(root, "images_detectron2", dirname),
            sem_seg_root=os.path.join(root, "annotations_detectron2", dirname),
            gt_ext="tif",
            stuff_classes=stuff_classes,
            ignore_label=ADE20K_FULL_IGNORE_LABEL,
        )


def ade20k_panoptic_metadata() -> Dict:
    """Metadata of ADE20K panoptic segmentation (150 categories, 100 things)."""
    return panoptic_metadata(ADE20K_150_CATEGORIES)


def register_all_ade20k_panoptic(root: str) -> None:
    root = os.path.join(root, "ADEChallengeData2016")
    metadata = ade20k_panoptic_metadata()
    for split, dirname in _SPLITS.items():
        register_panoptic(
            f"ade20k_panoptic_{split}",
            metadata,
            image_root=os.path.join(root, "images", dirname),
            panoptic_root=os.path.join(root, f"ade20k_panoptic_{split}"),
            panoptic_json=os.path.join(root, f"ade20k_panoptic_{split}.json"),
            sem_seg_root=os.path.join(root, "annotations_detectron2", dirname),
            instances_json=os.path.join(root, f"ade20k_instance_{split}.json"),
            evaluator_type="ade20k_panoptic_seg",
        )


def ade20k_instance_metadata() -> Dict:
    """Metadata of ADE20K instance segmentation (100 thing classes)."""
    return {
        "thing_classes": [name for _, name in ADE20K_INSTANCE_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {
            cat_id: i for i, (cat_id, _) in enumerate(ADE20K_INSTANCE_CATEGORIES)
        },
    }


def register_all_ade20k_instance(root: str) -> None:
    root = os.path.join(root, "ADEChallengeData2016")
    metadata = ade20k_instance_metadata()
    for split, dirname in _SPLITS.items():
        name = f"ade20k_instance_{split}"
        image_root = os.path.join(root, "images", dirname)
        json_file = os.path.join(root, f"ade20k_instance_{split}.json")
        DatasetCatalog.register(name, partial(load_coco_instances, json_file, image_root, name))
        MetadataCatalog.get(name).set(
            json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata
        )


_update_builtin_ade20k_sem_seg()
register_all_ade20k_full(datasets_root())
register_all_ade20k_panoptic(datasets_root())
register_all_ade20k_instance(datasets_root())
