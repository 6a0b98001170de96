"""A kernel against the PyTorch reference on a small random case, forward and backward: what
:func:`mask_former.ops.choose_implementation` runs once per (kernel, device, dtype) before it trusts a kernel."""
from typing import Callable, Dict

import torch

from .ms_deform_attn_ref import ms_deform_attn_pytorch

LEVELS = [(5, 7), (3, 4), (1, 2)]
CHANNELS = 32  # per head, as in Mask2Former (256 channels, 8 heads): the kernels' main path
TOLERANCES = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
"""Largest difference allowed, relative to the largest value of each tensor (cancellations in the location
gradients make elementwise relative error meaningless near zero). About 100x the errors of a correct kernel."""
COMPARED = ["output", "grad_value", "grad_sampling_locations", "grad_attention_weights"]


def _case(device: torch.device, dtype: torch.dtype, channels: int = CHANNELS):
    """``(inputs, grad_output)``, drawn in float64 on the CPU from a generator of their own (the global random
    state is left alone), some locations outside the maps, then moved to ``device`` and ``dtype``."""
    generator = torch.Generator().manual_seed(0)
    batch, queries, heads, points = 2, 10, 2, 3
    shapes = torch.tensor(LEVELS, dtype=torch.int64)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    value = torch.randn(batch, int(areas.sum()), heads, channels, generator=generator, dtype=torch.float64)
    locations = torch.rand(batch, queries, heads, len(LEVELS), points, 2, generator=generator, dtype=torch.float64)
    weights = torch.rand(batch, queries, heads, len(LEVELS), points, generator=generator, dtype=torch.float64)
    grad_output = torch.randn(batch, queries, heads * channels, generator=generator, dtype=torch.float64)
    floats = [value, locations * 1.2 - 0.1, weights, grad_output]
    value, locations, weights, grad_output = [tensor.to(device, dtype) for tensor in floats]
    return (value, shapes.to(device), starts.to(device), locations, weights), grad_output


def _forward_backward(kernel: Callable, inputs, grad_output):
    value, shapes, starts, locations, weights = inputs
    leaves = [tensor.detach().requires_grad_() for tensor in (value, locations, weights)]
    output = kernel(leaves[0], shapes, starts, leaves[1], leaves[2])
    output.backward(grad_output)
    return [output.detach()] + [leaf.grad for leaf in leaves]


def relative_differences(kernel: Callable, device: torch.device, dtype: torch.dtype) -> Dict[str, float]:
    """``{name: max |kernel - reference| / max |reference|}`` for the output and the three gradients (names in
    :data:`COMPARED`), ``kernel`` run in ``dtype`` on ``device`` and the reference in float64 on the CPU (exact
    and deterministic: grid_sample's CUDA backward is not) on the same rounded inputs. Runs with gradients on and
    autocast off, whatever the caller's mode."""
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
        inputs, grad_output = _case(device, dtype)
        results = _forward_backward(kernel, inputs, grad_output)
        as_double = [tensor.cpu().double() if tensor.is_floating_point() else tensor.cpu() for tensor in inputs]
        expected = _forward_backward(ms_deform_attn_pytorch, as_double, grad_output.cpu().double())
    differences = {}
    for name, actual, wanted in zip(COMPARED, results, expected):
        if actual is None or actual.shape != wanted.shape:
            differences[name] = float("inf")
            continue
        scale = float(wanted.abs().max())
        # NaN compares False: a NaN anywhere must count as a failure, hence nan_to_num to inf.
        difference = float((actual.cpu().double() - wanted).abs().nan_to_num(nan=float("inf")).max())
        differences[name] = difference / scale if scale > 0 else difference
    return differences
