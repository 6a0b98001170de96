"""The dataset preparation scripts in datasets/, run on tiny synthetic raw datasets."""

import importlib.util
import json
import pickle
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image
from pycocotools import mask as mask_util

from mask_former.data.datasets import DatasetFileError, register_panoptic, register_sem_seg
from mask_former.data.datasets.categories import ADE20K_150_CATEGORIES
from mask_former.data.datasets.register_ade20k import ade20k_panoptic_metadata

SCRIPTS = Path(__file__).resolve().parents[1] / "datasets"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run(name, root, *extra):
    load_script(name).main(["--root", str(root), "--workers", "0", *extra])


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def write_jpg(path, height=16, width=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 128, dtype=np.uint8)).save(path)


def read(path):
    return np.asarray(Image.open(path))


@pytest.mark.parametrize(
    "script",
    [
        "prepare_ade20k_sem_seg",
        "prepare_ade20k_full_sem_seg",
        "prepare_ade20k_pan_seg",
        "prepare_ade20k_ins_seg",
        "prepare_coco_semantic_annos_from_panoptic",
        "prepare_coco_stuff_164k_sem_seg",
        "prepare_coco_stuff_10k_sem_seg",
    ],
)
def test_missing_input_is_named(script, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        run(script, tmp_path)


def test_ade20k_sem_seg_shifts_labels_and_resumes(tmp_path):
    ade = tmp_path / "ADEChallengeData2016"
    raw = np.arange(256, dtype=np.uint8).reshape(16, 16) % 151  # 0 (other) .. 150
    write_png(ade / "annotations/training/ADE_train_1.png", raw)
    write_png(ade / "annotations/validation/ADE_val_1.png", raw[::-1])

    run("prepare_ade20k_sem_seg", tmp_path)
    out = read(ade / "annotations_detectron2/training/ADE_train_1.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[raw == 0], 255)
    np.testing.assert_array_equal(out[raw > 0], raw[raw > 0] - 1)
    np.testing.assert_array_equal(
        read(ade / "annotations_detectron2/validation/ADE_val_1.png"), out[::-1]
    )

    # A rerun keeps existing outputs; --overwrite redoes them.
    done = ade / "annotations_detectron2/training/ADE_train_1.png"
    write_png(done, np.zeros((16, 16)))
    run("prepare_ade20k_sem_seg", tmp_path)
    assert read(done).max() == 0
    run("prepare_ade20k_sem_seg", tmp_path, "--overwrite")
    np.testing.assert_array_equal(read(done), out)


def test_coco_stuff_maps_raw_labels_to_171_contiguous_ids(tmp_path):
    # raw label = COCO-Stuff id - 1; 11 (id 12) is not a COCO category, 255 is unlabeled.
    raw_to_expected = {0: 0, 12: 11, 11: 255, 89: 79, 90: 255, 91: 80, 181: 170, 255: 255}
    raw = np.array(list(raw_to_expected) * 32, dtype=np.uint8).reshape(16, 16)
    for split in ("train2017", "val2017"):
        write_png(tmp_path / f"coco/stuffthingmaps/{split}/000000000001.png", raw)

    run("prepare_coco_stuff_164k_sem_seg", tmp_path)
    for split in ("train2017", "val2017"):
        out = read(tmp_path / f"coco/stuffthingmaps_detectron2/{split}/000000000001.png")
        expected = np.vectorize(raw_to_expected.get)(raw)
        np.testing.assert_array_equal(out, expected)


class FakeH5File(dict):
    """Stand-in for ``h5py.File`` (h5py is optional): the .mat "files" of these tests hold one
    array saved by ``np.save``, in HDF5's transposed layout; a file that is not one fails as h5py
    fails on a non-HDF5 file."""

    def __init__(self, path, mode="r"):
        try:
            super().__init__(S=np.load(path))
        except ValueError as e:
            raise OSError(f"Unable to open file (file signature not found): {e}") from e

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def coco_stuff_10k_layout(root, labels_of):
    """COCO-Stuff-10k v1.0 with image lists, images and .mat label maps "S" (``labels_of[name]``)."""
    folder = root / "coco/coco_stuff_10k"
    for split, names in (("train", ["COCO_train2014_000000000001"]), ("test", ["COCO_train2014_000000000002"])):
        (folder / "imageLists").mkdir(parents=True, exist_ok=True)
        (folder / "imageLists" / f"{split}.txt").write_text("".join(n + "\n" for n in names))
        for name in names:
            height, width = labels_of[name].shape
            write_jpg(folder / "images" / f"{name}.jpg", height, width)
            (folder / "annotations").mkdir(exist_ok=True)
            with open(folder / "annotations" / f"{name}.mat", "wb") as f:
                np.save(f, labels_of[name].T.astype(np.float64))  # MATLAB doubles, transposed
    return folder


@pytest.fixture
def fake_h5py(monkeypatch):
    module = type(sys)("h5py")
    module.File = FakeH5File
    monkeypatch.setitem(sys.modules, "h5py", module)
    def find_spec(name, *args):
        return object() if name == "h5py" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


real_find_spec = importlib.util.find_spec


def test_coco_stuff_10k_shifts_labels_copies_images_and_registers(tmp_path, fake_h5py):
    raw = np.arange(16 * 12).reshape(16, 12) % 173 + 1  # 1 (unlabeled) .. 173 -> wrapped below
    raw[raw == 173] = 1
    other = np.full((8, 10), 2)
    folder = coco_stuff_10k_layout(
        tmp_path, {"COCO_train2014_000000000001": raw, "COCO_train2014_000000000002": other}
    )
    run("prepare_coco_stuff_10k_sem_seg", tmp_path)
    out = read(folder / "annotations_detectron2/train/COCO_train2014_000000000001.png")
    assert out.dtype == np.uint8 and out.shape == (16, 12)
    np.testing.assert_array_equal(out[raw == 1], 255)
    np.testing.assert_array_equal(out[raw > 1], raw[raw > 1] - 2)
    np.testing.assert_array_equal(read(folder / "annotations_detectron2/test/COCO_train2014_000000000002.png"), 0)
    assert read(folder / "images_detectron2/test/COCO_train2014_000000000002.jpg").shape == (8, 10, 3)

    # The registered split reads those folders (under the datasets root).
    meta = MetadataCatalog.get("coco_2017_test_stuff_10k_sem_seg")
    assert meta.image_root.endswith("coco/coco_stuff_10k/images_detectron2/test")
    assert meta.sem_seg_root.endswith("coco/coco_stuff_10k/annotations_detectron2/test")
    name = f"test_{uuid.uuid4().hex}"
    register_sem_seg(
        name, image_root=str(folder / "images_detectron2/test"),
        sem_seg_root=str(folder / "annotations_detectron2/test"), ignore_label=255,
    )
    dicts = DatasetCatalog.get(name)
    DatasetCatalog.remove(name)
    assert dicts == [{
        "file_name": str(folder / "images_detectron2/test/COCO_train2014_000000000002.jpg"),
        "sem_seg_file_name": str(folder / "annotations_detectron2/test/COCO_train2014_000000000002.png"),
    }]
    meta = MetadataCatalog.get("coco_2017_train_stuff_10k_sem_seg")
    assert (len(meta.stuff_classes), meta.ignore_label, meta.evaluator_type) == (171, 255, "sem_seg")
    assert meta.stuff_classes[170] == "wood" and meta.stuff_dataset_id_to_contiguous_id[182] == 170


@pytest.mark.parametrize(
    "case, labels, message",
    [
        ("label out of range", np.array([[0, 2], [174, 1]]), r"000001\.mat: key 'S': labels \[0\.0, 174\.0\]"),
        ("size differs from its image", None, r"000001\.mat: key 'S': label map is 2x2 \(WxH\).* is 3x2"),
    ],
)
def test_coco_stuff_10k_bad_annotations_are_named(tmp_path, fake_h5py, case, labels, message):
    folder = coco_stuff_10k_layout(
        tmp_path, {"COCO_train2014_000000000001": np.full((2, 3), 2), "COCO_train2014_000000000002": np.full((2, 2), 2)}
    )
    labels = np.full((2, 2), 2) if labels is None else labels
    with open(folder / "annotations/COCO_train2014_000000000001.mat", "wb") as f:
        np.save(f, labels.T.astype(np.float64))
    with pytest.raises(DatasetFileError, match=message):
        run("prepare_coco_stuff_10k_sem_seg", tmp_path)


def test_coco_stuff_10k_rejects_a_non_hdf5_annotation(tmp_path, fake_h5py):
    folder = coco_stuff_10k_layout(
        tmp_path, {"COCO_train2014_000000000001": np.full((2, 2), 2), "COCO_train2014_000000000002": np.full((2, 2), 2)}
    )
    (folder / "annotations/COCO_train2014_000000000001.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    with pytest.raises(DatasetFileError, match=r"000001\.mat: is not a MATLAB v7\.3 \(HDF5\) file"):
        run("prepare_coco_stuff_10k_sem_seg", tmp_path)


def test_coco_stuff_10k_without_h5py_names_it(tmp_path, monkeypatch):
    coco_stuff_10k_layout(
        tmp_path, {"COCO_train2014_000000000001": np.full((2, 2), 2), "COCO_train2014_000000000002": np.full((2, 2), 2)}
    )
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match="pip install h5py"):
        run("prepare_coco_stuff_10k_sem_seg", tmp_path)


def _coco_panoptic_split(tmp_path, split, segments):
    """A 16x16 panoptic PNG with one segment per row band, and its json."""
    ids = np.zeros((16, 16), dtype=np.uint32)
    for band, segment in enumerate(segments):
        ids[band * 4 : band * 4 + 4] = segment["id"]
    write_png(tmp_path / f"coco/panoptic_{split}/000000000001.png", id2rgb(ids))
    annotation = {"image_id": 1, "file_name": "000000000001.png", "segments_info": segments}
    json_file = tmp_path / f"coco/annotations/panoptic_{split}.json"
    json_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps({"annotations": [annotation], "categories": COCO_CATEGORIES}))
    return json_file


def test_coco_semantic_from_panoptic(tmp_path):
    contiguous = {cat["id"]: i for i, cat in enumerate(COCO_CATEGORIES)}
    segments = [
        {"id": 5, "category_id": 1},
        {"id": 300, "category_id": 200},
        {"id": 70000, "category_id": 92},
    ]
    for split in ("train2017", "val2017"):
        _coco_panoptic_split(tmp_path, split, segments)

    run("prepare_coco_semantic_annos_from_panoptic", tmp_path)
    out = read(tmp_path / "coco/panoptic_semseg_val2017/000000000001.png")
    assert out.dtype == np.uint8
    for band, segment in enumerate(segments):
        np.testing.assert_array_equal(
            out[band * 4 : band * 4 + 4], contiguous[segment["category_id"]]
        )
    np.testing.assert_array_equal(out[12:], 255)  # no segment there
    assert (tmp_path / "coco/panoptic_semseg_train2017/000000000001.png").is_file()


def test_coco_semantic_from_panoptic_names_unknown_category(tmp_path):
    for split in ("train2017", "val2017"):
        json_file = _coco_panoptic_split(tmp_path, split, [{"id": 5, "category_id": 12}])
    with pytest.raises(ValueError, match=r"panoptic_val2017\.json.*category_id 12"):
        run("prepare_coco_semantic_annos_from_panoptic", tmp_path)
    assert json_file.is_file()


def _ade_full_seg(object_ids):
    """An ADE20K-Full *_seg.png encoding object ids as R // 10 * 256 + G."""
    seg = np.zeros(object_ids.shape + (3,), dtype=np.uint8)
    seg[..., 0] = object_ids // 256 * 10 + 3  # the ones digit of R carries no class information
    seg[..., 1] = object_ids % 256
    return seg


def test_ade20k_full_maps_object_ids_and_resizes(tmp_path):
    ade = tmp_path / "ADE20K_2021_17_01"
    folder = "ADE20K_2021_17_01/images/ADE/training/home"
    object_ids = np.array([[2978, 165], [5, 3148]]).repeat(8, axis=0).repeat(8, axis=1)  # 16x16
    write_jpg(tmp_path / folder / "ADE_train_00000001.jpg")
    write_png(tmp_path / folder / "ADE_train_00000001_seg.png", _ade_full_seg(object_ids))
    large_ids = np.full((520, 1040), 2978)
    write_jpg(tmp_path / folder / "ADE_val_00000002.jpg", 520, 1040)
    write_png(tmp_path / folder / "ADE_val_00000002_seg.png", _ade_full_seg(large_ids))
    with open(ade / "index_ade20k.pkl", "wb") as f:
        pickle.dump(
            {
                "folder": [folder, folder],
                "filename": ["ADE_train_00000001.jpg", "ADE_val_00000002.jpg"],
            },
            f,
        )

    run("prepare_ade20k_full_sem_seg", tmp_path)
    label = read(ade / "annotations_detectron2/training/ADE_train_00000001.tif")
    assert label.dtype == np.uint16
    # wall (2978) -> 0, bed (165) -> 7, adding machine (3148) -> 846, unlisted id 5 -> 65535
    np.testing.assert_array_equal(label[::8, ::8], [[0, 7], [65535, 846]])
    assert read(ade / "images_detectron2/training/ADE_train_00000001.jpg").shape == (16, 16, 3)

    # Short side 520 > 512: resized to 512 x 1024.
    assert read(ade / "images_detectron2/validation/ADE_val_00000002.jpg").shape == (512, 1024, 3)
    large = read(ade / "annotations_detectron2/validation/ADE_val_00000002.tif")
    assert large.shape == (512, 1024) and (large == 0).all()


def _ade_instance_layout(tmp_path, split="training", stem="ADE_train_1"):
    """16x16 ADE20K raw image, semantic and instance labels.

    Semantic: top half wall (raw 1), bottom-left sky (raw 3), bottom-right bed (raw 8, a thing).
    Instances: a bed (instance class 1) on rows 8..15, columns 8..15, and a person (class 4) on
    rows 0..3, columns 0..3, over the wall.
    """
    ade = tmp_path / "ADEChallengeData2016"
    write_jpg(ade / f"images/{split}/{stem}.jpg")
    semantic = np.ones((16, 16), dtype=np.uint8)
    semantic[8:, :8], semantic[8:, 8:] = 3, 8
    write_png(ade / f"annotations/{split}/{stem}.png", semantic)
    instance = np.zeros((16, 16, 3), dtype=np.uint8)
    instance[8:, 8:] = (1, 1, 0)
    instance[:4, :4] = (4, 2, 0)
    write_png(ade / f"annotations_instance/{split}/{stem}.png", instance)
    return ade


def test_ade20k_panoptic(tmp_path):
    ade = _ade_instance_layout(tmp_path)
    _ade_instance_layout(tmp_path, "validation", "ADE_val_1")

    run("prepare_ade20k_pan_seg", tmp_path)
    panoptic = json.loads((ade / "ade20k_panoptic_train.json").read_text())
    assert len(panoptic["categories"]) == 150
    assert panoptic["images"] == [
        {"id": "ADE_train_1", "file_name": "ADE_train_1.jpg", "width": 16, "height": 16}
    ]
    (annotation,) = panoptic["annotations"]
    assert annotation["file_name"] == "ADE_train_1.png"
    segments = {seg["category_id"]: seg for seg in annotation["segments_info"]}
    # wall (0) loses the person's 16 pixels; sky (2); bed (7) and person (12) are things.
    assert {cid: seg["area"] for cid, seg in segments.items()} == {0: 112, 2: 64, 7: 64, 12: 16}
    assert segments[12]["bbox"] == [0, 0, 4, 4] and segments[7]["bbox"] == [8, 8, 8, 8]
    ids = rgb2id(read(ade / "ade20k_panoptic_train/ADE_train_1.png").astype(np.uint32))
    assert (ids[:4, :4] == segments[12]["id"]).all() and (ids[8:, :8] == segments[2]["id"]).all()

    # The registered loader reads these outputs (prepare_ade20k_sem_seg makes the semantic labels).
    run("prepare_ade20k_sem_seg", tmp_path)
    name = f"test_ade20k_panoptic_{uuid.uuid4().hex}"
    register_panoptic(
        name,
        ade20k_panoptic_metadata(),
        image_root=str(ade / "images/training"),
        panoptic_root=str(ade / "ade20k_panoptic_train"),
        panoptic_json=str(ade / "ade20k_panoptic_train.json"),
        sem_seg_root=str(ade / "annotations_detectron2/training"),
        instances_json=None,
        evaluator_type="ade20k_panoptic_seg",
    )
    try:
        (record,) = DatasetCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert record["image_id"] == "ADE_train_1"
    assert {(s["category_id"], s["isthing"]) for s in record["segments_info"]} == {
        (0, False),
        (2, False),
        (7, True),
        (12, True),
    }


def test_ade20k_instances(tmp_path):
    ade = _ade_instance_layout(tmp_path)
    _ade_instance_layout(tmp_path, "validation", "ADE_val_1")

    run("prepare_ade20k_ins_seg", tmp_path)
    instances = json.loads((ade / "ade20k_instance_train.json").read_text())
    assert len(instances["categories"]) == 100
    assert {c["id"] for c in instances["categories"]} == {
        c["id"] for c in ADE20K_150_CATEGORIES if c["isthing"]
    }
    annotations = {ann["category_id"]: ann for ann in instances["annotations"]}
    assert sorted(annotations) == [7, 12]
    assert sorted(ann["id"] for ann in instances["annotations"]) == [1, 2]
    person = annotations[12]
    assert person["image_id"] == "ADE_train_1" and person["area"] == 16
    assert person["bbox"] == [0, 0, 4, 4]
    expected = np.zeros((16, 16), dtype=np.uint8)
    expected[:4, :4] = 1
    np.testing.assert_array_equal(mask_util.decode(person["segmentation"]), expected)


def test_ade20k_instances_rejects_unknown_instance_class(tmp_path):
    ade = _ade_instance_layout(tmp_path)
    _ade_instance_layout(tmp_path, "validation", "ADE_val_1")
    instance = np.zeros((16, 16, 3), dtype=np.uint8)
    instance[:2, :2] = (101, 1, 0)
    write_png(ade / "annotations_instance/training/ADE_train_1.png", instance)
    with pytest.raises(
        ValueError, match=r"ADE_train_1\.png: instance 1 has instance classes \[101\]"
    ):
        run("prepare_ade20k_ins_seg", tmp_path)


def test_worker_processes_give_the_same_outputs(tmp_path):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    for root in (serial, parallel):
        for i in range(3):
            _ade_instance_layout(root, "training", f"ADE_train_{i}")
        _ade_instance_layout(root, "validation", "ADE_val_1")
    run("prepare_ade20k_pan_seg", serial)
    run("prepare_ade20k_pan_seg", parallel, "--workers", "2")
    json_name = "ADEChallengeData2016/ade20k_panoptic_train.json"
    assert (parallel / json_name).read_text() == (serial / json_name).read_text()


def test_coco_semantic_from_panoptic_names_a_malformed_json(tmp_path):
    json_file = _coco_panoptic_split(tmp_path, "train2017", [])
    _coco_panoptic_split(tmp_path, "val2017", [])
    json_file.write_text('{"annotations": [{"image_id": 1}]}')
    with pytest.raises(DatasetFileError, match=r"panoptic_train2017\.json: annotation 0: key 'file_name': is missing"):
        run("prepare_coco_semantic_annos_from_panoptic", tmp_path)
