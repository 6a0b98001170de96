"""Meta-architectures (detectron2's ``META_ARCH_REGISTRY``)."""
from . import maskformer, video_maskformer

__all__ = ["maskformer", "video_maskformer"]
