"""MaskFormer and Mask2Former models; importing this package registers their parts in detectron2's registries
(meta-architecture, heads, backbone) and in the pixel and transformer decoder registries of :mod:`.build`."""
from . import backbone, heads, meta_arch, pixel_decoder, transformer_decoder
from .build import (
    PIXEL_DECODER_REGISTRY,
    TRANSFORMER_DECODER_REGISTRY,
    build_pixel_decoder,
    build_transformer_decoder,
)
from .heads.maskformer_head import MaskFormerHead
from .meta_arch.maskformer import MaskFormer
from .recipe import RECIPES, Recipe, build_recipe

__all__ = [
    "PIXEL_DECODER_REGISTRY",
    "RECIPES",
    "TRANSFORMER_DECODER_REGISTRY",
    "MaskFormer",
    "MaskFormerHead",
    "Recipe",
    "backbone",
    "build_pixel_decoder",
    "build_recipe",
    "build_transformer_decoder",
    "heads",
    "meta_arch",
    "pixel_decoder",
    "transformer_decoder",
]
