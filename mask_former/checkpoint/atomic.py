"""A checkpointer whose files are replaced atomically, so that a crash while saving never leaves a
truncated checkpoint or a ``last_checkpoint`` pointer to one."""
import os
from typing import IO, Callable

import torch

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicCheckpointer", "atomic_write"]


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """
    Write a file through ``write(binary_file)`` into a temporary file beside ``path``, flush it to
    disk, then rename it to ``path``: readers see either the old or the complete new file.
    """
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


class AtomicCheckpointer(DetectionCheckpointer):
    """
    ``DetectionCheckpointer`` (same arguments and file format) that saves checkpoints and the
    ``last_checkpoint`` pointer with :func:`atomic_write`; the pointer is updated only once the
    checkpoint it names is complete. ``save_dir`` must be a local directory.
    """

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        os.makedirs(self.save_dir, exist_ok=True)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        pointer = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(pointer, lambda f: f.write(last_filename_basename.encode()))
