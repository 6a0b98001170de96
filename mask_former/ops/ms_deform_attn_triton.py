"""Multi-scale deformable attention as Triton kernels, forward and backward: the GPU path that needs no CUDA
toolkit (Triton compiles them on first use).

Imported only when used: ``triton`` is imported here, and with ``TRITON_INTERPRET=1`` set before that import
the kernels run on CPU tensors in Triton's interpreter (how the tests run them). Sampling is
``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)``: pixel coordinates
``x = loc_x * W - 0.5``, corners outside the map read zero and receive no gradient, but still carry the
location gradient of the corners inside, as in ``grid_sample``. Each program owns ``BLOCK_ROWS`` (image, query,
head) rows and all their ``D`` channels; the value gradient is summed with atomics into a float32 (float64 for
float64 values) buffer.
"""
import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable
from triton.runtime.interpreter import InterpretedFunction

from .ms_deform_attn_func import accumulation_dtype

TILES = {"forward": 512, "backward": 256}
"""Elements per program: ``BLOCK_ROWS`` (image, query, head) rows of all their ``D`` channels (padded to a power of
two). With 4 warps, at D = 32 ptxas (sm_90) gives the forward 72 registers and the backward 159, no spills; twice
these tiles spill."""


@triton.jit
def _rows(BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr, rows, Lq, M: tl.constexpr, S, D: tl.constexpr):
    """This program's rows ``r`` (index of (n, q, m) in the ``[N, Lq, M, ...]`` tensors), which of them exist,
    its channels, which exist, and ``n * S * M + m`` for each row (the value row of position 0 of its map)."""
    r = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    d = tl.arange(0, BLOCK_D)
    return r, r < rows, d, d < D, (r // (Lq * M)) * S * M + r % M


@triton.jit
def _level(shapes_ptr, starts_ptr, level, acc_dtype: tl.constexpr):
    """``(H, W)`` of ``level`` as floats, its integer width and where it starts among the S positions."""
    height = tl.load(shapes_ptr + 2 * level)
    width = tl.load(shapes_ptr + 2 * level + 1)
    return height.to(acc_dtype), width.to(acc_dtype), width, tl.load(starts_ptr + level)


@triton.jit
def _corner(value_ptr, value_row, start, y, x, h, w, width, r_mask, d, d_mask, M: tl.constexpr, D: tl.constexpr):
    """One corner ``(y, x)`` (float pixel indices) of every row of the tile: whether it lies on the map ``[BR]``,
    the offsets of its ``D`` channels ``[BR, BD]`` and their values ``[BR, BD]`` (zero outside the map). Decided on
    the float indices, so that NaN and huge coordinates read nothing."""
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1) & r_mask
    pixel = tl.where(inside, y, 0.0).to(tl.int64) * width + tl.where(inside, x, 0.0).to(tl.int64)
    offsets = (value_row + (start + pixel) * M)[:, None] * D + d[None, :]
    mask = inside[:, None] & d_mask[None, :]
    return inside, offsets, tl.load(value_ptr + offsets, mask=mask, other=0.0)


@triton.jit
def _point(locations_ptr, weights_ptr, r, r_mask, level, point, L, P, h, w):
    """The attention weight ``[BR]`` of one point of every row, the offset of that weight, the point's pixel
    coordinates ``x = loc_x * W - 0.5`` (and y), their floors and fractions."""
    offset = (r * L + level) * P + point
    attention = tl.load(weights_ptr + offset, mask=r_mask, other=0.0)
    x = tl.load(locations_ptr + 2 * offset, mask=r_mask, other=0.0) * w - 0.5
    y = tl.load(locations_ptr + 2 * offset + 1, mask=r_mask, other=0.0) * h - 0.5
    x0 = tl.floor(x)
    y0 = tl.floor(y)
    return attention, offset, x0, y0, x - x0, y - y0


