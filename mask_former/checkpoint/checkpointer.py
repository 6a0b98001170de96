"""The checkpointer of every tool, holding every rule for reading, loading and saving checkpoints, so
that a model never runs silently with random parameters and loading never runs code from a file.

detectron2's ``DetectionCheckpointer`` itself is left as it is: these rules apply where
``MaskFormerCheckpointer`` is used (the trainer, ``train_net.py --eval-only``, the predictor and the
demo, ``tools/export_model.py``).
"""
import argparse
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Tuple

import numpy as np
import torch
from torch import nn

from ..compat import CheckpointerHooks, filter_reused_missing_keys
from ..errors import (
    CheckpointError,
    CheckpointShapeError,
    IncompleteCheckpointError,
    MissingWeightsError,
)
from .files import atomic_write, load_numpy_pickle, load_weights_only

__all__ = [
    "CLASS_HEAD_KEYS",
    "LoadReport",
    "MaskFormerCheckpointer",
    "add_random_weights_flag",
    "random_weights_opts",
]

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS_HINT = (
    "Set MODEL.WEIGHTS to a checkpoint of this model, or set MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS True "
    "(train_net.py, demo/demo.py, tools/export_model.py: --allow-random-weights) to run with randomly initialized "
    "parameters."
)
# The parameters and buffers that depend on the classes: with MODEL.MASK_FORMER.LOAD_CLASS_HEAD False they
# keep their fresh initialization (key prefixes, or whole keys).
CLASS_HEAD_KEYS = ("sem_seg_head.predictor.class_embed.", "criterion.empty_weight")


def is_class_head_key(key: str) -> bool:
    return any(key == name or (name.endswith(".") and key.startswith(name)) for name in CLASS_HEAD_KEYS)


def compact_keys(keys: Iterable[str]) -> str:
    """``["a.b.weight", "a.b.bias", "c"]`` -> ``"a.b.{bias,weight}, c"``: the keys grouped by module."""
    leaves: Dict[str, List[str]] = {}
    for key in sorted(keys):
        module, _, leaf = key.rpartition(".")
        leaves.setdefault(module, []).append(leaf)
    groups = [leaf[0] if len(leaf) == 1 else "{" + ",".join(leaf) + "}" for leaf in leaves.values()]
    return ", ".join(f"{module}.{group}" if module else group for module, group in zip(leaves, groups))


@dataclass
class LoadReport:
    """
    What one load did to each key of the model's state dict.

    Attributes:
        path: the checkpoint.
        loaded: number of keys set from the checkpoint.
        reinitialized: class-head keys left at their fresh initialization (``load_class_head=False``).
        skipped: ``(key, checkpoint shape, model shape)`` of keys with other shapes, left as they were.
        missing: keys of the model the checkpoint lacks.
        unexpected: keys of the checkpoint the model lacks.
    """

    path: str
    loaded: int
    reinitialized: List[str]
    skipped: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]
    missing: List[str]
    unexpected: List[str]

    def rows(self) -> List[Tuple[str, int, str]]:
        skipped = ", ".join(f"{key} {tuple(ckpt)}->{tuple(ours)}" for key, ckpt, ours in self.skipped)
        return [
            ("loaded", self.loaded, ""),
            ("reinitialized", len(self.reinitialized), compact_keys(self.reinitialized)),
            ("shape skipped", len(self.skipped), skipped),
            ("missing", len(self.missing), compact_keys(self.missing)),
            ("unexpected", len(self.unexpected), compact_keys(self.unexpected)),
        ]

    def table(self) -> str:
        lines = [f"{name:<14}{count:>6}  {keys}".rstrip() for name, count, keys in self.rows()]
        return "\n".join([f"Loaded checkpoint {self.path}:", *lines])


