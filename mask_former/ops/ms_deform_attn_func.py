"""The CUDA kernel of multi-scale deformable attention (extension ``mask_former._C``) as an autograd
Function."""
import functools
import importlib
import importlib.util
from types import ModuleType
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

EXTENSION = "mask_former._C"


@functools.lru_cache(maxsize=None)
def load_extension() -> Optional[ModuleType]:
    """The compiled extension, or None when it is not built. Imported on first use: runs that never pass
    CUDA tensors never load it."""
    spec = importlib.util.find_spec(EXTENSION)
    if spec is None:
        return None
    try:
        return importlib.import_module(EXTENSION)
    except ImportError as error:
        raise ImportError(
            f"{spec.origin} cannot be loaded ({error}); it was probably built against another torch: rebuild it "
            f"(`FORCE_CUDA=1 pip install -e .`), delete it, or set MASK_FORMER_DEFORM_ATTN=pytorch"
        ) from error


def _extension() -> ModuleType:
    extension = load_extension()
    if extension is None:
        raise RuntimeError(f"{EXTENSION} is not built: build it with `FORCE_CUDA=1 pip install -e .`")
    return extension


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The kernel accumulates in float64 for float64 values and in float32 for all others."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class MSDeformAttnFunction(torch.autograd.Function):
    """The kernel's forward and backward. ``sampling_locations`` and ``attention_weights`` must be in the
    accumulation dtype of ``value`` (see :func:`ms_deform_attn_cuda`)."""

    @staticmethod
    def forward(
        ctx,
        value: torch.Tensor,
        value_spatial_shapes: torch.Tensor,
        value_level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
        deterministic: bool,
    ) -> torch.Tensor:
        ctx.deterministic = deterministic
        ctx.save_for_backward(
            value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights
        )
        return _extension().ms_deform_attn_forward(
            value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        grad_value, grad_locations, grad_weights = _extension().ms_deform_attn_backward(
            *ctx.saved_tensors, grad_output.contiguous(), ctx.deterministic
        )
        return grad_value, None, None, grad_locations, grad_weights, None


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
    dtype = accumulation_dtype(value.dtype)
    return MSDeformAttnFunction.apply(
        value,
        value_spatial_shapes,
        value_level_start_index,
        sampling_locations.to(dtype),
        attention_weights.to(dtype),
        deterministic,
    )
