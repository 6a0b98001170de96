"""tools/: checkpoint conversion (torchvision ResNet, official Swin) and model analysis."""
import importlib.util
import os
import pickle
import subprocess

import pytest
import torch
import torchvision
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.backbone import build_resnet_backbone
from torch import nn

from conftest import REPO
from helpers import base_cfg, tiny_cfg
from mask_former.checkpoint import IncompleteCheckpointError, MaskFormerCheckpointer

PYTHON = str(REPO / ".venv" / "bin" / "python")


def load_tool(file_name):
    """Import a tools/ script (their names have dashes) as a module."""
    spec = importlib.util.spec_from_file_location(file_name.replace("-", "_")[:-3], REPO / "tools" / file_name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BackboneHolder(nn.Module):
    """Holds a backbone under "backbone.", as detectron2's meta-architectures do."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def r50_cfg():
    cfg = base_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # frozen stages' FrozenBatchNorm2d has no num_batches_tracked
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    return cfg


def test_torchvision_resnet50_loads_into_detectron2_resnet(tmp_path):
    torch.manual_seed(0)
    torchvision_model = torchvision.models.resnet50(weights=None)
    torch.nn.init.normal_(torchvision_model.bn1.running_mean)  # not a default value, to see it load
    state_dict = torchvision_model.state_dict()
    torch.save(state_dict, tmp_path / "r50.pth")
    tool = load_tool("convert-torchvision-to-d2.py")
    assert tool.main([str(tmp_path / "r50.pth"), str(tmp_path / "r50.pkl")]) == 0

    with open(tmp_path / "r50.pkl", "rb") as f:
        converted = pickle.load(f)
    backbone = build_resnet_backbone(r50_cfg(), ShapeSpec(channels=3))
    assert set(converted["model"]) == set(backbone.state_dict()), "converted names must be detectron2's exactly"

    holder = BackboneHolder(backbone)
    MaskFormerCheckpointer(holder, for_inference=True).load(str(tmp_path / "r50.pkl"))  # every key, safely read
    loaded = backbone.state_dict()
    for key, value in state_dict.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[tool.convert_key(key)], value), key
    assert torch.equal(loaded["stem.conv1.norm.running_mean"], torchvision_model.bn1.running_mean)


def test_torchvision_conversion_rejects_other_checkpoints(tmp_path, capsys):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    tool = load_tool("convert-torchvision-to-d2.py")
    assert tool.main([str(tmp_path / "other.pth"), str(tmp_path / "out.pkl")]) == 2
    assert "other.pth" in capsys.readouterr().err
    assert tool.main([str(tmp_path / "missing.pth"), str(tmp_path / "out.pkl")]) == 2
    assert "missing.pth" in capsys.readouterr().err


def test_official_swin_checkpoint_loads_into_maskformer(tmp_path):
    cfg = tiny_cfg()
    backbone_state = build_backbone(cfg).state_dict()
    official = {
        key: (value + 1.0 if value.is_floating_point() else value.clone())
        for key, value in backbone_state.items()
        if not key.startswith("norm")  # the official model has one final "norm", not norm0..norm3
    }
    official.update({"norm.weight": torch.ones(256), "head.weight": torch.ones(10, 256), "head.bias": torch.ones(10)})
    torch.save({"model": official}, tmp_path / "swin.pth")
    tool = load_tool("convert-pretrained-swin-model-to-d2.py")
    assert tool.main([str(tmp_path / "swin.pth"), str(tmp_path / "swin.pkl")]) == 0

    model = build_model(cfg)
    MaskFormerCheckpointer(model).load(str(tmp_path / "swin.pkl"))  # backbone-only: allowed in training
    with pytest.raises(IncompleteCheckpointError, match="sem_seg_head"):
        MaskFormerCheckpointer(build_model(cfg), for_inference=True).load(str(tmp_path / "swin.pkl"))
    loaded = model.backbone.state_dict()
    for key, value in official.items():
        if not key.startswith(("head.", "norm.")):
            assert torch.equal(loaded[key], value), key


def test_analyze_model_reports_parameters_and_flops(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_cfg().dump())
    tool = load_tool("analyze_model.py")
    assert tool.main(["--config-file", str(config), "--dummy-size", "64", "96", "--max-depth", "1"]) == 0
    out = capsys.readouterr().out
    model = build_model(tiny_cfg())
    assert f"Parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.3f} M" in out
    flops = float(out.split("FLOPs of the network on one (64, 96) input: ")[1].split(" G")[0])
    assert flops > 0.01


@pytest.mark.parametrize("argv", [["--config-file", "missing.yaml"], ["--opts", "MODEL.NOT_A_KEY", "1"]])
def test_analyze_model_config_errors(tmp_path, capsys, argv):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_cfg().dump())
    tool = load_tool("analyze_model.py")
    assert tool.main(["--config-file", str(config), *argv]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err or "MODEL.NOT_A_KEY" in err


def test_export_refuses_missing_or_partial_weights_unless_asked(tmp_path, capsys):
    """Exporting random parameters silently would ship a meaningless model: the rule of evaluation."""
    cfg = tiny_cfg()
    (tmp_path / "tiny.yaml").write_text(cfg.dump())
    torch.save({"model": build_model(cfg).state_dict()}, tmp_path / "full.pth")
    partial = {k: v for k, v in build_model(cfg).state_dict().items() if not k.startswith("sem_seg_head.predictor.")}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    tool = load_tool("export_model.py")
    argv = ["--config-file", str(tmp_path / "tiny.yaml"), "--format", "onnx", "--output", str(tmp_path / "out")]
    assert tool.main(argv) == 2
    assert "error: No weights to load: MODEL.WEIGHTS is empty" in capsys.readouterr().err
    assert tool.main([*argv, "MODEL.WEIGHTS", str(tmp_path / "partial.pth")]) == 2
    assert "sem_seg_head.predictor" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    args = tool.get_parser().parse_args(["--allow-random-weights", *argv, "MODEL.WEIGHTS", "x.pth"])
    assert tool.random_weights_opts(args) == ["MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS", "True"]
    assert args.opts == ["MODEL.WEIGHTS", "x.pth"]


def test_quickstart_runs_end_to_end_and_checks_learning(tmp_path):
    """Two iterations only: the whole pipeline runs, and the run fails since nothing was learned."""
    result = subprocess.run(
        [PYTHON, "tools/quickstart.py", "--num-images", "2", "--opts",
         "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(tmp_path / "out"), "DATALOADER.NUM_WORKERS", "0"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "datasets")},
    )
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-3000:]
    for stage in range(1, 6):
        assert f"[{stage}/5]" in log
    assert "untrained   trained" in log and "mIoU" in log and "mask AP" in log
    assert "did not learn enough" in log
    assert (tmp_path / "datasets" / "demo_shapes" / "manifest.json").is_file()
    assert sorted(os.listdir(tmp_path / "out" / "visualizations")) == ["000001.png", "000002.png"]
