"""The files of the demos (``demo/demo.py``, ``demo/demo_video.py``): finding the input images, reading the
frames of a video (a video file, a folder of frames, frame files), writing videos and showing frames."""
import argparse
import glob
import os
import re
import sys
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger

from ..errors import CheckpointError, ConfigError, DatasetDescriptionError, DemoError

__all__ = [
    "run_demo_cli",
    "IMAGE_EXTENSIONS",
    "VIDEO_CODECS",
    "display_available",
    "expand_inputs",
    "frame_files",
    "natural_key",
    "open_video_writer",
    "read_frames",
    "read_video",
    "show",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
"""Extension of an output video -> OpenCV fourcc of the written video."""


def natural_key(path: str) -> Tuple:
    """Sort key putting numbered files in numeric order ("frame2.jpg" before "frame10.jpg")."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path))


def expand_inputs(patterns: Sequence[str]) -> List[str]:
    """The files named by ``--input``: existing paths as given, in the given order; other arguments as glob
    patterns, their matches in natural order (:func:`natural_key`).

    Raises:
        DemoError: an argument is no file and matches none.
    """
    paths = []
    for pattern in patterns:
        matches = (
            [pattern] if os.path.exists(pattern) else sorted(glob.glob(os.path.expanduser(pattern)), key=natural_key)
        )
        if not matches:
            raise DemoError(f"--input {pattern!r}: no such file, and no file matches it as a pattern")
        paths.extend(matches)
    return paths


def frame_files(inputs: Sequence[str]) -> List[str]:
    """The frames of one video named by ``--input``: the images (:data:`IMAGE_EXTENSIONS`) of a single folder in
    natural order, or else the files and patterns of :func:`expand_inputs`.

    Raises:
        DemoError: no frame is found.
    """
    if len(inputs) == 1 and os.path.isdir(inputs[0]):
        folder = inputs[0]
        names = sorted((n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)), key=natural_key)
        if not names:
            raise DemoError(f"--input {folder!r}: the folder holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        return [os.path.join(folder, name) for name in names]
    return expand_inputs(inputs)


def read_frames(paths: Sequence[str]) -> List[np.ndarray]:
    """The ``[H, W, 3]`` uint8 BGR images of the frames of one video.

    Raises:
        DemoError: a file cannot be read as an image, or its size differs from the first frame's.
    """
    frames = []
    for path in paths:
        try:
            frame = read_image(path, format="BGR")
        except (OSError, ValueError) as e:
            raise DemoError(f"cannot read image {path!r}: {e}") from e
        if frames and frame.shape != frames[0].shape:
            raise DemoError(
                f"frame {path!r} is {frame.shape[1]}x{frame.shape[0]} (WxH), but the first frame {paths[0]!r} is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]}: the frames of a video share one size"
            )
        frames.append(frame)
    return frames


def read_video(path: str) -> Tuple[List[np.ndarray], Optional[float]]:
    """The frames (``[H, W, 3]`` uint8 BGR) of a video file and its frame rate (None where it records none).

    Raises:
        DemoError: the file does not exist, cannot be opened as a video, or holds no frame.
    """
    if not os.path.isfile(path):
        raise DemoError(f"cannot read video {path!r}: no such file")
    video = cv2.VideoCapture(path)
    try:
        if not video.isOpened():
            raise DemoError(f"cannot read video {path!r}: OpenCV cannot open it")
        fps = video.get(cv2.CAP_PROP_FPS)
        frames = []
        while True:
            ok, frame = video.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        video.release()
    if not frames:
        raise DemoError(f"cannot read video {path!r}: no frame could be decoded")
    return frames, (fps if fps and fps > 0 else None)


def open_video_writer(path: str, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """An OpenCV writer of a video file (:data:`VIDEO_CODECS` by extension), its folder created.

    Raises:
        DemoError: the extension is not a video's, or the file cannot be written.
    """
    extension = os.path.splitext(path)[1].lower()
    if extension not in VIDEO_CODECS:
        raise DemoError(f"--output {path!r}: a video is written as one of {sorted(VIDEO_CODECS)}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*VIDEO_CODECS[extension]), fps, (width, height))
    if not writer.isOpened():
        raise DemoError(f"cannot write the video {path!r}")
    return writer


def display_available() -> bool:
    """Whether a window can be opened: on Linux, only with an X11 or Wayland display (OpenCV's GUI backends
    abort the process without one)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def show(window_name: str, image_bgr: np.ndarray) -> bool:
    """Show a frame in a window; False once the user pressed Esc.

    Raises:
        DemoError: no window can be opened here (no display, or opencv-python-headless).
    """
    message = "cannot open a window here (no display, or opencv-python-headless): pass --output"
    if not display_available():
        raise DemoError(message)
    try:
        cv2.imshow(window_name, image_bgr)
    except cv2.error as e:
        raise DemoError(message) from e
    return cv2.waitKey(1) != 27


def run_demo_cli(run: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser, argv=None) -> int:
    """A demo's command line: parse ``argv``, set up the loggers, ``run(args)``. A user error (config, checkpoint,
    dataset description, demo input or output) is one ``error:`` line and exit status 2; success is 0."""
    args = parser.parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="mask_former")
    setup_logger()
    try:
        run(args)
    except (ConfigError, CheckpointError, DatasetDescriptionError, DemoError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