class MaskFormerCheckpointer(CheckpointerHooks):
    """
    ``DetectionCheckpointer`` (same arguments, file formats and model-zoo key matching) with the
    loading rules of mask_former (through :class:`mask_former.compat.CheckpointerHooks`).

    - Safe reading: ``.pth`` with ``torch.load(weights_only=True)``, ``.pkl`` with an unpickler that
      builds only numpy arrays and plain containers (``UnsafeCheckpointError`` otherwise); a truncated
      or damaged file is a ``CheckpointError`` naming it.
    - Strict shapes: parameters whose shapes differ from the model's raise ``CheckpointShapeError``
      naming each key, unless ``allow_shape_mismatch`` (then they are skipped, as fvcore does).
    - Inference (``for_inference``): no weights (empty path) raise ``MissingWeightsError``; missing
      or unexpected keys raise ``IncompleteCheckpointError``, unless ``allow_random_weights`` (then a
      warning). Training allows missing keys (a backbone-only checkpoint).
    - ``load_class_head=False`` (fine-tuning to other classes): the class head
      (``sem_seg_head.predictor.class_embed.*``, ``criterion.empty_weight``) keeps its fresh
      initialization and every other key of the model must load, as at inference. Resuming the run's
      own checkpoint (``resume_or_load(..., resume=True)``) loads the class head too.
    - Every load logs one table: keys loaded, reinitialized, skipped, missing and unexpected.
    - Saving writes the checkpoint and the ``last_checkpoint`` pointer atomically (``save_dir`` must be
      a local directory): a crash while saving never leaves a truncated checkpoint or a pointer to one.

    Buffers that are not persistent are not saved, so they never count as missing.

    Example::

        MaskFormerCheckpointer.from_config(cfg, model, for_inference=True).load(cfg.MODEL.WEIGHTS)
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        for_inference: bool = False,
        allow_random_weights: bool = False,
        allow_shape_mismatch: bool = False,
        load_class_head: bool = True,
        **checkpointables: Any,
    ):
        if for_inference and not load_class_head:
            raise ValueError("load_class_head=False is for fine-tuning: at inference the class head must load")
        super().__init__(model, save_dir, **checkpointables)
        self.for_inference = for_inference
        self.allow_random_weights = allow_random_weights
        self.allow_shape_mismatch = allow_shape_mismatch
        self.load_class_head = load_class_head
        self._path = "<in memory>"
        self._resuming = False

    @classmethod
    def from_config(
        cls, cfg, model: nn.Module, save_dir: str = "", *, for_inference: bool = False, **checkpointables: Any
    ) -> "MaskFormerCheckpointer":
        """The checkpointer with the rules of ``MODEL.MASK_FORMER``: ``ALLOW_RANDOM_WEIGHTS``,
        ``ALLOW_CHECKPOINT_SHAPE_MISMATCH`` and (not at inference) ``LOAD_CLASS_HEAD``."""
        options = cfg.MODEL.MASK_FORMER
        return cls(
            model,
            save_dir,
            for_inference=for_inference,
            allow_random_weights=options.ALLOW_RANDOM_WEIGHTS,
            allow_shape_mismatch=options.ALLOW_CHECKPOINT_SHAPE_MISMATCH,
            load_class_head=options.LOAD_CLASS_HEAD or for_inference,
            **checkpointables,
        )

    def load(self, path: str, *args, **kwargs) -> Dict[str, Any]:
        if not path and self.for_inference:
            self._refuse(MissingWeightsError, "No weights to load: MODEL.WEIGHTS is empty.")
        self._path = path or "<in memory>"
        return super().load(path, *args, **kwargs)

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        self._resuming = resume and self.has_checkpoint()
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._resuming = False

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        os.makedirs(self.save_dir, exist_ok=True)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        pointer = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(pointer, lambda f: f.write(last_filename_basename.encode()))

    def read_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pkl"):
            checkpoint = model_zoo_checkpoint(load_numpy_pickle(filename), filename)
        elif filename.endswith(".pyth"):
            checkpoint = pycls_checkpoint(load_weights_only(filename), filename)
        else:
            loaded = load_weights_only(filename)
            checkpoint = loaded if isinstance(loaded, dict) and "model" in loaded else {"model": loaded}
        check_weights(checkpoint["model"], filename)
        return checkpoint

    def load_weights(self, checkpoint: Dict[str, Any]):
        model_keys = self.model.state_dict().keys()
        reinitialized = []
        fine_tuning = not self.load_class_head and not self._resuming
        if fine_tuning:
            reinitialized = sorted(key for key in model_keys if is_class_head_key(key))
            weights = checkpoint["model"]
            for key in [key for key in weights if is_class_head_key(key.removeprefix("module."))]:
                del weights[key]
        incompatible = super().load_weights(checkpoint)
        skipped = {key for key, _, _ in incompatible.incorrect_shapes}
        missing = [
            key
            for key in filter_reused_missing_keys(self.model, incompatible.missing_keys)
            if key not in skipped and key not in reinitialized
        ]
        report = LoadReport(
            path=self._path,
            loaded=len(model_keys) - len(set(incompatible.missing_keys) | skipped | set(reinitialized)),
            reinitialized=reinitialized,
            skipped=incompatible.incorrect_shapes,
            missing=missing,
            unexpected=list(incompatible.unexpected_keys),
        )
        self._check(report, strict=self.for_inference or fine_tuning)
        return incompatible

    def report_incompatible_keys(self, incompatible) -> None:
        """Nothing: ``load_weights`` logs the table of the load instead of fvcore's listings."""

    def _check(self, report: LoadReport, *, strict: bool) -> None:
        """Log the table of ``report``, then apply the rules to it (``strict``: no missing or unexpected keys)."""
        complete = not (report.skipped or report.missing or report.unexpected)
        logger.log(logging.INFO if complete else logging.WARNING, report.table())
        if report.skipped and not self.allow_shape_mismatch:
            lines = "\n".join(f"  {key}: checkpoint {ckpt} vs model {ours}" for key, ckpt, ours in report.skipped)
            raise CheckpointShapeError(
                f"Checkpoint {report.path} does not fit the model: {len(report.skipped)} parameter(s) have other "
                f"shapes:\n{lines}\nCheck that the config matches the checkpoint (e.g. "
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES); to fine-tune on other classes set "
                "MODEL.MASK_FORMER.LOAD_CLASS_HEAD False (the class head is then initialized fresh), or "
                "MODEL.MASK_FORMER.ALLOW_CHECKPOINT_SHAPE_MISMATCH True to skip every parameter of another shape."
            )
        if strict and (report.missing or report.unexpected):
            listing = [f"  missing: {compact_keys(report.missing)}"] if report.missing else []
            listing += [f"  unexpected: {compact_keys(report.unexpected)}"] if report.unexpected else []
            self._refuse(
                IncompleteCheckpointError,
                f"Checkpoint {report.path} does not fit the model: {len(report.missing)} key(s) of the model are "
                f"missing from it, {len(report.unexpected)} key(s) of it are not in the model"
                + ("" if self.for_inference else " (MODEL.MASK_FORMER.LOAD_CLASS_HEAD False loads all but the class "
                   "head, from a checkpoint of the whole model)")
                + ".",
                details="\n".join(listing),
            )

    def _refuse(self, error: type, message: str, details: str = "") -> None:
        """Raise ``error``, or with ``allow_random_weights`` warn (the keys are listed in the table)."""
        if not self.allow_random_weights:
            raise error("\n".join(filter(None, [message, details, RANDOM_WEIGHTS_HINT])))
        logger.warning(
            f"{message} Running with randomly initialized parameters, as MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS is set."
        )


