"""MaskFormerCheckpointer: no silent random parameters at evaluation, in the demo and the export,
backbone-only checkpoints allowed in training, strict shapes, class-head fine-tuning, ``.pth`` read
with ``weights_only``, ``.pkl`` read by an unpickler that builds numpy arrays only, damaged files named,
atomic saving, and detectron2's own ``DetectionCheckpointer`` left as it is."""
import os
import pickle
import subprocess

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from torch import nn

from conftest import REPO
from helpers import tiny_cfg
from mask_former.checkpoint import (
    CheckpointError,
    CheckpointShapeError,
    IncompleteCheckpointError,
    LoadReport,
    MaskFormerCheckpointer,
    MissingWeightsError,
    UnsafeCheckpointError,
)
from mask_former.engine import main as train_net  # what train_net.py runs

PYTHON = str(REPO / ".venv" / "bin" / "python")
CLASS_HEAD = {
    "sem_seg_head.predictor.class_embed.weight", "sem_seg_head.predictor.class_embed.bias", "criterion.empty_weight"
}


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


def save_pkl(path, model_state, protocol=pickle.DEFAULT_PROTOCOL, pickler=pickle.Pickler):
    """``model_state`` as a detectron2 model-zoo file: numpy arrays under "model", and "__author__"."""
    with open(path, "wb") as f:
        zoo = {"model": {k: v.numpy() for k, v in model_state.items()}, "__author__": "upstream"}
        pickler(f, protocol=protocol).dump({**zoo, "matching_heuristics": True})
    return str(path)


def without(model_state, prefix):
    return {k: v for k, v in model_state.items() if not k.startswith(prefix)}


def fresh_model(cfg):
    torch.manual_seed(1)  # other initial weights than ``state``
    return build_model(cfg)


def inference(model, **kwargs):
    return MaskFormerCheckpointer(model, for_inference=True, **kwargs)


def assert_loaded(model, model_state):
    loaded = model.state_dict()
    for key, value in model_state.items():
        assert torch.equal(loaded[key], value), key


def tables(logs):
    return [r.getMessage() for r in logs.records if r.getMessage().startswith("Loaded checkpoint")]


def test_importing_mask_former_leaves_detectron2_checkpointer_unchanged():
    code = (
        "import pickle, torch\n"
        "from detectron2.checkpoint import DetectionCheckpointer\n"
        "from fvcore.common.checkpoint import Checkpointer\n"
        "def snapshot():\n"
        "    return [dict(vars(DetectionCheckpointer)), dict(vars(Checkpointer)), torch.load, pickle.Unpickler]\n"
        "before = snapshot()\n"
        "import mask_former, mask_former.engine, mask_former.checkpoint\n"
        "assert snapshot() == before, 'importing mask_former changed detectron2 / fvcore / torch'\n"
    )
    result = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_complete_checkpoint_loads_every_key_with_one_table(cfg, state, tmp_path, logs):
    logs.set_level("INFO")
    model = fresh_model(cfg)
    inference(model).load(save(tmp_path / "full.pth", state))
    assert_loaded(model, state)
    (table,) = tables(logs)
    assert f"loaded           {len(state)}" in table and "missing            0" in table


def test_missing_keys_at_inference_are_an_error_listing_them(cfg, state, tmp_path):
    path = save(tmp_path / "no_predictor.pth", without(state, "sem_seg_head.predictor."))
    with pytest.raises(IncompleteCheckpointError) as error:
        inference(fresh_model(cfg)).load(path)
    message = str(error.value)
    assert path in message and "sem_seg_head.predictor" in message and "class_embed" in message
    assert "MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS" in message and "--allow-random-weights" in message


def test_unexpected_keys_at_inference_are_an_error_listing_them(cfg, state, tmp_path):
    path = save(tmp_path / "extra.pth", {**state, "extra_head.weight": torch.zeros(2)})
    with pytest.raises(IncompleteCheckpointError, match="extra_head.weight"):
        inference(fresh_model(cfg)).load(path)


def test_empty_weights_at_inference_are_an_error(cfg, tmp_path):
    with pytest.raises(MissingWeightsError, match="MODEL.WEIGHTS is empty"):
        inference(fresh_model(cfg)).load("")
    with pytest.raises(MissingWeightsError):  # resume, and no checkpoint in the output folder
        inference(fresh_model(cfg), save_dir=str(tmp_path)).resume_or_load("", resume=True)


