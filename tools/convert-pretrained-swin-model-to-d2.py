#!/usr/bin/env python
"""
Convert an official Swin Transformer ImageNet checkpoint (e.g. swin_tiny_patch4_window7_224.pth,
``{"model": state_dict}``) into a .pkl for ``MODEL.WEIGHTS`` with ``D2SwinTransformer``.

Usage::

    python tools/convert-pretrained-swin-model-to-d2.py swin_tiny_patch4_window7_224.pth swin_tiny.pkl

The parameter names are kept (``D2SwinTransformer`` uses the official names; detectron2's matching
heuristics add the "backbone." prefix when loading). The ImageNet classifier ("head.*") and the
final norm ("norm.*"), which the detectron2 backbone does not have, are dropped.
"""
import sys
from typing import Dict

import numpy as np
import torch

from mask_former.checkpoint.imagenet_conversion import run_conversion

DROPPED_PREFIXES = ("head.", "norm.")


def convert_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    return {
        key: value.detach().cpu().numpy()
        for key, value in state_dict.items()
        if not key.startswith(DROPPED_PREFIXES)
    }


def load_state_dict(path: str) -> Dict[str, torch.Tensor]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path} is not an official Swin checkpoint: it has no 'model' entry")
    state_dict = checkpoint["model"]
    if not any(key.startswith("patch_embed.") for key in state_dict):
        raise ValueError(f"{path} does not look like a Swin Transformer (no 'patch_embed.*' keys)")
    return state_dict


def main(argv=None) -> int:
    return run_conversion(
        argv,
        description=__doc__.split("\n\n")[1],
        input_help="official Swin checkpoint (.pth)",
        load=load_state_dict,
        convert=convert_state_dict,
        author="third_party",
    )


if __name__ == "__main__":
    sys.exit(main())
