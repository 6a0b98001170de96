"""Batched inference on BGR images and the visualization of its semantic, panoptic and instance
predictions with detectron2's ``Visualizer``."""
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import cv2
import detectron2.data.transforms as T
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer
from tqdm import tqdm

from ..checkpoint import MaskFormerCheckpointer
from ..data.datasets.registration import model_classes

__all__ = ["BatchPredictor", "TASKS", "VisualizationDemo", "draw_predictions", "visualizer_metadata"]


class BatchPredictor:
    """
    Like detectron2's ``DefaultPredictor`` (weights from ``MODEL.WEIGHTS``, which must initialize
    every parameter, see :class:`mask_former.checkpoint.MaskFormerCheckpointer`; BGR input converted to
    ``INPUT.FORMAT``, resized to ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``, outputs at the input's
    resolution), but for a batch of images in one forward call.

    Example::

        predictor = BatchPredictor(cfg)
        outputs = predictor([cv2.imread("a.jpg"), cv2.imread("b.jpg")])
        outputs[0]["sem_seg"]  # [K, H_a, W_a]
    """

    def __init__(self, cfg):
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR' for the demo, got {cfg.INPUT.FORMAT!r}")
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        MaskFormerCheckpointer.from_config(cfg, self.model, for_inference=True).load(cfg.MODEL.WEIGHTS)
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT

    def model_input(self, image: np.ndarray) -> Dict:
        """The model's input dict of one ``[H, W, 3]`` uint8 BGR image."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"BatchPredictor expects [H, W, 3] BGR images, got an array of shape {image.shape}")
        height, width = image.shape[:2]
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        resized = self.resize.get_transform(image).apply_image(image)
        return {
            "image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
            "height": height,
            "width": width,
        }

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> List[Dict]:
        """
        Args:
            images: ``[H_i, W_i, 3]`` uint8 BGR images (as ``cv2.imread`` returns).

        Returns:
            The model's output dict of each image (``sem_seg [K, H_i, W_i]``, ``panoptic_seg``,
            ``instances``, as the config turns them on).
        """
        return self.model([self.model_input(image) for image in images])


def visualizer_metadata(metadata: Metadata) -> Metadata:
    """
    The metadata ``Visualizer`` is given for a model's predictions on a dataset: its thing and stuff
    classes (and colors) are both those of every model class (see
    :func:`mask_former.data.datasets.registration.model_classes`). The visualizer names a predicted
    thing ``thing_classes[class id]`` and a stuff ``stuff_classes[class id]``, while the model's
    class ids count both kinds: ADE20K panoptic has thing ids up to 149 and 100 thing classes, an
    instance dataset has no stuff classes for a semantic drawing.
    """
    names, colors = model_classes(metadata)
    drawn = ("thing_classes", "thing_colors", "stuff_classes", "stuff_colors")
    view = {key: value for key, value in metadata.as_dict().items() if key not in drawn}
    view.update(thing_classes=names, stuff_classes=names)
    if colors is not None:
        view.update(thing_colors=colors, stuff_colors=colors)
    return Metadata(**view)


def _draw_panoptic(visualizer: Visualizer, predictions: Dict, confidence_threshold: float) -> VisImage:
    panoptic_seg, segments_info = predictions["panoptic_seg"]
    return visualizer.draw_panoptic_seg_predictions(panoptic_seg.to("cpu"), segments_info)


def _draw_semantic(visualizer: Visualizer, predictions: Dict, confidence_threshold: float) -> VisImage:
    return visualizer.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to("cpu"))


def _draw_instance(visualizer: Visualizer, predictions: Dict, confidence_threshold: float) -> VisImage:
    instances: Instances = predictions["instances"].to("cpu")
    instances = instances[instances.scores > confidence_threshold]
    # Mask classification predicts no boxes; boxes around the masks place the labels.
    instances.pred_boxes = BitMasks(instances.pred_masks > 0.5).get_bounding_boxes()
    return visualizer.draw_instance_predictions(instances)


TASKS: Dict[str, Tuple[str, Callable[[Visualizer, Dict, float], VisImage]]] = {
    "panoptic": ("panoptic_seg", _draw_panoptic),
    "semantic": ("sem_seg", _draw_semantic),
    "instance": ("instances", _draw_instance),
}
"""Task -> (the model output it draws, its drawing function). "auto" draws the first available."""


def draw_predictions(
    image_rgb: np.ndarray,
    predictions: Dict,
    metadata,
    task: str = "auto",
    confidence_threshold: float = 0.5,
    scale: float = 1.0,
) -> VisImage:
    """
    Draw one task's predictions over an image.

    Args:
        image_rgb: ``[H, W, 3]`` uint8 RGB image.
        predictions: the model's output dict for it.
        metadata: the dataset's metadata (class names and colors), as registered; the visualizer
            gets its :func:`visualizer_metadata`.
        task: "panoptic", "semantic", "instance", or "auto" (the first of these in the outputs).
        confidence_threshold: minimum score of a drawn instance.
        scale: size of the drawing relative to the image.
    """
    if task == "auto":
        task = next((name for name, (key, _) in TASKS.items() if key in predictions), None)
        if task is None:
            raise ValueError(f"The model's outputs {sorted(predictions)} hold nothing to draw")
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose 'auto' or one of {sorted(TASKS)}")
    key, draw = TASKS[task]
    if key not in predictions:
        raise ValueError(
            f"Task {task!r} needs the model output {key!r}, which the config does not turn on "
            "(MODEL.MASK_FORMER.TEST.{SEMANTIC,PANOPTIC,INSTANCE}_ON)"
        )
    visualizer = Visualizer(image_rgb, visualizer_metadata(metadata), scale=scale, instance_mode=ColorMode.IMAGE)
    return draw(visualizer, predictions, confidence_threshold)


class VisualizationDemo:
    """The model of a config, run on images or video frames, with its predictions drawn."""

    def __init__(self, cfg, task: str = "auto", confidence_threshold: float = 0.5, predictor=None):
        """
        Args:
            cfg: the model's config; the metadata of ``DATASETS.TEST[0]`` names the classes.
            task, confidence_threshold: see :func:`draw_predictions`.
            predictor: ``predictor([BGR image]) -> [predictions]``; by default the config's
                ``BatchPredictor`` (``demo.py --exported`` passes the exported model's).
        """
        self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
        self.predictor = predictor or BatchPredictor(cfg)
        self.task = task
        self.confidence_threshold = confidence_threshold

    def run_on_image(self, image_bgr: np.ndarray) -> Tuple[Dict, VisImage]:
        """The predictions on one ``[H, W, 3]`` BGR image and their drawing."""
        predictions = self.predictor([image_bgr])[0]
        drawing = draw_predictions(
            image_bgr[:, :, ::-1], predictions, self.metadata, self.task, self.confidence_threshold
        )
        return predictions, drawing

    def run_on_video(self, video: cv2.VideoCapture, num_frames: int = None) -> Iterator[np.ndarray]:
        """The drawn frames (``[H, W, 3]`` BGR) of an opened video, with a progress bar."""
        with tqdm(total=num_frames, desc="Frames", unit="frame") as progress:
            while True:
                ok, frame = video.read()
                if not ok:
                    return
                yield self.run_on_image(frame)[1].get_image()[:, :, ::-1]
                progress.update()
