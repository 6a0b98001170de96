"""CPU inference time: the ONNX export under onnxruntime vs the eager PyTorch model, same weights
and image, post-processing included.

    .venv/bin/python benchmarks/bench_export_cpu.py \
        --config-file configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml --size 512 \
        [--deform-attn {gather,grid-sample}]

Random weights (timing needs no checkpoint). Exports once into a temporary folder (minutes), then
prints the median of ``--runs`` timed passes of each path after ``--warmup`` passes, as a markdown
row with the machine.
"""
import argparse
import collections
import json
import os
import platform
import sys
import tempfile
from typing import Dict

import numpy as np
import torch
from detectron2.modeling import build_model

import mask_former  # noqa: F401  (registers the model)
from mask_former.config import build_config
from mask_former.export import load_exported
from mask_former.export.exporter import export_model
from mask_former.export.runtime import MODEL_FILES
from mask_former.ops import EXPORT_FORMS
from timing import median_seconds


def print_onnxruntime_profile(path: str, image: np.ndarray, runs: int, top: int = 12) -> None:
    """The graph's kernel time per operator type, averaged over ``runs`` runs after one warm-up, from
    onnxruntime's profiler (a JSON trace it writes and this reads)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(os.path.dirname(path), "ort_profile")
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    session.run(None, {"image": image})
    for _ in range(runs):
        session.run(None, {"image": image})
    with open(session.end_profiling()) as trace:
        events = json.load(trace)
    by_op: Dict[str, float] = collections.defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"] / 1000
    profiled = runs + 1  # the warm-up run is in the trace too
    print(f"onnxruntime profile, ms per run (kernels {sum(by_op.values()) / profiled:.0f} ms in all):")
    for op, ms in sorted(by_op.items(), key=lambda item: -item[1])[:top]:
        print(f"  {op}: {ms / profiled:.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--profile", action="store_true",
                        help="also print onnxruntime's own profile: milliseconds per operator type, per run")
    parser.add_argument("--deform-attn", default="gather", choices=sorted(EXPORT_FORMS),
                        help="form of the deformable attention in the exported graph (tools/export_model.py)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    args = parser.parse_args(argv)
    cfg = build_config(args.config_file, ["MODEL.DEVICE", "cpu", *args.opts])
    model = build_model(cfg).eval()
    image = np.random.RandomState(0).randint(0, 256, (args.size, args.size, 3)).astype(np.uint8)
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()

    def eager():
        with torch.no_grad():
            model([{"image": tensor}])

    with tempfile.TemporaryDirectory() as directory:
        print("[export] exporting to ONNX ...", file=sys.stderr, flush=True)
        export_model(model, cfg, "onnx", directory, deform_attn=args.deform_attn)
        predictor = load_exported(directory)
        onnx_s = median_seconds(lambda: predictor(image), args.runs, args.warmup, "onnxruntime")
        if args.profile:
            print_onnxruntime_profile(os.path.join(directory, MODEL_FILES["onnx"]), image, args.runs)
    eager_s = median_seconds(eager, args.runs, args.warmup, "eager")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    print("| config | size | --deform-attn | eager s | onnxruntime s | speed-up | machine |")
    print("|---|---|---|---|---|---|---|")
    config = os.path.basename(args.config_file)
    print(f"| {config} | {args.size} | {args.deform_attn} | {eager_s:.3f} | {onnx_s:.3f} | {eager_s / onnx_s:.2f}x "
          f"| {machine} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
