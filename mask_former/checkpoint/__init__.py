"""Checkpoints: ``MaskFormerCheckpointer`` (every loading rule, safe reading, atomic saving), the
``--allow-random-weights`` flag of the tools, and conversion of other formats."""
from ..errors import (
    CheckpointError,
    CheckpointShapeError,
    IncompleteCheckpointError,
    MissingWeightsError,
    UnsafeCheckpointError,
)
from .checkpointer import (
    CLASS_HEAD_KEYS,
    LoadReport,
    MaskFormerCheckpointer,
    add_random_weights_flag,
    random_weights_opts,
)
from .files import NumpyUnpickler, atomic_write, load_numpy_pickle, load_weights_only

__all__ = [
    "CLASS_HEAD_KEYS",
    "CheckpointError",
    "CheckpointShapeError",
    "IncompleteCheckpointError",
    "LoadReport",
    "MaskFormerCheckpointer",
    "MissingWeightsError",
    "NumpyUnpickler",
    "UnsafeCheckpointError",
    "add_random_weights_flag",
    "atomic_write",
    "load_numpy_pickle",
    "load_weights_only",
    "random_weights_opts",
]
