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

With ``--video`` (``make quickstart-video``), the same for video instance segmentation: the demo shapes
video dataset (``datasets/demo_shapes_video``), a small Mask2Former-VIS
(configs/quickstart/video_mask2former_demo_shapes.yaml), its YouTube-VIS mask AP (YTVISEvaluator) before and
after training, and its instances drawn on a few validation videos (``output/quickstart_video/visualization.mp4``).

Exits with status 1 if the trained model is not clearly better than the untrained one.

Usage::

    python tools/quickstart.py [--video] [--config-file CONFIG] [--num-images N] [--opts KEY VALUE ...]
"""
import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Tuple

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
from mask_former.data.demo_video_dataset import ensure_demo_video_dataset  # noqa: E402
from mask_former.engine import Trainer  # noqa: E402
from mask_former.engine.demo_files import open_video_writer  # noqa: E402
from mask_former.engine.metrics_plot import plot_metrics  # noqa: E402
from mask_former.engine.predictor import TASKS, VisualizationDemo, draw_predictions  # noqa: E402
from mask_former.engine.video_predictor import VideoVisualizationDemo, draw_video_predictions  # noqa: E402
from mask_former.errors import ConfigError  # noqa: E402

CONFIGS = REPO / "configs" / "quickstart"
# Frame rate of the video quickstart's visualization: the demo videos are short.
VISUALIZATION_FPS = 4.0

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


def comparison_table(metrics, untrained: Dict, trained: Dict) -> str:
    lines = [f"{'metric':<16}{'untrained':>10}{'trained':>10}", "-" * 36]
    for title, task, name in metrics:
        lines.append(f"{title:<16}{metric(untrained, task, name):>10.1f}{metric(trained, task, name):>10.1f}")
    return "\n".join(lines)


def failed_gains(metrics, required_gains: Dict[str, float], untrained: Dict, trained: Dict) -> Dict[str, float]:
    """The required metrics that did not improve enough: title -> gain."""
    by_title = {title: (task, name) for title, task, name in metrics}
    gains = {
        title: metric(trained, *by_title[title]) - metric(untrained, *by_title[title]) for title in required_gains
    }
    return {title: gain for title, gain in gains.items() if not gain >= required_gains[title]}


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


def write_video_visualization(cfg, weights: str, num_videos: int, scale: int = 3) -> str:
    """One video of the first validation videos one after the other, each frame as input | instances (one
    colour per instance through its video), drawn ``scale`` times larger than the (small) frames."""
    vis_cfg = cfg.clone()
    vis_cfg.defrost()
    vis_cfg.MODEL.WEIGHTS = weights
    demo = VideoVisualizationDemo(vis_cfg)
    path = os.path.join(cfg.OUTPUT_DIR, "visualization.mp4")
    writer = None
    try:
        for record in tqdm(DatasetCatalog.get(cfg.DATASETS.TEST[0])[:num_videos], desc="Visualizations", unit="video"):
            frames_rgb = [read_image(name, format="RGB") for name in record["file_names"]]
            predictions = demo.predictor([frame[:, :, ::-1] for frame in frames_rgb])
            drawn = draw_video_predictions(frames_rgb, predictions, demo.metadata, scale=scale)
            for frame, drawing in zip(frames_rgb, drawn):
                panel = np.concatenate([frame.repeat(scale, axis=0).repeat(scale, axis=1), drawing], axis=1)
                if writer is None:
                    writer = open_video_writer(path, VISUALIZATION_FPS, panel.shape[1], panel.shape[0])
                writer.write(np.ascontiguousarray(panel[:, :, ::-1]))
    finally:
        if writer is not None:
            writer.release()
    return path


@dataclass(frozen=True)
class Pipeline:
    """What the quickstart of one kind of model runs and checks.

    Attributes:
        config: the default config file.
        prepare_dataset: generates the demo dataset where missing; returns its folder.
        metrics: (title, task in the evaluation results, metric): the numbers compared before / after training.
        required_gains: title -> points: the run fails unless these improve by as much over the untrained model.
        draw: ``draw(cfg, weights, count)`` draws the trained model's predictions; returns where.
        drawing: what the drawings show.
    """

    config: Path
    prepare_dataset: Callable[[], str]
    metrics: Tuple[Tuple[str, str, str], ...]
    required_gains: Dict[str, float]
    draw: Callable[..., str]
    drawing: str


PIPELINES = {
    "image": Pipeline(
        config=CONFIGS / "mask2former_demo_shapes.yaml",
        prepare_dataset=ensure_demo_dataset,
        metrics=(
            ("PQ", "panoptic_seg", "PQ"),
            ("PQ things", "panoptic_seg", "PQ_th"),
            ("PQ stuff", "panoptic_seg", "PQ_st"),
            ("mIoU", "sem_seg", "mIoU"),
            ("pixel accuracy", "sem_seg", "pACC"),
            ("mask AP", "segm", "AP"),
            ("mask AP50", "segm", "AP50"),
        ),
        required_gains={"PQ": 20.0, "mIoU": 20.0, "mask AP": 10.0},
        draw=write_visualizations,
        drawing="input | semantic | panoptic | instance",
    ),
    "video": Pipeline(
        config=CONFIGS / "video_mask2former_demo_shapes.yaml",
        prepare_dataset=ensure_demo_video_dataset,
        metrics=(
            ("mask AP", "segm", "AP"),
            ("mask AP50", "segm", "AP50"),
            ("mask AP75", "segm", "AP75"),
            ("AR10", "segm", "AR10"),
        ),
        required_gains={"mask AP": 20.0},
        draw=write_video_visualization,
        drawing="input | instances, one colour per instance",
    ),
}
"""``--video`` picks "video", otherwise "image"."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train and evaluate a small Mask2Former on the demo dataset")
    parser.add_argument(
        "--video",
        dest="pipeline",
        action="store_const",
        const="video",
        default="image",
        help="video instance segmentation (Mask2Former-VIS on the demo shapes videos)",
    )
    parser.add_argument("--config-file", metavar="FILE", help="default: the pipeline's quickstart config")
    parser.add_argument("--num-images", type=int, default=6, help="validation images (--video: videos) to draw")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    args = parser.parse_args(argv)
    pipeline = PIPELINES[args.pipeline]
    start = time.perf_counter()
    try:
        cfg = build_config(args.config_file or str(pipeline.config), args.opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_logger(cfg.OUTPUT_DIR, name="fvcore")
    setup_logger(cfg.OUTPUT_DIR)
    setup_logger(cfg.OUTPUT_DIR, name="mask_former")

    stage(1, "Demo dataset")
    logger.info(f"Demo dataset at {pipeline.prepare_dataset()}")
    stage(2, "Evaluating the untrained model")
    untrained = evaluate_untrained(cfg)
    stage(3, f"Training for {cfg.SOLVER.MAX_ITER} iterations on the {cfg.MODEL.DEVICE}")
    model, train_seconds = train(cfg)
    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    stage(4, "Evaluating the trained model")
    trained = Trainer.test(cfg, model)
    stage(5, "Drawing predictions")
    drawings = pipeline.draw(cfg, weights, args.num_images)
    curves = plot_metrics(cfg.OUTPUT_DIR)

    logger.info(
        f"Quickstart finished in {(time.perf_counter() - start) / 60:.1f} min (training {train_seconds / 60:.1f} min, "
        f"{cfg.SOLVER.MAX_ITER} iterations) on {cfg.DATASETS.TEST[0]}:\n"
        f"{comparison_table(pipeline.metrics, untrained, trained)}\n"
        f"Checkpoint: {weights}\nVisualizations ({pipeline.drawing}): {drawings}\n"
        f"Training curves: {curves} (TensorBoard: tensorboard --logdir {cfg.OUTPUT_DIR})"
    )
    failures = failed_gains(pipeline.metrics, pipeline.required_gains, untrained, trained)
    if failures:
        logger.error(f"The model did not learn enough: gains {failures}, required {pipeline.required_gains}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
