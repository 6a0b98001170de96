"""The large-scale-jitter training mappers of Mask2Former's COCO configs (upstream's
``COCOInstanceNewBaselineDatasetMapper`` and ``COCOPanopticNewBaselineDatasetMapper``)."""
import copy
import logging

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import BitMasks

from .augmentations import build_lsj_augmentations
from .build import DATASET_MAPPER_REGISTRY
from .utils import (
    annotations_to_masks,
    image_to_tensor,
    masks_to_instances,
    read_dataset_image,
    read_panoptic_labels,
    require_key,
    require_training,
    resolve_ignore_label,
    segments_to_instances,
)

__all__ = ["COCOInstanceNewBaselineDatasetMapper", "COCOPanopticNewBaselineDatasetMapper"]


def _with_boxes(instances):
    """Add ``gt_boxes``: the tight XYXY boxes of ``gt_masks``."""
    instances.gt_boxes = BitMasks(instances.gt_masks).get_bounding_boxes()
    return instances


class _LargeScaleJitterDatasetMapper:
    """Reads and augments the image with large-scale jitter (random flip, random resize into a
    square of side ``INPUT.IMAGE_SIZE`` scaled by ``[MIN_SCALE, MAX_SCALE]``, random crop, padding
    to ``IMAGE_SIZE x IMAGE_SIZE``). Subclasses build the targets."""

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        num_classes: int,
    ):
        """
        Args:
            is_train: must be True (training only, as upstream).
            augmentations: augmentations applied to the image and its labels.
            image_format: format of ``image``, as in ``detection_utils.read_image``.
            num_classes: number of classes; class ids outside ``[0, num_classes)`` are an error.
        """
        require_training(type(self).__name__, is_train)
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.num_classes = num_classes
        logging.getLogger(__name__).info(
            f"[{type(self).__name__}] Augmentations used in training: {augmentations}"
        )

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            "is_train": is_train,
            "augmentations": build_lsj_augmentations(cfg),
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }

    def _augment(self, dataset_dict, image, sem_seg=None):
        """Augment ``image`` (and ``sem_seg``), store ``image`` (uint8 ``[3, S, S]``) and
        ``padding_mask`` (bool ``[S, S]``, True on padding) in ``dataset_dict``.

        Returns:
            tuple[AugInput, TransformList]: the augmented input and the transforms applied.
        """
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        # Padding is where a map of ones, transformed like the image, became 0.
        padding_mask = transforms.apply_segmentation(np.ones(image.shape[:2])) == 0
        dataset_dict["image"] = image_to_tensor(aug_input.image)
        dataset_dict["padding_mask"] = torch.from_numpy(padding_mask)
        return aug_input, transforms


@DATASET_MAPPER_REGISTRY.register_as("coco_instance_lsj")
class COCOInstanceNewBaselineDatasetMapper(_LargeScaleJitterDatasetMapper):
    """Large-scale-jitter training mapper for COCO-style instance datasets (dicts with
    ``file_name`` and ``annotations`` with contiguous ``category_id`` and a polygon, RLE or array
    ``segmentation``).

    The returned dict holds, besides the input's keys other than ``annotations``:

    - ``image``: uint8 ``[3, S, S]`` in ``image_format``, S = ``INPUT.IMAGE_SIZE``, padded with
      128 at the bottom and right.
    - ``padding_mask``: bool ``[S, S]``, True on the padding.
    - ``instances``: ``Instances`` with one target per non-crowd annotation still visible after
      augmentation: ``gt_classes`` int64 ``[N]``, ``gt_masks`` bool ``[N, S, S]`` and
      ``gt_boxes`` (the masks' tight boxes).
    """

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one image's dict in detectron2's format (not modified).

        Returns:
            dict: the model's input, described in the class docstring.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_dataset_image(dataset_dict, self.image_format)
        require_key(dataset_dict, "annotations", type(self).__name__)
        _, transforms = self._augment(dataset_dict, image)
        image_size = tuple(dataset_dict["image"].shape[-2:])
        classes, masks = annotations_to_masks(
            dataset_dict.pop("annotations"),
            transforms,
            image.shape[:2],
            image_size,
            self.num_classes,
            dataset_dict["file_name"],
        )
        dataset_dict["instances"] = _with_boxes(masks_to_instances(image_size, classes, masks))
        return dataset_dict


@DATASET_MAPPER_REGISTRY.register_as("coco_panoptic_lsj")
class COCOPanopticNewBaselineDatasetMapper(_LargeScaleJitterDatasetMapper):
    """Large-scale-jitter training mapper for COCO-style panoptic datasets (dicts with
    ``file_name``, ``pan_seg_file_name``, ``segments_info`` with contiguous ``category_id``, and
    optionally ``sem_seg_file_name``).

    The returned dict holds, besides the input's keys:

    - ``image``: uint8 ``[3, S, S]`` in ``image_format``, S = ``INPUT.IMAGE_SIZE``, padded with
      128 at the bottom and right.
    - ``padding_mask``: bool ``[S, S]``, True on the padding.
    - ``sem_seg``: int64 ``[S, S]`` with ``ignore_label`` on the padding, only where the input dict
      has a ``sem_seg_file_name``.
    - ``instances``: ``Instances`` with one target per non-crowd segment still visible after
      augmentation: ``gt_classes`` int64 ``[N]``, ``gt_masks`` bool ``[N, S, S]`` and
      ``gt_boxes`` (the masks' tight boxes).
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        num_classes: int,
        ignore_label: int,
    ):
        """
        Args:
            is_train, augmentations, image_format, num_classes: as in the base class.
            ignore_label: the label of unlabelled pixels in ``sem_seg``.
        """
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            num_classes=num_classes,
        )
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            **super().from_config(cfg, is_train),
            "ignore_label": resolve_ignore_label(cfg),
        }

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): one image's dict in detectron2's format (not modified).

        Returns:
            dict: the model's input, described in the class docstring.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_dataset_image(dataset_dict, self.image_format)
        pan_ids, segments_info, sem_seg = read_panoptic_labels(
            dataset_dict, image.shape, self.num_classes, self.ignore_label, type(self).__name__
        )
        aug_input, transforms = self._augment(dataset_dict, image, sem_seg)
        # FixedSizeCrop pads label maps with 0, which is VOID for panoptic ids.
        pan_ids = torch.as_tensor(transforms.apply_segmentation(pan_ids).astype(np.int64))
        if sem_seg is not None:
            sem_seg = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
            sem_seg[dataset_dict["padding_mask"]] = self.ignore_label
            dataset_dict["sem_seg"] = sem_seg
        dataset_dict["instances"] = _with_boxes(segments_to_instances(pan_ids, segments_info))
        return dataset_dict
