"""Broken dataset files: each case is a DatasetFileError naming the file, and where it can the record
and the key (malformed json, missing keys, duplicate or unknown ids)."""
import json

import pytest

from mask_former.data.datasets import DatasetFileError, coco_panoptic_metadata, load_coco_panoptic_json
from mask_former.data.datasets.loaders import load_coco_instances
from test_dataset_registration import coco_panoptic_layout


def load_panoptic(paths):
    return load_coco_panoptic_json(
        paths["panoptic_json"], paths["image_root"], paths["panoptic_root"], paths["sem_seg_root"],
        coco_panoptic_metadata(),
    )


def edit_json(path, edit):
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


def remove(container, key):
    def edit(content):
        del container(content)[key]

    return edit


# case -> (edit of the panoptic json, regex the error matches)
BROKEN_PANOPTIC_JSON = {
    "no annotations": (
        remove(lambda c: c, "annotations"),
        r"panoptic\.json: key 'annotations': has no 'annotations' list",
    ),
    "no segments_info": (
        remove(lambda c: c["annotations"][1], "segments_info"),
        r"panoptic\.json: annotation 1: key 'segments_info': is missing",
    ),
    "no file_name": (
        remove(lambda c: c["annotations"][0], "file_name"),
        r"panoptic\.json: annotation 0: key 'file_name': is missing",
    ),
    "segment without id": (
        remove(lambda c: c["annotations"][0]["segments_info"][1], "id"),
        r"panoptic\.json: annotation 0 \(000000000001\.png\), a segment: key 'id': is missing",
    ),
    "duplicate image id": (
        lambda c: c["annotations"][1].update(image_id=1),
        r"annotation 1 \(000000000002\.png\): key 'image_id': image_id 1 repeats that of annotation 0",
    ),
    "duplicate segment id": (
        lambda c: c["annotations"][0]["segments_info"][1].update(id=11),
        r"annotation 0 \(000000000001\.png\): key 'segments_info': segment id 11 appears twice",
    ),
    "image id missing from images": (
        lambda c: c.update(images=[{"id": 1, "file_name": "000000000001.jpg"}]),
        r"annotation 1 \(000000000002\.png\): key 'image_id': image_id 2 is not the id of any entry of 'images'",
    ),
    "unknown category": (
        lambda c: c["annotations"][0]["segments_info"][1].update(category_id=12),
        r"annotation 0 \(000000000001\.png\): key 'category_id': segment 22 has category_id 12",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_PANOPTIC_JSON))
def test_broken_panoptic_json_is_a_named_error(tmp_path, case):
    paths = coco_panoptic_layout(tmp_path)
    edit, message = BROKEN_PANOPTIC_JSON[case]
    edit_json(tmp_path / "panoptic.json", edit)
    with pytest.raises(DatasetFileError, match=message) as error:
        load_panoptic(paths)
    assert error.value.path == paths["panoptic_json"]


def test_malformed_panoptic_json_names_the_file(tmp_path):
    paths = coco_panoptic_layout(tmp_path)
    (tmp_path / "panoptic.json").write_text('{"annotations": [')
    with pytest.raises(DatasetFileError, match=r"panoptic\.json: is not valid json \(.* line 1, column 18\)"):
        load_panoptic(paths)


def test_panoptic_json_that_is_valid_still_loads(tmp_path):
    paths = coco_panoptic_layout(tmp_path)
    edit_json(tmp_path / "panoptic.json", lambda c: c.update(images=[{"id": 1}, {"id": 2}]))
    assert [d["image_id"] for d in load_panoptic(paths)] == [1, 2]


def instances_layout(root):
    paths = coco_panoptic_layout(root)
    content = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": 8, "width": 8}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0,
             "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    (root / "instances.json").write_text(json.dumps(content))
    return root / "instances.json", paths["image_root"]


@pytest.mark.parametrize(
    "case, edit, message",
    [
        ("malformed", None, r"instances\.json: is not valid json"),
        ("annotation without image_id", remove(lambda c: c["annotations"][0], "image_id"),
         r"instances\.json: a record is missing the key 'image_id'"),
        ("duplicate annotation id", lambda c: c["annotations"].append(dict(c["annotations"][0])),
         r"instances\.json: .*not unique"),
    ],
)
def test_broken_instances_json_is_a_named_error(tmp_path, case, edit, message):
    json_file, image_root = instances_layout(tmp_path)
    if edit is None:
        json_file.write_text("{")
    else:
        edit_json(json_file, edit)
    with pytest.raises(DatasetFileError, match=message):
        load_coco_instances(str(json_file), image_root, "test_broken_instances")
