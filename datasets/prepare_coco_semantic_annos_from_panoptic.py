#!/usr/bin/env python3
"""Make COCO semantic labels from the panoptic annotations: every pixel gets the contiguous id
(0..132) of its segment's category, unlabeled pixels 255. These are the "sem_seg_file_name" of
"coco_2017_{train,val}_panoptic_with_sem_seg".

Reads  <root>/coco/annotations/panoptic_{train2017,val2017}.json
       <root>/coco/panoptic_{train2017,val2017}/*.png
Writes <root>/coco/panoptic_semseg_{train2017,val2017}/*.png
Existing outputs are kept, so an interrupted run resumes.
"""

import os
from typing import Dict, List

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image

from mask_former.data.datasets import coco_panoptic_metadata
from mask_former.data.datasets.loaders import read_panoptic_annotations
from mask_former.data.datasets.preparation import (
    prepare_arg_parser,
    require_input,
    run_jobs,
    save_image,
    semantic_from_panoptic,
)

SPLITS = ("val2017", "train2017")
LABEL_OF_CATEGORY: Dict[int, int] = coco_panoptic_metadata()["stuff_dataset_id_to_contiguous_id"]


def convert(panoptic_path: str, segments_info: List[Dict], output_path: str) -> None:
    panoptic_ids = rgb2id(np.asarray(Image.open(panoptic_path).convert("RGB"), dtype=np.uint32))
    save_image(semantic_from_panoptic(panoptic_ids, segments_info, LABEL_OF_CATEGORY), output_path)


def split_jobs(coco: str, split: str):
    json_file = require_input(os.path.join(coco, "annotations", f"panoptic_{split}.json"))
    panoptic_dir = require_input(os.path.join(coco, f"panoptic_{split}"))
    output_dir = os.path.join(coco, f"panoptic_semseg_{split}")
    annotations = read_panoptic_annotations(json_file)
    for ann in annotations:
        for segment in ann["segments_info"]:
            if segment["category_id"] not in LABEL_OF_CATEGORY:
                raise ValueError(
                    f"{json_file}: segment {segment['id']} of {ann['file_name']} has category_id "
                    f"{segment['category_id']}, which is not a COCO panoptic category."
                )
    return [
        (
            os.path.join(panoptic_dir, ann["file_name"]),
            ann["segments_info"],
            os.path.join(output_dir, ann["file_name"]),
        )
        for ann in annotations
    ]


def main(argv=None) -> None:
    args = prepare_arg_parser(__doc__).parse_args(argv)
    coco = os.path.join(args.root, "coco")
    jobs = {split: split_jobs(coco, split) for split in SPLITS}
    for split, split_job_list in jobs.items():
        run_jobs(
            convert,
            split_job_list,
            workers=args.workers,
            desc=f"COCO panoptic -> semantic {split}",
            skip_done=not args.overwrite,
        )


if __name__ == "__main__":
    main()
