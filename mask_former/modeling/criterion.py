"""Set criterion of MaskFormer / Mask2Former: losses of the matched predictions."""
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from detectron2.projects.point_rend.point_features import point_sample
from detectron2.utils.comm import get_world_size

__all__ = [
    "FullMaskSetCriterion",
    "SetCriterion",
    "calculate_uncertainty",
    "dice_loss",
    "dice_loss_from_sums",
    "pad_to_common_size",
    "sigmoid_ce_loss",
    "sigmoid_focal_loss",
    "uncertain_point_coords",
]

Indices = List[Tuple[torch.Tensor, torch.Tensor]]


def dice_loss_from_sums(
    intersection: torch.Tensor, pred_area: torch.Tensor, target_area: torch.Tensor
) -> torch.Tensor:
    """Dice loss `1 - (2 |p t| + 1) / (|p| + |t| + 1)`; the +1 keeps empty masks at loss 0."""
    return 1 - (2 * intersection + 1) / (pred_area + target_area + 1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    Args:
        logits (`torch.Tensor` of shape `(N, P)`): mask logits at P points.
        targets (`torch.Tensor` of shape `(N, P)`): target mask values (0 to 1) at the same points.

    Returns:
        `torch.Tensor` of shape `(N,)`: dice loss of each mask.
    """
    probs = logits.sigmoid()
    return dice_loss_from_sums((probs * targets).sum(-1), probs.sum(-1), targets.sum(-1))


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    Args:
        logits (`torch.Tensor` of shape `(N, P)`): mask logits at P points.
        targets (`torch.Tensor` of shape `(N, P)`): target mask values (0 to 1) at the same points.

    Returns:
        `torch.Tensor` of shape `(N,)`: sigmoid binary cross-entropy of each mask, averaged over
        its points.
    """
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """
    RetinaNet's sigmoid focal loss, as MaskFormer (v1) trains its masks with.

    Args:
        logits (`torch.Tensor` of shape `(N, P)`): mask logits at P pixels.
        targets (`torch.Tensor` of shape `(N, P)`): target mask values (0 to 1) at the same pixels.
        alpha: weight of the positive pixels (negatives get `1 - alpha`); negative: no weighting.
        gamma: exponent of the modulating factor `(1 - p_t)`.

    Returns:
        `torch.Tensor` of shape `(N,)`: focal loss of each mask, averaged over its pixels.
    """
    probs = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1)


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """
    Uncertainty of class-agnostic mask logits: `-|logit|`, highest where the logit is near 0.

    Args:
        logits (`torch.Tensor` of shape `(R, 1, ...)`): mask logits.

    Returns:
        `torch.Tensor` of the same shape.
    """
    if logits.shape[1] != 1:
        raise ValueError(f"calculate_uncertainty expects (R, 1, ...) logits, got {logits.shape}")
    return -logits.abs()


