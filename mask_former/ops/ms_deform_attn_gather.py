"""Multi-scale deformable attention written with Gather and arithmetic only: the form exported graphs hold by
default (no ``GridSample``, which TensorRT mis-builds: NVIDIA/TensorRT#4813).

Sampling is the reference's ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)``: pixel
coordinates ``x = loc_x * W - 0.5``, the four corners around each point gathered as rows of ``D`` channels from
the flattened values, corners outside the map weighted zero (read at index 0), then each query's ``P * 4``
weighted corners summed by one batched matrix product per level.
"""
import torch

from .ms_deform_attn_ref import SpatialShapes, level_shapes


def _corners(coordinate: torch.Tensor, size):
    """The two integer corners around pixel coordinates ``[...]``, their bilinear weights and whether they lie
    inside ``[0, size)``: three ``[..., 2]`` tensors. NaN coordinates lie nowhere."""
    low = coordinate.floor()
    corners = torch.stack([low, low + 1], -1)
    weights = torch.stack([low + 1 - coordinate, coordinate - low], -1)
    inside = (corners >= 0) & (corners <= size - 1)
    return corners, weights, inside


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
    n, total, heads, channels = value.shape
    _, num_queries, _, _, points, _ = sampling_locations.shape
    # Row (n * S + s) * M + m of value [N, S, M, D] holds the D channels of head m at position s of image n.
    rows = value.reshape(-1, channels)
    image = torch.arange(n, device=value.device).view(n, 1, 1, 1, 1, 1)
    head = torch.arange(heads, device=value.device).view(1, 1, heads, 1, 1, 1)
    one = sampling_locations.new_ones(())
    output = None
    start = 0
    for level, (h, w) in enumerate(level_shapes(value_spatial_shapes)):
        # [N, Lq, M, P]
        x = sampling_locations[:, :, :, level, :, 0] * (one * w) - 0.5
        y = sampling_locations[:, :, :, level, :, 1] * (one * h) - 0.5
        corner_x, weight_x, inside_x = _corners(x, one * w)
        corner_y, weight_y, inside_y = _corners(y, one * h)
        # [N, Lq, M, P, 2 (y), 2 (x)]
        inside = inside_y[..., :, None] & inside_x[..., None, :]
        pixel = corner_y[..., :, None].long() * w + corner_x[..., None, :].long()
        index = (image * total + start + torch.where(inside, pixel, 0)) * heads + head
        bilinear = torch.where(inside, weight_y[..., :, None] * weight_x[..., None, :], 0.0)
        weights = bilinear * attention_weights[:, :, :, level, :, None, None]
        # [N * Lq * M, P * 4, D]
        sampled = rows.index_select(0, index.reshape(-1)).view(-1, points * 4, channels)
        contribution = torch.bmm(weights.reshape(-1, 1, points * 4).to(value.dtype), sampled)
        output = contribution if output is None else output + contribution
        start = start + h * w
    return output.view(n, num_queries, heads * channels)
