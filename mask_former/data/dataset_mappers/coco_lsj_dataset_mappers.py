"""The large-scale-jitter training mappers of Mask2Former's COCO configs (upstream's
``COCOInstanceNewBaselineDatasetMapper`` and ``COCOPanopticNewBaselineDatasetMapper``)."""
from typing import Any, Dict, List

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T

from .augmentations import build_lsj_augmentations
from .base import BaseDatasetMapper
from .build import DATASET_MAPPER_REGISTRY
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper
from .padding import padding_mask
from .reading import PANOPTIC_VOID_ID, panoptic_ids, read_panoptic_segments
from .targets import mask_boxes, segment_targets

__all__ = ["COCOInstanceNewBaselineDatasetMapper", "COCOPanopticNewBaselineDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register_as("coco_instance_lsj")
class COCOInstanceNewBaselineDatasetMapper(MaskFormerInstanceDatasetMapper):
    """Large-scale-jitter training mapper for COCO-style instance datasets (dicts with ``file_name`` and
    ``annotations`` holding ``category_id`` (contiguous) and a polygon, RLE or array ``segmentation``): random
    flip, random resize into a square of side ``INPUT.IMAGE_SIZE`` scaled by ``[MIN_SCALE, MAX_SCALE]``, random
    crop, padding to ``IMAGE_SIZE x IMAGE_SIZE`` (see :func:`build_lsj_augmentations`).

    The returned dict holds, besides the input's keys other than ``annotations``:

    - ``image``: uint8 ``[3, S, S]`` in ``image_format``, S = ``INPUT.IMAGE_SIZE``, padded with 128 at the
      bottom and right.
    - ``padding_mask``: bool ``[S, S]``, True on the padding.
    - ``instances``: ``Instances`` with one target per non-crowd annotation still visible after augmentation:
      ``gt_classes`` int64 ``[N]``, ``gt_masks`` bool ``[N, S, S]`` and ``gt_boxes``, as upstream the extents
      of the cut polygons (the tight box of the mask for RLE and array segmentations, or polygons not cut).
    """

    pads_to_size_divisibility = False

    @classmethod
    def build_augmentations(cls, cfg: CfgNode) -> List[T.Augmentation]:
        return build_lsj_augmentations(cfg)

    def map_record(self, record: Dict[str, Any], image: np.ndarray) -> Dict[str, Any]:
        aug_input, transforms, annotations = self.augment_annotations(record, image)
        record["image"] = self.image_tensor(aug_input.image)
        record["padding_mask"] = torch.from_numpy(padding_mask(transforms, image.shape))
        # As upstream, the instances that the crop removed are dropped.
        visible = annotations.visible
        record["instances"] = self.targets(
            aug_input.image.shape[:2],
            annotations.classes[visible],
            annotations.masks[visible],
            annotations.boxes()[visible],
        )
        return record


@DATASET_MAPPER_REGISTRY.register_as("coco_panoptic_lsj")
class COCOPanopticNewBaselineDatasetMapper(BaseDatasetMapper):
    """Large-scale-jitter training mapper for COCO-style panoptic datasets (dicts with ``file_name``,
    ``pan_seg_file_name`` and ``segments_info`` with contiguous ``category_id``), with the augmentation of
    :class:`COCOInstanceNewBaselineDatasetMapper`. As upstream, it makes no ``sem_seg`` (a
    ``sem_seg_file_name`` is not read).

    The returned dict holds, besides the input's keys:

    - ``image``: uint8 ``[3, S, S]`` in ``image_format``, S = ``INPUT.IMAGE_SIZE``, padded with 128 at the
      bottom and right.
    - ``padding_mask``: bool ``[S, S]``, True on the padding.
    - ``instances``: ``Instances`` with one target per non-crowd segment (unless ``drop_empty_targets``, also
      those the crop removed, with an empty mask): ``gt_classes`` int64 ``[N]``, ``gt_masks`` bool
      ``[N, S, S]`` and ``gt_boxes`` (the masks' tight boxes).
    """

    @classmethod
    def build_augmentations(cls, cfg: CfgNode) -> List[T.Augmentation]:
        return build_lsj_augmentations(cfg)

    def map_record(self, record: Dict[str, Any], image: np.ndarray) -> Dict[str, Any]:
        pan_rgb, segments_info = read_panoptic_segments(record, image.shape, self.num_classes, self.name)
        aug_input, transforms = self.augment(image)
        padding = padding_mask(transforms, image.shape)
        pan_ids = panoptic_ids(transforms.apply_segmentation(pan_rgb))
        # The padding is VOID whatever detectron2 padded the PNG with.
        pan_ids[padding] = PANOPTIC_VOID_ID
        record["image"] = self.image_tensor(aug_input.image)
        record["padding_mask"] = torch.from_numpy(padding)
        classes, masks = segment_targets(pan_ids, segments_info)
        record["instances"] = self.targets(pan_ids.shape, classes, masks, mask_boxes(masks))
        return record