@triton.jit
def _forward_kernel(
    value_ptr, shapes_ptr, starts_ptr, locations_ptr, weights_ptr, output_ptr,
    rows, S, Lq, L, P,
    M: tl.constexpr, D: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):
    acc_dtype: tl.constexpr = weights_ptr.dtype.element_ty
    r, r_mask, d, d_mask, value_row = _rows(BLOCK_ROWS, BLOCK_D, rows, Lq, M, S, D)
    accumulator = tl.zeros((BLOCK_ROWS, BLOCK_D), dtype=acc_dtype)
    for level in range(L):
        h, w, width, start = _level(shapes_ptr, starts_ptr, level, acc_dtype)
        for point in range(P):
            attention, _, x0, y0, lx, ly = _point(locations_ptr, weights_ptr, r, r_mask, level, point, L, P, h, w)
            _, _, v00 = _corner(value_ptr, value_row, start, y0, x0, h, w, width, r_mask, d, d_mask, M, D)
            _, _, v01 = _corner(value_ptr, value_row, start, y0, x0 + 1, h, w, width, r_mask, d, d_mask, M, D)
            _, _, v10 = _corner(value_ptr, value_row, start, y0 + 1, x0, h, w, width, r_mask, d, d_mask, M, D)
            _, _, v11 = _corner(value_ptr, value_row, start, y0 + 1, x0 + 1, h, w, width, r_mask, d, d_mask, M, D)
            top = v00.to(acc_dtype) * (1 - lx)[:, None] + v01.to(acc_dtype) * lx[:, None]
            bottom = v10.to(acc_dtype) * (1 - lx)[:, None] + v11.to(acc_dtype) * lx[:, None]
            accumulator += attention[:, None] * (top * (1 - ly)[:, None] + bottom * ly[:, None])
    tile_mask = r_mask[:, None] & d_mask[None, :]
    tl.store(output_ptr + r[:, None] * D + d[None, :], accumulator.to(output_ptr.dtype.element_ty), mask=tile_mask)


@triton.jit
def _backward_kernel(
    value_ptr, shapes_ptr, starts_ptr, locations_ptr, weights_ptr, grad_output_ptr,
    grad_value_ptr, grad_locations_ptr, grad_weights_ptr,
    rows, S, Lq, L, P,
    M: tl.constexpr, D: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):
    acc_dtype: tl.constexpr = weights_ptr.dtype.element_ty
    r, r_mask, d, d_mask, value_row = _rows(BLOCK_ROWS, BLOCK_D, rows, Lq, M, S, D)
    tile_mask = r_mask[:, None] & d_mask[None, :]
    grad_output = tl.load(grad_output_ptr + r[:, None] * D + d[None, :], mask=tile_mask, other=0.0).to(acc_dtype)
    for level in range(L):
        h, w, width, start = _level(shapes_ptr, starts_ptr, level, acc_dtype)
        for point in range(P):
            attention, offset, x0, y0, lx, ly = _point(
                locations_ptr, weights_ptr, r, r_mask, level, point, L, P, h, w
            )
            hx = 1 - lx
            hy = 1 - ly
            in00, at00, v00 = _corner(value_ptr, value_row, start, y0, x0, h, w, width, r_mask, d, d_mask, M, D)
            in01, at01, v01 = _corner(value_ptr, value_row, start, y0, x0 + 1, h, w, width, r_mask, d, d_mask, M, D)
            in10, at10, v10 = _corner(value_ptr, value_row, start, y0 + 1, x0, h, w, width, r_mask, d, d_mask, M, D)
            in11, at11, v11 = _corner(
                value_ptr, value_row, start, y0 + 1, x0 + 1, h, w, width, r_mask, d, d_mask, M, D
            )
            v00 = v00.to(acc_dtype)
            v01 = v01.to(acc_dtype)
            v10 = v10.to(acc_dtype)
            v11 = v11.to(acc_dtype)
            top = v00 * hx[:, None] + v01 * lx[:, None]
            bottom = v10 * hx[:, None] + v11 * lx[:, None]
            sampled = top * hy[:, None] + bottom * ly[:, None]
            tl.store(grad_weights_ptr + offset, tl.sum(grad_output * sampled, 1), mask=r_mask)
            # d sampled / d x and / d y, in pixels; x = loc_x * W - 0.5, so d x / d loc_x = W.
            d_x = (v01 - v00) * hy[:, None] + (v11 - v10) * ly[:, None]
            d_y = bottom - top
            scaled = grad_output * attention[:, None]
            tl.store(grad_locations_ptr + 2 * offset, tl.sum(scaled * d_x, 1) * w, mask=r_mask)
            tl.store(grad_locations_ptr + 2 * offset + 1, tl.sum(scaled * d_y, 1) * h, mask=r_mask)
            channels = d_mask[None, :]
            tl.atomic_add(grad_value_ptr + at00, scaled * (hy * hx)[:, None], mask=in00[:, None] & channels)
            tl.atomic_add(grad_value_ptr + at01, scaled * (hy * lx)[:, None], mask=in01[:, None] & channels)
            tl.atomic_add(grad_value_ptr + at10, scaled * (ly * hx)[:, None], mask=in10[:, None] & channels)
            tl.atomic_add(grad_value_ptr + at11, scaled * (ly * lx)[:, None], mask=in11[:, None] & channels)


