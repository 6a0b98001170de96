"""Fast path: the backward of the queries' mask logits on the CPU, joined over the decoder layers.

Reference: :func:`mask_logits_reference`, one einsum per layer, forward and backward. Fast path:
:func:`joined_mask_logits`, the same forward computed without a graph and one backward for every layer that
multiplies only the supervised queries' rows. Picked by :func:`joins_mask_logits`.
"""
from typing import List, Optional, Sequence

import torch
from torch import Tensor

__all__ = ["joined_mask_logits", "joins_mask_logits", "mask_logits", "mask_logits_reference"]


def mask_logits_reference(embed: Tensor, features: Tensor) -> Tensor:
    """:func:`mask_logits` as one einsum, forward and backward."""
    return torch.einsum("bnc,bchw->bnhw", embed, features)


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
        grad_embeds = [torch.zeros_like(e) if wants[1 + i] and g is not None else None
                       for i, (e, g) in enumerate(zip(embeds, grads))]
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
