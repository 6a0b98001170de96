import itertools

import pytest
import torch
import torch.nn.functional as F

from mask_former.modeling.matcher import HungarianMatcher


def _random_problem(num_queries, num_targets, num_classes=4, pred_size=(12, 10), gt_size=(24, 20)):
    pred_logits = torch.randn(num_queries, num_classes + 1)
    pred_masks = torch.randn(num_queries, *pred_size) * 3
    target = {
        "labels": torch.randint(0, num_classes, (num_targets,)),
        "masks": torch.rand(num_targets, *gt_size) > 0.5,
    }
    return pred_logits, pred_masks, target


def _brute_force_min_cost(costs):
    num_queries, num_targets = len(costs), len(costs[0])
    if num_targets <= num_queries:
        return min(
            sum(costs[q][t] for t, q in enumerate(queries))
            for queries in itertools.permutations(range(num_queries), num_targets)
        )
    return min(
        sum(costs[q][t] for q, t in enumerate(chosen))
        for chosen in itertools.permutations(range(num_targets), num_queries)
    )


def _assert_valid_assignment(rows, cols, num_queries, num_targets):
    assert rows.dtype == cols.dtype == torch.int64
    assert len(rows) == len(cols) == min(num_queries, num_targets)
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    assert all(0 <= r < num_queries for r in rows.tolist())
    assert all(0 <= c < num_targets for c in cols.tolist())
    assert rows.tolist() == sorted(rows.tolist())


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force(seed):
    torch.manual_seed(seed)
    num_queries, num_targets = int(torch.randint(1, 6, ())), int(torch.randint(1, 5, ()))
    pred_logits, pred_masks, target = _random_problem(num_queries, num_targets)
    matcher = HungarianMatcher(cost_class=2, cost_mask=5, cost_dice=5, num_points=64)

    costs = matcher.cost_matrix(
        pred_logits, pred_masks, target, generator=torch.Generator().manual_seed(seed)
    )
    outputs = {"pred_logits": pred_logits[None], "pred_masks": pred_masks[None]}
    [(rows, cols)] = matcher(outputs, [target], generator=torch.Generator().manual_seed(seed))

    assert costs.shape == (num_queries, num_targets)
    _assert_valid_assignment(rows, cols, num_queries, num_targets)
    matched_cost = costs[rows, cols].sum().item()
    assert matched_cost == pytest.approx(_brute_force_min_cost(costs.tolist()), abs=1e-5)


def _batch(sizes, num_queries=5):
    problems = [_random_problem(num_queries, n) for n in sizes]
    outputs = {
        "pred_logits": torch.stack([p[0] for p in problems]),
        "pred_masks": torch.stack([p[1] for p in problems]),
    }
    return outputs, [p[2] for p in problems]


def _per_image(matcher, outputs, targets, generator):
    return [
        matcher(
            {k: v[b : b + 1] for k, v in outputs.items()}, [target], generator=generator
        )[0]
        for b, target in enumerate(targets)
    ]


@pytest.mark.parametrize("use_generator", [True, False])
def test_batched_equals_per_image(use_generator):
    torch.manual_seed(0)
    outputs, targets = _batch([3, 0, 4, 2])
    matcher = HungarianMatcher(cost_class=1, cost_mask=1, cost_dice=1, num_points=16)

    def seeded():
        if use_generator:
            return torch.Generator().manual_seed(7)
        torch.manual_seed(7)
        return None

    batched = matcher(outputs, targets, generator=seeded())
    single = _per_image(matcher, outputs, targets, seeded())

    assert len(batched) == len(targets)
    for (rows_b, cols_b), (rows_s, cols_s) in zip(batched, single):
        assert torch.equal(rows_b, rows_s) and torch.equal(cols_b, cols_s)


def test_empty_targets():
    torch.manual_seed(0)
    outputs, targets = _batch([0, 0])
    for rows, cols in HungarianMatcher(num_points=8)(outputs, targets):
        assert rows.dtype == cols.dtype == torch.int64
        assert rows.numel() == cols.numel() == 0


