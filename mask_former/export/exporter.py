"""Export a MaskFormer / Mask2Former model, post-processing included, to ONNX or torch.export.

The exported graph takes one uint8 image ``[H, W, 3]`` (dynamic H and W) in the config's
``INPUT.FORMAT`` and returns the fixed-rank outputs of the tensor stage of every task the model
turns on (names in :data:`mask_former.export.runtime.TASK_OUTPUTS`); the runtime assembles them.
"""
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import onnx
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..compat import size_oblivious_export
from ..modeling.padding import padding_to_multiple
from ..ops import EXPORT_FORMS, export_form
from .graph_stages import instance_rows, panoptic_rows, semantic_rows
from .quantize import QUANTIZATIONS
from .runtime import FORMAT_VERSION, META_FILE, MODEL_FILES, output_names

logger = logging.getLogger(__name__)
ONNX_OPSET = 18  # GridSample (the deformable attention) needs opset 16 or later
MAX_SIDE = 8192
MIN_SIDE = 33  # a 32-pixel side leaves a single cell at stride 32, a case of its own for the shape reasoning


def model_tasks(model) -> List[str]:
    flags = {"semantic": model.semantic_on, "panoptic": model.panoptic_on, "instance": model.instance_on}
    return [task for task, on in flags.items() if on]


def check_exportable(model) -> None:
    """A clear error for models this exporter does not handle."""
    if type(model).__name__ != "MaskFormer":
        raise ValueError(f"MODEL.META_ARCHITECTURE {type(model).__name__!r} cannot be exported: only 'MaskFormer' can")
    if not model_tasks(model):
        raise ValueError(
            "nothing to export: MODEL.MASK_FORMER.TEST.SEMANTIC_ON, PANOPTIC_ON and INSTANCE_ON are all False"
        )


class ExportableMaskFormer(nn.Module):
    """``forward(image uint8 [H, W, 3]) -> tuple of the tensor stage's outputs`` at the image's size.

    The same steps as ``MaskFormer.inference_single`` with the output size equal to the input size:
    normalize, pad to the size divisibility, run the network, resize the masks to the padded size,
    crop the padding, then the tensor stage of each task (:mod:`.graph_stages`).
    """

    def __init__(self, model):
        super().__init__()
        check_exportable(model)
        self.model = model
        self.tasks = model_tasks(model)
        self.require_mask_confidence = model.recipe.require_mask_confidence
        self.eval()

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        model = self.model
        height, width = image.shape[0], image.shape[1]
        x = (image.permute(2, 0, 1).float() - model.pixel_mean) / model.pixel_std
        d = max(model.size_divisibility, 1)
        x = F.pad(x, (0, padding_to_multiple(width, d), 0, padding_to_multiple(height, d))).unsqueeze(0)
        outputs = model.sem_seg_head(model.backbone(x))
        mask_pred = F.interpolate(outputs["pred_masks"], size=x.shape[-2:], mode="bilinear", align_corners=False)
        # flatten, not [0]: a Gather copies, a Reshape does not
        mask_pred = mask_pred.flatten(0, 1)[:, :height, :width]
        mask_cls = outputs["pred_logits"].flatten(0, 1)
        mask_prob = mask_pred.sigmoid().flatten(1)
        num_classes = model.sem_seg_head.num_classes
        stages: Dict[str, Dict[str, Tensor]] = {}
        if "semantic" in self.tasks:
            stages["semantic"] = {"sem_seg": semantic_rows(mask_cls, mask_prob)}
        if "panoptic" in self.tasks:
            stage = panoptic_rows(
                mask_cls, mask_prob, num_classes=num_classes, object_mask_threshold=model.object_mask_threshold,
                require_mask_confidence=self.require_mask_confidence,
            )
            stages["panoptic"] = {f"panoptic_{k}": v for k, v in stage.items()}
        if "instance" in self.tasks:
            stage = instance_rows(mask_cls, mask_pred, mask_prob)
            stages["instance"] = {f"instances_{k}": v for k, v in stage.items()}
        flat = {k: v for stage in stages.values() for k, v in stage.items()}
        return tuple(flat[name] for name in output_names(self.tasks))


