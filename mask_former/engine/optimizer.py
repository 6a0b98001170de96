"""The optimizer of MaskFormer / Mask2Former training: AdamW or SGD with per-parameter groups."""
import itertools
from typing import Any, Dict, List, Type

import torch
from detectron2.solver.build import maybe_add_gradient_clipping
from torch import nn

__all__ = ["NORM_MODULE_TYPES", "ZERO_DECAY_PARAM_NAMES", "build_optimizer", "get_param_groups"]

NORM_MODULE_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
"""Modules whose parameters get ``SOLVER.WEIGHT_DECAY_NORM`` (detectron2's NaiveSyncBatchNorm and
FrozenBatchNorm2d are covered: the first subclasses BatchNorm2d, the second has no parameters)."""

ZERO_DECAY_PARAM_NAMES = ("relative_position_bias_table", "absolute_pos_embed")
"""Parameters whose name contains one of these (Swin's position tables) get no weight decay, as in
both upstream projects; other position embeddings (such as the deformable encoder's
``level_embed``) get ``SOLVER.WEIGHT_DECAY``, as upstream."""

OPTIMIZERS: Dict[str, Type[torch.optim.Optimizer]] = {"SGD": torch.optim.SGD, "ADAMW": torch.optim.AdamW}
"""``SOLVER.OPTIMIZER`` -> optimizer class."""


def _param_hyperparams(cfg, module_name: str, module: nn.Module, param_name: str) -> Dict[str, float]:
    lr = cfg.SOLVER.BASE_LR
    if "backbone" in module_name:
        lr *= cfg.SOLVER.BACKBONE_MULTIPLIER
    weight_decay = cfg.SOLVER.WEIGHT_DECAY
    # Upstream's order: a later rule overrides an earlier one.
    if any(name in param_name for name in ZERO_DECAY_PARAM_NAMES):
        weight_decay = 0.0
    if isinstance(module, NORM_MODULE_TYPES):
        weight_decay = cfg.SOLVER.WEIGHT_DECAY_NORM
    if isinstance(module, nn.Embedding):
        weight_decay = cfg.SOLVER.WEIGHT_DECAY_EMBED
    return {"lr": lr, "weight_decay": weight_decay}


def get_param_groups(cfg, model: nn.Module) -> List[Dict[str, Any]]:
    """
    One parameter group per trainable parameter (each counted once), with:

    - ``lr``: ``SOLVER.BASE_LR``, times ``SOLVER.BACKBONE_MULTIPLIER`` inside modules whose name
      contains "backbone";
    - ``weight_decay``: ``SOLVER.WEIGHT_DECAY``; 0 for the Swin position tables named in
      ``ZERO_DECAY_PARAM_NAMES``; ``SOLVER.WEIGHT_DECAY_NORM`` for normalization layers;
      ``SOLVER.WEIGHT_DECAY_EMBED`` for ``nn.Embedding`` weights.

    These are the groups of both upstream projects' ``Trainer.build_optimizer`` (identical in
    MaskFormer v1 and Mask2Former), parameter by parameter.
    """
    groups = []
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            groups.append({"params": [param], **_param_hyperparams(cfg, module_name, module, param_name)})
    return groups


def _with_full_model_gradient_clipping(optimizer_type: Type[torch.optim.Optimizer], max_norm: float):
    """A subclass of ``optimizer_type`` that clips the norm of all gradients together before each
    step (detectron2 only clips per parameter)."""

    class FullModelGradientClippingOptimizer(optimizer_type):
        def step(self, closure=None):
            all_params = itertools.chain(*[group["params"] for group in self.param_groups])
            torch.nn.utils.clip_grad_norm_(all_params, max_norm)
            return super().step(closure=closure)

    FullModelGradientClippingOptimizer.__name__ = f"FullModelGradientClipping{optimizer_type.__name__}"
    return FullModelGradientClippingOptimizer


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """
    The optimizer ``SOLVER.OPTIMIZER`` ("ADAMW" or "SGD" with ``SOLVER.MOMENTUM``) over
    :func:`get_param_groups`, with gradient clipping as ``SOLVER.CLIP_GRADIENTS`` says:
    ``CLIP_TYPE`` "full_model" clips the norm of all gradients together to ``CLIP_VALUE``, the
    other types ("value", "norm") are detectron2's per-parameter clipping.
    """
    name = cfg.SOLVER.OPTIMIZER
    if name not in OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER={name!r} is not one of {sorted(OPTIMIZERS)}")
    optimizer_type = OPTIMIZERS[name]
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.CLIP_TYPE == "full_model":
        if clip.ENABLED and clip.CLIP_VALUE > 0.0:
            optimizer_type = _with_full_model_gradient_clipping(optimizer_type, clip.CLIP_VALUE)
    else:
        optimizer_type = maybe_add_gradient_clipping(cfg, optimizer_type)
    kwargs = {"momentum": cfg.SOLVER.MOMENTUM} if name == "SGD" else {}
    return optimizer_type(get_param_groups(cfg, model), lr=cfg.SOLVER.BASE_LR, **kwargs)
