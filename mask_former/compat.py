"""Every private internal of detectron2, fvcore and torch that mask_former uses, in one place.

Each function says which internal it reaches, why no public API does the same, and which versions
need it, so that an upgrade of one of these libraries is checked here and nowhere else.
"""
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

__all__ = [
    "CheckpointerHooks",
    "filter_reused_missing_keys",
    "register_under_name",
    "set_local_process_group",
    "size_oblivious_export",
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


class CheckpointerHooks(DetectionCheckpointer):
    """detectron2's ``DetectionCheckpointer`` with fvcore's subclass hooks under public names.

    fvcore (0.1.5) lets a subclass change how a file is read, how its weights are loaded and how the
    outcome is reported only by overriding ``_load_file``, ``_load_model`` and ``_log_incompatible_keys``
    (private names, documented as meant for subclasses; detectron2 v0.6 overrides the first two).
    Here they call ``read_file``, ``load_weights`` and ``report_incompatible_keys``, whose defaults are
    detectron2's and fvcore's own behaviour, so that a subclass overrides public names only.
    """

    def _load_file(self, filename: str) -> Dict[str, Any]:
        return self.read_file(filename)

    def _load_model(self, checkpoint: Dict[str, Any]) -> Any:
        return self.load_weights(checkpoint)

    def _log_incompatible_keys(self, incompatible: Any) -> None:
        self.report_incompatible_keys(incompatible)

    def read_file(self, filename: str) -> Dict[str, Any]:
        """The checkpoint dict of a file, ``{"model": weights, ...}`` (detectron2's reading by default)."""
        return DetectionCheckpointer._load_file(self, filename)

    def load_weights(self, checkpoint: Dict[str, Any]) -> Any:
        """Load ``checkpoint["model"]`` into the model; returns fvcore's ``(missing_keys, unexpected_keys,
        incorrect_shapes)`` (detectron2's model-zoo key matching, then fvcore's shape check, by default)."""
        return DetectionCheckpointer._load_model(self, checkpoint)

    def report_incompatible_keys(self, incompatible: Any) -> None:
        """Report what ``load_weights`` returned (fvcore's warnings by default)."""
        DetectionCheckpointer._log_incompatible_keys(self, incompatible)


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
