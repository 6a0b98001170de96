"""CPU inference time and peak memory at large input sizes, ours beside upstream Mask2Former, and how both grow
with the pixel count:

    .venv/bin/python benchmarks/bench_large_images_cpu.py \\
        --config-file configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml \\
        [--upstream /path/to/Mask2Former] [--runs 3] [--rounds 3] [--with-2048]

For each size (512x512, 1024x1024, 1024x2048; 2048x2048 with ``--with-2048``; or ``--sizes HxW ...``) and
each path (ours, and upstream's with ``--upstream``), one fresh subprocess builds the model on the same random
weights (built once here and saved to a temporary file), runs ``--warmup`` untimed and ``--runs`` timed
inferences of one image of that size with the config's semantic / panoptic / instance inference, and reports
the median seconds (wall clock, and the process's CPU time, all threads together: the steadier of the two on a
shared machine) and the process's peak RSS (the whole process: interpreter, weights and the inference; and
above its RSS once the model is built). Upstream is imported and built as ``bench_train_cpu.py`` does it (its
MSDeformAttn runs its PyTorch version; ours runs the default implementation).

With ``--rounds N`` each size runs N rounds of both paths, the order reversed every other round, so that a drift
in the machine hits both; the figures are medians over the rounds, the speed-ups the median of the rounds' own.

Prints a markdown table: per size and path the median seconds and peak RSS; per size ours over upstream (speed-up
by round and their median, memory ratio, and whether the outputs agree: see :func:`compare_outputs`); and per path
how time and memory grow from the first size (the pixel count's growth beside them). Peak RSS is reliable on a
shared machine, the times are not: time on a quiet one.
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
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds per size, each a fresh process per path, the order alternating")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--upstream", default=None, help="a Mask2Former checkout to run beside ours")
    parser.add_argument("--worker", type=parse_size, help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--outputs", help=argparse.SUPPRESS)
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
            output = model(inputs)[0]
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
            if i == args.warmup + args.runs - 1:
                summary = output_summary(output)
            del output  # before the next run: two runs' outputs at once would count in the peak
    peak = peak_rss_bytes()
    torch.save(summary, args.outputs)
    result = {"seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu_times),
              "peak_rss_mib": peak / MIB, "peak_above_built_mib": (peak - built) / MIB}
    print("RESULT " + json.dumps(result))


def output_summary(output) -> dict:
    """What :func:`compare_outputs` reads of one inference's outputs, small enough to save at any size: the
    semantic scores at every 8th pixel and their argmax everywhere, the panoptic category of every pixel, and
    the instances' classes, scores and mask areas."""
    summary = {}
    if "sem_seg" in output:
        summary["sem_seg_sample"] = output["sem_seg"][:, ::8, ::8].clone()
        summary["sem_seg_argmax"] = output["sem_seg"].argmax(0).to(torch.int16)
    if "panoptic_seg" in output:
        ids, segments = output["panoptic_seg"]
        category = torch.full((int(ids.max()) + 1,), -1, dtype=torch.int16)
        for segment in segments:
            category[segment["id"]] = segment["category_id"]
        summary["panoptic_category"] = category[ids.long()]
    if "instances" in output:
        instances = output["instances"]
        summary["instance_classes"] = instances.pred_classes
        summary["instance_scores"] = instances.scores
        summary["instance_areas"] = instances.pred_masks.flatten(1).sum(1)
    return summary


def compare_outputs(ours: dict, upstream: dict) -> str:
    """Where two :func:`output_summary` agree: sem_seg's largest difference (every 8th pixel) and argmax agreement,
    panoptic category agreement, and the instances' classes, largest score and mask-area differences."""
    parts = []
    if "sem_seg_sample" in ours:
        diff = (ours["sem_seg_sample"] - upstream["sem_seg_sample"]).abs().max().item()
        agree = (ours["sem_seg_argmax"] == upstream["sem_seg_argmax"]).float().mean().item()
        parts.append(f"sem_seg within {diff:.1e}, argmax {100 * agree:.3f}%")
    if "panoptic_category" in ours:
        agree = (ours["panoptic_category"] == upstream["panoptic_category"]).float().mean().item()
        parts.append(f"panoptic categories {100 * agree:.3f}%")
    if "instance_scores" in ours:
        same_classes = torch.equal(ours["instance_classes"], upstream["instance_classes"])
        score = (ours["instance_scores"] - upstream["instance_scores"]).abs().max().item()
        area = (ours["instance_areas"] - upstream["instance_areas"]).abs().max().item()
        parts.append(f"instances: classes {'equal' if same_classes else 'differ'}, scores within {score:.1e}, "
                     f"mask areas within {area:.0f} px")
    return "; ".join(parts)


