import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from mask_former.engine import launch
from mask_former.modeling.criterion import SetCriterion
from mask_former.modeling.matcher import HungarianMatcher

NUM_CLASSES = 3
SIZE = 256


def _criterion(eos_coef=0.1, matcher=None, num_points=2000, importance_sample_ratio=0.75):
    return SetCriterion(
        NUM_CLASSES,
        matcher=matcher or HungarianMatcher(cost_class=2, cost_mask=5, cost_dice=5, num_points=500),
        weight_dict={"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
        eos_coef=eos_coef,
        losses=["labels", "masks"],
        num_points=num_points,
        oversample_ratio=3.0,
        importance_sample_ratio=importance_sample_ratio,
    )


def _half_plane_masks():
    """Two complementary masks: left part (x < 100) and the rest, with one straight boundary."""
    left = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    left[:, :100] = True
    return torch.stack([left, ~left])


def _perfect_outputs(target_masks, labels, num_queries=4, logit=10.0):
    """Queries 0..T-1 predict the targets exactly, the others predict "no object"."""
    num_targets = len(labels)
    classes = torch.full((num_queries,), NUM_CLASSES)
    classes[:num_targets] = labels
    pred_logits = F.one_hot(classes, NUM_CLASSES + 1).float() * 20
    pred_masks = torch.full((num_queries, SIZE, SIZE), -logit)
    pred_masks[:num_targets] = logit * (2 * target_masks.float() - 1)
    return {"pred_logits": pred_logits[None], "pred_masks": pred_masks[None]}


def test_perfect_predictions_give_small_losses():
    torch.manual_seed(0)
    masks, labels = _half_plane_masks(), torch.tensor([2, 0])
    losses = _criterion()(_perfect_outputs(masks, labels), [{"labels": labels, "masks": masks}])

    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    assert losses["loss_ce"].item() < 1e-6
    # Only points within one pixel of the boundary, where the target is interpolated, cost.
    assert losses["loss_mask"].item() < 0.05
    assert losses["loss_dice"].item() < 0.02


def test_complement_predictions_give_large_losses():
    torch.manual_seed(0)
    masks, labels = _half_plane_masks()[:1], torch.tensor([1])
    outputs = _perfect_outputs(~masks, labels, num_queries=1)
    losses = _criterion()(outputs, [{"labels": labels, "masks": masks}])

    assert losses["loss_mask"].item() > 5
    assert losses["loss_dice"].item() > 0.99


@pytest.mark.parametrize("eos_coef", [0.1, 1.0])
def test_no_object_class_is_weighted_by_eos_coef(eos_coef):
    torch.manual_seed(0)
    num_queries = 5
    pred_logits = torch.randn(2, num_queries, NUM_CLASSES + 1)
    # Queries 1 and 3 of image 0, and query 4 of image 1, clearly predict the target classes.
    pred_logits[0, 1, 2] = pred_logits[0, 3, 0] = pred_logits[1, 4, 1] = 8.0
    targets = [
        {"labels": torch.tensor([0, 2]), "masks": torch.zeros(2, 8, 8)},
        {"labels": torch.tensor([1]), "masks": torch.zeros(1, 8, 8)},
    ]
    outputs = {"pred_logits": pred_logits, "pred_masks": torch.randn(2, num_queries, 8, 8)}
    class_matcher = HungarianMatcher(cost_class=1, cost_mask=0, cost_dice=0, num_points=4)
    criterion = _criterion(eos_coef=eos_coef, matcher=class_matcher)

    loss_ce = criterion(outputs, targets)["loss_ce"]

    target_classes = torch.full((2, num_queries), NUM_CLASSES)
    target_classes[0, 1], target_classes[0, 3], target_classes[1, 4] = 2, 0, 1
    weights = torch.ones(NUM_CLASSES + 1)
    weights[-1] = eos_coef
    log_probs = pred_logits.log_softmax(-1).flatten(0, 1)
    flat_classes = target_classes.flatten()
    per_query = -log_probs[torch.arange(len(flat_classes)), flat_classes] * weights[flat_classes]
    expected = per_query.sum() / weights[flat_classes].sum()
    assert loss_ce.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss_ce.item() == pytest.approx(
        F.cross_entropy(pred_logits.transpose(1, 2), target_classes, weights).item(), rel=1e-5
    )


def _random_outputs(batch_size=2, num_queries=5, size=16, num_aux=0):
    def layer():
        logits = torch.randn(batch_size, num_queries, NUM_CLASSES + 1, requires_grad=True)
        masks = torch.randn(batch_size, num_queries, size, size, requires_grad=True)
        return {"pred_logits": logits, "pred_masks": masks}

    outputs = layer()
    outputs["aux_outputs"] = [layer() for _ in range(num_aux)]
    return outputs


def _random_targets(counts, size=32):
    return [
        {"labels": torch.randint(0, NUM_CLASSES, (n,)), "masks": torch.rand(n, size, size) > 0.5}
        for n in counts
    ]


def test_aux_outputs_give_suffixed_losses():
    torch.manual_seed(0)
    outputs = _random_outputs(num_aux=2)
    outputs["aux_outputs"][1] = {k: v for k, v in outputs.items() if k != "aux_outputs"}
    class_matcher = HungarianMatcher(cost_class=1, cost_mask=0, cost_dice=0, num_points=4)

    losses = _criterion(matcher=class_matcher)(outputs, _random_targets([2, 3]))

    names = ["loss_ce", "loss_mask", "loss_dice"]
    assert set(losses) == {n + s for n in names for s in ["", "_0", "_1"]}
    assert losses["loss_ce_1"].item() == losses["loss_ce"].item()
    assert losses["loss_ce_0"].item() != losses["loss_ce"].item()


def test_image_without_targets_adds_no_mask_loss():
    torch.manual_seed(0)
    outputs = _random_outputs(batch_size=2)
    targets = _random_targets([0, 3])
    criterion = _criterion(num_points=64)

    torch.manual_seed(1)
    both = criterion(outputs, targets)
    torch.manual_seed(1)
    second_only = criterion({k: v[1:] for k, v in outputs.items()}, targets[1:])

    assert both["loss_mask"].item() == pytest.approx(second_only["loss_mask"].item(), rel=1e-6)
    assert both["loss_dice"].item() == pytest.approx(second_only["loss_dice"].item(), rel=1e-6)


def test_no_targets_at_all_gives_zero_mask_losses_and_backward_works():
    torch.manual_seed(0)
    outputs = _random_outputs(batch_size=2, num_aux=1)

    losses = _criterion(num_points=64)(outputs, _random_targets([0, 0]))
    sum(losses.values()).backward()

    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    assert losses["loss_ce"].item() > 0
    assert torch.count_nonzero(outputs["pred_masks"].grad) == 0
    assert torch.isfinite(outputs["pred_logits"].grad).all()


def test_backward_gives_finite_gradients():
    torch.manual_seed(0)
    outputs = _random_outputs(batch_size=2, num_aux=1)
    criterion = _criterion(num_points=64)

    losses = criterion(outputs, _random_targets([2, 4], size=24))
    sum(losses.values()).backward()

    for layer in [outputs, outputs["aux_outputs"][0]]:
        for key in ["pred_logits", "pred_masks"]:
            grad = layer[key].grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_targets_of_different_sizes_are_padded():
    torch.manual_seed(0)
    outputs = _random_outputs(batch_size=2)
    targets = _random_targets([2], size=20) + _random_targets([1], size=28)

    losses = _criterion(num_points=64)(outputs, targets)

    assert all(math.isfinite(v.item()) for v in losses.values())


def test_unknown_loss_name_raises():
    with pytest.raises(ValueError, match=r"unknown losses \['boxes'\]"):
        SetCriterion(
            NUM_CLASSES,
            matcher=HungarianMatcher(),
            weight_dict={},
            eos_coef=0.1,
            losses=["labels", "boxes"],
            num_points=16,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
        )


# Targets of each worker: 5 masks on rank 0 and 1 on rank 1, so 3 per worker on average.
TARGET_COUNTS_OF_RANK = [[2, 3], [1]]


def _worker_inputs(rank):
    torch.manual_seed(rank)
    counts = TARGET_COUNTS_OF_RANK[rank]
    return _random_outputs(batch_size=len(counts)), _random_targets(counts)


def _losses_of(outputs, targets):
    torch.manual_seed(100)  # the same point sampling in the workers and in the reference
    return {name: value.item() for name, value in _criterion(num_points=64)(outputs, targets).items()}


def _num_masks_worker(result_dir):
    rank = dist.get_rank()
    outputs, targets = _worker_inputs(rank)
    torch.save(
        {
            "num_masks": SetCriterion._average_num_masks(targets, torch.device("cpu")),
            "losses": _losses_of(outputs, targets),
        },
        f"{result_dir}/rank{rank}.pt",
    )


def test_num_masks_is_averaged_over_workers(tmp_path):
    launch(_num_masks_worker, 2, dist_url="auto", args=(str(tmp_path),), device="cpu")
    for rank, counts in enumerate(TARGET_COUNTS_OF_RANK):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["num_masks"] == 3.0
        alone = _losses_of(*_worker_inputs(rank))  # one process: normalized by its own count
        scale = sum(counts) / 3.0
        assert result["losses"]["loss_mask"] == pytest.approx(alone["loss_mask"] * scale, rel=1e-5)
        assert result["losses"]["loss_dice"] == pytest.approx(alone["loss_dice"] * scale, rel=1e-5)
        assert result["losses"]["loss_ce"] == pytest.approx(alone["loss_ce"], rel=1e-6)
    assert SetCriterion._average_num_masks(_random_targets([0]), torch.device("cpu")) == 1.0


def test_sigmoid_focal_loss_matches_torchvision():
    from torchvision.ops import sigmoid_focal_loss as reference

    from mask_former.modeling.criterion import sigmoid_focal_loss

    torch.manual_seed(0)
    logits, targets = torch.randn(5, 40) * 3, (torch.rand(5, 40) > 0.5).float()
    for alpha, gamma in [(0.25, 2.0), (0.5, 1.0), (-1, 2.0)]:
        expected = reference(logits, targets, alpha=alpha, gamma=gamma, reduction="none").mean(1)
        torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha, gamma), expected)


