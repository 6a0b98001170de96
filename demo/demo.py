#!/usr/bin/env python
"""
Run a MaskFormer / Mask2Former model on images, a video or a webcam and draw its predictions.

Examples::

    python demo/demo.py --config-file CONFIG --input images/*.jpg --output vis/ --opts MODEL.WEIGHTS model.pth
    python demo/demo.py --config-file CONFIG --video-input clip.mp4 --output clip_vis.mp4 --opts MODEL.WEIGHTS model.pth
    # a model trained on your own data: --dataset registers the splits its config names
    python demo/demo.py --config-file CONFIG --dataset mydata.yaml --input a.jpg --output a_vis.png --opts ...
    # a model exported by tools/export_model.py (onnxruntime)
    python demo/demo.py --config-file CONFIG --exported export_dir/ --input a.jpg --output a_vis.png

MODEL.WEIGHTS must initialize every parameter of the model; ``--allow-random-weights`` runs an
untrained model anyway.
"""
import argparse
import logging
import os
import sys
from typing import Dict, List

import cv2
import numpy as np
import torch
from detectron2.data.detection_utils import read_image
from detectron2.structures import Instances
from tqdm import tqdm

import mask_former  # noqa: E402,F401  (registers the model and datasets)
from mask_former.checkpoint import add_random_weights_flag, random_weights_opts  # noqa: E402
from mask_former.config import build_config  # noqa: E402
from mask_former.data.datasets.custom import (  # noqa: E402
    add_dataset_flag,
    check_config,
    register_dataset_descriptions,
)
from mask_former.engine.demo_files import (  # noqa: E402
    IMAGE_EXTENSIONS,
    VIDEO_CODECS,
    expand_inputs,
    open_video_writer,
    run_demo_cli,
    show,
)
from mask_former.engine.predictor import TASKS, VisualizationDemo  # noqa: E402
from mask_former.engine.video_predictor import VIDEO_META_ARCHITECTURES  # noqa: E402
from mask_former.errors import DemoError  # noqa: E402
from mask_former.export import load_exported  # noqa: E402

WINDOW_NAME = "MaskFormer demo"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="MaskFormer / Mask2Former demo")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to the config file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files or glob patterns, e.g. 'images/*.jpg'")
    source.add_argument("--video-input", help="a video file")
    source.add_argument("--webcam", action="store_true", help="take frames from the webcam")
    parser.add_argument(
        "--output",
        help="where to write the drawings: a folder, or for one image / a video a file "
        f"({', '.join(IMAGE_EXTENSIONS)} / {', '.join(VIDEO_CODECS)}); without it they are shown in a window",
    )
    add_dataset_flag(parser)
    parser.add_argument("--task", default="auto", choices=["auto", *TASKS], help="which predictions to draw")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score of drawn instances")
    parser.add_argument(
        "--exported",
        metavar="DIR",
        help="run the model exported to DIR by tools/export_model.py (at the image's own size) instead of "
        "MODEL.WEIGHTS; the config still names the classes (DATASETS.TEST[0])",
    )
    add_random_weights_flag(parser)
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser


class ExportedBatchPredictor:
    """``predictor([BGR image [H, W, 3]]) -> [predictions]`` of an exported model, as the torch
    structures the drawing functions take (``sem_seg`` tensor, ``panoptic_seg``, ``Instances``)."""

    def __init__(self, directory: str):
        try:
            self.predictor = load_exported(directory)
        except (OSError, ValueError) as e:
            raise DemoError(f"--exported {directory!r}: {e}") from e

    def predict(self, image_bgr) -> Dict:
        image = image_bgr[:, :, ::-1] if self.predictor.meta["input_format"] == "RGB" else image_bgr
        result = self.predictor(np.ascontiguousarray(image))
        predictions = {}
        if "sem_seg" in result:
            predictions["sem_seg"] = torch.from_numpy(result["sem_seg"])
        if "panoptic_seg" in result:
            panoptic_seg, segments_info = result["panoptic_seg"]
            predictions["panoptic_seg"] = (torch.from_numpy(panoptic_seg), segments_info)
        if "instances" in result:
            instances = Instances(image.shape[:2])
            for name, value in result["instances"].items():
                instances.set(name, torch.from_numpy(value))
            instances.pred_masks = instances.pred_masks.float()
            predictions["instances"] = instances
        return predictions

    def __call__(self, images) -> List[Dict]:
        return [self.predict(image) for image in images]


def output_path_of(output: str, input_path: str, num_inputs: int) -> str:
    """The drawing's path: ``output`` itself for a single image and an image file name, otherwise
    a file named as the input inside the folder ``output``."""
    if num_inputs == 1 and output.lower().endswith(IMAGE_EXTENSIONS):
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        return output
    os.makedirs(output, exist_ok=True)
    return os.path.join(output, os.path.basename(input_path))


def run_on_images(demo: VisualizationDemo, paths: List[str], output: str) -> None:
    for path in tqdm(paths, desc="Images", unit="img"):
        try:
            image = read_image(path, format="BGR")
        except OSError as e:
            raise DemoError(f"cannot read image {path!r}: {e}") from e
        predictions, drawing = demo.run_on_image(image)
        logging.getLogger(__name__).info(f"{path}: {', '.join(sorted(predictions))}")
        if output:
            drawing.save(output_path_of(output, path, len(paths)))
        else:
            show(WINDOW_NAME, drawing.get_image()[:, :, ::-1])
            cv2.waitKey(0)


def run_on_video(demo: VisualizationDemo, video_path: str, output: str) -> None:
    video = cv2.VideoCapture(video_path)
    if not video.isOpened():
        raise DemoError(f"cannot read video {video_path!r}")
    width, height = int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    num_frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if output and os.path.isdir(output):
        output = os.path.join(output, os.path.splitext(os.path.basename(video_path))[0] + ".mp4")
    writer = open_video_writer(output, video.get(cv2.CAP_PROP_FPS) or 25.0, width, height) if output else None
    try:
        for frame in demo.run_on_video(video, num_frames):
            if writer is not None:
                writer.write(frame)
            elif not show(WINDOW_NAME, frame):
                break
    finally:
        video.release()
        if writer is not None:
            writer.release()


def run_on_webcam(demo: VisualizationDemo) -> None:
    camera = cv2.VideoCapture(0)
    if not camera.isOpened():
        raise DemoError("cannot open the webcam")
    try:
        for frame in demo.run_on_video(camera):
            if not show(WINDOW_NAME, frame):
                break
    finally:
        camera.release()
        cv2.destroyAllWindows()


def run(args) -> None:
    if args.webcam and args.output:
        raise DemoError("--webcam shows the drawings in a window; --output is not supported with it")
    paths = expand_inputs(args.input) if args.input else None
    register_dataset_descriptions(args.dataset)
    cfg = build_config(args.config_file, args.opts + ([] if args.exported else random_weights_opts(args)))
    check_config(cfg)
    if cfg.MODEL.META_ARCHITECTURE in VIDEO_META_ARCHITECTURES:
        raise DemoError(
            f"--config-file {args.config_file!r}: {cfg.MODEL.META_ARCHITECTURE} is a video model, "
            "run demo/demo_video.py"
        )
    predictor = ExportedBatchPredictor(args.exported) if args.exported else None
    demo = VisualizationDemo(cfg, task=args.task, confidence_threshold=args.confidence_threshold, predictor=predictor)
    if paths:
        run_on_images(demo, paths, args.output)
    elif args.video_input:
        run_on_video(demo, args.video_input, args.output)
    else:
        run_on_webcam(demo)


def main(argv=None) -> int:
    return run_demo_cli(run, get_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
