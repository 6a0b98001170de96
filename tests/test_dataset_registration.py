"""Dataset registration: upstream names and metadata, and loading tiny on-disk layouts."""

import ast
import json
import uuid

import numpy as np
import pytest
import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES, COCO_CATEGORIES
from detectron2.data.datasets.coco_panoptic import register_coco_panoptic
from panopticapi.utils import id2rgb
from PIL import Image

from conftest import REPO
from mask_former.data.datasets import (
    coco_panoptic_metadata,
    load_coco_panoptic_json,
    register_coco_panoptic_annos_sem_seg,
    register_sem_seg,
)
from mask_former.data.datasets.categories import (
    ADE20K_150_CATEGORIES,
    ADE20K_FULL_CATEGORIES,
    ADE20K_INSTANCE_CATEGORIES,
    MAPILLARY_VISTAS_CATEGORIES,
)


def metadata(name):
    return MetadataCatalog.get(name)


def assert_contiguous(id_map, size):
    assert sorted(id_map.values()) == list(range(size))


@pytest.fixture
def temp_name():
    """A fresh dataset name prefix; every catalog entry starting with it is removed afterwards."""
    prefix = f"test_{uuid.uuid4().hex}"
    yield prefix
    for name in DatasetCatalog.list():
        if name.startswith(prefix):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


@pytest.mark.parametrize(
    "name",
    [
        "ade20k_sem_seg_train",
        "ade20k_sem_seg_val",
        "ade20k_full_sem_seg_train",
        "ade20k_full_sem_seg_val",
        "ade20k_panoptic_train",
        "ade20k_panoptic_val",
        "ade20k_instance_train",
        "ade20k_instance_val",
        "coco_2017_train_panoptic",
        "coco_2017_val_panoptic",
        "coco_2017_train_panoptic_with_sem_seg",
        "coco_2017_val_panoptic_with_sem_seg",
        "coco_2017_train",
        "coco_2017_val",
        "coco_2017_train_stuff_sem_seg",
        "coco_2017_test_stuff_sem_seg",
        "coco_2017_train_stuff_10k_sem_seg",
        "coco_2017_test_stuff_10k_sem_seg",
        "cityscapes_fine_sem_seg_train",
        "cityscapes_fine_instance_seg_train",
        "cityscapes_fine_panoptic_train",
        "mapillary_vistas_sem_seg_train",
        "mapillary_vistas_sem_seg_val",
        "mapillary_vistas_panoptic_train",
        "mapillary_vistas_panoptic_val",
    ],
)
def test_upstream_names_are_registered(name):
    assert name in DatasetCatalog.list()
    assert metadata(name).evaluator_type


@pytest.mark.parametrize("split, folder", [("train", "training"), ("val", "validation")])
def test_ade20k_semantic_metadata(split, folder):
    meta = metadata(f"ade20k_sem_seg_{split}")
    assert meta.stuff_classes == ADE20K_SEM_SEG_CATEGORIES and len(meta.stuff_classes) == 150
    assert len(meta.stuff_colors) == 150 and meta.stuff_colors[0] == [120, 120, 120]
    assert (meta.evaluator_type, meta.ignore_label) == ("sem_seg", 255)
    assert meta.sem_seg_root.endswith(f"ADEChallengeData2016/annotations_detectron2/{folder}")


def test_ade20k_full_metadata():
    assert len({object_id for object_id, _ in ADE20K_FULL_CATEGORIES}) == 847
    meta = metadata("ade20k_full_sem_seg_val")
    assert len(meta.stuff_classes) == 847 and meta.stuff_classes[0] == "wall"
    assert (meta.evaluator_type, meta.ignore_label) == ("sem_seg", 65535)
    assert meta.sem_seg_root.endswith("ADE20K_2021_17_01/annotations_detectron2/validation")
    assert meta.image_root.endswith("ADE20K_2021_17_01/images_detectron2/validation")


