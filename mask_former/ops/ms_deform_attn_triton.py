"""Multi-scale deformable attention as Triton kernels, forward and backward: the GPU path that needs no CUDA
toolkit (Triton compiles them on first use).

Imported only when used: ``triton`` is imported here, and with ``TRITON_INTERPRET=1`` set before that import
the kernels run on CPU tensors in Triton's interpreter (how the tests run them). Sampling is
``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)``: pixel coordinates
``x = loc_x * W - 0.5``, corners outside the map read zero and receive no gradient, but still carry the
location gradient of the corners inside, as in ``grid_sample``. Each program owns a tile of ``BLOCK_Q`` queries
of one (image, head) and all ``D`` channels; the value gradient is summed with atomics into a float32 (float64
for float64 values) buffer.
"""
import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from .ms_deform_attn_func import accumulation_dtype

BLOCK_Q = 16


@triton.jit
def _corner(value_ptr, base, row, m_offset, d, y, x, h, w, width, q_mask, d_mask, M: tl.constexpr, D: tl.constexpr):
    """One corner ``(y, x)`` (float pixel indices) of every query of the tile: its validity ``[BQ]``, the offsets
    of its ``D`` channels ``[BQ, BD]`` and their values ``[BQ, BD]`` (zero outside the map). The validity is
    decided on the float indices, so that NaN and huge coordinates read nothing."""
    valid = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1) & q_mask
    pixel = tl.where(valid, y, 0.0).to(tl.int64) * width + tl.where(valid, x, 0.0).to(tl.int64)
    offsets = base + ((row + pixel) * M + m_offset)[:, None] * D + d[None, :]
    mask = valid[:, None] & d_mask[None, :]
    return valid, offsets, tl.load(value_ptr + offsets, mask=mask, other=0.0)


@triton.jit
def _pixel_coordinates(locations_ptr, location_offsets, q_mask, h, w):
    x = tl.load(locations_ptr + location_offsets, mask=q_mask, other=0.0) * w - 0.5
    y = tl.load(locations_ptr + location_offsets + 1, mask=q_mask, other=0.0) * h - 0.5
    return x, y


