"""CPU inference time of a MaskFormer config at a fixed input size, with all its post-processing, and the
fraction of this machine's GEMM throughput it reaches.

    .venv/bin/python benchmarks/bench_inference_cpu.py \
        --config-file configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml --size 512 \
        [--dtype float32 bfloat16]

Builds the model with random weights (no checkpoint is needed for timing), runs warm-up passes,
then reports the median of ``--runs`` timed passes on one ``size x size`` image with the
config's semantic / panoptic / instance inference (all three switched on by default, as the
COCO panoptic config does), once per ``--dtype``: the network runs under autocast in that dtype
(``MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE``), the post-processing in float32. ``--deform-attn`` picks the
deformable-attention implementation (``MASK_FORMER_DEFORM_ATTN``; ``pytorch`` is the upstream computation).

The roofline columns: the network's FLOPs as fvcore counts them (``mask_former.analysis.network_flops``, two
per multiply-add; the deformable sampling, elementwise operators and post-processing are not counted, so the
figure is a lower bound of the work done), divided by the median time, as a fraction of this machine's
``size``-2048 GEMM throughput in the same dtype with the same threads (``roofline.py``), measured in the same
run. Prints one markdown table row per dtype, with the implementation used and the machine.
``bench_train_cpu.py`` runs the deformable-attention paths side by side.
"""
import argparse
import os
import statistics
import sys
import time

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.projects.deeplab import add_deeplab_config

import mask_former
from mask_former.analysis import network_flops
from roofline import DTYPES, gemm_gflops, machine

# --dtype -> MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE.
AUTOCAST_DTYPE = {"float32": "", "bfloat16": "bfloat16", "float16": "float16"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--deform-attn", choices=["auto", "pytorch", "cpu"], default=None,
        help="sets MASK_FORMER_DEFORM_ATTN (default: the environment's, else auto)",
    )
    parser.add_argument(
        "--dtype", nargs="+", choices=list(AUTOCAST_DTYPE), default=["float32", "bfloat16"],
        help="run the network under autocast in each of these dtypes, one row each",
    )
    parser.add_argument("--gemm-size", type=int, default=2048, help="matrix side of the roofline GEMM")
    parser.add_argument("--gemm-runs", type=int, default=5, help="timed GEMMs per dtype (median)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parser.parse_args(argv)


def build(args, dtype: str = "float32"):
    if not os.path.isfile(args.config_file):
        sys.exit(f"config file not found: {args.config_file}")
    cfg = get_cfg()
    add_deeplab_config(cfg)
    mask_former.add_maskformer2_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE", AUTOCAST_DTYPE[dtype]]
        + args.opts
    )
    torch.manual_seed(0)
    return build_model(cfg).eval()


def benchmark_input(size):
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return {"image": image, "height": size, "width": size}


def time_inference(model, size, runs, warmup):
    inputs = [benchmark_input(size)]
    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(inputs)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def main(argv=None):
    args = parse_args(argv)
    if args.deform_attn:
        os.environ[mask_former.ops.IMPLEMENTATION_ENV] = args.deform_attn
    if args.threads:
        torch.set_num_threads(args.threads)
    deform_attn = mask_former.ops.choose_implementation(torch.zeros(1))[0]
    flops = None
    rows = []
    for dtype in args.dtype:
        model = build(args, dtype)
        if flops is None:
            flops = network_flops(model, benchmark_input(args.size))
        times = time_inference(model, args.size, args.runs, args.warmup)
        median = statistics.median(times)
        peak = gemm_gflops(DTYPES[dtype], args.gemm_size, args.gemm_runs)
        reached = flops / median / 1e9
        rows.append(
            f"| {args.config_file} | {args.size}x{args.size} | {dtype} | {median:.3f} | {min(times):.3f} | "
            f"{args.runs} | {deform_attn} | {flops / 1e9:.1f} | {reached:.1f} | {peak:.1f} | {reached / peak:.1%} | "
            f"{torch.__version__} | {machine()} |"
        )
    print(
        "| config | input | dtype | median s | min s | runs | deform attn | GFLOP | GFLOP/s | GEMM GFLOP/s "
        "| of GEMM | torch | machine |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
