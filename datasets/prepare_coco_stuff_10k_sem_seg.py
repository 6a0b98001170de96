#!/usr/bin/env python3
"""Make COCO-Stuff-10k v1.0 semantic labels for detectron2, as upstream MaskFormer (v1): the label
map "S" of each MATLAB v7.3 (HDF5) annotation, 1 (unlabeled) -> 255 and 2..172 -> contiguous ids
0..170 (the 171 COCO-Stuff classes in id order); the images are copied beside them.

Reads  <root>/coco/coco_stuff_10k/imageLists/{train,test}.txt, images/*.jpg, annotations/*.mat
Writes <root>/coco/coco_stuff_10k/images_detectron2/{train,test}/*.jpg
       <root>/coco/coco_stuff_10k/annotations_detectron2/{train,test}/*.png
Needs h5py (pip install h5py). Existing outputs are kept, so an interrupted run resumes.
"""

import importlib.util
import os

import numpy as np
from PIL import Image

from mask_former.data.datasets.categories import COCO_STUFF_171_CATEGORIES
from mask_former.data.datasets.preparation import (
    copy_file,
    prepare_arg_parser,
    require_input,
    run_jobs,
    save_image,
)
from mask_former.data.datasets.register_coco import COCO_STUFF_10K_SPLITS
from mask_former.errors import DatasetFileError

UNLABELED = 1
FIRST_CLASS = 2  # the raw label of contiguous id 0
IGNORE_LABEL = 255


def read_label_map(mat_path: str) -> np.ndarray:
    """The raw ``[H, W]`` label map "S" of a v1.0 annotation (HDF5 stores it transposed)."""
    import h5py

    try:
        with h5py.File(mat_path, "r") as mat:
            if "S" not in mat:
                raise DatasetFileError(mat_path, "has no label map", key="S")
            return np.asarray(mat["S"]).T
    except OSError as e:
        raise DatasetFileError(
            mat_path, f"is not a MATLAB v7.3 (HDF5) file, as COCO-Stuff-10k v1.0's are ({e})"
        ) from e


def contiguous_labels(raw: np.ndarray, mat_path: str) -> np.ndarray:
    """``[H, W]`` uint8: raw 1 -> 255, raw 2..172 -> 0..170; any other value is an error."""
    raw = np.asarray(raw, dtype=np.float64)
    known = (raw == UNLABELED) | ((raw >= FIRST_CLASS) & (raw < FIRST_CLASS + len(COCO_STUFF_171_CATEGORIES)))
    known &= raw == np.round(raw)
    if not known.all():
        bad = np.unique(raw[~known])[:10].tolist()
        raise DatasetFileError(
            mat_path,
            f"labels {bad} are neither {UNLABELED} (unlabeled) nor a class "
            f"{FIRST_CLASS}..{FIRST_CLASS + len(COCO_STUFF_171_CATEGORIES) - 1}",
            key="S",
        )
    labels = raw.astype(np.int64) - FIRST_CLASS
    labels[raw == UNLABELED] = IGNORE_LABEL
    return labels.astype(np.uint8)


def convert(mat_path: str, image_path: str, image_output: str, label_output: str) -> None:
    labels = contiguous_labels(read_label_map(mat_path), mat_path)
    width, height = Image.open(image_path).size
    if labels.shape != (height, width):
        raise DatasetFileError(
            mat_path,
            f"label map is {labels.shape[1]}x{labels.shape[0]} (WxH) but its image {image_path} "
            f"is {width}x{height}",
            key="S",
        )
    copy_file(image_path, image_output)
    save_image(labels, label_output)  # last: its existence marks the job done


def split_jobs(folder: str, split: str):
    with open(os.path.join(folder, "imageLists", f"{split}.txt")) as f:
        names = [line.strip() for line in f if line.strip()]
    return [
        (
            require_input(os.path.join(folder, "annotations", name + ".mat")),
            require_input(os.path.join(folder, "images", name + ".jpg")),
            os.path.join(folder, "images_detectron2", split, name + ".jpg"),
            os.path.join(folder, "annotations_detectron2", split, name + ".png"),
        )
        for name in names
    ]


def main(argv=None) -> None:
    args = prepare_arg_parser(__doc__).parse_args(argv)
    folder = os.path.join(args.root, "coco", "coco_stuff_10k")
    for split in COCO_STUFF_10K_SPLITS:
        require_input(os.path.join(folder, "imageLists", f"{split}.txt"))
    if importlib.util.find_spec("h5py") is None:
        raise ImportError("Reading COCO-Stuff-10k v1.0 annotations (MATLAB v7.3 files) needs h5py: pip install h5py")
    for split in COCO_STUFF_10K_SPLITS:
        run_jobs(
            convert,
            split_jobs(folder, split),
            workers=args.workers,
            desc=f"COCO-Stuff-10k {split}",
            skip_done=not args.overwrite,
        )


if __name__ == "__main__":
    main()
