"""Multi-scale deformable attention.

:func:`ms_deform_attn` runs the CUDA kernel of the extension ``mask_former._C`` on CUDA tensors when the
extension is built, and the PyTorch reference otherwise; the choice and its reason are logged once.
The environment variable ``MASK_FORMER_DEFORM_ATTN`` overrides it: ``auto`` (default), ``pytorch``
(always the reference) or ``cuda`` (the kernel, or an error saying why it cannot run).
"""
import functools
import logging
import os
from typing import Callable, Dict, Optional, Tuple

import torch

from .ms_deform_attn_func import CPU_EXTENSION, EXTENSION, load_extension, ms_deform_attn_cpu, ms_deform_attn_cuda
from .ms_deform_attn_ref import ms_deform_attn_pytorch

logger = logging.getLogger(__name__)

IMPLEMENTATION_ENV = "MASK_FORMER_DEFORM_ATTN"
_deterministic = False


def set_deterministic(enabled: bool) -> None:
    """Make the CUDA kernel's backward bit-identical from run to run (no atomics; slower). It is also
    deterministic while ``torch.use_deterministic_algorithms(True)`` is in effect."""
    global _deterministic
    _deterministic = bool(enabled)


def is_deterministic() -> bool:
    return _deterministic or torch.are_deterministic_algorithms_enabled()


def _cuda_kernel(value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights):
    return ms_deform_attn_cuda(
        value,
        value_spatial_shapes,
        value_level_start_index,
        sampling_locations,
        attention_weights,
        deterministic=is_deterministic(),
    )


IMPLEMENTATIONS: Dict[str, Callable[..., torch.Tensor]] = {
    "cuda": _cuda_kernel,
    "cpu": ms_deform_attn_cpu,
    "pytorch": ms_deform_attn_pytorch,
}

# Each kernel: the device type it runs on, the extension that holds it and how to build that.
KERNELS: Dict[str, Tuple[str, str, str]] = {
    "cuda": ("cuda", EXTENSION, "FORCE_CUDA=1 pip install -e ."),
    "cpu": ("cpu", CPU_EXTENSION, "pip install -e . with a C++ compiler"),
}


NO_KERNEL_IMAGE = "no kernel image is available"
"""CUDA's message when a binary holds no code for the GPU's architecture (nor PTX it can compile)."""


def _run_cuda_probe(device: torch.device) -> None:
    """One tiny call of the CUDA kernel on ``device``, synchronized so that a launch error surfaces."""
    value = torch.zeros(1, 1, 1, 1, device=device)
    shapes = torch.ones(1, 2, dtype=torch.long, device=device)
    start = torch.zeros(1, dtype=torch.long, device=device)
    locations = torch.full((1, 1, 1, 1, 1, 2), 0.5, device=device)
    _cuda_kernel(value, shapes, start, locations, torch.ones(1, 1, 1, 1, 1, device=device))
    torch.cuda.synchronize(device)


@functools.lru_cache(maxsize=None)
def cuda_kernel_image_problem(device: torch.device) -> Optional[str]:
    """Why the built CUDA kernel cannot run on the GPU ``device`` (it was compiled for other
    architectures), or None when it can. Probed once per device."""
    try:
        _run_cuda_probe(device)
    except RuntimeError as error:
        if NO_KERNEL_IMAGE not in str(error):
            raise
        major, minor = torch.cuda.get_device_capability(device)
        return (
            f"{EXTENSION} has no kernel image for {torch.cuda.get_device_name(device)} (sm_{major}{minor}): rebuild "
            f"it with TORCH_CUDA_ARCH_LIST={major}.{minor} FORCE_CUDA=1 pip install -e ."
        )
    return None


def kernel_unavailable_reason(kernel: str, value: torch.Tensor) -> Optional[str]:
    """Why ``kernel`` (a key of :data:`KERNELS`) cannot run on ``value``, or None when it can."""
    device, extension, build = KERNELS[kernel]
    if value.device.type != device:
        return f"the inputs are on {value.device.type}"
    if load_extension(extension) is None:
        return f"the extension {extension} is not built ({build})"
    if kernel == "cuda":
        return cuda_kernel_image_problem(value.device)
    return None


def choose_implementation(value: torch.Tensor) -> Tuple[str, str]:
    """The implementation :func:`ms_deform_attn` uses for ``value``, and why."""
    requested = os.environ.get(IMPLEMENTATION_ENV, "auto")
    if torch.jit.is_tracing() or torch.compiler.is_exporting():
        return "pytorch", "exporting (an exported graph holds standard operators only)"
    if requested == "pytorch":
        return "pytorch", f"{IMPLEMENTATION_ENV}=pytorch"
    if requested != "auto" and requested not in KERNELS:
        raise ValueError(f"{IMPLEMENTATION_ENV}={requested!r}: expected auto, pytorch, {', '.join(KERNELS)}")
    on_device = [name for name, (device, _, _) in KERNELS.items() if device == value.device.type]
    kernel = requested if requested != "auto" else next(iter(on_device), None)
    if kernel is None:
        return "pytorch", f"no kernel for {value.device.type} inputs"
    unavailable = kernel_unavailable_reason(kernel, value)
    if unavailable is None:
        return kernel, f"{value.device.type.upper()} inputs and {KERNELS[kernel][1]} is built"
    if requested == kernel:
        raise RuntimeError(f"{IMPLEMENTATION_ENV}={kernel} but {unavailable}")
    return "pytorch", unavailable


@functools.lru_cache(maxsize=None)
def _log_choice(name: str, reason: str) -> None:
    logger.info("ms_deform_attn: using the %s implementation (%s)", name, reason)


def ms_deform_attn(
    value: torch.Tensor,
    value_spatial_shapes: torch.Tensor,
    value_level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """
    Args:
        value: ``[N, S, M, D]``, all levels' maps flattened (``S = sum(H_l * W_l)``), ``M`` heads of ``D``
            channels.
        value_spatial_shapes: ``[L, 2]`` int64, ``(H_l, W_l)`` of each level.
        value_level_start_index: ``[L]`` int64, where each level starts in ``S``.
        sampling_locations: ``[N, Lq, M, L, P, 2]``, ``(x, y)`` in ``[0, 1]`` relative to each level's map,
            sampled bilinearly as ``grid_sample(align_corners=False)``; outside the map reads zeros.
        attention_weights: ``[N, Lq, M, L, P]``.

    Returns:
        ``[N, Lq, M * D]``, in ``value``'s dtype.
    """
    name, reason = choose_implementation(value)
    _log_choice(name, reason)
    return IMPLEMENTATIONS[name](
        value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights
    )


__all__ = [
    "IMPLEMENTATION_ENV",
    "choose_implementation",
    "cuda_kernel_image_problem",
    "is_deterministic",
    "ms_deform_attn",
    "ms_deform_attn_cpu",
    "ms_deform_attn_cuda",
    "ms_deform_attn_pytorch",
    "set_deterministic",
]
