"""Built-in datasets, registered into detectron2's catalogs at import under upstream
Mask2Former/MaskFormer names (see datasets/README.md for the folder layouts)."""

from ...errors import DatasetFileError
from . import register_ade20k, register_coco, register_mapillary_vistas, register_ytvis
from .loaders import load_coco_instances, load_coco_panoptic_json, load_sem_seg_pairs, require_files
from .register_coco import coco_panoptic_metadata, register_coco_panoptic_annos_sem_seg
from .registration import panoptic_metadata, register_panoptic, register_sem_seg
from .ytvis import load_ytvis_json, register_ytvis_instances, video_instances_metadata

__all__ = [
    "DatasetFileError",
    "coco_panoptic_metadata",
    "load_coco_instances",
    "load_coco_panoptic_json",
    "load_sem_seg_pairs",
    "load_ytvis_json",
    "panoptic_metadata",
    "register_ade20k",
    "register_coco",
    "register_coco_panoptic_annos_sem_seg",
    "register_mapillary_vistas",
    "register_panoptic",
    "register_sem_seg",
    "register_ytvis",
    "register_ytvis_instances",
    "require_files",
    "video_instances_metadata",
]
