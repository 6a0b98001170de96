"""MaskFormer and Mask2Former for Detectron2.

Importing the package registers its backbone, heads, decoders, meta-architecture, dataset mappers
and datasets into detectron2's registries, and makes ``DetectionCheckpointer`` refuse checkpoints
whose shapes do not fit a MaskFormer model and read ``.pth`` files with ``weights_only=True`` (see
``mask_former.checkpoint``).

Without torch (a deployment with only numpy and onnxruntime) the package imports with nothing
registered, so that the torch-free runtime ``mask_former.export`` can run exported models.
"""
try:
    import torch  # noqa: F401
except ModuleNotFoundError:
    torch = None

if torch is not None:
    from . import data, modeling
    from .checkpoint import install_loading_rules
    from .config import add_maskformer2_config, add_maskformer2_video_config

    install_loading_rules()

    __all__ = ["add_maskformer2_config", "add_maskformer2_video_config", "data", "modeling"]
else:
    __all__ = []

    def __getattr__(name):
        raise ImportError(
            f"mask_former.{name} needs torch and detectron2, which are not installed; without them only "
            "mask_former.export.load_exported (ONNX models) is available"
        )
