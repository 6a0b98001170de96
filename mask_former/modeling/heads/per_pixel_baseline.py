"""MaskFormer's per-pixel classification baselines, for detectron2's ``SemanticSegmentor``."""
from typing import Dict, List, Optional, Tuple

import fvcore.nn.weight_init as weight_init
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F

from .maskformer_head import PixelDecoderHead, run_transformer_decoder, transformer_decoder_args


def per_pixel_ce_loss(logits: Tensor, targets: Tensor, *, common_stride: int, ignore_value: int) -> Tensor:
    """
    Cross-entropy of every pixel, the logits upsampled (bilinearly) by ``common_stride``.

    Args:
        logits (`Tensor` of shape `(B, K, H / stride, W / stride)`): per-pixel class logits.
        targets (`Tensor` of shape `(B, H, W)`, int64): class of each pixel, or ``ignore_value``.

    Returns:
        Scalar `Tensor`: the mean over the pixels that are not ignored.
    """
    logits = F.interpolate(logits.float(), scale_factor=common_stride, mode="bilinear", align_corners=False)
    if logits.shape[-2:] != targets.shape[-2:]:
        raise ValueError(
            f"per-pixel baseline: upsampled logits {tuple(logits.shape[-2:])} and 'sem_seg' targets "
            f"{tuple(targets.shape[-2:])} differ in size; pad the images to a multiple of 32"
        )
    return F.cross_entropy(logits, targets, reduction="mean", ignore_index=ignore_value)


@SEM_SEG_HEADS_REGISTRY.register()
class PerPixelBaselineHead(PixelDecoderHead):
    """``forward(features, targets=None) -> (logits, losses)``, as detectron2's ``SemanticSegmentor``
    calls a head: a pixel decoder, then a 1x1 conv classifying each per-pixel embedding into the K
    classes. Training returns ``(None, {"loss_sem_seg": ...})``; inference returns the logits
    ``[B, K, H, W]`` at the input resolution and ``{}``."""

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], **head_args):
        """Args: those of ``PixelDecoderHead``."""
        super().__init__(input_shape, **head_args)
        self.predictor = Conv2d(self.pixel_decoder.mask_dim, self.num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.predictor)

    def forward(self, features: Dict[str, Tensor], targets: Optional[Tensor] = None):
        logits, aux_logits = self.layers(features)
        if self.training:
            return None, self.losses(logits, aux_logits, targets)
        return F.interpolate(logits, scale_factor=self.common_stride, mode="bilinear", align_corners=False), {}

    def layers(self, features: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """The per-pixel logits ``[B, K, H/4, W/4]``, and those of intermediate layers (none here)."""
        mask_features = self.pixel_decoder.forward_features(features)[0]
        return self.predictor(mask_features), []

    def losses(self, logits: Tensor, aux_logits: List[Tensor], targets: Tensor) -> Dict[str, Tensor]:
        """``loss_sem_seg`` of the logits and ``loss_sem_seg_{i}`` of the i-th intermediate ones."""
        if targets is None:
            raise ValueError(f"{type(self).__name__} training needs 'sem_seg' in every input dict")
        named = [("loss_sem_seg", logits)] + [(f"loss_sem_seg_{i}", x) for i, x in enumerate(aux_logits)]
        return {
            name: self.loss_weight
            * per_pixel_ce_loss(x, targets, common_stride=self.common_stride, ignore_value=self.ignore_value)
            for name, x in named
        }


@SEM_SEG_HEADS_REGISTRY.register()
class PerPixelBaselinePlusHead(PerPixelBaselineHead):
    """The per-pixel baseline with MaskFormer's transformer decoder: K queries (``NUM_OBJECT_QUERIES``
    must equal ``NUM_CLASSES``), no class prediction; query k's mask logits are class k's per-pixel
    logits. With ``DEEP_SUPERVISION`` every decoder layer's logits get a loss."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
        deep_supervision: bool,
        **head_args,
    ):
        """
        Args:
            transformer_predictor: the transformer decoder (``mask_classification=False``).
            transformer_in_feature: its input (``MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE``).
            deep_supervision: losses on the logits of every decoder layer.
            input_shape, head_args: the arguments of ``PerPixelBaselineHead``.
        """
        super().__init__(input_shape, **head_args)
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.deep_supervision = deep_supervision

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        mf = cfg.MODEL.MASK_FORMER
        if mf.NUM_OBJECT_QUERIES != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
            raise ValueError(
                f"PerPixelBaselinePlusHead: MODEL.MASK_FORMER.NUM_OBJECT_QUERIES ({mf.NUM_OBJECT_QUERIES}) must "
                f"equal MODEL.SEM_SEG_HEAD.NUM_CLASSES ({cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}): one query per class"
            )
        return {
            **super().from_config(cfg, input_shape),
            **transformer_decoder_args(cfg, input_shape, False),
            "deep_supervision": mf.DEEP_SUPERVISION,
        }

    def layers(self, features: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
        predictions = run_transformer_decoder(self, features)
        aux = [out["pred_masks"] for out in predictions["aux_outputs"]] if self.deep_supervision else []
        return predictions["pred_masks"], aux