def _full_mask_criterion():
    from mask_former.modeling.criterion import FullMaskSetCriterion
    from mask_former.modeling.matcher import FullMaskHungarianMatcher

    return FullMaskSetCriterion(
        NUM_CLASSES,
        matcher=FullMaskHungarianMatcher(cost_class=1, cost_mask=20, cost_dice=1),
        weight_dict={"loss_ce": 1.0, "loss_mask": 20.0, "loss_dice": 1.0},
        eos_coef=0.1,
        losses=["labels", "masks"],
    )


def test_full_mask_losses_are_v1s_formula_on_upsampled_predictions():
    """loss_mask / loss_dice: focal and dice of every pixel, predictions upsampled bilinearly to
    the (padded) target size, summed over matched masks and divided by the number of targets."""
    from torchvision.ops import sigmoid_focal_loss as reference

    torch.manual_seed(0)
    pred_masks = torch.randn(2, 4, 8, 10) * 3
    outputs = {"pred_logits": torch.randn(2, 4, NUM_CLASSES + 1), "pred_masks": pred_masks}
    targets = [
        {"labels": torch.tensor([0, 2]), "masks": torch.rand(2, 32, 40) > 0.5},
        {"labels": torch.tensor([1]), "masks": torch.rand(1, 24, 40) > 0.5},
    ]
    criterion = _full_mask_criterion()
    indices = criterion.matcher(outputs, targets)
    losses = criterion(outputs, targets)

    focal, dice = 0.0, 0.0
    for b, (rows, cols) in enumerate(indices):
        for q, t in zip(rows.tolist(), cols.tolist()):
            target = F.pad(targets[b]["masks"][t].float(), (0, 0, 0, 32 - targets[b]["masks"].shape[1]))
            logits = F.interpolate(pred_masks[b, q][None, None], size=(32, 40), mode="bilinear")[0, 0]
            focal += reference(logits, target, alpha=0.25, gamma=2, reduction="mean")
            probs = logits.sigmoid()
            dice += 1 - (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)
    assert losses["loss_mask"].item() == pytest.approx(focal.item() / 3, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(dice.item() / 3, rel=1e-5)
    assert "num_points" not in repr(criterion) and "focal_alpha: 0.25" in repr(criterion)


def test_full_mask_perfect_predictions_give_near_zero_losses():
    masks, labels = _half_plane_masks(), torch.tensor([2, 0])
    outputs = _perfect_outputs(masks, labels, logit=20.0)
    losses = _full_mask_criterion()(outputs, [{"labels": labels, "masks": masks}])
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    assert all(v.item() < 1e-6 for v in losses.values())


@pytest.mark.parametrize("importance_sample_ratio", [0.75, 0.0, 1.0, 0.01])
@pytest.mark.parametrize("tied", [False, True])
def test_uncertain_point_coords_keeps_the_reference_points(importance_sample_ratio, tied):
    from detectron2.projects.point_rend.point_features import get_uncertain_point_coords_with_randomness

    from mask_former.modeling.criterion import calculate_uncertainty, uncertain_point_coords

    logits = torch.randn(5, 1, 24, 31)
    if tied:  # few distinct values: many equal uncertainties at the top-k boundary
        logits = logits.round()
    args = (500, 3.0, importance_sample_ratio)
    torch.manual_seed(3)
    ours = uncertain_point_coords(logits, *args)
    after_ours = torch.rand(1)
    torch.manual_seed(3)
    reference = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, *args)
    assert torch.equal(torch.rand(1), after_ours)  # the same random draws
    assert ours.shape == reference.shape == (5, 500, 2)
    kept = int(importance_sample_ratio * 500)
    assert torch.equal(ours[:, kept:], reference[:, kept:])
    for mask_ours, mask_reference in zip(ours[:, :kept], reference[:, :kept]):
        assert sorted(map(tuple, mask_ours.tolist())) == sorted(map(tuple, mask_reference.tolist()))
