"""Transformer decoders; importing this package registers them in ``TRANSFORMER_DECODER_REGISTRY``."""
from . import mask2former_decoder, maskformer_decoder, video_mask2former_decoder

__all__ = ["mask2former_decoder", "maskformer_decoder", "video_mask2former_decoder"]
