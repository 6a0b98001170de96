import math
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from detectron2.projects.deeplab import add_deeplab_config

from mask_former.config import add_maskformer2_config
from mask_former.modeling.backbone.swin import (
    SHIFTED_WINDOW_MASK_VALUE,
    D2SwinTransformer,
    PatchMerging,
    SwinStage,
    relative_position_index,
)

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
GOLDEN_WEIGHTS = GOLDEN / "m2f_coco_panoptic" / "weights.pth"
needs_golden = pytest.mark.skipif(not GOLDEN_WEIGHTS.exists(), reason="no golden checkpoint")


def tiny_swin(**overrides):
    """The golden configs' Swin size, with two blocks per stage so that shifted windows run."""
    kwargs = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return D2SwinTransformer(**kwargs).eval()


def golden_backbone_state():
    state = torch.load(GOLDEN_WEIGHTS, map_location="cpu", weights_only=False)["model"]
    return {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}


@pytest.mark.parametrize("shape", [(1, 3, 67, 95), (2, 3, 224, 224), (1, 3, 32, 300)])
def test_output_names_shapes_strides(shape):
    model = tiny_swin()
    specs = model.output_shape()
    assert list(specs) == ["res2", "res3", "res4", "res5"]
    assert [s.stride for s in specs.values()] == [4, 8, 16, 32]
    assert [s.channels for s in specs.values()] == [16, 32, 64, 128]
    assert model.size_divisibility == 32
    with torch.no_grad():
        outputs = model(torch.randn(shape))
    assert list(outputs) == list(specs)
    height, width = math.ceil(shape[2] / 4), math.ceil(shape[3] / 4)
    for name, spec in specs.items():
        assert outputs[name].shape == (shape[0], spec.channels, height, width)
        assert torch.isfinite(outputs[name]).all()
        height, width = math.ceil(height / 2), math.ceil(width / 2)


