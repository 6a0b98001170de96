"""Where a CPU inference's time goes, stage by stage and operator by operator, with each stage's distance to this
machine's GEMM throughput:

    .venv/bin/python benchmarks/profile_inference_cpu.py --size 512x512 --runs 5 [--top 20] [opts]

Random weights of the config (default: the R50 COCO-panoptic one, all three inferences on). Times ``--runs``
inferences after one warm-up and prints, for the backbone, the pixel decoder, the transformer decoder and the
post-processing (``MaskFormer.inference``), the median milliseconds, the share of the whole, the stage's FLOPs as
fvcore counts them (two per multiply-add; not the deformable sampling, elementwise operators or post-processing)
and the GFLOP/s that makes, as a fraction of the GEMM throughput measured in the same run in the network's dtype
(float32, or ``MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE``'s; ``roofline.py``), and the fresh memory each stage
touches (the process's minor page faults during the stage, times the page size: memory the kernel maps and
clears on first write, the median over the runs). Then one more inference under
torch.profiler: the ``--top`` operators by self CPU time, with their input shapes. Sibling of
``profile_train_cpu.py``.
"""
import argparse
import resource
import statistics
import time
from typing import Dict, List, Tuple

import torch
from torch.profiler import ProfilerActivity, profile

from bench_large_images_cpu import parse_size
from bench_train_cpu import build_model
from mask_former.analysis import flop_count_analysis
from roofline import gemm_gflops, machine


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    parser.add_argument("--size", type=parse_size, default=(512, 512), metavar="HxW")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=20, help="operators listed by self CPU time")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    args = parser.parse_args(argv)
    args.weights, args.upstream = None, None  # as bench_train_cpu.build_model reads them
    return args


# Stage -> the fvcore module whose FLOPs it runs ("" is the whole network).
FLOP_MODULES = {
    "backbone": "backbone",
    "pixel decoder": "sem_seg_head.pixel_decoder",
    "transformer decoder": "sem_seg_head.predictor",
    "whole inference": "",
}


def stages(model) -> Dict[str, Tuple[object, str]]:
    """Stage name -> (object, name of the method that runs it)."""
    head = model.sem_seg_head
    return {
        "backbone": (model.backbone, "forward"),
        "pixel decoder": (head.pixel_decoder, "forward_features"),
        "transformer decoder": (head.predictor, "forward"),
        "post-processing": (model, "inference"),
    }


PAGE_MIB = resource.getpagesize() / 2**20


def measured(times: List[Tuple[float, float]], function):
    """``function``, appending ``(seconds, fresh MiB)`` of each call to ``times``."""

    def run(*args, **kwargs):
        faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        result = function(*args, **kwargs)
        seconds = time.perf_counter() - start
        times.append((seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) * PAGE_MIB))
        return result

    return run


def time_stages(model, inputs: List[Dict], runs: int) -> Dict[str, List[Tuple[float, float]]]:
    """``(seconds, fresh MiB)`` per run of each stage and of the whole inference, after one warm-up inference."""
    parts = stages(model)
    times = {name: [] for name in (*parts, "whole inference")}
    with torch.no_grad():
        model(inputs)
        for name, (owner, method) in parts.items():
            setattr(owner, method, measured(times[name], getattr(owner, method)))
        try:
            for _ in range(runs):
                measured(times["whole inference"], model)(inputs)
        finally:
            for owner, method in parts.values():
                del owner.__dict__[method]
    return times


def stage_table(model, inputs: List[Dict], times: Dict[str, List[Tuple[float, float]]], dtype: str,
                gemm: float) -> str:
    """One markdown row per stage: median ms, share of the whole, median fresh MiB, and where fvcore counts the
    stage's FLOPs, their rate and its fraction of ``gemm`` (GFLOP/s in the network's ``dtype``)."""
    by_module = flop_count_analysis(model, inputs[0]).by_module()
    whole = statistics.median(seconds for seconds, _ in times["whole inference"])
    rows = [
        f"| stage | median ms | share | fresh MiB | GFLOP | GFLOP/s | of {dtype} GEMM |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in times.items():
        median = statistics.median(seconds for seconds, _ in runs)
        fresh = statistics.median(mib for _, mib in runs)
        cells = "- | - | -"
        if name in FLOP_MODULES:
            gflop = 2 * by_module[FLOP_MODULES[name]] / 1e9
            cells = f"{gflop:.1f} | {gflop / median:.1f} | {gflop / median / gemm:.1%}"
        rows.append(f"| {name} | {1e3 * median:.1f} | {median / whole:.1%} | {fresh:.0f} | {cells} |")
    return "\n".join(rows)


def operator_table(model, inputs: List[Dict], top: int) -> str:
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model(inputs)
    return prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=40, max_shapes_column_width=70
    )


def main(argv=None):
    args = parse_args(argv)
    model = build_model(args).eval()
    image = torch.randint(0, 256, (3, *args.size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inputs = [{"image": image, "height": args.size[0], "width": args.size[1]}]
    dtype = model.inference_dtype or torch.float32  # the network's, under MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE
    dtype_name = str(dtype).removeprefix("torch.")
    gemm = gemm_gflops(dtype)
    times = time_stages(model, inputs, args.runs)
    print(f"## {args.config_file} at {args.size[0]}x{args.size[1]}, {args.runs} runs, {machine()}, "
          f"{dtype_name} GEMM {gemm:.1f} GFLOP/s\n")
    print(stage_table(model, inputs, times, dtype_name, gemm))
    print(f"\n## top {args.top} operators by self CPU time, one inference\n")
    print(operator_table(model, inputs, args.top))


if __name__ == "__main__":
    main()
