"""Video instance segmentation datasets in the YouTube-VIS json format (YouTube-VIS 2019 / 2021, OVIS).

The json holds ``videos`` (``id``, ``file_names``, ``height``, ``width``, ``length``), ``categories``
and, except in validation / test files, ``annotations``: one per object track, with ``video_id``,
``category_id``, ``id`` and per-frame lists ``segmentations`` (polygons, compressed or uncompressed
RLE, or None where the object is absent), ``bboxes`` (``[x, y, w, h]`` or None) and ``areas``.

:func:`load_ytvis_json` turns it into one detectron2 dict per video, as upstream Mask2Former's video
project does:

- ``file_names`` (list[str], one per frame, under ``image_root``), ``height``, ``width``, ``length``,
  ``video_id``;
- ``annotations``: one list per frame of the objects visible in it, each with ``id`` (the track id),
  ``category_id`` (contiguous), ``iscrowd`` (where the json has it), ``bbox`` (XYWH_ABS),
  ``bbox_mode`` and ``segmentation`` (polygons, or a compressed RLE dict).
"""

import logging
import os
from functools import partial
from typing import Dict, List, Optional

import pycocotools.mask as mask_util
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode

from ...errors import DatasetFileError
from .loaders import read_json, require_files
from .registration import replace_dataset

__all__ = ["load_ytvis_json", "register_ytvis_instances", "video_instances_metadata"]

logger = logging.getLogger(__name__)


def video_instances_metadata(categories: List[Dict]) -> Dict:
    """Metadata of a video instance dataset: ``thing_classes``, ``thing_colors`` and
    ``thing_dataset_id_to_contiguous_id`` of ``categories`` (dicts with "id", "name", "color"), in
    their order."""
    return {
        "thing_classes": [cat["name"] for cat in categories],
        "thing_colors": [cat["color"] for cat in categories],
        "thing_dataset_id_to_contiguous_id": {cat["id"]: i for i, cat in enumerate(categories)},
    }


def _require_keys(record: Dict, keys, json_file: str, where: str) -> None:
    if not isinstance(record, dict):
        raise DatasetFileError(json_file, f"is a {type(record).__name__}, not a json object", record=where)
    for key in keys:
        if key not in record:
            raise DatasetFileError(json_file, "is missing", record=where, key=key)


