"""Augmentations of video clips, as upstream Mask2Former's video project builds them: some are drawn
once per clip (``*_by_clip`` resize, ``flip_by_clip``), the others once per frame.

Upstream makes its resize and flip clip-consistent with a counter inside the augmentation (a new draw
every ``SAMPLING_FRAME_NUM`` calls). Here a :class:`ClipLevel` augmentation is drawn on the first
frame of each clip by :func:`augment_clip` and its transform reused for the other frames: the same
draws in the same order (every frame of a video has the same size, so the transform fits them all).
"""
from typing import Iterator, List, Sequence, Tuple

import numpy as np
from detectron2.data import transforms as T

from .augmentations import build_flip

__all__ = ["ClipLevel", "augment_clip", "build_clip_augmentations"]

# INPUT.AUGMENTATIONS: name -> the per-frame augmentation, in the order upstream applies them.
_PHOTOMETRIC_AND_ROTATION = {
    "brightness": lambda: T.RandomBrightness(0.9, 1.1),
    "contrast": lambda: T.RandomContrast(0.9, 1.1),
    "saturation": lambda: T.RandomSaturation(0.9, 1.1),
    "rotation": lambda: T.RandomRotation(
        [-15, 15], expand=False, center=[(0.4, 0.4), (0.6, 0.6)], sample_style="range"
    ),
}
_BY_CLIP = "_by_clip"


class ClipLevel(T.Augmentation):
    """Marks ``augmentation`` as drawn once per clip (see :func:`augment_clip`)."""

    def __init__(self, augmentation: T.Augmentation):
        super().__init__()
        self.augmentation = augmentation
        self.input_args = augmentation.input_args

    def get_transform(self, *args) -> T.Transform:
        return self.augmentation.get_transform(*args)

    def __repr__(self) -> str:
        return f"ClipLevel({self.augmentation!r})"


def augment_clip(
    frames: Sequence[np.ndarray], augmentations: Sequence[T.Augmentation]
) -> Iterator[Tuple[np.ndarray, T.TransformList]]:
    """Augment the frames of a clip in order: a :class:`ClipLevel` augmentation is drawn on the first
    frame and its transform reused; the others are drawn on every frame.

    Args:
        frames: ``[H, W, C]`` uint8 images, all of one size.
        augmentations: applied in order to each frame.

    Yields:
        (augmented image, the transforms applied to it), per frame.
    """
    clip_transforms = {}
    for image in frames:
        aug_input = T.AugInput(image)
        transforms = []
        for index, augmentation in enumerate(augmentations):
            if index in clip_transforms:
                transform = clip_transforms[index]
                aug_input.transform(transform)
            else:
                transform = augmentation(aug_input)
                if isinstance(augmentation, ClipLevel):
                    clip_transforms[index] = transform
            transforms.append(transform)
        yield aug_input.image, T.TransformList(transforms)


def _build_resize(cfg) -> T.Augmentation:
    style = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    by_clip = style.endswith(_BY_CLIP)
    resize = T.ResizeShortestEdge(
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, style[: -len(_BY_CLIP)] if by_clip else style
    )
    return ClipLevel(resize) if by_clip else resize


def _build_video_flip(cfg) -> List[T.Augmentation]:
    if cfg.INPUT.RANDOM_FLIP == "flip_by_clip":
        return [ClipLevel(T.RandomFlip(horizontal=True, vertical=False))]
    return build_flip(cfg)


def _build_extra(cfg) -> List[T.Augmentation]:
    unknown = sorted(set(cfg.INPUT.AUGMENTATIONS) - set(_PHOTOMETRIC_AND_ROTATION))
    if unknown:
        raise ValueError(
            f"INPUT.AUGMENTATIONS names {unknown}; known: {list(_PHOTOMETRIC_AND_ROTATION)}"
        )
    return [build() for name, build in _PHOTOMETRIC_AND_ROTATION.items() if name in cfg.INPUT.AUGMENTATIONS]


def build_clip_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """The augmentations of upstream's video mapper.

    Training: random crop where ``INPUT.CROP.ENABLED`` (per frame), resize of the shortest edge
    (``INPUT.MIN_SIZE_TRAIN_SAMPLING`` "choice" / "range" per frame, "choice_by_clip" /
    "range_by_clip" per clip), random flip (``INPUT.RANDOM_FLIP`` "none", "horizontal", "vertical"
    per frame, "flip_by_clip" horizontal per clip), then the ``INPUT.AUGMENTATIONS`` (brightness,
    contrast, saturation, rotation; per frame). Inference: resize to ``INPUT.MIN_SIZE_TEST``.

    Returns:
        list[Augmentation]: for :func:`augment_clip`.
    """
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    crop = [T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE)] if cfg.INPUT.CROP.ENABLED else []
    return crop + [_build_resize(cfg)] + _build_video_flip(cfg) + _build_extra(cfg)
