"""Transformer building blocks shared by the pixel decoders and the transformer decoders: position
encoding, MLP, the residual attention and feed-forward sublayers, and Mask2Former's attention layers.

Sequence tensors follow ``nn.MultiheadAttention``'s default layout: ``[L, B, C]``.
"""
import copy
import math
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..layers import Linear
from .fast_paths.masked_attention import fused_attention, uses_fused_attention

__all__ = [
    "MLP",
    "CrossAttentionLayer",
    "FFNLayer",
    "PositionEmbeddingSine",
    "PositionEmbeddingSine3D",
    "SelfAttentionLayer",
    "clones",
    "cross_attention",
    "feed_forward",
    "residual",
    "self_attention",
    "with_pos",
    "xavier_init_matrices",
]


class PositionEmbeddingSine(nn.Module):
    """Sine / cosine position encoding of a feature map (as in DETR), normalized to ``[0, scale]``.

    ``forward(x [B, C, H, W], mask [B, H, W] or None) -> [B, 2 * num_pos_feats, H, W]``; ``True``
    in ``mask`` marks padding, which does not advance the position.
    """

    def __init__(self, num_pos_feats: int = 64, temperature: int = 10000, normalize: bool = False, scale=None):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: a scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if mask is None:
            mask = torch.zeros((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool)
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = interleave_sin_cos(x_embed[:, :, :, None] / dim_t)
        pos_y = interleave_sin_cos(y_embed[:, :, :, None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class PositionEmbeddingSine3D(nn.Module):
    """Sine / cosine position encoding of a clip (Mask2Former-VIS): :class:`PositionEmbeddingSine` of each frame
    (``num_pos_feats`` channels for y, then as many for x) plus an encoding of the frame's position in time over
    all ``2 * num_pos_feats`` channels.

    ``forward(x [B, T, C, H, W], mask [B, T, H, W] or None) -> [B, T, 2 * num_pos_feats, H, W]``; ``True`` in
    ``mask`` marks padding.
    """

    def __init__(self, num_pos_feats: int = 64, temperature: int = 10000, normalize: bool = False, scale=None):
        super().__init__()
        self.spatial = PositionEmbeddingSine(num_pos_feats, temperature, normalize, scale)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"PositionEmbeddingSine3D expects a [B, T, C, H, W] clip, got shape {tuple(x.shape)}")
        batch, frames, _, height, width = x.shape
        if mask is None:
            mask = torch.zeros((batch, frames, height, width), device=x.device, dtype=torch.bool)
        spatial = self.spatial(x.flatten(0, 1), mask.flatten(0, 1)).unflatten(0, (batch, frames))
        z_embed = (~mask).cumsum(1, dtype=torch.float32)
        if self.spatial.normalize:
            z_embed = z_embed / (z_embed[:, -1:] + 1e-6) * self.spatial.scale
        channels = 2 * self.spatial.num_pos_feats
        dim_t = torch.arange(channels, dtype=torch.float32, device=x.device)
        dim_t = self.spatial.temperature ** (2 * (dim_t // 2) / channels)
        pos_z = interleave_sin_cos(z_embed[..., None] / dim_t)
        return spatial + pos_z.permute(0, 1, 4, 2, 3)


def interleave_sin_cos(angles: Tensor) -> Tensor:
    """``[..., F]`` angles -> ``[..., F]``: the sines of the even channels and the cosines of the odd ones,
    interleaved."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them: ``[..., input_dim] -> [..., output_dim]``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            Linear(n, k) for n, k in zip([input_dim] + hidden, hidden + [output_dim])
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


def with_pos(x: Tensor, pos: Optional[Tensor]) -> Tensor:
    return x if pos is None else x + pos


def residual(
    x: Tensor, sublayer: Callable[[Tensor], Tensor], norm: nn.Module, dropout: nn.Module, pre_norm: bool
) -> Tensor:
    """``x + sublayer(norm(x))`` (pre-norm) or ``norm(x + sublayer(x))`` (post-norm)."""
    if pre_norm:
        return x + dropout(sublayer(norm(x)))
    return norm(x + dropout(sublayer(x)))


def self_attention(attn: nn.MultiheadAttention, pos: Optional[Tensor], attn_mask=None, key_padding_mask=None):
    """The sublayer of a self-attention block: queries and keys carry ``pos``, values do not."""

    def run(x: Tensor) -> Tensor:
        q = k = with_pos(x, pos)
        return attn(q, k, value=x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)[0]

    return run


def cross_attention(
    attn: nn.MultiheadAttention, memory: Tensor, pos: Optional[Tensor], query_pos: Optional[Tensor],
    attn_mask=None, key_padding_mask=None,
):
    """The sublayer of a cross-attention block from queries ``x`` to ``memory``."""

    def run(x: Tensor) -> Tensor:
        return attn(
            query=with_pos(x, query_pos), key=with_pos(memory, pos), value=memory,
            attn_mask=attn_mask, key_padding_mask=key_padding_mask,
        )[0]

    return run


def feed_forward_modules(d_model: int, d_ffn: int, dropout: float) -> Tuple[Linear, nn.Dropout, Linear]:
    """The modules of a feed-forward sublayer, created in this order (``linear1``, its dropout, ``linear2``),
    for :func:`feed_forward`."""
    return Linear(d_model, d_ffn), nn.Dropout(dropout), Linear(d_ffn, d_model)


def feed_forward(linear1: nn.Linear, linear2: nn.Linear, dropout: nn.Module):
    """``linear2(dropout(relu(linear1(x))))``. Where no graph is recorded the ReLU overwrites the hidden
    activations, which saves a fresh ``[tokens, d_ffn]`` buffer per layer; under autograd it does not: linear's
    3-d output is a view, and an in-place op on it costs a copy of the whole base in the backward."""

    def run(x: Tensor) -> Tensor:
        hidden = linear1(x)
        return linear2(dropout(F.relu(hidden, inplace=not hidden.requires_grad)))

    return run


def clones(module: nn.Module, n: int) -> nn.ModuleList:
    """``n`` independent deep copies of ``module``."""
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


def xavier_init_matrices(module: nn.Module):
    """Xavier-uniform initialization of every parameter with more than one dimension."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Mask2Former's self-attention block over queries ``[Q, B, C]``."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        xavier_init_matrices(self)

    def forward(
        self, tgt: Tensor, tgt_mask=None, tgt_key_padding_mask=None, query_pos: Optional[Tensor] = None
    ) -> Tensor:
        sublayer = self_attention(self.self_attn, query_pos, tgt_mask, tgt_key_padding_mask)
        return residual(tgt, sublayer, self.norm, self.dropout, self.normalize_before)


class CrossAttentionLayer(nn.Module):
    """Mask2Former's (masked) cross-attention block from queries ``[Q, B, C]`` to ``memory [HW, B, C]``.

    ``memory_mask [B, Q, HW]`` (bool, ``True`` = not attended, the same for every head) restricts each query to
    the foreground of its current mask prediction. In CPU inference the attention runs on one fused kernel
    (:mod:`.fast_paths.masked_attention`); the reference is ``nn.MultiheadAttention`` with the mask copied for
    every head, as upstream.
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        xavier_init_matrices(self)

    def forward(
        self, tgt: Tensor, memory: Tensor, memory_mask=None, memory_key_padding_mask=None,
        pos: Optional[Tensor] = None, query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        attn = self.multihead_attn
        if memory_mask is not None and memory_key_padding_mask is None and uses_fused_attention(self, attn, tgt):
            key = with_pos(memory, pos)

            def sublayer(x: Tensor) -> Tensor:
                return fused_attention(attn, with_pos(x, query_pos), key, memory, memory_mask)
        else:
            if memory_mask is not None:  # [B * heads, Q, HW], image by image, head by head
                memory_mask = memory_mask.unsqueeze(1).repeat(1, attn.num_heads, 1, 1).flatten(0, 1)
            sublayer = cross_attention(attn, memory, pos, query_pos, memory_mask, memory_key_padding_mask)
        return residual(tgt, sublayer, self.norm, self.dropout, self.normalize_before)


class FFNLayer(nn.Module):
    """Mask2Former's feed-forward block ``[Q, B, C] -> [Q, B, C]``."""

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.linear1, self.dropout, self.linear2 = feed_forward_modules(d_model, dim_feedforward, dropout)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        xavier_init_matrices(self)

    def forward(self, tgt: Tensor) -> Tensor:
        sublayer = feed_forward(self.linear1, self.linear2, self.dropout)
        return residual(tgt, sublayer, self.norm, self.dropout, self.normalize_before)
