"""train_net.py and mask_former.engine: training and evaluation on the demo dataset for the three
tasks, exact resume, two gloo processes = one process, optimizer, AMP on the
CPU, test-time augmentation, CLI errors (evaluator selection: test_evaluation.py)."""
import json
import logging
import os
import subprocess
from unittest import mock

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import AMPTrainer, HookBase, SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from panopticapi.utils import rgb2id
from PIL import Image
from torch import nn
from torch.nn import functional as F

import mask_former.modeling.criterion as criterion_module
from conftest import REPO
from helpers import tiny_cfg
from mask_former.checkpoint import CheckpointShapeError
from mask_former.config import build_config
from mask_former.data.demo_dataset import generate_demo_dataset, register_demo_datasets
from mask_former.engine import (
    IterationBatchSampler,
    SemanticSegmentorWithTTA,
    Trainer,
    build_optimizer,
    build_step_trainer,
    launch,
)
from mask_former.engine.main import cli, evaluate

PYTHON = str(REPO / ".venv" / "bin" / "python")

# name: (train dataset, test dataset, dataset mapper, number of classes, SEMANTIC/PANOPTIC/INSTANCE_ON)
TASKS = {
    "semantic": (
        "demo_shapes_sem_seg_train", "demo_shapes_sem_seg_val", "mask_former_semantic", 6, (True, False, False)
    ),
    "panoptic": (
        "demo_shapes_panoptic_train",
        "demo_shapes_panoptic_val_with_sem_seg",
        "mask_former_panoptic",
        6,
        (True, True, True),
    ),
    "instance": (
        "demo_shapes_instance_train", "demo_shapes_instance_val", "mask_former_instance", 3, (False, False, True)
    ),
}
EQUAL_PAIR = "demo_shapes_equal_pair_train"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """A tiny demo dataset, registered for this module (and for the processes it spawns)."""
    datasets = tmp_path_factory.mktemp("datasets")
    root = datasets / "demo_shapes"
    generate_demo_dataset(str(root), num_train=8, num_val=3, image_size=(48, 64))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETECTRON2_DATASETS", str(datasets))
        register_demo_datasets(str(root))
        yield root
    register_demo_datasets()