def model_zoo_checkpoint(data: Any, path: str) -> Dict[str, Any]:
    """A ``.pkl`` file's object as detectron2 v0.6 reads it: detectron2 model-zoo files
    (``{"model": ..., "__author__": ...}``) as they are, Caffe2 / Detectron files (``"blobs"``, or the
    weights at the top level) as weights for detectron2's name-matching heuristics."""
    if not isinstance(data, dict):
        raise CheckpointError(f"Checkpoint {path} holds a {type(data).__name__}, not a dict of weights")
    if "model" in data and "__author__" in data:
        logger.info(f"Reading a file from '{data['__author__']}'")
        return data
    weights = data.get("blobs", data)
    if not isinstance(weights, dict):
        raise CheckpointError(f"Checkpoint {path}: 'blobs' holds a {type(weights).__name__}, not a dict of weights")
    weights = {key: value for key, value in weights.items() if not key.endswith("_momentum")}
    return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}


def pycls_checkpoint(data: Any, path: str) -> Dict[str, Any]:
    """A pycls ``.pyth`` file's object as detectron2 v0.6 reads it: ``"model_state"`` by name matching."""
    if not isinstance(data, dict) or not isinstance(data.get("model_state"), dict):
        raise CheckpointError(f"Checkpoint {path}: a pycls .pyth checkpoint must hold a dict under 'model_state'")
    weights = {key: value for key, value in data["model_state"].items() if not key.endswith("num_batches_tracked")}
    return {"model": weights, "__author__": "pycls", "matching_heuristics": True}


def check_weights(weights: Any, path: str) -> None:
    """``CheckpointError`` naming the file and key unless ``weights`` maps names to tensors or arrays."""
    if not isinstance(weights, dict):
        raise CheckpointError(f"Checkpoint {path}: 'model' holds a {type(weights).__name__}, not a dict of weights")
    for key, value in weights.items():
        if not isinstance(key, str) or not isinstance(value, (torch.Tensor, np.ndarray)):
            raise CheckpointError(
                f"Checkpoint {path}: weight {key!r} is a {type(value).__name__}, not a tensor or numpy array"
            )


def add_random_weights_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--allow-random-weights`` flag of the command-line tools, see :func:`random_weights_opts`."""
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="run even when MODEL.WEIGHTS is empty or leaves parameters uninitialized "
        "(MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS True); the outputs are then meaningless",
    )


def random_weights_opts(args: argparse.Namespace) -> List[str]:
    """The config overrides that ``--allow-random-weights`` stands for (none without it)."""
    return ["MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS", "True"] if args.allow_random_weights else []
