"""Each CPU fast path of mask_former.modeling.fast_paths against its plain reference."""
from pathlib import Path

import pytest
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch.nn import functional as F

from mask_former.assembly import assemble_panoptic
from mask_former.layers import onednn_linear
from mask_former.modeling.fast_paths.frozen_bn import (
    FrozenBNConv2d,
    conv_then_norm,
    fold_frozen_batch_norm,
    folds_frozen_batch_norm,
)
from mask_former.modeling.fast_paths.kept_queries import (
    count_true,
    kept_panoptic_tensors,
    mean_inside_probability,
    mean_inside_probability_per_query,
    panoptic_stage,
    panoptic_tensors,
    query_mask_scores,
    uses_kept_queries,
)
from mask_former.modeling.fast_paths.mask_logits import (
    joined_mask_logits,
    joins_mask_logits,
    mask_logits,
    mask_logits_reference,
    onednn_mask_logits,
    uses_onednn_mask_logits,
)
from mask_former.modeling.postprocessing import panoptic_inference

# Mask logits: the joined backward on the supervised rows against the einsum.

DECODER = torch.nn.Module()  # the module that computes the logits, in training mode


def _inputs(channels_last, batch=3, queries=20, channels=16, size=(7, 9)):
    torch.manual_seed(0)
    embed = torch.randn(batch, queries, channels, dtype=torch.float64, requires_grad=True)
    features = torch.randn(batch, channels, *size, dtype=torch.float64)
    if channels_last:
        features = features.to(memory_format=torch.channels_last)
    return embed, features.requires_grad_()


