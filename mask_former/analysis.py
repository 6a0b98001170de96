"""FLOP counting of a MaskFormer / Mask2Former network with fvcore, shared by ``tools/analyze_model.py`` and the
benchmarks' roofline figures.

fvcore counts one multiply-add as one "flop" (its ``total()``); :func:`network_flops` returns floating-point
operations, two per multiply-add, the unit in which GEMM throughput is usually quoted. Operators fvcore has no
rule for (among them the deformable attention's sampling and the elementwise ones) are not counted.
"""
from typing import Dict

import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

__all__ = ["MaskFormerNetwork", "flop_count_analysis", "network_flops"]


class MaskFormerNetwork(nn.Module):
    """The network of a ``MaskFormer`` model on a normalized, padded image batch ``[B, 3, H, W]``;
    returns the final ``(pred_logits [B, Q, K+1], pred_masks [B, Q, H/4, W/4])``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.backbone
        self.sem_seg_head = model.sem_seg_head

    def forward(self, images: torch.Tensor):
        outputs = self.sem_seg_head(self.backbone(images))
        return outputs["pred_logits"], outputs["pred_masks"]


def flop_count_analysis(model: nn.Module, batched_input: Dict) -> FlopCountAnalysis:
    """fvcore's analysis of the network of ``model`` on one input dict (``image [3, H, W]``), with its
    warnings about uncounted operators and modules silenced (:meth:`~FlopCountAnalysis.unsupported_ops` lists
    them)."""
    images = model.preprocess_images([batched_input]).tensor
    flops = FlopCountAnalysis(MaskFormerNetwork(model), images)
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    return flops


def network_flops(model: nn.Module, batched_input: Dict) -> float:
    """Floating-point operations (two per multiply-add) of the network of ``model`` (backbone, pixel decoder,
    transformer decoder; no post-processing) on one input dict, as fvcore counts them."""
    with torch.no_grad():
        return 2.0 * flop_count_analysis(model, batched_input).total()
