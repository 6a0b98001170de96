"""FPN pixel decoders of MaskFormer: ``BasePixelDecoder`` and ``TransformerEncoderPixelDecoder``."""
from typing import Callable, Dict, List, Optional, Union

import fvcore.nn.weight_init as weight_init
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import Tensor, nn
from torch.nn import functional as F

from ..build import PIXEL_DECODER_REGISTRY
from ..transformer import TransformerEncoderOnly
from ..transformer_blocks import PositionEmbeddingSine

# Number of feature maps, coarsest first, handed to a multi-scale transformer decoder.
NUM_MULTI_SCALE_FEATURES = 3


def relu_in_place(x: Tensor) -> Tensor:
    """The FPN convolutions' ReLU, written over its input: a convolution's (or norm's) fresh output that neither's
    backward reads, so the same gradients and one ``[B, C, H, W]`` map less (128 MB at 1024x2048, 1/4 scale)."""
    return F.relu(x, inplace=True)


def add_upsampled(lateral_y: Tensor, up: Tensor) -> Tensor:
    """``lateral_y + up`` written over ``lateral_y``, the lateral convolution's fresh output, which neither its
    backward nor its norm's reads."""
    return lateral_y.add_(up)


def conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm: str, activation=None) -> Conv2d:
    """A c2-xavier-initialized ``Conv2d`` with optional norm (bias only without norm) and activation."""
    conv = Conv2d(
        in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2, bias=norm == "",
        norm=get_norm(norm, out_channels), activation=activation,
    )
    weight_init.c2_xavier_fill(conv)
    return conv


def add_fpn_levels(module: nn.Module, in_channels: List[int], conv_dim: int, norm: str):
    """Add a 1x1 lateral ``adapter_{i}`` and a 3x3 ``layer_{i}`` to ``module`` for each input, finest
    first (``i`` from 1); returns both lists in top-down order (coarsest first)."""
    lateral_convs, output_convs = [], []
    for idx, channels in enumerate(in_channels, start=1):
        lateral = conv_norm(channels, conv_dim, 1, norm)
        output = conv_norm(conv_dim, conv_dim, 3, norm, relu_in_place)
        module.add_module(f"adapter_{idx}", lateral)
        module.add_module(f"layer_{idx}", output)
        lateral_convs.append(lateral)
        output_convs.append(output)
    return lateral_convs[::-1], output_convs[::-1]


def sorted_by_stride(input_shape: Dict[str, ShapeSpec]):
    """Feature names and shapes, finest first (``res2`` ... ``res5``)."""
    return sorted(input_shape.items(), key=lambda item: item[1].stride)


@PIXEL_DECODER_REGISTRY.register()
class BasePixelDecoder(nn.Module):
    """A top-down FPN over the backbone features, ending in a 3x3 conv to ``mask_dim`` channels.

    The coarsest feature goes through ``layer_{n}`` (3x3); every finer one gets a 1x1 lateral
    ``adapter_{i}``, adds the nearest-upsampled coarser output, and goes through ``layer_{i}``.
    """

    @configurable
    def __init__(
        self, input_shape: Dict[str, ShapeSpec], *, conv_dim: int, mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
    ):
        super().__init__()
        shapes = sorted_by_stride(input_shape)
        self.in_features = [name for name, _ in shapes]
        channels = [shape.channels for _, shape in shapes]
        lateral_convs, output_convs = add_fpn_levels(self, channels[:-1], conv_dim, norm)
        top = conv_norm(channels[-1], conv_dim, 3, norm, relu_in_place)
        self.add_module(f"layer_{len(channels)}", top)
        # Top-down order: coarsest first.
        self.lateral_convs: List[Optional[nn.Module]] = [None] + lateral_convs
        self.output_convs: List[nn.Module] = [top] + output_convs
        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        weight_init.c2_xavier_fill(self.mask_features)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        in_features = cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in in_features},
            "conv_dim": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
        }

    def top_down(self, features, top):
        """Run the FPN from ``top`` (the coarsest level's output); returns the finest output and
        the first ``NUM_MULTI_SCALE_FEATURES`` outputs, coarsest first."""
        y = top
        outputs = [y]
        for name, lateral, output in zip(self.in_features[-2::-1], self.lateral_convs[1:], self.output_convs[1:]):
            lateral_y = lateral(features[name])
            y = output(add_upsampled(lateral_y, F.interpolate(y, size=lateral_y.shape[-2:], mode="nearest")))
            outputs.append(y)
        return y, outputs[:NUM_MULTI_SCALE_FEATURES]

    def forward_features(self, features):
        """``features``: ``{name: [B, C, H, W]}`` -> ``(mask_features [B, mask_dim, H/4, W/4], None,
        multi_scale_features)``."""
        top = self.output_convs[0](features[self.in_features[-1]])
        y, multi_scale = self.top_down(features, top)
        return self.mask_features(y), None, multi_scale

    def forward(self, features):
        return self.forward_features(features)


@PIXEL_DECODER_REGISTRY.register()
class TransformerEncoderPixelDecoder(BasePixelDecoder):
    """``BasePixelDecoder`` whose coarsest level first goes through a DETR transformer encoder
    (``input_proj`` 1x1 conv, ``transformer``); the encoder output is also returned for a
    transformer decoder fed ``"transformer_encoder"``."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float, transformer_nheads: int, transformer_dim_feedforward: int,
        transformer_enc_layers: int, transformer_pre_norm: bool,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
    ):
        super().__init__(input_shape, conv_dim=conv_dim, mask_dim=mask_dim, norm=norm)
        coarsest_channels = sorted_by_stride(input_shape)[-1][1].channels
        self.input_proj = Conv2d(coarsest_channels, conv_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.input_proj)
        self.transformer = TransformerEncoderOnly(
            d_model=conv_dim, dropout=transformer_dropout, nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward, num_encoder_layers=transformer_enc_layers,
            normalize_before=transformer_pre_norm,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        # The coarsest output conv now reads the encoder's conv_dim channels.
        top = conv_norm(conv_dim, conv_dim, 3, norm, relu_in_place)
        self.add_module(f"layer_{len(self.in_features)}", top)
        self.output_convs[0] = top

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret.update(
            transformer_dropout=cfg.MODEL.MASK_FORMER.DROPOUT,
            transformer_nheads=cfg.MODEL.MASK_FORMER.NHEADS,
            transformer_dim_feedforward=cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD,
            transformer_enc_layers=cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS,
            transformer_pre_norm=cfg.MODEL.MASK_FORMER.PRE_NORM,
        )
        return ret

    def forward_features(self, features):
        x = features[self.in_features[-1]]
        encoded = self.transformer(self.input_proj(x), None, self.pe_layer(x))
        y, multi_scale = self.top_down(features, self.output_convs[0](encoded))
        return self.mask_features(y), encoded, multi_scale
