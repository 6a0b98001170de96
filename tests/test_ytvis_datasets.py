"""YouTube-VIS / OVIS registrations and the YouTube-VIS json loader."""
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from helpers_video import box_mask, rle, write_video_dataset
from mask_former.data.datasets import DatasetFileError, load_ytvis_json, register_ytvis_instances
from mask_former.data.datasets.categories import OVIS_CATEGORIES

H, W = 12, 16
SQUARE = [2.0, 2.0, 8.0, 2.0, 8.0, 8.0, 2.0, 8.0]  # polygon of a 6 x 6 square


@pytest.mark.parametrize(
    "name, json_end, images_end, first_class",
    [
        ("ytvis_2019_train", "ytvis_2019/train.json", "ytvis_2019/train/JPEGImages", "person"),
        ("ytvis_2019_val", "ytvis_2019/valid.json", "ytvis_2019/valid/JPEGImages", "person"),
        ("ytvis_2019_test", "ytvis_2019/test.json", "ytvis_2019/test/JPEGImages", "person"),
        ("ytvis_2021_train", "ytvis_2021/train.json", "ytvis_2021/train/JPEGImages", "airplane"),
        ("ytvis_2021_val", "ytvis_2021/valid.json", "ytvis_2021/valid/JPEGImages", "airplane"),
        ("ytvis_2021_test", "ytvis_2021/test.json", "ytvis_2021/test/JPEGImages", "airplane"),
        ("ovis_train", "ovis/annotations/annotations_train.json", "ovis/train", "Person"),
        ("ovis_val", "ovis/annotations/annotations_valid.json", "ovis/valid", "Person"),
        ("ovis_test", "ovis/annotations/annotations_test.json", "ovis/test", "Person"),
    ],
)
def test_builtin_video_datasets_are_registered(name, json_end, images_end, first_class):
    assert name in DatasetCatalog.list()
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "ytvis"
    assert meta.json_file.endswith(json_end) and meta.image_root.endswith(images_end)
    num_classes = 25 if name.startswith("ovis") else 40
    assert len(meta.thing_classes) == len(meta.thing_colors) == num_classes
    assert meta.thing_classes[0] == first_class
    assert meta.thing_dataset_id_to_contiguous_id == {i + 1: i for i in range(num_classes)}


def test_ovis_classes():
    assert [c["name"] for c in OVIS_CATEGORIES][-3:] == ["Airplane", "Boat", "Vehical"]
    assert MetadataCatalog.get("ytvis_2021_val").thing_classes[13] == "flying_disc"


def test_missing_data_is_named():
    with pytest.raises(FileNotFoundError, match="ovis/annotations/annotations_valid.json"):
        DatasetCatalog.get("ovis_val")


