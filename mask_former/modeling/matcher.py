"""Hungarian matching of predicted masks to ground-truth masks (as in Mask2Former)."""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import point_sample
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..ops import choose_implementation, ms_deform_attn_cpu
from .criterion import dice_loss_from_sums

__all__ = [
    "FullMaskHungarianMatcher",
    "HungarianMatcher",
    "pairwise_dice_cost",
    "pairwise_dot",
    "pairwise_sigmoid_ce_cost",
    "pairwise_sigmoid_ce_cost_by_softplus",
    "pairwise_sigmoid_focal_cost",
]


def pairwise_sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    Sigmoid binary cross-entropy of every prediction against every target, averaged over points.

    Args:
        logits (`torch.Tensor` of shape `(Q, P)`): mask logits of Q predictions at P points.
        targets (`torch.Tensor` of shape `(T, P)`): target mask values (0 to 1) at the same points.

    Returns:
        `torch.Tensor` of shape `(Q, T)`.
    """
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(
        logits, torch.zeros_like(logits), reduction="none"
    )
    return (positive @ targets.T + negative @ (1 - targets).T) / logits.shape[1]


def pairwise_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """
    `a @ b.T`, computed as `(b @ a.T).T`: BLAS reads a transposed right operand at full speed but not a
    transposed left one, and the queries' sampled points `a` arrive transposed (`(P, Q)` memory, see
    `_sample_queries_at`): there this is several times faster; for a contiguous `a` it is as fast.

    Args:
        a (`torch.Tensor` of shape `(Q, P)`), b (`torch.Tensor` of shape `(T, P)`).

    Returns:
        `torch.Tensor` of shape `(Q, T)`.
    """
    return (b @ a.T).T


def pairwise_sigmoid_ce_cost_by_softplus(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    :func:`pairwise_sigmoid_ce_cost` (its plain reference, upstream's form) in one `(Q, P)` intermediate instead
    of four: with `BCE(x, 1) = softplus(x) - x` and `BCE(x, 0) = softplus(x)`, the cost is
    `(sum_p softplus(x) - x @ t.T) / P`. Equal up to float rounding.

    Args:
        logits (`torch.Tensor` of shape `(Q, P)`), targets (`torch.Tensor` of shape `(T, P)`): as there.

    Returns:
        `torch.Tensor` of shape `(Q, T)`.
    """
    return (F.softplus(logits).sum(-1, keepdim=True) - pairwise_dot(logits, targets)) / logits.shape[1]


