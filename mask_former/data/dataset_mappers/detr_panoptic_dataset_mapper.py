"""MaskFormer v1's training mapper for COCO panoptic, with DETR's augmentation (upstream v1's
``DETRPanopticDatasetMapper``)."""
from typing import Any, Dict, List

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import transforms as T

from .augmentations import build_detr_augmentations
from .base import BaseDatasetMapper
from .build import DATASET_MAPPER_REGISTRY
from .reading import panoptic_ids, read_panoptic_segments
from .targets import segment_targets

__all__ = ["DETRPanopticDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register_as("detr_panoptic")
class DETRPanopticDatasetMapper(BaseDatasetMapper):
    """Training mapper of MaskFormer v1's COCO panoptic configs (dicts with ``file_name``, ``pan_seg_file_name``
    and ``segments_info`` with contiguous ``category_id``): DETR's augmentation, half of the time with a random
    crop (see :func:`build_detr_augmentations`); no colour augmentation and no padding, as upstream.

    The returned dict holds, besides the input's keys:

    - ``image``: uint8 ``[3, H, W]`` in ``image_format``.
    - ``instances``: ``Instances`` with one target per non-crowd segment (unless ``drop_empty_targets``, also
      those the crop removed, with an empty mask): ``gt_classes`` int64 ``[N]`` and ``gt_masks`` bool
      ``[N, H, W]``.
    """

    @classmethod
    def build_augmentations(cls, cfg: CfgNode) -> List[T.Augmentation]:
        return build_detr_augmentations(cfg)

    def map_record(self, record: Dict[str, Any], image: np.ndarray) -> Dict[str, Any]:
        pan_rgb, segments_info = read_panoptic_segments(record, image.shape, self.num_classes, self.name)
        aug_input, transforms = self.augment(image)
        pan_ids = panoptic_ids(transforms.apply_segmentation(pan_rgb))
        record["image"] = self.image_tensor(aug_input.image)
        classes, masks = segment_targets(pan_ids, segments_info)
        record["instances"] = self.targets(pan_ids.shape, classes, masks)
        return record
