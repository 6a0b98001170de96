"""Every video config (configs/youtubevis_2019, configs/youtubevis_2021) builds and trains one step (forward,
backward, optimizer step) on the CPU, narrowed (``helpers.cpu_sized_cfg``) but with its own components."""
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

from helpers import assert_one_step_trains, cpu_sized_cfg

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PATHS = sorted(
    p for folder in ("youtubevis_2019", "youtubevis_2021") for p in (CONFIGS / folder).rglob("*.yaml")
    if not p.name.startswith("Base-")
)
SIZE = 64


def synthetic_clip(frames: int, num_classes: int, seed: int):
    """A clip of ``frames`` random frames with three stripe-shaped objects moving right; the last object leaves
    after the first frame (its id is -1 from then on, as the video mapper marks absent objects)."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, num_classes, (3,), generator=g)
    images, targets = [], []
    for t in range(frames):
        masks = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
        for i in range(3 if t == 0 else 2):
            masks[i, :, i * SIZE // 3 + 2 * t:(i + 1) * SIZE // 3 + 2 * t] = True
        instances = Instances((SIZE, SIZE))
        instances.gt_classes = classes
        instances.gt_ids = torch.tensor([0, 1, 2 if t == 0 else -1])
        instances.gt_masks = BitMasks(masks)
        targets.append(instances)
        images.append(torch.randint(0, 256, (3, SIZE, SIZE), generator=g, dtype=torch.uint8))
    return {"image": images, "instances": targets, "height": SIZE, "width": SIZE}


@pytest.mark.parametrize("path", PATHS, ids=[str(p.relative_to(CONFIGS)) for p in PATHS])
def test_video_config_trains_one_step(path):
    torch.manual_seed(0)
    cfg = cpu_sized_cfg(path)
    assert cfg.MODEL.META_ARCHITECTURE == "VideoMaskFormer"
    model = build_model(cfg).train()
    frames, num_classes = cfg.INPUT.SAMPLING_FRAME_NUM, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    losses = model([synthetic_clip(frames, num_classes, seed=0), synthetic_clip(frames, num_classes, seed=1)])
    layers = cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1 if cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION else 0
    names = ("loss_ce", "loss_mask", "loss_dice")
    assert set(losses) == set(names) | {f"{name}_{i}" for name in names for i in range(layers)}
    assert_one_step_trains(cfg, model, losses)
