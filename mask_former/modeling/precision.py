"""Reduced-precision inference: ``MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE``.

The network (backbone, pixel decoder, transformer decoder) runs under ``torch.autocast`` in the chosen dtype
on the model's device; its final predictions come back in float32, so that the post-processing (semantic,
panoptic and instance inference) is the float32 one whatever the dtype.
"""
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from ..errors import ConfigError

AUTOCAST_DTYPE_KEY = "MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE"
AUTOCAST_DTYPES: Dict[str, Optional[torch.dtype]] = {"": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The values of the key: ``""`` runs in float32 (no autocast)."""


def autocast_dtype(name: str) -> Optional[torch.dtype]:
    """The dtype of a value of ``AUTOCAST_DTYPE``, None for float32.

    Raises:
        ConfigError: ``name`` is not one of :data:`AUTOCAST_DTYPES`.
    """
    if name not in AUTOCAST_DTYPES:
        choices = ", ".join(repr(key) for key in AUTOCAST_DTYPES)
        raise ConfigError(f"{AUTOCAST_DTYPE_KEY}={name!r}: expected one of {choices}")
    return AUTOCAST_DTYPES[name]


def run_autocast(dtype: Optional[torch.dtype], device: torch.device, network: Callable[..., Dict], *args) -> Dict:
    """``network(*args)`` under ``torch.autocast(device.type, dtype)`` (plainly when ``dtype`` is None), with its
    top-level floating outputs (``pred_logits [B, Q, K+1]``, ``pred_masks [B, Q, H, W]``) cast to float32.
    Nested outputs (``aux_outputs``, which inference does not read) keep the dtype they were computed in."""
    if dtype is None:
        return network(*args)
    with torch.autocast(device.type, dtype=dtype):
        outputs = network(*args)
    return {
        key: value.float() if isinstance(value, Tensor) and value.is_floating_point() else value
        for key, value in outputs.items()
    }
