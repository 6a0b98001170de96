#!/usr/bin/env python
"""Check a dataset description file and every file of the dataset it describes, then print the
config overrides that train and evaluate on it (see "Your own data" in README.md).

    python tools/check_dataset.py DESCRIPTION.yaml [--max-problems N]

Exit status: 0 when the dataset is consistent, 1 when the data has problems (each printed with
its file, record and key), 2 when the description file itself is wrong.
"""
import argparse
import logging
import sys

from mask_former.data.datasets.custom import DatasetDescriptionError, config_overrides, register_dataset_description
from mask_former.data.datasets.custom_validation import validate_dataset


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("description", metavar="FILE", help="dataset description file (YAML or JSON)")
    parser.add_argument(
        "--max-problems", type=int, default=20, help="problems printed per split (default: %(default)s)"
    )
    return parser.parse_args(argv)


def _quoted(value: str) -> str:
    return f'"{value}"' if any(c in value for c in "()',") else value


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    try:
        description = register_dataset_description(args.description)
    except DatasetDescriptionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{description.file}: dataset {description.name!r}, format {description.format}, "
        f"{description.num_classes} classes: {', '.join(c['name'] for c in description.classes)}"
    )
    problems = validate_dataset(description)
    for split, split_problems in problems.items():
        status = "ok" if not split_problems else f"{len(split_problems)} problem(s)"
        print(f"split {split!r} registered as {description.dataset_name(split)!r}: {status}")
        for problem in split_problems[: args.max_problems]:
            print(f"  - {problem}")
        if len(split_problems) > args.max_problems:
            print(f"  ... and {len(split_problems) - args.max_problems} more")
    if any(problems.values()):
        return 1
    splits = list(description.splits)
    train, test = ("train" if "train" in splits else splits[0]), ("val" if "val" in splits else splits[-1])
    overrides = " ".join(_quoted(v) for v in config_overrides(description, train, test))
    command = f"python train_net.py --config-file CONFIG --dataset {args.description} {overrides}"
    print(f"\nTrain and evaluate with:\n  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
