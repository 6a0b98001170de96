import copy

from detectron2.config import configurable
from detectron2.data import transforms as T

from .build import DATASET_MAPPER_REGISTRY
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper
from .utils import (
    PANOPTIC_VOID_ID,
    panoptic_ids,
    read_dataset_image,
    read_panoptic_labels,
    segments_to_category_map,
    segments_to_instances,
)

__all__ = ["MaskFormerPanopticDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register_as("mask_former_panoptic")
class MaskFormerPanopticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """Training mapper for panoptic datasets (dicts with ``file_name``, ``pan_seg_file_name``,
    ``segments_info`` with contiguous ``category_id``, and optionally ``sem_seg_file_name``), with
    the augmentations and padding of :class:`MaskFormerSemanticDatasetMapper`.

    The crop's single-category area constraint looks at the semantic map, or, where the dict has
    none, at the classes of the panoptic segments.

    The returned dict holds, besides the input's keys:

    - ``image``: uint8 ``[3, H, W]`` in ``image_format``, padded with 128.
    - ``sem_seg``: int64 ``[H, W]`` padded with ``ignore_label``, only where the input dict has a
      ``sem_seg_file_name``.
    - ``instances``: ``Instances`` with one target per non-crowd segment still visible after
      augmentation (and, unless ``drop_empty_targets``, those it removed, with an empty mask):
      ``gt_classes`` int64 ``[N]`` and ``gt_masks`` bool ``[N, H, W]``.
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
        drop_empty_targets: bool = False,
    ):
        """
        Args:
            is_train, augmentations, image_format, ignore_label, size_divisibility, num_classes,
                padding: as in :class:`MaskFormerSemanticDatasetMapper`.
            drop_empty_targets: drop the targets whose mask is empty after augmentation.
        """
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            ignore_label=ignore_label,
            size_divisibility=size_divisibility,
            num_classes=num_classes,
            padding=padding,
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
        pan_rgb, segments_info, sem_seg = read_panoptic_labels(
            dataset_dict, image.shape, self.num_classes, self.ignore_label, type(self).__name__
        )
        crop_guide = sem_seg
        if crop_guide is None:
            crop_guide = segments_to_category_map(
                panoptic_ids(pan_rgb), segments_info, self.ignore_label
            )

        aug_input = T.AugInput(image, sem_seg=crop_guide)
        transforms = self.augmentations(aug_input)
        pan_ids = panoptic_ids(transforms.apply_segmentation(pan_rgb))
        pan_ids = self._pad_labels(pan_ids, PANOPTIC_VOID_ID)

        dataset_dict["image"] = self._pad_image(aug_input.image)
        if sem_seg is not None:
            dataset_dict["sem_seg"] = self._pad_labels(aug_input.sem_seg, self.ignore_label)
        dataset_dict["instances"] = segments_to_instances(
            pan_ids, segments_info, self.drop_empty_targets
        )
        return dataset_dict
