"""CPU inference and training-step time and peak memory of a config, on the PyTorch reference of deformable
attention (``MASK_FORMER_DEFORM_ATTN=pytorch``: the upstream computation) and on the fused CPU operator
(``cpu``), side by side in one run:

    .venv/bin/python benchmarks/bench_train_cpu.py \\
        --config-file configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml \\
        [--upstream /path/to/Mask2Former]

Each measurement runs in a fresh subprocess (so that its peak RSS is its own), on the same random weights
(built once here and saved to a temporary file):

- inference: median seconds per ``--size`` image with the config's semantic / panoptic / instance inference;
- training: median seconds of a step (forward, losses, backward, AdamW step) on ``--batch`` images of
  ``--train-size`` pixels with ``--instances`` random instances each, and the peak RSS of the process during
  the steps above its RSS before them.

``--paths`` picks the paths; ``"fused CPU op, bfloat16"`` (not in the default set) is the fused op's inference
with the network in bfloat16 (``MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE``), against upstream's float32:

    .venv/bin/python benchmarks/bench_train_cpu.py --upstream /path/to/Mask2Former --skip-training --rounds 3 \
        --paths "fused CPU op" "fused CPU op, bfloat16" "upstream Mask2Former"

``--upstream PATH`` also times upstream Mask2Former's model (``PATH`` is a checkout; it imports with our
detectron2, see :func:`stub_upstream_imports`, and its MSDeformAttn runs its PyTorch version) on the same
weights.
Prints a markdown table (medians of the workers' runs, and their fastest run) and, with --upstream, each round's
speed-up over
upstream. Timings on a busy machine are noisy: run it on a quiet one, with --rounds 3 or more.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, NamedTuple, Tuple

import torch

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCHMARKS)


class Path(NamedTuple):
    env: Dict[str, str]  # the worker's environment
    upstream: bool = False  # runs upstream's code
    opts: Tuple[str, ...] = ()  # config overrides of this path
    inference_only: bool = False  # its opts change inference alone: its training is another path's


PATHS = {
    "reference (pytorch)": Path({"MASK_FORMER_DEFORM_ATTN": "pytorch"}),
    "fused CPU op": Path({"MASK_FORMER_DEFORM_ATTN": "cpu"}),
    "fused CPU op, bfloat16": Path(
        {"MASK_FORMER_DEFORM_ATTN": "cpu"}, opts=("MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE", "bfloat16"),
        inference_only=True,
    ),
    "upstream Mask2Former": Path({}, upstream=True),
}
DEFAULT_PATHS = ["reference (pytorch)", "fused CPU op", "upstream Mask2Former"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    parser.add_argument("--size", type=int, default=512, help="inference input size")
    parser.add_argument("--train-size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--instances", type=int, default=6, help="random instances per training image")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--upstream", default=None, help="a Mask2Former checkout to time beside ours")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every path's workers this many times, alternating, and report the median round "
                             "(with the speed-up over upstream of each round): timings on a shared VM drift")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=DEFAULT_PATHS, metavar="PATH",
                        help=f"paths to time, of {list(PATHS)} (upstream needs --upstream)")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--worker", choices=["inference", "training"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parser.parse_args(argv)


def build_cfg(args, upstream):
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    if upstream:
        sys.path.insert(0, args.upstream)
        stub_upstream_imports()
        from mask2former import add_maskformer2_config
    else:
        from mask_former import add_maskformer2_config
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + args.opts)
    return cfg


def stub_upstream_imports():
    """Stubs for what upstream imports but a ResNet config on the CPU never uses, where it is missing: timm
    (its Swin backbone) and its compiled op ``MultiScaleDeformableAttention`` (its MSDeformAttn catches the
    stub's error and runs its PyTorch version). Each stub raises when used."""
    import importlib.util
    import types

    def missing(*args, **kwargs):
        raise ImportError("not installed: stubbed by bench_train_cpu.py")

    stubs = {}
    if importlib.util.find_spec("timm") is None:
        layers = types.ModuleType("timm.models.layers")
        layers.DropPath = layers.to_2tuple = layers.trunc_normal_ = missing
        stubs.update({"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models")})
        stubs["timm.models.layers"] = layers
    if importlib.util.find_spec("MultiScaleDeformableAttention") is None:
        op = types.ModuleType("MultiScaleDeformableAttention")
        op.ms_deform_attn_forward = op.ms_deform_attn_backward = missing
        stubs["MultiScaleDeformableAttention"] = op
    sys.modules.update(stubs)


def build_model(args, upstream=False):
    from detectron2.modeling import build_model as d2_build_model

    torch.manual_seed(0)
    model = d2_build_model(build_cfg(args, upstream))
    if args.weights:
        missing, unexpected = model.load_state_dict(torch.load(args.weights), strict=False)
        if missing or unexpected:
            sys.exit(f"{args.weights}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def training_batch(args):
    from detectron2.structures import Instances

    generator = torch.Generator().manual_seed(0)
    size = args.train_size
    batch = []
    for _ in range(args.batch):
        image = torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)
        corners = torch.randint(0, size, (args.instances, 2, 2), generator=generator).sort(dim=1).values
        masks = torch.zeros(args.instances, size, size, dtype=torch.bool)
        for mask, ((y0, x0), (y1, x1)) in zip(masks, corners.tolist()):
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        instances = Instances((size, size))
        instances.gt_masks = masks
        instances.gt_classes = torch.randint(0, 80, (args.instances,), generator=generator)
        batch.append({"image": image, "instances": instances})
    return batch


