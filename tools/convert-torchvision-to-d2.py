#!/usr/bin/env python
"""
Convert a torchvision ResNet checkpoint (a state dict, e.g. ``torchvision.models.resnet50``'s)
into detectron2's ResNet naming, as a .pkl for ``MODEL.WEIGHTS``.

Usage::

    python tools/convert-torchvision-to-d2.py R-50.pth R-50.pkl

The .pkl holds ``{"model": {name: numpy array}, "__author__": "torchvision",
"matching_heuristics": True}``; use it with ``MODEL.PIXEL_MEAN [123.675, 116.280, 103.530]``,
``MODEL.PIXEL_STD [58.395, 57.120, 57.375]``, ``INPUT.FORMAT "RGB"`` and
``MODEL.RESNETS.STRIDE_IN_1X1 False`` (torchvision's normalization and stride placement).
"""
import re
import sys
from typing import Dict

import numpy as np
import torch

from mask_former.checkpoint.imagenet_conversion import run_conversion

# (pattern, replacement), applied in order to every key.
RENAMES = (
    (r"^layer(\d)", lambda m: f"res{int(m.group(1)) + 1}"),
    (r"\.bn(\d)\.", lambda m: f".conv{m.group(1)}.norm."),
    (r"\.downsample\.0\.", lambda m: ".shortcut."),
    (r"\.downsample\.1\.", lambda m: ".shortcut.norm."),
)


def convert_key(key: str) -> str:
    """detectron2's name of a torchvision ResNet parameter, e.g. "layer1.0.bn1.weight" ->
    "res2.0.conv1.norm.weight", "conv1.weight" -> "stem.conv1.weight"."""
    if not key.startswith("layer"):
        key = "stem." + key
    for pattern, replacement in RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def convert_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    """The backbone's tensors under detectron2's names; the ImageNet classifier ("fc.*") is dropped."""
    return {
        convert_key(key): value.detach().cpu().numpy() for key, value in state_dict.items() if not key.startswith("fc.")
    }


def load_state_dict(path: str) -> Dict[str, torch.Tensor]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = checkpoint.get("state_dict", checkpoint.get("model", checkpoint))
    if not any(key.startswith("layer1.") for key in state_dict):
        raise ValueError(f"{path} does not look like a torchvision ResNet state dict (no 'layer1.*' keys)")
    return state_dict


def main(argv=None) -> int:
    return run_conversion(
        argv,
        description=__doc__.split("\n\n")[1],
        input_help="torchvision ResNet checkpoint (.pth)",
        load=load_state_dict,
        convert=convert_state_dict,
        author="torchvision",
    )


if __name__ == "__main__":
    sys.exit(main())
