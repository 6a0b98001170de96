"""The built-in demo dataset: generation, formats, registration, mappers and real evaluators."""
import hashlib
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator
from detectron2.structures import BitMasks, Instances
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools.coco import COCO

from mask_former.config import add_maskformer2_config
from mask_former.data.dataset_mappers import build_dataset_mapper
from mask_former.data.demo_dataset import (
    DEMO_CATEGORIES,
    DEMO_DATASET_NAMES,
    demo_dataset_root,
    ensure_demo_dataset,
    generate_demo_dataset,
    register_demo_datasets,
)

NUM_TRAIN, NUM_VAL = 8, 4
DEFAULT_ROOT = demo_dataset_root()
SPLIT_SIZES = {"train": NUM_TRAIN, "val": NUM_VAL}
IGNORE = 255


def tiny(root, **options):
    return generate_demo_dataset(str(root), num_train=NUM_TRAIN, num_val=NUM_VAL, **options)


def file_digests(root):
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def generated_root(tmp_path_factory):
    return tiny(tmp_path_factory.mktemp("demo") / "demo_shapes")


@pytest.fixture
def demo_root(generated_root):
    """The tiny demo dataset, registered under the demo_shapes_* names during the test."""
    register_demo_datasets(generated_root)
    yield generated_root
    register_demo_datasets(DEFAULT_ROOT)


def read_panoptic(root, split):
    with open(os.path.join(root, "annotations", f"panoptic_{split}.json")) as f:
        return json.load(f)


def read_png(root, folder, split, file_name):
    return np.array(Image.open(os.path.join(root, folder, split, file_name)))


def split_of(name):
    return "train" if "_train" in name else "val"


# ---------------------------------------------------------------------------------------------
# Generation.


def test_generation_writes_every_file(demo_root):
    for split, count in SPLIT_SIZES.items():
        for folder, extension in (("images", ".jpg"), ("panoptic", ".png"), ("semantic", ".png")):
            names = sorted(os.listdir(os.path.join(demo_root, folder, split)))
            assert names == [f"{i:06d}{extension}" for i in range(1, count + 1)]
        panoptic = read_panoptic(demo_root, split)
        assert len(panoptic["images"]) == len(panoptic["annotations"]) == count
    assert os.path.isfile(os.path.join(demo_root, "manifest.json"))


def test_generation_is_deterministic(tmp_path, demo_root):
    assert file_digests(tiny(tmp_path / "again")) == file_digests(demo_root)
    assert file_digests(tiny(tmp_path / "other", seed=1)) != file_digests(demo_root)


def test_complete_dataset_is_not_regenerated_unless_forced(tmp_path):
    root = tiny(tmp_path / "demo")
    image = os.path.join(root, "images", "train", "000001.jpg")
    os.remove(image)  # a regeneration would bring it back
    tiny(root)
    assert not os.path.exists(image)
    ensure_demo_dataset(root)
    assert not os.path.exists(image)
    tiny(root, force=True)
    assert os.path.exists(image)


def test_other_settings_replace_an_earlier_demo_dataset(tmp_path):
    root = tiny(tmp_path / "demo")
    generate_demo_dataset(root, num_train=3, num_val=2)
    assert len(os.listdir(os.path.join(root, "images", "train"))) == 3


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a demo shapes dataset"):
        tiny(tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_bad_settings_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="num_train=0"):
        generate_demo_dataset(str(tmp_path / "demo"), num_train=0)


# ---------------------------------------------------------------------------------------------
# File formats.


@pytest.mark.parametrize("split", ["train", "val"])
def test_panoptic_pngs_match_json_and_semantic_pngs(demo_root, split):
    panoptic = read_panoptic(demo_root, split)
    assert panoptic["categories"] == [
        {**c, "supercategory": "shape" if c["isthing"] else "background"} for c in DEMO_CATEGORIES
    ]
    contiguous = {c["id"]: i for i, c in enumerate(DEMO_CATEGORIES)}
    images = {image["id"]: image for image in panoptic["images"]}
    for annotation in panoptic["annotations"]:
        ids = rgb2id(read_png(demo_root, "panoptic", split, annotation["file_name"]))
        sem_seg = read_png(demo_root, "semantic", split, annotation["file_name"])
        image = images[annotation["image_id"]]
        assert ids.shape == sem_seg.shape == (image["height"], image["width"])
        segments = annotation["segments_info"]
        assert set(np.unique(ids)) - {0} == {s["id"] for s in segments}
        for segment in segments:
            mask = ids == segment["id"]
            ys, xs = np.nonzero(mask)
            assert segment["area"] == mask.sum()
            assert segment["bbox"] == [xs.min(), ys.min(), xs.ptp() + 1, ys.ptp() + 1]
            assert (sem_seg[mask] == contiguous[segment["category_id"]]).all()
        assert (sem_seg[ids == 0] == IGNORE).all()