def run_worker(args, size, upstream: bool, weights: str, outputs: str):
    command = [sys.executable, os.path.abspath(__file__), "--worker", "{}x{}".format(*size), "--weights", weights,
               "--outputs", outputs,
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


def median_result(rounds: list, path: str) -> dict:
    """The median over ``rounds`` (``[{path: worker result}]``) of each of ``path``'s figures."""
    figures = ("seconds", "cpu_seconds", "peak_rss_mib", "peak_above_built_mib")
    return {key: statistics.median(r[path][key] for r in rounds) for key in figures}


def speedups(rounds: list, key: str) -> list:
    """Upstream's ``key`` over ours, round by round."""
    return [r["upstream"][key] / r["ours"][key] for r in rounds]


def by_round(ratios: list) -> str:
    text = f"{statistics.median(ratios):.2f}x"
    return text if len(ratios) == 1 else f"{text} ({', '.join(f'{x:.2f}x' for x in ratios)})"


def print_tables(args, results):
    """``results[size]`` -> the rounds, ``[{path: the worker's result}]``."""
    paths = ["ours"] + (["upstream"] if args.upstream else [])
    threads = args.threads or torch.get_num_threads()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} threads"
    print(f"{args.config_file}, torch {torch.__version__}, {machine}, median of {args.runs} run(s) a round, "
          f"{args.rounds} round(s)")
    header = "| size | path | median s | median CPU s | peak RSS MiB | peak above built MiB |"
    if args.upstream:
        header += (" speed-up over upstream (by round) | CPU time speed-up | peak RSS / upstream's "
                   "| outputs against upstream's |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    medians = {(path, size): median_result(results[size], path) for size in args.sizes for path in paths}
    for size in args.sizes:
        for path in paths:
            r = medians[(path, size)]
            row = (f"| {size[0]}x{size[1]} | {path} | {r['seconds']:.3f} | {r['cpu_seconds']:.3f} "
                   f"| {r['peak_rss_mib']:.0f} | {r['peak_above_built_mib']:.0f} |")
            if args.upstream:
                memory = r["peak_rss_mib"] / medians[("upstream", size)]["peak_rss_mib"]
                row += (f" {by_round(speedups(results[size], 'seconds'))} "
                        f"| {by_round(speedups(results[size], 'cpu_seconds'))} "
                        f"| {memory:.2f}x | {results[size][-1]['ours']['agreement']} |"
                        if path == "ours" else " | | | |")
            print(row)
    first = args.sizes[0]
    print()
    print(f"Growth from {first[0]}x{first[1]}:")
    print("| size | pixels | " + " | ".join(f"{path} time | {path} peak RSS" for path in paths) + " |")
    print("|---|---|" + "---|---|" * len(paths))
    for size in args.sizes:
        cells = [f"{size[0] * size[1] / (first[0] * first[1]):.1f}x"]
        for path in paths:
            r, base = medians[(path, size)], medians[(path, first)]
            cells += [f"{r['seconds'] / base['seconds']:.2f}x", f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}x"]
        print(f"| {size[0]}x{size[1]} | " + " | ".join(cells) + " |")


def run_round(args, size, order: list, weights: str, folder: str) -> dict:
    """One round at ``size``: each path of ``order`` once, in that order, with ours' outputs compared to
    upstream's."""
    outputs = {path: os.path.join(folder, f"{path}.pth") for path in order}
    result = {path: run_worker(args, size, path == "upstream", weights, outputs[path]) for path in order}
    if args.upstream:
        result["ours"]["agreement"] = compare_outputs(*(torch.load(outputs[path]) for path in ("ours", "upstream")))
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if not os.path.isfile(args.config_file):
        sys.exit(f"config file not found: {args.config_file}")
    paths = ["ours"] + (["upstream"] if args.upstream else [])
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "weights.pth")
        torch.save(build_model(args).state_dict(), weights)
        for size in args.sizes:
            # Ours and upstream's alternate, size by size and round by round, so that a drift in the machine's load
            # hits both.
            results[size] = [
                run_round(args, size, paths if i % 2 == 0 else paths[::-1], weights, folder)
                for i in range(args.rounds)
            ]
    print_tables(args, results)


if __name__ == "__main__":
    main()
