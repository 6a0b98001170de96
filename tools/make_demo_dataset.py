"""Generate the built-in demo dataset ("demo shapes"; see ``mask_former/data/demo_dataset.py``).

    .venv/bin/python tools/make_demo_dataset.py [--root DIR] [--num-train N] [--num-val N] [--force]

Without ``--root`` it is written to ``$DETECTRON2_DATASETS/demo_shapes`` (``datasets/demo_shapes``),
where the registered ``demo_shapes_*`` datasets read it. A complete dataset made with the same
settings is left as it is unless ``--force`` is given.
"""
import argparse
import inspect
import logging

from mask_former.data.demo_dataset import demo_dataset_root, generate_demo_dataset

DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(generate_demo_dataset).parameters.items()
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", default=None, help=f"output folder (default: {demo_dataset_root()})"
    )
    parser.add_argument(
        "--num-train",
        type=int,
        default=DEFAULTS["num_train"],
        help="number of training images (default: %(default)s)",
    )
    parser.add_argument(
        "--num-val",
        type=int,
        default=DEFAULTS["num_val"],
        help="number of validation images (default: %(default)s)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        default=DEFAULTS["image_size"],
        help="size of every image (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULTS["seed"], help="random seed (default: %(default)s)"
    )
    parser.add_argument(
        "--force", action="store_true", help="regenerate even if a matching dataset exists"
    )
    return parser.parse_args(argv)


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    root = generate_demo_dataset(
        args.root,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=tuple(args.image_size),
        seed=args.seed,
        force=args.force,
    )
    print(f"Demo dataset ready at {root}")


if __name__ == "__main__":
    main()
