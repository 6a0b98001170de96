"""demo/demo.py and mask_former.engine.predictor: images, video, batched prediction, clear CLI errors, drawing
all three tasks on the metadata of every registered dataset."""
import importlib.util
import subprocess

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.modeling import build_model

from conftest import REPO
from helpers import tiny_cfg
from mask_former.engine import predictor
from mask_former.engine.demo_files import read_video

PYTHON = str(REPO / ".venv" / "bin" / "python")


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"demo_{name}", REPO / "demo" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_script("demo")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """An untrained tiny model with all three outputs, on COCO panoptic's class names, and its
    initial weights saved as MODEL.WEIGHTS."""
    folder = tmp_path_factory.mktemp("config")
    cfg = tiny_cfg()
    cfg.DATASETS.TEST = ("coco_2017_val_panoptic",)
    cfg.INPUT.MIN_SIZE_TEST = 48
    cfg.INPUT.MAX_SIZE_TEST = 96
    cfg.MODEL.WEIGHTS = str(folder / "tiny.pth")
    torch.save({"model": build_model(cfg).state_dict()}, cfg.MODEL.WEIGHTS)
    path = folder / "tiny.yaml"
    path.write_text(cfg.dump())
    return path


def random_image(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("task", ["auto", "semantic", "instance"])
def test_demo_draws_images_from_files_and_globs(config, tmp_path, task):
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), random_image(40, 60, 0))
    cv2.imwrite(str(tmp_path / "in" / "b.png"), random_image(50, 30, 1))
    cv2.imwrite(str(tmp_path / "c.jpg"), random_image(36, 36, 2))
    argv = ["--config-file", str(config), "--input", str(tmp_path / "in" / "*.png"), str(tmp_path / "c.jpg")]
    assert demo.main(argv + ["--output", str(tmp_path / "out"), "--task", task]) == 0
    for name, shape in [("a.png", (40, 60, 3)), ("b.png", (50, 30, 3)), ("c.jpg", (36, 36, 3))]:
        drawing = cv2.imread(str(tmp_path / "out" / name))
        assert drawing is not None and drawing.shape == shape, name


def test_demo_single_image_to_a_file(config, tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), random_image(40, 60, 0))
    argv = ["--config-file", str(config), "--input", str(tmp_path / "a.png"), "--output", str(tmp_path / "vis.png")]
    assert demo.main(argv) == 0
    assert cv2.imread(str(tmp_path / "vis.png")).shape == (40, 60, 3)


def test_demo_on_video(config, tmp_path):
    video_path = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    for i in range(4):
        writer.write(random_image(48, 64, i))
    writer.release()
    output = str(tmp_path / "clip_vis.mp4")
    assert demo.main(["--config-file", str(config), "--video-input", video_path, "--output", output]) == 0
    frames, _ = read_video(output)
    assert len(frames) == 4
    assert frames[0].shape == (48, 64, 3)


def test_batch_predictor_matches_single_images(config):
    from mask_former.config import build_config

    batch_predictor = predictor.BatchPredictor(build_config(str(config)))
    same_size = [random_image(40, 60, 0), random_image(40, 60, 1)]
    batched = batch_predictor(same_size)
    for image, output in zip(same_size, batched):
        single = batch_predictor([image])[0]
        torch.testing.assert_close(output["sem_seg"], single["sem_seg"], rtol=1e-4, atol=1e-4)
    mixed = batch_predictor([random_image(40, 60, 0), random_image(70, 30, 1)])
    assert [tuple(o["sem_seg"].shape[1:]) for o in mixed] == [(40, 60), (70, 30)]
    assert mixed[1]["panoptic_seg"][0].shape == (70, 30)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        batch_predictor([np.zeros((4, 4), dtype=np.uint8)])


def run_demo(*args):
    return subprocess.run([PYTHON, "demo/demo.py", *args], cwd=REPO, capture_output=True, text=True)


