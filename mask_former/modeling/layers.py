"""Building blocks shared by the pixel decoders and the transformer decoders.

Sequence tensors follow ``nn.MultiheadAttention``'s default layout: ``[L, B, C]``.
"""
import math
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


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
        pos_x = self._interleave_sin_cos(x_embed[:, :, :, None] / dim_t)
        pos_y = self._interleave_sin_cos(y_embed[:, :, :, None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    @staticmethod
    def _interleave_sin_cos(angles: Tensor) -> Tensor:
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=4).flatten(3)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them: ``[..., input_dim] -> [..., output_dim]``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n, k) for n, k in zip([input_dim] + hidden, hidden + [output_dim])
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


def with_pos(x: Tensor, pos: Optional[Tensor]) -> Tensor:
    return x if pos is None else x + pos


def residual(x: Tensor, sublayer: Callable[[Tensor], Tensor], norm: nn.Module, dropout: nn.Module, pre_norm: bool) -> Tensor:
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


def feed_forward(linear1: nn.Linear, linear2: nn.Linear, dropout: nn.Module):
    """``linear2(dropout(relu(linear1(x))))``. Where no graph is recorded the ReLU overwrites the hidden
    activations, which saves a fresh ``[tokens, d_ffn]`` buffer per layer; under autograd it does not: linear's
    3-d output is a view, and an in-place op on it costs a copy of the whole base in the backward."""

    def run(x: Tensor) -> Tensor:
        hidden = linear1(x)
        return linear2(dropout(F.relu(hidden, inplace=not hidden.requires_grad)))

    return run


def mask_logits(embed: Tensor, features: Tensor) -> Tensor:
    """The queries' mask logits, ``einsum("bnc,bchw->bnhw", embed, features)``.

    Args:
        embed: ``[B, N, C]`` mask embeddings of N queries.
        features: ``[B, C, H, W]`` per-pixel embeddings (any memory format).

    Returns:
        ``[B, N, H, W]``, with the backward of :func:`joined_mask_logits` where :func:`joins_mask_logits`.
    """
    if not joins_mask_logits(features):
        return mask_logits_reference(embed, features)
    return joined_mask_logits(features, [embed], [mask_logits_reference(embed.detach(), features.detach())])[0]


def joins_mask_logits(features: Tensor) -> bool:
    """Whether mask logits of ``features`` are computed without a graph and joined to it by
    :func:`joined_mask_logits`: under autograd, on the CPU. Other devices keep the einsum's backward: finding
    the supervised rows there would wait on the device once per image and layer."""
    return features.device.type == "cpu" and torch.is_grad_enabled()


def joined_mask_logits(features: Tensor, embeds: Sequence[Tensor], masks: Sequence[Tensor]) -> List[Tensor]:
    """Several layers' mask logits ``masks[l] = mask_logits_reference(embeds[l], features)``, computed by the
    caller without a graph, joined to the graph at once, with the gradients of the einsums.

    The backward multiplies only the queries whose mask gradient is not zero: the mask losses supervise the
    matched queries alone, a few of the N, and the einsum backward (:func:`mask_logits_reference`) spends most
    of its two products on zero rows. The features' gradient is one product over every layer's supervised
    rows, instead of one full-size product and sum per layer. The same gradients up to the order of the sums.
    """
    return list(_SupervisedRowsMaskLogits.apply(features, *embeds, *masks))


def mask_logits_reference(embed: Tensor, features: Tensor) -> Tensor:
    """:func:`mask_logits` as one einsum, forward and backward."""
    return torch.einsum("bnc,bchw->bnhw", embed, features)


