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


def pixel_categories(panoptic_seg, segments_info: Iterable[Dict]) -> np.ndarray:
    """``[H, W]`` int64 category of each pixel of a panoptic result (``panoptic_seg [H, W]`` segment ids and
    their ``segments_info``), -1 where no segment is: how two panoptic results are compared pixel by pixel
    when their segment ids may differ."""
    ids = np.asarray(panoptic_seg).astype(np.int64)
    lookup = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
    for segment in segments_info:
        lookup[segment["id"]] = segment["category_id"]
    return lookup[ids]


def instance_pairs(
    top: np.ndarray, *, num_classes: int, thing_classes=None
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The instances' (query, class) pairs of the top pairs ``top`` (indices into the ``[Q * K]`` pairs): for
    panoptic models (``thing_classes`` given) those of stuff classes are dropped; the order is kept. They depend on
    the class scores alone, so they are known before any mask is scored.

    Returns:
        ``top`` ``[N]`` (the pairs kept), ``pred_classes`` int64 ``[N]`` and ``pair_query`` int64 ``[N]`` (the
        query whose mask each instance takes).
    """
    pred_classes = top % num_classes
    if thing_classes is not None:
        top = top[np.isin(pred_classes, np.asarray(sorted(int(c) for c in thing_classes), dtype=np.int64))]
        pred_classes = top % num_classes
    return top, pred_classes.astype(np.int64), (top // num_classes).astype(np.int64)


def assemble_instances(
    pair_scores: np.ndarray, mask_scores: np.ndarray, top: np.ndarray, *, num_classes: int, thing_classes=None
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The instances of the top (query, class) pairs ``top`` (indices into ``pair_scores [Q * K]``), those of
    :func:`instance_pairs`.

    Score = class probability times the query's ``mask_scores``.

    Returns:
        ``scores`` ``[N]``, ``pred_classes`` int64 ``[N]`` and ``pair_query`` int64 ``[N]`` (the
        query whose mask each instance takes).
    """
    top, pred_classes, pair_query = instance_pairs(top, num_classes=num_classes, thing_classes=thing_classes)
    return pair_scores[top] * mask_scores[pair_query], pred_classes, pair_query


def torch_cpu_topk_indices(values: np.ndarray, k: int) -> np.ndarray:
    """The indices ``torch.topk(values, k, sorted=False)`` returns for a 1-D float CPU tensor, in its
    order, so that the exported model lists instances as the eager model (and upstream) does.

    torch sorts ``(value, index)`` pairs with libstdc++: ``std::partial_sort`` when ``k * 64 <= n``
    (the k largest, descending), else ``std::nth_element`` (the k largest in its partition order).
    Both are replayed step by step here, comparing values only, NaN largest, as torch does.
    """
    items = [(float(v), i) for i, v in enumerate(values)]
    k = min(k, len(items))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k * 64 <= len(items):
        _heap_select(items, 0, k, len(items))
        _sort_heap(items, 0, k)
    else:
        _introselect(items, 0, k - 1, len(items), 2 * (len(items).bit_length() - 1))
    return np.array([i for _, i in items[:k]], dtype=np.int64)


def _greater(x, y) -> bool:
    return (np.isnan(x[0]) and not np.isnan(y[0])) or x[0] > y[0]


def _introselect(a, first, nth, last, depth_limit):
    while last - first > 3:
        if depth_limit == 0:
            _heap_select(a, first, nth + 1, last)
            a[first], a[nth] = a[nth], a[first]
            return
        depth_limit -= 1
        cut = _unguarded_partition_pivot(a, first, last)
        if cut <= nth:
            first = cut
        else:
            last = cut
    _insertion_sort(a, first, last)


def _unguarded_partition_pivot(a, first, last):
    mid = first + (last - first) // 2
    _move_median_to_first(a, first, first + 1, mid, last - 1)
    lo, hi, pivot = first + 1, last, a[first]
    while True:
        while _greater(a[lo], pivot):
            lo += 1
        hi -= 1
        while _greater(pivot, a[hi]):
            hi -= 1
        if not lo < hi:
            return lo
        a[lo], a[hi] = a[hi], a[lo]
        lo += 1


def _move_median_to_first(a, result, i, j, k):
    if _greater(a[i], a[j]):
        median = j if _greater(a[j], a[k]) else k if _greater(a[i], a[k]) else i
    else:
        median = i if _greater(a[i], a[k]) else k if _greater(a[j], a[k]) else j
    a[result], a[median] = a[median], a[result]


def _insertion_sort(a, first, last):
    for i in range(first + 1, last):
        value = a[i]
        if _greater(value, a[first]):
            a[first + 1:i + 1] = a[first:i]
            a[first] = value
            continue
        j = i
        while _greater(value, a[j - 1]):
            a[j] = a[j - 1]
            j -= 1
        a[j] = value


def _adjust_heap(a, first, hole, length, value):
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if _greater(a[first + child], a[first + child - 1]):
            child -= 1
        a[first + hole] = a[first + child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        a[first + hole] = a[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and _greater(a[first + parent], value):
        a[first + hole] = a[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    a[first + hole] = value


def _heap_select(a, first, middle, last):
    length = middle - first
    for parent in range((length - 2) // 2, -1, -1):
        _adjust_heap(a, first, parent, length, a[first + parent])
    for i in range(middle, last):
        if _greater(a[i], a[first]):
            value, a[i] = a[i], a[first]
            _adjust_heap(a, first, 0, length, value)


def _sort_heap(a, first, last):
    while last - first > 1:
        last -= 1
        value, a[last] = a[last], a[first]
        _adjust_heap(a, first, 0, last - first, value)
