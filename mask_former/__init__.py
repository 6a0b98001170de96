"""MaskFormer and Mask2Former for Detectron2.

Importing the package registers its backbone, heads, decoders, meta-architecture, dataset mappers
and datasets into detectron2's registries, and makes ``DetectionCheckpointer`` refuse checkpoints
whose shapes do not fit a MaskFormer model and read ``.pth`` files with ``weights_only=True`` (see
``mask_former.checkpoint``).
"""
from . import data, modeling
from .checkpoint import install_loading_rules
from .config import add_mask_former_config, add_maskformer2_config

install_loading_rules()

__all__ = ["add_maskformer2_config", "add_mask_former_config", "data", "modeling"]
