"""MaskFormer and Mask2Former for Detectron2.

Importing the package registers its backbone, heads, decoders, meta-architecture, dataset mappers
and datasets into detectron2's registries.
"""
from . import modeling
from .config import add_mask_former_config, add_maskformer2_config

__all__ = ["add_maskformer2_config", "add_mask_former_config", "modeling"]
