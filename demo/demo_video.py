#!/usr/bin/env python
"""
Run a video instance segmentation model (Mask2Former-VIS, a ``VideoMaskFormer`` config) on one video and draw
its instances, each in one colour through the video. Upstream's ``demo_video/demo.py`` command line, plus a
video file or a folder of frames as input, ``--fps``, ``--window-size`` and an ``--output`` video file.

Examples::

    # a folder of frames (natural order: 2.jpg before 10.jpg), drawn into out/visualization.mp4 and out/*.jpg
    python demo/demo_video.py --config-file CONFIG --input frames/ --output out/ --save-frames \\
        --opts MODEL.WEIGHTS model.pth
    # a video file into a video file, at the input's frame rate
    python demo/demo_video.py --config-file CONFIG --video-input clip.mp4 --output vis.mp4 --opts MODEL.WEIGHTS m.pth
    # a long video, decoded 30 frames at a time (MODEL.MASK_FORMER.TEST.WINDOW_SIZE)
    python demo/demo_video.py --config-file CONFIG --video-input long.mp4 --output long_vis.mp4 --window-size 30 ...

MODEL.WEIGHTS must initialize every parameter of the model; ``--allow-random-weights`` runs an untrained model
anyway. Without ``--output`` the drawn frames are shown in a window (skipped, with a warning, without a display).
"""
import argparse
import logging
import os
import sys
import time
from typing import List, Optional, Tuple

import cv2
import numpy as np

import mask_former  # noqa: F401  (registers the model and datasets)
from mask_former.checkpoint import add_random_weights_flag, random_weights_opts
from mask_former.config import build_config
from mask_former.data.datasets.custom import add_dataset_flag, check_config, register_dataset_descriptions
from mask_former.engine.demo_files import (
    VIDEO_CODECS,
    frame_files,
    open_video_writer,
    read_frames,
    read_video,
    run_demo_cli,
    show,
)
from mask_former.engine.video_predictor import VIDEO_META_ARCHITECTURES, VideoVisualizationDemo
from mask_former.errors import DemoError

DEFAULT_FPS = 10.0
"""Frame rate of the output where the input records none (frames) and ``--fps`` is not given: upstream's."""
OUTPUT_VIDEO_NAME = "visualization.mp4"
"""The video written into an ``--output`` folder, as upstream."""
WINDOW_NAME = "Mask2Former video demo"

logger = logging.getLogger("mask_former.demo_video")


def parse_flag(value: str) -> bool:
    """``--save-frames`` takes no value, or upstream's ``--save-frames True``."""
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Mask2Former video instance segmentation demo")
    parser.add_argument(
        "--config-file",
        default="configs/youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml",
        metavar="FILE",
        help="path to the config file of a video model",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        nargs="+",
        help="the frames of one video: a folder of images, or image files / glob patterns (e.g. 'frames/*.jpg'), "
        "in time order (patterns and folders in natural order)",
    )
    source.add_argument("--video-input", help="a video file")
    parser.add_argument(
        "--output",
        help=f"a folder (gets {OUTPUT_VIDEO_NAME}, as upstream) or a video file ({', '.join(VIDEO_CODECS)}); "
        "without it the drawn frames are shown in a window",
    )
    parser.add_argument(
        "--save-frames",
        nargs="?",
        const=True,
        default=False,
        type=parse_flag,
        help="also write the drawn frames: into the --output folder, or beside the --output video in <name>_frames/",
    )
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score of drawn instances")
    parser.add_argument(
        "--fps", type=float, help=f"frame rate of the output video (default: the input video's, else {DEFAULT_FPS})"
    )
    parser.add_argument(
        "--window-size",
        type=int,
        help="decode a long video this many frames at a time (MODEL.MASK_FORMER.TEST.WINDOW_SIZE; default: the "
        "config's, 0 = all at once)",
    )
    add_dataset_flag(parser)
    add_random_weights_flag(parser)
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser


def load_video(args) -> Tuple[List[np.ndarray], List[str], Optional[float]]:
    """The input's BGR frames, the names of the drawn frames' files, and its frame rate (None for frames)."""
    if args.video_input:
        frames, fps = read_video(args.video_input)
        return frames, [f"{index:05d}.jpg" for index in range(len(frames))], fps
    paths = frame_files(args.input)
    return read_frames(paths), [os.path.basename(path) for path in paths], None


def output_paths(output: str) -> Tuple[str, str]:
    """(the output video, the folder of the drawn frames) of ``--output``: a video file and ``<name>_frames``
    beside it, or a folder holding both."""
    if os.path.splitext(output)[1].lower() in VIDEO_CODECS:
        return output, os.path.splitext(output)[0] + "_frames"
    return os.path.join(output, OUTPUT_VIDEO_NAME), output


def write_outputs(drawn: List[np.ndarray], names: List[str], output: str, fps: float, save_frames: bool) -> str:
    """Write the drawn BGR frames as a video (and as images where ``save_frames``); returns the video's path."""
    video_path, frames_folder = output_paths(output)
    height, width = drawn[0].shape[:2]
    writer = open_video_writer(video_path, fps, width, height)
    try:
        for frame in drawn:
            writer.write(frame)
    finally:
        writer.release()
    if save_frames:
        os.makedirs(frames_folder, exist_ok=True)
        for frame, name in zip(drawn, names):
            path = os.path.join(frames_folder, name)
            if not cv2.imwrite(path, frame):
                raise DemoError(f"cannot write the frame {path!r}")
    return video_path


def show_frames(drawn: List[np.ndarray], fps: float) -> None:
    """Play the drawn frames in a window (Esc stops); without a display, warn and skip."""
    delay = max(1, int(1000 / fps))
    try:
        for frame in drawn:
            if not show(WINDOW_NAME, frame) or cv2.waitKey(delay) == 27:
                break
    except DemoError as e:
        logger.warning(f"{e}; nothing is shown")
        return
    cv2.destroyAllWindows()


def config_opts(args) -> List[str]:
    window = [] if args.window_size is None else ["MODEL.MASK_FORMER.TEST.WINDOW_SIZE", str(args.window_size)]
    return args.opts + window + random_weights_opts(args)


def run(args) -> None:
    register_dataset_descriptions(args.dataset)
    cfg = build_config(args.config_file, config_opts(args))
    check_config(cfg)
    if cfg.MODEL.META_ARCHITECTURE not in VIDEO_META_ARCHITECTURES:
        raise DemoError(
            f"--config-file {args.config_file!r}: MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} is not a "
            f"video model ({', '.join(VIDEO_META_ARCHITECTURES)}); use demo/demo.py for image models"
        )
    frames, names, input_fps = load_video(args)
    fps = args.fps or input_fps or DEFAULT_FPS
    demo = VideoVisualizationDemo(cfg, confidence_threshold=args.confidence_threshold)
    start = time.perf_counter()
    predictions, drawn = demo.run_on_video(frames)
    shown = sum(score > args.confidence_threshold for score in predictions["pred_scores"])
    logger.info(
        f"{len(frames)} frames: {shown} of {len(predictions['pred_scores'])} instances above "
        f"{args.confidence_threshold} in {time.perf_counter() - start:.1f} s"
    )
    if args.output:
        logger.info(f"Wrote {write_outputs(drawn, names, args.output, fps, args.save_frames)}")
    else:
        show_frames(drawn, fps)


def main(argv=None) -> int:
    return run_demo_cli(run, get_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
