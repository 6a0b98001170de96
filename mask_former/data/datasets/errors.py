"""The one error type of unusable dataset files (annotations, label maps), raised by the loaders
and the dataset mappers."""
from typing import Optional

__all__ = ["DatasetFileError"]


class DatasetFileError(ValueError):
    """
    A dataset file that cannot be used as it is: malformed, missing a key, inconsistent with its
    images or with the dataset's classes. The message names the file and, where known, the record
    and the key.

    Args:
        path: the file.
        problem: what is wrong with it.
        record: which record of the file, e.g. "annotation 3 (ADE_val_1.png)".
        key: the key of that record.

    Example::

        DatasetFileError("panoptic_val.json", "is missing", record="annotation 3", key="segments_info")
        # panoptic_val.json: annotation 3: key 'segments_info': is missing
    """

    def __init__(self, path: str, problem: str, *, record: Optional[str] = None, key: Optional[str] = None):
        self.path, self.record, self.key = path, record, key
        where = "".join(f": {part}" for part in (record, f"key {key!r}" if key else None) if part)
        super().__init__(f"{path}{where}: {problem}")
