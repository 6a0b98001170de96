"""Every model-zoo config builds and trains one step (forward, backward, optimizer step) on CPU,
narrowed (``helpers.cpu_sized_cfg``) but with its own components and recipe."""
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Instances

from helpers import assert_one_step_trains, cpu_sized_cfg

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def is_video_config(path: Path) -> bool:
    """The video configs (youtubevis_*, the video quickstart's) build the video model, trained on clips by
    tests/test_video_configs_train.py and tests/test_video_tools.py."""
    return path.relative_to(CONFIGS).parts[0].startswith("youtubevis_") or path.name.startswith("video_")


PATHS = sorted(p for p in CONFIGS.rglob("*.yaml") if not p.name.startswith("Base-") and not is_video_config(p))
SIZE = 64


def synthetic_input(num_classes: int, seed: int):
    """An image with three stripe-shaped objects, as instances and as a semantic map with an
    ignored border."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, num_classes, (3,), generator=g)
    masks = torch.zeros(3, SIZE, SIZE, dtype=torch.bool)
    for i in range(3):
        masks[i, :, i * SIZE // 3:(i + 1) * SIZE // 3 + (i == 2)] = True
    instances = Instances((SIZE, SIZE))
    instances.gt_classes, instances.gt_masks = classes, masks
    sem_seg = (masks.long() * classes[:, None, None]).sum(0)
    sem_seg[:2] = 255
    image = torch.randint(0, 256, (3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return {"image": image, "instances": instances, "sem_seg": sem_seg, "height": SIZE, "width": SIZE}


def expected_loss_names(cfg) -> set:
    mf = cfg.MODEL.MASK_FORMER
    head = cfg.MODEL.SEM_SEG_HEAD.NAME
    base = {"PerPixelBaselineHead": ["loss_sem_seg"], "PerPixelBaselinePlusHead": ["loss_sem_seg"]}.get(
        head, ["loss_ce", "loss_mask", "loss_dice"]
    )
    aux_layers = mf.DEC_LAYERS - 1 if mf.DEEP_SUPERVISION and head != "PerPixelBaselineHead" else 0
    return set(base) | {f"{name}_{i}" for name in base for i in range(aux_layers)}


def test_every_model_zoo_config_is_covered():
    assert len(PATHS) == 78
    assert sum("maskformer" in p.relative_to(CONFIGS).parts[:1] for p in PATHS) == 30


@pytest.mark.parametrize("path", PATHS, ids=[str(p.relative_to(CONFIGS)) for p in PATHS])
def test_config_trains_one_step(path):
    torch.manual_seed(0)
    cfg = cpu_sized_cfg(path)
    model = build_model(cfg).train()
    if cfg.MODEL.META_ARCHITECTURE == "MaskFormer":
        recipe = "maskformer" if path.relative_to(CONFIGS).parts[0] == "maskformer" else "mask2former"
        assert model.recipe.name == recipe
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    losses = model([synthetic_input(num_classes, seed=0), synthetic_input(num_classes, seed=1)])
    assert set(losses) == expected_loss_names(cfg)
    assert_one_step_trains(cfg, model, losses)
