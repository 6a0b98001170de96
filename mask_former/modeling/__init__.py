from .build import (
    PIXEL_DECODER_REGISTRY,
    TRANSFORMER_DECODER_REGISTRY,
    build_pixel_decoder,
    build_transformer_decoder,
)
