"""CPU inference time: the ONNX export under onnxruntime vs the eager PyTorch model, same weights
and image, post-processing included, as users run them (``load_exported`` and its session settings,
the model's ``__call__``).

    .venv/bin/python benchmarks/bench_export_cpu.py \\
        --config-file configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml --size 512 \\
        [--rounds 7] [--threads N] [--deform-attn {gather,grid-sample}] [--quantize int8] [--profile]

Random weights (timing needs no checkpoint). Exports once into a temporary folder, then, after
``--warmup`` passes of each, runs ``--rounds`` rounds of one eager pass and one onnxruntime pass, the order
alternating from round to round, so that both see the same load on a shared machine. Prints each round's
wall-clock and CPU seconds and speed-up (eager time / onnxruntime time), their medians, how far the exported
``sem_seg`` is from eager's (largest difference, argmax agreement), and a markdown row. ``--quantize int8``
times the int8 variant of the export against eager float32.
CPU seconds (the process's, all threads) compare the two fairly on a loaded machine with ``--threads 1``;
with more threads they include threads waiting for work. ``--threads`` sets both libraries' threads (default:
each library's own default, what users get). ``--profile`` also prints onnxruntime's kernel time per
operator type (three runs after two warm-up runs of a fresh session, which it leaves out) and the torch
profiler's per operator of eager, as shares of each one's total (shares stay meaningful on a loaded machine).
"""
import argparse
import collections
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from detectron2.modeling import build_model

import mask_former  # noqa: F401  (registers the model)
from mask_former.config import build_config
from mask_former.export import load_exported
from mask_former.export.exporter import export_model
from mask_former.export.quantize import QUANTIZATIONS
from mask_former.export.runtime import MODEL_FILES
from mask_former.ops import EXPORT_FORMS


def timed(run: Callable[[], object]) -> Tuple[float, float]:
    """Wall-clock and CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def alternate(paths: Dict[str, Callable[[], object]], rounds: int, warmup: int) -> Dict[str, List[Tuple[float, float]]]:
    """``{name: [(wall s, CPU s) per round]}``; each round runs every path once, in turn, the order reversed
    every other round."""
    for run in paths.values():
        for _ in range(warmup):
            run()
    times: Dict[str, List[Tuple[float, float]]] = {name: [] for name in paths}
    names = list(paths)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(timed(paths[name]))
        print(f"[round {i + 1}/{rounds}] " + ", ".join(
            f"{name} {times[name][-1][0]:.3f} s (CPU {times[name][-1][1]:.3f} s)" for name in names
        ), file=sys.stderr, flush=True)
    return times


def print_shares(title: str, by_op: Dict[str, float], top: int = 12) -> None:
    total = sum(by_op.values())
    print(f"{title} ({total:.0f} ms per run in all):")
    for op, ms in sorted(by_op.items(), key=lambda item: -item[1])[:top]:
        print(f"  {op}: {ms:.1f} ms, {100 * ms / total:.1f}%")


def onnxruntime_profile(path: str, image: np.ndarray, runs: int, threads, warmup: int = 2) -> Dict[str, float]:
    """The graph's kernel time per operator type, ms per run, averaged over ``runs`` runs after ``warmup`` ones,
    from onnxruntime's profiler (a JSON trace it writes and this reads). The trace holds every run; the warm-up
    runs are left out by time: a session's first two runs are not typical (the first encoder layer's Gather
    takes several times as long in them as from the third run on)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(os.path.dirname(path), "ort_profile")
    if threads is not None:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for _ in range(warmup + runs):
        session.run(None, {"image": image})
    with open(session.end_profiling()) as trace:
        events = json.load(trace)
    run_starts = sorted(event["ts"] for event in events if event.get("name") == "model_run")
    measured_from = run_starts[warmup]
    by_op: Dict[str, float] = collections.defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= measured_from:
            by_op[event["args"]["op_name"]] += event["dur"] / 1000 / runs
    return by_op


