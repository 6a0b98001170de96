"""Padding sizes to a multiple: of the size divisibility (images), of a window or patch size (Swin).

Written with integer arithmetic only, so that exporters keep the sizes symbolic.
"""

__all__ = ["padded_size", "padding_to_multiple"]


def padding_to_multiple(size: int, multiple: int) -> int:
    """How much to pad ``size`` to the next multiple of ``multiple`` (``-size % multiple``), written as a
    ceiling so that, under torch.export, every later size stays a plain multiple of ``ceil(size / multiple)``
    and equal sizes reached by different paths are provably equal."""
    return (size + multiple - 1) // multiple * multiple - size


def padded_size(size: int, multiple: int) -> int:
    """``size`` padded to the next multiple of ``multiple``."""
    return size + padding_to_multiple(size, multiple)
