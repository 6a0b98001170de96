"""Rules for loading checkpoints, so that a model never runs silently with random parameters.

Importing ``mask_former`` installs two rules into every detectron2 ``DetectionCheckpointer``:

- Strict shapes: fvcore's ``Checkpointer`` skips parameters whose shapes differ from the model's
  with a warning, which leaves a silently half-initialized model. For MaskFormer models such a
  checkpoint raises ``CheckpointShapeError`` listing every mismatched key instead; fine-tuning on
  a different number of classes sets ``MODEL.MASK_FORMER.ALLOW_CHECKPOINT_SHAPE_MISMATCH True``
  to keep fvcore's skip-with-warning behaviour. Other models are not affected.
- Safe reading: ``.pth`` files (and any other that is not a ``.pkl`` / ``.pyth``) are read with
  ``torch.load(weights_only=True)``, explicitly, so that loading runs no code from the file
  whatever the torch version or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` say. Model-zoo and ImageNet
  ``.pkl`` files (pickles of numpy arrays) are read as detectron2 reads them.

``InferenceCheckpointer`` adds the rule of evaluation and the demo: the weights must set every
parameter and buffer the model saves and nothing else, and empty weights are an error, unless
``MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS`` accepts them. Training keeps fvcore's rule (a
backbone-only checkpoint is allowed; the keys it lacks are listed once in a warning).
"""
import functools
import logging
import argparse
import pickle
from typing import Dict, List

import torch
from fvcore.common.checkpoint import get_missing_parameters_message, get_unexpected_parameters_message
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer

from ..compat import filter_reused_missing_keys
from ..errors import (
    CheckpointError,
    CheckpointShapeError,
    IncompleteCheckpointError,
    MissingWeightsError,
    UnsafeCheckpointError,
)

__all__ = [
    "CheckpointError",
    "CheckpointShapeError",
    "IncompleteCheckpointError",
    "InferenceCheckpointer",
    "MissingWeightsError",
    "UnsafeCheckpointError",
    "add_random_weights_flag",
    "install_loading_rules",
    "load_weights_only",
    "random_weights_opts",
]

RANDOM_WEIGHTS_HINT = (
    "Set MODEL.WEIGHTS to a checkpoint of this model, or set MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS True "
    "(train_net.py, demo/demo.py: --allow-random-weights) to run with randomly initialized parameters."
)
# Files detectron2 reads with its own readers (numpy pickles of the model zoo / Caffe2, pycls).
DETECTRON2_FORMATS = (".pkl", ".pyth")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def check_shapes(model: nn.Module, incorrect_shapes, path) -> None:
    """Raise ``CheckpointShapeError`` naming each ``(key, checkpoint shape, model shape)``, except for the keys
    that the model lists in ``checkpoint_shape_mismatch_allowed`` (the video model's class head, which an image
    checkpoint initializes with other classes: those keep their initialization, as fvcore skips them)."""
    allowed = set(getattr(model, "checkpoint_shape_mismatch_allowed", ()))
    incorrect_shapes = [entry for entry in incorrect_shapes if entry[0] not in allowed]
    if not incorrect_shapes or getattr(model, "allow_checkpoint_shape_mismatch", True):
        return
    lines = "\n".join(f"  {key}: checkpoint {tuple(ckpt)} vs model {tuple(ours)}" for key, ckpt, ours in incorrect_shapes)
    raise CheckpointShapeError(
        f"Checkpoint {path or '<in memory>'} does not fit the model: {len(incorrect_shapes)} parameter(s) have other "
        f"shapes:\n{lines}\nCheck that the config matches the checkpoint (e.g. MODEL.SEM_SEG_HEAD.NUM_CLASSES), "
        "or set MODEL.MASK_FORMER.ALLOW_CHECKPOINT_SHAPE_MISMATCH True to skip these parameters when fine-tuning."
    )