def assert_panoptic_split(meta, num_classes, num_things):
    assert len(meta.stuff_classes) == len(meta.stuff_colors) == num_classes
    assert len(meta.thing_dataset_id_to_contiguous_id) == num_things
    assert_contiguous(meta.stuff_dataset_id_to_contiguous_id, num_classes)
    for dataset_id, contiguous_id in meta.thing_dataset_id_to_contiguous_id.items():
        assert meta.stuff_dataset_id_to_contiguous_id[dataset_id] == contiguous_id
    assert meta.label_divisor == 1000


def test_ade20k_panoptic_metadata():
    meta = metadata("ade20k_panoptic_train")
    assert_panoptic_split(meta, num_classes=150, num_things=100)
    assert meta.stuff_classes == ADE20K_SEM_SEG_CATEGORIES
    assert len(meta.thing_classes) == 100 and meta.thing_classes[0] == "bed"
    assert (meta.evaluator_type, meta.ignore_label) == ("ade20k_panoptic_seg", 255)
    assert meta.sem_seg_root.endswith("ADEChallengeData2016/annotations_detectron2/training")
    assert meta.json_file.endswith("ADEChallengeData2016/ade20k_instance_train.json")


def test_ade20k_instance_metadata():
    meta = metadata("ade20k_instance_val")
    assert len(meta.thing_classes) == 100 and meta.thing_classes[:2] == ["bed", "windowpane"]
    assert_contiguous(meta.thing_dataset_id_to_contiguous_id, 100)
    thing_ids = [cat["id"] for cat in ADE20K_150_CATEGORIES if cat["isthing"]]
    assert [cat_id for cat_id, _ in ADE20K_INSTANCE_CATEGORIES] == thing_ids
    assert meta.evaluator_type == "coco"


def test_coco_panoptic_metadata():
    with_sem_seg = metadata("coco_2017_val_panoptic_with_sem_seg")
    assert_panoptic_split(with_sem_seg, num_classes=133, num_things=80)
    assert with_sem_seg.stuff_classes == [cat["name"] for cat in COCO_CATEGORIES]
    assert with_sem_seg.thing_classes == [cat["name"] for cat in COCO_CATEGORIES if cat["isthing"]]
    assert len(with_sem_seg.stuff_classes) - len(with_sem_seg.thing_classes) == 53
    assert (with_sem_seg.evaluator_type, with_sem_seg.ignore_label) == ("coco_panoptic_seg", 255)
    assert with_sem_seg.sem_seg_root.endswith("coco/panoptic_semseg_val2017")
    assert with_sem_seg.panoptic_root.endswith("coco/panoptic_val2017")
    assert with_sem_seg.panoptic_json.endswith("coco/annotations/panoptic_val2017.json")
    assert with_sem_seg.json_file.endswith("coco/annotations/instances_val2017.json")
    assert with_sem_seg.image_root.endswith("coco/val2017")
    # detectron2's builtin panoptic split keeps its metadata, with the 80 things as thing classes.
    builtin = metadata("coco_2017_train_panoptic")
    assert builtin.thing_classes == with_sem_seg.thing_classes
    assert (
        builtin.thing_dataset_id_to_contiguous_id == with_sem_seg.thing_dataset_id_to_contiguous_id
    )


def test_coco_stuff_metadata():
    meta = metadata("coco_2017_train_stuff_sem_seg")
    assert len(meta.stuff_classes) == 171
    assert meta.stuff_classes[0] == "person" and meta.stuff_classes[80] == "banner"
    assert_contiguous(meta.stuff_dataset_id_to_contiguous_id, 171)
    assert meta.stuff_dataset_id_to_contiguous_id[182] == 170
    assert (meta.evaluator_type, meta.ignore_label) == ("sem_seg", 255)
    assert metadata("coco_2017_test_stuff_sem_seg").image_root.endswith("coco/val2017")


