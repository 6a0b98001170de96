import copy
import logging

from detectron2.config import configurable
from detectron2.data import transforms as T

from .augmentations import build_mask_former_augmentations
from .build import DATASET_MAPPER_REGISTRY
from .utils import (
    IMAGE_PAD_VALUE,
    annotations_to_masks,
    check_padding,
    image_to_tensor,
    masks_to_instances,
    pad_to_divisibility,
    read_dataset_image,
    require_key,
    require_training,
)

__all__ = ["MaskFormerInstanceDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register_as("mask_former_instance")
class MaskFormerInstanceDatasetMapper:
    """Training mapper for COCO-style instance datasets (dicts with ``file_name`` and
    ``annotations`` holding ``category_id`` (contiguous) and a polygon, RLE or array
    ``segmentation``): augments (resize, plain random crop, colour, flip) and pads.

    The returned dict holds, besides the input's keys:

    - ``image``: uint8 ``[3, H, W]`` in ``image_format``, padded with 128 (see ``padding``).
    - ``instances``: ``Instances`` with one target per non-crowd annotation (unless
      ``drop_empty_targets``, also those the crop removed, with an empty mask): ``gt_classes``
      int64 ``[N]`` and ``gt_masks`` bool ``[N, H, W]``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        size_divisibility: int,
        num_classes: int,
        padding: str = "fixed",
        drop_empty_targets: bool = False,
        cut_polygons: bool = True,
    ):
        """
        Args:
            is_train: must be True (training only, as upstream).
            augmentations: augmentations applied to the image and its annotations.
            image_format: format of ``image``, as in ``detection_utils.read_image``.
            size_divisibility: pad the image and masks to this size (<= 0: no padding).
            num_classes: number of classes; category ids outside ``[0, num_classes)`` are an
                error.
            padding: "fixed" or "multiple", as in :func:`pad_to_divisibility`.
            drop_empty_targets: drop the targets whose mask is empty after augmentation.
            cut_polygons: cut polygons at the crop with shapely, as upstream (see
                :func:`transform_segmentation`).
        """
        require_training(type(self).__name__, is_train)
        check_padding(padding)
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.size_divisibility = size_divisibility
        self.num_classes = num_classes
        self.padding = padding
        self.drop_empty_targets = drop_empty_targets
        self.cut_polygons = cut_polygons
        logging.getLogger(__name__).info(
            f"[{type(self).__name__}] Augmentations used in training: {augmentations}"
        )

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            "is_train": is_train,
            "augmentations": build_mask_former_augmentations(cfg, crop_by_category_area=False),
            "image_format": cfg.INPUT.FORMAT,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "padding": cfg.INPUT.SIZE_DIVISIBILITY_PADDING,
            "drop_empty_targets": cfg.INPUT.DROP_EMPTY_TARGETS,
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

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        classes, masks, _ = annotations_to_masks(
            dataset_dict.pop("annotations"),
            transforms,
            image.shape[:2],
            aug_input.image.shape[:2],
            self.num_classes,
            dataset_dict["file_name"],
            self.cut_polygons,
        )

        image = image_to_tensor(aug_input.image)
        image = pad_to_divisibility(image, self.size_divisibility, IMAGE_PAD_VALUE, self.padding)
        masks = pad_to_divisibility(masks, self.size_divisibility, False, self.padding)
        dataset_dict["image"] = image
        dataset_dict["instances"] = masks_to_instances(
            tuple(image.shape[-2:]), classes, masks, self.drop_empty_targets
        )
        return dataset_dict
