"""Your own data without code: dataset description files in the three formats (over the demo
dataset's files), train_net.py / demo/demo.py --dataset end to end, the config checks against
the description, and the named errors for inconsistent descriptions and data."""
import importlib.util
import json
import logging
import os
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from conftest import REPO
from mask_former.data.datasets.custom import (
    DatasetDescriptionError,
    check_config,
    config_overrides,
    load_dataset_description,
    register_dataset_description,
)
from mask_former.data.datasets.custom_validation import validate_dataset
from mask_former.data.demo_dataset import DEMO_CATEGORIES, generate_demo_dataset
from mask_former.engine import build_evaluator
from mask_former.engine import main as train_net  # what train_net.py runs
from test_train_net import PYTHON, final_metrics, task_cfg

SPLITS = ("train", "val")

# format -> (the split paths of the demo dataset in that format, task_cfg's task, metrics it reports)
FORMATS = {
    "semantic": (
        lambda s: {"images": f"images/{s}", "semantic": f"semantic/{s}"},
        "semantic",
        ["sem_seg/mIoU"],
    ),
    "coco_instance": (
        lambda s: {"images": f"images/{s}", "instances_json": f"annotations/instances_{s}.json"},
        "instance",
        ["segm/AP"],
    ),
    "coco_panoptic": (
        lambda s: {
            "images": f"images/{s}",
            "panoptic_json": f"annotations/panoptic_{s}.json",
            "panoptic_root": f"panoptic/{s}",
            "semantic": f"semantic/{s}",
            "instances_json": f"annotations/instances_{s}.json",
        },
        "panoptic",
        ["panoptic_seg/PQ", "sem_seg/mIoU", "segm/AP"],
    ),
}