class _SupervisedRowsMaskLogits(torch.autograd.Function):
    """``apply(features, *embeds, *masks) -> masks``, the given masks joined to the graph (see
    :func:`joined_mask_logits`)."""

    @staticmethod
    def forward(ctx, features: Tensor, *embeds_and_masks: Tensor):
        layers = len(embeds_and_masks) // 2
        ctx.save_for_backward(features, *embeds_and_masks[:layers])
        ctx.set_materialize_grads(False)
        return embeds_and_masks[layers:]

    @staticmethod
    def backward(ctx, *grads: Optional[Tensor]):
        features, *embeds = ctx.saved_tensors
        wants = ctx.needs_input_grad
        grad_embeds = [torch.zeros_like(e) if wants[1 + l] and g is not None else None
                       for l, (e, g) in enumerate(zip(embeds, grads))]
        # Per image, every layer's (embed rows, gradient rows) of supervised queries, for the features' gradient.
        supervised = [([], []) for _ in range(features.shape[0])]
        for embed, grad, grad_embed in zip(embeds, grads, grad_embeds):
            if grad is None:
                continue
            grad = grad.flatten(2)
            # A row is skipped only where every entry is exactly 0 (NaN and inf rows are kept: amax propagates NaN).
            kept = grad.abs().amax(-1) != 0
            for b, (embed_rows, grad_rows) in enumerate(supervised):
                rows = kept[b].nonzero().squeeze(1)
                grad_of_rows = grad[b].index_select(0, rows)
                if grad_embed is not None and len(rows):
                    grad_embed[b].index_copy_(0, rows, grad_of_rows @ features[b].flatten(1).t())
                if wants[0]:
                    grad_rows.append(grad_of_rows)
                    embed_rows.append(embed[b].index_select(0, rows))
        grad_features = None
        if wants[0]:
            channels_last = features.is_contiguous(memory_format=torch.channels_last)
            grad_features = torch.empty_like(
                features, memory_format=torch.channels_last if channels_last else torch.contiguous_format
            )
            channels, pixels = features.shape[1], features[0].numel() // features.shape[1]
            for b, (embed_rows, grad_rows) in enumerate(supervised):
                embed_rows = torch.cat(embed_rows) if embed_rows else features.new_zeros(0, channels)
                grad_rows = torch.cat(grad_rows) if grad_rows else features.new_zeros(0, pixels)
                _product_into(grad_features[b].view(channels, pixels), embed_rows.t(), grad_rows)
        return (grad_features, *grad_embeds, *([None] * len(embeds)))


def _product_into(out: Tensor, a: Tensor, b: Tensor) -> None:
    """``out = a @ b`` written in place into ``out``, a contiguous matrix or a transposed one (a channels-last
    feature map's ``[C, HW]`` view), without a temporary; ``a @ b`` with an empty inner dimension is zero."""
    if out.is_contiguous():
        torch.mm(a, b, out=out)
    else:
        torch.mm(b.t(), a.t(), out=out.t())


def padding_to_multiple(size: int, multiple: int) -> int:
    """How much to pad ``size`` to the next multiple of ``multiple`` (``-size % multiple``), written as a
    ceiling so that, under torch.export, every later size stays a plain multiple of ``ceil(size / multiple)``
    and equal sizes reached by different paths are provably equal."""
    return (size + multiple - 1) // multiple * multiple - size


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

    def forward(self, tgt: Tensor, tgt_mask=None, tgt_key_padding_mask=None, query_pos: Optional[Tensor] = None) -> Tensor:
        sublayer = self_attention(self.self_attn, query_pos, tgt_mask, tgt_key_padding_mask)
        return residual(tgt, sublayer, self.norm, self.dropout, self.normalize_before)


class CrossAttentionLayer(nn.Module):
    """Mask2Former's (masked) cross-attention block from queries ``[Q, B, C]`` to ``memory [HW, B, C]``.

    ``memory_mask [B * heads, Q, HW]`` (bool, ``True`` = not attended) restricts each query to
    the foreground of its current mask prediction.
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
        sublayer = cross_attention(self.multihead_attn, memory, pos, query_pos, memory_mask, memory_key_padding_mask)
        return residual(tgt, sublayer, self.norm, self.dropout, self.normalize_before)


class FFNLayer(nn.Module):
    """Mask2Former's feed-forward block ``[Q, B, C] -> [Q, B, C]``."""

    def __init__(self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        xavier_init_matrices(self)

    def forward(self, tgt: Tensor) -> Tensor:
        sublayer = feed_forward(self.linear1, self.linear2, self.dropout)
        return residual(tgt, sublayer, self.norm, self.dropout, self.normalize_before)
