"""MaskFormer's per-pixel baselines: v1's parameter names, v1's loss, old checkpoints."""
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model

from helpers import cpu_sized_cfg

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "maskformer" / "ade20k-150"
BASELINE = CONFIGS / "per_pixel_baseline_R50_bs16_160k.yaml"
PLUS = CONFIGS / "per_pixel_baseline_plus_R50_bs16_160k.yaml"


def batch(num_classes=150, seed=0):
    g = torch.Generator().manual_seed(seed)
    sem_seg = torch.randint(0, num_classes, (64, 96), generator=g)
    sem_seg[:5] = 255
    return [{"image": torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8), "sem_seg": sem_seg}]


def test_baseline_parameters_are_v1s():
    model = build_model(cpu_sized_cfg(BASELINE))
    head = {k: tuple(v.shape) for k, v in model.sem_seg_head.state_dict().items()}
    assert head["predictor.weight"] == (150, 32, 1, 1) and head["predictor.bias"] == (150,)
    assert all(k.startswith(("predictor.", "pixel_decoder.")) for k in head)
    assert "pixel_decoder.mask_features.weight" in head


def test_baseline_plus_parameters_are_v1s():
    model = build_model(cpu_sized_cfg(PLUS))
    head = model.sem_seg_head.state_dict()
    assert head["predictor.query_embed.weight"].shape == (150, 32)
    assert not any(k.startswith("predictor.class_embed") for k in head)  # no class prediction
    assert "predictor.transformer.decoder.layers.5.linear1.weight" in head


def test_baseline_loss_is_v1s_cross_entropy_of_upsampled_logits():
    model = build_model(cpu_sized_cfg(BASELINE)).train()
    inputs = batch()
    losses = model(inputs)
    assert set(losses) == {"loss_sem_seg"}
    images = ((inputs[0]["image"].float() - model.pixel_mean) / model.pixel_std)[None]
    logits = model.sem_seg_head.layers(model.backbone(images))[0]
    logits = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
    expected = F.cross_entropy(logits, inputs[0]["sem_seg"][None], ignore_index=255)
    assert losses["loss_sem_seg"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_baseline_plus_supervises_every_decoder_layer():
    model = build_model(cpu_sized_cfg(PLUS)).train()
    losses = model(batch())
    assert set(losses) == {"loss_sem_seg"} | {f"loss_sem_seg_{i}" for i in range(5)}
    model.eval()
    with torch.no_grad():
        [result] = model([{"image": batch()[0]["image"], "height": 32, "width": 48}])
    assert result["sem_seg"].shape == (150, 32, 48)


def test_old_checkpoint_format_is_upgraded():
    """Before version 2 the pixel decoder's parameters sat directly under the head."""
    model = build_model(cpu_sized_cfg(BASELINE))
    state = model.state_dict()
    old = OrderedDict(
        (k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head."), v.clone() + 1) for k, v in state.items()
    )
    old._metadata = {"sem_seg_head": {"version": 1}}
    other = build_model(cpu_sized_cfg(BASELINE))
    incompatible = other.load_state_dict(old)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    key = "sem_seg_head.pixel_decoder.mask_features.weight"
    torch.testing.assert_close(other.state_dict()[key], state[key] + 1)


def test_plus_head_needs_one_query_per_class():
    cfg = cpu_sized_cfg(PLUS)
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    with pytest.raises(ValueError, match="NUM_OBJECT_QUERIES"):
        build_model(cfg)


def test_training_without_sem_seg_is_a_clear_error():
    model = build_model(cpu_sized_cfg(BASELINE)).train()
    inputs = batch()
    with pytest.raises(ValueError, match="sem_seg"):
        model.sem_seg_head(model.backbone(inputs[0]["image"][None].float()), None)
