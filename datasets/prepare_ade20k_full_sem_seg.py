#!/usr/bin/env python3
"""Make ADE20K-Full (847 classes) images and labels for detectron2, as upstream MaskFormer does:
images whose short side exceeds 512 are resized to 512, and object ids become contiguous ids
0..846 in 16-bit TIFF labels, anything else 65535 (ignored).

Reads  <root>/ADE20K_2021_17_01/index_ade20k.pkl and the images and *_seg.png files it lists
Writes <root>/ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg
       <root>/ADE20K_2021_17_01/annotations_detectron2/{training,validation}/*.tif
Existing outputs are kept, so an interrupted run resumes.
"""

import os
import pickle

import cv2
import numpy as np
from PIL import Image

from mask_former.data.datasets.categories import ADE20K_FULL_CATEGORIES
from mask_former.data.datasets.preparation import (
    prepare_arg_parser,
    require_input,
    run_jobs,
    save_image,
)
from mask_former.data.datasets.register_ade20k import ADE20K_FULL_IGNORE_LABEL

MAX_SHORT_SIDE = 512
# Object ids are R // 10 * 256 + G, so they stay below this.
_NUM_OBJECT_IDS = (255 // 10 + 1) * 256


def object_to_train_id_table() -> np.ndarray:
    """(_NUM_OBJECT_IDS,) uint16 lookup table: ADE20K object id -> contiguous id, or 65535."""
    table = np.full(_NUM_OBJECT_IDS, ADE20K_FULL_IGNORE_LABEL, dtype=np.uint16)
    for train_id, (object_id, _) in enumerate(ADE20K_FULL_CATEGORIES):
        table[object_id] = train_id
    return table


TRAIN_ID_OF_OBJECT = object_to_train_id_table()


def resized_shape(height: int, width: int):
    """(height, width) with the short side at most MAX_SHORT_SIDE, or None to keep the size."""
    short_side = min(height, width)
    if short_side <= MAX_SHORT_SIDE:
        return None
    return round(height / short_side * MAX_SHORT_SIDE), round(width / short_side * MAX_SHORT_SIDE)


def convert(image_path: str, seg_path: str, image_out: str, label_out: str) -> None:
    image = np.asarray(Image.open(image_path).convert("RGB"))
    seg = np.asarray(Image.open(seg_path).convert("RGB")).astype(np.int32)
    if seg.shape[:2] != image.shape[:2]:
        raise ValueError(f"{seg_path} has size {seg.shape[:2]}, its image {image.shape[:2]}.")
    label = TRAIN_ID_OF_OBJECT[seg[..., 0] // 10 * 256 + seg[..., 1]]
    shape = resized_shape(*image.shape[:2])
    if shape is not None:
        image = cv2.resize(image, shape[::-1], interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, shape[::-1], interpolation=cv2.INTER_NEAREST)
    save_image(image, image_out)
    save_image(label, label_out)


def read_jobs(datasets_dir: str):
    root = require_input(os.path.join(datasets_dir, "ADE20K_2021_17_01"))
    with open(require_input(os.path.join(root, "index_ade20k.pkl")), "rb") as f:
        index = pickle.load(f)
    jobs = []
    # The index lists folders relative to the datasets folder, e.g. "ADE20K_2021_17_01/images/...".
    for folder, file_name in zip(index["folder"], index["filename"]):
        split = "validation" if file_name.split("_")[1] == "val" else "training"
        stem = os.path.splitext(file_name)[0]
        jobs.append(
            (
                os.path.join(datasets_dir, folder, file_name),
                os.path.join(datasets_dir, folder, stem + "_seg.png"),
                os.path.join(root, "images_detectron2", split, file_name),
                os.path.join(root, "annotations_detectron2", split, stem + ".tif"),
            )
        )
    return jobs


def main(argv=None) -> None:
    args = prepare_arg_parser(__doc__).parse_args(argv)
    run_jobs(
        convert,
        read_jobs(args.root),
        workers=args.workers,
        desc="ADE20K-Full",
        skip_done=not args.overwrite,
    )


if __name__ == "__main__":
    main()
