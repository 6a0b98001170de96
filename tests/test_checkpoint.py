"""Checkpoint loading: no silent random parameters at evaluation and in the demo, backbone-only
checkpoints allowed in training, ``.pth`` read with ``weights_only``, model-zoo ``.pkl`` as detectron2."""
import os
import pickle
import subprocess

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from conftest import REPO
from helpers import tiny_cfg
from mask_former.checkpoint import (
    IncompleteCheckpointError,
    InferenceCheckpointer,
    MissingWeightsError,
    UnsafeCheckpointError,
)
from mask_former.engine import AtomicCheckpointer
from mask_former.engine import main as train_net  # what train_net.py runs

PYTHON = str(REPO / ".venv" / "bin" / "python")


@pytest.fixture(scope="module")
def cfg():
    cfg = tiny_cfg()
    cfg.DATASETS.TEST = ()
    return cfg


@pytest.fixture(scope="module")
def state(cfg):
    torch.manual_seed(0)
    return build_model(cfg).state_dict()


def save(path, model_state):
    torch.save({"model": model_state}, path)
    return str(path)


def without(model_state, prefix):
    return {k: v for k, v in model_state.items() if not k.startswith(prefix)}


def fresh_model(cfg):
    torch.manual_seed(1)  # other initial weights than ``state``
    return build_model(cfg)


def assert_loaded(model, model_state):
    loaded = model.state_dict()
    for key, value in model_state.items():
        assert torch.equal(loaded[key], value), key


def test_complete_checkpoint_loads_every_key(cfg, state, tmp_path):
    model = fresh_model(cfg)
    InferenceCheckpointer(model).load(save(tmp_path / "full.pth", state))
    assert_loaded(model, state)


def test_missing_keys_at_inference_are_an_error_listing_them(cfg, state, tmp_path):
    path = save(tmp_path / "no_predictor.pth", without(state, "sem_seg_head.predictor."))
    with pytest.raises(IncompleteCheckpointError) as error:
        InferenceCheckpointer(fresh_model(cfg)).load(path)
    message = str(error.value)
    assert path in message and "sem_seg_head.predictor" in message and "class_embed" in message
    assert "MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS" in message and "--allow-random-weights" in message


def test_unexpected_keys_at_inference_are_an_error_listing_them(cfg, state, tmp_path):
    path = save(tmp_path / "extra.pth", {**state, "extra_head.weight": torch.zeros(2)})
    with pytest.raises(IncompleteCheckpointError, match="extra_head.weight"):
        InferenceCheckpointer(fresh_model(cfg)).load(path)


def test_empty_weights_at_inference_are_an_error(cfg, tmp_path):
    with pytest.raises(MissingWeightsError, match="MODEL.WEIGHTS is empty"):
        InferenceCheckpointer(fresh_model(cfg)).load("")
    with pytest.raises(MissingWeightsError):  # resume, and no checkpoint in the output folder
        InferenceCheckpointer(fresh_model(cfg), save_dir=str(tmp_path)).resume_or_load("", resume=True)


def test_random_weights_accepted_explicitly_with_a_warning(cfg, state, tmp_path, logs):
    partial = without(state, "sem_seg_head.predictor.")
    path = save(tmp_path / "partial.pth", {**partial, "unexpected.weight": torch.zeros(1)})
    model = fresh_model(cfg)
    InferenceCheckpointer(model, allow_random_weights=True).load(path)
    InferenceCheckpointer(fresh_model(cfg), allow_random_weights=True).load("")
    assert_loaded(model, partial)
    assert logs.text.count("Running with randomly initialized parameters") == 2
    assert "unexpected.weight" in logs.text and "sem_seg_head.predictor" in logs.text  # fvcore's listing


def test_non_persistent_buffers_are_not_missing(tmp_path):
    class WithCache(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.register_buffer("cache", torch.zeros(3), persistent=False)

    path = save(tmp_path / "linear.pth", {"linear." + k: v for k, v in nn.Linear(2, 2).state_dict().items()})
    InferenceCheckpointer(WithCache()).load(path)


def test_resume_at_evaluation_loads_the_training_runs_last_checkpoint(cfg, state, tmp_path):
    trained = fresh_model(cfg)
    trained.load_state_dict(state)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9)
    AtomicCheckpointer(trained, str(tmp_path), optimizer=optimizer).save("model_0000009", iteration=9)
    model = build_model(cfg)
    InferenceCheckpointer(model, save_dir=str(tmp_path)).resume_or_load("", resume=True)
    assert_loaded(model, state)


