"""Upstream Mask2Former's video configs (configs/youtubevis_2019, configs/youtubevis_2021) are all here,
at upstream's paths, and load after the DeepLab, image and video config functions."""
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog

from helpers import base_cfg

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
UPSTREAM_CONFIGS = Path("/work/upstream/Mask2Former/configs")
VIDEO_TREES = ("youtubevis_2019", "youtubevis_2021")
NAMES = [
    "Base-YouTubeVIS-VideoInstanceSegmentation.yaml",
    "video_maskformer2_R50_bs16_8ep.yaml",
    "video_maskformer2_R101_bs16_8ep.yaml",
    "swin/video_maskformer2_swin_tiny_bs16_8ep.yaml",
    "swin/video_maskformer2_swin_small_bs16_8ep.yaml",
    "swin/video_maskformer2_swin_base_IN21k_384_bs16_8ep.yaml",
    "swin/video_maskformer2_swin_large_IN21k_384_bs16_8ep.yaml",
]
PATHS = [CONFIGS / tree / name for tree in VIDEO_TREES for name in NAMES]


def test_the_video_trees_hold_exactly_upstreams_files():
    assert sorted(p for tree in VIDEO_TREES for p in (CONFIGS / tree).rglob("*.yaml")) == sorted(PATHS)


@pytest.mark.skipif(not UPSTREAM_CONFIGS.is_dir(), reason="no upstream Mask2Former checkout")
def test_same_files_as_upstream():
    upstream = sorted(
        p.relative_to(UPSTREAM_CONFIGS) for tree in VIDEO_TREES for p in (UPSTREAM_CONFIGS / tree).rglob("*")
    )
    ours = sorted(p.relative_to(CONFIGS) for tree in VIDEO_TREES for p in (CONFIGS / tree).rglob("*"))
    assert ours == upstream
    for path in upstream:
        if path.suffix == ".yaml":
            assert (CONFIGS / path).read_text().rstrip("\n") == (UPSTREAM_CONFIGS / path).read_text().rstrip("\n")


@pytest.mark.parametrize("path", PATHS, ids=[str(p.relative_to(CONFIGS)) for p in PATHS])
def test_video_config_loads(path):
    cfg = base_cfg()
    cfg.merge_from_file(str(path))
    year = path.parent.name if path.parent.name in VIDEO_TREES else path.parent.parent.name
    assert cfg.DATASETS.TRAIN == (f"ytvis_{year[-4:]}_train",)
    assert cfg.DATASETS.TEST == (f"ytvis_{year[-4:]}_val",)
    assert set(cfg.DATASETS.TRAIN + cfg.DATASETS.TEST) <= set(DatasetCatalog.list())
    assert cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "choice_by_clip" and cfg.INPUT.RANDOM_FLIP == "flip_by_clip"
    if not path.name.startswith("Base-"):
        assert cfg.MODEL.META_ARCHITECTURE == "VideoMaskFormer"
        assert cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME == "VideoMultiScaleMaskedTransformerDecoder"
        assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 40