def uncertain_point_coords(
    mask_logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> torch.Tensor:
    """
    PointRend's importance sampling of training points, as detectron2's
    `get_uncertain_point_coords_with_randomness` (its reference) with `calculate_uncertainty`: the same
    random draws, in the same order, and the same points. Of `num_points * oversample_ratio` uniform
    points per mask, the `importance_sample_ratio * num_points` most uncertain are kept; uniform points
    complete them.

    The kept points are those of the reference's top-k, not in its order: the losses are sums over the
    points. An unsorted top-k does half the work; both run the same selection, so ties keep the same points.

    Args:
        mask_logits (`torch.Tensor` of shape `(R, 1, H, W)`): mask logits.

    Returns:
        `torch.Tensor` of shape `(R, num_points, 2)`: points in `[0, 1] x [0, 1]`, `(x, y)`.
    """
    num_masks = mask_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(num_masks, num_sampled, 2, device=mask_logits.device)
    uncertainty = calculate_uncertainty(point_sample(mask_logits, coords, align_corners=False))[:, 0]
    num_uncertain = int(importance_sample_ratio * num_points)
    kept = torch.topk(uncertainty, k=num_uncertain, dim=1, sorted=False).indices
    coords = torch.gather(coords, 1, kept[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(num_masks, num_random, 2, device=mask_logits.device)], dim=1)
    return coords


def pad_to_common_size(masks: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """
    Zero-pad masks `(T_i, H_i, W_i)` at the bottom and right to the largest height and width.

    Returns:
        List of tensors of shapes `(T_i, H_max, W_max)`.
    """
    height = max(m.shape[-2] for m in masks)
    width = max(m.shape[-1] for m in masks)
    return [m if m.shape[-2:] == (height, width) else F.pad(m, (0, width - m.shape[-1], 0, height - m.shape[-2])) for m in masks]


class SetCriterion(nn.Module):
    """
    Losses of MaskFormer / Mask2Former. The predictions are matched one-to-one to the targets
    (by the matcher), then each requested loss is computed on the matched pairs; unmatched
    queries are trained to predict "no object" (class K).

    Losses (names for `losses`):
        - "labels": `loss_ce`, cross-entropy over the K + 1 classes, "no object" weighted by
          `eos_coef`.
        - "masks": `loss_mask` (sigmoid binary cross-entropy) and `loss_dice`, on points drawn
          with PointRend's uncertainty-based importance sampling, summed over the matched masks
          and divided by the number of targets.

    Video (Mask2Former-VIS): masks `(Q, T, H, W)` instead of `(Q, H, W)`, one per object through the T
    frames of a clip; the mask losses sum over every frame of the matched objects, divided by the number
    of objects, as upstream's `VideoSetCriterion`.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: Dict[str, float],
        eos_coef: float,
        losses: Sequence[str],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
    ):
        """
        Args:
            num_classes: number of object classes K, "no object" excluded.
            matcher: module called as `matcher(outputs, targets)` returning, per image,
                `(query_indices, target_indices)` (e.g. `HungarianMatcher`).
            weight_dict: loss name to weight; kept for the caller, which applies it.
            eos_coef: classification weight of the "no object" class.
            losses: names of the losses to compute, among "labels" and "masks".
            num_points: number of points per mask of the mask losses.
            oversample_ratio: PointRend oversampling ratio (>= 1) of the point sampling.
            importance_sample_ratio: fraction (in [0, 1]) of the points chosen as the most
                uncertain ones; the others are uniform.
        """
        super().__init__()
        unknown = [name for name in losses if name not in self._loss_fns()]
        if unknown:
            raise ValueError(
                f"SetCriterion: unknown losses {unknown}, available: {sorted(self._loss_fns())}"
            )
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = list(losses)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def _loss_fns(self) -> Dict[str, Callable[..., Dict[str, torch.Tensor]]]:
        return {"labels": self.loss_labels, "masks": self.loss_masks}

    def forward(
        self, outputs: Dict[str, object], targets: List[Dict[str, torch.Tensor]]
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: dict with "pred_logits" `(B, Q, K + 1)`, "pred_masks" `(B, Q, H, W)` (mask
                logits; video: `(B, Q, T, H, W)`) and optionally "aux_outputs", a list of such dicts
                (one per intermediate decoder layer).
            targets: B dicts with "labels" `(N_i,)` int64 and "masks" `(N_i, H_t, W_t)` (0/1; video:
                `(N_i, T, H_t, W_t)`).

        Returns:
            Dict of scalar losses: "loss_ce", "loss_mask", "loss_dice" (those requested) for the
            final outputs, and the same suffixed with "_{i}" for `outputs["aux_outputs"][i]`.
        """
        num_masks = self._average_num_masks(targets, outputs["pred_logits"].device)
        # Once for all layers: the matcher and the mask losses of every layer read the same float masks.
        targets = [{**t, "masks": t["masks"].to(torch.float32)} for t in targets]
        layers = [("", outputs)] + [
            (f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))
        ]
        losses = {}
        for suffix, layer_outputs in layers:
            layer_losses = self._layer_losses(layer_outputs, targets, num_masks)
            losses.update({name + suffix: value for name, value in layer_losses.items()})
        return losses

    def _layer_losses(
        self, outputs: Dict[str, object], targets: List[Dict[str, torch.Tensor]], num_masks: float
    ) -> Dict[str, torch.Tensor]:
        predictions = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        indices = self.matcher(predictions, targets)
        losses = {}
        for name in self.losses:
            losses.update(self._loss_fns()[name](predictions, targets, indices, num_masks))
        return losses

    def loss_labels(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: List[Dict[str, torch.Tensor]],
        indices: Indices,
        num_masks: float,
    ) -> Dict[str, torch.Tensor]:
        """Cross-entropy `loss_ce` of the class logits; unmatched queries target class K."""
        logits = outputs["pred_logits"].float()
        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        matched_labels = [t["labels"][tgt] for t, (_, tgt) in zip(targets, indices)]
        target_classes[_batch_and_query_indices(indices)] = torch.cat(matched_labels).to(
            logits.device
        )
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)
        return {"loss_ce": loss_ce}

    def loss_masks(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: List[Dict[str, torch.Tensor]],
        indices: Indices,
        num_masks: float,
    ) -> Dict[str, torch.Tensor]:
        """Point-sampled `loss_mask` (sigmoid BCE) and `loss_dice` of the matched masks (of each frame)."""
        # [M, (T,) H, W] -> [M * T, 1, H, W]
        pred_masks = outputs["pred_masks"][_batch_and_query_indices(indices)].flatten(0, -3)[:, None]
        target_masks = pad_to_common_size([t["masks"].to(pred_masks) for t in targets])
        target_masks = torch.cat([masks[tgt] for masks, (_, tgt) in zip(target_masks, indices)])
        target_masks = target_masks.flatten(0, -3)[:, None]
        with torch.no_grad():
            coords = uncertain_point_coords(
                pred_masks, self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            point_labels = point_sample(target_masks, coords, align_corners=False).squeeze(1)
        point_logits = point_sample(pred_masks, coords, align_corners=False).squeeze(1)
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels).sum() / num_masks,
            "loss_dice": dice_loss(point_logits, point_labels).sum() / num_masks,
        }

    @staticmethod
    def _average_num_masks(targets: List[Dict[str, torch.Tensor]], device: torch.device) -> float:
        """Number of targets per worker, averaged over the distributed workers, at least 1."""
        num_masks = torch.tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float32, device=device
        )
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks)
        return torch.clamp(num_masks / get_world_size(), min=1).item()

    def _mask_loss_repr(self) -> List[str]:
        return [
            f"num_points: {self.num_points}",
            f"oversample_ratio: {self.oversample_ratio}",
            f"importance_sample_ratio: {self.importance_sample_ratio}",
        ]

    def __repr__(self) -> str:
        body = [
            "matcher: " + repr(self.matcher).replace("\n", "\n    "),
            f"losses: {self.losses}",
            f"weight_dict: {self.weight_dict}",
            f"num_classes: {self.num_classes}",
            f"eos_coef: {self.eos_coef}",
        ] + self._mask_loss_repr()
        return "\n".join(["Criterion " + type(self).__name__] + ["    " + line for line in body])