def write_description(root, dataset_format, file_stem=None, **changes):
    """A description file of the demo dataset at ``root`` in ``dataset_format``, written in ``root``
    as ``<file_stem or name>.yaml``."""
    split_paths = FORMATS[dataset_format][0]
    description = {
        "name": f"my_{dataset_format}",
        "format": dataset_format,
        "splits": {split: split_paths(split) for split in SPLITS},
    }
    if dataset_format == "semantic":
        description["classes"] = [c["name"] for c in DEMO_CATEGORIES]
    description.update(changes)
    path = os.path.join(root, f"{file_stem or description['name']}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(description, f, sort_keys=False)
    return path


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom") / "shapes"
    generate_demo_dataset(str(root), num_train=8, num_val=3, image_size=(48, 64))
    return root


@pytest.fixture
def data_copy(demo_files, tmp_path):
    """A copy of the demo files that a test may break."""
    return shutil.copytree(demo_files, tmp_path / "shapes")


def load_script(path):
    """The module of a script of the repository, for running its main() in this process."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unregister(description_file):
    description = load_dataset_description(description_file)
    for name in map(description.dataset_name, description.splits):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def run_train_net(argv, in_subprocess):
    """train_net.py in a subprocess, or the ``main`` its worker processes run, in this process and
    with none of the described splits registered (``main`` must register them itself)."""
    if in_subprocess:
        result = subprocess.run([PYTHON, "train_net.py", *argv], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return
    args = train_net.argument_parser().parse_args(argv)
    for description_file in args.dataset:
        unregister(description_file)
    train_net.main(args)


def run_demo(argv, in_subprocess):
    if in_subprocess:
        result = subprocess.run([PYTHON, "demo/demo.py", *argv], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        assert load_script(REPO / "demo" / "demo.py").main(argv) == 0


# format -> whether train_net.py and demo.py run in subprocesses: each starts a fresh Python (5 s
# or more), so the suite runs one of each and the rest in this process.
IN_SUBPROCESS = {"semantic": (False, False), "coco_instance": (True, False), "coco_panoptic": (True, True)}


@pytest.mark.parametrize("dataset_format", sorted(FORMATS))
def test_train_evaluate_and_demo_from_a_description_file(demo_files, tmp_path, dataset_format):
    _, task, expected_metrics = FORMATS[dataset_format]
    train_in_subprocess, demo_in_subprocess = IN_SUBPROCESS[dataset_format]
    description_file = write_description(str(demo_files), dataset_format)
    overrides = config_overrides(load_dataset_description(description_file))
    config = tmp_path / "config.yaml"
    config.write_text(task_cfg(task, tmp_path / "out").dump())
    run_train_net(
        ["--config-file", str(config), "--dataset", description_file, *overrides, "SOLVER.MAX_ITER", "2"],
        train_in_subprocess,
    )
    metrics = final_metrics(tmp_path / "out")
    for key in expected_metrics:
        assert 0.0 <= metrics[key] <= 100.0, (key, metrics)

    drawing = tmp_path / "drawing.png"
    run_demo(
        ["--config-file", str(config), "--dataset", description_file,
         "--input", str(demo_files / "images" / "val" / "000001.jpg"), "--output", str(drawing),
         "--opts", *overrides, "MODEL.WEIGHTS", str(tmp_path / "out" / "model_final.pth")],
        demo_in_subprocess,
    )
    assert Image.open(drawing).size == (64, 48)


@pytest.mark.parametrize("dataset_format", sorted(FORMATS))
def test_registration_gives_complete_metadata(demo_files, dataset_format):
    description = register_dataset_description(write_description(str(demo_files), dataset_format))
    assert description.num_classes == {"semantic": 6, "coco_instance": 3, "coco_panoptic": 6}[dataset_format]
    records = DatasetCatalog.get(description.dataset_name("val"))
    assert len(records) == 3
    assert validate_dataset(description) == {"train": [], "val": []}


def test_config_must_fit_the_description(demo_files):
    description = register_dataset_description(write_description(str(demo_files), "semantic"))
    cfg = task_cfg("semantic", "unused")
    cfg.merge_from_list(config_overrides(description))
    check_config(cfg)
    for key, value, message in [
        ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5, "NUM_CLASSES is 5 but dataset 'my_semantic_train'.*has 6 classes"),
        ("INPUT.DATASET_MAPPER_NAME", "mask_former_panoptic", "DATASET_MAPPER_NAME is 'mask_former_panoptic'"),
        ("MODEL.MASK_FORMER.TEST.PANOPTIC_ON", True, "PANOPTIC_ON is on .* no thing classes"),
    ]:
        wrong = cfg.clone()
        wrong.merge_from_list([key, value])
        with pytest.raises(DatasetDescriptionError, match=message):
            check_config(wrong)


def test_train_net_reports_a_num_classes_mismatch_before_starting(demo_files, tmp_path, capsys):
    description_file = write_description(str(demo_files), "coco_instance")
    config = tmp_path / "config.yaml"
    config.write_text(task_cfg("instance", tmp_path / "out").dump())
    overrides = config_overrides(load_dataset_description(description_file))
    args = ["--config-file", str(config), "--dataset", description_file, *overrides]
    assert train_net.cli(args + ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "80"]) == 2
    error = capsys.readouterr().err
    assert "NUM_CLASSES is 80" in error and "my_coco_instance.yaml" in error and "NUM_CLASSES 3" in error
    assert train_net.cli(args[:2] + ["--dataset", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err
    unregister(description_file)
    assert train_net.cli(args[:2] + overrides) == 2
    assert "names 'my_coco_instance_train', which is not a registered dataset: pass" in capsys.readouterr().err


@pytest.mark.parametrize(
    "dataset_format, changes, message",
    [
        ("semantic", {"format": "pascal_voc"}, "'format' is 'pascal_voc'"),
        ("semantic", {"classes": []}, "'classes' must be a non-empty list"),
        ("semantic", {"classes": ["sky", "sky"]}, "'sky' appears twice"),
        ("semantic", {"splits": {"train": {"images": "images/train"}}}, r"splits.train: missing keys \['semantic'\]"),
        ("semantic", {"num_classes": 6}, r"unknown keys \['num_classes'\]"),
        ("coco_instance", {"classes": ["circle"]}, "reads them from the json"),
        ("coco_instance", {"name": "my data"}, "'name' must be"),
        (
            "coco_panoptic",
            {"splits": {"train": {"images": "images/train", "panoptic_json": "missing.json", "panoptic_root": "p"}}},
            "splits.train.panoptic_json .*missing.json does not exist",
        ),
    ],
)
def test_description_errors_name_the_file_and_key(demo_files, dataset_format, changes, message):
    path = write_description(str(demo_files), dataset_format, "broken", **changes)
    with pytest.raises(DatasetDescriptionError, match=message) as error:
        load_dataset_description(path)
    assert "broken.yaml" in str(error.value)


def edit_json(path, edit):
    with open(path) as f:
        content = json.load(f)
    edit(content)
    with open(path, "w") as f:
        json.dump(content, f)


def test_splits_must_list_the_same_categories(data_copy):
    edit_json(data_copy / "annotations" / "instances_val.json", lambda c: c["categories"].pop())
    with pytest.raises(DatasetDescriptionError, match="categories of splits.val.instances_json differ"):
        load_dataset_description(write_description(str(data_copy), "coco_instance"))


def problems_of(root, dataset_format):
    return validate_dataset(register_dataset_description(write_description(str(root), dataset_format)))


def test_semantic_data_problems_are_named(data_copy):
    (data_copy / "images" / "val" / "000002.jpg").unlink()
    label = data_copy / "semantic" / "train" / "000001.png"
    Image.fromarray(np.full((48, 64), 9, dtype=np.uint8)).save(label)
    Image.fromarray(np.zeros((40, 64), dtype=np.uint8)).save(data_copy / "semantic" / "train" / "000002.png")
    Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8)).save(data_copy / "semantic" / "train" / "000003.png")
    problems = problems_of(data_copy, "semantic")
    assert len(problems["val"]) == 1 and "images/val/000002.jpg" in problems["val"][0]
    assert "does not exist" in problems["val"][0]
    train = "\n".join(problems["train"])
    assert f"{label}: label values [9] are neither class ids 0..5 nor ignore_label 255" in train
    assert "000002.png: size 64x40 differs from its image" in train
    assert "000003.png: a RGB image; semantic labels are single-channel" in train


def test_panoptic_data_problems_are_named(data_copy):
    def break_annotations(content):
        first, second = content["annotations"][:2]
        first["segments_info"][0]["category_id"] = 42
        second["segments_info"].append(dict(second["segments_info"][0]))

    edit_json(data_copy / "annotations" / "panoptic_train.json", break_annotations)
    edit_json(data_copy / "annotations" / "panoptic_val.json", lambda c: c["annotations"][0]["segments_info"].pop())
    problems = problems_of(data_copy, "coco_panoptic")
    assert len(problems["train"]) == 1
    expected = "panoptic_train.json: segment 1 of 000001.png has category_id 42, not in 'categories'"
    assert expected in problems["train"][0]
    assert any("but not in segments_info" in p and "panoptic/val/000001.png" in p for p in problems["val"])


def test_instance_data_problems_are_named(data_copy):
    def break_annotations(content):
        content["annotations"][1]["id"] = content["annotations"][0]["id"]
        content["annotations"][2]["category_id"] = 7
        content["images"][0]["width"] = 100

    edit_json(data_copy / "annotations" / "instances_train.json", break_annotations)
    edit_json(data_copy / "annotations" / "instances_val.json", lambda c: c["images"][0].update(width=100))
    problems = problems_of(data_copy, "coco_instance")
    train = "\n".join(problems["train"])
    assert "instances_train.json: annotation id 1 appears more than once" in train
    assert "has category_id 7, not in 'categories'" in train
    assert problems["val"] == [
        f"{data_copy}/images/val/000001.jpg: size 64x48 differs from the json's width x height 100x48 (image_id 1)"
    ]


def test_check_dataset_tool_exit_status(data_copy, capsys):
    tool = load_script(REPO / "tools" / "check_dataset.py")
    description = write_description(str(data_copy), "coco_panoptic")
    assert tool.main([description]) == 0
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES 6 INPUT.DATASET_MAPPER_NAME mask_former_panoptic" in capsys.readouterr().out
    (data_copy / "panoptic" / "val" / "000003.png").unlink()
    assert tool.main([description]) == 1
    assert "panoptic/val/000003.png" in capsys.readouterr().out
    assert tool.main([str(data_copy / "absent.yaml")]) == 2


def test_panoptic_without_semantic_labels_or_instances_is_evaluated_for_pq_only(demo_files, caplog):
    splits = {
        split: {
            key: path
            for key, path in FORMATS["coco_panoptic"][0](split).items()
            if key not in ("semantic", "instances_json")
        }
        for split in SPLITS
    }
    description = register_dataset_description(
        write_description(str(demo_files), "coco_panoptic", "panoptic_only", name="panoptic_only", splits=splits)
    )
    cfg = task_cfg("panoptic", "unused")
    cfg.merge_from_list(config_overrides(description))
    check_config(cfg)
    with caplog.at_level(logging.WARNING):
        evaluator = build_evaluator(cfg, "panoptic_only_val")
    assert type(evaluator).__name__ == "COCOPanopticEvaluator"
    assert "no sem_seg_root" in caplog.text and "no json_file" in caplog.text
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    with pytest.raises(DatasetDescriptionError, match="trains with one of"):
        check_config(cfg)
