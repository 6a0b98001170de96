"""The large-scale-jitter training mappers of Mask2Former's COCO configs (upstream's
``COCOInstanceNewBaselineDatasetMapper`` and ``COCOPanopticNewBaselineDatasetMapper``)."""
import copy
import logging

import torch

from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import BitMasks

from .augmentations import build_lsj_augmentations
from .build import DATASET_MAPPER_REGISTRY
from .utils import (
    PANOPTIC_VOID_ID,
    annotations_to_masks,
    image_to_tensor,
    masks_to_instances,
    padding_mask,
    panoptic_ids,
    read_dataset_image,
    read_panoptic_segments,
    require_key,
    require_training,
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

    def _augment(self, dataset_dict, image):
        """Augment ``image``, store ``image`` (uint8 ``[3, S, S]``) and ``padding_mask`` (bool
        ``[S, S]``, True on padding) in ``dataset_dict``.

        Returns:
            TransformList: the transforms applied.
        """
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        dataset_dict["image"] = image_to_tensor(aug_input.image)
        dataset_dict["padding_mask"] = torch.from_numpy(padding_mask(transforms, image.shape))
        return transforms


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

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        num_classes: int,
        cut_polygons: bool = True,
    ):
        """
        Args:
            is_train, augmentations, image_format, num_classes: as in the base class.
            cut_polygons: cut polygons at the crop with shapely, as upstream (see
                :func:`transform_segmentation`).
        """
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            num_classes=num_classes,
        )
        self.cut_polygons = cut_polygons

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            **super().from_config(cfg, is_train),
            "cut_polygons": cfg.INPUT.CROP_POLYGONS_WITH_SHAPELY,
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
        require_key(dataset_dict, "annotations", type(self).__name__)
        transforms = self._augment(dataset_dict, image)
        image_size = tuple(dataset_dict["image"].shape[-2:])
        classes, masks, visible = annotations_to_masks(
            dataset_dict.pop("annotations"),
            transforms,
            image.shape[:2],
            image_size,
            self.num_classes,
            dataset_dict["file_name"],
            self.cut_polygons,
        )
        # As upstream, the instances that the crop removed are dropped.
        instances = masks_to_instances(image_size, classes, masks)[visible]
        dataset_dict["instances"] = _with_boxes(instances)
        return dataset_dict


@DATASET_MAPPER_REGISTRY.register_as("coco_panoptic_lsj")
class COCOPanopticNewBaselineDatasetMapper(_LargeScaleJitterDatasetMapper):
    """Large-scale-jitter training mapper for COCO-style panoptic datasets (dicts with
    ``file_name``, ``pan_seg_file_name`` and ``segments_info`` with contiguous ``category_id``).
    As upstream, it makes no ``sem_seg`` (a ``sem_seg_file_name`` is not read).

    The returned dict holds, besides the input's keys:

    - ``image``: uint8 ``[3, S, S]`` in ``image_format``, S = ``INPUT.IMAGE_SIZE``, padded with
      128 at the bottom and right.
    - ``padding_mask``: bool ``[S, S]``, True on the padding.
    - ``instances``: ``Instances`` with one target per non-crowd segment (unless
      ``drop_empty_targets``, also those the crop removed, with an empty mask): ``gt_classes``
      int64 ``[N]``, ``gt_masks`` bool ``[N, S, S]`` and ``gt_boxes`` (the masks' tight boxes).
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        num_classes: int,
        drop_empty_targets: bool = False,
    ):
        """
        Args:
            is_train, augmentations, image_format, num_classes: as in the base class.
            drop_empty_targets: drop the targets whose mask is empty after augmentation.
        """
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            num_classes=num_classes,
        )
        self.drop_empty_targets = drop_empty_targets

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            **super().from_config(cfg, is_train),
            "drop_empty_targets": cfg.INPUT.DROP_EMPTY_TARGETS,
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
        pan_rgb, segments_info = read_panoptic_segments(
            dataset_dict, image.shape, self.num_classes, type(self).__name__
        )
        transforms = self._augment(dataset_dict, image)
        pan_ids = torch.as_tensor(panoptic_ids(transforms.apply_segmentation(pan_rgb)))
        # The padding is VOID whatever detectron2 padded the PNG with.
        pan_ids[dataset_dict["padding_mask"]] = PANOPTIC_VOID_ID
        instances = segments_to_instances(pan_ids, segments_info, self.drop_empty_targets)
        dataset_dict["instances"] = _with_boxes(instances)
        return dataset_dict
