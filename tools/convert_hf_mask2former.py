#!/usr/bin/env python
"""
Convert a Hugging Face ``Mask2FormerForUniversalSegmentation`` (Swin backbone) to our model, or back.

From Hugging Face (needs only ``safetensors``; a directory of ``save_pretrained`` or a hub snapshot)::

    python tools/convert_hf_mask2former.py HF_DIR OUT_DIR [--task semantic|instance|panoptic]
    # writes OUT_DIR/model.pth, OUT_DIR/config.yaml (MODEL.WEIGHTS names model.pth), OUT_DIR/classes.yaml
    python demo/demo.py --config-file OUT_DIR/config.yaml --input image.jpg --output out/

To Hugging Face (a directory that ``Mask2FormerForUniversalSegmentation.from_pretrained`` loads)::

    python tools/convert_hf_mask2former.py --to-hf --config-file CONFIG --weights model_final.pth OUT_DIR \\
        [--classes classes.yaml]
"""
import argparse
import sys

from mask_former.checkpoint.huggingface import TASK_TEST_KEYS, convert_from_hf, convert_to_hf
from mask_former.errors import CheckpointError, ConfigError


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Convert Hugging Face Mask2Former (Swin) checkpoints to ours, or ours to Hugging Face",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("paths", nargs="+", metavar="DIR", help="HF_DIR OUT_DIR, or with --to-hf: OUT_DIR")
    parser.add_argument("--to-hf", action="store_true", help="convert our --config-file / --weights to Hugging Face")
    parser.add_argument("--config-file", metavar="FILE", help="our config (--to-hf)")
    parser.add_argument("--weights", metavar="FILE", help="our checkpoint of that config (--to-hf)")
    parser.add_argument(
        "--classes", metavar="FILE", help="class names (a 'classes' list, e.g. classes.yaml) for --to-hf; "
        "default: the metadata of the config's datasets"
    )
    parser.add_argument(
        "--task", choices=sorted(TASK_TEST_KEYS), default="semantic",
        help="which inference outputs the converted config turns on (MODEL.MASK_FORMER.TEST), as upstream's configs",
    )
    args = parser.parse_args(argv)
    expected = 1 if args.to_hf else 2
    if len(args.paths) != expected:
        parser.error("--to-hf takes one directory, OUT_DIR" if args.to_hf else "give HF_DIR and OUT_DIR")
    if args.to_hf and not (args.config_file and args.weights):
        parser.error("--to-hf needs --config-file and --weights")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.to_hf:
            out_dir = convert_to_hf(args.config_file, args.weights, args.paths[0], classes_file=args.classes)
            print(f"Wrote the Hugging Face model to {out_dir}")
        else:
            paths = convert_from_hf(args.paths[0], args.paths[1], task=args.task)
            print("Wrote " + ", ".join(paths.values()))
    except (CheckpointError, ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
