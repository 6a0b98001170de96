"""``MSDeformAttn``: the multi-scale deformable attention layer of Deformable DETR."""
import math
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..layers import Linear
from . import ms_deform_attn
from .ms_deform_attn_ref import level_shapes


class MSDeformAttn(nn.Module):
    """Each query attends to ``n_points`` sampled locations around its reference point in each of
    ``n_levels`` feature maps, per head.

    Args:
        d_model: channels of queries and values; must be divisible by ``n_heads``.
        n_levels: number of feature levels.
        n_heads: attention heads.
        n_points: sampling points per head and level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"MSDeformAttn: d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = Linear(d_model, d_model)
        self.output_proj = Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self):
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        # Initial offsets point in n_heads evenly spread directions, 1..n_points steps away.
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([thetas.cos(), thetas.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True)[0]
        steps = torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        grid = directions.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1) * steps
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.constant_(proj.bias, 0.0)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_level_start_index: Tensor,
        input_padding_mask: Tensor = None,
    ) -> Tensor:
        """
        Args:
            query: ``[N, Lq, C]``.
            reference_points: ``[N, Lq, n_levels, 2]``, ``(x, y)`` in ``[0, 1]``.
            input_flatten: ``[N, S, C]``, all levels' maps flattened and concatenated.
            input_spatial_shapes: ``[n_levels, 2]`` int64 ``(H, W)``.
            input_level_start_index: ``[n_levels]`` int64.
            input_padding_mask: ``[N, S]`` bool, ``True`` for padding, or None.

        Returns:
            ``[N, Lq, C]``.
        """
        if reference_points.shape[-1] != 2:
            raise ValueError(f"MSDeformAttn: reference_points must end in (x, y), got {tuple(reference_points.shape)}")
        num_values = sum(h * w for h, w in level_shapes(input_spatial_shapes))
        if num_values != input_flatten.shape[1]:
            raise ValueError(
                f"MSDeformAttn: input_spatial_shapes cover {num_values} positions but input_flatten has "
                f"{input_flatten.shape[1]}"
            )
        value = self.project_values(input_flatten, input_padding_mask)
        return self.attend(query, reference_points, value, input_spatial_shapes, input_level_start_index)

    def project_values(self, input_flatten: Tensor, input_padding_mask: Optional[Tensor] = None) -> Tensor:
        """The values every query samples, ``[N, S, n_heads, C / n_heads]``, from ``input_flatten [N, S, C]``
        (zero where ``input_padding_mask [N, S]`` is True)."""
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        return value.view(value.shape[0], -1, self.n_heads, self.d_model // self.n_heads)

    def attend(
        self, query: Tensor, reference_points: Tensor, value: Tensor, input_spatial_shapes, input_level_start_index
    ) -> Tensor:
        """The queries' outputs ``[N, Lq, C]`` from the values of :meth:`project_values`; each query's output
        depends on its own row of ``query`` and ``reference_points`` alone."""
        n, num_queries, _ = query.shape
        offsets = self.sampling_offsets(query).view(n, num_queries, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, num_queries, self.n_heads, self.n_levels * self.n_points)
        weights = short_softmax(weights).view(n, num_queries, self.n_heads, self.n_levels, self.n_points)
        locations = sampling_locations(reference_points, offsets, offset_normalizer(input_spatial_shapes, offsets))
        output = ms_deform_attn(value, input_spatial_shapes, input_level_start_index, locations, weights)
        return self.output_proj(output)


def offset_normalizer(spatial_shapes, like: Tensor) -> Tensor:
    """``[L, 2]`` ``(W_l, H_l)`` of each level. From a list of (symbolic) sizes it is built by tensor
    arithmetic, which ``torch.export`` keeps symbolic (``torch.as_tensor`` would fix the sizes)."""
    if isinstance(spatial_shapes, Tensor):
        return torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
    one = like.new_ones(())
    return torch.stack([torch.stack([one * w, one * h]) for h, w in spatial_shapes])


def short_softmax(x: Tensor) -> Tensor:
    """``F.softmax(x, -1)`` for a short last dimension (the ``n_levels * n_points`` attention weights). On the
    CPU torch's softmax kernel vectorizes along the last dimension and is about 10x slower there than the
    same computation written out; elsewhere it is the one fused kernel."""
    if x.device.type != "cpu":
        return F.softmax(x, -1)
    exp = (x - x.amax(-1, keepdim=True)).exp()
    return exp / exp.sum(-1, keepdim=True)


def sampling_locations(reference_points: Tensor, offsets: Tensor, normalizer: Tensor) -> Tensor:
    """``reference_points [N, Lq, L, 2] + offsets [N, Lq, heads, L, P, 2] / normalizer [L, 2]`` (offsets are in
    pixels of each level: normalize by (W, H)). Written as a broadcast over the heads only, onto rows of
    ``L * P * 2`` contiguous values: the same sums, ~25x faster on the CPU than broadcasting over the
    interleaved head and point dimensions."""
    n, num_queries, heads, levels, points, _ = offsets.shape
    row = levels * points * 2
    normalizer = normalizer[:, None, :].expand(levels, points, 2).reshape(row)
    reference = reference_points[:, :, None, :, None, :].expand(n, num_queries, 1, levels, points, 2)
    locations = reference.reshape(n, num_queries, 1, row) + offsets.reshape(n, num_queries, heads, row) / normalizer
    return locations.view(offsets.shape)