def eager_profile(run: Callable[[], object], runs: int) -> Dict[str, float]:
    """Self CPU time per torch operator, ms per run, over ``runs`` runs (after the benchmark's warm-ups)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            run()
    return {event.key: event.self_cpu_time_total / 1000 / runs for event in prof.key_averages()}


def print_agreement(eager_result: Dict, exported_result: Dict) -> None:
    """How far the exported model's semantic output is from eager's: the largest difference, and the share of
    pixels whose argmax class agrees (the measure of the reduced-precision variants)."""
    if "sem_seg" not in eager_result:
        return
    ours, theirs = exported_result["sem_seg"], eager_result["sem_seg"].numpy()
    print(f"sem_seg against eager: largest difference {np.abs(ours - theirs).max():.3g}, "
          f"argmax agreement {100 * (ours.argmax(0) == theirs.argmax(0)).mean():.2f}% of the pixels")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of both torch and onnxruntime (default: each library's default)")
    parser.add_argument("--profile", action="store_true",
                        help="also print both paths' time per operator type, as shares of their total")
    parser.add_argument("--deform-attn", default="gather", choices=sorted(EXPORT_FORMS),
                        help="form of the deformable attention in the exported graph (tools/export_model.py)")
    parser.add_argument("--quantize", default=None, choices=sorted(QUANTIZATIONS),
                        help="export int8 weight products (tools/export_model.py); eager stays float32")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = build_config(args.config_file, ["MODEL.DEVICE", "cpu", *args.opts])
    model = build_model(cfg).eval()
    image = np.random.RandomState(0).randint(0, 256, (args.size, args.size, 3)).astype(np.uint8)
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()

    def eager():
        with torch.no_grad():
            return model([{"image": tensor}])[0]

    with tempfile.TemporaryDirectory() as directory:
        print("[export] exporting to ONNX ...", file=sys.stderr, flush=True)
        export_model(model, cfg, "onnx", directory, deform_attn=args.deform_attn, quantize=args.quantize)
        predictor = load_exported(directory, threads=args.threads)
        times = alternate({"eager": eager, "onnxruntime": lambda: predictor(image)}, args.rounds, args.warmup)
        print_agreement(eager(), predictor(image))
        if args.profile:
            path = os.path.join(directory, MODEL_FILES["onnx"])
            print_shares("onnxruntime, kernel time per operator type",
                         onnxruntime_profile(path, image, 3, args.threads))
            with torch.no_grad():
                print_shares("eager, self CPU time per torch operator", eager_profile(eager, 2))
    wall = {name: statistics.median(t[0] for t in runs) for name, runs in times.items()}
    cpu = {name: statistics.median(t[1] for t in runs) for name, runs in times.items()}
    speedups = [e[0] / o[0] for e, o in zip(times["eager"], times["onnxruntime"])]
    cpu_speedups = [e[1] / o[1] for e, o in zip(times["eager"], times["onnxruntime"])]
    print("speed-up (eager / onnxruntime) by round: " + ", ".join(f"{s:.2f}x" for s in speedups)
          + "; CPU time: " + ", ".join(f"{s:.2f}x" for s in cpu_speedups))
    threads = args.threads or f"default (torch {torch.get_num_threads()})"
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, threads {threads}, "
               f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    graph = args.deform_attn + (f", {args.quantize}" if args.quantize else "")
    print("| config | size | exported graph | eager s | onnxruntime s | speed-up (median of rounds) "
          "| CPU s eager / onnxruntime | CPU speed-up | machine |")
    print("|---|---|---|---|---|---|---|---|---|")
    config = os.path.basename(args.config_file)
    print(f"| {config} | {args.size} | {graph} | {wall['eager']:.3f} | {wall['onnxruntime']:.3f} "
          f"| {statistics.median(speedups):.2f}x | {cpu['eager']:.3f} / {cpu['onnxruntime']:.3f} "
          f"| {statistics.median(cpu_speedups):.2f}x | {machine} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
