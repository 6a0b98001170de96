import pytest
import torch

from mask_former.modeling.layers import mask_logits, mask_logits_reference


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
    out, reference = mask_logits(embed, features), mask_logits_reference(embed, features)
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
    ours = torch.autograd.grad(mask_logits(embed, features), (embed, features), grad)
    theirs = torch.autograd.grad(mask_logits_reference(embed, features), (embed, features), grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("wanted", ["embed", "features"])
def test_mask_logits_gives_only_the_wanted_gradient(wanted):
    embed, features = _inputs(True)
    frozen = features if wanted == "embed" else embed
    frozen.requires_grad_(False)
    out = mask_logits(embed, features)
    grad = _sparse_grad(out.shape, [(1, 2)])
    target = embed if wanted == "embed" else features
    (ours,) = torch.autograd.grad(out, target, grad)
    (theirs,) = torch.autograd.grad(mask_logits_reference(embed, features), target, grad)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_mask_logits_gradcheck():
    embed, features = _inputs(True, batch=2, queries=4, channels=3, size=(3, 4))
    assert torch.autograd.gradcheck(mask_logits, (embed, features))


def test_mask_logits_without_autograd_is_the_einsum():
    embed, features = _inputs(False)
    with torch.no_grad():
        assert torch.equal(mask_logits(embed, features), mask_logits_reference(embed, features))


def test_joined_mask_logits_gradients_equal_the_einsums():
    from mask_former.modeling.layers import joined_mask_logits

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
    ours = torch.autograd.grad([joined[i] for i in used], [features, *embeds], [grads[i] for i in used], allow_unused=True)
    theirs = torch.autograd.grad([reference[i] for i in used], [features, *embeds], [grads[i] for i in used], allow_unused=True)
    for a, b in zip(ours, theirs):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_mask_logits_gradients_of_transposed_features():
    embed, features = _inputs(False)
    features = features.detach().transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()  # H fastest
    out = mask_logits(embed, features)
    grad = _sparse_grad(out.shape, [(0, 1), (2, 5)])
    ours = torch.autograd.grad(out, (embed, features), grad)
    theirs = torch.autograd.grad(mask_logits_reference(embed, features), (embed, features), grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
