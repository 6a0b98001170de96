#!/usr/bin/env python3
"""Make COCO-Stuff-171 semantic labels for detectron2: raw COCO-Stuff labels (COCO id - 1) ->
contiguous ids 0..170, anything else -> 255 (ignored).

Reads  <root>/coco/stuffthingmaps/{train2017,val2017}/*.png
Writes <root>/coco/stuffthingmaps_detectron2/{train2017,val2017}/*.png
Existing outputs are kept, so an interrupted run resumes.
"""

import os

import numpy as np
from PIL import Image

from mask_former.data.datasets.categories import COCO_STUFF_171_CATEGORIES
from mask_former.data.datasets.preparation import (
    prepare_arg_parser,
    require_input,
    run_jobs,
    save_image,
)

SPLITS = ("train2017", "val2017")


def raw_to_contiguous_table() -> np.ndarray:
    """(256,) uint8 lookup table: raw COCO-Stuff label -> contiguous id, 255 if not evaluated."""
    table = np.full(256, 255, dtype=np.uint8)
    for contiguous_id, category in enumerate(COCO_STUFF_171_CATEGORIES):
        table[category["id"] - 1] = contiguous_id
    return table


CONTIGUOUS_OF_RAW = raw_to_contiguous_table()


def convert(label_path: str, output_path: str) -> None:
    label = np.asarray(Image.open(label_path))
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"{label_path} is not a single-channel 8-bit label image.")
    save_image(CONTIGUOUS_OF_RAW[label], output_path)


def main(argv=None) -> None:
    args = prepare_arg_parser(__doc__).parse_args(argv)
    coco = os.path.join(args.root, "coco")
    for split in SPLITS:
        require_input(os.path.join(coco, "stuffthingmaps", split))
    for split in SPLITS:
        label_dir = os.path.join(coco, "stuffthingmaps", split)
        output_dir = os.path.join(coco, "stuffthingmaps_detectron2", split)
        jobs = [
            (os.path.join(label_dir, name), os.path.join(output_dir, name))
            for name in sorted(os.listdir(label_dir))
            if name.endswith(".png")
        ]
        run_jobs(
            convert,
            jobs,
            workers=args.workers,
            desc=f"COCO-Stuff {split}",
            skip_done=not args.overwrite,
        )


if __name__ == "__main__":
    main()
