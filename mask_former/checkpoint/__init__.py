"""Checkpoints: the loading rules of every tool, atomic saving, and conversion of other formats."""
from .atomic import AtomicCheckpointer, atomic_write
from .checkpointer import (
    CheckpointError,
    CheckpointShapeError,
    IncompleteCheckpointError,
    InferenceCheckpointer,
    MissingWeightsError,
    UnsafeCheckpointError,
    add_random_weights_flag,
    install_loading_rules,
    load_weights_only,
    random_weights_opts,
)

__all__ = [
    "AtomicCheckpointer",
    "CheckpointError",
    "CheckpointShapeError",
    "IncompleteCheckpointError",
    "InferenceCheckpointer",
    "MissingWeightsError",
    "UnsafeCheckpointError",
    "add_random_weights_flag",
    "atomic_write",
    "install_loading_rules",
    "load_weights_only",
    "random_weights_opts",
]