def test_out_features_subset_and_bad_names():
    model = tiny_swin(out_features=["res3", "res5"], ape=True)
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 40, 56))
    assert list(outputs) == ["res3", "res5"] and list(model.output_shape()) == ["res3", "res5"]
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        tiny_swin(out_features=["res6"])
    with pytest.raises(ValueError, match="NUM_HEADS"):
        tiny_swin(num_heads=(1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        model(torch.randn(3, 40, 56))


def test_eval_is_deterministic_and_batch_independent():
    model = tiny_swin(drop_path_rate=0.3, drop_rate=0.1, attn_drop_rate=0.1)
    images = torch.randn(2, 3, 45, 70)
    with torch.no_grad():
        batched, again, alone = model(images), model(images), model(images[1:])
    for name in batched:
        assert torch.equal(batched[name], again[name])
        torch.testing.assert_close(batched[name][1:], alone[name], rtol=1e-5, atol=1e-5)


def test_train_mode_runs_backward_with_checkpointing():
    model = tiny_swin(use_checkpoint=True).train()
    outputs = model(torch.randn(1, 3, 33, 47))
    sum(o.square().mean() for o in outputs.values()).backward()
    assert model.layers[0].blocks[1].attn.relative_position_bias_table.grad is not None


def test_relative_position_index_of_a_small_window():
    index = relative_position_index(2)
    # Tokens (0,0), (0,1), (1,0), (1,1); index = (dr + 1) * 3 + (dc + 1) for query - key.
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(index, expected)


def test_patch_merging_concatenation_order():
    merging = PatchMerging(1)
    merging.norm = torch.nn.Identity()
    merging.reduction = torch.nn.Identity()
    grid = torch.arange(9.0).view(3, 3)  # odd size: padded with a zero row and column
    merged = merging(grid.reshape(1, 9, 1), 3, 3).view(2, 2, 4)
    padded = torch.nn.functional.pad(grid, (0, 1, 0, 1))
    for i in range(2):
        for j in range(2):
            rows, cols = slice(2 * i, 2 * i + 2), slice(2 * j, 2 * j + 2)
            patch = padded[rows, cols]
            assert merged[i, j].tolist() == [patch[0, 0], patch[1, 0], patch[0, 1], patch[1, 1]]


def dense_shifted_block(block, x, height, width):
    """A Swin block as dense attention over the whole padded map: tokens attend only within their
    (cyclically shifted) window, with -100 between regions that the shift made adjacent."""
    size, shift = block.window_size, block.shift_size
    padded_h, padded_w = -(-height // size) * size, -(-width // size) * size
    batch, _, channels = x.shape
    y = block.norm1(x).view(batch, height, width, channels)
    y = torch.nn.functional.pad(y, (0, 0, 0, padded_w - width, 0, padded_h - height))
    tokens = y.reshape(batch, padded_h * padded_w, channels)

    rows, cols = torch.meshgrid(torch.arange(padded_h), torch.arange(padded_w), indexing="ij")
    rows, cols = (rows.flatten() - shift) % padded_h, (cols.flatten() - shift) % padded_w

    def region(position, extent):
        return int(position >= extent - size) + int(position >= extent - shift)

    count = padded_h * padded_w
    table = block.attn.relative_position_bias_table
    bias = torch.full((table.shape[1], count, count), float("-inf"))
    for q in range(count):
        for k in range(count):
            qr, qc, kr, kc = rows[q], cols[q], rows[k], cols[k]
            if qr // size != kr // size or qc // size != kc // size:
                continue
            delta_row, delta_col = qr % size - kr % size, qc % size - kc % size
            offset = (delta_row + size - 1) * (2 * size - 1) + delta_col + size - 1
            bias[:, q, k] = table[offset]
            same_region = (region(qr, padded_h), region(qc, padded_w)) == (
                region(kr, padded_h),
                region(kc, padded_w),
            )
            if not same_region:
                bias[:, q, k] += SHIFTED_WINDOW_MASK_VALUE
    heads = table.shape[1]
    qkv = block.attn.qkv(tokens).view(batch, count, 3, heads, channels // heads)
    qkv = qkv.permute(2, 0, 3, 1, 4)
    attn = (qkv[0] * block.attn.scale) @ qkv[1].transpose(-2, -1) + bias
    out = (attn.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(batch, count, channels)
    out = block.attn.proj(out).view(batch, padded_h, padded_w, channels)[:, :height, :width]
    x = x + out.reshape(batch, height * width, channels)
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("height,width", [(9, 11), (3, 5), (8, 8)])
def test_shifted_window_block_matches_dense_reference(height, width):
    torch.manual_seed(0)
    stage = SwinStage(
        8, 2, 4, drop_path=[0.0, 0.0], downsample=False, use_checkpoint=False,
        num_heads=2, mlp_ratio=2.0, qkv_bias=True, qk_scale=None, drop=0.0, attn_drop=0.0,
    ).eval()
    block = stage.blocks[1]
    assert block.shift_size == 2
    torch.nn.init.normal_(block.attn.relative_position_bias_table, std=1.0)
    x = torch.randn(2, height * width, 8)
    with torch.no_grad():
        mask = stage.attention_mask(x, height, width)
        ours = block(x, height, width, mask)
        reference = dense_shifted_block(block, x, height, width)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def swin_cfg():
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    return cfg


def test_builds_through_registry():
    cfg = swin_cfg()
    cfg.MODEL.SWIN.EMBED_DIM = 32
    cfg.MODEL.SWIN.DEPTHS = [1, 1, 1, 1]
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 4, 8]
    backbone = build_backbone(cfg)
    assert isinstance(backbone, D2SwinTransformer)
    assert {k: (s.channels, s.stride) for k, s in backbone.output_shape().items()} == {
        "res2": (32, 4),
        "res3": (64, 8),
        "res4": (128, 16),
        "res5": (256, 32),
    }
    # Stochastic depth rises linearly over the blocks up to DROP_PATH_RATE (0.3).
    rates = [stage.blocks[0].drop_path.p for stage in backbone.layers]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


@needs_golden
def test_golden_checkpoint_loads_strictly():
    cfg = swin_cfg()
    cfg.merge_from_file(str(GOLDEN / "m2f_coco_panoptic" / "config.yaml"))
    backbone = build_backbone(cfg).eval()
    state = golden_backbone_state()
    backbone.load_state_dict(state, strict=True)
    golden_indices = [v for k, v in state.items() if k.endswith("attn.relative_position_index")]
    assert len(golden_indices) == 4
    for index in golden_indices:
        assert torch.equal(index, relative_position_index(7))
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, 64, 96))
    assert all(torch.isfinite(o).all() for o in outputs.values())


def test_padding_to_multiple_is_the_modulo_padding():
    from mask_former.modeling.padding import padding_to_multiple

    for multiple in (1, 2, 4, 7, 32):
        for size in range(0, 200):
            assert padding_to_multiple(size, multiple) == -size % multiple
