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
