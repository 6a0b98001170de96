"""The deformable encoder layer a chunk of tokens at a time (fast path) against every token at once (reference)."""
import pytest
import torch

from mask_former.modeling.fast_paths import token_chunks
from mask_former.modeling.pixel_decoder.msdeformattn import MSDeformAttnTransformerEncoderLayer, reference_points

SHAPES = [(12, 20), (6, 10), (3, 5)]


def encoder_inputs(batch: int = 2):
    generator = torch.Generator().manual_seed(0)
    tokens = sum(h * w for h, w in SHAPES)
    src = torch.randn(batch, tokens, 32, generator=generator)
    pos = torch.randn(batch, tokens, 32, generator=generator)
    shapes = torch.tensor(SHAPES)
    starts = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    return src, pos, reference_points(SHAPES, batch, "cpu"), shapes, starts


def encoder_layer() -> MSDeformAttnTransformerEncoderLayer:
    torch.manual_seed(0)
    layer = MSDeformAttnTransformerEncoderLayer(d_model=32, d_ffn=64, dropout=0.1, n_levels=3, n_heads=4, n_points=2)
    with torch.no_grad():
        for parameter in layer.parameters():  # offsets that reach across the maps, past their borders too
            parameter.normal_(0, 0.3)
    return layer.eval()


@pytest.mark.parametrize("chunk", [7, 64, 1000])
@pytest.mark.parametrize("implementation", ["pytorch", "cpu"])
def test_chunks_equal_the_whole_layer(chunk, implementation, monkeypatch):
    """Chunks that do not divide the tokens, one chunk per level-ish, and more than all of them."""
    from mask_former.ops import kernel_unavailable_reason

    inputs = encoder_inputs()
    if implementation == "cpu" and kernel_unavailable_reason("cpu", inputs[0]):
        pytest.skip(kernel_unavailable_reason("cpu", inputs[0]))
    monkeypatch.setenv("MASK_FORMER_DEFORM_ATTN", implementation)
    layer = encoder_layer()
    reference = layer(*inputs)  # under autograd: the reference
    monkeypatch.setattr(token_chunks, "TOKENS_PER_CHUNK", chunk)
    with torch.no_grad():
        assert token_chunks.uses_token_chunks(layer, inputs[0]) == (chunk < inputs[0].shape[1])
        fast = layer(*inputs)
    torch.testing.assert_close(fast, reference.detach(), rtol=1e-5, atol=1e-5)


def test_chunks_only_in_cpu_inference(monkeypatch):
    monkeypatch.setattr(token_chunks, "TOKENS_PER_CHUNK", 16)
    layer, src = encoder_layer(), encoder_inputs()[0]
    with torch.no_grad():
        assert token_chunks.uses_token_chunks(layer, src)
        assert not token_chunks.uses_token_chunks(layer.train(), src)  # dropout draws per token
        assert not token_chunks.uses_token_chunks(layer.eval(), src[:, :16])  # a single chunk
    assert not token_chunks.uses_token_chunks(layer, src)  # under autograd
