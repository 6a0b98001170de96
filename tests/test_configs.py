"""The upstream model-zoo configs under ``configs/`` load unchanged, and a few build full models."""
import re
from collections import Counter
from pathlib import Path

import pytest
from detectron2.modeling import build_model

from helpers import base_cfg
from mask_former.modeling.build import transformer_decoder_name
from mask_former.modeling.recipe import build_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Mask2Former's video configs need the video config keys: tests/test_video_configs.py loads them, and
# tests/test_video_tools.py trains the video quickstart's.
VIDEO_TREES = ("youtubevis_2019", "youtubevis_2021")
VIDEO_QUICKSTART = CONFIGS / "quickstart" / "video_mask2former_demo_shapes.yaml"
ALL_CONFIGS = sorted(
    p for p in CONFIGS.rglob("*.yaml") if p.relative_to(CONFIGS).parts[0] not in VIDEO_TREES and p != VIDEO_QUICKSTART
)
MASKFORMER_V1 = CONFIGS / "maskformer"

# Upstream wrote these lists as `!!python/object/apply:eval`; ours are literal, the expression kept
# in a trailing comment.
SCALED_SIZES = re.compile(
    r"^\s*MIN_SIZE_TRAIN: (\[[\d, ]+\])  # upstream: \[int\(x \* 0\.1 \* (\d+)\) for x in range\((\d+), (\d+)\)\]$"
)


def config_id(path):
    return str(path.relative_to(CONFIGS))


def load(path):
    cfg = base_cfg()
    cfg.merge_from_file(str(path))
    return cfg


def test_both_model_zoos_are_complete():
    per_tree = Counter(p.relative_to(CONFIGS).parts[0] for p in ALL_CONFIGS)
    # quickstart/ holds our own demo-dataset config, not an upstream one.
    expected = {"ade20k": 14, "cityscapes": 21, "coco": 16, "mapillary-vistas": 6, "maskformer": 36, "quickstart": 1}
    assert per_tree == expected


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=config_id)
def test_config_loads(path):
    text = path.read_text()
    assert "!!python" not in text, f"{path} needs yaml.unsafe_load"
    cfg = load(path)
    assert len(cfg.DATASETS.TRAIN) == 1 and len(cfg.DATASETS.TEST) == 1
    if not path.name.startswith("Base-"):
        assert cfg.MODEL.META_ARCHITECTURE in {"MaskFormer", "SemanticSegmentor"}
        assert cfg.MODEL.SEM_SEG_HEAD.NAME in {"MaskFormerHead", "PerPixelBaselineHead", "PerPixelBaselinePlusHead"}


@pytest.mark.parametrize(
    "path", [p for p in ALL_CONFIGS if "upstream: [int(" in p.read_text()], ids=config_id
)
def test_scaled_train_sizes_match_upstream_expression(path):
    lines = [m for m in map(SCALED_SIZES.match, path.read_text().splitlines()) if m]
    assert len(lines) == 1, f"{path}: expected one MIN_SIZE_TRAIN computed from upstream's expression"
    literal, base, start, stop = lines[0].groups()
    expected = [int(x * 0.1 * int(base)) for x in range(int(start), int(stop))]
    assert [int(v) for v in literal.strip("[]").split(", ")] == expected
    assert list(load(path).INPUT.MIN_SIZE_TRAIN) == expected


def test_maskformer_v1_configs_select_the_standard_decoder():
    models = {config_id(p): load(p) for p in sorted(MASKFORMER_V1.rglob("*.yaml"))}
    wrong = [
        name for name, cfg in models.items()
        if cfg.MODEL.META_ARCHITECTURE == "MaskFormer" and transformer_decoder_name(cfg) != "StandardTransformerDecoder"
    ]
    assert wrong == []


def test_recipe_is_derived_from_the_model_zoo_a_config_comes_from():
    recipes = {config_id(p): build_recipe(load(p)).name for p in ALL_CONFIGS if not p.name.startswith("Base-")}
    assert {name for name, recipe in recipes.items() if recipe == "maskformer"} == {
        name for name in recipes if name.startswith("maskformer/")
    }


@pytest.mark.parametrize(
    "folder, recipe",
    [("maskformer_v1_coco_panoptic", "maskformer"), ("maskformer_coco_panoptic", "mask2former"),
     ("m2f_coco_panoptic", "mask2former")],
)
def test_recipe_of_golden_configs(folder, recipe, golden_dir):
    # maskformer_coco_panoptic is a v1-style model run by upstream Mask2Former: Mask2Former's rules.
    assert build_recipe(load(golden_dir(folder) / "config.yaml")).name == recipe


def test_recipe_key_overrides_and_rejects_unknown_names():
    cfg = load(MASKFORMER_V1 / "ade20k-150" / "maskformer_R50_bs16_160k.yaml")
    cfg.MODEL.MASK_FORMER.RECIPE = "mask2former"
    assert build_recipe(cfg).name == "mask2former"
    cfg.MODEL.MASK_FORMER.RECIPE = "detr"
    with pytest.raises(ValueError, match="MODEL.MASK_FORMER.RECIPE='detr'"):
        build_recipe(cfg)


# Parameter counts, in millions, that the Mask2Former and MaskFormer papers report for these models.
@pytest.mark.parametrize(
    "relative_path, backbone, pixel_decoder, transformer_decoder, million_params",
    [
        ("coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
         "ResNet", "MSDeformAttnPixelDecoder", "MultiScaleMaskedTransformerDecoder", 44),
        ("ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml",
         "D2SwinTransformer", "MSDeformAttnPixelDecoder", "MultiScaleMaskedTransformerDecoder", 47),
        ("maskformer/ade20k-150/maskformer_R50_bs16_160k.yaml",
         "ResNet", "BasePixelDecoder", "StandardTransformerDecoder", 41),
    ],
)
def test_full_size_model_builds_on_cpu(relative_path, backbone, pixel_decoder, transformer_decoder, million_params):
    cfg = load(CONFIGS / relative_path)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    head = model.sem_seg_head
    assert type(model.backbone).__name__ == backbone
    assert type(head.pixel_decoder).__name__ == pixel_decoder
    assert type(head.predictor).__name__ == transformer_decoder
    assert head.predictor.class_embed.out_features == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + 1
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == million_params