def test_mapillary_vistas_metadata():
    semantic = metadata("mapillary_vistas_sem_seg_val")
    assert len(semantic.stuff_classes) == len(semantic.stuff_colors) == 65
    assert semantic.stuff_classes[0] == "Bird" and semantic.stuff_classes[-1] == "Ego Vehicle"
    assert (semantic.evaluator_type, semantic.ignore_label) == ("sem_seg", 65)
    panoptic = metadata("mapillary_vistas_panoptic_train")
    assert_panoptic_split(panoptic, num_classes=65, num_things=37)
    assert panoptic.thing_classes == panoptic.stuff_classes  # as upstream
    assert [c["id"] for c in MAPILLARY_VISTAS_CATEGORIES] == list(range(1, 66))
    assert (panoptic.evaluator_type, panoptic.ignore_label) == ("mapillary_vistas_panoptic_seg", 65)
    assert panoptic.panoptic_json.endswith("mapillary_vistas/training/panoptic/panoptic_2018.json")


def test_registered_loaders_report_missing_data():
    with pytest.raises(FileNotFoundError, match="annotations_detectron2/validation"):
        DatasetCatalog.get("ade20k_sem_seg_val")
    with pytest.raises(FileNotFoundError, match="panoptic_val2017.json"):
        DatasetCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    with pytest.raises(FileNotFoundError, match="ade20k_instance_val.json"):
        DatasetCatalog.get("ade20k_instance_val")


# ---------------------------------------------------------------- tiny on-disk layouts