def _sparse_grad(shape, rows):
    """A gradient that is zero except at the (image, query) rows given, as the matched-mask losses give."""
    grad = torch.zeros(shape, dtype=torch.float64)
    for b, q in rows:
        grad[b, q] = torch.randn(shape[2:], dtype=torch.float64)
    return grad


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("rows", [[(0, 3), (0, 11), (2, 0)], [], [(b, q) for b in range(3) for q in range(20)]])
def test_mask_logits_gradients_equal_the_einsums(channels_last, rows):
    embed, features = _inputs(channels_last)
    out, reference = mask_logits(embed, features, DECODER), mask_logits_reference(embed, features)
    assert torch.equal(out, reference)
    grad = _sparse_grad(out.shape, rows)
    ours = torch.autograd.grad(out, (embed, features), grad)
    theirs = torch.autograd.grad(reference, (embed, features), grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_mask_logits_keeps_non_finite_rows():
    embed, features = _inputs(False)
    grad = _sparse_grad((3, 20, 7, 9), [(1, 4)])
    grad[0, 2, 3, 3], grad[2, 5, 0, 0] = float("nan"), float("inf")
    ours = torch.autograd.grad(mask_logits(embed, features, DECODER), (embed, features), grad)
    theirs = torch.autograd.grad(mask_logits_reference(embed, features), (embed, features), grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("wanted", ["embed", "features"])
def test_mask_logits_gives_only_the_wanted_gradient(wanted):
    embed, features = _inputs(True)
    frozen = features if wanted == "embed" else embed
    frozen.requires_grad_(False)
    out = mask_logits(embed, features, DECODER)
    grad = _sparse_grad(out.shape, [(1, 2)])
    target = embed if wanted == "embed" else features
    (ours,) = torch.autograd.grad(out, target, grad)
    (theirs,) = torch.autograd.grad(mask_logits_reference(embed, features), target, grad)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_mask_logits_gradcheck():
    embed, features = _inputs(True, batch=2, queries=4, channels=3, size=(3, 4))
    assert torch.autograd.gradcheck(lambda e, f: mask_logits(e, f, DECODER), (embed, features))


def test_mask_logits_without_autograd_is_the_einsum():
    embed, features = _inputs(False)
    with torch.no_grad():
        assert torch.equal(mask_logits(embed, features, DECODER), mask_logits_reference(embed, features))


def test_joined_mask_logits_gradients_equal_the_einsums():
    torch.manual_seed(1)
    features = torch.randn(2, 16, 7, 9, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    embeds = [torch.randn(2, 20, 16, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    with torch.no_grad():
        masks = [mask_logits_reference(e, features) for e in embeds]
    joined = joined_mask_logits(features, embeds, masks)
    reference = [mask_logits_reference(e, features) for e in embeds]
    for a, b in zip(joined, reference):
        assert torch.equal(a, b) and a.requires_grad
    # Layer 1 gets no gradient at all (its output is unused), layer 2 only in image 1.
    grads = [_sparse_grad((2, 20, 7, 9), [(0, 1), (1, 7)]), None, _sparse_grad((2, 20, 7, 9), [(1, 0), (1, 19)])]
    used = [i for i, g in enumerate(grads) if g is not None]
    inputs, used_grads = [features, *embeds], [grads[i] for i in used]
    ours = torch.autograd.grad([joined[i] for i in used], inputs, used_grads, allow_unused=True)
    theirs = torch.autograd.grad([reference[i] for i in used], inputs, used_grads, allow_unused=True)
    for a, b in zip(ours, theirs):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_mask_logits_gradients_of_transposed_features():
    embed, features = _inputs(False)
    features = features.detach().transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()  # H fastest
    out = mask_logits(embed, features, DECODER)
    grad = _sparse_grad(out.shape, [(0, 1), (2, 5)])
    ours = torch.autograd.grad(out, (embed, features), grad)
    theirs = torch.autograd.grad(mask_logits_reference(embed, features), (embed, features), grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_mask_logits_join_on_the_cpu_under_autograd_only():
    features = torch.zeros(1, 2, 3, 3)
    assert joins_mask_logits(features)
    with torch.no_grad():
        assert not joins_mask_logits(features)
    if torch.cuda.is_available():
        assert not joins_mask_logits(features.cuda())


needs_onednn_bfloat16 = pytest.mark.skipif(
    not (onednn_linear.ONEDNN_LINEAR_AVAILABLE and onednn_linear.ONEDNN_BFLOAT16_SUPPORTED),
    reason="oneDNN runs no bfloat16 products on this CPU",
)


def bfloat16_autocast(enabled: bool = True):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


@needs_onednn_bfloat16
@pytest.mark.parametrize("batch", [1, 2])
def test_onednn_mask_logits_equal_the_einsum_under_bfloat16_autocast(batch):
    torch.manual_seed(0)
    embed = torch.randn(batch, 20, 32)
    features = torch.randn(batch, 32, 12, 10).to(memory_format=torch.channels_last)
    decoder = torch.nn.Module().eval()
    with torch.no_grad(), bfloat16_autocast():
        assert uses_onednn_mask_logits(decoder, features)
        fast, reference = mask_logits(embed, features, decoder), mask_logits_reference(embed, features)
    assert fast.dtype == reference.dtype == torch.bfloat16
    assert fast.shape == reference.shape and fast.is_contiguous()
    torch.testing.assert_close(fast, reference, rtol=1.6e-2, atol=2e-2)


@needs_onednn_bfloat16
def test_onednn_mask_logits_only_in_bfloat16_inference_on_channels_last_features():
    features = torch.randn(1, 8, 4, 4).to(memory_format=torch.channels_last)
    decoder = torch.nn.Module()
    with bfloat16_autocast():
        assert not uses_onednn_mask_logits(decoder.train(), features)
        decoder.eval()
        assert not uses_onednn_mask_logits(decoder, features)  # autograd on
    with torch.no_grad():
        assert not uses_onednn_mask_logits(decoder, features)  # float32: the einsum
        with bfloat16_autocast():
            assert uses_onednn_mask_logits(decoder, features)
            assert not uses_onednn_mask_logits(decoder, features.contiguous())  # [C, HW] rows: the einsum reads them
            assert not uses_onednn_mask_logits(decoder, features.double())
            assert torch.equal(onednn_mask_logits(torch.zeros(1, 3, 8), features).float(), torch.zeros(1, 3, 4, 4))


# Frozen batch norm: folded into the convolution against the convolution then the norm.


def _conv_with_frozen_bn(**kwargs):
    conv = Conv2d(3, 4, 3, padding=1, bias=False, norm=FrozenBatchNorm2d(4), **kwargs)
    conv.norm.running_mean.normal_()
    conv.norm.running_var.uniform_(0.5, 1.5)
    conv.norm.weight.normal_()
    return conv


def test_folded_conv_matches_conv_then_norm_in_training_and_eval():
    torch.manual_seed(0)
    conv = _conv_with_frozen_bn(activation=torch.relu)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    expected = conv_then_norm(conv, x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), conv.weight)
    fold_frozen_batch_norm(conv)
    assert type(conv) is FrozenBNConv2d
    result = conv(x)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(result.sum(), conv.weight)[0], expected_grad, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(conv.eval()(x), expected, rtol=1e-5, atol=1e-6)


def test_only_convs_with_a_frozen_norm_are_folded():
    frozen, trainable = Conv2d(3, 4, 1, norm=FrozenBatchNorm2d(4)), Conv2d(3, 4, 1, norm=torch.nn.BatchNorm2d(4))
    assert folds_frozen_batch_norm(frozen) and not folds_frozen_batch_norm(trainable)
    fold_frozen_batch_norm(torch.nn.Sequential(frozen, trainable))
    assert type(frozen) is FrozenBNConv2d and type(trainable) is Conv2d


def test_folded_conv_runs_as_a_plain_conv_once_its_norm_is_replaced():
    torch.manual_seed(0)
    conv = Conv2d(3, 4, 3, padding=1, bias=False, norm=FrozenBatchNorm2d(4), activation=torch.relu)
    conv.norm.running_mean.normal_()
    x = torch.randn(2, 3, 8, 8)
    expected = conv(x)
    fold_frozen_batch_norm(conv)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-6)
    conv.norm = torch.nn.BatchNorm2d(4).eval()
    torch.testing.assert_close(conv(x), torch.relu(conv.norm(torch.nn.functional.conv2d(x, conv.weight, None, 1, 1))))


def test_folded_conv_follows_weight_and_norm_changes_in_eval():
    torch.manual_seed(0)
    plain = Conv2d(3, 4, 3, padding=1, bias=False, norm=FrozenBatchNorm2d(4)).eval()
    folded = fold_frozen_batch_norm(Conv2d(3, 4, 3, padding=1, bias=False, norm=FrozenBatchNorm2d(4)).eval())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for change in range(4):
            folded.load_state_dict(plain.state_dict())
            torch.testing.assert_close(folded(x), plain(x), rtol=1e-5, atol=1e-6, msg=f"change {change}")
            torch.testing.assert_close(folded(x), plain(x), rtol=1e-5, atol=1e-6, msg=f"change {change}, again")
            [plain.weight, plain.norm.running_mean, plain.norm.running_var][change % 3].add_(0.5)
        folded.load_state_dict(plain.state_dict())
        folded.to(torch.float64)
        torch.testing.assert_close(folded(x.double()), plain.to(torch.float64)(x.double()), rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x.double()), plain(x.double()), rtol=1e-5, atol=1e-6)


# Kept queries: panoptic and instance post-processing on the kept queries against every query.


def panoptic_cases():
    """(mask_cls, mask_prob) with many, few and no kept queries, and exact score ties between queries."""
    torch.manual_seed(3)
    mask_cls = torch.randn(12, 6) * 4
    mask_cls[5] = mask_cls[2]  # equal scores and, below, equal masks on half the image: ties
    mask_prob = torch.rand(12, 16, 20)
    mask_prob[5, :8] = mask_prob[2, :8]
    return [(mask_cls, mask_prob), (mask_cls.clone().fill_(0), mask_prob), (mask_cls * 0.2, mask_prob)]


def masks_panoptic_tensors(mask_cls, mask_prob, *, num_classes, object_mask_threshold, require_mask_confidence):
    """The panoptic tensor stage spelled out on [Q, H, W] masks, query by query: upstream's loop."""
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    weighted = torch.stack([scores[q] * mask_prob[q] if keep[q] else torch.full_like(mask_prob[q], -1.0)
                            for q in range(len(keep))])
    owner = weighted.argmax(0)
    owned = torch.stack([owner == q for q in range(len(keep))])
    confident = mask_prob >= 0.5
    segment = owned & confident if require_mask_confidence else owned
    return {
        "labels": labels, "keep": keep, "owner": owner,
        "pixel_kept": torch.stack([segment[q] & keep[q] for q in range(len(keep))]).any(0),
        "owned_areas": owned.flatten(1).sum(1), "original_areas": confident.flatten(1).sum(1),
        "segment_areas": segment.flatten(1).sum(1),
    }


def test_panoptic_tensors_equal_the_per_query_mask_computation():
    for mask_cls, mask_prob in panoptic_cases():
        for confidence in (True, False):
            options = dict(num_classes=5, object_mask_threshold=0.4, require_mask_confidence=confidence)
            expected = masks_panoptic_tensors(mask_cls, mask_prob, **options)
            result = panoptic_tensors(mask_cls, mask_prob, **options)
            assert set(result) == set(expected)
            for name, value in expected.items():
                assert torch.equal(result[name], value), name


def test_kept_panoptic_tensors_match_the_reference_where_assembly_reads_them():
    for mask_cls, mask_prob in panoptic_cases():
        for confidence in (True, False):
            options = dict(num_classes=5, object_mask_threshold=0.4, require_mask_confidence=confidence)
            reference = panoptic_tensors(mask_cls, mask_prob, **options)
            fast = kept_panoptic_tensors(mask_cls, mask_prob, **options)
            for name in ("labels", "keep", "pixel_kept"):
                assert torch.equal(fast[name], reference[name]), name
            pixels = reference["pixel_kept"]
            assert torch.equal(fast["owner"][pixels], reference["owner"][pixels])
            kept = reference["keep"]
            for name in ("owned_areas", "original_areas", "segment_areas"):
                assert torch.equal(fast[name][kept], reference[name][kept]), name
            args = dict(thing_classes={0, 1, 2}, overlap_threshold=0.3)
            expected = assemble_panoptic(**{k: v.numpy() for k, v in reference.items()}, **args)
            seg, info = panoptic_inference(mask_cls, mask_prob, **{k: v for k, v in options.items()}, **args)
            assert torch.equal(seg, torch.from_numpy(expected[0])) and info == expected[1]


def test_mean_inside_probability_per_query_matches_the_reference():
    torch.manual_seed(5)
    mask_pred = torch.randn(11, 13, 9) * 2
    mask_prob, query_masks = mask_pred.sigmoid(), mask_pred > 0
    query_masks[4] = False  # an empty mask scores 0
    reference = mean_inside_probability(mask_prob, query_masks)
    for queries in (torch.arange(11), torch.tensor([0, 4, 5, 9, 10]), torch.tensor([3])):
        fast = mean_inside_probability_per_query(mask_prob, query_masks, queries)
        torch.testing.assert_close(fast, reference[queries], rtol=1e-6, atol=0)
    assert mean_inside_probability_per_query(mask_prob, query_masks, torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_count_true_counts_like_a_sum():
    masks = torch.rand(4, 7, 300) > 0.3
    assert torch.equal(count_true(masks), masks.flatten(1).sum(1))
    assert torch.equal(count_true(masks[:, :, ::3]), masks[:, :, ::3].flatten(1).sum(1))


def test_kept_query_paths_are_taken_eagerly_and_the_references_in_a_traced_graph():
    mask_cls, mask_prob = panoptic_cases()[0]
    options = dict(num_classes=5, object_mask_threshold=0.4)
    chosen = []

    def stage(prob):
        chosen.append(uses_kept_queries())
        return panoptic_stage(mask_cls, prob, **options)["owner"]

    traced = torch.jit.trace(stage, (mask_prob,), check_trace=False)
    assert chosen == [False]
    assert uses_kept_queries()
    assert torch.equal(traced(mask_prob), panoptic_tensors(mask_cls, mask_prob, **options)["owner"])
    queries = torch.tensor([1, 3])
    scores = query_mask_scores(mask_prob, mask_prob > 0.5, queries)
    reference = mean_inside_probability(mask_prob, mask_prob > 0.5)
    torch.testing.assert_close(scores[queries], reference[queries], rtol=1e-6, atol=0)
    assert not scores[[0, 2]].any()


@needs_onednn_bfloat16
def test_model_bfloat16_inference_takes_onednn_mask_logits_with_the_same_outputs(monkeypatch):
    """A narrow R50 Mask2Former in bfloat16 reaches the fast path (its channels-last backbone makes the mask features
    channels-last), and its outputs are those of the einsum."""
    from detectron2.modeling import build_model

    from helpers import cpu_sized_cfg
    from mask_former.modeling.fast_paths import mask_logits as module

    configs = Path(__file__).resolve().parents[1] / "configs"
    cfg = cpu_sized_cfg(configs / "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    cfg.MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE = "bfloat16"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch = [{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), "height": 64, "width": 64}]
    calls = []
    fast = module.onednn_mask_logits
    monkeypatch.setattr(module, "onednn_mask_logits", lambda *a: calls.append(1) or fast(*a))
    with torch.no_grad():
        outputs = model(batch)[0]
        assert calls
        monkeypatch.setattr(module, "uses_onednn_mask_logits", lambda *a: False)
        reference = model(batch)[0]
    torch.testing.assert_close(outputs["sem_seg"], reference["sem_seg"], rtol=1e-2, atol=1e-3)
    assert (outputs["panoptic_seg"][0] == reference["panoptic_seg"][0]).float().mean() > 0.99
