#!/usr/bin/env python3
"""Make ADE20K-150 semantic labels for detectron2: class k -> k - 1, "other" (0) -> 255 (ignored).

Reads  <root>/ADEChallengeData2016/annotations/{training,validation}/*.png
Writes <root>/ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png
Existing outputs are kept, so an interrupted run resumes.
"""

import os

from mask_former.data.datasets.ade20k_raw import read_ade20k_semantic
from mask_former.data.datasets.preparation import (
    prepare_arg_parser,
    require_input,
    run_jobs,
    save_image,
)

SPLITS = ("training", "validation")


def convert(label_path: str, output_path: str) -> None:
    save_image(read_ade20k_semantic(label_path), output_path)


def split_jobs(root: str, split: str):
    label_dir = os.path.join(root, "annotations", split)
    output_dir = os.path.join(root, "annotations_detectron2", split)
    return [
        (os.path.join(label_dir, name), os.path.join(output_dir, name))
        for name in sorted(os.listdir(label_dir))
        if name.endswith(".png")
    ]


def main(argv=None) -> None:
    args = prepare_arg_parser(__doc__).parse_args(argv)
    root = os.path.join(args.root, "ADEChallengeData2016")
    for split in SPLITS:
        require_input(os.path.join(root, "annotations", split))
    for split in SPLITS:
        run_jobs(
            convert,
            split_jobs(root, split),
            workers=args.workers,
            desc=f"ADE20K semantic {split}",
            skip_done=not args.overwrite,
        )


if __name__ == "__main__":
    main()
