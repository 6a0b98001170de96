"""Building blocks of the dataset preparation scripts in the repository's `datasets/` folder:
command line, input checks, atomic writes, a resumable parallel runner and annotation helpers.
"""

import argparse
import json
import multiprocessing as mp
import os
import shutil
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tqdm
from PIL import Image

from .registration import datasets_root

__all__ = [
    "copy_file",
    "is_done",
    "prepare_arg_parser",
    "require_input",
    "run_jobs",
    "save_image",
    "save_json",
    "segment_bbox",
    "semantic_from_panoptic",
]

_PARTIAL_SUFFIX = ".partial"


def prepare_arg_parser(description: str) -> argparse.ArgumentParser:
    """The options every preparation script takes: --root, --workers, --overwrite."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root",
        default=datasets_root(),
        help="folder holding the datasets (default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="worker processes; 0 or 1 works in this process",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    return parser


def require_input(path: str) -> str:
    """Return `path`, or raise naming it if that input folder or file does not exist."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Input {path} does not exist: download the dataset there first "
            "(see datasets/README.md), or pass --root."
        )
    return path


def is_done(path: str, overwrite: bool) -> bool:
    """Whether the output `path` exists and is to be kept (says so when it is)."""
    if os.path.exists(path) and not overwrite:
        print(f"{path} exists; skipping it (--overwrite redoes it).")
        return True
    return False


def _save_atomically(path: str, write: Callable) -> None:
    # Outputs appear only once complete, so an interrupted run can skip every existing output.
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial_path = path + _PARTIAL_SUFFIX
    write(partial_path)
    os.replace(partial_path, path)


def save_image(array: np.ndarray, path: str) -> None:
    """Save an image array atomically, in the format of `path`'s extension."""
    image_format = Image.registered_extensions()[os.path.splitext(path)[1].lower()]
    _save_atomically(path, lambda tmp: Image.fromarray(array).save(tmp, format=image_format))


def copy_file(source: str, path: str) -> None:
    """Copy the file `source` to `path` atomically."""
    _save_atomically(path, lambda tmp: shutil.copyfile(source, tmp))


def save_json(obj, path: str) -> None:
    """Write `obj` as json atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f)

    _save_atomically(path, write)


def _call(job: Tuple[Callable, tuple]):
    fn, args = job
    return fn(*args)


def run_jobs(
    fn: Callable,
    jobs: Sequence[tuple],
    *,
    workers: int,
    desc: str,
    skip_done: bool = False,
) -> List:
    """
    Run `fn(*job)` for every job, with a progress bar, in `workers` processes.

    Args:
        fn: a module-level function (it is sent to worker processes).
        jobs: argument tuples.
        workers: number of processes; 0 or 1 runs in this process.
        desc: progress bar label.
        skip_done: skip the jobs whose last argument, their output file, exists.

    Returns:
        list: results of the jobs that ran, in job order.
    """
    if skip_done:
        jobs = [job for job in jobs if not os.path.exists(job[-1])]
    tasks = [(fn, job) for job in jobs]
    if workers <= 1:
        return [_call(task) for task in tqdm.tqdm(tasks, desc=desc)]
    with mp.Pool(workers) as pool:
        results = pool.imap(_call, tasks, chunksize=max(1, min(64, len(tasks) // (4 * workers))))
        return list(tqdm.tqdm(results, total=len(tasks), desc=desc))


def segment_bbox(mask: np.ndarray) -> List[int]:
    """COCO box [x, y, width, height] of a non-empty boolean mask of shape (H, W)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def semantic_from_panoptic(
    panoptic_ids: np.ndarray, segments_info: List[Dict], label_of_category: Dict[int, int]
) -> np.ndarray:
    """
    Semantic label map of a COCO-format panoptic annotation.

    Args:
        panoptic_ids: (H, W) segment ids (`panopticapi.utils.rgb2id` of the panoptic PNG).
        segments_info: the annotation's segments, with "id" and dataset "category_id".
        label_of_category: dataset category id -> semantic label (at most 254).

    Returns:
        np.ndarray: (H, W) uint8 labels; 255 where no segment is.
    """
    semantic = np.full(panoptic_ids.shape, 255, dtype=np.uint8)
    for segment in segments_info:
        semantic[panoptic_ids == segment["id"]] = label_of_category[segment["category_id"]]
    return semantic
