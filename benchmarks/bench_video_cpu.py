"""CPU time and peak memory of video instance segmentation (Mask2Former-VIS) on videos of several lengths:

    .venv/bin/python benchmarks/bench_video_cpu.py [--upstream /path/to/Mask2Former] \\
        [--config-file configs/youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml] [--frames 12 36 72]

Paths, each in a fresh subprocess per video length (so that its peak RSS is its own), on the same random
weights (built once here and saved to a temporary file), on the same synthetic video (a noise image sliding
4 pixels a frame, ``--width`` x ``--height``, 640 x 360 by default):

- ``upstream``: upstream's ``mask2former_video`` (``--upstream PATH``, a Mask2Former checkout, imported with our
  detectron2 as ``bench_train_cpu.stub_upstream_imports`` does; its MSDeformAttn runs its PyTorch version);
- ``ours whole-video``: ``MODEL.MASK_FORMER.TEST.WINDOW_SIZE 0``, the whole video decoded at once (upstream's
  outputs), backbone and pixel decoder in chunks of ``FRAME_CHUNK_SIZE`` frames;
- ``ours windowed``: ``WINDOW_SIZE --window`` (12 by default), windows associated by their query embeddings.

Prints a markdown table: median seconds per video, peak RSS of the process and its peak above the RSS before
the first run (model built, frames made), and for ours whole-video the largest score difference from upstream's
(the same top-10 pairs are expected). Timings on a busy machine are noisy: run it on a quiet one.
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

import torch
from bench_train_cpu import peak_rss_bytes, rss_bytes, stub_upstream_imports

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCHMARKS)
DEFAULT_CONFIG = "configs/youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml"
# Name -> (config overrides, given the arguments; runs upstream's code).
PATHS = {
    "upstream": (lambda args: [], True),
    "ours whole-video": (lambda args: ["MODEL.MASK_FORMER.TEST.WINDOW_SIZE", "0"], False),
    "ours windowed": (lambda args: ["MODEL.MASK_FORMER.TEST.WINDOW_SIZE", str(args.window)], False),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--frames", type=int, nargs="+", default=[12, 36, 72], help="video lengths")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--window", type=int, default=12, help="WINDOW_SIZE of the windowed path")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--upstream", default=None, help="a Mask2Former checkout to time beside ours")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS), metavar="PATH",
                        help=f"paths to time, of {list(PATHS)} (upstream needs --upstream)")
    parser.add_argument("--worker", choices=list(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parser.parse_args(argv)


def build_cfg(args, name):
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    overrides, upstream = PATHS[name]
    if upstream:
        stub_upstream_imports()
        from mask2former import add_maskformer2_config
        from mask2former_video import add_maskformer2_video_config
    else:
        from mask_former import add_maskformer2_config, add_maskformer2_video_config
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    add_maskformer2_video_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + args.opts)
    cfg.merge_from_list(overrides(args))
    return cfg


def build_model(args, name):
    from detectron2.modeling import build_model as d2_build_model

    torch.manual_seed(0)
    model = d2_build_model(build_cfg(args, name))
    if args.weights:
        missing, unexpected = model.load_state_dict(torch.load(args.weights), strict=False)
        if missing or unexpected:
            sys.exit(f"{args.weights}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


def synthetic_video(frames: int, height: int, width: int):
    """uint8 ``[3, height, width]`` frames: a smoothed noise image sliding 4 pixels to the right each frame."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 3, height // 8 + 1, width // 8 + 1, generator=generator)
    image = torch.nn.functional.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)[0]
    image = (image * 255).to(torch.uint8)
    return [torch.roll(image, shifts=4 * t, dims=2).contiguous() for t in range(frames)]


def worker(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args, args.worker)
    frames = synthetic_video(args.frames[0], args.height, args.width)
    inputs = [{"image": frames, "height": args.height, "width": args.width}]
    before = rss_bytes()
    times = []
    with torch.no_grad():
        for i in range(args.warmup + args.runs):
            start = time.perf_counter()
            output = model(inputs)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    pairs = sorted(zip(output["pred_scores"], output["pred_labels"]), reverse=True)
    print("RESULT " + json.dumps({
        "seconds": statistics.median(times), "peak_rss_mb": peak_rss_bytes() / 2**20,
        "peak_above_start_mb": (peak_rss_bytes() - before) / 2**20, "pairs": pairs,
    }))


def run_worker(args, name, frames, weights):
    _, upstream = PATHS[name]
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--weights", weights,
               "--config-file", args.config_file, "--frames", str(frames), "--width", str(args.width),
               "--height", str(args.height), "--window", str(args.window), "--runs", str(args.runs),
               "--warmup", str(args.warmup)]
    command += ["--threads", str(args.threads)] if args.threads else []
    python_path = [args.upstream, REPO] if upstream else [REPO]
    print(f"[bench_video_cpu] {name}: {frames} frames", file=sys.stderr, flush=True)
    completed = subprocess.run(
        command + args.opts, env={**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}, capture_output=True,
        text=True, cwd=REPO,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        sys.exit(f"{name} on {frames} frames failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    found = [path for path in (args.config_file, os.path.join(REPO, args.config_file)) if os.path.isfile(path)]
    if not found:
        sys.exit(f"config file not found: {args.config_file} (pass --config-file, e.g. upstream's {DEFAULT_CONFIG})")
    args.config_file = os.path.abspath(found[0])
    names = [name for name in args.paths if args.upstream or not PATHS[name][1]]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "weights.pth")
        torch.save(build_model(args, "ours whole-video").state_dict(), weights)
        for frames in args.frames:
            for name in names:
                results[(name, frames)] = run_worker(args, name, frames, weights)
    print_table(args, names, results)


def print_table(args, names, results):
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    print(f"{args.config_file}, {args.width}x{args.height}, window {args.window}, torch {torch.__version__}, {machine}")
    print("| frames | path | s / video | peak RSS MiB | peak above start MiB | max score diff vs upstream |")
    print("|---|---|---|---|---|---|")
    for frames in args.frames:
        upstream = results.get(("upstream", frames))
        for name in names:
            row = results[(name, frames)]
            diff = "-"
            if upstream is not None and name == "ours whole-video":
                theirs, ours = upstream["pairs"], row["pairs"]
                same = [label for _, label in theirs] == [label for _, label in ours]
                diff = f"{max(abs(a[0] - b[0]) for a, b in zip(theirs, ours)):.1e}"
                diff += "" if same else " (classes differ)"
            print(f"| {frames} | {name} | {row['seconds']:.2f} | {row['peak_rss_mb']:.0f} | "
                  f"{row['peak_above_start_mb']:.0f} | {diff} |")


if __name__ == "__main__":
    main()