class FullMaskSetCriterion(SetCriterion):
    """
    MaskFormer (v1)'s losses: as `SetCriterion`, except that "masks" gives `loss_mask`, a sigmoid
    focal loss, and `loss_dice` on every pixel of the targets, the predicted masks being upsampled
    (bilinearly) to the targets' padded size.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: Dict[str, float],
        eos_coef: float,
        losses: Sequence[str],
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        """
        Args:
            num_classes, matcher, weight_dict, eos_coef, losses: as in `SetCriterion`.
            focal_alpha, focal_gamma: parameters of the focal loss (see `sigmoid_focal_loss`).
        """
        super().__init__(
            num_classes, matcher, weight_dict, eos_coef, losses,
            num_points=0, oversample_ratio=1.0, importance_sample_ratio=0.0,
        )
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def loss_masks(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: List[Dict[str, torch.Tensor]],
        indices: Indices,
        num_masks: float,
    ) -> Dict[str, torch.Tensor]:
        """Full-resolution `loss_mask` (sigmoid focal) and `loss_dice` of the matched masks."""
        pred_masks = outputs["pred_masks"][_batch_and_query_indices(indices)]
        target_masks = pad_to_common_size([t["masks"].to(pred_masks) for t in targets])
        target_masks = torch.cat([masks[tgt] for masks, (_, tgt) in zip(target_masks, indices)])
        pred_masks = F.interpolate(
            pred_masks[:, None], size=target_masks.shape[-2:], mode="bilinear", align_corners=False
        )
        logits, labels = pred_masks.flatten(1), target_masks.flatten(1)
        focal = sigmoid_focal_loss(logits, labels, self.focal_alpha, self.focal_gamma)
        return {
            "loss_mask": focal.sum() / num_masks,
            "loss_dice": dice_loss(logits, labels).sum() / num_masks,
        }

    def _mask_loss_repr(self) -> List[str]:
        return [f"focal_alpha: {self.focal_alpha}", f"focal_gamma: {self.focal_gamma}"]


def _batch_and_query_indices(indices: Indices) -> Tuple[torch.Tensor, torch.Tensor]:
    """`(image_index, query_index)` of every matched query, for advanced indexing."""
    batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    return batch, torch.cat([src for src, _ in indices])
