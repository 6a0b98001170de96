"""Fast paths of the queries' mask logits on the CPU: the backward joined over the decoder layers in training, and
the product on oneDNN in inference.

Reference: :func:`mask_logits_reference`, one einsum per layer, forward and backward. Fast paths, both taken by
:func:`mask_logits`:

- :func:`joined_mask_logits`, the same forward computed without a graph and one backward for every layer that
  multiplies only the supervised queries' rows. Picked by :func:`joins_mask_logits`.
- :func:`onednn_mask_logits`, in bfloat16 autocast inference: the einsum's product reads channels-last features as
  ``[C, HW]``, a transposed matrix that its bfloat16 product copies first (8 MB at 512x512, for every layer's
  prediction at that scale). oneDNN's product (:func:`~mask_former.layers.onednn_linear.onednn_linear`) reads
  them in place as ``[HW, C]`` rows: the same values, and on the project's VM the transformer decoder took 79 ms
  instead of 95 at 512x512 (``benchmarks/bench_fast_paths_cpu.py --fast-path onednn_mask_logits``). In float32
  the einsum's product reads the transposed matrix without a copy and was as fast, so float32 keeps it. Picked
  by :func:`uses_onednn_mask_logits`.
"""
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from ...layers import eager_cpu_inference
from ...layers.onednn_linear import onednn_dtype, onednn_linear

__all__ = [
    "joined_mask_logits", "joins_mask_logits", "mask_logits", "mask_logits_reference", "onednn_mask_logits",
    "uses_onednn_mask_logits",
]


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


def uses_onednn_mask_logits(module: nn.Module, features: Tensor) -> bool:
    """Whether ``module`` computes its mask logits of ``features`` with :func:`onednn_mask_logits`: where its linear
    layers run on oneDNN in bfloat16 (CPU inference under bfloat16 autocast, as
    :func:`~mask_former.layers.onednn_linear.uses_onednn_linear` decides) and the features are channels-last, so
    that their ``[B, HW, C]`` rows are a view."""
    return (
        eager_cpu_inference(module, features)
        and onednn_dtype(features) == torch.bfloat16
        and features.is_contiguous(memory_format=torch.channels_last)
    )


def onednn_mask_logits(embed: Tensor, features: Tensor) -> Tensor:
    """:func:`mask_logits_reference` on oneDNN (in bfloat16 under bfloat16 autocast), without autograd: each
    image's ``[N, C]`` embeddings times its channels-last features read as ``[HW, C]`` rows (a view). Returns
    ``[B, N, H, W]``, contiguous."""
    batch, channels, height, width = features.shape
    rows = features.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
    logits = [onednn_linear(image_embed, image_rows) for image_embed, image_rows in zip(embed, rows)]
    logits = logits[0].unsqueeze(0) if batch == 1 else torch.stack(logits)
    return logits.view(batch, -1, height, width)


def mask_logits(embed: Tensor, features: Tensor, module: nn.Module) -> Tensor:
    """The queries' mask logits, ``einsum("bnc,bchw->bnhw", embed, features)``, as ``module`` computes them.

    Args:
        embed: ``[B, N, C]`` mask embeddings of N queries.
        features: ``[B, C, H, W]`` per-pixel embeddings (any memory format).
        module: the decoder, whose mode (training or eval) picks a fast path.

    Returns:
        ``[B, N, H, W]``: on :func:`onednn_mask_logits` where :func:`uses_onednn_mask_logits`; with the backward of
        :func:`joined_mask_logits` where :func:`joins_mask_logits`.
    """
    if uses_onednn_mask_logits(module, features):
        return onednn_mask_logits(embed, features)
    if not joins_mask_logits(features):
        return mask_logits_reference(embed, features)
    return joined_mask_logits(features, [embed], [mask_logits_reference(embed.detach(), features.detach())])[0]
