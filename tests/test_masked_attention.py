"""Mask2Former's masked cross-attention on one fused kernel (fast path) against nn.MultiheadAttention with the mask
copied per head (reference)."""
import pytest
import torch

from mask_former.modeling.fast_paths import masked_attention
from mask_former.modeling.transformer_blocks import CrossAttentionLayer


def attention_inputs(batch: int, queries: int = 7, keys: int = 50, channels: int = 32):
    generator = torch.Generator().manual_seed(0)
    tgt = torch.randn(queries, batch, channels, generator=generator)
    memory = torch.randn(keys, batch, channels, generator=generator)
    pos = torch.randn(keys, batch, channels, generator=generator)
    query_pos = torch.randn(queries, batch, channels, generator=generator)
    blocked = torch.rand(batch, queries, keys, generator=generator) > 0.4
    blocked[:, 0] = False  # a query that attends everywhere
    blocked[:, 1] = True
    blocked[:, 1, 3] = False  # and one that attends to a single key
    return tgt, memory, pos, query_pos, blocked


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("normalize_before", [False, True])
def test_fused_cross_attention_equals_multihead_attention(batch, normalize_before):
    torch.manual_seed(0)
    layer = CrossAttentionLayer(32, 4, normalize_before=normalize_before).eval()
    tgt, memory, pos, query_pos, blocked = attention_inputs(batch)
    reference = layer(tgt, memory, memory_mask=blocked, pos=pos, query_pos=query_pos)  # autograd on: reference
    with torch.no_grad():
        assert masked_attention.uses_fused_attention(layer, layer.multihead_attn, tgt)
        fast = layer(tgt, memory, memory_mask=blocked, pos=pos, query_pos=query_pos)
    torch.testing.assert_close(fast, reference.detach(), rtol=1e-5, atol=1e-6)
    # The reference itself: upstream's call, the mask copied head by head for every image.
    per_head = blocked.repeat_interleave(4, dim=0)
    attn = layer.multihead_attn
    upstream = attn(tgt + query_pos, memory + pos, memory, attn_mask=per_head)[0]
    if not normalize_before:
        torch.testing.assert_close(reference.detach(), layer.norm(tgt + upstream).detach())


def test_fused_attention_only_in_cpu_inference():
    layer = CrossAttentionLayer(32, 4)
    tgt = attention_inputs(1)[0]
    attn = layer.multihead_attn
    with torch.no_grad():
        assert not masked_attention.uses_fused_attention(layer.train(), attn, tgt)
        assert masked_attention.uses_fused_attention(layer.eval(), attn, tgt)
    assert not masked_attention.uses_fused_attention(layer, attn, tgt)  # under autograd


def test_model_inference_takes_the_fused_path(monkeypatch):
    """The decoder's layers reach the fast path in a model's inference (the golden fixtures then check its
    outputs against upstream's)."""
    from detectron2.modeling import build_model

    from helpers import tiny_cfg

    calls = []
    fused = masked_attention.fused_attention
    monkeypatch.setattr(
        "mask_former.modeling.transformer_blocks.fused_attention", lambda *a: calls.append(1) or fused(*a)
    )
    model = build_model(tiny_cfg()).eval()
    with torch.no_grad():
        model([{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), "height": 64, "width": 64}])
    assert calls
