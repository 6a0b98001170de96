"""Mask2Former's training mapper for panoptic segmentation (upstream's ``MaskFormerPanopticDatasetMapper``)."""
from typing import Any, Dict

import numpy as np
import torch

from .build import DATASET_MAPPER_REGISTRY
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper
from .reading import PANOPTIC_VOID_ID, panoptic_ids, read_panoptic_segments
from .targets import segment_targets, segments_to_category_map

__all__ = ["MaskFormerPanopticDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register_as("mask_former_panoptic")
class MaskFormerPanopticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """Training mapper for panoptic datasets (dicts with ``file_name``, ``pan_seg_file_name``, ``segments_info``
    with contiguous ``category_id``, and optionally ``sem_seg_file_name``), with the augmentations and padding of
    :class:`MaskFormerSemanticDatasetMapper`.

    The crop's single-category area constraint looks at the semantic map, or, where the dict has none, at the
    classes of the panoptic segments.

    The returned dict holds, besides the input's keys:

    - ``image``: uint8 ``[3, H, W]`` in ``image_format``, padded with 128.
    - ``sem_seg``: int64 ``[H, W]`` padded with ``ignore_label``, only where the input dict has a
      ``sem_seg_file_name``.
    - ``instances``: ``Instances`` with one target per non-crowd segment still visible after augmentation (and,
      unless ``drop_empty_targets``, those it removed, with an empty mask): ``gt_classes`` int64 ``[N]`` and
      ``gt_masks`` bool ``[N, H, W]``.
    """

    def map_record(self, record: Dict[str, Any], image: np.ndarray) -> Dict[str, Any]:
        pan_rgb, segments_info = read_panoptic_segments(record, image.shape, self.num_classes, self.name)
        sem_seg_file = record.get("sem_seg_file_name")
        sem_seg = None if sem_seg_file is None else self.read_label_map(sem_seg_file, image)
        crop_guide = sem_seg
        if crop_guide is None:
            crop_guide = segments_to_category_map(panoptic_ids(pan_rgb), segments_info, self.ignore_label)

        aug_input, transforms = self.augment(image, crop_guide)
        pan_ids = self.pad(torch.from_numpy(panoptic_ids(transforms.apply_segmentation(pan_rgb))), PANOPTIC_VOID_ID)
        record["image"] = self.image_tensor(aug_input.image)
        if sem_seg is not None:
            record["sem_seg"] = self.label_tensor(aug_input.sem_seg, self.ignore_label)
        classes, masks = segment_targets(pan_ids.numpy(), segments_info)
        record["instances"] = self.targets(tuple(pan_ids.shape), classes, masks)
        return record
