"""Readers of the raw ADE20K SceneParsing annotations (ADEChallengeData2016), shared by the
semantic, panoptic and instance preparation scripts.
"""

import os
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from .categories import ADE20K_INSTANCE_CATEGORIES

__all__ = ["ade20k_image_entry", "read_ade20k_instances", "read_ade20k_semantic"]

# Instance class k of the annotations_instance PNGs (red channel, 1-based) -> 150-class id.
_INSTANCE_CLASS_TO_ID = {k + 1: cat_id for k, (cat_id, _) in enumerate(ADE20K_INSTANCE_CATEGORIES)}


def _read_uint8(path: str, channels: int) -> np.ndarray:
    label = np.asarray(Image.open(path))
    if label.dtype != np.uint8 or label.ndim != (2 if channels == 1 else 3):
        raise ValueError(
            f"{path} is not a {channels}-channel 8-bit label image "
            f"(got dtype {label.dtype}, shape {label.shape})."
        )
    return label


def read_ade20k_semantic(path: str) -> np.ndarray:
    """
    Read a raw semantic label PNG (0 = other, k = class k) as detectron2 labels.

    Returns:
        np.ndarray: (H, W) uint8, class k -> k - 1 and 0 -> 255 (ignored).
    """
    return _read_uint8(path, channels=1) - np.uint8(1)


def read_ade20k_instances(path: str) -> List[Tuple[np.ndarray, int]]:
    """
    Read a raw instance PNG: red = instance class (1..100, 0 = none), green = instance index.

    Returns:
        list of (mask, category id): an (H, W) boolean mask per instance and its id in the
        150-class space, in increasing order of instance index.
    """
    instance = _read_uint8(path, channels=3)
    classes, indices = instance[..., 0], instance[..., 1]
    instances = []
    for index in np.unique(indices):
        if index == 0:
            continue
        mask = indices == index
        instance_classes = np.unique(classes[mask])
        if len(instance_classes) != 1 or int(instance_classes[0]) not in _INSTANCE_CLASS_TO_ID:
            raise ValueError(
                f"{path}: instance {index} has instance classes {instance_classes.tolist()}; "
                f"expected exactly one in 1..{len(_INSTANCE_CLASS_TO_ID)}."
            )
        instances.append((mask, _INSTANCE_CLASS_TO_ID[int(instance_classes[0])]))
    return instances


def ade20k_image_entry(image_path: str) -> Dict:
    """The COCO json "images" entry of an ADE20K image; its id is the file name stem."""
    width, height = Image.open(image_path).size
    file_name = os.path.basename(image_path)
    return {
        "id": os.path.splitext(file_name)[0],
        "file_name": file_name,
        "width": width,
        "height": height,
    }
