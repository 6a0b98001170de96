"""Pieces shared by the transformer decoders: config reading, output packing, resizing."""
from typing import Dict, List, Optional, Tuple

import fvcore.nn.weight_init as weight_init
from torch import Tensor, nn
from torch.nn import functional as F

from detectron2.layers import Conv2d


def decoder_config(cfg, in_channels: int, mask_classification: bool) -> Dict:
    mf = cfg.MODEL.MASK_FORMER
    return {
        "in_channels": in_channels,
        "mask_classification": mask_classification,
        "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        "hidden_dim": mf.HIDDEN_DIM,
        "num_queries": mf.NUM_OBJECT_QUERIES,
        "nheads": mf.NHEADS,
        "dim_feedforward": mf.DIM_FEEDFORWARD,
        "pre_norm": mf.PRE_NORM,
        "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
        "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
    }


def input_projection(in_channels: int, hidden_dim: int, enforce: bool) -> nn.Module:
    """A 1x1 conv to ``hidden_dim``, or identity when the widths already agree (and not ``enforce``)."""
    if in_channels == hidden_dim and not enforce:
        return nn.Sequential()
    proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
    weight_init.c2_xavier_fill(proj)
    return proj


def pack_outputs(classes: Optional[List[Tensor]], masks: List[Tensor]) -> Dict:
    """The last layer's ``pred_logits`` / ``pred_masks`` and the earlier layers' as ``aux_outputs``."""
    out = {"pred_masks": masks[-1]}
    if classes is None:
        out["aux_outputs"] = [{"pred_masks": m} for m in masks[:-1]]
    else:
        out["pred_logits"] = classes[-1]
        out["aux_outputs"] = [{"pred_logits": c, "pred_masks": m} for c, m in zip(classes[:-1], masks[:-1])]
    return out


def resize_bilinear(maps: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resizing (``align_corners=False``) of the last two dimensions of ``[N, C, ..., H, W]`` maps
    (image ``[B, Q, H, W]`` or video ``[B, Q, T, H, W]`` masks and features) to ``size``; each ``H x W`` map is
    resized alone, as ``F.interpolate`` does the channels of a 4-d input."""
    resized = F.interpolate(maps.flatten(0, -4), size=size, mode="bilinear", align_corners=False)
    return resized.view(*maps.shape[:-2], *resized.shape[-2:])
