"""Helpers shared by the dataset registrations: dataset root, metadata builders and registration
of semantic and panoptic splits. Registering never touches the disk: loading happens when a
dataset is first requested from the `DatasetCatalog`.
"""

import os
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from .loaders import load_coco_panoptic_json, load_sem_seg_pairs

__all__ = [
    "datasets_root",
    "model_classes",
    "panoptic_metadata",
    "register_panoptic",
    "register_sem_seg",
    "replace_dataset",
]

# Panoptic segment ids are stored as category * LABEL_DIVISOR + instance in predictions.
LABEL_DIVISOR = 1000


def datasets_root() -> str:
    """The folder holding all built-in datasets, as detectron2 defines it."""
    return os.getenv("DETECTRON2_DATASETS", "datasets")


def replace_dataset(name: str, loader: Callable[[], List[Dict]]) -> None:
    """Register `loader` under `name`, replacing the loader a previous registration gave it."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, loader)


def panoptic_metadata(categories: List[Dict]) -> Dict:
    """
    Metadata of a panoptic dataset, laid out as upstream Mask2Former does.

    Args:
        categories: dicts with "id", "name", "isthing" and "color", in contiguous-id order.

    Returns:
        dict: "thing_classes"/"thing_colors" of the thing categories, "stuff_classes"/
        "stuff_colors" of all categories, "thing_dataset_id_to_contiguous_id" for the things and
        "stuff_dataset_id_to_contiguous_id" for every category (so that the semantic
        segmentation evaluator covers things too).
    """
    things = [cat for cat in categories if cat["isthing"]]
    return {
        "thing_classes": [cat["name"] for cat in things],
        "thing_colors": [cat["color"] for cat in things],
        "stuff_classes": [cat["name"] for cat in categories],
        "stuff_colors": [cat["color"] for cat in categories],
        "thing_dataset_id_to_contiguous_id": {
            cat["id"]: i for i, cat in enumerate(categories) if cat["isthing"]
        },
        "stuff_dataset_id_to_contiguous_id": {cat["id"]: i for i, cat in enumerate(categories)},
    }


def model_classes(metadata) -> Tuple[List[str], Optional[List]]:
    """
    Names and colors of the classes of a model trained on a dataset, indexed by the model's class
    id (contiguous id).

    Semantic and panoptic datasets list every class in ``stuff_classes`` (detectron2's convention,
    followed by upstream); their ``thing_classes`` may list only the things (ADE20K panoptic: 100 of
    150), which a model class id does not index. Instance datasets have ``thing_classes`` only.

    Args:
        metadata: a dataset's ``Metadata``.

    Returns:
        (names, colors): ``colors`` is None where the dataset has none.
    """
    if metadata.get("stuff_classes") is not None:
        return list(metadata.stuff_classes), metadata.get("stuff_colors")
    return list(metadata.get("thing_classes", [])), metadata.get("thing_colors")


def register_sem_seg(
    name: str,
    *,
    image_root: str,
    sem_seg_root: str,
    gt_ext: str = "png",
    image_ext: str = "jpg",
    **metadata,
) -> None:
    """
    Register a semantic segmentation split: images and label maps paired by file name.

    Args:
        name: dataset name, e.g. "ade20k_full_sem_seg_train".
        image_root, sem_seg_root: folders of images and label maps.
        gt_ext, image_ext: their file extensions.
        metadata: more metadata (stuff_classes, ignore_label, ...).
    """
    replace_dataset(name, partial(load_sem_seg_pairs, sem_seg_root, image_root, gt_ext, image_ext))
    MetadataCatalog.get(name).set(
        image_root=image_root, sem_seg_root=sem_seg_root, evaluator_type="sem_seg", **metadata
    )


def register_panoptic(
    name: str,
    metadata: Dict,
    *,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: Optional[str],
    instances_json: Optional[str],
    evaluator_type: str,
    ignore_label: int = 255,
) -> None:
    """
    Register a COCO-format panoptic split (with semantic labels when `sem_seg_root` is given).

    Args:
        name: dataset name, e.g. "ade20k_panoptic_train".
        metadata: output of `panoptic_metadata` (or the same keys).
        image_root: folder of the ".jpg" images.
        panoptic_root, panoptic_json: folder of panoptic PNGs and their json.
        sem_seg_root: folder of semantic label PNGs named like the panoptic PNGs, or None.
        instances_json: COCO instances json for instance evaluation, or None.
        evaluator_type: the evaluator train_net builds for this split.
        ignore_label: label of unannotated pixels in the semantic labels.
    """
    replace_dataset(
        name,
        partial(
            load_coco_panoptic_json,
            panoptic_json,
            image_root,
            panoptic_root,
            sem_seg_root,
            metadata,
        ),
    )
    paths = {"sem_seg_root": sem_seg_root} if sem_seg_root is not None else {}
    MetadataCatalog.get(name).set(
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        json_file=instances_json,
        evaluator_type=evaluator_type,
        ignore_label=ignore_label,
        label_divisor=LABEL_DIVISOR,
        **paths,
        **metadata,
    )