@pytest.mark.parametrize("split", ["train", "val"])
def test_instance_json_loads_with_pycocotools(demo_root, split):
    coco = COCO(os.path.join(demo_root, "annotations", f"instances_{split}.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["circle", "square", "triangle"]
    assert len(coco.getImgIds()) == SPLIT_SIZES[split]
    panoptic = {a["image_id"]: a for a in read_panoptic(demo_root, split)["annotations"]}
    for annotation in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(annotation).astype(bool)
        assert annotation["iscrowd"] == 0 and annotation["area"] == mask.sum()
        assert mask_util.toBbox(coco.annToRLE(annotation)).tolist() == annotation["bbox"]
        image = panoptic[annotation["image_id"]]
        ids = rgb2id(read_png(demo_root, "panoptic", split, image["file_name"]))
        # Every instance is a thing segment of the panoptic annotation, pixel for pixel.
        assert any(
            (ids == s["id"]).sum() == mask.sum() and (ids[mask] == s["id"]).all()
            for s in image["segments_info"]
            if s["category_id"] == annotation["category_id"]
        )


# ---------------------------------------------------------------------------------------------
# Registration.


def test_registration_reads_no_disk_and_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "nowhere"))
    try:
        register_demo_datasets()
        metadata = MetadataCatalog.get("demo_shapes_instance_val")
        assert metadata.json_file.startswith(str(tmp_path / "nowhere" / "demo_shapes"))
        assert not (tmp_path / "nowhere").exists()
    finally:
        register_demo_datasets(DEFAULT_ROOT)


@pytest.mark.parametrize("name", DEMO_DATASET_NAMES)
def test_datasets_load_through_the_catalog(demo_root, name):
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == SPLIT_SIZES[split_of(name)]
    assert all(d["file_name"].startswith(str(demo_root)) for d in dicts)
    metadata = MetadataCatalog.get(name)
    if "sem_seg" in name:
        assert metadata.ignore_label == IGNORE and len(metadata.stuff_classes) == 6
    if "panoptic" in name:
        assert metadata.evaluator_type == "coco_panoptic_seg"
        assert metadata.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
        assert metadata.stuff_dataset_id_to_contiguous_id == {i: i - 1 for i in range(1, 7)}
        assert ("sem_seg_file_name" in dicts[0]) == name.endswith("_with_sem_seg")
    if "instance" in name:
        assert metadata.evaluator_type == "coco"
        assert metadata.thing_classes == ["circle", "square", "triangle"]


def test_loading_generates_a_missing_dataset(tmp_path):
    root = str(tmp_path / "fresh")
    register_demo_datasets(root)
    try:
        assert len(DatasetCatalog.get("demo_shapes_sem_seg_val")) == 48  # the default size
    finally:
        register_demo_datasets(DEFAULT_ROOT)


# ---------------------------------------------------------------------------------------------
# Mappers and evaluators on the demo datasets.


@pytest.mark.parametrize(
    "mapper_name, dataset_name, num_classes",
    [
        ("mask_former_semantic", "demo_shapes_sem_seg_train", 6),
        ("mask_former_panoptic", "demo_shapes_panoptic_train", 6),
        ("mask_former_panoptic", "demo_shapes_panoptic_train_with_sem_seg", 6),
        ("mask_former_instance", "demo_shapes_instance_train", 3),
        ("coco_instance_lsj", "demo_shapes_instance_train", 3),
        ("coco_panoptic_lsj", "demo_shapes_panoptic_train_with_sem_seg", 6),
    ],
)
def test_every_mapper_maps_the_demo_datasets(demo_root, mapper_name, dataset_name, num_classes):
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.DATASETS.TRAIN = (dataset_name,)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper_name
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TRAIN = (96, 128)
    cfg.INPUT.MAX_SIZE_TRAIN = 256
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (96, 96)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.8
    cfg.INPUT.SIZE_DIVISIBILITY = 96
    cfg.INPUT.COLOR_AUG_SSD = True
    cfg.INPUT.IMAGE_SIZE = 128
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    mapper = build_dataset_mapper(cfg)
    for dataset_dict in DatasetCatalog.get(dataset_name)[:4]:
        out = mapper(dataset_dict)
        size = 128 if mapper_name.endswith("lsj") else 96
        assert out["image"].shape == (3, size, size) and out["image"].dtype == torch.uint8
        instances = out["instances"]
        assert instances.gt_masks.shape == (len(instances), size, size)
        assert instances.gt_classes.lt(num_classes).all()
        if "sem_seg" in out:
            assert out["sem_seg"].shape == (size, size)


