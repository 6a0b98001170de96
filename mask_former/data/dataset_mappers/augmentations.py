"""The training augmentations of the MaskFormer dataset mappers, built from the config."""
import random
from typing import Any, Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from fvcore.transforms.transform import Transform, TransformList

from .padding import IMAGE_PAD_VALUE

__all__ = [
    "DETR_CROP_PRE_RESIZE_SIZES",
    "ColorAugSSD",
    "ColorAugSSDTransform",
    "RandomPipeline",
    "build_detr_augmentations",
    "build_flip",
    "build_lsj_augmentations",
    "build_mask_former_augmentations",
]

# DETR resizes the shortest edge to one of these before its random crop (fixed in DETR and MaskFormer v1).
DETR_CROP_PRE_RESIZE_SIZES = (400, 500, 600)

# OpenCV's conversions to and from HSV for each supported image format.
_HSV_CONVERSIONS = {
    "BGR": (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR),
    "RGB": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB),
}

_FLIP_DIRECTIONS = {
    "none": None,
    "horizontal": {"horizontal": True, "vertical": False},
    "vertical": {"horizontal": False, "vertical": True},
}


def _scale_and_shift(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """``clip(values * alpha + beta, 0, 255)`` as uint8."""
    return np.clip(values.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


class ColorAugSSDTransform(Transform):
    """The photometric distortion of SSD (Liu et al., ECCV 2016) with fixed parameters: brightness
    shift, then contrast, saturation and hue changes (contrast first or last). A parameter left
    None skips its step. Geometry and labels are unchanged.

    Saturation and hue each go to HSV and back on their own, as in detectron2's PointRend
    ``ColorAugSSDTransform`` that upstream uses: the uint8 round trips round, so merging them
    would change the pixels.

    Args:
        image_format (str): "BGR" or "RGB", the channel order of the images it receives.
        brightness_delta (float, optional): added to every pixel value.
        contrast_factor (float, optional): multiplies every pixel value.
        saturation_factor (float, optional): multiplies the HSV saturation.
        hue_delta (int, optional): added to the HSV hue (OpenCV's hue range is [0, 180)).
        contrast_last (bool): apply contrast after saturation and hue instead of before.
    """

    def __init__(
        self,
        image_format: str,
        brightness_delta: Optional[float] = None,
        contrast_factor: Optional[float] = None,
        saturation_factor: Optional[float] = None,
        hue_delta: Optional[int] = None,
        contrast_last: bool = False,
    ):
        if image_format not in _HSV_CONVERSIONS:
            raise ValueError(
                f"ColorAugSSDTransform needs INPUT.FORMAT in {sorted(_HSV_CONVERSIONS)}, "
                f"got {image_format!r}"
            )
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """img: uint8 ``[H, W, 3]`` in ``image_format``; returns the distorted image, same shape."""
        if self.brightness_delta is not None:
            img = _scale_and_shift(img, beta=self.brightness_delta)
        steps = [self._contrast, self._saturation, self._hue]
        if self.contrast_last:
            steps = steps[1:] + steps[:1]
        for step in steps:
            img = step(img)
        return img

    def _contrast(self, img: np.ndarray) -> np.ndarray:
        if self.contrast_factor is None:
            return img
        return _scale_and_shift(img, alpha=self.contrast_factor)

    def _saturation(self, img: np.ndarray) -> np.ndarray:
        if self.saturation_factor is None:
            return img
        return self._in_hsv(img, 1, lambda s: _scale_and_shift(s, alpha=self.saturation_factor))

    def _hue(self, img: np.ndarray) -> np.ndarray:
        if self.hue_delta is None:
            return img
        return self._in_hsv(img, 0, lambda h: (h.astype(np.int32) + self.hue_delta) % 180)

    def _in_hsv(self, img: np.ndarray, channel: int, change: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Convert to HSV, replace ``channel`` by ``change(channel)``, convert back."""
        to_hsv, from_hsv = _HSV_CONVERSIONS[self.image_format]
        hsv = cv2.cvtColor(img, to_hsv)
        hsv[..., channel] = change(hsv[..., channel])
        return cv2.cvtColor(hsv, from_hsv)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


class ColorAugSSD(T.Augmentation):
    """Draws a :class:`ColorAugSSDTransform` as SSD does: each of the four changes is applied with
    probability 1/2, with brightness shift in ``[-brightness_delta, brightness_delta]``, contrast
    and saturation factors in ``contrast_range`` / ``saturation_range`` and hue shift in
    ``[-hue_delta, hue_delta]``; contrast goes first or last with probability 1/2.

    The draws use Python's ``random`` in the order of upstream's PointRend transform (brightness,
    order, then each step in the order applied), so that a seeded run gives upstream's pixels.
    """

    def __init__(
        self,
        image_format: str,
        brightness_delta: float = 32,
        contrast_range: Tuple[float, float] = (0.5, 1.5),
        saturation_range: Tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> ColorAugSSDTransform:
        delta = self.brightness_delta
        brightness = self._half_the_time(random.uniform, -delta, delta)
        contrast_last = not random.randrange(2)
        draws = {
            "contrast_factor": (random.uniform, *self.contrast_range),
            "saturation_factor": (random.uniform, *self.saturation_range),
            "hue_delta": (random.randint, -self.hue_delta, self.hue_delta),
        }
        order = list(draws)
        if contrast_last:
            order = order[1:] + order[:1]
        params = {name: self._half_the_time(*draws[name]) for name in order}
        return ColorAugSSDTransform(
            self.image_format, brightness_delta=brightness, contrast_last=contrast_last, **params
        )

    @staticmethod
    def _half_the_time(draw: Callable[..., Any], *args: Any) -> Any:
        return draw(*args) if random.randrange(2) else None


def build_flip(cfg: CfgNode) -> List[T.Augmentation]:
    """The random flip of ``cfg.INPUT.RANDOM_FLIP`` ("none", "horizontal" or "vertical") as a list
    of zero or one augmentation."""
    name = cfg.INPUT.RANDOM_FLIP
    if name not in _FLIP_DIRECTIONS:
        raise ValueError(
            f"INPUT.RANDOM_FLIP={name!r} is not one of {sorted(_FLIP_DIRECTIONS)}"
        )
    directions = _FLIP_DIRECTIONS[name]
    return [] if directions is None else [T.RandomFlip(**directions)]


def build_mask_former_augmentations(cfg: CfgNode, crop_by_category_area: bool) -> List[T.Augmentation]:
    """Training augmentations of the ``mask_former_*`` mappers: resize of the shortest edge
    (``INPUT.MIN_SIZE_TRAIN``, ``MAX_SIZE_TRAIN``, ``MIN_SIZE_TRAIN_SAMPLING``), random crop where
    ``INPUT.CROP.ENABLED``, SSD colour distortion where ``INPUT.COLOR_AUG_SSD``, random flip.

    Args:
        cfg: the config.
        crop_by_category_area: retry crops in which one category covers more than
            ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` of the labelled pixels (the augmentation then
            needs ``sem_seg`` in its input); otherwise a plain random crop.
    """
    augmentations = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        augmentations.append(_build_crop(cfg, crop_by_category_area))
    if cfg.INPUT.COLOR_AUG_SSD:
        augmentations.append(ColorAugSSD(cfg.INPUT.FORMAT))
    return augmentations + build_flip(cfg)


def _build_crop(cfg: CfgNode, crop_by_category_area: bool) -> T.Augmentation:
    if not crop_by_category_area:
        return T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE)
    # Upstream's crop leaves out MODEL.SEM_SEG_HEAD.IGNORE_VALUE (not the metadata's
    # ignore_label, which the targets use); the two agree in every upstream config.
    return T.RandomCrop_CategoryAreaConstraint(
        cfg.INPUT.CROP.TYPE,
        cfg.INPUT.CROP.SIZE,
        cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
        cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
    )


def build_lsj_augmentations(cfg: CfgNode) -> List[T.Augmentation]:
    """Large-scale jitter of the ``coco_*_lsj`` mappers: random flip, resize into a square of side
    ``INPUT.IMAGE_SIZE`` scaled by a factor in ``[INPUT.MIN_SCALE, INPUT.MAX_SCALE]``, then a
    random crop of ``IMAGE_SIZE x IMAGE_SIZE`` (padded at the bottom and right where smaller)."""
    size = cfg.INPUT.IMAGE_SIZE
    return build_flip(cfg) + [
        T.ResizeScale(
            min_scale=cfg.INPUT.MIN_SCALE,
            max_scale=cfg.INPUT.MAX_SCALE,
            target_height=size,
            target_width=size,
        ),
        T.FixedSizeCrop(crop_size=(size, size), pad_value=IMAGE_PAD_VALUE),
    ]


class RandomPipeline(T.Augmentation):
    """One of two augmentation pipelines per image, as DETR draws it: ``first`` where ``np.random.rand() > prob``,
    else ``second``.

    Args:
        first, second: the two pipelines.
        prob: probability of ``second``.
    """

    def __init__(self, first: Sequence[T.Augmentation], second: Sequence[T.Augmentation], prob: float = 0.5):
        super().__init__()
        self.first = T.AugmentationList(list(first))
        self.second = T.AugmentationList(list(second))
        self.prob = prob

    def __call__(self, aug_input: T.AugInput) -> TransformList:
        pipeline = self.first if np.random.rand() > self.prob else self.second
        return pipeline(aug_input)


def build_detr_augmentations(cfg: CfgNode) -> List[T.Augmentation]:
    """DETR's augmentation (MaskFormer v1's ``detr_panoptic``): random flip and resize of the shortest edge
    (``INPUT.MIN_SIZE_TRAIN``, ``MAX_SIZE_TRAIN``, ``MIN_SIZE_TRAIN_SAMPLING``); where ``INPUT.CROP.ENABLED``,
    half of the time instead, the same with a resize to :data:`DETR_CROP_PRE_RESIZE_SIZES` and a random crop
    (``INPUT.CROP``) before the resize (see :class:`RandomPipeline`). Upstream draws the coin only where there
    is a crop."""
    resize = T.ResizeShortestEdge(
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    )
    flip = build_flip(cfg)
    if not cfg.INPUT.CROP.ENABLED:
        return flip + [resize]
    crop = [
        T.ResizeShortestEdge(DETR_CROP_PRE_RESIZE_SIZES, sample_style="choice"),
        T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE),
    ]
    return [RandomPipeline(flip + [resize], flip + crop + [resize])]
