"""Meta-architectures (detectron2's ``META_ARCH_REGISTRY``)."""
from . import maskformer

__all__ = ["maskformer"]
