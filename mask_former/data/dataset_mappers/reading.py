"""Reading a record's image and label files, with errors naming the file or the missing key."""
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from detectron2.data import detection_utils
from detectron2.utils.file_io import PathManager
from panopticapi.utils import rgb2id

from ...errors import DatasetFileError
from .validation import check_class_ids

__all__ = [
    "PANOPTIC_VOID_ID",
    "panoptic_ids",
    "read_dataset_image",
    "read_image_file",
    "read_label_map",
    "read_panoptic_png",
    "read_panoptic_segments",
    "require_key",
]

# Value of unlabelled pixels in a panoptic id map (COCO panoptic's VOID).
PANOPTIC_VOID_ID = 0


def read_image_file(file_name: str, image_format: Optional[str] = None) -> np.ndarray:
    """Read an image, with an error naming the file where it is missing or cannot be decoded.

    Args:
        file_name: the image's path.
        image_format: as in ``detection_utils.read_image`` ("RGB", "BGR", ...); None keeps the file's own
            channels (label maps).

    Returns:
        ``[H, W, C]`` uint8 for a colour format, ``[H, W]`` for a one-channel file.
    """
    if not PathManager.isfile(file_name):
        raise FileNotFoundError(f"Image file not found: {file_name}")
    try:
        return detection_utils.read_image(file_name, format=image_format)
    except (OSError, SyntaxError, ValueError) as e:  # what Pillow raises for a broken file
        raise OSError(f"Cannot decode image file {file_name}: {e}") from e


def read_dataset_image(record: Dict[str, Any], image_format: str) -> np.ndarray:
    """The image ``record["file_name"]``, uint8 ``[H, W, 3]`` in ``image_format``, checked against the record's
    ``height`` and ``width`` where it has them. A video mapper calls it once per frame record."""
    image = read_image_file(record["file_name"], image_format)
    detection_utils.check_image_size(record, image)
    return image


def require_key(record: Dict[str, Any], key: str, mapper_name: str) -> Any:
    """``record[key]``, with an error naming the image where the key is missing."""
    if key not in record:
        raise KeyError(f"{mapper_name} needs '{key}' in the dataset dict of {record.get('file_name')}")
    return record[key]


def _check_same_size(labels: np.ndarray, image_shape: Tuple[int, ...], file_name: str) -> None:
    if labels.shape[:2] != tuple(image_shape[:2]):
        raise DatasetFileError(
            file_name,
            f"label file is {labels.shape[1]}x{labels.shape[0]} (WxH) but its image "
            f"is {image_shape[1]}x{image_shape[0]}",
        )


def read_label_map(
    file_name: str, image_shape: Tuple[int, ...], num_classes: int, ignore_label: int
) -> np.ndarray:
    """Read a one-channel label map of semantic classes, checking its size against the image's and its class
    ids (``[0, num_classes)`` or ``ignore_label``).

    Returns:
        ``[H, W]`` float64, as upstream, so that every transform resamples it as upstream's (torch has no kernels
        for uint16, a uint8 map would be resized by PIL, not by torch; and torch's nearest resize of float32 can
        pick other pixels along the edges, its scale being float32).
    """
    labels = read_image_file(file_name)
    if labels.ndim != 2:
        raise ValueError(f"Label map {file_name} has shape {labels.shape}; expected one channel")
    _check_same_size(labels, image_shape, file_name)
    check_class_ids(labels, num_classes, file_name, ignore_label)
    return labels.astype(np.float64)


def read_panoptic_png(file_name: str, image_shape: Tuple[int, ...]) -> np.ndarray:
    """Read a COCO-format panoptic PNG, checking its size against the image's.

    Returns:
        uint8 ``[H, W, 3]`` RGB. Transforms resample it as an image (PIL nearest), as upstream does;
        :func:`panoptic_ids` then gives the segment ids.
    """
    rgb = read_image_file(file_name, "RGB")
    _check_same_size(rgb, image_shape, file_name)
    return rgb


def panoptic_ids(rgb: np.ndarray) -> np.ndarray:
    """Segment ids (R + 256 G + 256^2 B; 0 is VOID) of a panoptic PNG, int32 ``[H, W]``."""
    return rgb2id(rgb)


def read_panoptic_segments(
    record: Dict[str, Any], image_shape: Tuple[int, ...], num_classes: int, mapper_name: str
) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """The panoptic PNG and segments of a record, checked.

    Args:
        record: with ``pan_seg_file_name`` and ``segments_info`` (contiguous ``category_id``).
        image_shape: shape of the image.
        num_classes: number of classes.
        mapper_name: named in errors.

    Returns:
        ``pan_rgb`` uint8 ``[H, W, 3]`` (see :func:`read_panoptic_png`) and ``segments_info``.
    """
    pan_file = require_key(record, "pan_seg_file_name", mapper_name)
    segments_info = require_key(record, "segments_info", mapper_name)
    check_class_ids([s["category_id"] for s in segments_info], num_classes, f"segments_info of {pan_file}")
    return read_panoptic_png(pan_file, image_shape), segments_info
