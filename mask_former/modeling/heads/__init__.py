"""Segmentation heads (detectron2's ``SEM_SEG_HEADS_REGISTRY``): a pixel decoder and a predictor."""
from . import maskformer_head, per_pixel_baseline

__all__ = ["maskformer_head", "per_pixel_baseline"]
