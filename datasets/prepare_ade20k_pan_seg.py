#!/usr/bin/env python3
"""Make ADE20K panoptic annotations (COCO panoptic format) from the semantic and instance
annotations, as upstream Mask2Former does: stuff segments come from the semantic labels, thing
segments from the instance labels (pasted over the stuff where they overlap).

Reads  <root>/ADEChallengeData2016/images/{training,validation}/*.jpg
       <root>/ADEChallengeData2016/annotations/{training,validation}/*.png
       <root>/ADEChallengeData2016/annotations_instance/{training,validation}/*.png
Writes <root>/ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png
       <root>/ADEChallengeData2016/ade20k_panoptic_{train,val}.json
A split whose json exists is skipped, so an interrupted run resumes. Segment ids are numbered
1, 2, ... in each image, so a rerun writes the same files.
"""

import os
from typing import Dict, Tuple

import numpy as np
from panopticapi.utils import id2rgb

from mask_former.data.datasets.ade20k_raw import (
    ade20k_image_entry,
    read_ade20k_instances,
    read_ade20k_semantic,
)
from mask_former.data.datasets.categories import ADE20K_150_CATEGORIES
from mask_former.data.datasets.preparation import (
    is_done,
    prepare_arg_parser,
    require_input,
    run_jobs,
    save_image,
    save_json,
    segment_bbox,
)

SPLITS = {"train": "training", "val": "validation"}
_IS_THING = [bool(cat["isthing"]) for cat in ADE20K_150_CATEGORIES]


def _segments(semantic_path: str, instance_path: str):
    """(mask, category id) of every stuff segment, then of every thing instance."""
    semantic = read_ade20k_semantic(semantic_path)
    stuff = [
        (semantic == category, int(category))
        for category in np.unique(semantic)
        if category != 255 and not _IS_THING[category]
    ]
    return stuff + read_ade20k_instances(instance_path)


def convert(
    image_path: str, semantic_path: str, instance_path: str, panoptic_path: str
) -> Tuple[Dict, Dict]:
    """Write the panoptic PNG of one image; return its json "images" and "annotations" entries."""
    image = ade20k_image_entry(image_path)
    segment_ids = np.zeros((image["height"], image["width"]), dtype=np.uint32)
    categories = []
    for mask, category in _segments(semantic_path, instance_path):
        if mask.shape != segment_ids.shape:
            raise ValueError(
                f"{semantic_path} or {instance_path} has size {mask.shape}, but {image_path} "
                f"has size {segment_ids.shape}."
            )
        categories.append(category)
        segment_ids[mask] = len(categories)

    segments_info = []
    for segment_id, category in enumerate(categories, start=1):
        mask = segment_ids == segment_id
        if mask.any():  # a stuff segment can be covered entirely by things
            segments_info.append(
                {
                    "id": segment_id,
                    "category_id": category,
                    "area": int(mask.sum()),
                    "bbox": segment_bbox(mask),
                    "iscrowd": 0,
                }
            )
    save_image(id2rgb(segment_ids).astype(np.uint8), panoptic_path)
    annotation = {
        "image_id": image["id"],
        "file_name": image["id"] + ".png",
        "segments_info": segments_info,
    }
    return image, annotation


def split_jobs(root: str, name: str, dirname: str):
    image_dir = require_input(os.path.join(root, "images", dirname))
    semantic_dir = require_input(os.path.join(root, "annotations", dirname))
    instance_dir = require_input(os.path.join(root, "annotations_instance", dirname))
    output_dir = os.path.join(root, f"ade20k_panoptic_{name}")
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(image_dir) if f.endswith(".jpg"))
    return [
        (
            os.path.join(image_dir, stem + ".jpg"),
            os.path.join(semantic_dir, stem + ".png"),
            os.path.join(instance_dir, stem + ".png"),
            os.path.join(output_dir, stem + ".png"),
        )
        for stem in stems
    ]


def main(argv=None) -> None:
    args = prepare_arg_parser(__doc__).parse_args(argv)
    root = os.path.join(args.root, "ADEChallengeData2016")
    jobs = {name: split_jobs(root, name, dirname) for name, dirname in SPLITS.items()}
    for name, split_job_list in jobs.items():
        json_file = os.path.join(root, f"ade20k_panoptic_{name}.json")
        if is_done(json_file, args.overwrite):
            continue
        results = run_jobs(
            convert, split_job_list, workers=args.workers, desc=f"ADE20K panoptic {name}"
        )
        save_json(
            {
                "images": [image for image, _ in results],
                "annotations": [annotation for _, annotation in results],
                "categories": ADE20K_150_CATEGORIES,
            },
            json_file,
        )


if __name__ == "__main__":
    main()
