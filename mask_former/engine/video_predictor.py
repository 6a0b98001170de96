"""Inference of the video model (``VideoMaskFormer``) on the BGR frames of one video, and the drawing of its
instances: each instance (a track through the video) keeps one colour in every frame."""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..data.datasets.registration import model_classes
from .predictor import BatchPredictor, visualizer_metadata

__all__ = [
    "VIDEO_META_ARCHITECTURES",
    "VideoPredictor",
    "VideoVisualizationDemo",
    "draw_video_predictions",
    "track_colors",
]

VIDEO_META_ARCHITECTURES = ("VideoMaskFormer",)
"""The meta-architectures whose models take videos (lists of frames), not images."""


class VideoPredictor(BatchPredictor):
    """
    The video model of a config on the frames of one video: weights, input format and test resize as
    :class:`BatchPredictor`; all the frames go to the model at once (``MODEL.MASK_FORMER.TEST.WINDOW_SIZE``
    makes the model decode a long video window by window).

    Example::

        predictor = VideoPredictor(cfg)
        output = predictor([cv2.imread(f"frames/{i}.jpg") for i in range(10)])
        output["pred_masks"][0]  # bool [10, H, W], the masks of the first instance
    """

    @torch.no_grad()
    def __call__(self, frames: Sequence[np.ndarray]) -> Dict:
        """
        Args:
            frames: the video's ``[H, W, 3]`` uint8 BGR frames, in time order, all of one size.

        Returns:
            The model's output: ``pred_scores`` and ``pred_labels`` (lists, one entry per instance) and
            ``pred_masks`` (one bool ``[T, H, W]`` tensor per instance), at the frames' size.
        """
        if not len(frames):
            raise ValueError("VideoPredictor needs at least one frame")
        sizes = {frame.shape[:2] for frame in frames}
        if len(sizes) != 1:
            raise ValueError(f"The frames of a video must share one size, got (H, W) sizes {sorted(sizes)}")
        height, width = frames[0].shape[:2]
        video = {"image": [self.model_input(frame)["image"] for frame in frames], "height": height, "width": width}
        output = self.model([video])
        return output[0] if isinstance(output, (list, tuple)) else output


def track_colors(count: int) -> List[np.ndarray]:
    """``count`` distinct RGB colours in [0, 1] (detectron2's palette, repeated beyond its length), the
    ``i``-th for the instance of rank ``i``: a function of the rank only, so one colour per instance."""
    palette = colormap(rgb=True, maximum=1)
    return [palette[i % len(palette)] for i in range(count)]


def draw_video_predictions(
    frames_rgb: Sequence[np.ndarray],
    predictions: Dict,
    metadata,
    confidence_threshold: float = 0.5,
    scale: float = 1.0,
) -> List[np.ndarray]:
    """
    Draw the instances of a video model's output over the frames: those whose score is above
    ``confidence_threshold``, by decreasing score, each with one colour in every frame
    (:func:`track_colors`) and labelled with its class and score where it is visible.

    Args:
        frames_rgb: ``T`` frames, ``[H, W, 3]`` uint8 RGB.
        predictions: the model's output (``pred_scores``, ``pred_labels``, ``pred_masks`` bool ``[T, H, W]``
            each).
        metadata: the dataset's metadata, which names the classes.
        confidence_threshold: minimum score of a drawn instance.
        scale: size of the drawing relative to the frames.

    Returns:
        The ``T`` drawn frames, ``[H * scale, W * scale, 3]`` uint8 RGB.
    """
    scores = [float(score) for score in predictions["pred_scores"]]
    kept = sorted((i for i, score in enumerate(scores) if score > confidence_threshold), key=lambda i: -scores[i])
    names, _ = model_classes(metadata)
    labels = [
        f"{names[label] if label < len(names) else label} {scores[i] * 100:.0f}%"
        for i, label in ((i, int(predictions["pred_labels"][i])) for i in kept)
    ]
    masks = [torch.as_tensor(predictions["pred_masks"][i]).cpu().numpy() for i in kept]
    colors = track_colors(len(kept))
    view = visualizer_metadata(metadata)
    drawn = []
    for t, frame in enumerate(frames_rgb):
        visible = [k for k in range(len(kept)) if masks[k][t].any()]
        visualizer = Visualizer(frame, view, scale=scale, instance_mode=ColorMode.IMAGE)
        drawing = visualizer.overlay_instances(
            masks=[masks[k][t] for k in visible] or None,
            labels=[labels[k] for k in visible] or None,
            assigned_colors=[colors[k] for k in visible] or None,
        )
        drawn.append(drawing.get_image())
    return drawn


class VideoVisualizationDemo:
    """The video model of a config, run on the frames of one video, with its instances drawn."""

    def __init__(self, cfg, confidence_threshold: float = 0.5):
        """
        Args:
            cfg: the video model's config; the metadata of ``DATASETS.TEST[0]`` names the classes.
            confidence_threshold: minimum score of a drawn instance.
        """
        self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
        self.predictor = VideoPredictor(cfg)
        self.confidence_threshold = confidence_threshold

    def run_on_video(self, frames_bgr: Sequence[np.ndarray]) -> Tuple[Dict, List[np.ndarray]]:
        """The predictions on a video's ``[H, W, 3]`` BGR frames, and the drawn frames (BGR, same size)."""
        predictions = self.predictor(frames_bgr)
        frames_rgb = [frame[:, :, ::-1] for frame in frames_bgr]
        drawn = draw_video_predictions(frames_rgb, predictions, self.metadata, self.confidence_threshold)
        return predictions, [np.ascontiguousarray(frame[:, :, ::-1]) for frame in drawn]
