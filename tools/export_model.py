#!/usr/bin/env python
"""
Export a MaskFormer / Mask2Former model, post-processing included, for deployment.

Usage::

    python tools/export_model.py --config-file CONFIG --format {onnx,torch-export} --output DIR \
        [--allow-random-weights] [--deform-attn {gather,grid-sample}] [--quantize int8] \
        MODEL.WEIGHTS model_final.pth [KEY VALUE ...]

writes ``DIR/model.onnx`` (or ``DIR/model.pt2``, a torch.export ExportedProgram) and
``DIR/meta.json``; run it with ``mask_former.export.load_exported(DIR)``. MODEL.WEIGHTS must
initialize every parameter, as at evaluation; ``--allow-random-weights`` exports an untrained model.
The deformable attention is exported with Gather and arithmetic (``--deform-attn gather``, default: no
GridSample, which TensorRT mis-builds) or as GridSample (``--deform-attn grid-sample``); both give the same
outputs. ``--quantize int8`` (ONNX only) stores the weights of the linear layers as int8 and quantizes their
inputs at run time (``mask_former/export/quantize.py``): faster in onnxruntime on CPUs with int8 dot products
(AVX-512 VNNI, AMX, Arm dot product), the outputs within the golden fixtures' agreement with upstream.
"""
import argparse
import logging
import sys

from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

import mask_former  # noqa: F401  (registers the model and datasets)
from mask_former.checkpoint import MaskFormerCheckpointer, add_random_weights_flag, random_weights_opts
from mask_former.config import build_config
from mask_former.export.exporter import export_model
from mask_former.export.quantize import QUANTIZATIONS
from mask_former.export.runtime import MODEL_FILES
from mask_former.ops import EXPORT_FORMS


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", required=True, choices=sorted(MODEL_FILES))
    parser.add_argument("--output", required=True, metavar="DIR")
    add_random_weights_flag(parser)
    parser.add_argument("--deform-attn", default="gather", choices=sorted(EXPORT_FORMS),
                        help="form of the deformable attention in the graph (default: gather, no GridSample)")
    parser.add_argument("--quantize", default=None, choices=sorted(QUANTIZATIONS),
                        help="ONNX only: int8 weights in the linear layers (default: float32 throughout)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs (MODEL.WEIGHTS ...)")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="mask_former")
    logger = logging.getLogger("mask_former")
    try:
        cfg = build_config(args.config_file, args.opts + random_weights_opts(args))
        cfg.defrost()
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg).eval()
        MaskFormerCheckpointer.from_config(cfg, model, for_inference=True).load(cfg.MODEL.WEIGHTS)
        path = export_model(model, cfg, args.format, args.output, deform_attn=args.deform_attn,
                            quantize=args.quantize)
    except ValueError as error:  # ConfigError, CheckpointError and the exporter's errors are ValueErrors
        print(f"error: {error}", file=sys.stderr)
        return 2
    logger.info("wrote %s and meta.json", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
