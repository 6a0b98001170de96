"""Padding of the mappers' outputs: to ``INPUT.SIZE_DIVISIBILITY``, and the padding mask of the large-scale-jitter
mappers."""
from typing import Callable, Dict, Tuple, Union

import numpy as np
import torch
from fvcore.transforms.transform import TransformList

__all__ = [
    "IMAGE_PAD_VALUE",
    "PADDINGS",
    "check_padding",
    "image_to_tensor",
    "pad_to_divisibility",
    "padding_mask",
]

# Images are padded with this value (as upstream, and detectron2's FixedSizeCrop): close to the
# pixel mean, so that after normalisation the padding looks like an average pixel.
IMAGE_PAD_VALUE = 128


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``[H, W, C]`` array to a contiguous ``[C, H, W]`` tensor of the same dtype."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _pad_to_fixed_size(tensor: torch.Tensor, size: int, value: Union[int, bool]) -> torch.Tensor:
    # Upstream's F.pad(tensor, [0, size - W, 0, size - H]): a negative amount cuts.
    height, width = tensor.shape[-2:]
    padded = tensor.new_full((*tensor.shape[:-2], size, size), value)
    padded[..., : min(height, size), : min(width, size)] = tensor[..., :size, :size]
    return padded


def _pad_to_multiple(tensor: torch.Tensor, size_divisibility: int, value: Union[int, bool]) -> torch.Tensor:
    height, width = tensor.shape[-2:]
    padded_height = -(-height // size_divisibility) * size_divisibility
    padded_width = -(-width // size_divisibility) * size_divisibility
    padded = tensor.new_full((*tensor.shape[:-2], padded_height, padded_width), value)
    padded[..., :height, :width] = tensor
    return padded


# The ways to pad to cfg.INPUT.SIZE_DIVISIBILITY, named by cfg.INPUT.SIZE_DIVISIBILITY_PADDING.
PADDINGS: Dict[str, Callable[[torch.Tensor, int, Union[int, bool]], torch.Tensor]] = {
    "fixed": _pad_to_fixed_size,
    "multiple": _pad_to_multiple,
}


def check_padding(padding: str) -> None:
    """Raise a ValueError naming the config key unless ``padding`` is a key of :data:`PADDINGS`."""
    if padding not in PADDINGS:
        raise ValueError(f"INPUT.SIZE_DIVISIBILITY_PADDING={padding!r} is not one of {sorted(PADDINGS)}")


def pad_to_divisibility(
    tensor: torch.Tensor, size_divisibility: int, value: Union[int, bool], padding: str = "fixed"
) -> torch.Tensor:
    """Pad the last two (spatial) dims at the bottom and right (no padding if ``size_divisibility`` <= 0).

    Args:
        tensor: ``[..., H, W]``.
        size_divisibility: ``cfg.INPUT.SIZE_DIVISIBILITY``.
        value: the fill value.
        padding: "fixed" (upstream): to exactly ``size_divisibility`` on both sides, cutting a larger tensor as
            upstream does (the upstream configs crop to that size first); "multiple": up to the next multiples
            of ``size_divisibility``, never cutting.

    Returns:
        ``[..., H', W']``, same dtype.
    """
    check_padding(padding)
    if size_divisibility <= 0:
        return tensor
    return PADDINGS[padding](tensor, size_divisibility, value)


def padding_mask(transforms: TransformList, image_shape: Tuple[int, ...]) -> np.ndarray:
    """Where ``transforms`` padded the image: a map of ones goes through them, and detectron2 pads label maps
    with 0 (v0.6) or 255 (later versions), never 1.

    Args:
        transforms: the transforms applied to the image.
        image_shape: shape of the image before ``transforms``.

    Returns:
        bool ``[H', W']``, True on the padding.
    """
    return transforms.apply_segmentation(np.ones(image_shape[:2], dtype=np.uint8)) != 1
