"""Mask2Former's training mapper for semantic segmentation (upstream's ``MaskFormerSemanticDatasetMapper``)."""
from typing import Any, Dict, List

import numpy as np
from detectron2.config import CfgNode, configurable
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T

from .augmentations import build_mask_former_augmentations
from .base import BaseDatasetMapper
from .build import DATASET_MAPPER_REGISTRY
from .reading import read_label_map, require_key
from .targets import sem_seg_targets

__all__ = ["MaskFormerSemanticDatasetMapper", "resolve_ignore_label"]


def resolve_ignore_label(cfg: CfgNode) -> int:
    """The label of unlabelled pixels: the ``ignore_label`` of the first training dataset's metadata, or
    ``cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE`` where the metadata has none."""
    default = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    if not cfg.DATASETS.TRAIN:
        return default
    return MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("ignore_label", default)


@DATASET_MAPPER_REGISTRY.register_as("mask_former_semantic")
class MaskFormerSemanticDatasetMapper(BaseDatasetMapper):
    """Training mapper for semantic segmentation datasets (dicts with ``file_name`` and ``sem_seg_file_name``):
    reads the image and label map, augments both (resize, crop under the single-category area constraint,
    colour, flip), pads them and makes one target mask per class.

    The returned dict holds, besides the input's keys:

    - ``image``: uint8 ``[3, H, W]`` in ``image_format``, padded with 128 (see ``padding``).
    - ``sem_seg``: int64 ``[H, W]``, padded with ``ignore_label``.
    - ``instances``: ``Instances`` of size (H, W) with ``gt_classes`` int64 ``[N]`` (the classes present,
      sorted; never the ignore label) and ``gt_masks`` bool ``[N, H, W]``.
    """

    pads_to_size_divisibility = True

    @configurable
    def __init__(self, is_train: bool = True, *, ignore_label: int, **options: Any):
        """
        Args:
            is_train, options: as in :class:`BaseDatasetMapper`.
            ignore_label: the label of unlabelled pixels (allowed in the label maps beside the classes).
        """
        super().__init__(is_train, **options)
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> Dict[str, Any]:
        return {**super().from_config(cfg, is_train), "ignore_label": resolve_ignore_label(cfg)}

    @classmethod
    def build_augmentations(cls, cfg: CfgNode) -> List[T.Augmentation]:
        return build_mask_former_augmentations(cfg, crop_by_category_area=True)

    def read_label_map(self, file_name: str, image: np.ndarray) -> np.ndarray:
        """The checked float32 ``[H, W]`` label map of ``image`` (see :func:`read_label_map`)."""
        return read_label_map(file_name, image.shape, self.num_classes, self.ignore_label)

    def map_record(self, record: Dict[str, Any], image: np.ndarray) -> Dict[str, Any]:
        sem_seg = self.read_label_map(require_key(record, "sem_seg_file_name", self.name), image)
        aug_input, _ = self.augment(image, sem_seg)
        record["image"] = self.image_tensor(aug_input.image)
        record["sem_seg"] = self.label_tensor(aug_input.sem_seg, self.ignore_label)
        classes, masks = sem_seg_targets(record["sem_seg"], self.ignore_label)
        record["instances"] = self.targets(tuple(record["sem_seg"].shape), classes, masks)
        return record