@pytest.mark.parametrize("bad", [float("inf"), -float("inf"), float("nan")])
def test_non_finite_predictions_give_valid_assignment(bad):
    torch.manual_seed(0)
    outputs, targets = _batch([3, 4], num_queries=4)
    outputs["pred_logits"][0, 1, 2] = bad
    outputs["pred_masks"][0, 2, 3:, :] = bad
    outputs["pred_logits"][1] = bad
    outputs["pred_masks"][1] = bad

    indices = HungarianMatcher(cost_class=2, cost_mask=5, cost_dice=5, num_points=32)(
        outputs, targets
    )

    for (rows, cols), target in zip(indices, targets):
        _assert_valid_assignment(rows, cols, 4, len(target["labels"]))


def test_non_finite_costs_are_avoided_when_possible():
    torch.manual_seed(0)
    pred_logits, pred_masks, target = _random_problem(3, 1)
    pred_logits[0] = float("nan")
    pred_logits[2] = float("nan")
    outputs = {"pred_logits": pred_logits[None], "pred_masks": pred_masks[None]}

    [(rows, cols)] = HungarianMatcher(num_points=32)(outputs, [target])

    assert rows.tolist() == [1] and cols.tolist() == [0]


def test_class_cost_only_picks_the_obvious_assignment():
    torch.manual_seed(0)
    num_classes = 5
    query_classes = torch.tensor([3, 0, 4, 1, 2])
    pred_logits = F.one_hot(query_classes, num_classes + 1).float() * 10
    target_labels = torch.tensor([2, 3, 1])
    target = {"labels": target_labels, "masks": torch.rand(3, 8, 8) > 0.5}
    outputs = {"pred_logits": pred_logits[None], "pred_masks": torch.randn(1, 5, 8, 8)}

    [(rows, cols)] = HungarianMatcher(cost_class=1, cost_mask=0, cost_dice=0, num_points=16)(
        outputs, [target]
    )

    assert torch.equal(query_classes[rows], target_labels[cols])
    assert rows.tolist() == [0, 3, 4]


def test_dense_points_equal_per_pixel_costs():
    torch.manual_seed(0)
    pred_logits, pred_masks, target = _random_problem(3, 2, pred_size=(6, 7), gt_size=(6, 7))
    matcher = HungarianMatcher(cost_class=0, cost_mask=1, cost_dice=0, num_points=0)
    dice_matcher = HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=1, num_points=0)

    bce = matcher.cost_matrix(pred_logits, pred_masks, target)
    dice = dice_matcher.cost_matrix(pred_logits, pred_masks, target)

    gt = target["masks"].float()
    for q in range(3):
        for t in range(2):
            expected_bce = F.binary_cross_entropy_with_logits(pred_masks[q], gt[t])
            probs = pred_masks[q].sigmoid()
            expected_dice = 1 - (2 * (probs * gt[t]).sum() + 1) / (probs.sum() + gt[t].sum() + 1)
            assert bce[q, t].item() == pytest.approx(expected_bce.item(), rel=1e-5)
            assert dice[q, t].item() == pytest.approx(expected_dice.item(), rel=1e-5)


def test_costs_are_float32_under_autocast():
    torch.manual_seed(0)
    pred_logits, pred_masks, target = _random_problem(4, 3)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        costs = HungarianMatcher(num_points=16).cost_matrix(
            pred_logits.bfloat16(), pred_masks.bfloat16(), target
        )
    assert costs.dtype == torch.float32


def test_bad_input_raises():
    with pytest.raises(ValueError, match="all 0"):
        HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0)
    torch.manual_seed(0)
    outputs, targets = _batch([2])
    targets[0]["labels"] = torch.tensor([1, 5])
    with pytest.raises(ValueError, match=r"labels \[1, 5\] must be in \[0, 4\]"):
        HungarianMatcher(num_points=8)(outputs, targets)
    targets[0]["labels"] = torch.tensor([1, 4])  # "no object", as upstream's video targets give an absent instance
    assert [len(i) for i, _ in HungarianMatcher(num_points=8)(outputs, targets)] == [2]
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        HungarianMatcher(num_points=8)(outputs, targets * 2)


def test_pairwise_focal_cost_is_the_focal_loss_of_each_pair():
    from torchvision.ops import sigmoid_focal_loss

    from mask_former.modeling.matcher import pairwise_sigmoid_focal_cost

    torch.manual_seed(0)
    logits, targets = torch.randn(5, 30) * 3, (torch.rand(4, 30) > 0.5).float()
    costs = pairwise_sigmoid_focal_cost(logits, targets)
    expected = torch.tensor([[sigmoid_focal_loss(p, t, reduction="mean").item() for t in targets] for p in logits])
    torch.testing.assert_close(costs, expected)


