"""Functions that turn an on-disk dataset into detectron2's list-of-dicts format.

They run lazily (when a registered dataset is first requested) and fail loudly: a missing folder,
image or annotation raises ``FileNotFoundError`` naming it; a file that cannot be used as it is
raises :class:`DatasetFileError` naming the file, record and key. Only the checks that cost no file
reads are made here (json syntax, keys, duplicate and unknown ids, categories); image and label
sizes and label ranges are checked by the dataset mappers, which open those files anyway.
"""

import json
import logging
import os
from typing import Dict, Iterable, List, Optional

from detectron2.data.datasets.coco import load_coco_json
from detectron2.utils.file_io import PathManager

from ...errors import DatasetFileError

__all__ = [
    "DatasetFileError",
    "load_coco_instances",
    "load_coco_panoptic_json",
    "load_sem_seg_pairs",
    "read_json",
    "read_panoptic_annotations",
    "require_files",
]

logger = logging.getLogger(__name__)

_PREPARE_HINT = "see datasets/README.md for how to download and prepare it"

# What each file key of a dataset dict holds, for error messages.
_FILE_KINDS = {
    "file_name": "Image",
    "pan_seg_file_name": "Panoptic annotation",
    "sem_seg_file_name": "Semantic annotation",
}


def _require_dir(path: str, what: str) -> None:
    if not PathManager.isdir(path):
        raise FileNotFoundError(f"{what} folder {path} does not exist; {_PREPARE_HINT}.")


def _require_file(path: str, what: str) -> None:
    if not PathManager.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist; {_PREPARE_HINT}.")


def require_files(dataset_dicts: List[Dict], source: str, keys: Iterable[str] = tuple(_FILE_KINDS)):
    """
    Check that every file named in the dataset dicts exists, listing each folder once.

    Args:
        dataset_dicts: detectron2 dataset dicts.
        source: what the dicts were read from (a file or folder), named in the error.
        keys: the dict keys that hold file paths; keys absent from a dict are skipped.

    Raises:
        FileNotFoundError: naming the first missing file.
    """
    listings = {}
    for record in dataset_dicts:
        for key in keys:
            path = record.get(key)
            if path is None:
                continue
            folder, name = os.path.split(path)
            if folder not in listings:
                listings[folder] = (
                    set(PathManager.ls(folder)) if PathManager.isdir(folder) else set()
                )
            if name not in listings[folder]:
                raise FileNotFoundError(
                    f"{_FILE_KINDS.get(key, key)} {path} (listed by {source}) does not exist; "
                    f"{_PREPARE_HINT}."
                )


def load_sem_seg_pairs(
    gt_root: str, image_root: str, gt_ext: str = "png", image_ext: str = "jpg"
) -> List[Dict]:
    """
    Pair every semantic label file in `gt_root` with the image of the same name in `image_root`.

    Unlike detectron2's `load_sem_seg`, a label without an image is an error, not a warning.
    Images without a label are left out and counted in the log.

    Args:
        gt_root: folder of label maps, e.g. ".../annotations_detectron2/training".
        image_root: folder of images, e.g. ".../images/training".
        gt_ext: extension of the label files.
        image_ext: extension of the image files.

    Returns:
        list[dict]: one dict per label, with "file_name" and "sem_seg_file_name", sorted by name.
    """
    _require_dir(gt_root, "Semantic annotation")
    _require_dir(image_root, "Image")
    gt_suffix, image_suffix = "." + gt_ext, "." + image_ext
    stems = sorted(f[: -len(gt_suffix)] for f in PathManager.ls(gt_root) if f.endswith(gt_suffix))
    if not stems:
        raise FileNotFoundError(f"No *{gt_suffix} label files in {gt_root}; {_PREPARE_HINT}.")
    images = {f for f in PathManager.ls(image_root) if f.endswith(image_suffix)}
    dicts = []
    for stem in stems:
        image_path = os.path.join(image_root, stem + image_suffix)
        if stem + image_suffix not in images:
            raise FileNotFoundError(
                f"Image {image_path} for label {os.path.join(gt_root, stem + gt_suffix)} "
                f"does not exist; {_PREPARE_HINT}."
            )
        dicts.append(
            {"file_name": image_path, "sem_seg_file_name": os.path.join(gt_root, stem + gt_suffix)}
        )
    unlabeled = len(images) - len(dicts)
    if unlabeled:
        logger.info(f"{unlabeled} images in {image_root} have no label in {gt_root}; skipped.")
    logger.info(f"Loaded {len(dicts)} images with semantic labels from {image_root}.")
    return dicts


def _invalid_json(json_file: str, error: json.JSONDecodeError) -> DatasetFileError:
    return DatasetFileError(
        json_file, f"is not valid json ({error.msg} at line {error.lineno}, column {error.colno})"
    )


def read_json(json_file: str, what: str):
    """The content of a json file, with errors naming it.

    Raises:
        FileNotFoundError: the file does not exist.
        DatasetFileError: it is not valid json.
    """
    _require_file(json_file, what)
    with PathManager.open(json_file) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise _invalid_json(json_file, e) from e


def _require_keys(record: Dict, keys: Iterable[str], json_file: str, where: str) -> None:
    for key in keys:
        if key not in record:
            raise DatasetFileError(json_file, "is missing", record=where, key=key)


