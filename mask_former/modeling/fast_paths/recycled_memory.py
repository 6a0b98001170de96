"""Fast path: the post-processing's large CPU outputs written into the memory of earlier outputs that nothing refers
to any more.

Reference: a fresh tensor for each output (``Tensor.new_empty``). glibc maps every allocation above 32 MiB on its
own pages and returns them to the kernel when it is freed, so each first write to a page of a fresh ``sem_seg``
(133 MiB at 512x512, 1 GiB at 1024x2048) or instance mask stack faults, and the kernel clears the page
(``benchmarks/bench_cpu_pieces.py --pieces page_faults``).

Fast path: :func:`empty_output`, a tensor over a block of memory kept from an earlier output of the same role, once
every tensor that used that block is gone. The output's storage holds a numpy view of the block, and the block
is kept again when that view is freed, which is when the last tensor sharing the storage (the output, its views
and slices, arrays from ``.numpy()``) is: a block is never handed out while anything can read it. At most one
free block is kept per role, the larger, so that the memory held between inferences is at most one image's
outputs (:func:`kept_output_bytes`); :func:`release_output_memory` frees it. Picked by the ``recycle`` argument
(``MODEL.MASK_FORMER.TEST.RECYCLE_OUTPUT_MEMORY``), on the CPU only: other devices' allocators cache freed memory
themselves.
"""
import threading
import weakref
from typing import Dict, Sequence

import torch
from torch import Tensor

__all__ = ["empty_output", "kept_output_bytes", "recycled_tensor", "release_output_memory"]

_free: Dict[str, Tensor] = {}
# Re-entrant: a block is kept from a finalizer, which the garbage collector may run inside a locked section.
_lock = threading.RLock()


def empty_output(role: str, size: Sequence[int], *, like: Tensor, recycle: bool) -> Tensor:
    """An uninitialized output of ``size`` with ``like``'s dtype and device: :func:`recycled_tensor` where
    ``recycle`` and ``like`` is on the CPU, else the reference, ``like.new_empty(size)``."""
    if recycle and like.device.type == "cpu":
        return recycled_tensor(role, size, like.dtype)
    return like.new_empty(size)


def recycled_tensor(role: str, size: Sequence[int], dtype: torch.dtype) -> Tensor:
    """An uninitialized CPU tensor like ``torch.empty(size, dtype=dtype)``, over ``role``'s free block where it is
    large enough, else over a new block, which is kept for ``role`` once the tensor and its views are gone."""
    nbytes = torch.Size(size).numel() * dtype.itemsize
    if nbytes == 0:
        return torch.empty(size, dtype=dtype)
    with _lock:
        block = _free.pop(role, None)
    if block is None or block.numel() < nbytes:
        if block is not None:
            _keep(role, block)
        block = torch.empty(nbytes, dtype=torch.uint8)
    view = block.numpy()[:nbytes]
    weakref.finalize(view, _keep, role, block)
    return torch.from_numpy(view).view(dtype).view(size)


def _keep(role: str, block: Tensor) -> None:
    """Keep ``block`` as ``role``'s free block, unless a larger one is kept already."""
    with _lock:
        kept = _free.get(role)
        if kept is None or kept.numel() < block.numel():
            _free[role] = block


def kept_output_bytes() -> int:
    """Bytes of the free blocks kept for later outputs."""
    with _lock:
        return sum(block.numel() for block in _free.values())


def release_output_memory() -> None:
    """Free the blocks kept for later outputs (the memory of outputs still referred to stays theirs, and is kept
    when they are gone)."""
    with _lock:
        _free.clear()
