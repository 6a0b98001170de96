"""The final, data-dependent step of post-processing, in numpy only (no torch).

The eager model (``mask_former.modeling.postprocessing``) and the exported model's runtime
(``mask_former.export.runtime``) both call these functions on the fixed-rank outputs of the tensor
stage, so that the two cannot drift apart.
"""
from typing import Dict, Iterable, List, Tuple

import numpy as np


def assemble_panoptic(
    labels: np.ndarray,
    keep: np.ndarray,
    owner: np.ndarray,
    pixel_kept: np.ndarray,
    owned_areas: np.ndarray,
    original_areas: np.ndarray,
    segment_areas: np.ndarray,
    *,
    thing_classes: Iterable[int],
    overlap_threshold: float,
) -> Tuple[np.ndarray, List[Dict]]:
    """Number the segments of the kept queries, merging stuff classes, dropping overlapped queries.

    Args:
        labels, keep: ``[Q]`` best class and whether the query is kept.
        owner: ``[H, W]`` the kept query that wins each pixel (any value where none is kept).
        pixel_kept: ``[H, W]`` bool, whether the winner's segment may take the pixel.
        owned_areas, original_areas, segment_areas: ``[Q]`` pixels won, pixels with mask probability
            >= 0.5, pixels of the query's segment.

    Returns:
        ``panoptic_seg`` int32 ``[H, W]`` (0 = void) and ``segments_info`` (dicts with ``id``,
        ``isthing``, ``category_id``), numbered in query order.
    """
    things = {int(c) for c in thing_classes}
    segment_id = np.zeros(len(labels) + 1, dtype=np.int32)
    stuff_segment_ids: Dict[int, int] = {}
    segments_info: List[Dict] = []
    for q in np.flatnonzero(keep):
        if owned_areas[q] == 0 or original_areas[q] == 0 or segment_areas[q] == 0:
            continue
        if owned_areas[q] / original_areas[q] < overlap_threshold:
            continue
        pred_class = int(labels[q])
        isthing = pred_class in things
        if not isthing and pred_class in stuff_segment_ids:
            segment_id[q] = stuff_segment_ids[pred_class]
            continue
        segment_id[q] = len(segments_info) + 1
        if not isthing:
            stuff_segment_ids[pred_class] = int(segment_id[q])
        segments_info.append({"id": int(segment_id[q]), "isthing": isthing, "category_id": pred_class})
    owner = np.where(pixel_kept, owner, len(labels))
    return segment_id[owner], segments_info


def select_instances(pred_classes: np.ndarray, thing_classes=None) -> np.ndarray:
    """Indices of the (query, class) pairs an instance result keeps: all of them, or for panoptic
    models (``thing_classes`` given) those of thing classes, in their order."""
    if thing_classes is None:
        return np.arange(len(pred_classes))
    return np.flatnonzero(np.isin(pred_classes, np.asarray(sorted(int(c) for c in thing_classes), dtype=np.int64)))
