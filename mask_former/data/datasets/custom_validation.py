"""A full check of a described dataset (see :mod:`.custom`): every file of every split is read and
compared with its annotations. Each problem is reported with the file, the record and the key.

Checked: missing or unreadable files; image / label size mismatches; semantic labels that are
not single-channel or hold values outside ``0 .. NUM_CLASSES - 1`` and ``ignore_label``; panoptic
segments listed in the json but absent from the PNG, or present but not listed; duplicate
segment, image and annotation ids; annotations of unknown images or categories.
"""

import json
from collections import Counter
from typing import Callable, Dict, Iterable, List

import numpy as np
from detectron2.data import DatasetCatalog
from panopticapi.utils import rgb2id
from PIL import Image
from tqdm import tqdm

from .custom import DatasetDescription

__all__ = ["validate_dataset"]

# Label images read as class ids; others (e.g. RGB colour maps) are a common mistake.
_SINGLE_CHANNEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "F")


def _duplicates(values: Iterable) -> List:
    return sorted(value for value, count in Counter(values).items() if count > 1)


def _open(path: str, problems: List[str], what: str):
    try:
        image = Image.open(path)
        image.load()
        return image
    except OSError as e:
        problems.append(f"{what} {path}: cannot be read ({e})")
        return None


def _check_size(label: Image.Image, label_path: str, image_size, image_path: str, problems: List[str]) -> None:
    if label.size != image_size:
        problems.append(
            f"{label_path}: size {label.size[0]}x{label.size[1]} differs from its image {image_path} "
            f"({image_size[0]}x{image_size[1]})"
        )


def _check_semantic_label(path: str, image_size, image_path: str, description, problems: List[str]) -> None:
    label = _open(path, problems, "Semantic label")
    if label is None:
        return
    if label.mode not in _SINGLE_CHANNEL_MODES:
        problems.append(f"{path}: a {label.mode} image; semantic labels are single-channel class ids")
        return
    _check_size(label, path, image_size, image_path, problems)
    values = np.unique(np.asarray(label))
    wrong = [int(v) for v in values if not (0 <= v < description.num_classes or v == description.ignore_label)]
    if wrong:
        problems.append(
            f"{path}: label values {wrong[:10]} are neither class ids 0..{description.num_classes - 1} "
            f"nor ignore_label {description.ignore_label}"
        )


def _check_panoptic_png(record: Dict, image_size, problems: List[str]) -> None:
    path = record["pan_seg_file_name"]
    png = _open(path, problems, "Panoptic annotation")
    if png is None:
        return
    _check_size(png, path, image_size, record["file_name"], problems)
    listed = [segment["id"] for segment in record["segments_info"]]
    for segment_id in _duplicates(listed):
        problems.append(f"{path}: segment id {segment_id} is listed twice in segments_info")
    present = set(np.unique(rgb2id(np.asarray(png.convert("RGB"))))) - {0}
    absent = sorted(set(listed) - present)
    if absent:
        problems.append(f"{path}: segments {absent[:10]} are listed in segments_info but absent from the PNG")
    unlisted = sorted(int(i) for i in present - set(listed))
    if unlisted:
        problems.append(f"{path}: segment ids {unlisted[:10]} are in the PNG but not in segments_info")


def _check_record(record: Dict, description: DatasetDescription, problems: List[str]) -> None:
    image = _open(record["file_name"], problems, "Image")
    if image is None:
        return
    size = image.size
    if "height" in record and (record["width"], record["height"]) != size:
        problems.append(
            f"{record['file_name']}: size {size[0]}x{size[1]} differs from the json's "
            f"width x height {record['width']}x{record['height']} (image_id {record.get('image_id')})"
        )
    if "sem_seg_file_name" in record:
        _check_semantic_label(record["sem_seg_file_name"], size, record["file_name"], description, problems)
    if "pan_seg_file_name" in record:
        _check_panoptic_png(record, size, problems)


def _instance_json_problems(paths: Dict[str, str], description: DatasetDescription) -> List[str]:
    path = paths["instances_json"]
    with open(path) as f:
        content = json.load(f)
    images, annotations = content.get("images", []), content.get("annotations", [])
    problems = [
        f"{path}: image id {i} appears more than once in 'images'" for i in _duplicates(im["id"] for im in images)
    ]
    problems += [
        f"{path}: annotation id {i} appears more than once" for i in _duplicates(a.get("id") for a in annotations)
    ]
    image_ids, category_ids = {im["id"] for im in images}, {c["id"] for c in description.classes}
    for ann in annotations:
        if ann.get("image_id") not in image_ids:
            problems.append(
                f"{path}: annotation {ann.get('id')} refers to image_id {ann.get('image_id')}, not in 'images'"
            )
        if ann.get("category_id") not in category_ids:
            problems.append(
                f"{path}: annotation {ann.get('id')} has category_id {ann.get('category_id')}, not in 'categories'"
            )
    return problems


def _panoptic_json_problems(paths: Dict[str, str], description: DatasetDescription) -> List[str]:
    path = paths["panoptic_json"]
    with open(path) as f:
        annotations = json.load(f).get("annotations", [])
    problems = [
        f"{path}: image_id {i} has more than one annotation"
        for i in _duplicates(a.get("image_id") for a in annotations)
    ]
    problems += [
        f"{path}: file_name {name} is used by more than one annotation"
        for name in _duplicates(a.get("file_name") for a in annotations)
    ]
    category_ids = {c["id"] for c in description.classes}
    for ann in annotations:
        for segment in ann.get("segments_info", []):
            if segment.get("category_id") not in category_ids:
                problems.append(
                    f"{path}: segment {segment.get('id')} of {ann.get('file_name')} has category_id "
                    f"{segment.get('category_id')}, not in 'categories'"
                )
    return problems


# format -> checks of a split's json files that run before its records are loaded.
_JSON_CHECKS: Dict[str, Callable[[Dict[str, str], DatasetDescription], List[str]]] = {
    "semantic": lambda paths, description: [],
    "coco_instance": _instance_json_problems,
    "coco_panoptic": _panoptic_json_problems,
}


def validate_dataset(description: DatasetDescription) -> Dict[str, List[str]]:
    """
    Read every file of every split of a registered description and compare it with its
    annotations, with a progress bar.

    Returns:
        split -> its problems (messages naming the file, record and key); empty where it is fine.
    """
    problems = {}
    for split, paths in description.splits.items():
        split_problems = _JSON_CHECKS[description.format](paths, description)
        if not split_problems:
            try:
                records = DatasetCatalog.get(description.dataset_name(split))
            except (OSError, ValueError, KeyError, AssertionError) as e:
                split_problems.append(str(e).strip("'\""))
                records = []
            for record in tqdm(records, desc=f"Checking {description.dataset_name(split)}", unit="img"):
                _check_record(record, description, split_problems)
        problems[split] = split_problems
    return problems
