"""Fast path: panoptic and instance post-processing on the kept queries only, in eager inference.

References: the fixed-rank tensor stages over every query, :func:`panoptic_tensors` and
:func:`mean_inside_probability`, which the exporter traces into its graph. Fast paths:
:func:`kept_panoptic_tensors` on the queries the panoptic result keeps, and
:func:`mean_inside_probability_per_query` on the queries of the top instance pairs; their shapes depend on the
data. Picked by :func:`uses_kept_queries`, through :func:`panoptic_stage` and :func:`query_mask_scores`.
"""
from typing import Dict, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from ...layers import capturing_graph

__all__ = [
    "classify_queries",
    "count_true",
    "kept_panoptic_tensors",
    "kept_query_owners",
    "mean_inside_probability",
    "mean_inside_probability_per_query",
    "panoptic_stage",
    "panoptic_tensors",
    "query_mask_scores",
    "uses_kept_queries",
]


def uses_kept_queries() -> bool:
    """Whether post-processing takes the kept-query fast paths: in eager inference. A graph being captured for
    export takes the references: the fast paths' shapes (``nonzero``, a loop over the top queries) depend on
    the data, which such a graph cannot hold."""
    return not capturing_graph()


def panoptic_stage(
    mask_cls: Tensor, mask_prob: Tensor, *, num_classes: int, object_mask_threshold: float,
    require_mask_confidence: bool = True,
) -> Dict[str, Tensor]:
    """The panoptic tensor stage (see :func:`panoptic_tensors`), on the kept queries where :func:`uses_kept_queries`."""
    stage = kept_panoptic_tensors if uses_kept_queries() else panoptic_tensors
    return stage(
        mask_cls, mask_prob, num_classes=num_classes, object_mask_threshold=object_mask_threshold,
        require_mask_confidence=require_mask_confidence,
    )


def query_mask_scores(mask_prob: Tensor, query_masks: Tensor, queries: Tensor) -> Tensor:
    """``[Q]`` :func:`mean_inside_probability` of the rows ``queries``: of those rows only, the others 0, where
    :func:`uses_kept_queries`; of every row otherwise."""
    if not uses_kept_queries():
        return mean_inside_probability(mask_prob, query_masks)
    scores = mask_prob.new_zeros(mask_prob.shape[0])
    scores[queries] = mean_inside_probability_per_query(mask_prob, query_masks, queries)
    return scores


def classify_queries(
    mask_cls: Tensor, *, num_classes: int, object_mask_threshold: float
) -> Tuple[Tensor, Tensor, Tensor]:
    """Each query's best class probability and class ``[Q]``, and whether the panoptic result keeps it
    ``[Q]`` (its best class is not "no object" and scores above ``object_mask_threshold``)."""
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    return scores, labels, labels.ne(num_classes) & (scores > object_mask_threshold)


def panoptic_tensors(
    mask_cls: Tensor, mask_prob: Tensor, *, num_classes: int, object_mask_threshold: float,
    require_mask_confidence: bool = True,
) -> Dict[str, Tensor]:
    """The reference: the tensor stage of :func:`mask_former.modeling.postprocessing.panoptic_inference` over
    every query, fixed-rank, traceable, no data-dependent shapes (what the exporter traces).

    Args:
        mask_cls: ``[Q, K+1]`` logits; mask_prob: ``[Q, H, W]`` mask probabilities.

    Returns:
        ``labels`` int64 ``[Q]``, ``keep`` bool ``[Q]``, ``owner`` int64 ``[H, W]`` (the kept query
        with the highest class score times mask probability), ``pixel_kept`` bool ``[H, W]``, and the
        int64 ``[Q]`` areas ``owned_areas``, ``original_areas`` and ``segment_areas``, the inputs of
        :func:`mask_former.assembly.assemble_panoptic`.
    """
    scores, labels, keep = classify_queries(
        mask_cls, num_classes=num_classes, object_mask_threshold=object_mask_threshold
    )
    # Probabilities are >= 0, so -1 never wins against a kept query; ties go to the first query either way.
    owner = torch.where(keep.view(-1, 1, 1), scores.view(-1, 1, 1) * mask_prob, -1.0).argmax(0)
    # v1 gives each pixel to its winner; Mask2Former only where the winner's mask is confident.
    in_segment = torch.ones_like(owner, dtype=torch.bool)
    if require_mask_confidence:
        in_segment = mask_prob.gather(0, owner.unsqueeze(0)).squeeze(0) >= 0.5
    # Areas per owner are counted with a scatter-add over the [H, W] owner map rather than on [Q, H, W] masks.
    pixels = owner.flatten()
    zeros = torch.zeros(mask_prob.shape[0], dtype=torch.int64, device=owner.device)
    return {
        "labels": labels,
        "keep": keep,
        "owner": owner,
        "pixel_kept": keep[owner] & in_segment,
        "owned_areas": zeros.scatter_add(0, pixels, torch.ones_like(pixels)),
        "original_areas": (mask_prob >= 0.5).flatten(1).sum(1),
        "segment_areas": zeros.scatter_add(0, pixels, in_segment.flatten().long()),
    }


