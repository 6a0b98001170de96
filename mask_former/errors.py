"""Every error type of mask_former: each names the file, key or option at fault in its message, and each is a
``ValueError``, so that a caller can catch one family or all of them."""
from typing import Optional

__all__ = [
    "CheckpointError",
    "CheckpointShapeError",
    "ConfigError",
    "DatasetDescriptionError",
    "DatasetFileError",
    "DemoError",
    "HuggingFaceConversionError",
    "IncompleteCheckpointError",
    "MissingWeightsError",
    "UnsafeCheckpointError",
]


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message names the file or the key."""


class DatasetDescriptionError(ValueError):
    """A dataset description, or a config that does not fit it; the message names the file and key."""


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


class DemoError(ValueError):
    """An input or output of a demo that cannot be used (missing, unreadable, of another size, no window to
    show in); the message names the file or the option."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message names the file and what to do."""


class CheckpointShapeError(CheckpointError):
    """Parameters of the checkpoint have other shapes than the model's."""


class IncompleteCheckpointError(CheckpointError):
    """At inference, a checkpoint leaves parameters uninitialized or holds keys the model lacks."""


class MissingWeightsError(CheckpointError):
    """At inference, no weights are given (empty ``MODEL.WEIGHTS``)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file holds objects that are not loaded, so that loading runs no code from the file."""


class HuggingFaceConversionError(CheckpointError):
    """A Hugging Face model (or one of ours, to export) that the conversion between the two cannot represent;
    the message names the file or config key."""
