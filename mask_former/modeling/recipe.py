"""The rules of the upstream project a config follows: MaskFormer (v1) or Mask2Former.

The two train and evaluate the same networks differently: loss and matcher, panoptic merge, evaluators. One
:class:`Recipe` per project in :data:`RECIPES`; :func:`build_recipe` picks the config's, and the model keeps it
as ``model.recipe`` for its evaluators and its export.
"""
import functools
import logging
from dataclasses import dataclass
from typing import Callable, Dict

from .criterion import FullMaskSetCriterion, SetCriterion
from .matcher import FullMaskHungarianMatcher, HungarianMatcher

__all__ = ["RECIPES", "Recipe", "build_recipe", "is_maskformer_v1_config", "loss_weights"]


@dataclass(frozen=True)
class Recipe:
    """What differs between MaskFormer (v1) and Mask2Former beyond the network.

    Attributes:
        name: ``"maskformer"`` or ``"mask2former"``, as ``MODEL.MASK_FORMER.RECIPE`` names it.
        build_criterion: ``(cfg, num_classes) -> criterion``, the set criterion with its matcher.
        require_mask_confidence: the panoptic merge: a pixel joins its winning query's segment only where
            that query's mask probability is >= 0.5 (Mask2Former), or wherever it wins (v1).
        evaluator_family: whose evaluators a dataset gets, a key of
            ``mask_former.evaluation.build.EVALUATOR_BUILDERS``.
    """

    name: str
    build_criterion: Callable[..., SetCriterion]
    require_mask_confidence: bool
    evaluator_family: str


def loss_weights(cfg) -> Dict[str, float]:
    """Weight of each loss, one set per supervised decoder output (suffix ``_i`` for the i-th
    intermediate layer)."""
    mf = cfg.MODEL.MASK_FORMER
    weight_dict = {"loss_ce": mf.CLASS_WEIGHT, "loss_mask": mf.MASK_WEIGHT, "loss_dice": mf.DICE_WEIGHT}
    if mf.DEEP_SUPERVISION:
        weight_dict.update(
            {f"{k}_{i}": v for i in range(mf.DEC_LAYERS - 1) for k, v in list(weight_dict.items())}
        )
    return weight_dict


def build_mask2former_criterion(cfg, num_classes: int) -> SetCriterion:
    """Mask2Former's: sigmoid BCE + dice on importance-sampled points, matched on random points."""
    mf = cfg.MODEL.MASK_FORMER
    matcher = HungarianMatcher(
        cost_class=mf.CLASS_WEIGHT, cost_mask=mf.MASK_WEIGHT, cost_dice=mf.DICE_WEIGHT, num_points=mf.TRAIN_NUM_POINTS
    )
    return SetCriterion(
        num_classes,
        matcher=matcher,
        weight_dict=loss_weights(cfg),
        eos_coef=mf.NO_OBJECT_WEIGHT,
        losses=["labels", "masks"],
        num_points=mf.TRAIN_NUM_POINTS,
        oversample_ratio=mf.OVERSAMPLE_RATIO,
        importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
    )


def build_maskformer_criterion(cfg, num_classes: int) -> FullMaskSetCriterion:
    """MaskFormer (v1)'s: sigmoid focal (alpha 0.25, gamma 2) + dice on full-resolution masks,
    matched on full masks. v1 had no CLASS_WEIGHT key; its default, 1, is v1's fixed weight."""
    mf = cfg.MODEL.MASK_FORMER
    matcher = FullMaskHungarianMatcher(cost_class=mf.CLASS_WEIGHT, cost_mask=mf.MASK_WEIGHT, cost_dice=mf.DICE_WEIGHT)
    return FullMaskSetCriterion(
        num_classes, matcher=matcher, weight_dict=loss_weights(cfg), eos_coef=mf.NO_OBJECT_WEIGHT,
        losses=["labels", "masks"],
    )


RECIPES: Dict[str, Recipe] = {
    "maskformer": Recipe(
        "maskformer", build_maskformer_criterion, require_mask_confidence=False, evaluator_family="maskformer"
    ),
    "mask2former": Recipe(
        "mask2former", build_mask2former_criterion, require_mask_confidence=True, evaluator_family="mask2former"
    ),
}
"""``MODEL.MASK_FORMER.RECIPE`` -> its recipe."""


def is_maskformer_v1_config(cfg) -> bool:
    """Whether ``cfg`` is a MaskFormer (v1) config.

    v1 had no ``TRANSFORMER_DECODER_NAME`` key, so its configs keep Mask2Former's default,
    ``MultiScaleMaskedTransformerDecoder``, which needs the three scales of a multi-scale pixel decoder;
    a single-map ``TRANSFORMER_IN_FEATURE`` (anything but ``multi_scale_pixel_decoder``) gives them away.
    """
    mf = cfg.MODEL.MASK_FORMER
    return mf.TRANSFORMER_DECODER_NAME == "MultiScaleMaskedTransformerDecoder" and (
        mf.TRANSFORMER_IN_FEATURE != "multi_scale_pixel_decoder"
    )


@functools.lru_cache(maxsize=None)
def _log_recipe(name: str, reason: str) -> None:
    logging.getLogger(__name__).info("MaskFormer recipe: %s (%s)", name, reason)


def build_recipe(cfg) -> Recipe:
    """The recipe of a config: whose criterion, matcher, panoptic merge and evaluators it gets.

    ``MODEL.MASK_FORMER.RECIPE`` when set; otherwise ``"maskformer"`` for MaskFormer (v1) configs
    (:func:`is_maskformer_v1_config`) and ``"mask2former"`` for all others, including Mask2Former's own
    configs that name ``StandardTransformerDecoder``. The choice is logged once.

    Raises:
        ValueError: ``MODEL.MASK_FORMER.RECIPE`` names no recipe of :data:`RECIPES`.
    """
    name = cfg.MODEL.MASK_FORMER.RECIPE
    if name:
        if name not in RECIPES:
            raise ValueError(
                f"MODEL.MASK_FORMER.RECIPE={name!r}: expected one of {tuple(RECIPES)} or '' (derived)"
            )
        reason = "MODEL.MASK_FORMER.RECIPE"
    elif is_maskformer_v1_config(cfg):
        name, reason = "maskformer", "derived: a MaskFormer (v1) config"
    else:
        name, reason = "mask2former", "derived: a Mask2Former config"
    _log_recipe(name, reason)
    return RECIPES[name]
