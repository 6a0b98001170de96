"""Training dataset mappers of MaskFormer / Mask2Former, chosen by ``cfg.INPUT.DATASET_MAPPER_NAME``
through :data:`DATASET_MAPPER_REGISTRY` (see :func:`build_dataset_mapper`). They share
:class:`BaseDatasetMapper`; the pieces they are made of live by concern in ``reading`` (files),
``validation`` (class ids), ``augmentations``, ``padding``, ``annotations`` (COCO instance annotations)
and ``targets``."""
from .augmentations import ColorAugSSD, ColorAugSSDTransform, RandomPipeline
from .base import BaseDatasetMapper
from .build import (
    CLIP_MAPPERS,
    DATASET_MAPPER_REGISTRY,
    build_dataset_mapper,
    build_test_mapper,
    build_train_mapper,
    clip_mapper_name,
)
from .clip_augmentations import ClipLevel, augment_clip, build_clip_augmentations
from .coco_lsj_dataset_mappers import (
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
)
from .detr_panoptic_dataset_mapper import DETRPanopticDatasetMapper
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper
from .mask_former_panoptic_dataset_mapper import MaskFormerPanopticDatasetMapper
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper
from .ytvis_dataset_mapper import YTVISDatasetMapper

__all__ = [
    "BaseDatasetMapper",
    "CLIP_MAPPERS",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "ClipLevel",
    "ColorAugSSD",
    "ColorAugSSDTransform",
    "DATASET_MAPPER_REGISTRY",
    "DETRPanopticDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
    "RandomPipeline",
    "YTVISDatasetMapper",
    "augment_clip",
    "build_clip_augmentations",
    "build_dataset_mapper",
    "build_test_mapper",
    "build_train_mapper",
    "clip_mapper_name",
]