def load_weights_only(path: str) -> Dict:
    """
    A ``.pth`` checkpoint read with ``torch.load(weights_only=True)``: tensors, numbers, strings
    and containers of them; no object of the file is built by running its code.

    Raises:
        UnsafeCheckpointError: the file holds other objects; the message says how to re-save it.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"Checkpoint {path} holds objects other than tensors and plain containers, which are not loaded "
            "(torch.load(weights_only=True), so that loading runs no code from the file). If you trust the file, "
            f"re-save its weights alone: torch.save({{'model': torch.load({path!r}, weights_only=False)['model']}}, "
            f"'weights.pth').\ntorch: {e}"
        ) from e


def install_loading_rules() -> None:
    """Wrap ``DetectionCheckpointer.load`` / ``_load_file`` / ``_load_model`` once (idempotent)."""
    if getattr(DetectionCheckpointer, "_mask_former_rules", False):
        return
    original_load = DetectionCheckpointer.load
    original_load_file = DetectionCheckpointer._load_file
    original_load_model = DetectionCheckpointer._load_model

    @functools.wraps(original_load)
    def load(self, path, *args, **kwargs):
        self._mask_former_path = path
        return original_load(self, path, *args, **kwargs)

    @functools.wraps(original_load_file)
    def _load_file(self, filename):
        if filename.endswith(DETECTRON2_FORMATS):
            return original_load_file(self, filename)
        loaded = load_weights_only(filename)
        return loaded if "model" in loaded else {"model": loaded}

    @functools.wraps(original_load_model)
    def _load_model(self, checkpoint):
        incompatible = original_load_model(self, checkpoint)
        check_shapes(_unwrap(self.model), incompatible.incorrect_shapes, getattr(self, "_mask_former_path", None))
        return incompatible

    DetectionCheckpointer.load = load
    DetectionCheckpointer._load_file = _load_file
    DetectionCheckpointer._load_model = _load_model
    DetectionCheckpointer._mask_former_rules = True


class InferenceCheckpointer(DetectionCheckpointer):
    """
    ``DetectionCheckpointer`` for evaluation and the demo, where random parameters would give
    meaningless outputs silently: loading raises ``IncompleteCheckpointError`` listing the keys
    when the checkpoint leaves saved parameters or buffers of the model uninitialized or holds
    keys the model lacks, and ``MissingWeightsError`` when there are no weights at all (empty
    path, and with ``resume_or_load(resume=True)`` no checkpoint in ``save_dir`` either).
    Buffers that are not persistent are not saved, so they never count as missing.

    With ``allow_random_weights`` (``MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS``) these are warnings.

    Example::

        InferenceCheckpointer(model, allow_random_weights=False).load(cfg.MODEL.WEIGHTS)
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, allow_random_weights: bool = False, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.allow_random_weights = allow_random_weights

    def load(self, path, *args, **kwargs):
        if not path:
            self._refuse(MissingWeightsError, "No weights to load: MODEL.WEIGHTS is empty.")
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        missing = filter_reused_missing_keys(self.model, incompatible.missing_keys)
        unexpected = incompatible.unexpected_keys
        if missing or unexpected:
            listing = [get_missing_parameters_message(missing)] if missing else []
            listing += [get_unexpected_parameters_message(unexpected)] if unexpected else []
            path = getattr(self, "_mask_former_path", None) or "<in memory>"
            self._refuse(
                IncompleteCheckpointError,
                f"Checkpoint {path} does not fit the model: {len(missing)} key(s) of the model are missing from "
                f"it, {len(unexpected)} key(s) of it are not in the model.",
                details="\n".join(listing),
            )
        return incompatible

    def _refuse(self, error: type, message: str, details: str = "") -> None:
        """Raise ``error``, or with ``allow_random_weights`` warn (the keys are then listed by fvcore)."""
        if not self.allow_random_weights:
            raise error("\n".join(filter(None, [message, details, RANDOM_WEIGHTS_HINT])))
        logging.getLogger(__name__).warning(
            f"{message} Running with randomly initialized parameters, as MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS is set."
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
