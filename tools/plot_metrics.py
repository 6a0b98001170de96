#!/usr/bin/env python
"""
Draw the losses, learning rate and evaluation metrics of a training run over iterations, from its
``OUTPUT_DIR/metrics.json``, into a PNG (``OUTPUT_DIR/metrics.png`` by default)::

    python tools/plot_metrics.py output/quickstart [--output metrics.png] [--metrics panoptic_seg/PQ ...]

For live curves, every run also writes TensorBoard events: ``tensorboard --logdir OUTPUT_DIR``.
"""
import argparse
import sys

from mask_former.engine.metrics_plot import HEADLINE_METRICS, plot_metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the OUTPUT_DIR of a training run")
    parser.add_argument("--output", metavar="PNG", help="the picture to write (default OUTPUT_DIR/metrics.png)")
    parser.add_argument(
        "--metrics", nargs="+", default=(), metavar="KEY",
        help=f"evaluation metrics to draw (default: every <task>/<metric> with metric in {list(HEADLINE_METRICS)})",
    )
    args = parser.parse_args(argv)
    try:
        png = plot_metrics(args.output_dir, args.output, args.metrics)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