def write_image(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def coco_panoptic_layout(root):
    """Two 8x8 COCO panoptic images: person (id 1) over sky (id 187); the second has no segment."""
    ids = np.zeros((8, 8), dtype=np.uint32)
    ids[:4], ids[4:] = 11, 22
    annotations = [
        {
            "image_id": 1,
            "file_name": "000000000001.png",
            "segments_info": [
                {"id": 11, "category_id": 1, "area": 32, "bbox": [0, 0, 8, 4], "iscrowd": 0},
                {"id": 22, "category_id": 187, "area": 32, "bbox": [0, 4, 8, 4], "iscrowd": 0},
            ],
        },
        {"image_id": 2, "file_name": "000000000002.png", "segments_info": []},
    ]
    for image_id in (1, 2):
        stem = f"{image_id:012d}"
        write_image(root / "images" / f"{stem}.jpg", np.zeros((8, 8, 3)))
        write_image(root / "panoptic" / f"{stem}.png", id2rgb(ids if image_id == 1 else 0 * ids))
        write_image(root / "semantic" / f"{stem}.png", np.zeros((8, 8)))
    json_file = root / "panoptic.json"
    json_file.write_text(json.dumps({"annotations": annotations, "categories": COCO_CATEGORIES}))
    return {
        "image_root": str(root / "images"),
        "panoptic_root": str(root / "panoptic"),
        "panoptic_json": str(json_file),
        "sem_seg_root": str(root / "semantic"),
        "instances_json": str(root / "instances.json"),
    }


def test_coco_panoptic_with_sem_seg_loads(tmp_path, temp_name):
    paths = coco_panoptic_layout(tmp_path)
    register_coco_panoptic_annos_sem_seg(temp_name, coco_panoptic_metadata(), **paths)

    first, empty = DatasetCatalog.get(temp_name + "_with_sem_seg")
    assert first["file_name"] == str(tmp_path / "images/000000000001.jpg")
    assert first["image_id"] == 1
    assert first["pan_seg_file_name"] == str(tmp_path / "panoptic/000000000001.png")
    assert first["sem_seg_file_name"] == str(tmp_path / "semantic/000000000001.png")
    sky = [i for i, cat in enumerate(COCO_CATEGORIES) if cat["id"] == 187][0]
    assert [(s["id"], s["category_id"], s["isthing"]) for s in first["segments_info"]] == [
        (11, 0, True),
        (22, sky, False),
    ]
    assert empty["segments_info"] == []  # images without segments are kept

    panoptic_only, _ = DatasetCatalog.get(temp_name)
    assert "sem_seg_file_name" not in panoptic_only
    assert panoptic_only["segments_info"] == first["segments_info"]
    meta = metadata(temp_name + "_with_sem_seg")
    assert meta.sem_seg_root == paths["sem_seg_root"] and meta.json_file == paths["instances_json"]
    assert metadata(temp_name).evaluator_type == "coco_panoptic_seg"


def test_coco_panoptic_replaces_thing_classes_of_registered_split(tmp_path, temp_name):
    paths = coco_panoptic_layout(tmp_path)
    standard = {
        "thing_classes": [c["name"] for c in COCO_CATEGORIES],
        "thing_colors": [c["color"] for c in COCO_CATEGORIES],
    }
    register_coco_panoptic(
        temp_name, standard, paths["image_root"], paths["panoptic_root"], paths["panoptic_json"]
    )
    register_coco_panoptic_annos_sem_seg(temp_name, coco_panoptic_metadata(), **paths)
    assert len(metadata(temp_name).thing_classes) == 80
    assert len(DatasetCatalog.get(temp_name)) == 2


def test_coco_panoptic_missing_file_is_named(tmp_path):
    paths = coco_panoptic_layout(tmp_path)
    (tmp_path / "semantic/000000000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="semantic/000000000002.png"):
        load_coco_panoptic_json(
            paths["panoptic_json"],
            paths["image_root"],
            paths["panoptic_root"],
            paths["sem_seg_root"],
            coco_panoptic_metadata(),
        )
    (tmp_path / "images/000000000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="images/000000000001.jpg"):
        load_coco_panoptic_json(
            paths["panoptic_json"],
            paths["image_root"],
            paths["panoptic_root"],
            None,
            coco_panoptic_metadata(),
        )


def test_coco_panoptic_unknown_category_is_named(tmp_path):
    paths = coco_panoptic_layout(tmp_path)
    content = json.loads((tmp_path / "panoptic.json").read_text())
    content["annotations"][0]["segments_info"][1]["category_id"] = 12  # not a COCO category
    (tmp_path / "panoptic.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"panoptic\.json.*category_id 12"):
        load_coco_panoptic_json(
            paths["panoptic_json"],
            paths["image_root"],
            paths["panoptic_root"],
            paths["sem_seg_root"],
            coco_panoptic_metadata(),
        )


def ade20k_semantic_layout(root):
    for stem in ("ADE_val_1", "ADE_val_2"):
        write_image(root / "images/validation" / f"{stem}.jpg", np.zeros((8, 8, 3)))
        write_image(root / "annotations_detectron2/validation" / f"{stem}.png", np.zeros((8, 8)))
    write_image(root / "images/validation/ADE_val_3.jpg", np.zeros((8, 8, 3)))  # unlabeled
    return {
        "image_root": str(root / "images/validation"),
        "sem_seg_root": str(root / "annotations_detectron2/validation"),
    }


def test_ade20k_semantic_loads(tmp_path, temp_name):
    paths = ade20k_semantic_layout(tmp_path)
    register_sem_seg(temp_name, stuff_classes=ADE20K_SEM_SEG_CATEGORIES, ignore_label=255, **paths)
    dicts = DatasetCatalog.get(temp_name)
    assert dicts == [
        {
            "file_name": str(tmp_path / f"images/validation/{stem}.jpg"),
            "sem_seg_file_name": str(tmp_path / f"annotations_detectron2/validation/{stem}.png"),
        }
        for stem in ("ADE_val_1", "ADE_val_2")
    ]
    assert metadata(temp_name).evaluator_type == "sem_seg"


def test_ade20k_semantic_missing_image_is_named(tmp_path, temp_name):
    paths = ade20k_semantic_layout(tmp_path)
    (tmp_path / "images/validation/ADE_val_2.jpg").unlink()
    register_sem_seg(temp_name, ignore_label=255, **paths)
    with pytest.raises(FileNotFoundError, match="images/validation/ADE_val_2.jpg"):
        DatasetCatalog.get(temp_name)


def test_every_dataset_a_config_names_is_registered():
    named = set()
    for path in (REPO / "configs").rglob("*.yaml"):
        datasets = (yaml.safe_load(path.read_text()) or {}).get("DATASETS", {})
        for key in ("TRAIN", "TEST"):
            value = datasets.get(key, ())
            named.update(ast.literal_eval(value) if isinstance(value, str) else value)
    assert {"coco_2017_train_stuff_10k_sem_seg", "coco_2017_test_stuff_10k_sem_seg"} <= named
    assert sorted(named - set(DatasetCatalog.list())) == []
