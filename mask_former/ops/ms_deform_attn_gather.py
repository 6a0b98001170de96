"""Multi-scale deformable attention written with Gather and arithmetic only: the form exported graphs hold by
default (no ``GridSample``, which TensorRT mis-builds: NVIDIA/TensorRT#4813).

Sampling is the reference's ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)``: pixel
coordinates ``x = loc_x * W - 0.5``. Each level's map is padded with zeros (one row and column before, two after)
and laid out as *patches*: for every top-left corner ``(y0, x0)`` in ``[-1, H] x [-1, W]``, one row holding, per
head, the ``2 x 2`` corners' ``D`` channels. A point, its coordinates clamped to ``[-1, W] x [-1, H]`` (where a
point outside reads only zeros, as the reference's), then reads one contiguous row of ``4 * D`` values at one
index rather than four rows at four indices. One Gather and one batched matrix product per call, all levels
at once.

Written for onnxruntime's CPU kernels (their profile on the R50 model): the element-wise operators work on
``[N, Lq, M, L * P]`` tensors against scalars, tensors of the same shape or constants over the last dimensions
(``[L * P]``, ``[M, L * P]``), which onnxruntime broadcasts fast, and nothing on ``2 x 2`` outer products.
Patch indices within a level are computed in float (exact: a level has fewer than 2^24 patches); a NaN location
lies outside the map.
"""
import torch
from torch.nn import functional as F

from .ms_deform_attn_ref import SpatialShapes, level_shapes


def _patches(value: torch.Tensor, h, w) -> torch.Tensor:
    """``[N, (H + 2) * (W + 2), M, 4 * D]``: the four corners (row-major: top-left, top-right, bottom-left,
    bottom-right) around every top-left corner in ``[-1, H] x [-1, W]`` of the level ``value [N, H*W, M, D]``,
    zeros outside the map."""
    n, _, heads, channels = value.shape
    grid = value.reshape(n, h, w, heads, channels)
    # Corner (dy, dx) of the patch at (y, x) is the map's pixel (y - 1 + dy, x - 1 + dx).
    corners = [F.pad(grid, (0, 0, 0, 0, 1 - dx, 1 + dx, 1 - dy, 1 + dy)) for dy in (0, 1) for dx in (0, 1)]
    return torch.stack(corners, 4).reshape(n, -1, heads, 4 * channels)


def ms_deform_attn_gather(
    value: torch.Tensor, value_spatial_shapes: SpatialShapes, value_level_start_index,
    sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Shapes and arguments as :func:`~mask_former.ops.ms_deform_attn_ref.ms_deform_attn_pytorch`
    (``value_level_start_index`` unused: the shapes determine it); differentiable through autograd.

    Returns:
        ``[N, Lq, M * D]``.
    """
    n, _, heads, channels = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    shapes = level_shapes(value_spatial_shapes)
    patches = [_patches(v, h, w) for (h, w), v in zip(shapes, value.split([h * w for h, w in shapes], 1))]
    # [N * (sum of (H + 2) * (W + 2)) * M, 4 * D]
    rows = torch.cat(patches, 1).reshape(-1, 4 * channels)
    # Coordinates in float32 at least: half precision cannot hold the indices.
    coordinates = torch.promote_types(sampling_locations.dtype, torch.float32)
    one = sampling_locations.new_ones((), dtype=coordinates)

    def per_point(sizes) -> torch.Tensor:
        """``[L * P]``: each level's value repeated for its points."""
        return torch.stack([one * size for size in sizes]).view(levels, 1).expand(levels, points).reshape(-1)

    width, height = per_point([w for _, w in shapes]), per_point([h for h, _ in shapes])
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + (h + 2) * (w + 2))
    # The patch of top-left corner (y0, x0) of level l is start_l + (y0 + 1) * (W + 2) + x0 + 1.
    first = per_point([start + w + 3 for start, (_, w) in zip(starts, shapes)])
    # [N, Lq, M, L * P] each
    x, y = sampling_locations.to(coordinates).reshape(n, num_queries, heads, levels * points, 2).unbind(-1)
    # where, not clamp: at x = -1 the gradient passes (as the reference's), and NaN goes to -1 (nowhere)
    x, y = x * width - 0.5, y * height - 0.5
    x = torch.minimum(torch.where(x >= -1, x, -1.0), width)
    y = torch.minimum(torch.where(y >= -1, y, -1.0), height)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    # Row of (image, patch, head): (image * patches + patch) * M + head; [N, 1, M, L * P] the part without x, y
    offset = (torch.arange(n, device=value.device).view(n, 1, 1, 1) * starts[-1] + first.long()) * heads
    offset = (offset + torch.arange(heads, device=value.device).view(1, 1, heads, 1)).to(torch.int32)
    patch = (y0 * (width + 2) + x0).to(torch.int32)
    index = patch * heads + offset
    # [N, Lq, M, L * P, 4] corner weights times attention weights, in the patches' corner order
    bottom = attention_weights.reshape(n, num_queries, heads, levels * points) * fy
    top = attention_weights.reshape(n, num_queries, heads, levels * points) - bottom
    weights = torch.stack([top - top * fx, top * fx, bottom - bottom * fx, bottom * fx], -1)
    # [N * Lq * M, L * P * 4, D]
    sampled = rows.index_select(0, index.reshape(-1)).view(-1, levels * points * 4, channels)
    output = torch.bmm(weights.reshape(-1, 1, levels * points * 4).to(value.dtype), sampled)
    return output.view(n, num_queries, heads * channels)
