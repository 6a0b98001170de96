"""Registries of the two parts of ``MaskFormerHead``, and their builders."""
import logging

from detectron2.utils.registry import Registry

from .recipe import is_maskformer_v1_config

PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """
Pixel decoders, named by ``cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``.

Called as ``decoder(cfg, input_shape)`` with ``input_shape`` a dict of backbone feature names to
``ShapeSpec``. ``decoder.forward_features(features)`` takes the backbone features
(``{name: [B, C, H, W]}``) and returns ``(mask_features, transformer_encoder_features,
multi_scale_features)``: the per-pixel embeddings ``[B, MASK_DIM, H/4, W/4]``, the encoder's
output at the coarsest scale (or None), and a list of feature maps for a multi-scale decoder.
"""

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_DECODER")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Transformer decoders, named by ``cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``.

Called as ``decoder(cfg, in_channels, mask_classification=True)``. ``decoder(x, mask_features,
mask=None)`` takes the decoder's input (one feature map, or a list of maps for a multi-scale
decoder) and the per-pixel embeddings ``[B, MASK_DIM, H, W]``; it returns a dict with
``pred_logits [B, Q, K+1]``, ``pred_masks [B, Q, H, W]`` and ``aux_outputs``, a list of such dicts
for the intermediate decoder layers.
"""


def build_pixel_decoder(cfg, input_shape):
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    model = PIXEL_DECODER_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r}: pixel decoders need a "
            "forward_features method"
        )
    return model


def transformer_decoder_name(cfg) -> str:
    """``MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``, except for MaskFormer (v1) configs.

    v1 had no such key (its decoder was always ``StandardTransformerDecoder``), so v1 configs get
    Mask2Former's default, ``MultiScaleMaskedTransformerDecoder``, which needs the pixel decoder's
    three scales: such a config (:func:`~mask_former.modeling.recipe.is_maskformer_v1_config`) gets
    ``StandardTransformerDecoder``.
    """
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if is_maskformer_v1_config(cfg):
        logging.getLogger(__name__).info(
            "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE=%r is a single feature map: using MaskFormer's "
            "StandardTransformerDecoder (a MaskFormer v1 config)", cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE,
        )
        return "StandardTransformerDecoder"
    return name


def build_transformer_decoder(cfg, in_channels, mask_classification=True):
    return TRANSFORMER_DECODER_REGISTRY.get(transformer_decoder_name(cfg))(cfg, in_channels, mask_classification)