def _category_map(content: Dict, json_file: str, dataset_name: Optional[str]) -> Dict[int, int]:
    """Dataset category id -> contiguous id: the registered metadata's, or else (a dataset
    registered without classes) the json's categories sorted by id, written into the metadata as
    upstream does."""
    meta = MetadataCatalog.get(dataset_name) if dataset_name else None
    if meta is not None and meta.get("thing_dataset_id_to_contiguous_id") is not None:
        return dict(meta.thing_dataset_id_to_contiguous_id)
    categories = content.get("categories", [])
    for index, category in enumerate(categories):
        _require_keys(category, ("id", "name"), json_file, f"category {index}")
    categories = sorted(categories, key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    if meta is not None:
        meta.set(thing_classes=[c["name"] for c in categories], thing_dataset_id_to_contiguous_id=id_map)
    return id_map


def _read_videos(content: Dict, json_file: str) -> Dict:
    """The ``videos`` of the json by id, checked for keys, lengths and repeated ids."""
    videos = content.get("videos")
    if not isinstance(videos, list):
        raise DatasetFileError(json_file, "has no 'videos' list", key="videos")
    by_id = {}
    for index, video in enumerate(videos):
        where = f"video {index}"
        _require_keys(video, ("id", "file_names", "height", "width"), json_file, where)
        where = f"video {index} (id {video['id']})"
        if video["id"] in by_id:
            raise DatasetFileError(json_file, "repeats the id of an earlier video", record=where, key="id")
        length = video.get("length", len(video["file_names"]))
        if length != len(video["file_names"]):
            raise DatasetFileError(
                json_file, f"is {length} but the video lists {len(video['file_names'])} file_names",
                record=where, key="length",
            )
        by_id[video["id"]] = video
    return by_id


def _is_polygon(polygon) -> bool:
    return isinstance(polygon, list) and all(isinstance(v, (int, float)) for v in polygon)


def _frame_segmentation(segm, height: int, width: int):
    """One frame's segmentation as the loader keeps it: None where the object is absent (None or
    empty, or polygons of fewer than 3 points), valid polygons, or a compressed RLE dict.

    Raises:
        ValueError: a malformed segmentation (the message says why).
    """
    if not segm:
        return None
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise ValueError("an RLE needs 'counts' and 'size'")
        if list(segm["size"]) != [height, width]:
            raise ValueError(f"RLE size {list(segm['size'])} is not the video's [height, width] {[height, width]}")
        if isinstance(segm["counts"], list):  # uncompressed RLE
            return mask_util.frPyObjects(segm, height, width)
        return segm
    if isinstance(segm, list):
        if not all(_is_polygon(p) for p in segm):
            raise ValueError("polygons must be lists of numbers")
        # As upstream: polygons of fewer than 3 points are left out.
        polygons = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
        return polygons or None
    raise ValueError(f"a {type(segm).__name__} is neither polygons (list) nor RLE (dict)")


def _box_of(segmentation, height: int, width: int) -> List[float]:
    rle = segmentation
    if isinstance(segmentation, list):
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    return mask_util.toBbox(rle).tolist()


def _frame_objects(ann: Dict, video: Dict, id_map: Dict, json_file: str, where: str):
    """The per-frame objects of one annotation (None where absent) and how many frames lost theirs
    for having no valid polygon."""
    length, height, width = len(video["file_names"]), video["height"], video["width"]
    segms = ann["segmentations"]
    bboxes = ann.get("bboxes")
    for key, values in (("segmentations", segms), ("bboxes", bboxes)):
        if values is not None and (not isinstance(values, list) or len(values) != length):
            size = len(values) if isinstance(values, list) else type(values).__name__
            raise DatasetFileError(
                json_file, f"needs one entry per frame ({length}), got {size}", record=where, key=key
            )
    if ann["category_id"] not in id_map:
        raise DatasetFileError(
            json_file, f"{ann['category_id']!r} is not a category of this dataset ({sorted(id_map)})",
            record=where, key="category_id",
        )
    base = {key: ann[key] for key in ("iscrowd", "category_id", "id") if key in ann}
    base["category_id"] = id_map[ann["category_id"]]
    objects, invalid_polygons = [], 0
    for frame, segm in enumerate(segms):
        try:
            segmentation = _frame_segmentation(segm, height, width)
        except ValueError as e:
            raise DatasetFileError(json_file, f"frame {frame}: {e}", record=where, key="segmentations") from e
        invalid_polygons += bool(segm) and segmentation is None
        # As upstream, a frame without a box (where the json lists boxes) has no object either.
        if segmentation is None or (bboxes is not None and not bboxes[frame]):
            objects.append(None)
            continue
        bbox = bboxes[frame] if bboxes is not None else _box_of(segmentation, height, width)
        objects.append({**base, "bbox": bbox, "bbox_mode": BoxMode.XYWH_ABS, "segmentation": segmentation})
    return objects, invalid_polygons


def load_ytvis_json(json_file: str, image_root: str, dataset_name: Optional[str] = None) -> List[Dict]:
    """
    Read a YouTube-VIS-format json into one dict per video (see the module docstring), sorted by
    video id.

    Args:
        json_file: the annotation file, e.g. "ytvis_2019/train.json".
        image_root: the folder that the videos' ``file_names`` are relative to.
        dataset_name: the registered name. Its metadata's ``thing_dataset_id_to_contiguous_id``
            maps the category ids; where it has none, the json's categories (sorted by id) give
            the map and ``thing_classes``, which are written into the metadata, as upstream does.

    Raises:
        FileNotFoundError: the json, or a frame it names, does not exist.
        DatasetFileError: the json is malformed or lacks a key; a video repeats an id or its
            ``length`` disagrees with its ``file_names``; an annotation names an unknown video or
            category, repeats an id, or has per-frame lists of another length than its video or a
            malformed segmentation (e.g. an RLE of another size than the video).
    """
    content = read_json(json_file, "Video annotation file")
    if not isinstance(content, dict):
        raise DatasetFileError(json_file, "is not a json object with 'videos'")
    videos = _read_videos(content, json_file)
    id_map = _category_map(content, json_file, dataset_name)

    frames = {video_id: [[] for _ in video["file_names"]] for video_id, video in videos.items()}
    annotation_ids, invalid_polygons = set(), 0
    for index, ann in enumerate(content.get("annotations", [])):
        where = f"annotation {index}"
        _require_keys(ann, ("id", "video_id", "category_id", "segmentations"), json_file, where)
        where = f"annotation {index} (id {ann['id']}, video {ann['video_id']})"
        if ann["video_id"] not in videos:
            raise DatasetFileError(json_file, "is not the id of any entry of 'videos'", record=where, key="video_id")
        if ann["id"] in annotation_ids:
            raise DatasetFileError(json_file, "repeats the id of an earlier annotation", record=where, key="id")
        annotation_ids.add(ann["id"])
        objects, invalid = _frame_objects(ann, videos[ann["video_id"]], id_map, json_file, where)
        invalid_polygons += invalid
        for frame_objects, obj in zip(frames[ann["video_id"]], objects):
            if obj is not None:
                frame_objects.append(obj)
    if invalid_polygons:
        logger.warning(
            f"{json_file}: {invalid_polygons} object frames have no valid polygon (a valid polygon is a list "
            "of at least 6 numbers, of even length) and are left out."
        )

    records = [
        {
            "file_names": [os.path.join(image_root, name) for name in video["file_names"]],
            "height": video["height"],
            "width": video["width"],
            "length": len(video["file_names"]),
            "video_id": video_id,
            "annotations": frames[video_id],
        }
        for video_id, video in sorted(videos.items())
    ]
    require_files([{"file_name": name} for record in records for name in record["file_names"]], json_file)
    logger.info(f"Loaded {len(records)} videos ({len(annotation_ids)} object tracks) from {json_file}.")
    return records


def register_ytvis_instances(name: str, metadata: Dict, json_file: str, image_root: str) -> None:
    """
    Register a YouTube-VIS-format video instance segmentation dataset (evaluator "ytvis").

    Args:
        name: the dataset name, e.g. "ytvis_2019_train".
        metadata: e.g. :func:`video_instances_metadata` of its categories; may be empty, the
            classes are then read from the json when the dataset is loaded.
        json_file: the annotation file.
        image_root: the folder that its ``file_names`` are relative to.
    """
    replace_dataset(name, partial(load_ytvis_json, json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="ytvis", **metadata)
