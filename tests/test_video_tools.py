"""The video model's tools: train_net.py (and upstream's train_net_video.py command) training and evaluating a
video config on the demo video dataset, the clip mappers chosen by the dataset, demo/demo_video.py (frames and
video files in, an mp4 out, threshold, frame order, fps, windows, errors) and the video drawing's colours."""
import importlib.util
import json
import os
import subprocess

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from conftest import REPO
from mask_former.config import build_config
from mask_former.data.dataset_mappers import YTVISDatasetMapper, build_test_mapper, build_train_mapper
from mask_former.data.dataset_mappers.build import clip_mapper_name
from mask_former.data.demo_video_dataset import generate_demo_video_dataset, register_demo_video_datasets
from mask_former.engine.demo_files import natural_key, read_video
from mask_former.engine.video_predictor import draw_video_predictions, track_colors

PYTHON = str(REPO / ".venv" / "bin" / "python")
QUICKSTART_CONFIG = REPO / "configs" / "quickstart" / "video_mask2former_demo_shapes.yaml"
# Small enough that two training iterations and an evaluation take seconds.
VIDEO_SETTINGS = {"num_train": 2, "num_val": 2, "image_size": (48, 64), "num_frames": (3, 4)}
TINY_OPTS = [
    "MODEL.MASK_FORMER.DEC_LAYERS", "3",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "INPUT.MIN_SIZE_TRAIN", "(48,)",
    "INPUT.MAX_SIZE_TRAIN", "64",
    "INPUT.MIN_SIZE_TEST", "48",
    "INPUT.MAX_SIZE_TEST", "64",
    "SOLVER.IMS_PER_BATCH", "2",
    "DATALOADER.NUM_WORKERS", "0",
]


