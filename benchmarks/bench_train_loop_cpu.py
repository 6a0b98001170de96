"""The whole CPU training loop of a small semantic config, ours beside upstream Mask2Former's, on the same
records: detectron2's data loader with ``DATALOADER.NUM_WORKERS`` workers, the dataset mapper, the model's step,
the optimizer and the trainer's hooks (LR schedule, checkpointer, metric writers), as ``train_net.py`` runs them:

    .venv/bin/python benchmarks/bench_train_loop_cpu.py --upstream /work/upstream/Mask2Former [--rounds 3]

A semantic dataset of ``--images`` synthetic street scenes (``--size``, default 480x360: sky, buildings, road,
sidewalk, trees, poles, signs, fences, cars, pedestrians, cyclists; 11 classes, 255 unlabelled) is written as
JPEG images with PNG labels to a temporary folder and registered under the same name in both. The config is
upstream's ADE20K semantic Mask2Former shrunk (see ``SMALL_CONFIG``): ResNet-18, 64-dim heads, 32 queries,
160x160 crops (scales for 360-pixel-high images), batch 8, one loader worker, AMP off (the CPU), no evaluation.
Both trainers start from the same random weights (built once here).

Each round runs ours and upstream's, in alternating order, each in a fresh subprocess (``--iters`` iterations
after ``--warmup``); upstream's ``train_net.Trainer`` is imported from ``--upstream`` with our detectron2 (see
``bench_train_cpu.stub_upstream_imports``). Per run it measures:

- s/iter: median (and mean) wall-clock time between the starts of consecutive timed iterations, hooks included;
- data wait: detectron2's ``data_time`` (the step's wait for the next batch), median ms;
- CPU s/iter of the main process and of the loader workers (their user + system time from ``/proc``);
- the mapper's ms/record, timed after training in the same process on one thread (a loader worker's share).

Prints markdown tables: each round's s/iter and speed-up over upstream, then the medians over rounds.
Timings on a busy machine are noisy: run it on a quiet one, with --rounds 3 or more.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from PIL import Image

from bench_mappers_cpu import map_all
from bench_train_cpu import build_cfg, build_model
from timing import median_seconds

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCHMARKS)
DATASET = "bench_train_loop_train"
CLASSES = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car", "pedestrian", "bicyclist"]
SKY, BUILDING, POLE, ROAD, SIDEWALK, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(len(CLASSES))
IGNORE_LABEL = 255
# Per-class base colour (RGB) of the synthetic scenes.
COLORS = np.array([
    [135, 180, 230], [150, 120, 100], [90, 90, 90], [100, 100, 105], [170, 160, 150], [60, 120, 50],
    [220, 200, 40], [140, 110, 70], [180, 30, 30], [60, 40, 90], [30, 90, 160],
])
SMALL_CONFIG = [
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(len(CLASSES)),
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "64", "MODEL.SEM_SEG_HEAD.MASK_DIM", "64",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "64", "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "256",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "32",
    # Upstream's scales of the short side (0.5x to 2x of 512) for 360-pixel-high images; crops padded to 160.
    "INPUT.MIN_SIZE_TRAIN", str(tuple(int(x * 0.1 * 360) for x in range(5, 21))), "INPUT.MAX_SIZE_TRAIN", "1440",
    "INPUT.CROP.SIZE", "(160, 160)", "INPUT.SIZE_DIVISIBILITY", "160",
    "SOLVER.IMS_PER_BATCH", "8", "SOLVER.AMP.ENABLED", "False", "SOLVER.CHECKPOINT_PERIOD", "1000000",
    "DATALOADER.NUM_WORKERS", "1", "DATASETS.TRAIN", f"('{DATASET}',)", "DATASETS.TEST", "()",
    "TEST.EVAL_PERIOD", "0",
]
PATHS = ("ours", "upstream")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", default=None, help="a Mask2Former checkout to time beside ours")
    parser.add_argument("--config-file", default="configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 360), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each path, alternating which goes first")
    parser.add_argument("--mapper-passes", type=int, default=3, help="timed passes of the mapper over 16 records")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the main process (default: "
                        "torch's choice; the loader workers run on one, as torch's DataLoader sets)")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Synthetic street scenes.


def draw_box(label: np.ndarray, category: int, top: float, bottom: float, left: float, right: float) -> None:
    height, width = label.shape
    rows = slice(int(np.clip(top, 0, height)), int(np.clip(bottom, 0, height)))
    label[rows, int(np.clip(left, 0, width)) : int(np.clip(right, 0, width))] = category


def draw_ellipse(label: np.ndarray, category: int, center_y: float, center_x: float, radius_y: float,
                 radius_x: float) -> None:
    ys, xs = np.ogrid[: label.shape[0], : label.shape[1]]
    label[((ys - center_y) / radius_y) ** 2 + ((xs - center_x) / radius_x) ** 2 <= 1] = category


def street_label(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 ``[H, W]``: a street scene's classes, 255 on unlabelled patches."""
    label = np.full((height, width), SKY, np.uint8)
    horizon = rng.uniform(0.4, 0.55) * height
    draw_box(label, ROAD, horizon, height, 0, width)
    curb = horizon + rng.uniform(0.08, 0.15) * height
    ys, xs = np.mgrid[:height, :width]
    nearness = np.clip((ys - horizon) / (height - horizon), 0, None)  # sidewalks widen towards the camera
    label[xs < nearness * width * rng.uniform(0.2, 0.35)] = SIDEWALK
    label[width - 1 - xs < nearness * width * rng.uniform(0.2, 0.35)] = SIDEWALK
    x = 0.0
    while x < width:  # a row of buildings and trees on the horizon
        span = rng.uniform(0.08, 0.25) * width
        if rng.random() < 0.3:
            draw_ellipse(label, TREE, horizon - span * 0.4, x + span / 2, span * 0.6, span / 2)
        else:
            draw_box(label, BUILDING, horizon - rng.uniform(0.15, 0.45) * height, horizon + 2, x, x + span)
        x += span
    if rng.random() < 0.5:
        draw_box(label, FENCE, horizon - 0.05 * height, curb, 0, rng.uniform(0.1, 0.4) * width)
    for _ in range(rng.integers(1, 4)):  # poles, some carrying a sign
        px, top = rng.uniform(0, width), rng.uniform(0.1, 0.3) * height
        draw_box(label, POLE, top, curb + rng.uniform(0, 0.1) * height, px, px + rng.uniform(3, 7))
        if rng.random() < 0.5:
            draw_box(label, SIGN, top, top + 0.06 * height, px - 0.03 * width, px + 0.03 * width)
    for _ in range(rng.integers(1, 5)):  # cars on the road, larger when nearer
        y = rng.uniform(horizon + 0.05 * height, height * 0.95)
        scale = (y - horizon) / (height - horizon)
        cx, w = rng.uniform(0, width), (0.1 + 0.3 * scale) * width
        draw_box(label, CAR, y - 0.45 * w, y, cx - w / 2, cx + w / 2)
    for category in rng.choice([PEDESTRIAN, BICYCLIST], rng.integers(0, 4)):
        y, cx = rng.uniform(curb, height * 0.9), rng.uniform(0, width)
        size = (0.1 + 0.3 * (y - horizon) / (height - horizon)) * height
        draw_ellipse(label, category, y - size / 2, cx, size / 2, size / (5 if category == PEDESTRIAN else 3))
    for _ in range(rng.integers(0, 3)):  # unannotated clutter
        draw_ellipse(label, IGNORE_LABEL, rng.uniform(0, height), rng.uniform(0, width), *rng.uniform(4, 20, 2))
    return label


