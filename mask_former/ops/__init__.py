"""Multi-scale deformable attention.

:func:`ms_deform_attn` runs, on CUDA tensors, the CUDA kernel of the extension ``mask_former._C`` when it is
built and runs on the GPU, else the Triton kernel (compiled on first use, no CUDA toolkit needed); on CPU
tensors the fused operator of ``mask_former._C_cpu`` when built; the PyTorch reference otherwise. The choice
and its reason are logged once. The environment variable ``MASK_FORMER_DEFORM_ATTN`` overrides it: ``auto``
(default), ``pytorch`` (always the reference), or a kernel, ``cuda``, ``triton`` or ``cpu`` (that kernel, or an
error saying why it cannot run). ``triton`` runs CPU tensors too when ``TRITON_INTERPRET=1`` was set before
Triton was imported (its interpreter; slow, for tests).

Before a kernel is trusted on a (device, dtype), it is compared, forward and backward, with the
reference on a small random case (:mod:`.self_check`, milliseconds); a kernel that differs or fails is
reported as an ERROR with the figures and the reference runs instead from then on.
``MASK_FORMER_DEFORM_ATTN_SELF_CHECK=0`` turns the check off.

While a graph is exported (``torch.onnx``, ``torch.export``, ``torch.jit.trace``) the standard-operator forms
run: by default :func:`ms_deform_attn_gather` (Gather and arithmetic), or the reference's ``grid_sample``
inside :func:`export_form` ``("grid-sample")``.
"""
import contextlib
import functools
import importlib
import importlib.util
import logging
import os
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch

from ..layers.graph_capture import capturing_graph
from .ms_deform_attn_func import CPU_EXTENSION, EXTENSION, load_extension, ms_deform_attn_cpu, ms_deform_attn_cuda
from .ms_deform_attn_gather import ms_deform_attn_gather
from .ms_deform_attn_ref import ms_deform_attn_pytorch
from .self_check import TOLERANCES, relative_differences

logger = logging.getLogger(__name__)

IMPLEMENTATION_ENV = "MASK_FORMER_DEFORM_ATTN"
SELF_CHECK_ENV = "MASK_FORMER_DEFORM_ATTN_SELF_CHECK"
_deterministic = False


def set_deterministic(enabled: bool) -> None:
    """Make the CUDA kernel's backward bit-identical from run to run (no atomics; slower). It is also
    deterministic while ``torch.use_deterministic_algorithms(True)`` is in effect."""
    global _deterministic
    _deterministic = bool(enabled)


def is_deterministic() -> bool:
    return _deterministic or torch.are_deterministic_algorithms_enabled()


def _cuda_kernel(*inputs: torch.Tensor) -> torch.Tensor:
    return ms_deform_attn_cuda(*inputs, deterministic=is_deterministic())


def _triton_kernel(*inputs: torch.Tensor) -> torch.Tensor:
    from .ms_deform_attn_triton import ms_deform_attn_triton  # imports triton: only where it runs

    return ms_deform_attn_triton(*inputs)


IMPLEMENTATIONS: Dict[str, Callable[..., torch.Tensor]] = {
    "cuda": _cuda_kernel,
    "triton": _triton_kernel,
    "cpu": ms_deform_attn_cpu,
    "pytorch": ms_deform_attn_pytorch,
    "gather": ms_deform_attn_gather,
}

KERNELS: Dict[str, str] = {"cuda": "cuda", "triton": "cuda", "cpu": "cpu"}
"""Each kernel and the device type ``auto`` runs it on, in order of preference."""

# The compiled kernels: the extension that holds each and how to build it.
EXTENSIONS: Dict[str, Tuple[str, str]] = {
    "cuda": (EXTENSION, "FORCE_CUDA=1 pip install -e ."),
    "cpu": (CPU_EXTENSION, "pip install -e . with a C++ compiler"),
}

EXPORT_FORMS: Dict[str, str] = {"gather": "gather", "grid-sample": "pytorch"}
"""``tools/export_model.py --deform-attn`` -> the implementation an exported graph holds: the four bilinear
corners gathered with Gather and arithmetic (default; TensorRT mis-builds GridSample, NVIDIA/TensorRT#4813),
or the reference's ``grid_sample`` (ONNX GridSample)."""
_export_form = "gather"


@contextlib.contextmanager
def export_form(form: str) -> Iterator[None]:
    """Within it, graphs being exported hold the deformable attention as ``form`` (a key of :data:`EXPORT_FORMS`)."""
    global _export_form
    if form not in EXPORT_FORMS:
        raise ValueError(f"deformable attention export form {form!r}: expected one of {', '.join(EXPORT_FORMS)}")
    previous, _export_form = _export_form, form
    try:
        yield
    finally:
        _export_form = previous


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


def _device_problem(kernel: str, value: torch.Tensor) -> Optional[str]:
    if value.device.type != KERNELS[kernel]:
        return f"the inputs are on {value.device.type}"
    extension, build = EXTENSIONS[kernel]
    if load_extension(extension) is None:
        return f"the extension {extension} is not built ({build})"
    return None


def _cuda_problem(value: torch.Tensor) -> Optional[str]:
    return _device_problem("cuda", value) or cuda_kernel_image_problem(value.device)


def _cpu_problem(value: torch.Tensor) -> Optional[str]:
    return _device_problem("cpu", value)