def load_script(path):
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo_video = load_script(REPO / "demo" / "demo_video.py")


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    """A tiny demo video dataset, registered for this module (and for the processes it spawns)."""
    datasets = tmp_path_factory.mktemp("datasets")
    root = datasets / "demo_shapes_video"
    generate_demo_video_dataset(str(root), **VIDEO_SETTINGS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETECTRON2_DATASETS", str(datasets))
        register_demo_video_datasets(str(root))
        yield root
    register_demo_video_datasets()


@pytest.fixture(scope="module")
def trained(video_root, tmp_path_factory):
    """train_net.py's command (in this process) on the quickstart video config, tiny: 2 iterations, then the
    evaluation on demo_shapes_video_val. Returns the output folder."""
    output = tmp_path_factory.mktemp("train")
    train_net = load_script(REPO / "train_net.py")
    argv = ["--config-file", str(QUICKSTART_CONFIG), *TINY_OPTS, "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "2"]
    assert train_net.cli(argv + ["OUTPUT_DIR", str(output)]) == 0
    return output


def test_train_net_trains_and_evaluates_a_video_config(trained, video_root):
    # The config leaves INPUT.DATASET_MAPPER_NAME at its image default: the clip mapper is chosen by the dataset.
    assert build_config(str(QUICKSTART_CONFIG)).INPUT.DATASET_MAPPER_NAME == "mask_former_semantic"
    metrics = [json.loads(line) for line in (trained / "metrics.json").read_text().splitlines()]
    assert [m["iteration"] for m in metrics if "total_loss" in m] == [1]
    (evaluation,) = [m for m in metrics if "segm/AP" in m]
    assert 0.0 <= evaluation["segm/AP"] <= 100.0 and "segm/AR10" in evaluation
    # YTVISEvaluator saw every validation video, with masks over all its frames.
    results = json.loads((trained / "inference" / "results.json").read_text())
    lengths = {video["id"]: video["length"] for video in json.loads((video_root / "val.json").read_text())["videos"]}
    assert {r["video_id"] for r in results} == {1, 2}
    assert all(len(r["segmentations"]) == lengths[r["video_id"]] for r in results)
    assert (trained / "model_final.pth").is_file()


def test_train_net_video_alias_runs_upstreams_command(trained, video_root):
    """upstream's `train_net_video.py --config-file ... --eval-only MODEL.WEIGHTS ...`"""
    alias = load_script(REPO / "train_net_video.py")
    train_net = load_script(REPO / "train_net.py")
    assert (alias.main, alias.setup, alias.Trainer) == (train_net.main, train_net.setup, train_net.Trainer)
    output = trained / "eval_only"
    result = subprocess.run(
        [PYTHON, "train_net_video.py", "--config-file", str(QUICKSTART_CONFIG), "--eval-only", *TINY_OPTS,
         "MODEL.WEIGHTS", str(trained / "model_final.pth"), "OUTPUT_DIR", str(output)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "copypaste: Task: segm" in result.stdout + result.stderr
    assert (output / "inference" / "results.json").is_file()


def test_video_quickstart_runs_end_to_end_and_checks_learning(video_root, tmp_path):
    """Two iterations only: every stage runs, the visualization video has the first validation video's frames,
    and the run fails since nothing was learned."""
    quickstart = load_script(REPO / "tools" / "quickstart.py")
    output = tmp_path / "out"
    opts = [*TINY_OPTS, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(output)]
    assert quickstart.main(["--video", "--num-images", "1", "--opts", *opts]) == 1
    frames, fps = read_video(str(output / "visualization.mp4"))
    first_video = json.loads((video_root / "val.json").read_text())["videos"][0]
    assert len(frames) == first_video["length"] and fps == pytest.approx(quickstart.VISUALIZATION_FPS)
    assert frames[0].shape == (3 * 48, 2 * 3 * 64, 3)  # input | instances, 3 times larger
    assert (output / "model_final.pth").is_file()


def test_clip_mappers_are_chosen_by_the_dataset(video_root):
    cfg = build_config(str(QUICKSTART_CONFIG), TINY_OPTS)
    assert clip_mapper_name(["demo_shapes_video_train", "ytvis_2019_train", "ovis_train"]) == "ytvis"
    assert clip_mapper_name(["coco_2017_train_panoptic"]) is None
    train_mapper, test_mapper = build_train_mapper(cfg), build_test_mapper(cfg, "demo_shapes_video_val")
    assert isinstance(train_mapper, YTVISDatasetMapper) and train_mapper.is_train
    assert isinstance(test_mapper, YTVISDatasetMapper) and not test_mapper.is_train
    assert build_test_mapper(cfg, "coco_2017_val_panoptic") is None  # detectron2's DatasetMapper
    with pytest.raises(ValueError, match="cannot be read by one mapper"):
        clip_mapper_name(["demo_shapes_video_train", "coco_2017_train_panoptic"])


def test_upstream_image_configs_still_load_with_the_video_keys():
    cfg = build_config(str(REPO / "configs" / "coco" / "panoptic-segmentation" / "maskformer2_R50_bs16_50ep.yaml"))
    assert cfg.MODEL.META_ARCHITECTURE == "MaskFormer" and cfg.INPUT.SAMPLING_FRAME_NUM == 2


# The demo.


@pytest.fixture(scope="module")
def video_config(tmp_path_factory, video_root):
    """The tiny video model, untrained, its initial weights saved as MODEL.WEIGHTS; the demo video dataset's
    classes."""
    folder = tmp_path_factory.mktemp("video_config")
    cfg = build_config(str(QUICKSTART_CONFIG), TINY_OPTS, freeze=False)
    cfg.MODEL.WEIGHTS = str(folder / "tiny.pth")
    torch.save({"model": build_model(cfg).state_dict()}, cfg.MODEL.WEIGHTS)
    path = folder / "tiny.yaml"
    path.write_text(cfg.dump())
    return path


def uniform_frame(value, height=48, width=64):
    return np.full((height, width, 3), value, dtype=np.uint8)


def write_video(path, frames, fps):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()


def test_demo_on_a_folder_of_frames_keeps_their_natural_order(video_config, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in (1, 2, 10, 11):
        cv2.imwrite(str(frames / f"{index}.png"), uniform_frame(20 * index))
    output = tmp_path / "out"
    # No instance clears a threshold of 1: the drawn frames are the input frames.
    argv = ["--config-file", str(video_config), "--input", str(frames), "--output", str(output)]
    assert demo_video.main(argv + ["--save-frames", "--confidence-threshold", "1.0"]) == 0
    drawn, fps = read_video(str(output / "visualization.mp4"))
    assert len(drawn) == 4 and drawn[0].shape == (48, 64, 3) and fps == pytest.approx(10.0)
    assert [round(float(frame.mean()) / 20) for frame in drawn] == [1, 2, 10, 11]
    assert sorted(os.listdir(output), key=natural_key) == ["1.png", "2.png", "10.png", "11.png", "visualization.mp4"]


def test_demo_on_a_video_file_with_windows(video_config, tmp_path):
    source = tmp_path / "clip.mp4"
    write_video(source, [uniform_frame(40 * i) for i in range(5)], fps=7.0)
    argv = ["--config-file", str(video_config), "--video-input", str(source), "--window-size", "2"]
    assert demo_video.main(argv + ["--output", str(tmp_path / "vis.mp4"), "--save-frames", "True"]) == 0
    drawn, fps = read_video(str(tmp_path / "vis.mp4"))
    assert len(drawn) == 5 and fps == pytest.approx(7.0)  # the input's frame rate
    assert sorted(os.listdir(tmp_path / "vis_frames")) == [f"{i:05d}.jpg" for i in range(5)]
    assert demo_video.main(argv + ["--output", str(tmp_path / "slow.mp4"), "--fps", "3"]) == 0
    assert read_video(str(tmp_path / "slow.mp4"))[1] == pytest.approx(3.0)


def test_demo_shows_nothing_without_a_display(video_config, tmp_path, monkeypatch, logs):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    cv2.imwrite(str(tmp_path / "0.png"), uniform_frame(0))
    assert demo_video.main(["--config-file", str(video_config), "--input", str(tmp_path / "0.png")]) == 0
    assert "nothing is shown" in logs.text


def test_demo_errors_name_the_file(video_config, tmp_path, capsys):
    def error(*argv):
        assert demo_video.main(["--config-file", str(video_config), *argv, "--output", str(tmp_path / "o")]) == 2
        return capsys.readouterr().err

    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "0.png"), uniform_frame(0))
    (tmp_path / "frames" / "1.jpg").write_text("not an image")
    assert f"cannot read image '{tmp_path / 'frames' / '1.jpg'}'" in error("--input", str(tmp_path / "frames"))
    cv2.imwrite(str(tmp_path / "frames" / "1.jpg"), uniform_frame(0, height=30))
    message = error("--input", str(tmp_path / "frames"))
    assert "1.jpg" in message and "share one size" in message
    (tmp_path / "empty").mkdir()
    assert "holds no image" in error("--input", str(tmp_path / "empty"))
    assert "none.mp4" in error("--video-input", str(tmp_path / "none.mp4"))
    (tmp_path / "bad.mp4").write_text("not a video")
    assert "bad.mp4" in error("--video-input", str(tmp_path / "bad.mp4"))
    image_config = REPO / "configs" / "quickstart" / "mask2former_demo_shapes.yaml"
    assert demo_video.main(["--config-file", str(image_config), "--input", str(tmp_path / "frames")]) == 2
    assert "not a video model" in capsys.readouterr().err
    image_demo = load_script(REPO / "demo" / "demo.py")
    assert image_demo.main(["--config-file", str(video_config), "--input", str(tmp_path / "frames" / "0.png")]) == 2
    assert "demo/demo_video.py" in capsys.readouterr().err


# The drawing.


def two_tracks(num_frames=3, height=120, width=160):
    """Black frames and two predicted instances: A (score 0.9) moving right, absent from frame 1; B (0.3) still."""
    masks = torch.zeros((2, num_frames, height, width), dtype=torch.bool)
    for t in range(num_frames):
        if t != 1:
            masks[0, t, 10:50, 10 + 20 * t:50 + 20 * t] = True
    masks[1, :, 70:110, 100:140] = True
    predictions = {"pred_scores": [0.9, 0.3], "pred_labels": [0, 2], "pred_masks": list(masks)}
    return [np.zeros((height, width, 3), dtype=np.uint8) for _ in range(num_frames)], predictions


def test_drawn_instances_keep_one_colour_across_frames():
    frames, predictions = two_tracks()
    metadata = MetadataCatalog.get("demo_shapes_video_val")
    drawn = draw_video_predictions(frames, predictions, metadata, confidence_threshold=0.1)
    # A pixel inside each mask, away from its label (drawn at the mask's centre) and its outline.
    colour_a = [tuple(drawn[t][14, 14 + 20 * t]) for t in (0, 2)]
    colour_b = [tuple(drawn[t][74, 104]) for t in range(3)]
    assert colour_a[0] == colour_a[1] != (0, 0, 0)
    assert colour_b[0] == colour_b[1] == colour_b[2] != (0, 0, 0)  # A's absence in frame 1 changes nothing
    assert colour_a[0] != colour_b[0]
    expected = [np.round(np.asarray(c) * 255 * 0.5).astype(int) for c in track_colors(2)]  # alpha 0.5 on black
    assert np.abs(np.asarray(colour_a[0]) - expected[0]).max() <= 2
    assert np.abs(np.asarray(colour_b[0]) - expected[1]).max() <= 2


def test_confidence_threshold_drops_low_score_instances():
    frames, predictions = two_tracks()
    metadata = MetadataCatalog.get("demo_shapes_video_val")
    drawn = draw_video_predictions(frames, predictions, metadata, confidence_threshold=0.5)
    assert all(not frame[70:110, 100:140].any() for frame in drawn)  # B (0.3) is not drawn
    assert drawn[0][14, 14].any() and not drawn[1][10:50, 30:70].any()  # A is, where it is visible
    assert all(not frame.any() for frame in draw_video_predictions(frames, predictions, metadata, 0.95))