def test_backbone_only_checkpoint_allowed_in_training_with_one_listing(cfg, state, tmp_path, logs):
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.")}
    path = save(tmp_path / "imagenet.pth", backbone)
    model = fresh_model(cfg)
    AtomicCheckpointer(model, str(tmp_path / "out")).resume_or_load(path, resume=False)  # as the Trainer
    assert_loaded(model, backbone)
    listings = [r.getMessage() for r in logs.records if "not found in the checkpoint" in r.getMessage()]
    assert len(listings) == 1
    assert "sem_seg_head.predictor" in listings[0] and "backbone." not in listings[0]


class RunsCodeWhenLoaded:
    """Unpickling this object calls ``os.makedirs(marker)``: any code could run there."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_pth_is_read_with_weights_only_even_where_torch_would_not(cfg, state, tmp_path, monkeypatch):
    marker = tmp_path / "code_ran"
    path = tmp_path / "unsafe.pth"
    torch.save({"model": state, "extra": RunsCodeWhenLoaded(str(marker))}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch.load's default is then unsafe
    for checkpointer in [DetectionCheckpointer(fresh_model(cfg)), InferenceCheckpointer(fresh_model(cfg))]:
        with pytest.raises(UnsafeCheckpointError, match="weights_only=True") as error:
            checkpointer.load(str(path))
        assert str(path) in str(error.value) and "re-save" in str(error.value)
    assert not marker.exists()


def test_model_zoo_pkl_loads_as_detectron2_reads_it(cfg, state, tmp_path):
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "upstream"}, f)
    model = fresh_model(cfg)
    InferenceCheckpointer(model).load(str(path))
    assert_loaded(model, state)


def test_evaluation_refuses_random_weights_unless_asked(cfg, state, tmp_path):
    cfg = cfg.clone()
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    with pytest.raises(MissingWeightsError):
        train_net.evaluate(cfg, resume=False)
    cfg.MODEL.WEIGHTS = save(tmp_path / "no_predictor.pth", without(state, "sem_seg_head.predictor."))
    with pytest.raises(IncompleteCheckpointError, match="sem_seg_head.predictor"):
        train_net.evaluate(cfg, resume=False)
    cfg.MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS = True
    assert train_net.evaluate(cfg, resume=False) == {}  # no test dataset: nothing to evaluate


def test_eval_only_cli_reports_empty_weights_and_has_the_flag(cfg, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    argv = ["--config-file", str(config), "--eval-only", "OUTPUT_DIR", str(tmp_path / "out")]
    result = subprocess.run([PYTHON, "train_net.py", *argv], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "error: No weights to load: MODEL.WEIGHTS is empty" in result.stderr
    args = train_net.argument_parser().parse_args(["--allow-random-weights", *argv])
    assert train_net.run_config(args).MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS
    assert not train_net.run_config(train_net.argument_parser().parse_args(argv)).MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS


@pytest.fixture
def demo_args(cfg, tmp_path):
    from test_demo import demo

    cfg = cfg.clone()
    cfg.DATASETS.TEST = ("coco_2017_val_panoptic",)
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 32, 3), np.uint8))
    args = ["--config-file", str(config), "--input", str(tmp_path / "a.png"), "--output", str(tmp_path / "vis.png")]
    return demo.main, args


def test_demo_refuses_random_weights_unless_asked(demo_args, state, tmp_path, capsys):
    run, args = demo_args
    assert run(args) == 2
    assert "error: No weights to load: MODEL.WEIGHTS is empty" in capsys.readouterr().err
    weights = save(tmp_path / "no_predictor.pth", without(state, "sem_seg_head.predictor."))
    assert run([*args, "--opts", "MODEL.WEIGHTS", weights]) == 2
    assert "sem_seg_head.predictor" in capsys.readouterr().err
    assert not (tmp_path / "vis.png").exists()
    assert run(["--allow-random-weights", *args, "--opts", "MODEL.WEIGHTS", weights]) == 0
    assert (tmp_path / "vis.png").exists()
