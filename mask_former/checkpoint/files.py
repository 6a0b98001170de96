"""Reading checkpoint files without running code from them, and writing them atomically.

- ``.pth`` (and any file that is not a ``.pkl``): ``torch.load(weights_only=True)``, explicitly, so
  that no torch version or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` setting makes it unsafe.
- ``.pkl`` (detectron2 model zoo, Caffe2, converted ImageNet backbones): pickles of numpy arrays,
  read by :class:`NumpyUnpickler`, which builds numpy arrays, dtypes and scalars and plain
  containers and refuses every other object before it is built.

A file that cannot be read (truncated, not a checkpoint) raises ``CheckpointError`` naming it.
"""
import codecs
import importlib
import os
import pickle
from collections import OrderedDict
from typing import IO, Any, Callable

import numpy as np
import torch

from ..errors import CheckpointError, UnsafeCheckpointError

__all__ = ["NumpyUnpickler", "atomic_write", "load_numpy_pickle", "load_weights_only"]

# numpy's array / scalar reconstruction functions, by (submodule of numpy's core, name). Pickles name
# the core "numpy.core" (numpy 1.x) or "numpy._core" (numpy 2.x); both resolve to the installed one.
NUMPY_CORE_GLOBALS = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("_multiarray_umath", "_reconstruct"),
    ("_multiarray_umath", "scalar"),
    ("numeric", "_frombuffer"),  # pickle protocol 5
}
NUMPY_CORE_MODULES = ("numpy.core", "numpy._core")
PLAIN_GLOBALS = {
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): codecs.encode,  # bytes in pickles of protocol 2 written by Python 3
    ("builtins", "bytearray"): bytearray,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


def _installed_numpy_core() -> str:
    return "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"


class NumpyUnpickler(pickle.Unpickler):
    """
    An unpickler that builds only numpy arrays, dtypes and scalars, ``OrderedDict`` and the plain
    types pickle builds itself (dict, list, tuple, str, bytes, numbers). Any other global a pickle
    names (a class, ``os.system``, ...) raises ``UnsafeCheckpointError`` naming the file and
    ``module.name``, before anything of it is called.

    Args:
        file: the open binary file.
        path: the file's name, for the messages.
    """

    def __init__(self, file: IO[bytes], path: str):
        super().__init__(file, encoding="latin1")  # pickles of Python 2 (Caffe2, Detectron)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in PLAIN_GLOBALS:
            return PLAIN_GLOBALS[(module, name)]
        core, _, submodule = module.rpartition(".")
        if core in NUMPY_CORE_MODULES and (submodule, name) in NUMPY_CORE_GLOBALS:
            return getattr(importlib.import_module(f"{_installed_numpy_core()}.{submodule}"), name)
        raise UnsafeCheckpointError(
            f"Checkpoint {self.path} refers to {module}.{name}, which is not loaded: a .pkl checkpoint may hold "
            "only numpy arrays, numbers, strings and containers of them, so that loading runs no code from the "
            "file. If you trust the file, re-save its weights as numpy arrays in a dict under 'model'."
        )


def _read(path: str, read: Callable[[IO[bytes]], Any], what: str) -> Any:
    """``read(file)`` of ``path``; every failure but a refusal becomes a ``CheckpointError`` naming it."""
    try:
        with open(path, "rb") as f:
            return read(f)
    except UnsafeCheckpointError:
        raise
    except OSError as e:
        raise CheckpointError(f"Checkpoint {path} cannot be read: {e}") from e
    # A damaged file can make an unpickler or a zip reader fail with any exception type.
    except Exception as e:
        raise CheckpointError(
            f"Checkpoint {path} is not a readable {what} (truncated or damaged?): {type(e).__name__}: {e}"
        ) from e


def load_numpy_pickle(path: str) -> Any:
    """The object of a ``.pkl`` checkpoint, read by :class:`NumpyUnpickler`."""
    return _read(path, lambda f: NumpyUnpickler(f, path).load(), "pickle of numpy arrays")


def load_weights_only(path: str) -> Any:
    """
    The object of a ``.pth`` checkpoint, read with ``torch.load(weights_only=True)``: tensors,
    numbers, strings and containers of them; no object of the file is built by running its code.

    Raises:
        UnsafeCheckpointError: the file holds other objects; the message says how to re-save it.
        CheckpointError: the file is truncated or is not a torch checkpoint.
    """

    def read(f: IO[bytes]) -> Any:
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "GLOBAL" not in str(e):  # torch names the global it refuses; other errors are damaged files
                raise
            raise UnsafeCheckpointError(
                f"Checkpoint {path} holds objects other than tensors and plain containers, which are not loaded "
                "(torch.load(weights_only=True), so that loading runs no code from the file). If you trust the "
                f"file, re-save its weights alone: torch.save({{'model': torch.load({path!r}, weights_only=False)"
                f"['model']}}, 'weights.pth').\ntorch: {e}"
            ) from e

    return _read(path, read, "torch checkpoint")


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """
    Write a file through ``write(binary_file)`` into a temporary file beside ``path``, flush it to
    disk, then rename it to ``path``: readers see either the old or the complete new file.
    """
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)