@pytest.mark.parametrize("seed", range(4))
def test_full_mask_matcher_costs_on_nearest_downsampled_targets(seed):
    """v1's matcher compares every predicted pixel with the target downsampled (nearest) to it."""
    from torchvision.ops import sigmoid_focal_loss

    from mask_former.modeling.matcher import FullMaskHungarianMatcher

    torch.manual_seed(seed)
    pred_logits, pred_masks, target = _random_problem(5, 3)
    matcher = FullMaskHungarianMatcher(cost_class=1, cost_mask=20, cost_dice=1)
    costs = matcher.cost_matrix(pred_logits, pred_masks, target)

    small = target["masks"].float()[:, ::2, ::2]  # nearest from 24 x 20 to 12 x 10
    probs = pred_logits.softmax(-1)
    expected = torch.empty(5, 3)
    for q in range(5):
        for t in range(3):
            p, g = pred_masks[q].flatten(), small[t].flatten()
            dice = 1 - (2 * (p.sigmoid() * g).sum() + 1) / (p.sigmoid().sum() + g.sum() + 1)
            focal = sigmoid_focal_loss(p, g, reduction="mean")
            expected[q, t] = -probs[q, target["labels"][t]] + 20 * focal + dice
    torch.testing.assert_close(costs, expected)
    [(rows, cols)] = matcher({"pred_logits": pred_logits[None], "pred_masks": pred_masks[None]}, [target])
    assert sum(expected[r, c] for r, c in zip(rows.tolist(), cols.tolist())) == pytest.approx(
        _brute_force_min_cost(expected.tolist()), rel=1e-5)


def test_softplus_ce_cost_equals_the_plain_one():
    from mask_former.modeling.matcher import pairwise_sigmoid_ce_cost, pairwise_sigmoid_ce_cost_by_softplus

    torch.manual_seed(0)
    logits = torch.randn(20, 500) * 6
    logits[0, :5] = torch.tensor([40.0, -40.0, 0.0, 1e-4, -25.0])  # saturated and near-zero logits
    for targets in ((torch.rand(7, 500) > 0.5).float(), torch.rand(7, 500)):  # 0/1 and interpolated targets
        expected = pairwise_sigmoid_ce_cost(logits, targets)
        cost = pairwise_sigmoid_ce_cost_by_softplus(logits, targets)
        torch.testing.assert_close(cost, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", ["pytorch", "cpu"])
def test_query_points_sampled_like_point_sample(implementation, monkeypatch):
    """The matcher samples the queries' masks on the fused CPU op where it is built: the same values as
    detectron2's point_sample, at random points, on the borders and outside the map."""
    from mask_former.modeling.matcher import _sample_at, _sample_queries_at
    from mask_former.ops import kernel_unavailable_reason

    masks = torch.randn(37, 9, 13, generator=torch.Generator().manual_seed(0))
    if implementation == "cpu" and kernel_unavailable_reason("cpu", masks):
        pytest.skip(kernel_unavailable_reason("cpu", masks))
    monkeypatch.setenv("MASK_FORMER_DEFORM_ATTN", implementation)
    coords = torch.cat([
        torch.rand(500, 2, generator=torch.Generator().manual_seed(1)),
        torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-0.1, 0.5], [0.5, 1.2], [1 / 26, 1 / 18]]),
    ])
    torch.testing.assert_close(_sample_queries_at(masks, coords), _sample_at(masks, coords), rtol=0, atol=1e-6)


def test_pairwise_dot_is_the_plain_product_in_either_layout():
    """The matcher's `a @ b.T`, taken as `(b @ a.T).T` for speed, for a contiguous `a` and for the transposed `a`
    that the fused point sampling returns."""
    from mask_former.modeling.matcher import pairwise_dot

    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(30, 700, generator=generator), torch.rand(5, 700, generator=generator)
    for left in (a, a.t().contiguous().t()):
        torch.testing.assert_close(pairwise_dot(left, b), a @ b.T, rtol=1e-5, atol=1e-5)
