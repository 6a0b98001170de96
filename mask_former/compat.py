"""Every private internal of detectron2, fvcore and torch that mask_former uses, in one place.

Each function says which internal it reaches, why no public API does the same, and which versions
need it, so that an upgrade of one of these libraries is checked here and nowhere else.
"""
from contextlib import contextmanager
from typing import Any, Iterator, List

import torch
from torch import nn

__all__ = [
    "filter_reused_missing_keys", "register_under_name", "set_local_process_group", "size_oblivious_export",
    "tensor_version",
]


def register_under_name(registry: Any, name: str, obj: Any) -> None:
    """Register ``obj`` in a detectron2 ``Registry`` under ``name`` instead of ``obj.__name__``.

    detectron2 v0.6's ``Registry.register`` always uses ``__name__``; upstream's dataset mapper names
    (``"mask_former_semantic"``, ...) are not class names. ``Registry._do_register(name, obj)`` is the
    private method that ``register`` calls, with the same duplicate check.
    """
    registry._do_register(name, obj)


def filter_reused_missing_keys(model: nn.Module, missing_keys: List[str]) -> List[str]:
    """fvcore's ``_filter_reused_missing_keys`` (fvcore 0.1.5): drop the missing keys of parameters that
    are shared with another, loaded key (tied weights), as fvcore's own missing-keys warning does. fvcore
    exposes the filter only privately; a copy here would drift from the warning it must agree with."""
    from fvcore.common.checkpoint import _filter_reused_missing_keys

    return _filter_reused_missing_keys(model, missing_keys)


def set_local_process_group(group: Any) -> None:
    """Record ``group`` (this machine's processes) as detectron2's ``comm._LOCAL_PROCESS_GROUP``.

    detectron2 v0.6 sets it only inside its own ``launch``, which asserts CUDA and uses NCCL; the CPU
    launcher (gloo) must set it for ``comm.get_local_rank`` / ``get_local_size``. Later detectron2
    versions add ``comm.create_local_process_group``, which replaces this.
    """
    from detectron2.utils import comm

    if comm._LOCAL_PROCESS_GROUP is not None:
        raise RuntimeError("detectron2's local process group is already set in this process")
    comm._LOCAL_PROCESS_GROUP = group


@contextmanager
def size_oblivious_export() -> Iterator[None]:
    """torch.export with size-oblivious shape reasoning (``torch.fx.experimental._config``,
    ``backed_size_oblivious``, torch >= 2.6): the view / contiguity checks of reshapes then hold for sizes
    of 1 too instead of guarding (and failing) on them. torch has no public switch for it yet."""
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        yield


def tensor_version(tensor: torch.Tensor) -> int:
    """The tensor's in-place version counter (``Tensor._version``, torch 1.x and 2.x): bumped by every in-place
    change, as autograd uses it to detect them. A cache keyed on it notices ``copy_`` / ``load_state_dict``;
    torch has no public accessor."""
    return tensor._version
