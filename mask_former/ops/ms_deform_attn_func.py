"""The compiled kernels of multi-scale deformable attention as one autograd Function: CUDA (extension
``mask_former._C``) and CPU (extension ``mask_former._C_cpu``), which share one signature."""
import functools
import importlib
import importlib.util
from types import ModuleType
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

EXTENSION = "mask_former._C"
CPU_EXTENSION = "mask_former._C_cpu"
BUILD_COMMANDS = {EXTENSION: "FORCE_CUDA=1 pip install -e .", CPU_EXTENSION: "pip install -e . (needs a C++ compiler)"}


@functools.lru_cache(maxsize=None)
def load_extension(name: str = EXTENSION) -> Optional[ModuleType]:
    """The compiled extension ``name``, or None when it is not built. Imported on first use: runs that never
    use a kernel never load it."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"{spec.origin} cannot be loaded ({error}); it was probably built against another torch: rebuild it "
            f"(`{BUILD_COMMANDS[name]}`), delete it, or set MASK_FORMER_DEFORM_ATTN=pytorch"
        ) from error


def _extension(name: str) -> ModuleType:
    extension = load_extension(name)
    if extension is None:
        raise RuntimeError(f"{name} is not built: build it with `{BUILD_COMMANDS[name]}`")
    return extension


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The kernel accumulates in float64 for float64 values and in float32 for all others."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class MSDeformAttnFunction(torch.autograd.Function):
    """A kernel's forward and backward; ``extension`` is the compiled module that runs them, ``inputs`` the
    arguments of :func:`ms_deform_attn_cuda` but ``deterministic``. Saves only the inputs: the backward
    resamples the values instead of keeping them. ``sampling_locations`` and ``attention_weights`` must be in
    the accumulation dtype of ``value``."""

    @staticmethod
    def forward(ctx, extension: ModuleType, deterministic: bool, *inputs: torch.Tensor) -> torch.Tensor:
        ctx.extension = extension
        ctx.deterministic = deterministic
        ctx.save_for_backward(*inputs)
        return extension.ms_deform_attn_forward(*inputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        grad_value, grad_locations, grad_weights = ctx.extension.ms_deform_attn_backward(
            *ctx.saved_tensors, grad_output.contiguous(), ctx.deterministic
        )
        return None, None, grad_value, None, None, grad_locations, grad_weights


def _run_kernel(extension: str, deterministic: bool, *inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` as the arguments of :func:`ms_deform_attn_cuda`; the locations and weights are cast to the
    accumulation dtype."""
    value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights = inputs
    dtype = accumulation_dtype(value.dtype)
    return MSDeformAttnFunction.apply(
        _extension(extension),
        deterministic,
        value,
        value_spatial_shapes,
        value_level_start_index,
        sampling_locations.to(dtype),
        attention_weights.to(dtype),
    )


def ms_deform_attn_cuda(
    value: torch.Tensor,
    value_spatial_shapes: torch.Tensor,
    value_level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    deterministic: bool = False,
) -> torch.Tensor:
    """Multi-scale deformable attention on the CUDA kernel; shapes as in
    :func:`~mask_former.ops.ms_deform_attn_ref.ms_deform_attn_pytorch`.

    ``value`` may be float64, float32, float16 or bfloat16; the output has its dtype. Locations and weights
    are used in float32 (float64 for float64 values) whatever their dtype, so that half-precision values
    (e.g. under autocast) keep sub-pixel locations; their gradients come back in their own dtype.

    Args:
        deterministic: gather ``value``'s gradient in a fixed order instead of with atomics: bit-identical
            gradients from run to run, at a cost in speed and memory.
    """
    return _run_kernel(
        EXTENSION, deterministic, value, value_spatial_shapes, value_level_start_index, sampling_locations,
        attention_weights,
    )


def ms_deform_attn_cpu(*inputs: torch.Tensor) -> torch.Tensor:
    """Multi-scale deformable attention on the fused CPU operator (``mask_former._C_cpu``); the five tensor
    arguments, shapes and dtypes of :func:`ms_deform_attn_cuda`. Samples, weights and accumulates in one pass
    without materializing the sampled values, and saves only its inputs for the backward, which is always
    deterministic (each thread owns a disjoint slice of the value gradient)."""
    return _run_kernel(CPU_EXTENSION, True, *inputs)
