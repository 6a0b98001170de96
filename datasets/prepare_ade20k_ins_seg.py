#!/usr/bin/env python3
"""Make ADE20K instance annotations (COCO format, RLE masks) from the instance labels, as
upstream Mask2Former does. Category ids are the 150-class ids of the 100 thing classes, shared
with the panoptic annotations.

Reads  <root>/ADEChallengeData2016/images/{training,validation}/*.jpg
       <root>/ADEChallengeData2016/annotations_instance/{training,validation}/*.png
Writes <root>/ADEChallengeData2016/ade20k_instance_{train,val}.json
A split whose json exists is skipped (--overwrite redoes it).
"""

import os
from typing import Dict, List, Tuple

import numpy as np
import pycocotools.mask as mask_util

from mask_former.data.datasets.ade20k_raw import ade20k_image_entry, read_ade20k_instances
from mask_former.data.datasets.categories import ADE20K_INSTANCE_CATEGORIES
from mask_former.data.datasets.preparation import (
    is_done,
    prepare_arg_parser,
    require_input,
    run_jobs,
    save_json,
    segment_bbox,
)

SPLITS = {"train": "training", "val": "validation"}


def _instance_annotation(mask: np.ndarray, category: int, image_id: str) -> Dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "image_id": image_id,
        "category_id": category,
        "iscrowd": 0,
        "bbox": segment_bbox(mask),
        "area": int(mask.sum()),
        "segmentation": rle,
    }


def convert(image_path: str, instance_path: str) -> Tuple[Dict, List[Dict]]:
    """The json "images" entry of one image and its "annotations" entries (without ids)."""
    image = ade20k_image_entry(image_path)
    size = (image["height"], image["width"])
    annotations = []
    for mask, category in read_ade20k_instances(instance_path):
        if mask.shape != size:
            raise ValueError(f"{instance_path} has size {mask.shape}, but {image_path} has {size}.")
        annotations.append(_instance_annotation(mask, category, image["id"]))
    return image, annotations


def split_jobs(root: str, dirname: str):
    image_dir = require_input(os.path.join(root, "images", dirname))
    instance_dir = require_input(os.path.join(root, "annotations_instance", dirname))
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(image_dir) if f.endswith(".jpg"))
    return [
        (os.path.join(image_dir, stem + ".jpg"), os.path.join(instance_dir, stem + ".png"))
        for stem in stems
    ]


def main(argv=None) -> None:
    args = prepare_arg_parser(__doc__).parse_args(argv)
    root = os.path.join(args.root, "ADEChallengeData2016")
    jobs = {name: split_jobs(root, dirname) for name, dirname in SPLITS.items()}
    for name, split_job_list in jobs.items():
        json_file = os.path.join(root, f"ade20k_instance_{name}.json")
        if is_done(json_file, args.overwrite):
            continue
        results = run_jobs(
            convert, split_job_list, workers=args.workers, desc=f"ADE20K instances {name}"
        )
        annotations = [ann for _, image_annotations in results for ann in image_annotations]
        for ann_id, ann in enumerate(annotations, start=1):
            ann["id"] = ann_id
        save_json(
            {
                "images": [image for image, _ in results],
                "annotations": annotations,
                "categories": [{"id": i, "name": n} for i, n in ADE20K_INSTANCE_CATEGORIES],
            },
            json_file,
        )


if __name__ == "__main__":
    main()
