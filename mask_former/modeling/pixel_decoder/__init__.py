"""Pixel decoders; importing this package registers them in ``PIXEL_DECODER_REGISTRY``."""
from . import fpn, msdeformattn

__all__ = ["fpn", "msdeformattn"]