def test_unknown_opts_key_is_a_clear_error(config, tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), random_image(20, 20, 0))
    image = str(tmp_path / "a.png")
    result = run_demo("--config-file", str(config), "--input", image, "--opts", "MODEL.NOT_A_KEY", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: command-line options: Non-existent key: MODEL.NOT_A_KEY"


def test_unreadable_image_is_a_clear_error(config, tmp_path):
    (tmp_path / "broken.jpg").write_text("not an image")
    result = run_demo("--config-file", str(config), "--input", str(tmp_path / "broken.jpg"), "--output", str(tmp_path))
    assert result.returncode == 2
    assert f"error: cannot read image '{tmp_path / 'broken.jpg'}'" in result.stderr


def test_missing_files_are_clear_errors(config, tmp_path, capsys):
    assert demo.main(["--config-file", str(tmp_path / "nope.yaml"), "--input", str(tmp_path)]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert demo.main(["--config-file", str(config), "--input", str(tmp_path / "*.png")]) == 2
    assert "no file matches" in capsys.readouterr().err
    video = str(tmp_path / "none.mp4")
    assert demo.main(["--config-file", str(config), "--video-input", video, "--output", str(tmp_path)]) == 2
    assert "none.mp4" in capsys.readouterr().err


def distinct_metadata_datasets():
    """One registered dataset per distinct set of class names, colors and thing ids (the metadata
    the visualizer draws with), among those that name classes."""
    from mask_former.data.datasets.registration import model_classes

    chosen = {}
    for name in sorted(DatasetCatalog.list()):
        meta = MetadataCatalog.get(name)
        if not model_classes(meta)[0]:
            continue
        things = meta.get("thing_dataset_id_to_contiguous_id")
        drawn = (meta.get("thing_classes"), meta.get("thing_colors"), meta.get("stuff_classes"),
                 meta.get("stuff_colors"), sorted(things.values()) if things else None)
        chosen.setdefault(repr(drawn), name)
    return sorted(chosen.values())


@pytest.mark.parametrize("dataset", distinct_metadata_datasets())
def test_demo_draws_all_tasks_on_every_registered_datasets_metadata(dataset):
    from mask_former.data.datasets.registration import model_classes

    metadata = MetadataCatalog.get(dataset)
    num_classes = len(model_classes(metadata)[0])
    # The v1 decoder: the cheapest tiny model (the drawing does not depend on the architecture).
    cfg = tiny_cfg(pixel_decoder="BasePixelDecoder", in_feature="res5", num_classes=num_classes)
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 3
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # The model's thing classes: the dataset's, or every class for semantic datasets, so that
    # panoptic and instance drawings name ids up to num_classes - 1.
    things = metadata.get("thing_dataset_id_to_contiguous_id") or {i: i for i in range(num_classes)}
    model.metadata = Metadata(thing_dataset_id_to_contiguous_id=things)
    # Every query predicts the highest thing id, the one a visualizer indexing thing_classes by
    # class id fails on first (ADE20K panoptic: 149, with 100 thing classes).
    top_thing = max(c for c in things.values() if c < num_classes)
    with torch.no_grad():
        model.sem_seg_head.predictor.class_embed.bias[top_thing] += 20.0

    image = random_image(40, 56, 0)
    input_ = {"image": torch.as_tensor(image.transpose(2, 0, 1).copy()), "height": 40, "width": 56}
    with torch.no_grad():
        predictions = model([input_])[0]
    assert top_thing in predictions["instances"].pred_classes.tolist()
    assert any(s["category_id"] == top_thing and s["isthing"] for s in predictions["panoptic_seg"][1])
    for task in ("semantic", "panoptic", "instance"):
        drawing = predictor.draw_predictions(image, predictions, metadata, task, confidence_threshold=0.0)
        assert drawing.get_image().shape == (40, 56, 3), task


def test_visualizer_metadata_names_every_model_class():
    ade = MetadataCatalog.get("ade20k_panoptic_val")
    assert len(ade.thing_classes) == 100  # as registered (and as upstream)
    view = predictor.visualizer_metadata(ade)
    assert view.thing_classes == ade.stuff_classes and view.thing_colors == ade.stuff_colors
    assert view.thing_dataset_id_to_contiguous_id == ade.thing_dataset_id_to_contiguous_id
    instance = MetadataCatalog.get("ade20k_instance_val")
    assert predictor.visualizer_metadata(instance).thing_classes == instance.thing_classes
