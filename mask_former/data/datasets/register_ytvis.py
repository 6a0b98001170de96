"""Video instance segmentation datasets, under upstream Mask2Former's names where it has them:

- "ytvis_2019_{train,val,test}": ytvis_2019/{train,valid,test}/JPEGImages and
  ytvis_2019/{train,valid,test}.json (YouTube-VIS 2019, 40 classes);
- "ytvis_2021_{train,val,test}": the same layout under ytvis_2021/ (YouTube-VIS 2021, 40 classes);
- "ovis_{train,val,test}" (not in upstream): ovis/{train,valid,test} and
  ovis/annotations/annotations_{train,valid,test}.json (OVIS, 25 classes), as OVIS is released.

The validation and test jsons have no annotations: their predictions are scored by the datasets'
servers (the evaluator writes ``results.json``).
"""

import os

from .categories import OVIS_CATEGORIES, YTVIS_2019_CATEGORIES, YTVIS_2021_CATEGORIES
from .registration import datasets_root
from .ytvis import register_ytvis_instances, video_instances_metadata

# Our split name -> the dataset's folder name.
_SPLITS = {"train": "train", "val": "valid", "test": "test"}

# Dataset prefix -> its categories and (image root, json file) of a split folder, under the root.
_VIDEO_DATASETS = {
    "ytvis_2019": (YTVIS_2019_CATEGORIES, lambda f: (f"ytvis_2019/{f}/JPEGImages", f"ytvis_2019/{f}.json")),
    "ytvis_2021": (YTVIS_2021_CATEGORIES, lambda f: (f"ytvis_2021/{f}/JPEGImages", f"ytvis_2021/{f}.json")),
    "ovis": (OVIS_CATEGORIES, lambda f: (f"ovis/{f}", f"ovis/annotations/annotations_{f}.json")),
}


def register_all_video_instances(root: str) -> None:
    for prefix, (categories, paths) in _VIDEO_DATASETS.items():
        metadata = video_instances_metadata(categories)
        for split, folder in _SPLITS.items():
            image_root, json_file = paths(folder)
            register_ytvis_instances(
                f"{prefix}_{split}", metadata, os.path.join(root, json_file), os.path.join(root, image_root)
            )


register_all_video_instances(datasets_root())
