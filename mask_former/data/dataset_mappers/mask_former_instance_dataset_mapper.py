"""Mask2Former's training mapper for instance segmentation (upstream's ``MaskFormerInstanceDatasetMapper``)."""
from typing import Any, Dict, List, Tuple

import numpy as np
from detectron2.config import CfgNode, configurable
from detectron2.data import transforms as T

from .annotations import AnnotationTargets, annotations_to_masks
from .augmentations import build_mask_former_augmentations
from .base import BaseDatasetMapper
from .build import DATASET_MAPPER_REGISTRY
from .reading import require_key

__all__ = ["MaskFormerInstanceDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register_as("mask_former_instance")
class MaskFormerInstanceDatasetMapper(BaseDatasetMapper):
    """Training mapper for COCO-style instance datasets (dicts with ``file_name`` and ``annotations`` holding
    ``category_id`` (contiguous) and a polygon, RLE or array ``segmentation``): augments (resize, plain random
    crop, colour, flip) and pads.

    The returned dict holds, besides the input's keys other than ``annotations``:

    - ``image``: uint8 ``[3, H, W]`` in ``image_format``, padded with 128 (see ``padding``).
    - ``instances``: ``Instances`` with one target per non-crowd annotation (unless ``drop_empty_targets``, also
      those the crop removed, with an empty mask): ``gt_classes`` int64 ``[N]`` and ``gt_masks`` bool
      ``[N, H, W]``.
    """

    pads_to_size_divisibility = True

    @configurable
    def __init__(self, is_train: bool = True, *, cut_polygons: bool = True, **options: Any):
        """
        Args:
            is_train, options: as in :class:`BaseDatasetMapper`.
            cut_polygons: cut polygons at the crop with shapely, as upstream (see
                :func:`transform_segmentation`).
        """
        super().__init__(is_train, **options)
        self.cut_polygons = cut_polygons

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> Dict[str, Any]:
        return {**super().from_config(cfg, is_train), "cut_polygons": cfg.INPUT.CROP_POLYGONS_WITH_SHAPELY}

    @classmethod
    def build_augmentations(cls, cfg: CfgNode) -> List[T.Augmentation]:
        return build_mask_former_augmentations(cfg, crop_by_category_area=False)

    def augment_annotations(
        self, record: Dict[str, Any], image: np.ndarray
    ) -> Tuple[T.AugInput, T.TransformList, AnnotationTargets]:
        """Augment ``image`` and turn the record's ``annotations`` (popped) into masks of the augmented size.

        Returns:
            the augmented input, the transforms and the annotations' targets.
        """
        require_key(record, "annotations", self.name)
        aug_input, transforms = self.augment(image)
        annotations = annotations_to_masks(
            record.pop("annotations"),
            transforms,
            image.shape[:2],
            aug_input.image.shape[:2],
            self.num_classes,
            record["file_name"],
            self.cut_polygons,
        )
        return aug_input, transforms, annotations

    def map_record(self, record: Dict[str, Any], image: np.ndarray) -> Dict[str, Any]:
        aug_input, _, annotations = self.augment_annotations(record, image)
        record["image"] = self.image_tensor(aug_input.image)
        masks = self.pad(annotations.masks, False)
        record["instances"] = self.targets(tuple(record["image"].shape[-2:]), annotations.classes, masks)
        return record
