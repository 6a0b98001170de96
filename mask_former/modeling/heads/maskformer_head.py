"""``MaskFormerHead``: a pixel decoder and a transformer decoder."""
from typing import Dict, Optional

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from ..build import build_pixel_decoder, build_transformer_decoder

# Where the transformer decoder's input comes from, by MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE;
# any other value names a backbone feature.
DECODER_INPUTS = {
    "multi_scale_pixel_decoder": lambda features, mask_features, encoder, multi_scale: multi_scale,
    "transformer_encoder": lambda features, mask_features, encoder, multi_scale: encoder,
    "pixel_embedding": lambda features, mask_features, encoder, multi_scale: mask_features,
}


def decoder_in_channels(cfg, input_shape: Dict[str, ShapeSpec]) -> int:
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
    by_name = {
        "multi_scale_pixel_decoder": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
        "transformer_encoder": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
        "pixel_embedding": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
    }
    if name in by_name:
        return by_name[name]
    if name not in input_shape:
        raise ValueError(
            f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={name!r} is neither one of {sorted(by_name)} "
            f"nor a backbone feature ({sorted(input_shape)})"
        )
    return input_shape[name].channels


def upgrade_head_state_dict(state_dict, prefix: str, local_metadata: Dict) -> None:
    """Move, in place, the pixel decoder's parameters of a head checkpoint older than version 2
    (where they sat directly under the head) under ``pixel_decoder.``, as upstream's heads do."""
    if (local_metadata.get("version") or 0) >= 2:
        return
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "predictor")
                and not k.startswith(prefix + "pixel_decoder.")]:
        state_dict[prefix + "pixel_decoder." + key[len(prefix):]] = state_dict.pop(key)


def select_decoder_input(name: str, features, mask_features, encoder_features, multi_scale):
    """The transformer decoder's input named by ``MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE``."""
    select = DECODER_INPUTS.get(name)
    decoder_input = features[name] if select is None else select(features, mask_features, encoder_features, multi_scale)
    if decoder_input is None:
        raise ValueError(
            f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={name!r} needs a pixel decoder "
            "with a transformer encoder (TransformerEncoderPixelDecoder)"
        )
    return decoder_input


class PixelDecoderHead(nn.Module):
    """What MaskFormerHead and the per-pixel baseline heads share: the backbone features they read, sorted
    by stride (``in_features``), the pixel decoder, the loss weight and the ignored target value, and the
    upgrade of upstream's older state dicts. Subclasses add their ``predictor``."""

    _version = 2

    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
    ):
        """
        Args:
            input_shape: the backbone features the head reads (``SEM_SEG_HEAD.IN_FEATURES``).
            num_classes: K.
            pixel_decoder: turns the features into per-pixel embeddings at stride 4.
            loss_weight: weight of the head's loss (the per-pixel baselines' cross-entropy).
            ignore_value: target class of the pixels that the loss ignores.
        """
        super().__init__()
        self.in_features = [k for k, _ in sorted(input_shape.items(), key=lambda item: item[1].stride)]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.num_classes = num_classes
        self.pixel_decoder = pixel_decoder

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": head.LOSS_WEIGHT,
        }

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        upgrade_head_state_dict(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(PixelDecoderHead):
    """``forward(features) -> predictions``: the pixel decoder turns backbone features into
    per-pixel embeddings (and multi-scale maps), the transformer decoder turns queries into class
    logits and mask logits (see ``TRANSFORMER_DECODER_REGISTRY``)."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
        **head_args,
    ):
        """
        Args:
            transformer_predictor: the transformer decoder (``mask_classification=True``).
            transformer_in_feature: its input (``MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE``).
            input_shape, head_args: the arguments of ``PixelDecoderHead``.
        """
        super().__init__(input_shape, **head_args)
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        return {**super().from_config(cfg, input_shape), **transformer_decoder_args(cfg, input_shape, True)}

    def forward(self, features, mask=None):
        return run_transformer_decoder(self, features, mask)


def transformer_decoder_args(cfg, input_shape: Dict[str, ShapeSpec], mask_classification: bool) -> Dict:
    """``transformer_predictor`` (the config's transformer decoder) and ``transformer_in_feature`` (what it
    reads), the constructor arguments of the heads that run a transformer decoder."""
    in_channels = decoder_in_channels(cfg, input_shape)
    return {
        "transformer_predictor": build_transformer_decoder(cfg, in_channels, mask_classification=mask_classification),
        "transformer_in_feature": cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE,
    }


def run_transformer_decoder(head: nn.Module, features: Dict[str, Tensor], mask: Optional[Tensor] = None) -> Dict:
    """A head's pixel decoder, then its transformer decoder (``head.predictor``) on the feature named by
    ``head.transformer_in_feature``: the decoder's output dict (see ``TRANSFORMER_DECODER_REGISTRY``)."""
    mask_features, encoder_features, multi_scale = head.pixel_decoder.forward_features(features)
    decoder_input = select_decoder_input(
        head.transformer_in_feature, features, mask_features, encoder_features, multi_scale
    )
    return head.predictor(decoder_input, mask_features, mask)