def time_inference(args, upstream):
    model = build_model(args, upstream).eval()
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, args.size, args.size), dtype=torch.uint8, generator=generator)
    inputs = [{"image": image, "height": args.size, "width": args.size}]
    times = []
    with torch.no_grad():
        for i in range(args.warmup + args.runs):
            start = time.perf_counter()
            model(inputs)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    return {"inference_s": statistics.median(times), "inference_min_s": min(times)}


def time_training(args, upstream):
    model = build_model(args, upstream).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = training_batch(args)
    before = rss_bytes()
    times, losses = [], None
    for i in range(args.warmup + args.runs):
        start = time.perf_counter()
        loss_dict = model(batch)
        total = sum(loss_dict.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if i == 0:
            losses = float(total)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return {"train_s": statistics.median(times), "train_min_s": min(times),
            "train_peak_rss_mb": (peak_rss_bytes() - before) / 2**20,
            "first_loss": losses}


def worker(args):
    upstream = args.upstream is not None
    if args.threads:
        torch.set_num_threads(args.threads)
    result = time_inference(args, upstream) if args.worker == "inference" else time_training(args, upstream)
    print("RESULT " + json.dumps(result))


def run_worker(args, kind, name, weights):
    path = PATHS[name]
    command = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--weights", weights]
    if path.upstream:
        command += ["--upstream", args.upstream]
    command += worker_argv(args) + list(path.opts)
    print(f"[bench_train_cpu] {name}: {kind}", file=sys.stderr, flush=True)
    completed = subprocess.run(
        command, env={**os.environ, **path.env, "PYTHONPATH": REPO}, capture_output=True, text=True, cwd=REPO
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        sys.exit(f"{name} {kind} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def worker_argv(args) -> List[str]:
    """The options a worker measures with, from the parsed ``args`` (a worker gets --upstream only where it runs
    upstream's code, and its path's config overrides after the user's)."""
    argv = [f"--config-file={args.config_file}", f"--size={args.size}", f"--train-size={args.train_size}",
            f"--batch={args.batch}", f"--instances={args.instances}", f"--runs={args.runs}",
            f"--warmup={args.warmup}"]
    if args.threads:
        argv.append(f"--threads={args.threads}")
    return argv + list(args.opts)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if not os.path.isfile(args.config_file):
        sys.exit(f"config file not found: {args.config_file}")
    names = [name for name in args.paths if args.upstream or not PATHS[name].upstream]
    kinds = [kind for kind, skip in (("inference", args.skip_inference), ("training", args.skip_training)) if not skip]
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "weights.pth")
        torch.save(build_model(args).state_dict(), weights)
        rounds = []
        for number in range(args.rounds):
            print(f"[bench_train_cpu] round {number + 1}/{args.rounds}", file=sys.stderr, flush=True)
            results = {name: {} for name in names}
            for name in names:
                for kind in kinds:
                    if kind == "training" and PATHS[name].inference_only:
                        continue
                    results[name].update(run_worker(args, kind, name, weights))
            rounds.append(results)
    medians = {
        name: {key: statistics.median(r[name][key] for r in rounds) for key in rounds[0][name]} for name in names
    }
    print_table(args, medians)
    print_speedups(rounds)


def print_speedups(rounds):
    """Each round's upstream time over each path's, for the time columns."""
    upstream = [name for name, path in PATHS.items() if path.upstream and name in rounds[0]]
    if not upstream:
        return
    for key in ("inference_s", "inference_min_s", "train_s", "train_min_s"):
        for name in rounds[0]:
            if name in upstream or key not in rounds[0][name]:
                continue
            ratios = [r[upstream[0]][key] / r[name][key] for r in rounds]
            listed = ", ".join(f"{ratio:.2f}x" for ratio in ratios)
            median = statistics.median(ratios)
            print(f"{key} speed-up of {name} over upstream, by round: {listed} (median {median:.2f}x)")


def print_table(args, results):
    columns = [
        ("inference_s", f"inference s/image {args.size}x{args.size}", "{:.3f}"),
        ("inference_min_s", "fastest inference s", "{:.3f}"),
        ("train_s", f"train step s ({args.batch}x{args.train_size}x{args.train_size})", "{:.3f}"),
        ("train_min_s", "fastest train step s", "{:.3f}"),
        ("train_peak_rss_mb", "train peak RSS MiB (above start)", "{:.0f}"),
        ("first_loss", "first-step loss", "{:.6f}"),
    ]
    columns = [column for column in columns if any(column[0] in row for row in results.values())]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    print(f"{args.config_file}, torch {torch.__version__}, {machine}")
    print("| path | " + " | ".join(title for _, title, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in results.items():
        cells = [form.format(row[key]) if key in row else "-" for key, _, form in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
