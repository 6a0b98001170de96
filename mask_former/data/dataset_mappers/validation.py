"""Checks of the class ids in a record's labels, with errors naming the file."""
from typing import Optional

import numpy as np
from numpy.typing import ArrayLike

from ...errors import DatasetFileError

__all__ = ["check_class_ids", "unknown_class_ids", "unknown_class_ids_reference"]


def unknown_class_ids(class_ids: ArrayLike, num_classes: int, ignore_label: Optional[int] = None) -> np.ndarray:
    """The distinct values of ``class_ids`` outside ``[0, num_classes)`` other than ``ignore_label``, sorted.

    A few element-wise passes over the ids, and a sort of the unknown ones only: a label map costs O(pixels)
    where it is valid (see :func:`unknown_class_ids_reference` for the plain form).

    Args:
        class_ids: class ids of any shape and numeric dtype (a list, or a whole label map).
        num_classes: ``cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES``.
        ignore_label: the label of unlabelled pixels, allowed too.

    Returns:
        the unknown ids, ``[K]``, in the dtype of ``class_ids``.
    """
    ids = np.asarray(class_ids)
    known = (ids >= 0) & (ids < num_classes)
    if ignore_label is not None:
        known |= ids == ignore_label
    if known.all():
        return ids[:0].reshape(-1)
    return np.unique(ids[~known])


def unknown_class_ids_reference(
    class_ids: ArrayLike, num_classes: int, ignore_label: Optional[int] = None
) -> np.ndarray:
    """:func:`unknown_class_ids` by sorting all the ids (the reference that tests compare it with)."""
    values = np.unique(np.asarray(class_ids))
    unknown = values[(values < 0) | (values >= num_classes)]
    if ignore_label is not None:
        unknown = unknown[unknown != ignore_label]
    return unknown


def check_class_ids(
    class_ids: ArrayLike, num_classes: int, source: str, ignore_label: Optional[int] = None
) -> None:
    """Raise a ``DatasetFileError`` naming ``source`` and the unknown ids if any class id is outside
    ``[0, num_classes)`` (``ignore_label`` allowed).

    Args:
        class_ids: class ids, or a whole label map.
        num_classes: ``cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES``.
        source: the file the ids come from.
        ignore_label: the label of unlabelled pixels.
    """
    unknown = unknown_class_ids(class_ids, num_classes, ignore_label)
    if len(unknown):
        allowed = f" or the ignore label {ignore_label}" if ignore_label is not None else ""
        raise DatasetFileError(
            source,
            f"class ids {unknown.astype(np.int64).tolist()} are not in "
            f"[0, {num_classes}) (MODEL.SEM_SEG_HEAD.NUM_CLASSES){allowed}",
        )
