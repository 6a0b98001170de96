"""Fast path: Mask2Former's masked cross-attention in CPU inference, on one fused attention kernel.

Reference: ``nn.MultiheadAttention`` (as upstream) with the attention mask copied for every head,
``[B * heads, Q, HW]``; on the CPU it turns that bool mask into a float one of the same size (a fill and a
masked fill), adds it to the scores in a product, then takes the softmax and the product with the values, each
pass over ``[B * heads, Q, HW]`` floats.

Fast path: :func:`fused_attention`, the same projections (the module's own weights, on
:mod:`mask_former.layers.onednn_linear` where it applies) around
``F.scaled_dot_product_attention``, which reads the mask once per image for all the heads (``[B, 1, Q, HW]``)
and does the scaling, masking, softmax and product in one pass over blocks of keys. Equal up to float rounding
(the scores are scaled inside the kernel and summed blockwise). Picked by :func:`uses_fused_attention`.
"""
from torch import Tensor, nn
from torch.nn import functional as F

from ...layers import eager_cpu_inference
from ...layers.onednn_linear import onednn_linear, uses_onednn_linear

__all__ = ["fused_attention", "uses_fused_attention"]


def uses_fused_attention(layer: nn.Module, attn: nn.MultiheadAttention, query: Tensor) -> bool:
    """Whether ``layer``'s attention ``attn`` runs :func:`fused_attention` on ``query``: CPU inference (eval mode,
    no autograd, no graph captured for export) with one input projection for queries, keys and values, as
    Mask2Former's layers have."""
    return (
        eager_cpu_inference(layer, query)
        and attn.in_proj_weight is not None
        and attn.bias_k is None
        and not attn.add_zero_attn
        and not attn.batch_first
    )


def fused_attention(attn: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor, blocked: Tensor) -> Tensor:
    """
    ``attn(query, key, value, attn_mask=blocked repeated for every head)[0]`` on one fused kernel.

    Args:
        attn: the module whose projections (``in_proj_weight``, ``in_proj_bias``, ``out_proj``) and heads are used.
        query (`Tensor` of shape `(Q, B, C)`), key and value (`Tensor` of shape `(HW, B, C)`): sequence first.
        blocked (`Tensor` of shape `(B, Q, HW)`, bool): True where a query does not attend to a key.

    Returns:
        `Tensor` of shape `(Q, B, C)`.
    """
    channels, heads = attn.embed_dim, attn.num_heads
    linear = onednn_linear if uses_onednn_linear(attn, query) else F.linear
    weights = attn.in_proj_weight.split(channels)
    biases = attn.in_proj_bias.split(channels) if attn.in_proj_bias is not None else (None,) * 3

    def split_heads(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:  # [L, B, C] -> [B, heads, L, C / heads]
        length, batch, _ = x.shape
        return linear(x, weight, bias).view(length, batch, heads, channels // heads).permute(1, 2, 0, 3)

    q, k, v = (split_heads(x, w, b) for x, w, b in zip((query, key, value), weights, biases))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=~blocked[:, None])  # [B, heads, Q, C / heads]
    out = out.permute(2, 0, 1, 3).reshape(query.shape[0], query.shape[1], channels)
    return linear(out, attn.out_proj.weight, attn.out_proj.bias)
