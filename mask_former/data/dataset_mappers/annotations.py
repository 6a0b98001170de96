"""Masks of COCO-style instance annotations (polygons, RLE or arrays) after the augmentation's transforms."""
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.structures import Boxes, polygons_to_bitmask
from fvcore.transforms.transform import TransformList

from .targets import mask_boxes
from .validation import check_class_ids

__all__ = ["AnnotationTargets", "TransformedSegmentation", "annotations_to_masks", "transform_segmentation"]

Size = Tuple[int, int]
Segmentation = Union[List[Sequence[float]], Dict[str, Any], np.ndarray]


class TransformedSegmentation(NamedTuple):
    """One annotation's segmentation after the transforms."""

    mask: np.ndarray
    """bool ``[H, W]``."""
    visible: bool
    """Whether the object is still there: for cut polygons, as upstream's ``filter_empty_instances`` decides
    (something left of the polygons, with a box wider and higher than 1e-5), else whether the mask has a
    pixel."""
    polygon_box: Optional[np.ndarray]
    """float32 ``[4]`` XYXY: the extents of the cut polygons, upstream's ``gt_boxes`` (its ``PolygonMasks``
    box, whose right and bottom are at least 0); None for other segmentations, or for nothing left."""


def _move_polygon_corners(
    polygons: List[Sequence[float]], transforms: TransformList, original_size: Size, output_size: Size
) -> TransformedSegmentation:
    # Exact for the usual transforms (resize, crop, pad, flip); corners that end outside the image
    # are clipped when the polygon is drawn.
    points = [
        transforms.apply_coords(np.asarray(p, dtype=np.float64).reshape(-1, 2)).reshape(-1) for p in polygons
    ]
    mask = polygons_to_bitmask(points, *output_size)
    return TransformedSegmentation(mask, bool(mask.any()), None)


def _cut_polygons(
    polygons: List[Sequence[float]], transforms: TransformList, original_size: Size, output_size: Size
) -> TransformedSegmentation:
    # As detectron2's transform_instance_annotations: crops cut the polygons with shapely.
    try:
        cut = transforms.apply_polygons([np.asarray(p).reshape(-1, 2) for p in polygons])
    except ModuleNotFoundError as e:
        if e.name != "shapely":
            raise
        raise ModuleNotFoundError(
            "Cutting polygons at the crop as upstream does (INPUT.CROP_POLYGONS_WITH_SHAPELY "
            "True) needs the 'shapely' package: pip install shapely, or set the key to False",
            name="shapely",
        ) from e
    mask = polygons_to_bitmask([p.reshape(-1) for p in cut], *output_size)
    if not cut:
        return TransformedSegmentation(mask, False, None)
    points = np.concatenate(cut).astype(np.float32)
    box = np.concatenate([points.min(0), np.maximum(points.max(0), 0)])
    return TransformedSegmentation(mask, bool((box[2:] - box[:2] > 1e-5).all()), box)


def _transform_array(
    mask: np.ndarray, transforms: TransformList, original_size: Size, output_size: Size
) -> TransformedSegmentation:
    if mask.shape != tuple(original_size):
        raise ValueError(f"mask of shape {mask.shape}, but the image is {tuple(original_size)}")
    # "== 1": whatever detectron2 pads label maps with (0 in v0.6, 255 later) is background.
    mask = transforms.apply_segmentation(mask.astype(np.uint8)) == 1
    return TransformedSegmentation(mask, bool(mask.any()), None)


def _transform_rle(
    rle: Dict[str, Any], transforms: TransformList, original_size: Size, output_size: Size
) -> TransformedSegmentation:
    if isinstance(rle["counts"], list):  # uncompressed RLE
        rle = mask_util.frPyObjects(rle, *original_size)
    return _transform_array(mask_util.decode(rle), transforms, original_size, output_size)


_Transform = Callable[[Any, TransformList, Size, Size], TransformedSegmentation]
# How each form of COCO-style "segmentation" is transformed, by type; polygons by cut_polygons.
_POLYGON_TRANSFORMS: Dict[bool, _Transform] = {True: _cut_polygons, False: _move_polygon_corners}
_SEGMENTATION_TRANSFORMS: Dict[type, _Transform] = {dict: _transform_rle, np.ndarray: _transform_array}


