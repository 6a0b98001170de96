#!/usr/bin/env python
"""
The whole pipeline in one command, on the CPU, from a fresh clone (``make quickstart``):

1. generate the built-in demo shapes dataset (``datasets/demo_shapes``, a few seconds);
2. evaluate the untrained model, for reference;
3. train a small Mask2Former (configs/quickstart/mask2former_demo_shapes.yaml) for a few minutes;
4. evaluate it with detectron2's evaluators: PQ (COCOPanopticEvaluator), mIoU (SemSegEvaluator)
   and mask AP (COCOEvaluator), and compare with the untrained model;
5. draw its semantic, panoptic and instance predictions on a few validation images
   (``output/quickstart/visualizations/*.png``).

Exits with status 1 if the trained model is not clearly better than the untrained one.

Usage::

    python tools/quickstart.py [--config-file CONFIG] [--num-images N] [--opts KEY VALUE ...]
"""
import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, Tuple

REPO = Path(__file__).resolve().parents[1]
# The demo datasets are registered at import time under $DETECTRON2_DATASETS.
os.environ.setdefault("DETECTRON2_DATASETS", str(REPO / "datasets"))

import numpy as np  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

import mask_former  # noqa: E402,F401
from mask_former.config import build_config  # noqa: E402
from mask_former.data.demo_dataset import ensure_demo_dataset  # noqa: E402
from mask_former.engine import Trainer  # noqa: E402
from mask_former.engine.metrics_plot import plot_metrics  # noqa: E402
from mask_former.engine.predictor import TASKS, VisualizationDemo, draw_predictions  # noqa: E402
from mask_former.errors import ConfigError  # noqa: E402

DEFAULT_CONFIG = REPO / "configs" / "quickstart" / "mask2former_demo_shapes.yaml"

# (title, task in the evaluation results, metric): the numbers compared before / after training.
REPORTED_METRICS = (
    ("PQ", "panoptic_seg", "PQ"),
    ("PQ things", "panoptic_seg", "PQ_th"),
    ("PQ stuff", "panoptic_seg", "PQ_st"),
    ("mIoU", "sem_seg", "mIoU"),
    ("pixel accuracy", "sem_seg", "pACC"),
    ("mask AP", "segm", "AP"),
    ("mask AP50", "segm", "AP50"),
)
# The run fails if these do not improve by at least this many points over the untrained model.
REQUIRED_GAINS = {"PQ": 20.0, "mIoU": 20.0, "mask AP": 10.0}

logger = logging.getLogger("mask_former.quickstart")


def stage(number: int, title: str) -> None:
    logger.info(f"[{number}/5] {title}")


def evaluate_untrained(cfg) -> Dict:
    seed_all_rng(cfg.SEED)
    return Trainer.test(cfg, build_model(cfg))


def train(cfg) -> Tuple[nn.Module, float]:
    """Train (no evaluation during training); returns the trained model and the duration."""
    train_cfg = cfg.clone()
    train_cfg.defrost()
    train_cfg.DATASETS.TEST = ()
    train_cfg.freeze()
    seed_all_rng(cfg.SEED)
    start = time.perf_counter()
    trainer = Trainer(train_cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer.model, time.perf_counter() - start


def metric(results: Dict, task: str, name: str) -> float:
    return float(results.get(task, {}).get(name, float("nan")))


def comparison_table(untrained: Dict, trained: Dict) -> str:
    lines = [f"{'metric':<16}{'untrained':>10}{'trained':>10}", "-" * 36]
    for title, task, name in REPORTED_METRICS:
        lines.append(f"{title:<16}{metric(untrained, task, name):>10.1f}{metric(trained, task, name):>10.1f}")
    return "\n".join(lines)


def failed_gains(untrained: Dict, trained: Dict) -> Dict[str, float]:
    """The required metrics that did not improve enough: title -> gain."""
    by_title = {title: (task, name) for title, task, name in REPORTED_METRICS}
    gains = {
        title: metric(trained, *by_title[title]) - metric(untrained, *by_title[title]) for title in REQUIRED_GAINS
    }
    return {title: gain for title, gain in gains.items() if not gain >= REQUIRED_GAINS[title]}


def write_visualizations(cfg, weights: str, num_images: int, scale: int = 3) -> str:
    """Input | semantic | panoptic | instance panels of the first validation images, drawn ``scale``
    times larger than the (small) images."""
    vis_cfg = cfg.clone()
    vis_cfg.defrost()
    vis_cfg.MODEL.WEIGHTS = weights
    demo = VisualizationDemo(vis_cfg)
    folder = os.path.join(cfg.OUTPUT_DIR, "visualizations")
    os.makedirs(folder, exist_ok=True)
    for record in tqdm(DatasetCatalog.get(cfg.DATASETS.TEST[0])[:num_images], desc="Visualizations", unit="img"):
        image_bgr = read_image(record["file_name"], format="BGR")
        predictions = demo.predictor([image_bgr])[0]
        image_rgb = image_bgr[:, :, ::-1]
        panels = [image_rgb.repeat(scale, axis=0).repeat(scale, axis=1)] + [
            draw_predictions(image_rgb, predictions, demo.metadata, task, scale=scale).get_image() for task in TASKS
        ]
        name = os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png"
        Image.fromarray(np.concatenate(panels, axis=1)).save(os.path.join(folder, name))
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train and evaluate a small Mask2Former on the demo dataset")
    parser.add_argument("--config-file", default=str(DEFAULT_CONFIG), metavar="FILE")
    parser.add_argument("--num-images", type=int, default=6, help="validation images to draw")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        cfg = build_config(args.config_file, args.opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(cfg.OUTPUT_DIR, name="fvcore")
    setup_logger(cfg.OUTPUT_DIR)
    setup_logger(cfg.OUTPUT_DIR, name="mask_former")

    stage(1, "Demo dataset")
    logger.info(f"Demo dataset at {ensure_demo_dataset()}")
    stage(2, "Evaluating the untrained model")
    untrained = evaluate_untrained(cfg)
    stage(3, f"Training for {cfg.SOLVER.MAX_ITER} iterations on the {cfg.MODEL.DEVICE}")
    model, train_seconds = train(cfg)
    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    stage(4, "Evaluating the trained model")
    trained = Trainer.test(cfg, model)
    stage(5, "Drawing predictions")
    folder = write_visualizations(cfg, weights, args.num_images)
    curves = plot_metrics(cfg.OUTPUT_DIR)

    logger.info(
        f"Quickstart finished in {(time.perf_counter() - start) / 60:.1f} min (training {train_seconds / 60:.1f} min) "
        f"on {cfg.DATASETS.TEST[0]}:\n{comparison_table(untrained, trained)}\n"
        f"Checkpoint: {weights}\nVisualizations (input | semantic | panoptic | instance): {folder}\n"
        f"Training curves: {curves} (TensorBoard: tensorboard --logdir {cfg.OUTPUT_DIR})"
    )
    failures = failed_gains(untrained, trained)
    if failures:
        logger.error(f"The model did not learn enough: gains {failures}, required {REQUIRED_GAINS}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