@triton.jit
def _forward_kernel(
    value_ptr, shapes_ptr, starts_ptr, locations_ptr, weights_ptr, output_ptr,
    S, Lq, L, P,
    M: tl.constexpr, D: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):
    q_block = tl.program_id(0)
    nm = tl.program_id(1)
    n = (nm // M).to(tl.int64)
    m = nm % M
    q = q_block * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    q_mask = q < Lq
    d_mask = d < D
    base = n * S * M * D
    # [BQ]: index of (n, q, m) in the [N, Lq, M, ...] tensors
    nqm = (n * Lq + q) * M + m
    accumulator = tl.zeros((BLOCK_Q, BLOCK_D), dtype=weights_ptr.dtype.element_ty)
    for level in range(L):
        h = tl.load(shapes_ptr + 2 * level).to(weights_ptr.dtype.element_ty)
        width = tl.load(shapes_ptr + 2 * level + 1)
        w = width.to(weights_ptr.dtype.element_ty)
        row = tl.load(starts_ptr + level)
        for point in range(P):
            weight_offsets = (nqm * L + level) * P + point
            attention = tl.load(weights_ptr + weight_offsets, mask=q_mask, other=0.0)
            x, y = _pixel_coordinates(locations_ptr, 2 * weight_offsets, q_mask, h, w)
            x0 = tl.floor(x)
            y0 = tl.floor(y)
            lx = x - x0
            ly = y - y0
            _, _, v00 = _corner(value_ptr, base, row, m, d, y0, x0, h, w, width, q_mask, d_mask, M, D)
            _, _, v01 = _corner(value_ptr, base, row, m, d, y0, x0 + 1, h, w, width, q_mask, d_mask, M, D)
            _, _, v10 = _corner(value_ptr, base, row, m, d, y0 + 1, x0, h, w, width, q_mask, d_mask, M, D)
            _, _, v11 = _corner(value_ptr, base, row, m, d, y0 + 1, x0 + 1, h, w, width, q_mask, d_mask, M, D)
            top = v00.to(accumulator.dtype) * (1 - lx)[:, None] + v01.to(accumulator.dtype) * lx[:, None]
            bottom = v10.to(accumulator.dtype) * (1 - lx)[:, None] + v11.to(accumulator.dtype) * lx[:, None]
            sampled = top * (1 - ly)[:, None] + bottom * ly[:, None]
            accumulator += attention[:, None] * sampled
    output_offsets = nqm[:, None] * D + d[None, :]
    tl.store(output_ptr + output_offsets, accumulator.to(output_ptr.dtype.element_ty),
             mask=q_mask[:, None] & d_mask[None, :])


@triton.jit
def _backward_kernel(
    value_ptr, shapes_ptr, starts_ptr, locations_ptr, weights_ptr, grad_output_ptr,
    grad_value_ptr, grad_locations_ptr, grad_weights_ptr,
    S, Lq, L, P,
    M: tl.constexpr, D: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):
    q_block = tl.program_id(0)
    nm = tl.program_id(1)
    n = (nm // M).to(tl.int64)
    m = nm % M
    q = q_block * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    q_mask = q < Lq
    d_mask = d < D
    tile_mask = q_mask[:, None] & d_mask[None, :]
    base = n * S * M * D
    nqm = (n * Lq + q) * M + m
    acc_dtype = weights_ptr.dtype.element_ty
    grad_output = tl.load(grad_output_ptr + nqm[:, None] * D + d[None, :], mask=tile_mask, other=0.0).to(acc_dtype)
    for level in range(L):
        h = tl.load(shapes_ptr + 2 * level).to(acc_dtype)
        width = tl.load(shapes_ptr + 2 * level + 1)
        w = width.to(acc_dtype)
        row = tl.load(starts_ptr + level)
        for point in range(P):
            weight_offsets = (nqm * L + level) * P + point
            attention = tl.load(weights_ptr + weight_offsets, mask=q_mask, other=0.0)
            x, y = _pixel_coordinates(locations_ptr, 2 * weight_offsets, q_mask, h, w)
            x0 = tl.floor(x)
            y0 = tl.floor(y)
            lx = x - x0
            ly = y - y0
            hx = 1 - lx
            hy = 1 - ly
            ok00, at00, v00 = _corner(value_ptr, base, row, m, d, y0, x0, h, w, width, q_mask, d_mask, M, D)
            ok01, at01, v01 = _corner(value_ptr, base, row, m, d, y0, x0 + 1, h, w, width, q_mask, d_mask, M, D)
            ok10, at10, v10 = _corner(value_ptr, base, row, m, d, y0 + 1, x0, h, w, width, q_mask, d_mask, M, D)
            ok11, at11, v11 = _corner(value_ptr, base, row, m, d, y0 + 1, x0 + 1, h, w, width, q_mask, d_mask, M, D)
            v00 = v00.to(acc_dtype)
            v01 = v01.to(acc_dtype)
            v10 = v10.to(acc_dtype)
            v11 = v11.to(acc_dtype)
            top = v00 * hx[:, None] + v01 * lx[:, None]
            bottom = v10 * hx[:, None] + v11 * lx[:, None]
            sampled = top * hy[:, None] + bottom * ly[:, None]
            tl.store(grad_weights_ptr + weight_offsets, tl.sum(grad_output * sampled, 1), mask=q_mask)
            # d sampled / d x and d y, in pixels; x = loc_x * W - 0.5
            d_x = (v01 - v00) * hy[:, None] + (v11 - v10) * ly[:, None]
            d_y = (v10 - v00) * hx[:, None] + (v11 - v01) * lx[:, None]
            scaled = grad_output * attention[:, None]
            tl.store(grad_locations_ptr + 2 * weight_offsets, tl.sum(scaled * d_x, 1) * w, mask=q_mask)
            tl.store(grad_locations_ptr + 2 * weight_offsets + 1, tl.sum(scaled * d_y, 1) * h, mask=q_mask)
            d_ok = d_mask[None, :]
            tl.atomic_add(grad_value_ptr + at00, scaled * (hy * hx)[:, None], mask=ok00[:, None] & d_ok)
            tl.atomic_add(grad_value_ptr + at01, scaled * (hy * lx)[:, None], mask=ok01[:, None] & d_ok)
            tl.atomic_add(grad_value_ptr + at10, scaled * (ly * hx)[:, None], mask=ok10[:, None] & d_ok)
            tl.atomic_add(grad_value_ptr + at11, scaled * (ly * lx)[:, None], mask=ok11[:, None] & d_ok)


def _launch_shape(value: torch.Tensor, locations: torch.Tensor):
    n, s, m, d = value.shape
    _, num_queries, _, levels, points, _ = locations.shape
    grid = (triton.cdiv(num_queries, BLOCK_Q), n * m)
    return grid, dict(S=s, Lq=num_queries, L=levels, P=points, M=m, D=d, BLOCK_Q=BLOCK_Q,
                      BLOCK_D=triton.next_power_of_2(d))


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
        grid, sizes = _launch_shape(value, sampling_locations)
        _forward_kernel[grid](
            value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights, output,
            **sizes,
        )
        return output

    @staticmethod
    def backward(ctx, grad_output):
        value, shapes, starts, locations, weights = ctx.saved_tensors
        grad_value = torch.zeros(value.shape, dtype=weights.dtype, device=value.device)
        grad_locations = torch.zeros_like(locations)
        grad_weights = torch.zeros_like(weights)
        if grad_output.numel():
            grid, sizes = _launch_shape(value, locations)
            _backward_kernel[grid](
                value, shapes, starts, locations, weights, grad_output.contiguous(),
                grad_value, grad_locations, grad_weights,
                **sizes,
            )
        return grad_value.to(value.dtype), None, None, grad_locations, grad_weights


def ms_deform_attn_triton(
    value: torch.Tensor,
    value_spatial_shapes: torch.Tensor,
    value_level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention on the Triton kernels; shapes as in
    :func:`~mask_former.ops.ms_deform_attn_ref.ms_deform_attn_pytorch`, dtypes as in
    :func:`~mask_former.ops.ms_deform_attn_func.ms_deform_attn_cuda` (float64, float32, float16, bfloat16
    values; locations and weights used in float32, float64 for float64 values; the value gradient is summed in
    that dtype with atomics, so it may differ in the last bits from run to run)."""
    dtype = accumulation_dtype(value.dtype)
    return TritonMSDeformAttnFunction.apply(
        value.contiguous(),
        value_spatial_shapes.to(torch.int64).contiguous(),
        value_level_start_index.to(torch.int64).contiguous(),
        sampling_locations.to(dtype).contiguous(),
        attention_weights.to(dtype).contiguous(),
    )


INTERPRETED = isinstance(_forward_kernel, InterpretedFunction)
"""True when ``TRITON_INTERPRET=1`` was set before this module was imported: the kernels then run on CPU
tensors, in Triton's interpreter (slow: for tests)."""
