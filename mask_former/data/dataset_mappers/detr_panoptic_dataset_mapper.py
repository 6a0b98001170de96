"""MaskFormer v1's training mapper for COCO panoptic, with DETR's augmentation (upstream v1's
``DETRPanopticDatasetMapper``)."""
import copy
import logging
from typing import Optional

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import transforms as T

from .augmentations import build_flip
from .build import DATASET_MAPPER_REGISTRY
from .utils import (
    image_to_tensor,
    panoptic_ids,
    read_dataset_image,
    read_panoptic_segments,
    require_training,
    segments_to_instances,
)

__all__ = ["DETRPanopticDatasetMapper"]

# DETR resizes the shortest edge to one of these before its random crop (fixed in DETR and v1).
DETR_CROP_PRE_RESIZE_SIZES = (400, 500, 600)


def build_detr_augmentations(cfg):
    """DETR's two pipelines: random flip and resize of the shortest edge (``INPUT.MIN_SIZE_TRAIN``,
    ``MAX_SIZE_TRAIN``, ``MIN_SIZE_TRAIN_SAMPLING``), and, where ``INPUT.CROP.ENABLED``, the same
    with a resize to :data:`DETR_CROP_PRE_RESIZE_SIZES` and a random crop (``INPUT.CROP``) before
    the resize.

    Returns:
        tuple[list[Augmentation], list[Augmentation] or None]: the plain and the cropping pipeline.
    """
    resize = T.ResizeShortestEdge(
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    )
    flip = build_flip(cfg)
    if not cfg.INPUT.CROP.ENABLED:
        return flip + [resize], None
    crop = [
        T.ResizeShortestEdge(DETR_CROP_PRE_RESIZE_SIZES, sample_style="choice"),
        T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE),
    ]
    return flip + [resize], flip + crop + [resize]


@DATASET_MAPPER_REGISTRY.register_as("detr_panoptic")
class DETRPanopticDatasetMapper:
    """Training mapper of MaskFormer v1's COCO panoptic configs (dicts with ``file_name``,
    ``pan_seg_file_name`` and ``segments_info`` with contiguous ``category_id``): DETR's
    augmentation, half of the time with a random crop (see :func:`build_detr_augmentations`); no
    colour augmentation and no padding, as upstream.

    The returned dict holds, besides the input's keys:

    - ``image``: uint8 ``[3, H, W]`` in ``image_format``.
    - ``instances``: ``Instances`` with one target per non-crowd segment (unless
      ``drop_empty_targets``, also those the crop removed, with an empty mask): ``gt_classes``
      int64 ``[N]`` and ``gt_masks`` bool ``[N, H, W]``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        crop_augmentations: Optional[list],
        image_format: str,
        num_classes: int,
        drop_empty_targets: bool = False,
    ):
        """
        Args:
            is_train: must be True (training only).
            augmentations: the plain pipeline.
            crop_augmentations: the pipeline with a crop, used instead of ``augmentations`` with
                probability 1/2; None: always ``augmentations``.
            image_format: format of ``image``, as in ``detection_utils.read_image``.
            num_classes: number of classes; category ids outside ``[0, num_classes)`` are an
                error.
            drop_empty_targets: drop the targets whose mask is empty after augmentation.
        """
        require_training(type(self).__name__, is_train)
        self.augmentations = T.AugmentationList(augmentations)
        self.crop_augmentations = (
            None if crop_augmentations is None else T.AugmentationList(crop_augmentations)
        )
        self.image_format = image_format
        self.num_classes = num_classes
        self.drop_empty_targets = drop_empty_targets
        logging.getLogger(__name__).info(
            f"[{type(self).__name__}] Augmentations used in training: {augmentations}, "
            f"half of the time instead: {crop_augmentations}"
        )

    @classmethod
    def from_config(cls, cfg, is_train=True):
        augmentations, crop_augmentations = build_detr_augmentations(cfg)
        return {
            "is_train": is_train,
            "augmentations": augmentations,
            "crop_augmentations": crop_augmentations,
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "drop_empty_targets": cfg.INPUT.DROP_EMPTY_TARGETS,
        }

    def _pick_augmentations(self):
        # Upstream draws the coin only where there is a crop pipeline.
        if self.crop_augmentations is None or np.random.rand() > 0.5:
            return self.augmentations
        return self.crop_augmentations

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one image's dict in detectron2's format (not modified).

        Returns:
            dict: the model's input, described in the class docstring.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_dataset_image(dataset_dict, self.image_format)
        pan_rgb, segments_info = read_panoptic_segments(
            dataset_dict, image.shape, self.num_classes, type(self).__name__
        )
        aug_input = T.AugInput(image)
        transforms = self._pick_augmentations()(aug_input)
        pan_ids = torch.as_tensor(panoptic_ids(transforms.apply_segmentation(pan_rgb)))
        dataset_dict["image"] = image_to_tensor(aug_input.image)
        dataset_dict["instances"] = segments_to_instances(
            pan_ids, segments_info, self.drop_empty_targets
        )
        return dataset_dict
