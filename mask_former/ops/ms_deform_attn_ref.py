"""Multi-scale deformable attention in plain PyTorch: the reference every fast path is tested against."""
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

SpatialShapes = Union[torch.Tensor, Sequence[Tuple[int, int]]]


def level_shapes(spatial_shapes: SpatialShapes) -> List[Tuple[int, int]]:
    """``(H_l, W_l)`` of each level, from the ``[L, 2]`` int64 tensor or from a list of sizes (what
    the model passes while ``torch.export`` traces it, so that the sizes stay symbolic)."""
    if isinstance(spatial_shapes, torch.Tensor):
        return [tuple(s) for s in spatial_shapes.tolist()]
    return [tuple(s) for s in spatial_shapes]


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    value_spatial_shapes: SpatialShapes,
    value_level_start_index,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """
    Args:
        value: ``[N, S, M, D]``, the flattened maps of all levels (``S = sum(H_l * W_l)``),
            ``M`` heads of ``D`` channels.
        value_spatial_shapes: ``[L, 2]`` int64, ``(H_l, W_l)`` of each level (or a list of them,
            see :func:`level_shapes`).
        value_level_start_index: ``[L]`` int64, where each level starts in ``S``. Unused here
            (the shapes determine it); kept for the kernel's signature.
        sampling_locations: ``[N, Lq, M, L, P, 2]``, ``(x, y)`` in ``[0, 1]`` relative to each
            level's map; points outside the map read zeros.
        attention_weights: ``[N, Lq, M, L, P]``.

    Returns:
        ``[N, Lq, M * D]``.
    """
    n, _, heads, channels = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    shapes = level_shapes(value_spatial_shapes)
    value_per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    # [N, Lq, M, L, P] -> [N*M, 1, Lq, L, P]
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, num_queries, levels, points)
    output = None
    for level, (h, w) in enumerate(shapes):
        # [N, H*W, M, D] -> [N*M, D, H, W]
        level_value = value_per_level[level].flatten(2).transpose(1, 2).reshape(n * heads, channels, h, w)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        # [N*M, D, Lq, P]
        sampled = F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        contribution = (sampled * weights[:, :, :, level]).sum(-1)
        output = contribution if output is None else output + contribution
    return output.view(n, heads * channels, num_queries).transpose(1, 2).contiguous()
