"""Mask2Former's pixel decoder: a multi-scale deformable-attention encoder plus FPN levels."""
import math
from typing import Callable, Dict, List, Optional, Union

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from torch import Tensor, nn
from torch.nn import functional as F

from ...layers import capturing_graph
from ...ops.ms_deform_attn_module import MSDeformAttn
from ...ops.ms_deform_attn_ref import level_shapes
from ..build import PIXEL_DECODER_REGISTRY
from ..fast_paths.token_chunks import encoder_layer_by_chunks, uses_token_chunks
from ..transformer_blocks import (
    PositionEmbeddingSine,
    clones,
    feed_forward,
    feed_forward_modules,
    residual,
    with_pos,
    xavier_init_matrices,
)
from .fpn import NUM_MULTI_SCALE_FEATURES, add_fpn_levels, add_upsampled, sorted_by_stride


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Deformable self-attention over all levels' pixels ``[B, S, C]``, then feed-forward (post-norm)."""

    def __init__(self, d_model=256, d_ffn=1024, dropout=0.1, n_levels=4, n_heads=8, n_points=4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1, self.dropout2, self.linear2 = feed_forward_modules(d_model, d_ffn, dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: Tensor, level_start_index: Tensor
    ) -> Tensor:
        if uses_token_chunks(self, src):
            return encoder_layer_by_chunks(self, src, pos, reference_points, spatial_shapes, level_start_index)
        attended = self.self_attn(with_pos(src, pos), reference_points, src, spatial_shapes, level_start_index)
        return self.post_attention(src, attended)

    def post_attention(self, src: Tensor, attended: Tensor) -> Tensor:
        """``norm1(src + attended)``, then the feed-forward sublayer (post-norm residuals, dropout before each
        sum); row by row."""
        src = self.norm1(src + self.dropout1(attended))
        ffn = feed_forward(self.linear1, self.linear2, self.dropout2)
        return residual(src, ffn, self.norm2, self.dropout3, pre_norm=False)


def reference_points(spatial_shapes: List[tuple], batch_size: int, device) -> Tensor:
    """Pixel centres of every level, normalized to ``[0, 1]``: ``[B, S, L, 2]`` as ``(x, y)``."""
    points = []
    for h, w in spatial_shapes:
        # arange + 0.5 is exactly linspace(0.5, n - 0.5, n) (steps of 1.0), and keeps n symbolic under torch.export.
        ref_y, ref_x = torch.meshgrid(
            (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h,
            (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w,
            indexing="ij",
        )
        points.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
    points = torch.cat(points, 0)
    return points[None, :, None].expand(batch_size, -1, len(spatial_shapes), -1)


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """``forward(srcs, pos_embeds)``: lists of ``[B, C, H_l, W_l]`` -> ``(memory [B, S, C],
    spatial_shapes [L, 2], level_start_index [L])``."""

    def __init__(
        self, d_model=256, nhead=8, num_encoder_layers=6, dim_feedforward=1024, dropout=0.1, num_feature_levels=4,
        enc_n_points=4,
    ):
        super().__init__()
        layer = MSDeformAttnTransformerEncoderLayer(
            d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points
        )
        self.encoder = nn.Module()
        self.encoder.layers = clones(layer, num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        xavier_init_matrices(self)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: List[Tensor], pos_embeds: List[Tensor]):
        shapes = [tuple(src.shape[-2:]) for src in srcs]
        src_flatten = torch.cat([src.flatten(2).transpose(1, 2) for src in srcs], 1)
        pos_flatten = torch.cat(
            [pos.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1) for i, pos in enumerate(pos_embeds)], 1
        )
        if capturing_graph():
            # Exporters keep the sizes symbolic as Python sizes only, not inside a tensor.
            spatial_shapes, level_start_index = shapes, None
        else:
            spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=src_flatten.device)
            level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        refs = reference_points(shapes, src_flatten.shape[0], src_flatten.device)
        memory = src_flatten
        for layer in self.encoder.layers:
            memory = layer(memory, pos_flatten, refs, spatial_shapes, level_start_index)
        return memory, spatial_shapes, level_start_index


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable-attention encoder over ``transformer_in_features`` (e.g. res3-res5), then FPN
    levels down to ``common_stride`` from the finer backbone features (e.g. res2).

    ``forward_features`` returns ``(mask_features [B, mask_dim, H/4, W/4], the coarsest encoder
    output, the 3 coarsest outputs for the multi-scale transformer decoder)``.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
        transformer_in_features: List[str],
        transformer_n_points: int = 4,
        common_stride: int,
    ):
        super().__init__()
        shapes = sorted_by_stride(input_shape)
        self.in_features = [name for name, _ in shapes]
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES names {missing}, which are not "
                f"among the pixel decoder's inputs {self.in_features} (MODEL.SEM_SEG_HEAD.IN_FEATURES)"
            )
        encoder_shapes = [(n, s) for n, s in shapes if n in transformer_in_features]
        self.transformer_in_features = [name for name, _ in encoder_shapes]
        # Coarsest first.
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(shape.channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for _, shape in encoder_shapes[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim, dropout=transformer_dropout, nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward, num_encoder_layers=transformer_enc_layers,
            num_feature_levels=len(encoder_shapes), enc_n_points=transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.mask_features)
        self.common_stride = common_stride
        finest_encoder_stride = min(shape.stride for _, shape in encoder_shapes)
        self.num_fpn_levels = int(math.log2(finest_encoder_stride) - math.log2(common_stride))
        self.lateral_convs, self.output_convs = add_fpn_levels(
            self, [shape.channels for _, shape in shapes[: self.num_fpn_levels]], conv_dim, norm
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            # Upstream uses 1024 for the deformable encoder whatever DIM_FEEDFORWARD says.
            "transformer_dim_feedforward": 1024,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "transformer_n_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
            "common_stride": head.COMMON_STRIDE,
        }

    @torch.autocast("cuda", enabled=False)
    def forward_features(self, features):
        names = self.transformer_in_features[::-1]
        srcs = [proj(features[name].float()) for proj, name in zip(self.input_proj, names)]
        pos = [self.pe_layer(features[name]) for name in names]
        memory, spatial_shapes, level_start_index = self.transformer(srcs, pos)
        batch = memory.shape[0]
        shapes = level_shapes(spatial_shapes)
        # Channels-last views of the memory. Reshaping to [B, H, W, C] before the permute keeps a true batch
        # stride even at batch 1, where transpose-then-reshape does not: bilinear upsampling of that view
        # takes a generic strided path several times slower than on either proper layout.
        outputs = [
            level.reshape(batch, h, w, -1).permute(0, 3, 1, 2)
            for level, (h, w) in zip(memory.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        fpn_names = self.in_features[: self.num_fpn_levels][::-1]
        for name, lateral, output in zip(fpn_names, self.lateral_convs, self.output_convs):
            lateral_y = lateral(features[name].float())
            up = F.interpolate(outputs[-1], size=lateral_y.shape[-2:], mode="bilinear", align_corners=False)
            outputs.append(output(add_upsampled(lateral_y, up)))
        return self.mask_features(outputs[-1]), outputs[0], outputs[:NUM_MULTI_SCALE_FEATURES]

    def forward(self, features):
        return self.forward_features(features)
