"""The post-processing tensor stages as the exported graph holds them, written for onnxruntime's CPU kernels.

References: :func:`~mask_former.modeling.postprocessing.semantic_inference`,
:func:`~mask_former.modeling.fast_paths.kept_queries.panoptic_tensors` and
:func:`~mask_former.modeling.postprocessing.instance_tensors`; each function here gives the same values wherever
the runtime's assembly reads them (tests/test_export_stages.py). What differs, measured with onnxruntime's
profiler on the R50 model at 512x512:

- the panoptic winner of each pixel is an ArgMax over the kept queries only (``NonZero``, a data-dependent row
  count, as the eager model's kept-query path); onnxruntime's ArgMax over the leading axis of ``[Q, H * W]`` is
  slow, so the fewer rows the better;
- areas are float sums of 0/1 values (exact below 2^24 pixels), not int64 ones: onnxruntime's int64 ReduceSum
  was about 8x slower than the Cast and float sum;
- the semantic map leaves the graph as ``[K, H * W]``, the matrix product's own output (the runtime views it as
  ``[K, H, W]``): a Reshape that is a graph output is a copy in onnxruntime.
"""
from typing import Dict

import torch
from torch import Tensor
from torch.nn import functional as F

from ..modeling.fast_paths.kept_queries import classify_queries, mean_inside_probability
from ..modeling.postprocessing import class_pair_scores


def semantic_rows(mask_cls: Tensor, mask_prob: Tensor) -> Tensor:
    """``[K, H * W]`` per-class score of each pixel, from ``mask_cls [Q, K+1]`` logits and ``mask_prob
    [Q, H * W]``."""
    return F.softmax(mask_cls, dim=-1)[:, :-1].t() @ mask_prob


def panoptic_rows(
    mask_cls: Tensor, mask_prob: Tensor, *, num_classes: int, object_mask_threshold: float,
    require_mask_confidence: bool = True,
) -> Dict[str, Tensor]:
    """The panoptic tensor stage over the kept queries, ``mask_prob`` ``[Q, H * W]``.

    Returns what :func:`~mask_former.modeling.fast_paths.kept_queries.panoptic_tensors` returns, with ``owner``
    and ``pixel_kept`` flat (``[H * W]``) and ``original_areas`` 0 for the queries not kept (the assembly reads
    the kept ones only).
    """
    scores, labels, keep = classify_queries(
        mask_cls, num_classes=num_classes, object_mask_threshold=object_mask_threshold
    )
    num_queries = mask_prob.shape[0]
    kept = keep.nonzero()[:, 0]
    # A last row, query 0's probabilities times 0, wins only where no query is kept: every kept row is >= 0 and
    # argmax takes the first of equal values, as the reference, whose rows of dropped queries are -1.
    rows = torch.cat([kept, kept.new_zeros(1)])
    prob = mask_prob.index_select(0, rows)
    weight = torch.cat([scores.index_select(0, kept), scores.new_zeros(1)])
    winner = (prob * weight[:, None]).argmax(0)
    owner = rows[winner]
    if require_mask_confidence:
        in_segment = prob.gather(0, winner[None])[0] >= 0.5
    else:
        in_segment = torch.ones_like(owner, dtype=torch.bool)
    zeros = torch.zeros(num_queries, dtype=torch.int64, device=mask_prob.device)
    counts = (prob >= 0.5).to(mask_prob.dtype).sum(1).long()[:-1]
    return {
        "labels": labels,
        "keep": keep,
        "owner": owner,
        "pixel_kept": keep[owner] & in_segment,
        "owned_areas": zeros.scatter_add(0, owner, torch.ones_like(owner)),
        "original_areas": zeros.scatter(0, kept, counts),
        "segment_areas": zeros.scatter_add(0, owner, in_segment.long()),
    }


def instance_rows(mask_cls: Tensor, mask_logits: Tensor, mask_prob: Tensor) -> Dict[str, Tensor]:
    """:func:`~mask_former.modeling.postprocessing.instance_tensors` from ``mask_logits [Q, H, W]`` and their
    sigmoid ``mask_prob [Q, H * W]``: ``pair_scores [Q * K]``, ``mask_scores [Q]``, ``query_masks`` bool
    ``[Q, H, W]``."""
    query_masks = mask_logits > 0
    return {
        "pair_scores": class_pair_scores(mask_cls),
        "mask_scores": mean_inside_probability(mask_prob, query_masks),
        "query_masks": query_masks,
    }