def street_image(rng: np.random.Generator, label: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]``: per-class colours with per-image tints, stripes (windows, lanes), a vertical
    lighting gradient and sensor noise."""
    height, width = label.shape
    colors = np.clip(np.vstack([COLORS, [[80, 80, 80]]]) + rng.normal(0, 15, (len(COLORS) + 1, 3)), 0, 255)
    image = colors[np.where(label == IGNORE_LABEL, len(COLORS), label)]
    ys, xs = np.mgrid[:height, :width]
    stripes = np.sin(xs * rng.uniform(0.2, 0.6)) * np.sin(ys * rng.uniform(0.2, 0.6))
    image += (np.isin(label, [BUILDING, FENCE]) * 25 * stripes)[..., None]
    image *= (1.1 - 0.25 * ys / height)[..., None]
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_dataset(root: str, count: int, size, seed: int = 0) -> List[Dict]:
    """Write ``count`` JPEG images and PNG labels under ``root``; returns their dataset dicts."""
    width, height = size
    records = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        label = street_label(rng, height, width)
        paths = [os.path.join(root, f"{index:04d}.{ext}") for ext in ("jpg", "png")]
        Image.fromarray(street_image(rng, label)).save(paths[0], quality=90)
        Image.fromarray(label).save(paths[1])
        records.append({"file_name": paths[0], "sem_seg_file_name": paths[1], "height": height, "width": width,
                        "image_id": index})
    return records


def register_dataset(records: List[Dict]) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.register(DATASET, lambda: [dict(record) for record in records])
    MetadataCatalog.get(DATASET).set(stuff_classes=CLASSES, ignore_label=IGNORE_LABEL, evaluator_type="sem_seg")


# ---------------------------------------------------------------------------------------------
# One run (a subprocess).


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's live child processes (the data loader's workers)."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        if int(fields[1]) == os.getpid():  # fields[1]: the parent's pid; [11], [12]: utime, stime
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def loop_clock_hook(warmup: int):
    """A hook recording, at the start of each iteration from ``warmup`` on, the wall-clock time and the CPU
    time of this process and of its children."""
    from detectron2.engine import HookBase

    class LoopClock(HookBase):
        def __init__(self):
            self.marks = []

        def before_step(self):
            if self.trainer.iter >= warmup:
                self.marks.append((time.perf_counter(), time.process_time(), children_cpu_seconds()))

    return LoopClock()


def build_trainer(args, upstream: bool):
    cfg = build_cfg(args, upstream)  # imports upstream's package with its stubs (sys.path: the checkout)
    cfg.SEED = args.seed
    cfg.OUTPUT_DIR = os.path.join(args.data, f"output_{args.worker}")
    if upstream:
        from train_net import Trainer
    else:
        from mask_former.engine import Trainer
    from detectron2.utils.env import seed_all_rng

    seed_all_rng(args.seed)  # as detectron2's default_setup in train_net.py
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.model.load_state_dict(torch.load(args.weights))
    return cfg, trainer


def build_mapper(cfg, upstream: bool):
    if upstream:
        from mask2former import MaskFormerSemanticDatasetMapper

        return MaskFormerSemanticDatasetMapper(cfg, True)
    from mask_former.data.dataset_mappers import build_dataset_mapper

    return build_dataset_mapper(cfg, is_train=True)


def worker(args) -> Dict:
    upstream = args.worker == "upstream"
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    with open(os.path.join(args.data, "records.json")) as file:
        records = json.load(file)
    register_dataset(records)
    cfg, trainer = build_trainer(args, upstream)
    clock = loop_clock_hook(args.warmup)
    trainer.register_hooks([clock])
    trainer.train()
    walls, cpus, children = (np.array(column) for column in zip(*clock.marks))
    timed = range(args.warmup, args.warmup + len(walls) - 1)
    data_times = [value for value, iteration in trainer.storage.history("data_time").values() if iteration in timed]
    torch.set_num_threads(1)
    mapper = build_mapper(cfg, upstream)
    passes = records[:16]
    mapper_s = median_seconds(lambda: map_all(mapper, passes), args.mapper_passes)
    return {
        "s_iter": float(np.median(np.diff(walls))),
        "mean_s_iter": float((walls[-1] - walls[0]) / (len(walls) - 1)),
        "data_ms": 1000 * statistics.median(data_times),
        "main_cpu_s_iter": float((cpus[-1] - cpus[0]) / (len(cpus) - 1)),
        "loader_cpu_s_iter": float((children[-1] - children[0]) / (len(children) - 1)),
        "mapper_ms": 1000 * mapper_s / len(passes),
        "threads": threads,
    }


def run_worker(args, name: str, data: str, weights: str) -> Dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--data", data, "--weights", weights,
               "--iters", str(args.iters), "--warmup", str(args.warmup), "--seed", str(args.seed),
               "--mapper-passes", str(args.mapper_passes), "--config-file", args.config_file]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if name == "upstream":
        command += ["--upstream", args.upstream]
    command += worker_opts(args)
    print(f"[bench_train_loop_cpu] {name}", file=sys.stderr, flush=True)
    completed = subprocess.run(command, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True,
                               cwd=REPO)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        sys.exit(f"{name} failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def worker_opts(args) -> List[str]:
    return SMALL_CONFIG + ["SOLVER.MAX_ITER", str(args.warmup + args.iters + 1)] + list(args.opts)


# ---------------------------------------------------------------------------------------------
# Report.

COLUMNS = [
    ("s_iter", "s/iter (median)", "{:.3f}"),
    ("mean_s_iter", "s/iter (mean)", "{:.3f}"),
    ("data_ms", "data wait ms (median)", "{:.1f}"),
    ("main_cpu_s_iter", "main process CPU s/iter", "{:.3f}"),
    ("loader_cpu_s_iter", "loader worker CPU s/iter", "{:.3f}"),
    ("mapper_ms", "mapper ms/record (1 thread)", "{:.1f}"),
]


def print_report(args, rounds: List[Dict[str, Dict]]) -> None:
    names = list(rounds[0])
    threads = rounds[0][names[0]]["threads"]
    print(f"\n{args.images} images {args.size[0]}x{args.size[1]}, {args.iters} timed iterations after {args.warmup}, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{threads} torch thread(s) in the main process\n")
    if "upstream" in names:
        print("| round | order | ours s/iter | upstream s/iter | speed-up (upstream / ours) |")
        print("|---|---|---|---|---|")
        for number, result in enumerate(rounds, 1):
            ours, theirs = result["ours"]["s_iter"], result["upstream"]["s_iter"]
            print(f"| {number} | {' then '.join(result)} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f}x |")
        print()
    print("| path (median over rounds) | " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for name in names:
        cells = [form.format(statistics.median(r[name][key] for r in rounds)) for key, _, form in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if "upstream" in names:
        ratios = [r["upstream"]["s_iter"] / r["ours"]["s_iter"] for r in rounds]
        print(f"\nwhole-loop speed-up over upstream: median {statistics.median(ratios):.2f}x, {len(rounds)} round(s)")


def main(argv=None) -> Optional[Dict]:
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return None
    names = PATHS if args.upstream else PATHS[:1]
    with tempfile.TemporaryDirectory(prefix="bench_train_loop_") as data:
        print(f"[bench_train_loop_cpu] writing {args.images} images to {data}", file=sys.stderr, flush=True)
        with open(os.path.join(data, "records.json"), "w") as file:
            json.dump(write_dataset(data, args.images, tuple(args.size)), file)
        weights = os.path.join(data, "weights.pth")
        ours = argparse.Namespace(config_file=args.config_file, opts=worker_opts(args), upstream=None, weights=None)
        torch.save(build_model(ours).state_dict(), weights)
        rounds = []
        for number in range(args.rounds):
            order = names if number % 2 == 0 else names[::-1]
            print(f"[bench_train_loop_cpu] round {number + 1}/{args.rounds}", file=sys.stderr, flush=True)
            rounds.append({name: run_worker(args, name, data, weights) for name in order})
    print_report(args, rounds)
    return None


if __name__ == "__main__":
    main()
