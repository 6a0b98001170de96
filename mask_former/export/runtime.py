"""Run an exported model: ``load_exported(DIR)(image) -> {"sem_seg", "panoptic_seg", "instances"}``.

Torch-free for ONNX exports (numpy + onnxruntime); a ``torch-export`` directory is run through
``torch.export.load``. Both use the graph's fixed-rank outputs and finish with the numpy assembly
of :mod:`mask_former.assembly`, the same code the eager model runs.
"""
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..assembly import assemble_instances, assemble_panoptic, torch_cpu_topk_indices

# 2: instance outputs are all pairs' scores; the runtime takes the top k. 3: the semantic map and the panoptic
# owner and pixel_kept are flat over the pixels (``[K, H * W]``, ``[H * W]``); the runtime views them 2-D.
FORMAT_VERSION = 3
META_FILE = "meta.json"
MODEL_FILES = {"onnx": "model.onnx", "torch-export": "model.pt2"}
PANOPTIC_OUTPUTS = ["labels", "keep", "owner", "pixel_kept", "owned_areas", "original_areas", "segment_areas"]
INSTANCE_OUTPUTS = ["pair_scores", "mask_scores", "query_masks"]
TASK_OUTPUTS = {
    "semantic": ["sem_seg"],
    "panoptic": [f"panoptic_{name}" for name in PANOPTIC_OUTPUTS],
    "instance": [f"instances_{name}" for name in INSTANCE_OUTPUTS],
}


def output_names(tasks: List[str]) -> List[str]:
    """The exported graph's outputs, in order, for the tasks it holds."""
    return [name for task in tasks for name in TASK_OUTPUTS[task]]


def read_meta(directory: Path) -> Dict:
    path = directory / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: {directory} is not a directory written by tools/export_model.py"
        )
    meta = json.loads(path.read_text())
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {version!r}, but this runtime reads format version {FORMAT_VERSION}; "
            "export the model again with this version of tools/export_model.py"
        )
    if meta.get("format") not in MODEL_FILES:
        raise ValueError(f"{path}: format {meta.get('format')!r} is not one of {sorted(MODEL_FILES)}")
    unknown = [t for t in meta.get("tasks", []) if t not in TASK_OUTPUTS]
    if unknown or not meta.get("tasks"):
        raise ValueError(f"{path}: tasks {meta.get('tasks')!r} must be a non-empty subset of {sorted(TASK_OUTPUTS)}")
    return meta


def onnx_runner(path: Path, threads: Optional[int] = None) -> Callable[[np.ndarray], List[np.ndarray]]:
    """onnxruntime's CPU session with all graph optimizations (its default, stated) and ``threads`` intra-op
    threads (None: onnxruntime's default, one per physical core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda image: session.run(None, {"image": image})


def torch_export_runner(path: Path, threads: Optional[int] = None) -> Callable[[np.ndarray], List[np.ndarray]]:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    module = torch.export.load(str(path)).module()

    def run(image: np.ndarray) -> List[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in module(torch.from_numpy(image))]

    return run


RUNNERS = {"onnx": onnx_runner, "torch-export": torch_export_runner}


class ExportedPredictor:
    """``predictor(image)``: ``image`` uint8 ``[H, W, 3]`` in ``meta["input_format"]`` -> a dict with,
    for the exported tasks, ``sem_seg`` float32 ``[K, H, W]``, ``panoptic_seg`` ``(int32 [H, W],
    segments_info)`` and ``instances`` ``{"scores" [N], "pred_classes" [N], "pred_masks" bool [N, H, W]}``.
    """

    def __init__(self, meta: Dict, run: Callable[[np.ndarray], List[np.ndarray]]):
        self.meta = meta
        self.run = run
        self.names = output_names(meta["tasks"])

    def check_image(self, image) -> np.ndarray:
        if not isinstance(image, np.ndarray):
            raise TypeError(f"the image must be a numpy array, got {type(image).__name__}")
        expected = f"the image must be uint8 [H, W, 3] in {self.meta['input_format']}"
        if image.dtype != np.uint8:
            raise TypeError(f"{expected}, got dtype {image.dtype}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{expected}, got shape {image.shape}")
        d = self.meta.get("size_divisibility", 0)
        if d > 0 and max(image.shape[:2]) <= d:
            # The eager model widens such an image's single padded cell (GroupNorm); the graph cannot.
            raise ValueError(f"the image {image.shape[:2]} must exceed the size divisibility {d} on one side at least")
        min_side = self.meta.get("min_side", 0)
        if min(image.shape[:2]) < min_side:
            raise ValueError(
                f"the image {image.shape[:2]} is smaller than this {self.meta['format']} program takes: "
                f"{min_side} pixels a side at least"
            )
        return np.ascontiguousarray(image)

    def __call__(self, image: np.ndarray) -> Dict:
        outputs = dict(zip(self.names, self.run(self.check_image(image))))
        meta, result = self.meta, {}
        size = image.shape[:2]
        thing_classes = meta["thing_classes"] if "panoptic" in meta["tasks"] else None
        if "semantic" in meta["tasks"]:
            sem_seg = outputs["sem_seg"]
            result["sem_seg"] = sem_seg.astype(np.float32, copy=False).reshape(sem_seg.shape[0], *size)
        if "panoptic" in meta["tasks"]:
            stage = {name: outputs[f"panoptic_{name}"] for name in PANOPTIC_OUTPUTS}
            stage["owner"], stage["pixel_kept"] = stage["owner"].reshape(size), stage["pixel_kept"].reshape(size)
            result["panoptic_seg"] = assemble_panoptic(
                **stage, thing_classes=thing_classes, overlap_threshold=meta["overlap_threshold"]
            )
        if "instance" in meta["tasks"]:
            pair_scores = outputs["instances_pair_scores"]
            # The eager model's top-k order (torch's), so that both list the same instances in turn.
            top = torch_cpu_topk_indices(pair_scores, meta["test_topk_per_image"])
            scores, pred_classes, pair_query = assemble_instances(
                pair_scores, outputs["instances_mask_scores"], top,
                num_classes=meta["num_classes"], thing_classes=thing_classes,
            )
            masks = outputs["instances_query_masks"][pair_query].astype(bool)
            result["instances"] = {"scores": scores, "pred_classes": pred_classes, "pred_masks": masks}
        return result


def load_exported(directory, threads: Optional[int] = None) -> ExportedPredictor:
    """The predictor of a directory written by ``tools/export_model.py`` (see :class:`ExportedPredictor`);
    ``threads``: the CPU threads it may use (None: the library's default)."""
    directory = Path(directory)
    meta = read_meta(directory)
    path = directory / MODEL_FILES[meta["format"]]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing ({directory / META_FILE} says format {meta['format']!r})")
    return ExportedPredictor(meta, RUNNERS[meta["format"]](path, threads))