def _launch(value: torch.Tensor, locations: torch.Tensor, tile: int):
    """The grid and the size arguments of a kernel whose programs hold ``tile`` elements."""
    n, s, m, d = value.shape
    _, num_queries, _, levels, points, _ = locations.shape
    rows = n * num_queries * m
    block_d = triton.next_power_of_2(d)
    block_rows = max(1, tile // block_d)
    sizes = dict(rows=rows, S=s, Lq=num_queries, L=levels, P=points, M=m, D=d, BLOCK_ROWS=block_rows, BLOCK_D=block_d)
    return (triton.cdiv(rows, block_rows),), sizes


class TritonMSDeformAttnFunction(torch.autograd.Function):
    """The Triton kernels' forward and backward. Saves only the inputs: the backward resamples the values.
    ``sampling_locations`` and ``attention_weights`` come in the accumulation dtype of ``value``."""

    @staticmethod
    def forward(ctx, value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights):
        ctx.save_for_backward(
            value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights
        )
        n, _, m, d = value.shape
        num_queries = sampling_locations.shape[1]
        output = value.new_empty(n, num_queries, m * d)
        if output.numel() == 0:
            return output.zero_()
        grid, sizes = _launch(value, sampling_locations, TILES["forward"])
        _forward_kernel[grid](
            value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights, output,
            **sizes,
        )
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        value, shapes, starts, locations, weights = ctx.saved_tensors
        grad_value = torch.zeros(value.shape, dtype=weights.dtype, device=value.device)
        grad_locations = torch.zeros_like(locations)
        grad_weights = torch.zeros_like(weights)
        if grad_output.numel():
            grid, sizes = _launch(value, locations, TILES["backward"])
            _backward_kernel[grid](
                value, shapes, starts, locations, weights, grad_output.contiguous(),
                grad_value, grad_locations, grad_weights,
                **sizes,
            )
        return grad_value.to(value.dtype), None, None, grad_locations, grad_weights


def ms_deform_attn_triton(*inputs: torch.Tensor) -> torch.Tensor:
    """Multi-scale deformable attention on the Triton kernels; the five tensor arguments and shapes of
    :func:`~mask_former.ops.ms_deform_attn_ref.ms_deform_attn_pytorch`, dtypes as in
    :func:`~mask_former.ops.ms_deform_attn_func.ms_deform_attn_cuda` (float64, float32, float16, bfloat16
    values; locations and weights used in float32, float64 for float64 values; the value gradient is summed in
    that dtype with atomics, so it may differ in the last bits from run to run)."""
    value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights = inputs
    dtype = accumulation_dtype(value.dtype)
    return TritonMSDeformAttnFunction.apply(
        value.contiguous(),
        value_spatial_shapes.to(value.device, torch.int64).contiguous(),
        value_level_start_index.to(value.device, torch.int64).contiguous(),
        sampling_locations.to(dtype).contiguous(),
        attention_weights.to(dtype).contiguous(),
    )


INTERPRETED = isinstance(_forward_kernel, InterpretedFunction)
"""True when ``TRITON_INTERPRET=1`` was set before this module was imported: the kernels then run on CPU
tensors, in Triton's interpreter (slow: for tests)."""