def uncompressed(mask):
    """COCO's uncompressed RLE (column-major run lengths, starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.int64)
    changes = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
    return {"size": list(mask.shape), "counts": np.diff(np.r_[0, changes]).tolist()}


def video_json(tmp_path, annotations, videos=None, categories=None):
    videos = videos or [{"id": 7, "file_names": [f"v7/{t}.jpg" for t in range(3)], "height": H, "width": W,
                         "length": 3}]
    categories = categories or [{"id": 2, "name": "cat"}, {"id": 5, "name": "dog"}]
    return write_video_dataset(tmp_path, videos, annotations, categories)


def track(track_id=1, category_id=2, segmentations=None, **extra):
    segmentations = segmentations or [[SQUARE]] * 3
    return {"id": track_id, "video_id": 7, "category_id": category_id, "segmentations": segmentations, **extra}


def test_loader_reads_every_segmentation_form(tmp_path):
    mask = box_mask(H, W, 4, 3, 10, 9)
    annotations = [
        track(1, 2, [[SQUARE], None, [[1.0, 2.0, 3.0, 4.0]]], bboxes=[[2, 2, 6, 6], None, [1, 2, 2, 2]]),
        track(2, 5, [rle(mask), uncompressed(mask), None], iscrowd=0),
    ]
    json_file, image_root = video_json(tmp_path, annotations)
    (record,) = load_ytvis_json(json_file, image_root)
    assert record["file_names"] == [f"{image_root}/v7/{t}.jpg" for t in range(3)]
    assert (record["height"], record["width"], record["length"], record["video_id"]) == (H, W, 3, 7)
    frame0, frame1, frame2 = record["annotations"]
    assert [(o["id"], o["category_id"]) for o in frame0] == [(1, 0), (2, 1)]
    assert frame0[0]["segmentation"] == [SQUARE] and frame0[0]["bbox"] == [2, 2, 6, 6]
    assert frame0[0]["bbox_mode"] == BoxMode.XYWH_ABS
    assert frame0[1]["iscrowd"] == 0 and "iscrowd" not in frame0[0]
    assert frame0[1]["bbox"] == [4.0, 3.0, 6.0, 6.0]  # from the mask where the json has no bboxes
    # The uncompressed RLE is compressed; track 1 is absent from frame 1 and its frame-2 polygon
    # has two points only: it is left out, like an absent frame.
    assert [o["id"] for o in frame1] == [2] and frame2 == []
    assert (mask_util.decode(frame1[0]["segmentation"]) == mask).all()


def test_loader_without_metadata_reads_classes_from_the_json(tmp_path):
    json_file, image_root = video_json(tmp_path, [track(1, 5)])
    name = "test_ytvis_loader_classes"
    register_ytvis_instances(name, {}, json_file, image_root)
    try:
        (record,) = DatasetCatalog.get(name)
        assert record["annotations"][0][0]["category_id"] == 1
        assert MetadataCatalog.get(name).thing_classes == ["cat", "dog"]
        assert MetadataCatalog.get(name).evaluator_type == "ytvis"
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_a_validation_json_without_annotations_loads(tmp_path):
    json_file, image_root = video_json(tmp_path, [])
    content = json.loads(open(json_file).read())
    del content["annotations"]
    open(json_file, "w").write(json.dumps(content))
    (record,) = load_ytvis_json(json_file, image_root)
    assert record["annotations"] == [[], [], []]


@pytest.mark.parametrize(
    "annotation, record, key, message",
    [
        (track(segmentations=[[SQUARE]] * 2), "annotation 0 (id 1, video 7)", "segmentations", "one entry per frame"),
        (track(bboxes=[[0, 0, 1, 1]]), "annotation 0 (id 1, video 7)", "bboxes", "one entry per frame"),
        (track(category_id=9), "annotation 0 (id 1, video 7)", "category_id", "not a category"),
        ({**track(), "video_id": 8}, "annotation 0 (id 1, video 8)", "video_id", "not the id of any entry"),
        ({"id": 1, "video_id": 7, "category_id": 2}, "annotation 0", "segmentations", "is missing"),
        (track(segmentations=[{"size": [3, 3], "counts": "abc"}, None, None]), "annotation 0 (id 1, video 7)",
         "segmentations", r"frame 0: RLE size \[3, 3\] is not the video's"),
        (track(segmentations=[None, 5, None]), "annotation 0 (id 1, video 7)", "segmentations",
         "frame 1: a int is neither polygons"),
    ],
)
def test_malformed_annotations_are_named(tmp_path, annotation, record, key, message):
    json_file, image_root = video_json(tmp_path, [annotation])
    with pytest.raises(DatasetFileError, match=message) as error:
        load_ytvis_json(json_file, image_root)
    assert (error.value.path, error.value.record, error.value.key) == (json_file, record, key)


def test_malformed_videos_are_named(tmp_path):
    video = {"id": 7, "file_names": ["v7/0.jpg"], "height": H, "width": W, "length": 2}
    json_file, image_root = video_json(tmp_path, [], videos=[video])
    with pytest.raises(DatasetFileError, match="key 'length': is 2 but the video lists 1 file_names"):
        load_ytvis_json(json_file, image_root)
    json_file, image_root = video_json(tmp_path, [track(), track()])
    with pytest.raises(DatasetFileError, match="annotation 1 .*key 'id': repeats the id"):
        load_ytvis_json(json_file, image_root)


def test_a_missing_frame_is_named(tmp_path):
    json_file, image_root = video_json(tmp_path, [track()])
    (tmp_path / "JPEGImages/v7/1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="v7/1.jpg"):
        load_ytvis_json(json_file, image_root)
