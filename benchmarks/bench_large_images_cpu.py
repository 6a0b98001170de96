"""CPU inference time and peak memory at large input sizes, ours beside upstream Mask2Former, and how both grow
with the pixel count:

    .venv/bin/python benchmarks/bench_large_images_cpu.py \\
        --config-file configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml \\
        [--upstream /path/to/Mask2Former] [--runs 3] [--with-2048]

For each size (512x512, 1024x1024, 1024x2048; 2048x2048 with ``--with-2048``; or ``--sizes HxW ...``) and
each path (ours, and upstream's with ``--upstream``), one fresh subprocess builds the model on the same random
weights (built once here and saved to a temporary file), runs ``--warmup`` untimed and ``--runs`` timed
inferences of one image of that size with the config's semantic / panoptic / instance inference, and reports
the median seconds (wall clock, and the process's CPU time, all threads together: the steadier of the two on a
shared machine) and the process's peak RSS (the whole process: interpreter, weights and the inference; and
above its RSS once the model is built). Upstream is imported and built as ``bench_train_cpu.py`` does it (its
MSDeformAttn runs its PyTorch version; ours runs the default implementation).

Prints a markdown table: per size and path the median seconds and peak RSS; per size ours over upstream (speed-up
and memory ratio); and per path how time and memory grow from the first size (the pixel count's growth beside
them). Peak RSS is reliable on a shared machine, the times are not: time on a quiet one.
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

from bench_train_cpu import build_model, peak_rss_bytes, rss_bytes

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCHMARKS)
DEFAULT_SIZES = ["512x512", "1024x1024", "1024x2048"]
MIB = 2**20


def parse_size(text: str):
    try:
        height, width = (int(side) for side in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is HEIGHTxWIDTH, e.g. 1024x2048: got {text!r}") from None
    return height, width


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES],
                        metavar="HxW", help=f"input sizes (default: {' '.join(DEFAULT_SIZES)})")
    parser.add_argument("--with-2048", action="store_true", help="add 2048x2048 to the sizes")
    parser.add_argument("--runs", type=int, default=3, help="timed inferences per size and path (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--upstream", default=None, help="a Mask2Former checkout to run beside ours")
    parser.add_argument("--worker", type=parse_size, help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    args = parser.parse_args(argv)
    if args.with_2048 and (2048, 2048) not in args.sizes:
        args.sizes.append((2048, 2048))
    return args


def worker(args):
    """Time the inference of one ``args.worker`` image; print its result as one ``RESULT {json}`` line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = args.worker
    model = build_model(args, upstream=args.upstream is not None).eval()
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inputs = [{"image": image, "height": height, "width": width}]
    built = rss_bytes()
    times, cpu_times = [], []
    with torch.no_grad():
        for i in range(args.warmup + args.runs):
            start, cpu_start = time.perf_counter(), time.process_time()
            model(inputs)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
    peak = peak_rss_bytes()
    result = {"seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu_times),
              "peak_rss_mib": peak / MIB, "peak_above_built_mib": (peak - built) / MIB}
    print("RESULT " + json.dumps(result))


def run_worker(args, size, upstream: bool, weights: str):
    command = [sys.executable, os.path.abspath(__file__), "--worker", "{}x{}".format(*size), "--weights", weights,
               "--config-file", args.config_file, "--runs", str(args.runs), "--warmup", str(args.warmup)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if upstream:
        command += ["--upstream", args.upstream]
    command += args.opts
    name = "upstream" if upstream else "ours"
    print(f"[bench_large_images_cpu] {name} {size[0]}x{size[1]}", file=sys.stderr, flush=True)
    completed = subprocess.run(
        command, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True, cwd=REPO
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        sys.exit(f"{size} ({name}) failed (exit {completed.returncode}):\n"
                 f"{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def print_tables(args, results):
    """``results[(path, size)]`` -> the worker's result."""
    paths = ["ours"] + (["upstream"] if args.upstream else [])
    threads = args.threads or torch.get_num_threads()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} threads"
    print(f"{args.config_file}, torch {torch.__version__}, {machine}, median of {args.runs} run(s)")
    header = "| size | path | median s | median CPU s | peak RSS MiB | peak above built MiB |"
    if args.upstream:
        header += " speed-up over upstream | CPU time speed-up | peak RSS / upstream's |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for size in args.sizes:
        for path in paths:
            r = results[(path, size)]
            row = (f"| {size[0]}x{size[1]} | {path} | {r['seconds']:.3f} | {r['cpu_seconds']:.3f} "
                   f"| {r['peak_rss_mib']:.0f} | {r['peak_above_built_mib']:.0f} |")
            if args.upstream:
                up = results[("upstream", size)]
                row += (f" {up['seconds'] / r['seconds']:.2f}x | {up['cpu_seconds'] / r['cpu_seconds']:.2f}x "
                        f"| {r['peak_rss_mib'] / up['peak_rss_mib']:.2f}x |" if path == "ours" else " | | |")
            print(row)
    first = args.sizes[0]
    print()
    print(f"Growth from {first[0]}x{first[1]}:")
    print("| size | pixels | " + " | ".join(f"{path} time | {path} peak RSS" for path in paths) + " |")
    print("|---|---|" + "---|---|" * len(paths))
    for size in args.sizes:
        cells = [f"{size[0] * size[1] / (first[0] * first[1]):.1f}x"]
        for path in paths:
            r, base = results[(path, size)], results[(path, first)]
            cells += [f"{r['seconds'] / base['seconds']:.2f}x", f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x"]
        print(f"| {size[0]}x{size[1]} | " + " | ".join(cells) + " |")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if not os.path.isfile(args.config_file):
        sys.exit(f"config file not found: {args.config_file}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "weights.pth")
        torch.save(build_model(args).state_dict(), weights)
        for size in args.sizes:
            # Ours and upstream's alternate, size by size, so that a drift in the machine's load hits both.
            results[("ours", size)] = run_worker(args, size, False, weights)
            if args.upstream:
                results[("upstream", size)] = run_worker(args, size, True, weights)
    print_tables(args, results)


if __name__ == "__main__":
    main()
