"""CPU inference time of a MaskFormer config at a fixed input size, with all its post-processing.

    .venv/bin/python benchmarks/bench_inference_cpu.py \
        --config-file configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml --size 512

Builds the model with random weights (no checkpoint is needed for timing), runs warm-up passes,
then reports the median of ``--runs`` timed passes on one ``size x size`` image with the
config's semantic / panoptic / instance inference (all three switched on by default, as the
COCO panoptic config does). ``--deform-attn`` picks the deformable-attention implementation
(``MASK_FORMER_DEFORM_ATTN``; ``pytorch`` is the upstream computation). Prints one markdown table row
with the implementation used and the machine. ``bench_train_cpu.py`` runs both side by side.
"""
import argparse
import os
import platform
import statistics
import sys
import time

import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.projects.deeplab import add_deeplab_config

import mask_former


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
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parser.parse_args(argv)


def build(args):
    if not os.path.isfile(args.config_file):
        sys.exit(f"config file not found: {args.config_file}")
    cfg = get_cfg()
    add_deeplab_config(cfg)
    mask_former.add_maskformer2_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + args.opts)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def time_inference(model, size, runs, warmup):
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inputs = [{"image": image, "height": size, "width": size}]
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
    model = build(args)
    times = time_inference(model, args.size, args.runs, args.warmup)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    deform_attn = mask_former.ops.choose_implementation(torch.zeros(1))[0]
    print("| config | input | median s | min s | runs | deform attn | torch | machine |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.config_file} | {args.size}x{args.size} | {statistics.median(times):.3f} | {min(times):.3f} | "
        f"{args.runs} | {deform_attn} | {torch.__version__} | {machine} |"
    )


if __name__ == "__main__":
    main()
