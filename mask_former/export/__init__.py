"""Exported MaskFormer / Mask2Former models (``tools/export_model.py``) and their runtime.

:func:`load_exported` needs only numpy and onnxruntime for an ONNX export: this package imports
without torch or detectron2. The exporter itself is ``mask_former.export.exporter`` (torch).
"""
from .runtime import FORMAT_VERSION, ExportedPredictor, load_exported

__all__ = ["FORMAT_VERSION", "ExportedPredictor", "load_exported"]
