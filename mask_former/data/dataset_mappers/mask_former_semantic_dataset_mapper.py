import copy
import logging

import torch

from detectron2.config import configurable
from detectron2.data import transforms as T

from .augmentations import build_mask_former_augmentations
from .build import DATASET_MAPPER_REGISTRY
from .utils import (
    IMAGE_PAD_VALUE,
    check_class_ids,
    check_padding,
    image_to_tensor,
    pad_to_divisibility,
    read_dataset_image,
    read_label_map,
    require_key,
    require_training,
    resolve_ignore_label,
    sem_seg_to_instances,
)

__all__ = ["MaskFormerSemanticDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register_as("mask_former_semantic")
class MaskFormerSemanticDatasetMapper:
    """Training mapper for semantic segmentation datasets (dicts with ``file_name`` and
    ``sem_seg_file_name``): reads the image and label map, augments both (resize, crop under the
    single-category area constraint, colour, flip), pads them and makes one target mask per class.

    The returned dict holds, besides the input's keys:

    - ``image``: uint8 ``[3, H, W]`` in ``image_format``, padded with 128 (see ``padding``).
    - ``sem_seg``: int64 ``[H, W]``, padded with ``ignore_label``.
    - ``instances``: ``Instances`` of size (H, W) with ``gt_classes`` int64 ``[N]`` (the classes
      present, sorted; never the ignore label) and ``gt_masks`` bool ``[N, H, W]``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        ignore_label: int,
        size_divisibility: int,
        num_classes: int,
        padding: str = "fixed",
    ):
        """
        Args:
            is_train: must be True (training only, as upstream).
            augmentations: augmentations applied to the image and its labels.
            image_format: format of ``image``, as in ``detection_utils.read_image``.
            ignore_label: the label of unlabelled pixels.
            size_divisibility: pad the image and labels to this size (<= 0: no padding).
            num_classes: number of classes; label values outside ``[0, num_classes)`` other than
                ``ignore_label`` are an error.
            padding: "fixed" or "multiple", as in :func:`pad_to_divisibility`.
        """
        require_training(type(self).__name__, is_train)
        check_padding(padding)
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility
        self.num_classes = num_classes
        self.padding = padding
        logging.getLogger(__name__).info(
            f"[{type(self).__name__}] Augmentations used in training: {augmentations}"
        )

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            "is_train": is_train,
            "augmentations": build_mask_former_augmentations(cfg, crop_by_category_area=True),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": resolve_ignore_label(cfg),
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "padding": cfg.INPUT.SIZE_DIVISIBILITY_PADDING,
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
        sem_seg_file = require_key(dataset_dict, "sem_seg_file_name", type(self).__name__)
        sem_seg = read_label_map(sem_seg_file, image.shape)
        check_class_ids(sem_seg, self.num_classes, sem_seg_file, self.ignore_label)

        aug_input = T.AugInput(image, sem_seg=sem_seg)
        self.augmentations(aug_input)

        dataset_dict["image"] = self._pad_image(aug_input.image)
        dataset_dict["sem_seg"] = self._pad_labels(aug_input.sem_seg, self.ignore_label)
        dataset_dict["instances"] = sem_seg_to_instances(dataset_dict["sem_seg"], self.ignore_label)
        return dataset_dict

    def _pad_image(self, image):
        """``[H, W, 3]`` array to a padded uint8 ``[3, H', W']`` tensor."""
        return self._pad(image_to_tensor(image), IMAGE_PAD_VALUE)

    def _pad_labels(self, labels, value):
        """``[H, W]`` label array to a padded int64 ``[H', W']`` tensor."""
        return self._pad(torch.as_tensor(labels.astype("int64")), value)

    def _pad(self, tensor, value):
        return pad_to_divisibility(tensor, self.size_divisibility, value, self.padding)
