"""Fast path: the deformable encoder's layers in CPU inference, a chunk of tokens at a time.

Reference: :meth:`MSDeformAttnTransformerEncoderLayer.forward
<mask_former.modeling.pixel_decoder.msdeformattn.MSDeformAttnTransformerEncoderLayer.forward>`, every step on
all ``S`` tokens at once. Each step makes a fresh ``[S, C]`` tensor (``[S, 4C]`` in the feed-forward), a dozen a
layer: at 1024x2048, S = 43008 and each is 44 MB (176 MB), which glibc maps fresh and the kernel zeroes page by
page, at a cost comparable to the arithmetic on it.

Fast path: :func:`encoder_layer_by_chunks`. Only the value projection needs every token (each query samples
the values of all levels); everything after it, from a query's row of the input to its row of the output,
reads that row alone. So the values are projected once, and the rest runs on ``TOKENS_PER_CHUNK`` rows at a
time into one output buffer: the temporaries are a few MB, reused from chunk to chunk and warm in the cache.
The same operators on the same rows: equal up to float rounding (a GEMM may block fewer rows differently).
Picked by :func:`uses_token_chunks`.
"""
import torch
from torch import Tensor, nn

from ...layers import eager_cpu_inference

__all__ = ["TOKENS_PER_CHUNK", "encoder_layer_by_chunks", "uses_token_chunks"]

TOKENS_PER_CHUNK = 2048
"""Rows of a chunk: its feed-forward hidden activations (``2048 x 1024`` floats, 8 MB) stay below the size glibc
maps on its own, so every chunk reuses the memory of the one before."""


def uses_token_chunks(layer: nn.Module, src: Tensor) -> bool:
    """Whether ``layer`` runs :func:`encoder_layer_by_chunks` on ``src [N, S, C]``: CPU inference (eval mode, no
    autograd) on more than one chunk of tokens, not while a graph is captured for export."""
    # eager_cpu_inference() before the size test: under torch.export that test would become a guard of the graph.
    return eager_cpu_inference(layer, src) and src.shape[1] > TOKENS_PER_CHUNK


def encoder_layer_by_chunks(
    layer: nn.Module,
    src: Tensor,
    pos: Tensor,
    reference_points: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
) -> Tensor:
    """
    ``layer``'s output, computed ``TOKENS_PER_CHUNK`` rows at a time after the values are projected.

    Args:
        layer: an ``MSDeformAttnTransformerEncoderLayer``: its ``self_attn`` (an ``MSDeformAttn``), then its
            ``post_attention`` (residuals, norms and feed-forward), which reads each row alone.
        src, pos (`Tensor` of shape `(N, S, C)`): the tokens of all levels and their position embeddings.
        reference_points (`Tensor` of shape `(N, S, L, 2)`), spatial_shapes, level_start_index: as ``layer``.

    Returns:
        `Tensor` of shape `(N, S, C)`.
    """
    value = layer.self_attn.project_values(src)
    out = torch.empty_like(src)
    for start in range(0, src.shape[1], TOKENS_PER_CHUNK):
        rows = slice(start, start + TOKENS_PER_CHUNK)
        x = src[:, rows]
        attended = layer.self_attn.attend(
            x + pos[:, rows], reference_points[:, rows], value, spatial_shapes, level_start_index
        )
        out[:, rows] = layer.post_attention(x, attended)
    return out