def task_cfg(task, output_dir, *, max_iter=2, ims_per_batch=2):
    train, test, mapper, num_classes, (semantic, panoptic, instance) = TASKS[task]
    cfg = tiny_cfg(num_classes=num_classes)
    cfg.DATASETS.TRAIN = (train,)
    cfg.DATASETS.TEST = (test,)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = semantic
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = panoptic
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = instance
    cfg.INPUT.MIN_SIZE_TRAIN = (48,)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.INPUT.MIN_SIZE_TEST = 48
    cfg.INPUT.MAX_SIZE_TEST = 64
    cfg.INPUT.CROP.ENABLED = False
    cfg.SOLVER.IMS_PER_BATCH = ims_per_batch
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.BASE_LR = 1e-3
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = 7
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def final_metrics(output_dir):
    """The last record of metrics.json, where the evaluation at the end of training is."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f][-1]


def train(cfg, *, resume=False, hooks=()):
    seed_all_rng(cfg.SEED)  # as train_net.py's default_setup
    trainer = Trainer(cfg)
    trainer.register_hooks(list(hooks))
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def ground_truth_segments(record):
    """(contiguous class id, ``[H, W]`` bool mask) of every segment of a test record."""
    if "pan_seg_file_name" in record:
        ids = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
        return [(s["category_id"], ids == s["id"]) for s in record["segments_info"]]
    return [(a["category_id"], mask_util.decode(a["segmentation"]).astype(bool)) for a in record["annotations"]]


class GroundTruthHead(nn.Module):
    """Stands in for the head at evaluation: one query per ground-truth segment of the image being
    evaluated (``file_name``) predicts its class and mask exactly (logits of +-20), at the padded
    input size; the other queries predict "no object"."""

    def __init__(self, num_classes, records):
        super().__init__()
        self.num_classes = num_classes
        self.segments_of = {record["file_name"]: ground_truth_segments(record) for record in records}
        self.file_name = None

    def forward(self, features):
        segments = self.segments_of[self.file_name]
        height, width = (4 * size for size in features["res2"].shape[-2:])  # res2 has stride 4
        num_queries = len(segments) + 10  # at least TEST.DETECTIONS_PER_IMAGE (query, class) pairs
        classes = torch.full((num_queries,), self.num_classes)
        masks = torch.full((num_queries, height, width), -20.0)
        for query, (category, mask) in enumerate(segments):
            classes[query] = category
            masks[query, : mask.shape[0], : mask.shape[1]] = torch.from_numpy(mask).float() * 40 - 20
        return {"pred_logits": F.one_hot(classes, self.num_classes + 1).float()[None] * 20, "pred_masks": masks[None]}


def predict_ground_truth(model, records):
    """Replace the model's head by ``GroundTruthHead``: its inference and the evaluators then run
    on perfect predictions."""
    head = GroundTruthHead(model.sem_seg_head.num_classes, records)
    model.sem_seg_head = head
    forward = model.forward

    def forward_naming_the_image(batched_inputs):
        (x,) = batched_inputs  # the test loader's batches hold one image
        assert tuple(x["image"].shape[-2:]) == (x["height"], x["width"])  # the masks need no resizing
        head.file_name = x["file_name"]
        return forward(batched_inputs)

    model.forward = forward_naming_the_image


# task -> metrics of its evaluation
TASK_METRICS = {"panoptic": [("panoptic_seg", "PQ"), ("sem_seg", "mIoU"), ("segm", "AP")], "instance": [("segm", "AP")]}


@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_train_and_evaluate(demo_root, tmp_path, task, monkeypatch):
    cfg = task_cfg(task, tmp_path)
    train(cfg)
    metrics = final_metrics(tmp_path)
    for task_name, metric in TASK_METRICS[task]:
        assert 0.0 <= metrics[f"{task_name}/{metric}"] < 100.0, metrics  # two iterations: far from perfect
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]

    # train_net.py --eval-only of the final checkpoint, with the ground truth as predictions.
    test = Trainer.test.__func__

    def test_perfect_predictions(cls, cfg, model):
        loaded = model.state_dict()
        assert all(torch.equal(loaded[key], value) for key, value in final.items())
        predict_ground_truth(model, DatasetCatalog.get(cfg.DATASETS.TEST[0]))
        return test(cls, cfg, model)

    monkeypatch.setattr(Trainer, "test", classmethod(test_perfect_predictions))
    eval_cfg = cfg.clone()
    eval_cfg.MODEL.WEIGHTS = str(tmp_path / "model_final.pth")
    results = evaluate(eval_cfg, resume=False)
    for task_name, metric in TASK_METRICS[task]:
        assert results[task_name][metric] == pytest.approx(100.0), (task_name, results)


def test_train_net_cli_trains_and_evaluates_semantic(demo_root, tmp_path):
    config = tmp_path / "semantic.yaml"
    config.write_text(task_cfg("semantic", tmp_path / "out").dump())
    result = subprocess.run(
        [PYTHON, "train_net.py", "--config-file", str(config), "SOLVER.MAX_ITER", "2"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "DETECTRON2_DATASETS": str(demo_root.parent)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "iter: 1" in result.stdout  # CommonMetricPrinter's progress
    assert 0.0 <= final_metrics(tmp_path / "out")["sem_seg/mIoU"] <= 100.0


class CrashAt(HookBase):
    def __init__(self, iteration):
        self.iteration = iteration

    def before_step(self):
        if self.trainer.iter == self.iteration:
            raise RuntimeError("simulated crash")


def test_resume_continues_exactly(demo_root, tmp_path):
    def cfg(output_dir):
        cfg = task_cfg("panoptic", output_dir, max_iter=4)
        cfg.SOLVER.CHECKPOINT_PERIOD = 2
        cfg.INPUT.MIN_SIZE_TRAIN = (40, 48, 56)  # random augmentations, dropout and drop path
        cfg.INPUT.CROP.ENABLED = True
        cfg.INPUT.CROP.TYPE = "absolute"
        cfg.INPUT.CROP.SIZE = (40, 40)
        cfg.MODEL.MASK_FORMER.DROPOUT = 0.1
        cfg.MODEL.SWIN.DROP_PATH_RATE = 0.2
        cfg.DATASETS.TEST = ()
        return cfg

    straight = train(cfg(tmp_path / "straight")).checkpointer.model.state_dict()
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg(tmp_path / "resumed"), hooks=[CrashAt(2)])
    assert (tmp_path / "resumed" / "last_checkpoint").read_text() == "model_0000001.pth"
    torch.manual_seed(123)  # the resumed run must not depend on the state it starts in
    resumed_trainer = train(cfg(tmp_path / "resumed"), resume=True)
    assert resumed_trainer.start_iter == 2
    resumed = resumed_trainer.checkpointer.model.state_dict()
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


@pytest.mark.parametrize("precise_bn", [False, True])
def test_precise_bn_recomputes_batch_norm_statistics_at_the_end(demo_root, tmp_path, precise_bn):
    cfg = task_cfg("semantic", tmp_path)
    cfg.MODEL.SEM_SEG_HEAD.NORM = "BN"
    cfg.DATASETS.TEST = ()
    cfg.TEST.PRECISE_BN.ENABLED = precise_bn
    cfg.TEST.PRECISE_BN.NUM_ITER = 3
    trainer = train(cfg)
    hook_types = [type(hook).__name__ for hook in trainer.build_hooks() if hook is not None]
    expected = ["IterationTimer", "LRScheduler", "PreciseBN", "PeriodicCheckpointer", "EvalHook", "PeriodicWriter"]
    assert hook_types == [name for name in expected if precise_bn or name != "PreciseBN"]
    batch_norms = [m for m in trainer.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms
    # Two training iterations, then (with PreciseBN) its three batches.
    assert {m.num_batches_tracked.item() for m in batch_norms} == {5 if precise_bn else 2}


def batches(sampler, count):
    return [batch for batch, _ in zip(sampler, range(count))]


def test_batch_stream_is_addressable_by_iteration_and_split_among_processes():
    def sampler(**kwargs):
        return IterationBatchSampler(
            epoch_order=lambda generator: torch.randperm(10, generator=generator),
            group_ids=[i % 3 == 0 for i in range(10)],
            total_batch_size=4,
            seed=5,
            **kwargs,
        )

    stream = batches(sampler(), 8)
    assert batches(sampler(start_iter=5), 3) == stream[5:]
    for batch in stream:
        assert len({index % 3 == 0 for index, _ in batch}) == 1  # one aspect-ratio group per batch
    halves = [batches(sampler(rank=rank, world_size=2), 8) for rank in (0, 1)]
    assert [first + second for first, second in zip(*halves)] == stream
    assert len({seed for batch in stream for _, seed in batch}) == 32  # every image its own seed
    with pytest.raises(ValueError, match="divisible"):
        sampler(world_size=3)


def fixed_grid_points(coarse_logits, num_points, oversample_ratio, importance_sample_ratio):
    """Deterministic stand-in for PointRend's random point sampling: the same grid for every mask,
    so that the losses do not depend on how images are split among processes."""
    side = int(num_points**0.5)
    centers = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    ys, xs = torch.meshgrid(centers, centers, indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    return grid[None].expand(coarse_logits.shape[0], -1, -1).to(coarse_logits.device)


class DeterministicLossTrainer(Trainer):
    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        model.criterion.matcher.num_points = 0  # match on every pixel rather than random points
        return model


def register_equal_pair(root):
    """Two demo images with the same number of segments: the classification loss (a mean
    weighted by matched / unmatched queries) then averages the same over one or two processes."""
    register_demo_datasets(str(root))
    by_count = {}
    for record in DatasetCatalog.get("demo_shapes_panoptic_train"):
        by_count.setdefault(len(record["segments_info"]), []).append(record)
    pair = next(records[:2] for records in by_count.values() if len(records) >= 2)
    if EQUAL_PAIR in DatasetCatalog.list():
        DatasetCatalog.remove(EQUAL_PAIR)
        MetadataCatalog.remove(EQUAL_PAIR)
    DatasetCatalog.register(EQUAL_PAIR, lambda: pair)
    metadata = MetadataCatalog.get("demo_shapes_panoptic_train").as_dict()
    MetadataCatalog.get(EQUAL_PAIR).set(**{k: v for k, v in metadata.items() if k != "name"})


def one_sgd_step(root, output_dir, result_file):
    """Train one SGD step of a model without BatchNorm on the equal pair; the main process saves
    the logged total loss and the weights."""
    register_equal_pair(root)
    cfg = task_cfg("panoptic", output_dir, max_iter=1)
    cfg.DATASETS.TRAIN = (EQUAL_PAIR,)
    cfg.DATASETS.TEST = ()
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BASE_LR = 0.1
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.0
    seed_all_rng(cfg.SEED)
    with mock.patch.object(criterion_module, "uncertain_point_coords", fixed_grid_points):
        trainer = DeterministicLossTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
    if comm.is_main_process():
        state = {k: v.clone() for k, v in trainer.checkpointer.model.state_dict().items()}
        torch.save({"total_loss": trainer.storage.history("total_loss").latest(), "model": state}, result_file)


def test_two_gloo_processes_match_one_process(demo_root, tmp_path):
    two_processes_args = (str(demo_root), str(tmp_path / "two"), str(tmp_path / "two.pt"))
    launch(one_sgd_step, 2, dist_url="auto", args=two_processes_args, device="cpu")
    one_sgd_step(str(demo_root), str(tmp_path / "one"), str(tmp_path / "one.pt"))
    two, one = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    assert two["total_loss"] == pytest.approx(one["total_loss"], rel=1e-5)
    seed_all_rng(7)
    initial = DeterministicLossTrainer.build_model(task_cfg("panoptic", tmp_path)).state_dict()
    key = "sem_seg_head.predictor.class_embed.weight"
    assert not torch.equal(initial[key], one["model"][key])  # the step changed the weights
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-5, atol=1e-5, msg=key)


def test_param_groups_follow_the_solver_config():
    cfg = tiny_cfg()
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 0.5
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.25
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.125
    model = Trainer.build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    group_of = {id(group["params"][0]): group for group in optimizer.param_groups}
    names = dict(model.named_parameters())
    assert len(group_of) == len(names)

    def hyperparams(name):
        group = group_of[id(names[name])]
        return group["lr"], group["weight_decay"]

    assert hyperparams("backbone.patch_embed.proj.weight") == (pytest.approx(0.1), 0.5)
    assert hyperparams("backbone.norm0.weight") == (pytest.approx(0.1), 0.25)
    assert hyperparams("backbone.layers.0.blocks.0.attn.relative_position_bias_table") == (pytest.approx(0.1), 0.0)
    assert hyperparams("sem_seg_head.predictor.query_feat.weight") == (1.0, 0.125)
    assert hyperparams("sem_seg_head.pixel_decoder.transformer.level_embed") == (1.0, 0.5)
    assert hyperparams("sem_seg_head.predictor.class_embed.weight") == (1.0, 0.5)


def test_full_model_gradient_clipping_and_optimizer_choice():
    cfg = tiny_cfg()
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.MOMENTUM = 0.0
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.SGD)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    (model(torch.ones(3, 4)) * 100).sum().backward()
    optimizer.step()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (before - after).norm().item() == pytest.approx(0.5, rel=1e-4)

    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    assert "GradientClip" in type(build_optimizer(cfg, model)).__name__
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(cfg, model)


def test_amp_on_cpu_trains_in_float32_with_a_warning(caplog):
    cfg = tiny_cfg()
    cfg.SOLVER.AMP.ENABLED = True
    model = nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING):
        step_trainer = build_step_trainer(cfg, model, [[]], torch.optim.SGD(model.parameters(), lr=0.1))
    assert type(step_trainer) is SimpleTrainer and not isinstance(step_trainer, AMPTrainer)
    assert "AMP is disabled" in caplog.text


class ImageAsScores(nn.Module):
    """A fake segmentation model: the "class scores" are the input image resized to the output."""

    def forward(self, batched_inputs):
        return [
            {"sem_seg": F.interpolate(x["image"][None].float(), size=(x["height"], x["width"]), mode="bilinear")[0]}
            for x in batched_inputs
        ]


def test_tta_averages_scales_and_undoes_flips():
    cfg = tiny_cfg()
    cfg.TEST.AUG.MIN_SIZES = (24, 32, 40)
    cfg.TEST.AUG.MAX_SIZE = 100
    cfg.TEST.AUG.FLIP = True
    ramp = torch.linspace(0, 255, 48).expand(3, 32, 48)  # left to right: flips are visible
    inputs = [{"image": ramp.to(torch.uint8), "height": 32, "width": 48}]
    plain = ImageAsScores()(inputs)[0]["sem_seg"]
    tta = SemanticSegmentorWithTTA(cfg, ImageAsScores())(inputs)[0]["sem_seg"]
    assert tta.shape == (3, 32, 48)
    assert (tta - plain).abs().mean() < 2.0
    assert (tta.flip(dims=[2]) - plain).abs().mean() > 50.0


def test_cli_reports_config_errors(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_cfg().dump())
    result = subprocess.run(
        [PYTHON, "train_net.py", "--config-file", str(config), "MODEL.NOT_A_KEY", "1"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "error: command-line options: Non-existent key: MODEL.NOT_A_KEY" in result.stderr

    assert cli(["--config-file", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_build_config_turns_cuda_into_cpu_without_cuda(tmp_path):
    config = tmp_path / "tiny.yaml"
    cfg = tiny_cfg()
    cfg.MODEL.DEVICE = "cuda"
    config.write_text(cfg.dump())
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert build_config(str(config)).MODEL.DEVICE == expected
    assert np.isclose(build_config(str(config), ["SOLVER.BASE_LR", "0.5"]).SOLVER.BASE_LR, 0.5)


def test_trainer_fine_tunes_to_other_classes_with_a_fresh_class_head(demo_root, tmp_path):
    """MODEL.MASK_FORMER.LOAD_CLASS_HEAD False: a 6-class panoptic model starts a 3-class instance run."""
    torch.manual_seed(0)
    weights = Trainer.build_model(task_cfg("panoptic", tmp_path / "source")).state_dict()
    torch.save({"model": weights}, tmp_path / "panoptic.pth")
    cfg = task_cfg("instance", tmp_path / "fine_tuned")
    cfg.MODEL.WEIGHTS = str(tmp_path / "panoptic.pth")
    with pytest.raises(CheckpointShapeError, match="class_embed"):
        Trainer(cfg).resume_or_load(resume=False)
    cfg.MODEL.MASK_FORMER.LOAD_CLASS_HEAD = False
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    loaded = trainer.model.state_dict()
    class_head = {"sem_seg_head.predictor.class_embed.weight", "sem_seg_head.predictor.class_embed.bias",
                  "criterion.empty_weight"}
    assert {key for key in weights if loaded[key].shape != weights[key].shape} == class_head
    for key in weights.keys() - class_head:
        assert torch.equal(loaded[key], weights[key]), key