def test_random_weights_accepted_explicitly_with_a_warning(cfg, state, tmp_path, logs):
    partial = without(state, "sem_seg_head.predictor.")
    path = save(tmp_path / "partial.pth", {**partial, "unexpected.weight": torch.zeros(1)})
    model = fresh_model(cfg)
    inference(model, allow_random_weights=True).load(path)
    inference(fresh_model(cfg), allow_random_weights=True).load("")
    assert_loaded(model, partial)
    assert logs.text.count("Running with randomly initialized parameters") == 2
    (table,) = tables(logs)
    assert "unexpected.weight" in table and "sem_seg_head.predictor" in table


def test_non_persistent_buffers_are_not_missing(tmp_path):
    class WithCache(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.register_buffer("cache", torch.zeros(3), persistent=False)

    path = save(tmp_path / "linear.pth", {"linear." + k: v for k, v in nn.Linear(2, 2).state_dict().items()})
    inference(WithCache()).load(path)


def test_resume_at_evaluation_loads_the_training_runs_last_checkpoint(cfg, state, tmp_path):
    trained = fresh_model(cfg)
    trained.load_state_dict(state)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9)
    MaskFormerCheckpointer(trained, str(tmp_path), optimizer=optimizer).save("model_0000009", iteration=9)
    model = build_model(cfg)
    inference(model, save_dir=str(tmp_path)).resume_or_load("", resume=True)
    assert_loaded(model, state)


