"""Fast path: the model's linear layers in CPU inference, float32 or bfloat16 autocast, on oneDNN's matrix product.

Reference: ``F.linear`` (``nn.Linear.forward``), which torch's x86 builds run on MKL's sgemm. Fast path:
:func:`onednn_linear`, the same product on oneDNN (``torch.ops.mkldnn._linear_pointwise``, the operator torch's
own compiler puts in place of frozen linear layers), whose AVX-512 kernels the convolutions already run on. On
the project's AMD Zen 4 VM it ran the encoder's shapes 1.07x-1.38x faster than MKL, and ``sem_seg``'s products
about 1.4x (``benchmarks/bench_cpu_pieces.py --pieces linear_layers semantic_bands``): MKL takes slower code
paths on CPUs that are not Intel's. Equal up to float rounding (another blocking of the sums). Picked by
:func:`uses_onednn_linear`; the model's layers are :class:`Linear` (an ``nn.Linear``: the same parameters and
checkpoint keys).

Under the CPU's bfloat16 autocast (``MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE: bfloat16``) autocast's ``F.linear``
already runs on oneDNN, but as ``addmm``: the bias is first copied into every row of the output, which the product
then adds to. :func:`onednn_linear` casts the operands to bfloat16 as autocast does and adds the bias inside the
product: the same values (equal on the project's VM), the network about 3% faster there
(``benchmarks/bench_fast_paths_cpu.py --fast-path onednn_linear MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE bfloat16``).

The post-processing's ``sem_seg`` products (``[K, Q] x [Q, pixels]``, a sum over only a hundred queries, where
MKL reaches about half its peak) take :func:`mm_into`, on oneDNN where :func:`takes_onednn` (reference:
``torch.mm``).
"""
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .graph_capture import eager_cpu_inference

__all__ = [
    "ONEDNN_BFLOAT16_SUPPORTED", "ONEDNN_LINEAR_AVAILABLE", "Linear", "mm_into", "onednn_dtype", "onednn_linear",
    "takes_onednn", "uses_onednn_linear",
]

ONEDNN_LINEAR_AVAILABLE = (
    torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
)
"""oneDNN's linear operator is built into torch and this is an x86 CPU with AVX2 or AVX-512 (elsewhere, on Arm
for one, oneDNN's float32 product is not known to be the faster)."""


ONEDNN_BFLOAT16_SUPPORTED = (
    torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported")
    and torch.ops.mkldnn._is_mkldnn_bf16_supported()
)
"""oneDNN runs bfloat16 products on this CPU (AVX-512 with or without its BF16 instructions, AMX); autocast's
bfloat16 ``F.linear`` runs on oneDNN there too."""


def onednn_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype in which :func:`onednn_linear` may run on ``x``, autograd and export aside, or None: where
    :data:`ONEDNN_LINEAR_AVAILABLE`, on the CPU, float32 outside autocast, and bfloat16 under the CPU's bfloat16
    autocast (whose ``F.linear`` casts to bfloat16 the same way) where :data:`ONEDNN_BFLOAT16_SUPPORTED`."""
    if not ONEDNN_LINEAR_AVAILABLE or x.device.type != "cpu":
        return None
    if not torch.is_autocast_enabled("cpu"):
        return torch.float32 if x.dtype == torch.float32 else None
    autocast_bfloat16 = torch.get_autocast_dtype("cpu") == torch.bfloat16 and ONEDNN_BFLOAT16_SUPPORTED
    return torch.bfloat16 if autocast_bfloat16 and x.dtype in (torch.float32, torch.bfloat16) else None


def takes_onednn(x: Tensor) -> bool:
    """Whether :func:`onednn_linear` may run on ``x`` in float32 (see :func:`onednn_dtype`)."""
    return onednn_dtype(x) == torch.float32


def uses_onednn_linear(module: nn.Module, x: Tensor) -> bool:
    """Whether ``module`` runs its linear products on ``x`` through :func:`onednn_linear`: CPU inference (eval
    mode, no autograd, no graph captured for export) where :func:`onednn_dtype` is not None."""
    return eager_cpu_inference(module, x) and onednn_dtype(x) is not None


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor = None) -> Tensor:
    """``F.linear(x, weight, bias)`` on oneDNN: ``[..., in]`` x ``[out, in]`` (+ ``[out]``) -> ``[..., out]``,
    contiguous. CPU tensors, no autograd; under the CPU's bfloat16 autocast, cast to bfloat16 first as autocast
    casts ``F.linear``'s arguments (the bias is added in the product instead of copied into the output first).
    A weight that is not dense, neither its rows nor its columns contiguous (a block of a band's columns,
    transposed, in :func:`mm_into`), is copied dense first: oneDNN reads one about a thousand times slower."""
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    if not (weight.is_contiguous() or weight.t().is_contiguous()):
        weight = weight.t().contiguous().t()
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class Linear(nn.Linear):
    """``nn.Linear`` whose CPU inference in float32, or under bfloat16 autocast, runs :func:`onednn_linear` (see
    :func:`uses_onednn_linear`); ``F.linear`` otherwise."""

    def forward(self, x: Tensor) -> Tensor:
        if uses_onednn_linear(self, x):
            return onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def mm_into(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    """``torch.mm(a, b, out=out)``: ``[M, K] x [K, N]`` into ``out [M, N]`` (any strides). Where both inputs
    :func:`takes_onednn` and need no gradient, on oneDNN, then copied into ``out`` (oneDNN's operator makes its
    own output)."""
    if takes_onednn(a) and takes_onednn(b) and not (a.requires_grad or b.requires_grad):
        return out.copy_(onednn_linear(a, b.t()))
    return torch.mm(a, b, out=out)
