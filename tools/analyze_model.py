#!/usr/bin/env python
"""
Parameters and FLOPs of the MaskFormer / Mask2Former model of a config, with fvcore.

The FLOPs are those of the network (backbone, pixel decoder, transformer decoder) on one image:
the first image of ``DATASETS.TEST[0]`` as the test loader resizes it, or a random image of a
given size with ``--dummy-size``. Post-processing (semantic / panoptic / instance inference) is
not counted.

Usage::

    python tools/analyze_model.py --config-file CONFIG [--tasks parameter flop] [--dummy-size 512 512] \
        [--opts KEY VALUE ...]
"""
import argparse
import sys
from typing import Dict, List

import torch
from detectron2.data import build_detection_test_loader
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from fvcore.nn import flop_count_table, parameter_count, parameter_count_table
from torch import nn

import mask_former  # noqa: F401  (registers the model and datasets)
from mask_former.analysis import flop_count_analysis
from mask_former.config import build_config
from mask_former.errors import ConfigError


def sample_input(cfg, dummy_size: List[int]) -> Dict:
    """One model input dict: a random uint8 image of ``dummy_size`` (H, W), or the first image of
    the test dataset."""
    if dummy_size:
        height, width = dummy_size
        return {"image": torch.randint(0, 256, (3, height, width), dtype=torch.uint8), "height": height, "width": width}
    if not len(cfg.DATASETS.TEST):
        raise ConfigError("DATASETS.TEST is empty: pass --dummy-size H W to analyze a random image")
    return next(iter(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])))[0]


def analyze_flops(model: nn.Module, batched_input: Dict, max_depth: int) -> str:
    flops = flop_count_analysis(model, batched_input)
    images = model.preprocess_images([batched_input]).tensor
    table = flop_count_table(flops, max_depth=max_depth)
    unsupported = ", ".join(f"{name} ({count}x)" for name, count in sorted(flops.unsupported_ops().items()))
    return (
        f"FLOPs of the network on one {tuple(images.shape[-2:])} input: {flops.total() / 1e9:.3f} G "
        f"(fvcore's count: one per multiply-add)\n{table}"
        + (f"\nOperators not counted: {unsupported}" if unsupported else "")
    )


def analyze_parameters(model: nn.Module, max_depth: int) -> str:
    return f"Parameters: {parameter_count(model)[''] / 1e6:.3f} M\n{parameter_count_table(model, max_depth=max_depth)}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Parameters and FLOPs of a MaskFormer / Mask2Former config")
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--tasks", nargs="+", choices=["parameter", "flop"], default=["parameter", "flop"])
    parser.add_argument("--dummy-size", nargs=2, type=int, metavar=("H", "W"), help="analyze a random H x W image")
    parser.add_argument("--max-depth", type=int, default=3, help="module depth shown in the tables")
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    args = parser.parse_args(argv)
    setup_logger()
    try:
        cfg = build_config(args.config_file, args.opts)
        model = build_model(cfg).eval()
        if "parameter" in args.tasks:
            print(analyze_parameters(model, args.max_depth))
        if "flop" in args.tasks:
            with torch.no_grad():
                print(analyze_flops(model, sample_input(cfg, args.dummy_size), args.max_depth))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