@functools.lru_cache(maxsize=None)
def triton_interpreted() -> Optional[bool]:
    """Whether the Triton kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` was set before they were
    first imported); None when Triton is not installed."""
    if importlib.util.find_spec("triton") is None:
        return None
    return importlib.import_module(f"{__name__}.ms_deform_attn_triton").INTERPRETED


def _triton_problem(value: torch.Tensor) -> Optional[str]:
    interpreted = triton_interpreted()
    if interpreted is None:
        return "Triton is not installed (it comes with torch's CUDA builds)"
    if is_deterministic() and value.requires_grad and torch.is_grad_enabled():
        return (
            "deterministic mode is on and the Triton kernel sums the value gradient with atomics (the CUDA "
            "kernel of mask_former._C has a deterministic mode)"
        )
    if value.device.type == "cuda" or (interpreted and value.device.type == "cpu"):
        return None
    return f"the inputs are on {value.device.type} (Triton runs CPU tensors in its interpreter: TRITON_INTERPRET=1)"


UNAVAILABLE: Dict[str, Callable[[torch.Tensor], Optional[str]]] = {
    "cuda": _cuda_problem,
    "triton": _triton_problem,
    "cpu": _cpu_problem,
}
"""``kernel -> why it cannot run on value, or None``."""

READY: Dict[str, str] = {
    "cuda": f"CUDA inputs and {EXTENSION} is built",
    "triton": "Triton compiles its kernel on first use",
    "cpu": f"CPU inputs and {CPU_EXTENSION} is built",
}


def kernel_unavailable_reason(kernel: str, value: torch.Tensor) -> Optional[str]:
    """Why ``kernel`` (a key of :data:`KERNELS`) cannot run on ``value``, or None when it can."""
    return UNAVAILABLE[kernel](value)


def self_check_enabled() -> bool:
    return os.environ.get(SELF_CHECK_ENV, "1") != "0"


@functools.lru_cache(maxsize=None)
def kernel_self_check(kernel: str, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Why ``kernel`` must not be trusted on ``device`` in ``dtype`` (it differs from the reference beyond
    :data:`~.self_check.TOLERANCES`, or fails), or None when it matches. Run once per arguments; a failure is
    logged once, as an ERROR with the figures."""
    what = f"the {kernel} kernel on {device} {str(dtype).replace('torch.', '')}"
    try:
        tolerance = TOLERANCES[dtype]
        differences = relative_differences(IMPLEMENTATIONS[kernel], device, dtype)
    except Exception as error:  # any failure of the kernel (compilation included) means: do not use it
        problem = f"{what} failed its self-check ({type(error).__name__}: {error})"
    else:
        figures = ", ".join(f"{name} {difference:.2e}" for name, difference in differences.items())
        if all(difference <= tolerance for difference in differences.values()):
            return None
        problem = (
            f"{what} differs from the PyTorch reference (largest difference relative to the largest value: "
            f"{figures}; tolerance {tolerance:.0e})"
        )
    logger.error("ms_deform_attn: %s: using the PyTorch reference instead (%s=0 skips the check)", problem,
                 SELF_CHECK_ENV)
    return problem


def _checked(kernel: str, reason: str, value: torch.Tensor) -> Tuple[str, str]:
    if not self_check_enabled():
        return kernel, f"{reason}; not self-checked ({SELF_CHECK_ENV}=0)"
    problem = kernel_self_check(kernel, value.device, value.dtype)
    if problem is not None:
        return "pytorch", problem
    return kernel, f"{reason}; self-checked against the reference"


def choose_implementation(value: torch.Tensor) -> Tuple[str, str]:
    """The implementation :func:`ms_deform_attn` uses for ``value``, and why."""
    requested = os.environ.get(IMPLEMENTATION_ENV, "auto")
    if capturing_graph():
        return EXPORT_FORMS[_export_form], f"exporting (standard operators only), --deform-attn {_export_form}"
    if requested == "pytorch":
        return "pytorch", f"{IMPLEMENTATION_ENV}=pytorch"
    if requested != "auto" and requested not in KERNELS:
        raise ValueError(f"{IMPLEMENTATION_ENV}={requested!r}: expected auto, pytorch, {', '.join(KERNELS)}")
    candidates = [requested] if requested != "auto" else [k for k, d in KERNELS.items() if d == value.device.type]
    if not candidates:
        return "pytorch", f"no kernel for {value.device.type} inputs"
    problems = []
    for kernel in candidates:
        unavailable = kernel_unavailable_reason(kernel, value)
        if unavailable is None:
            return _checked(kernel, "; ".join(problems + [READY[kernel]]), value)
        problems.append(unavailable)
    if requested != "auto":
        raise RuntimeError(f"{IMPLEMENTATION_ENV}={requested} but {problems[0]}")
    return "pytorch", "; ".join(problems)


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
    "EXPORT_FORMS",
    "IMPLEMENTATION_ENV",
    "SELF_CHECK_ENV",
    "choose_implementation",
    "cuda_kernel_image_problem",
    "export_form",
    "is_deterministic",
    "ms_deform_attn",
    "ms_deform_attn_cpu",
    "ms_deform_attn_cuda",
    "ms_deform_attn_gather",
    "ms_deform_attn_pytorch",
    "set_deterministic",
]