def read_panoptic_annotations(json_file: str) -> List[Dict]:
    """The "annotations" of a panoptic json, checked for the keys the loader reads and for
    duplicate or unknown ids."""
    content = read_json(json_file, "Panoptic annotation file")
    if not isinstance(content, dict) or not isinstance(content.get("annotations"), list):
        raise DatasetFileError(json_file, "has no 'annotations' list", key="annotations")
    annotations = content["annotations"]
    if not annotations:
        raise DatasetFileError(json_file, "lists no annotations", key="annotations")
    known_images = {image.get("id") for image in content["images"]} if "images" in content else None
    seen_images: Dict = {}
    for index, ann in enumerate(annotations):
        where = f"annotation {index}"
        _require_keys(ann, ("file_name", "image_id", "segments_info"), json_file, where)
        where = f"annotation {index} ({ann['file_name']})"
        image_id = ann["image_id"]
        if image_id in seen_images:
            raise DatasetFileError(
                json_file, f"image_id {image_id!r} repeats that of annotation {seen_images[image_id]}",
                record=where, key="image_id",
            )
        seen_images[image_id] = index
        if known_images is not None and image_id not in known_images:
            raise DatasetFileError(
                json_file, f"image_id {image_id!r} is not the id of any entry of 'images'",
                record=where, key="image_id",
            )
        segment_ids = set()
        for segment in ann["segments_info"]:
            _require_keys(segment, ("id", "category_id"), json_file, f"{where}, a segment")
            if segment["id"] in segment_ids:
                raise DatasetFileError(
                    json_file, f"segment id {segment['id']} appears twice", record=where, key="segments_info"
                )
            segment_ids.add(segment["id"])
    return annotations


def _contiguous_segment(segment: Dict, meta: Dict, json_file: str, where: str) -> Dict:
    category_id = segment["category_id"]
    if category_id in meta["thing_dataset_id_to_contiguous_id"]:
        contiguous, isthing = meta["thing_dataset_id_to_contiguous_id"][category_id], True
    elif category_id in meta["stuff_dataset_id_to_contiguous_id"]:
        contiguous, isthing = meta["stuff_dataset_id_to_contiguous_id"][category_id], False
    else:
        raise DatasetFileError(
            json_file,
            f"segment {segment['id']} has category_id {category_id}, which is not a category of "
            "this dataset's metadata",
            record=where,
            key="category_id",
        )
    return {**segment, "category_id": contiguous, "isthing": isthing}


def load_coco_panoptic_json(
    json_file: str, image_dir: str, gt_dir: str, semseg_dir: Optional[str], meta: Dict
) -> List[Dict]:
    """
    Read a COCO-format panoptic dataset (used for COCO, ADE20K and Mapillary Vistas).

    Args:
        json_file: panoptic json, e.g. "coco/annotations/panoptic_train2017.json".
        image_dir: folder of the ".jpg" images, e.g. "coco/train2017".
        gt_dir: folder of the panoptic PNGs, e.g. "coco/panoptic_train2017".
        semseg_dir: folder of semantic label PNGs named like the panoptic PNGs, e.g.
            "coco/panoptic_semseg_train2017"; None to leave "sem_seg_file_name" out.
        meta: dataset metadata with "thing_dataset_id_to_contiguous_id" and
            "stuff_dataset_id_to_contiguous_id".

    Returns:
        list[dict]: detectron2 dicts with "file_name", "image_id", "pan_seg_file_name",
        "sem_seg_file_name" (unless `semseg_dir` is None) and "segments_info", whose
        "category_id" is contiguous and which carry "isthing". Images with no segments are kept.

    Raises:
        FileNotFoundError: the json, or a file it names, does not exist.
        DatasetFileError: the json is malformed, lacks a key, repeats an image or segment id, names
            an image id absent from its "images", or a category absent from ``meta``.
    """
    dicts = []
    for index, ann in enumerate(read_panoptic_annotations(json_file)):
        where = f"annotation {index} ({ann['file_name']})"
        stem = os.path.splitext(ann["file_name"])[0]
        record = {
            "file_name": os.path.join(image_dir, stem + ".jpg"),
            "image_id": ann["image_id"],
            "pan_seg_file_name": os.path.join(gt_dir, ann["file_name"]),
            "segments_info": [
                _contiguous_segment(seg, meta, json_file, where)
                for seg in ann["segments_info"]
            ],
        }
        if semseg_dir is not None:
            record["sem_seg_file_name"] = os.path.join(semseg_dir, ann["file_name"])
        dicts.append(record)
    require_files(dicts, json_file)

    empty = sum(not record["segments_info"] for record in dicts)
    if empty:
        logger.info(f"{empty} of {len(dicts)} images in {json_file} have no segments.")
    logger.info(f"Loaded {len(dicts)} panoptic annotations from {json_file}.")
    return dicts


def load_coco_instances(json_file: str, image_root: str, dataset_name: str) -> List[Dict]:
    """
    detectron2's `load_coco_json`, after checking that the json and every image exist.

    Args:
        json_file: COCO instances json.
        image_root: folder of the images it names.
        dataset_name: registered name; its metadata's thing classes are checked against the json.

    Raises:
        FileNotFoundError: the json, or an image it names, does not exist.
        DatasetFileError: the json is malformed, lacks a key, or repeats an annotation id.
    """
    _require_file(json_file, "Instance annotation file")
    try:
        dicts = load_coco_json(json_file, image_root, dataset_name)
    except json.JSONDecodeError as e:
        raise _invalid_json(json_file, e) from e
    except KeyError as e:
        # pycocotools and detectron2 index the records without checking their keys.
        raise DatasetFileError(json_file, f"a record is missing the key {e}") from e
    except AssertionError as e:
        # detectron2 asserts that annotation ids are unique.
        raise DatasetFileError(json_file, str(e)) from e
    require_files(dicts, json_file, keys=("file_name",))
    return dicts