def test_backbone_only_checkpoint_allowed_in_training_with_one_listing(cfg, state, tmp_path, logs):
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.")}
    path = save(tmp_path / "imagenet.pth", backbone)
    model = fresh_model(cfg)
    MaskFormerCheckpointer.from_config(cfg, model, str(tmp_path / "out")).resume_or_load(path, resume=False)
    assert_loaded(model, backbone)
    (table,) = tables(logs)
    missing = next(line for line in table.splitlines() if line.startswith("missing"))
    assert "sem_seg_head.predictor" in missing and "backbone." not in missing
    assert "not found in the checkpoint" not in logs.text  # fvcore's own listing is replaced by the table


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    checkpointer = MaskFormerCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000000")
    saved = {k: v.clone() for k, v in model.state_dict().items()}

    def crash_while_writing(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(torch, "save", crash_while_writing)
    with pytest.raises(RuntimeError, match="disk full"):
        checkpointer.save("model_0000001")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000000.pth"]
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000000.pth")
    checkpointer.load(checkpointer.get_checkpoint_file())
    assert torch.equal(model.weight, saved["weight"])


# Shapes and the class head.


@pytest.fixture(scope="module")
def five_classes():
    torch.manual_seed(0)
    return build_model(tiny_cfg(num_classes=5)).state_dict()


def seven_class_model(**options):
    cfg = tiny_cfg(num_classes=7)
    for key, value in options.items():
        setattr(cfg.MODEL.MASK_FORMER, key, value)
    torch.manual_seed(1)
    model = build_model(cfg)
    return cfg, model, {k: v.clone() for k, v in model.state_dict().items()}


def test_checkpoint_with_other_shapes_is_an_error_listing_keys(five_classes, tmp_path):
    path = save(tmp_path / "other.pth", five_classes)
    cfg, model, _ = seven_class_model()
    with pytest.raises(CheckpointShapeError) as error:
        MaskFormerCheckpointer.from_config(cfg, model).load(path)
    message = str(error.value)
    assert path in message and all(key in message for key in CLASS_HEAD)
    assert "MODEL.MASK_FORMER.LOAD_CLASS_HEAD False" in message


def test_shape_mismatch_allowed_skips_every_other_shape(five_classes, tmp_path, logs):
    cfg, model, initial = seven_class_model(ALLOW_CHECKPOINT_SHAPE_MISMATCH=True)
    MaskFormerCheckpointer.from_config(cfg, model).load(save(tmp_path / "other.pth", five_classes))
    for key, value in model.state_dict().items():
        assert torch.equal(value, initial[key] if key in CLASS_HEAD else five_classes[key]), key
    (table,) = tables(logs)
    skipped = next(line for line in table.splitlines() if line.startswith("shape skipped"))
    assert "criterion.empty_weight (6,)->(8,)" in skipped and "class_embed.weight (6, 32)->(8, 32)" in skipped


@pytest.mark.parametrize("file_format", ["pth", "pkl"])
def test_without_class_head_the_rest_loads_and_the_head_is_fresh(five_classes, tmp_path, logs, file_format):
    logs.set_level("INFO")
    writer = save if file_format == "pth" else save_pkl
    path = writer(tmp_path / f"coco.{file_format}", five_classes)
    cfg, model, initial = seven_class_model(LOAD_CLASS_HEAD=False)
    MaskFormerCheckpointer.from_config(cfg, model).load(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, initial[key] if key in CLASS_HEAD else five_classes[key]), key
    (table,) = tables(logs)
    assert "reinitialized      3  criterion.empty_weight, sem_seg_head.predictor.class_embed.{bias,weight}" in table


def test_without_class_head_the_head_is_fresh_even_where_shapes_fit(five_classes, tmp_path):
    model = build_model(tiny_cfg(num_classes=5))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    MaskFormerCheckpointer(model, load_class_head=False).load(save(tmp_path / "same.pth", five_classes))
    for key, value in model.state_dict().items():
        assert torch.equal(value, initial[key] if key in CLASS_HEAD else five_classes[key]), key


@pytest.mark.parametrize("change, error, key", [
    ("drop", IncompleteCheckpointError, "sem_seg_head.predictor.mask_embed.layers.0.weight"),
    ("add", IncompleteCheckpointError, "extra.weight"),
    ("reshape", CheckpointShapeError, "sem_seg_head.predictor.query_feat.weight"),
])
def test_without_class_head_every_other_key_must_fit(five_classes, tmp_path, change, error, key):
    weights = dict(five_classes)
    if change == "drop":
        del weights[key]
    elif change == "add":
        weights[key] = torch.zeros(2)
    else:
        weights[key] = torch.zeros(3, 3)
    cfg, model, _ = seven_class_model(LOAD_CLASS_HEAD=False)
    with pytest.raises(error, match=key.replace(".", r"\.")):
        MaskFormerCheckpointer.from_config(cfg, model).load(save(tmp_path / "w.pth", weights))


def test_resuming_a_fine_tuning_run_loads_its_own_class_head(tmp_path):
    cfg, trained, _ = seven_class_model(LOAD_CLASS_HEAD=False)
    with torch.no_grad():
        for parameter in trained.parameters():  # as trained: other than the fresh initialization
            parameter.add_(1.0)
    MaskFormerCheckpointer.from_config(cfg, trained, str(tmp_path)).save("model_0000009")
    _, model, _ = seven_class_model(LOAD_CLASS_HEAD=False)
    MaskFormerCheckpointer.from_config(cfg, model, str(tmp_path)).resume_or_load("coco.pkl", resume=True)
    assert_loaded(model, trained.state_dict())


def test_class_head_option_from_config_and_never_at_inference():
    cfg, model, _ = seven_class_model()
    assert cfg.MODEL.MASK_FORMER.LOAD_CLASS_HEAD is True
    cfg.MODEL.MASK_FORMER.LOAD_CLASS_HEAD = False
    assert not MaskFormerCheckpointer.from_config(cfg, model).load_class_head
    assert MaskFormerCheckpointer.from_config(cfg, model, for_inference=True).load_class_head
    with pytest.raises(ValueError, match="load_class_head"):
        MaskFormerCheckpointer(model, for_inference=True, load_class_head=False)


def test_load_report_table_names_the_keys_compactly():
    report = LoadReport(
        path="w.pkl",
        loaded=10,
        reinitialized=["criterion.empty_weight", "head.class_embed.weight", "head.class_embed.bias"],
        skipped=[("a.weight", (2, 3), (4, 3))],
        missing=["b.norm.weight"],
        unexpected=[],
    )
    assert report.table().splitlines() == [
        "Loaded checkpoint w.pkl:",
        "loaded            10",
        "reinitialized      3  criterion.empty_weight, head.class_embed.{bias,weight}",
        "shape skipped      1  a.weight (2, 3)->(4, 3)",
        "missing            1  b.norm.weight",
        "unexpected         0",
    ]


# Reading files safely.


class RunsCodeWhenLoaded:
    """Unpickling this object runs ``os.system("touch MARKER")``: any code could run there."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pth_is_read_with_weights_only_even_where_torch_would_not(cfg, state, tmp_path, monkeypatch):
    marker = tmp_path / "code_ran"
    path = tmp_path / "unsafe.pth"
    torch.save({"model": state, "extra": RunsCodeWhenLoaded(marker)}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch.load's default is then unsafe
    for checkpointer in [MaskFormerCheckpointer(fresh_model(cfg)), inference(fresh_model(cfg))]:
        with pytest.raises(UnsafeCheckpointError, match="weights_only=True") as error:
            checkpointer.load(str(path))
        assert str(path) in str(error.value) and "re-save" in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_pkl_that_would_run_code_is_refused_before_it_runs(cfg, state, tmp_path, protocol):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.zeros(2), "x": RunsCodeWhenLoaded(marker)}, "__author__": "x"}, f, protocol)
    with pytest.raises(UnsafeCheckpointError) as error:
        MaskFormerCheckpointer(fresh_model(cfg)).load(str(path))
    assert str(path) in str(error.value) and f"{os.system.__module__}.system" in str(error.value)
    assert not marker.exists()


def test_eval_only_refuses_a_pkl_that_would_run_code(cfg, tmp_path):
    marker = tmp_path / "code_ran"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(RunsCodeWhenLoaded(marker), f)
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    argv = ["--config-file", str(config), "--eval-only", "MODEL.WEIGHTS", str(tmp_path / "evil.pkl"),
            "OUTPUT_DIR", str(tmp_path / "out")]
    result = subprocess.run([PYTHON, "train_net.py", *argv], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert f"error: Checkpoint {tmp_path / 'evil.pkl'} refers to {os.system.__module__}.system" in result.stderr
    assert not marker.exists()


class Numpy2Pickler(pickle._Pickler):
    """Writes numpy's functions under numpy 2's module names (``numpy._core...``), as numpy 2 does."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if not module.startswith("numpy.core."):
            return super().save_global(obj, name)
        self.save(module.replace("numpy.core.", "numpy._core.", 1))
        self.save(name or obj.__qualname__)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


@pytest.mark.parametrize("protocol, pickler", [
    (2, pickle.Pickler), (4, pickle.Pickler), (5, pickle.Pickler), (4, Numpy2Pickler), (5, Numpy2Pickler)
])
def test_model_zoo_pkl_of_numpy_1_and_2_loads(cfg, state, tmp_path, protocol, pickler):
    path = save_pkl(tmp_path / "model_final.pkl", state, protocol, pickler)
    written_by = "numpy._core." if pickler is Numpy2Pickler else "numpy.core."
    assert written_by.encode() in open(path, "rb").read()
    model = fresh_model(cfg)
    inference(model).load(path)
    assert_loaded(model, state)


def test_caffe2_pkl_and_numpy_scalars_load_by_name_matching(tmp_path):
    """Caffe2 / ImageNet files: the weights at the top level (or under "blobs"), matched by name."""
    linear = nn.Linear(2, 3)
    blobs = {"weight": np.ones((3, 2), np.float32), "bias": np.full(3, 2, np.float32), "weight_momentum": np.zeros(1)}
    with open(tmp_path / "c2.pkl", "wb") as f:
        pickle.dump({"blobs": blobs, "lr": np.float32(0.1)}, f, protocol=2)
    MaskFormerCheckpointer(linear).load(str(tmp_path / "c2.pkl"))
    assert torch.equal(linear.bias, torch.full((3,), 2.0))


def write_truncated(path, full):
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not a dict", "not weights"])
@pytest.mark.parametrize("file_format", ["pth", "pkl"])
def test_damaged_checkpoint_is_an_error_naming_the_file(cfg, state, tmp_path, damage, file_format):
    path = tmp_path / f"damaged.{file_format}"
    if damage == "truncated":
        full = tmp_path / f"full.{file_format}"
        (save if file_format == "pth" else save_pkl)(full, state)
        write_truncated(path, full)
    elif damage in ("garbage", "empty"):
        path.write_bytes(b"not a checkpoint at all" if damage == "garbage" else b"")
    else:
        content = [1, 2] if damage == "not a dict" else {"model": {"w": "text"}, "__author__": "x"}
        if file_format == "pth":
            torch.save(content, path)
        else:
            path.write_bytes(pickle.dumps(content))
    with pytest.raises(CheckpointError) as error:
        inference(fresh_model(cfg)).load(str(path))
    assert str(path) in str(error.value)
    assert not isinstance(error.value, UnsafeCheckpointError)


# The tools.


def test_evaluation_refuses_random_weights_unless_asked(cfg, state, tmp_path):
    cfg = cfg.clone()
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    with pytest.raises(MissingWeightsError):
        train_net.evaluate(cfg, resume=False)
    cfg.MODEL.WEIGHTS = save(tmp_path / "no_predictor.pth", without(state, "sem_seg_head.predictor."))
    with pytest.raises(IncompleteCheckpointError, match="sem_seg_head.predictor"):
        train_net.evaluate(cfg, resume=False)
    cfg.MODEL.MASK_FORMER.LOAD_CLASS_HEAD = False  # fine-tuning option: evaluation loads the class head anyway
    cfg.MODEL.WEIGHTS = save(tmp_path / "full.pth", state)
    train_net.evaluate(cfg, resume=False)
    cfg.MODEL.WEIGHTS = ""
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