def perfect_semantic_prediction(dataset_dict):
    """One-hot scores of the label map (ignored pixels: any class, the evaluator skips them)."""
    labels = np.array(Image.open(dataset_dict["sem_seg_file_name"])).astype(np.int64)
    num_classes = len(DEMO_CATEGORIES)
    labels = torch.from_numpy(labels).clamp(max=num_classes - 1)
    scores = torch.nn.functional.one_hot(labels, num_classes)
    return {"sem_seg": scores.permute(2, 0, 1).float()}


def perfect_panoptic_prediction(dataset_dict):
    ids = rgb2id(np.array(Image.open(dataset_dict["pan_seg_file_name"])))
    segments = [
        {"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]}
        for s in dataset_dict["segments_info"]
    ]
    return {"panoptic_seg": (torch.from_numpy(ids.astype(np.int32)), segments)}


def instances_prediction(height, width, masks, classes):
    instances = Instances((height, width))
    instances.pred_masks = (
        torch.from_numpy(np.stack(masks))
        if masks
        else torch.zeros((0, height, width), dtype=torch.bool)
    )
    instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
    instances.scores = torch.ones(len(classes))
    instances.pred_boxes = BitMasks(instances.pred_masks).get_bounding_boxes()
    return {"instances": instances}


def perfect_instance_prediction(dataset_dict):
    """From an instance dataset's dict (RLE annotations)."""
    masks = [mask_util.decode(a["segmentation"]).astype(bool) for a in dataset_dict["annotations"]]
    classes = [a["category_id"] for a in dataset_dict["annotations"]]
    return instances_prediction(dataset_dict["height"], dataset_dict["width"], masks, classes)


def perfect_instance_prediction_from_panoptic(dataset_dict):
    ids = rgb2id(np.array(Image.open(dataset_dict["pan_seg_file_name"])))
    things = [s for s in dataset_dict["segments_info"] if s["isthing"]]
    masks = [ids == s["id"] for s in things]
    return instances_prediction(*ids.shape, masks, [s["category_id"] for s in things])


def evaluate(evaluator, dataset_name, predict):
    evaluator.reset()
    for dataset_dict in DatasetCatalog.get(dataset_name):
        evaluator.process([dataset_dict], [predict(dataset_dict)])
    return evaluator.evaluate()


def test_real_evaluators_score_the_ground_truth_perfectly(demo_root, tmp_path):
    semantic = evaluate(
        SemSegEvaluator("demo_shapes_sem_seg_val", distributed=False),
        "demo_shapes_sem_seg_val",
        perfect_semantic_prediction,
    )
    assert semantic["sem_seg"]["mIoU"] == pytest.approx(100.0)

    panoptic_name = "demo_shapes_panoptic_val_with_sem_seg"
    panoptic = evaluate(
        COCOPanopticEvaluator(panoptic_name, output_dir=str(tmp_path)),
        panoptic_name,
        perfect_panoptic_prediction,
    )
    assert panoptic["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    semantic_of_panoptic = evaluate(
        SemSegEvaluator(panoptic_name, distributed=False),
        panoptic_name,
        perfect_semantic_prediction,
    )
    assert semantic_of_panoptic["sem_seg"]["mIoU"] == pytest.approx(100.0)
    mask_ap_of_panoptic = evaluate(
        COCOEvaluator(panoptic_name, tasks=("segm",), distributed=False, use_fast_impl=False),
        panoptic_name,
        perfect_instance_prediction_from_panoptic,
    )
    assert mask_ap_of_panoptic["segm"]["AP"] == pytest.approx(100.0)

    instance = evaluate(
        COCOEvaluator(
            "demo_shapes_instance_val", tasks=("segm",), distributed=False, use_fast_impl=False
        ),
        "demo_shapes_instance_val",
        perfect_instance_prediction,
    )
    assert instance["segm"]["AP"] == pytest.approx(100.0)
