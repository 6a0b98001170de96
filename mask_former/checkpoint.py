"""Strict shape checking when a checkpoint is loaded into a MaskFormer model.

fvcore's ``Checkpointer`` (under detectron2's ``DetectionCheckpointer``) skips parameters whose
shapes differ from the model's with a warning, which leaves a silently half-initialized model.
Importing ``mask_former`` wraps ``DetectionCheckpointer._load_model`` so that, for MaskFormer
models, such a checkpoint raises an error listing every mismatched key instead. Fine-tuning on
a different number of classes sets ``MODEL.MASK_FORMER.ALLOW_CHECKPOINT_SHAPE_MISMATCH True``
to keep fvcore's skip-with-warning behaviour. Other models are not affected.
"""
import functools

from torch import nn

from detectron2.checkpoint import DetectionCheckpointer


class CheckpointShapeError(ValueError):
    pass


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def check_shapes(model: nn.Module, incorrect_shapes, path) -> None:
    """Raise ``CheckpointShapeError`` naming each ``(key, checkpoint shape, model shape)``."""
    if not incorrect_shapes or getattr(model, "allow_checkpoint_shape_mismatch", True):
        return
    lines = "\n".join(f"  {key}: checkpoint {tuple(ckpt)} vs model {tuple(ours)}" for key, ckpt, ours in incorrect_shapes)
    raise CheckpointShapeError(
        f"Checkpoint {path or '<in memory>'} does not fit the model: {len(incorrect_shapes)} parameter(s) have other "
        f"shapes:\n{lines}\nCheck that the config matches the checkpoint (e.g. MODEL.SEM_SEG_HEAD.NUM_CLASSES), "
        "or set MODEL.MASK_FORMER.ALLOW_CHECKPOINT_SHAPE_MISMATCH True to skip these parameters when fine-tuning."
    )


def install_shape_check() -> None:
    """Wrap ``DetectionCheckpointer.load`` / ``_load_model`` once (idempotent)."""
    if getattr(DetectionCheckpointer, "_mask_former_shape_check", False):
        return
    original_load = DetectionCheckpointer.load
    original_load_model = DetectionCheckpointer._load_model

    @functools.wraps(original_load)
    def load(self, path, *args, **kwargs):
        self._mask_former_path = path
        return original_load(self, path, *args, **kwargs)

    @functools.wraps(original_load_model)
    def _load_model(self, checkpoint):
        incompatible = original_load_model(self, checkpoint)
        check_shapes(_unwrap(self.model), incompatible.incorrect_shapes, getattr(self, "_mask_former_path", None))
        return incompatible

    DetectionCheckpointer.load = load
    DetectionCheckpointer._load_model = _load_model
    DetectionCheckpointer._mask_former_shape_check = True
