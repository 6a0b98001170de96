"""Multi-scale deformable attention written with Gather and arithmetic only: the form exported graphs hold by
default (no ``GridSample``, which TensorRT mis-builds: NVIDIA/TensorRT#4813).

Sampling is the reference's ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)``: pixel
coordinates ``x = loc_x * W - 0.5``. Each level's map is padded with one ring of zeros and laid out as *patches*:
for every top-left corner ``(y0, x0)`` in ``[-1, H-1] x [-1, W-1]``, one row holding, per head, the ``2 x 2``
corners' ``D`` channels. A point then reads one contiguous row of ``4 * D`` values at one index (rather than
four rows at four indices computed by broadcasting over the corners); corners outside the map read the zero
ring, and a point whose coordinate lies outside ``(-1, W)`` (or NaN) is moved to ``-1``, where it reads zeros
with weight 1 and the map's first pixel with weight 0. One Gather and one batched matrix product per call,
over all levels at once. Written for onnxruntime's CPU kernels: every element-wise operator works on
``[N, Lq, M, L, P]`` tensors broadcast against per-level constants, nothing on ``2 x 2`` outer products.
"""
import torch
from torch.nn import functional as F

from .ms_deform_attn_ref import SpatialShapes, level_shapes


def _patches(value: torch.Tensor, h, w) -> torch.Tensor:
    """``[N, (H + 1) * (W + 1), M, 4 * D]``: the four corners (row-major: top-left, top-right, bottom-left,
    bottom-right) around every top-left corner in ``[-1, H-1] x [-1, W-1]`` of the level ``value [N, H*W, M, D]``,
    zeros outside the map."""
    n, _, heads, channels = value.shape
    padded = F.pad(value.reshape(n, h, w, heads, channels), (0, 0, 0, 0, 1, 1, 1, 1))
    corners = [padded[:, dy : dy + h + 1, dx : dx + w + 1] for dy in (0, 1) for dx in (0, 1)]
    return torch.stack(corners, 4).reshape(n, -1, heads, 4 * channels)


def ms_deform_attn_gather(
    value: torch.Tensor,
    value_spatial_shapes: SpatialShapes,
    value_level_start_index,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
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
    # [N * (sum of (H + 1) * (W + 1)) * M, 4 * D]
    rows = torch.cat(patches, 1).reshape(-1, 4 * channels)
    one = sampling_locations.new_ones((), dtype=torch.promote_types(sampling_locations.dtype, torch.float32))
    # Per-level constants [L, 1]: width, height, patch-grid width and the level's first patch.
    width = torch.stack([one * w for _, w in shapes]).view(levels, 1)
    height = torch.stack([one * h for h, _ in shapes]).view(levels, 1)
    patch_starts = [0]
    for h, w in shapes:
        patch_starts.append(patch_starts[-1] + (h + 1) * (w + 1))
    # The patch of top-left corner (y0, x0) of level l: start_l + (y0 + 1) * (W + 1) + x0 + 1.
    first = torch.stack([one * (s + w + 2) for s, (_, w) in zip(patch_starts, shapes)]).view(levels, 1)
    # Coordinates in float32 at least: half precision cannot hold the indices.
    locations = sampling_locations.to(torch.promote_types(sampling_locations.dtype, torch.float32))
    x = locations[..., 0] * width - 0.5
    y = locations[..., 1] * height - 0.5
    x = torch.where((x >= -1) & (x < width), x, -1.0)
    y = torch.where((y >= -1) & (y < height), y, -1.0)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    # [N, Lq, M, L, P]: index of the patch within the image (exact in float: a level has fewer than 2^24 patches)
    patch = (y0 * (width + 1) + x0 + first).to(torch.int32)
    image = torch.arange(n, dtype=torch.int32, device=value.device).view(n, 1, 1, 1, 1)
    head = torch.arange(heads, dtype=torch.int32, device=value.device).view(1, 1, heads, 1, 1)
    index = (image * patch_starts[-1] + patch) * heads + head
    # [N, Lq, M, L, P, 4] corner weights times attention weights, in the patches' corner order
    bottom = attention_weights * fy
    top = attention_weights - bottom
    weights = torch.stack([top - top * fx, top * fx, bottom - bottom * fx, bottom * fx], -1)
    # [N * Lq * M, L * P * 4, D]
    sampled = rows.index_select(0, index.reshape(-1)).view(-1, levels * points * 4, channels)
    output = torch.bmm(weights.reshape(-1, 1, levels * points * 4).to(value.dtype), sampled)
    return output.view(n, num_queries, heads * channels)