def kept_panoptic_tensors(
    mask_cls: Tensor, mask_prob: Tensor, *, num_classes: int, object_mask_threshold: float,
    require_mask_confidence: bool = True,
) -> Dict[str, Tensor]:
    """The fast path: :func:`panoptic_tensors` computed on the kept queries only, for eager inference.

    Equal to it wherever :func:`mask_former.assembly.assemble_panoptic` reads it: ``labels``,
    ``keep``, ``pixel_kept``, ``owner`` where ``pixel_kept``, and the areas of the kept queries (those of
    the others are 0 here). Areas are counted per owner (``bincount``) rather than on ``[Q, H, W]`` masks.
    """
    scores, labels, keep = classify_queries(
        mask_cls, num_classes=num_classes, object_mask_threshold=object_mask_threshold
    )
    kept = keep.nonzero().squeeze(1)
    num_queries, size = mask_prob.shape[0], mask_prob.shape[-2:]
    areas = {name: torch.zeros(num_queries, dtype=torch.int64, device=mask_prob.device)
             for name in ("owned_areas", "original_areas", "segment_areas")}
    if len(kept) == 0:
        owner = torch.zeros(size, dtype=torch.int64, device=mask_prob.device)
        pixel_kept = torch.zeros_like(owner, dtype=torch.bool)
        return {"labels": labels, "keep": keep, "owner": owner, "pixel_kept": pixel_kept, **areas}
    found = kept_query_owners(mask_prob[kept], scores[kept], require_mask_confidence=require_mask_confidence)
    for name in areas:
        areas[name][kept] = found[name]
    return {"labels": labels, "keep": keep, "owner": kept[found["owner"]], "pixel_kept": found["pixel_kept"], **areas}


def kept_query_owners(prob: Tensor, kept_scores: Tensor, *, require_mask_confidence: bool) -> Dict[str, Tensor]:
    """The pixels and areas of :func:`kept_panoptic_tensors` from the kept queries alone.

    Args:
        prob: ``[n, H, W]`` mask probabilities of the n >= 1 kept queries; kept_scores: ``[n]`` their class scores.

    Returns:
        ``owner`` int64 ``[H, W]`` (the winner, an index into the n queries), ``pixel_kept`` bool ``[H, W]``, and
        the int64 ``[n]`` areas ``owned_areas``, ``original_areas`` and ``segment_areas``. A pixel's values read
        its own column of ``prob`` only and the areas are sums over the pixels, so that a band of rows of ``prob``
        gives the band's rows and its share of the areas.
    """
    # argmax returns the first of equal maxima, so ties go to the first kept query as in the reference.
    owner = (kept_scores.view(-1, 1, 1) * prob).argmax(0)
    if require_mask_confidence:
        pixel_kept = prob.gather(0, owner.unsqueeze(0)).squeeze(0) >= 0.5
    else:
        pixel_kept = torch.ones(prob.shape[1:], dtype=torch.bool, device=prob.device)
    return {
        "owner": owner,
        "pixel_kept": pixel_kept,
        "owned_areas": torch.bincount(owner.flatten(), minlength=len(prob)),
        "original_areas": count_true(prob >= 0.5),
        "segment_areas": torch.bincount(owner[pixel_kept], minlength=len(prob)),
    }


def count_true(masks: Tensor) -> Tensor:
    """int64 ``[N]`` number of True values of each of the bool ``masks [N, ...]``, summed as bytes: summing a
    bool tensor converts all of it to int64 first, which costs more than the sum."""
    return masks.flatten(1).view(torch.uint8).sum(1, dtype=torch.int32).long()


def mean_inside_probability(mask_prob: Tensor, query_masks: Tensor) -> Tensor:
    """The reference: ``[Q]`` mean of ``mask_prob [Q, H, W]`` over each query's predicted mask
    ``query_masks`` (bool)."""
    inside = query_masks.flatten(1).to(mask_prob.dtype)
    return (mask_prob.flatten(1) * inside).sum(1) / (inside.sum(1) + 1e-6)


def mean_inside_probability_per_query(mask_prob: Tensor, query_masks: Tensor, queries: Tensor) -> Tensor:
    """The fast path: :func:`mean_inside_probability` of the rows ``queries`` only, one query at a time as
    a dot product of its probabilities with its mask: no gathered copy of the masks and no ``[n, H, W]``
    product, only a float copy of one mask at a time, which the allocator reuses instead of mapping fresh pages
    for each. Equal up to the order of the sums.

    Returns ``[len(queries)]``.
    """
    scores = []
    for query in queries.tolist():
        inside = query_masks[query].reshape(-1)
        total = torch.dot(mask_prob[query].reshape(-1), inside.to(mask_prob.dtype))
        scores.append(total / (count_true(inside[None])[0].to(total.dtype) + 1e-6))
    return torch.stack(scores) if scores else mask_prob.new_zeros(0)