def pairwise_sigmoid_focal_cost(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """
    Sigmoid focal loss (see `criterion.sigmoid_focal_loss`) of every prediction against every
    target, averaged over pixels.

    Args:
        logits (`torch.Tensor` of shape `(Q, P)`): mask logits of Q predictions at P pixels.
        targets (`torch.Tensor` of shape `(T, P)`): 0/1 target masks at the same pixels.

    Returns:
        `torch.Tensor` of shape `(Q, T)`.
    """
    probs = logits.sigmoid()
    positive = (1 - probs) ** gamma * F.binary_cross_entropy_with_logits(
        logits, torch.ones_like(logits), reduction="none"
    )
    negative = probs**gamma * F.binary_cross_entropy_with_logits(
        logits, torch.zeros_like(logits), reduction="none"
    )
    if alpha >= 0:
        positive, negative = alpha * positive, (1 - alpha) * negative
    return (pairwise_dot(positive, targets) + pairwise_dot(negative, 1 - targets)) / logits.shape[1]


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    Dice loss of every prediction against every target.

    Args:
        logits (`torch.Tensor` of shape `(Q, P)`): mask logits of Q predictions at P points.
        targets (`torch.Tensor` of shape `(T, P)`): target mask values (0 to 1) at the same points.

    Returns:
        `torch.Tensor` of shape `(Q, T)`.
    """
    probs = logits.sigmoid()
    return dice_loss_from_sums(
        pairwise_dot(probs, targets), probs.sum(-1)[:, None], targets.sum(-1)[None, :]
    )


def _finite_costs(costs: torch.Tensor) -> torch.Tensor:
    """
    Replace NaN and +-inf costs (from non-finite logits) by a finite value one above the largest
    finite cost, so the pairs are the least preferred ones and scipy accepts the matrix.
    """
    finite = costs.isfinite()
    if bool(finite.all()):
        return costs
    worst = costs[finite].max() + 1 if bool(finite.any()) else costs.new_tensor(0.0)
    return torch.where(finite, costs, worst)


class HungarianMatcher(nn.Module):
    """
    One-to-one matching of the queries to the targets of each image, minimising the total cost

        cost_class * (-p(target class)) + cost_mask * sigmoid BCE + cost_dice * dice loss,

    where both mask costs are computed on the same points of the prediction and of the target.
    Queries left unmatched are the "no object" predictions.

    Video (Mask2Former-VIS): masks `(Q, T, H, W)` and targets `(N, T, H, W)`, one per object through the
    T frames of a clip, compared at the same points in every frame (upstream's `VideoHungarianMatcher`).
    """

    def __init__(self, cost_class: float = 1, cost_mask: float = 1, cost_dice: float = 1, num_points: int = 0):
        """
        Args:
            cost_class: weight of the classification cost.
            cost_mask: weight of the sigmoid binary cross-entropy cost of the masks.
            cost_dice: weight of the dice cost of the masks.
            num_points: number of random points (uniform in the image, drawn once per image and
                shared by all its predictions and targets) at which the masks are compared. 0
                compares them at every pixel center of the predicted masks instead.
        """
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: cost_class, cost_mask and cost_dice are all 0")
        if num_points < 0:
            raise ValueError(f"HungarianMatcher: num_points must be >= 0, got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(
        self,
        outputs: Dict[str, torch.Tensor],
        targets: List[Dict[str, torch.Tensor]],
        generator: Optional[torch.Generator] = None,
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            outputs: dict with
                - "pred_logits" (`torch.Tensor` of shape `(B, Q, K + 1)`): class logits, the last
                  class being "no object".
                - "pred_masks" (`torch.Tensor` of shape `(B, Q, H, W)`): mask logits.
            targets: B dicts with
                - "labels" (`torch.Tensor` of shape `(T_i,)`, int64): classes in [0, K).
                - "masks" (`torch.Tensor` of shape `(T_i, H_t, W_t)`): 0/1 masks, of any size.
            generator: random generator of the point sampling (default: torch's global one).

        Returns:
            For each image, `(query_indices, target_indices)`: two int64 tensors of length
            `min(Q, T_i)` on the CPU, query indices in increasing order; query `query_indices[j]`
            is matched to target `target_indices[j]`.
        """
        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ValueError(
                f"HungarianMatcher: {len(targets)} targets for a batch of "
                f"{outputs['pred_logits'].shape[0]} predictions"
            )
        return [
            self._assign(self.cost_matrix(logits, masks, target, generator))
            for logits, masks, target in zip(outputs["pred_logits"], outputs["pred_masks"], targets)
        ]

    @torch.no_grad()
    def cost_matrix(
        self,
        pred_logits: torch.Tensor,
        pred_masks: torch.Tensor,
        target: Dict[str, torch.Tensor],
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """
        Matching cost of one image, in float32 (also under autocast).

        Args:
            pred_logits (`torch.Tensor` of shape `(Q, K + 1)`): class logits.
            pred_masks (`torch.Tensor` of shape `(Q, H, W)`): mask logits.
            target: dict with "labels" `(T,)` and "masks" `(T, H_t, W_t)`, as in `forward`.
            generator: random generator of the point sampling (default: torch's global one).

        Returns:
            `torch.Tensor` of shape `(Q, T)`, on the device of the predictions; may hold NaN or
            inf where the predictions do.
        """
        labels, target_masks = target["labels"], target["masks"]
        _check_target(labels, target_masks, num_classes=pred_logits.shape[-1] - 1)
        if len(labels) == 0:
            return pred_logits.new_zeros((pred_logits.shape[0], 0), dtype=torch.float32)
        with torch.autocast(device_type=pred_masks.device.type, enabled=False):
            class_cost = -pred_logits.float().softmax(-1)[:, labels]
            mask_cost, dice_cost = self.mask_costs(pred_masks.float(), target_masks.to(torch.float32), generator)
            return self.cost_class * class_cost + self.cost_mask * mask_cost + self.cost_dice * dice_cost

    def mask_costs(
        self, pred_masks: torch.Tensor, target_masks: torch.Tensor, generator: Optional[torch.Generator]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            pred_masks (`torch.Tensor` of shape `(Q, H, W)`, video `(Q, T, H, W)`): mask logits, float32.
            target_masks (`torch.Tensor` of shape `(N, H_t, W_t)`, video `(N, T, H_t, W_t)`): 0/1 masks,
                float32.

        Returns:
            The mask cost and the dice cost, two `torch.Tensor` of shape `(Q, N)`: sigmoid BCE and
            dice at the points of `num_points` (in every frame).
        """
        coords = self._point_coords(pred_masks.shape[-2:], pred_masks.device, generator)
        pred_points = _sample_queries_at(pred_masks.flatten(0, -3), coords).reshape(len(pred_masks), -1)
        target_points = _sample_at(target_masks.flatten(0, -3), coords).reshape(len(target_masks), -1)
        ce_cost = pairwise_sigmoid_ce_cost_by_softplus(pred_points, target_points)
        return ce_cost, pairwise_dice_cost(pred_points, target_points)

    def _point_coords(
        self, mask_size: torch.Size, device: torch.device, generator: Optional[torch.Generator]
    ) -> torch.Tensor:
        """`(P, 2)` point coordinates (x, y) in [0, 1]^2."""
        if self.num_points > 0:
            rand_device = generator.device if generator is not None else device
            coords = torch.rand(self.num_points, 2, generator=generator, device=rand_device)
            return coords.to(device)
        height, width = mask_size
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)

    @staticmethod
    def _assign(costs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        rows, cols = linear_sum_assignment(_finite_costs(costs.cpu()).numpy())
        return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)

    def __repr__(self) -> str:
        body = [
            f"cost_class: {self.cost_class}",
            f"cost_mask: {self.cost_mask}",
            f"cost_dice: {self.cost_dice}",
            f"num_points: {self.num_points}",
        ]
        return "\n".join(["Matcher " + type(self).__name__] + ["    " + line for line in body])


class FullMaskHungarianMatcher(HungarianMatcher):
    """
    MaskFormer (v1)'s matcher: as `HungarianMatcher`, but the mask cost is a sigmoid focal loss,
    and both mask costs compare every pixel of the predicted masks with the targets downsampled
    (nearest) to the predictions' size.
    """

    def __init__(self, *args, focal_alpha: float = 0.25, focal_gamma: float = 2.0, **kwargs):
        """
        Args:
            args, kwargs: `cost_class`, `cost_mask` and `cost_dice`, as in `HungarianMatcher`.
            focal_alpha, focal_gamma: parameters of the focal cost.
        """
        super().__init__(*args, **kwargs, num_points=0)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def mask_costs(
        self, pred_masks: torch.Tensor, target_masks: torch.Tensor, generator: Optional[torch.Generator]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Focal and dice costs `(Q, T)` at every pixel of `pred_masks` `(Q, H, W)`."""
        target_masks = F.interpolate(target_masks[:, None], size=pred_masks.shape[-2:], mode="nearest")
        pred, target = pred_masks.flatten(1), target_masks.flatten(1)
        focal = pairwise_sigmoid_focal_cost(pred, target, self.focal_alpha, self.focal_gamma)
        return focal, pairwise_dice_cost(pred, target)

    def __repr__(self) -> str:
        return "\n".join([
            "Matcher " + type(self).__name__,
            f"    cost_class: {self.cost_class}",
            f"    cost_mask: {self.cost_mask} (sigmoid focal, alpha {self.focal_alpha}, gamma {self.focal_gamma})",
            f"    cost_dice: {self.cost_dice}",
        ])


def _sample_at(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Values `(N, P)` of masks `(N, H, W)` at the points `(P, 2)`, bilinearly interpolated."""
    return point_sample(masks[None], coords[None], align_corners=False)[0]


def _sample_queries_at(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """`_sample_at` (its plain reference) for the queries' masks, on the fused CPU deformable-attention op where
    `ms_deform_attn` would use it: one level, head and point, the masks as the channels of each pixel. Its
    sampling is grid_sample's (bilinear, zeros outside, align_corners=False), in the same order, so the
    values are equal; it reads each point's corners once for all the masks instead of once per mask."""
    if choose_implementation(masks)[0] != "cpu":
        return _sample_at(masks, coords)
    n, h, w = masks.shape
    value = masks.flatten(1).t().reshape(1, h * w, 1, n)
    locations = coords.view(1, -1, 1, 1, 1, 2)
    shapes = torch.tensor([[h, w]], dtype=torch.int64)
    starts = torch.zeros(1, dtype=torch.int64)
    weights = coords.new_ones(1, coords.shape[0], 1, 1, 1)
    return ms_deform_attn_cpu(value, shapes, starts, locations, weights)[0].t()


def _check_target(labels: torch.Tensor, masks: torch.Tensor, num_classes: int) -> None:
    if masks.dim() not in (3, 4) or len(masks) != len(labels):
        raise ValueError(
            f"HungarianMatcher: target 'masks' must have shape (N, H, W) (video: (N, T, H, W)) with N = "
            f"len(labels) = {len(labels)}, got {tuple(masks.shape)}"
        )
    # K itself is "no object", a class of the logits: upstream's video targets take an instance's label from the
    # last sampled frame, where an instance absent from that frame has class K (matched as "no object").
    if len(labels) and not bool(((labels >= 0) & (labels <= num_classes)).all()):
        raise ValueError(
            f"HungarianMatcher: target labels {labels.tolist()} must be in [0, {num_classes}] "
            f"({num_classes}: no object)"
        )
