"""The training targets: one class and one mask per class or segment, and their boxes."""
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.structures import BitMasks, Boxes, Instances

__all__ = [
    "mask_boxes",
    "mask_boxes_reference",
    "masks_to_instances",
    "present_labels",
    "present_labels_reference",
    "segment_targets",
    "segments_to_category_map",
    "sem_seg_targets",
]

# Above this range of values, present_labels sorts instead of counting.
_MAX_COUNTED_RANGE = 1 << 20


def masks_to_instances(
    image_size: Tuple[int, int],
    classes: torch.Tensor,
    masks: torch.Tensor,
    boxes: Optional[Boxes] = None,
    drop_empty: bool = False,
) -> Instances:
    """Training targets from per-segment masks.

    Args:
        image_size: (H, W).
        classes: int64 ``[N]``.
        masks: bool ``[N, H, W]``.
        boxes: ``[N]`` boxes, kept as ``gt_boxes``.
        drop_empty: drop the targets whose mask has no pixel (e.g. cropped away), so that no class is taught
            that the image does not show (``INPUT.DROP_EMPTY_TARGETS``); upstream keeps them.

    Returns:
        ``gt_classes`` int64 ``[M]``, ``gt_masks`` bool ``[M, H, W]`` (and ``gt_boxes``), M <= N.
    """
    instances = Instances(image_size)
    instances.gt_classes = classes
    instances.gt_masks = masks
    if boxes is not None:
        instances.gt_boxes = boxes
    if drop_empty:
        instances = instances[masks.flatten(1).any(dim=1)]
    return instances


def present_labels(labels: np.ndarray, ignore_label: int) -> np.ndarray:
    """The distinct values of an integer label map other than ``ignore_label``, sorted, by counting them:
    O(pixels) (a sort where the values span 2^20 or more; :func:`present_labels_reference` is the plain form).

    Args:
        labels: integer ``[H, W]``.
        ignore_label: the label of unlabelled pixels.

    Returns:
        int64 ``[N]``.
    """
    flat = labels.ravel()
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    low, high = int(flat.min()), int(flat.max())
    if high - low >= _MAX_COUNTED_RANGE:
        return present_labels_reference(labels, ignore_label)
    values = np.flatnonzero(np.bincount(flat - low if low else flat)) + low
    return values[values != ignore_label].astype(np.int64, copy=False)


def present_labels_reference(labels: np.ndarray, ignore_label: int) -> np.ndarray:
    """:func:`present_labels` by sorting (upstream's ``np.unique``)."""
    values = np.unique(labels).astype(np.int64)
    return values[values != ignore_label]


def _id_masks(id_map: np.ndarray, ids: np.ndarray) -> torch.Tensor:
    # NumPy's broadcast comparison is many times faster than torch's on the CPU.
    return torch.from_numpy(id_map[None] == ids[:, None, None])


def sem_seg_targets(sem_seg: torch.Tensor, ignore_label: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """One target per class present in a label map; the ignore label is not a class.

    Args:
        sem_seg: int64 ``[H, W]``.
        ignore_label: the label of unlabelled pixels.

    Returns:
        the classes, int64 ``[N]`` (sorted), and their masks, bool ``[N, H, W]``.
    """
    labels = sem_seg.numpy()
    classes = present_labels(labels, ignore_label)
    return torch.from_numpy(classes), _id_masks(labels, classes)


def segment_targets(pan_ids: np.ndarray, segments_info: List[Dict[str, Any]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """One target per non-crowd segment of a panoptic id map.

    Args:
        pan_ids: ``[H, W]`` integer segment ids (int32 from ``panoptic_ids``).
        segments_info: with ``id``, ``category_id`` (contiguous) and ``iscrowd``.

    Returns:
        the classes, int64 ``[N]``, and the segments' masks, bool ``[N, H, W]``.
    """
    segments = [s for s in segments_info if not s.get("iscrowd", 0)]
    classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
    segment_ids = np.array([s["id"] for s in segments], dtype=pan_ids.dtype)
    return classes, _id_masks(pan_ids, segment_ids)


def segments_to_category_map(
    pan_ids: np.ndarray, segments_info: List[Dict[str, Any]], ignore_label: int
) -> np.ndarray:
    """The semantic label map of a panoptic id map (VOID and unknown ids: ``ignore_label``).

    Args:
        pan_ids: ``[H, W]`` segment ids.
        segments_info: with ``id`` and ``category_id``.
        ignore_label: the label of unlabelled pixels.

    Returns:
        ``[H, W]`` float64 class ids (resampled as the label maps of ``read_label_map``).
    """
    categories = np.full(pan_ids.shape, ignore_label, dtype=np.float64)
    for segment in segments_info:
        categories[pan_ids == segment["id"]] = segment["category_id"]
    return categories


def mask_boxes(masks: torch.Tensor) -> Boxes:
    """The tight XYXY boxes of bool masks ``[N, H, W]`` (all zeros for an empty mask), as
    ``BitMasks(masks).get_bounding_boxes()`` (:func:`mask_boxes_reference`) but without its ``torch.any`` over
    the middle dimension (slow on the CPU) and its loop over the masks."""
    as_bytes = masks.view(torch.uint8)
    rows, columns = as_bytes.amax(dim=2), as_bytes.amax(dim=1)
    height, width = masks.shape[-2:]
    # argmax gives the first maximum: the first row or column with a pixel, and, on the flipped lines, the last.
    boxes = torch.stack(
        [
            columns.argmax(dim=1),
            rows.argmax(dim=1),
            width - columns.flip(1).argmax(dim=1),
            height - rows.flip(1).argmax(dim=1),
        ],
        dim=1,
    ).to(torch.float32)
    return Boxes(boxes * rows.any(dim=1, keepdim=True))


def mask_boxes_reference(masks: torch.Tensor) -> Boxes:
    """:func:`mask_boxes` by detectron2's ``BitMasks.get_bounding_boxes``."""
    return BitMasks(masks).get_bounding_boxes()