def meta_for(wrapper: ExportableMaskFormer, cfg, export_format: str) -> Dict:
    model = wrapper.model
    metadata = model.metadata
    meta = {
        "format_version": FORMAT_VERSION,
        "format": export_format,
        "tasks": wrapper.tasks,
        "input_format": cfg.INPUT.FORMAT,
        "num_classes": model.sem_seg_head.num_classes,
        "size_divisibility": model.size_divisibility,
        "classes": list(getattr(metadata, "stuff_classes", None) or []),
        "object_mask_threshold": model.object_mask_threshold,
        "overlap_threshold": model.overlap_threshold,
        "test_topk_per_image": model.test_topk_per_image,
        "require_mask_confidence": wrapper.require_mask_confidence,
        "outputs": output_names(wrapper.tasks),
    }
    if "panoptic" in wrapper.tasks:
        meta["thing_classes"] = sorted(model.thing_classes())
    if export_format == "torch-export":
        meta["min_side"] = MIN_SIDE
    return meta


def example_image(cfg) -> Tensor:
    return torch.randint(0, 256, (300, 352, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def export_onnx(wrapper: ExportableMaskFormer, image: Tensor, path: Path) -> None:
    """The TorchScript-based exporter: seconds where the dynamo one spends many minutes in sympy on
    the backbone's nested padding arithmetic. Image sizes stay symbolic (traced ``shape`` values);
    the output shapes it annotates from its own shape inference can be wrong for dynamic axes, so
    they are dropped and onnxruntime infers them."""
    names = output_names(wrapper.tasks)
    with warnings.catch_warnings():
        # They flag the models' input checks (rank, channels), constant for every image size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper, (image,), str(path), dynamo=False, opset_version=ONNX_OPSET, input_names=["image"],
            output_names=names, dynamic_axes={"image": {0: "height", 1: "width"}},
        )
    graph = onnx.load(str(path))
    del graph.graph.value_info[:]
    for output in graph.graph.output:
        output.type.tensor_type.ClearField("shape")
    onnx.save(graph, str(path))


def export_torch(wrapper: ExportableMaskFormer, image: Tensor, path: Path) -> None:
    """torch.export with dynamic H and W (sides MIN_SIDE to MAX_SIDE). Size-oblivious shape reasoning lets the
    view/contiguity checks of reshapes hold for sizes of 1 too, instead of guarding (and failing) on them."""
    dims = {
        0: torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
        1: torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE),
    }
    with size_oblivious_export():
        program = torch.export.export(wrapper, (image,), dynamic_shapes=(dims,), strict=False)
    torch.export.save(program, str(path))


EXPORTERS = {"onnx": export_onnx, "torch-export": export_torch}
"""``format -> exporter(wrapper, example image, output path)``."""


def export_model(
    model, cfg, export_format: str, output_dir, deform_attn: str = "gather", quantize: Optional[str] = None,
) -> Path:
    """Write ``model.onnx`` or ``model.pt2`` and ``meta.json`` into ``output_dir``; returns the model file.
    ``deform_attn`` (a key of :data:`mask_former.ops.EXPORT_FORMS`) is the form of the deformable attention in
    the graph: ``gather`` (Gather and arithmetic) or ``grid-sample`` (GridSample). ``quantize`` (ONNX only, a
    key of :data:`~mask_former.export.quantize.QUANTIZATIONS`, or None: float32) rewrites the written graph in
    reduced precision."""
    if export_format not in MODEL_FILES:
        raise ValueError(f"--format {export_format!r} is not supported: use one of {sorted(MODEL_FILES)}")
    if deform_attn not in EXPORT_FORMS:
        raise ValueError(f"--deform-attn {deform_attn!r} is not supported: use one of {sorted(EXPORT_FORMS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"--quantize {quantize!r} is not supported: use one of {sorted(QUANTIZATIONS)}")
    if quantize is not None and export_format != "onnx":
        raise ValueError(f"--quantize {quantize} applies to --format onnx only, not {export_format!r}")
    wrapper = ExportableMaskFormer(model.eval())
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / MODEL_FILES[export_format]
    image = example_image(cfg)
    start = time.perf_counter()
    logger.info("exporting to %s ...", path)
    with torch.no_grad(), export_form(deform_attn):
        EXPORTERS[export_format](wrapper, image, path)
    if quantize is not None:
        logger.info("quantizing the weight products to %s ...", quantize)
        QUANTIZATIONS[quantize](path)
    logger.info("exported in %.1f s", time.perf_counter() - start)
    # For the record: the runtime runs every form and precision alike.
    meta = {**meta_for(wrapper, cfg, export_format), "deform_attn": deform_attn, "quantize": quantize}
    (output_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return path