def transform_segmentation(
    segmentation: Segmentation,
    transforms: TransformList,
    original_size: Size,
    output_size: Size,
    source: str,
    cut_polygons: bool = True,
) -> TransformedSegmentation:
    """The mask, after ``transforms``, of a polygon list, a COCO RLE dict or a 2-D array.

    Args:
        segmentation: an annotation's ``segmentation``, in the original image's coordinates.
        transforms: the transforms applied to the image.
        original_size, output_size: (H, W) before and after ``transforms``.
        source: the image file, named in errors.
        cut_polygons: cut polygons at the crop with shapely, as upstream (detectron2's
            ``transform_instance_annotations``); False moves their corners only (no shapely; the mask can differ
            from upstream's by a few pixels along the crop's border).
    """
    if isinstance(segmentation, list):
        transform = _POLYGON_TRANSFORMS[cut_polygons]
    else:
        transform = _SEGMENTATION_TRANSFORMS.get(type(segmentation))
    if transform is None:
        raise ValueError(
            f"{source}: cannot turn a segmentation of type {type(segmentation).__name__} into a "
            "mask; expected polygons (list), COCO RLE (dict) or a 2-D array"
        )
    try:
        return transform(segmentation, transforms, original_size, output_size)
    except ValueError as e:
        raise ValueError(f"{source}: bad segmentation: {e}") from e


class AnnotationTargets(NamedTuple):
    """The targets of a record's non-crowd annotations after the transforms."""

    classes: torch.Tensor
    """int64 ``[N]``."""
    masks: torch.Tensor
    """bool ``[N, H, W]``."""
    visible: torch.Tensor
    """bool ``[N]``: whether each object is still there (see :class:`TransformedSegmentation`)."""
    polygon_boxes: List[Optional[np.ndarray]]
    """Per object, the extents of its cut polygons or None (see :class:`TransformedSegmentation`)."""

    def boxes(self) -> Boxes:
        """``[N]`` boxes as upstream's large-scale-jitter mapper gives them: the extents of the cut polygons,
        and, where there are none, the tight box of the mask."""
        boxes = mask_boxes(self.masks).tensor
        for index, box in enumerate(self.polygon_boxes):
            if box is not None:
                boxes[index] = torch.from_numpy(box)
        return Boxes(boxes)


def annotations_to_masks(
    annotations: List[Dict[str, Any]],
    transforms: TransformList,
    original_size: Size,
    output_size: Size,
    num_classes: int,
    source: str,
    cut_polygons: bool = True,
) -> AnnotationTargets:
    """The classes and transformed masks of COCO-style instance annotations (crowd ones skipped).

    Args:
        annotations: with ``category_id`` (contiguous) and ``segmentation`` (polygons, RLE or a 2-D array) in the
            original image's coordinates.
        transforms: the transforms applied to the image.
        original_size, output_size: (H, W) of the image before and after ``transforms``.
        num_classes: number of classes, to check the category ids.
        source: the image file, named in errors.
        cut_polygons: as in :func:`transform_segmentation`.
    """
    annotations = [a for a in annotations if not a.get("iscrowd", 0)]
    classes = [int(a["category_id"]) for a in annotations]
    check_class_ids(classes, num_classes, f"annotations of {source}")
    transformed = [
        transform_segmentation(a.get("segmentation"), transforms, original_size, output_size, source, cut_polygons)
        for a in annotations
    ]
    if not transformed:
        return AnnotationTargets(
            torch.zeros(0, dtype=torch.int64),
            torch.zeros((0, *output_size), dtype=torch.bool),
            torch.zeros(0, dtype=torch.bool),
            [],
        )
    masks, visible, boxes = zip(*transformed)
    return AnnotationTargets(
        torch.tensor(classes, dtype=torch.int64),
        torch.from_numpy(np.stack(masks)),
        torch.tensor(visible, dtype=torch.bool),
        list(boxes),
    )
