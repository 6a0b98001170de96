"""Turn one image's (class logits, mask logits) pairs into semantic, panoptic and instance results."""
from typing import Dict, List, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from detectron2.structures import Boxes, Instances

from ..assembly import assemble_instances, assemble_panoptic


def semantic_inference(mask_cls: Tensor, mask_prob: Tensor) -> Tensor:
    """Per-class score map: sum over queries of class probability times mask probability.

    Args:
        mask_cls: ``[Q, K+1]`` class logits (the last class is "no object").
        mask_prob: ``[Q, H, W]`` mask probabilities (sigmoid of the mask logits).

    Returns:
        ``[K, H, W]``.
    """
    probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    # A plain matrix product: the same sums as einsum("qc,qhw->chw"), and what exporters map to a GEMM.
    return (probs.t() @ mask_prob.flatten(1)).view(probs.shape[1], *mask_prob.shape[1:])


def kept_queries(mask_cls: Tensor, *, num_classes: int, object_mask_threshold: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Each query's best class probability and class ``[Q]``, and whether the panoptic result keeps it
    ``[Q]`` (its best class is not "no object" and scores above ``object_mask_threshold``)."""
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    return scores, labels, labels.ne(num_classes) & (scores > object_mask_threshold)


def class_pair_scores(mask_cls: Tensor) -> Tensor:
    """``[Q * K]`` class probability of every (query, class) pair, "no object" left out, query-major."""
    return F.softmax(mask_cls, dim=-1)[:, :-1].flatten()


def panoptic_tensors(
    mask_cls: Tensor,
    mask_prob: Tensor,
    *,
    num_classes: int,
    object_mask_threshold: float,
    require_mask_confidence: bool = True,
) -> Dict[str, Tensor]:
    """The tensor stage of :func:`panoptic_inference`: fixed-rank, traceable, no data-dependent shapes.

    Args:
        mask_cls: ``[Q, K+1]`` logits; mask_prob: ``[Q, H, W]`` mask probabilities.

    Returns:
        ``labels`` int64 ``[Q]``, ``keep`` bool ``[Q]``, ``owner`` int64 ``[H, W]`` (the kept query
        with the highest class score times mask probability), ``pixel_kept`` bool ``[H, W]``, and the
        int64 ``[Q]`` areas ``owned_areas``, ``original_areas`` and ``segment_areas``, the inputs of
        :func:`mask_former.assembly.assemble_panoptic`.
    """
    scores, labels, keep = kept_queries(mask_cls, num_classes=num_classes, object_mask_threshold=object_mask_threshold)
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


def count_true(masks: Tensor) -> Tensor:
    """int64 ``[N]`` number of True values of each of the bool ``masks [N, ...]``, summed as bytes: summing a
    bool tensor converts all of it to int64 first, which costs more than the sum."""
    return masks.flatten(1).view(torch.uint8).sum(1, dtype=torch.int32).long()


def kept_panoptic_tensors(
    mask_cls: Tensor,
    mask_prob: Tensor,
    *,
    num_classes: int,
    object_mask_threshold: float,
    require_mask_confidence: bool = True,
) -> Dict[str, Tensor]:
    """:func:`panoptic_tensors` (its plain reference) computed on the kept queries only, for eager inference.

    Equal to it wherever :func:`mask_former.assembly.assemble_panoptic` reads it: ``labels``,
    ``keep``, ``pixel_kept``, ``owner`` where ``pixel_kept``, and the areas of the kept queries (those of
    the others are 0 here). Areas are counted per owner (``bincount``) rather than on ``[Q, H, W]`` masks.
    """
    scores, labels, keep = kept_queries(mask_cls, num_classes=num_classes, object_mask_threshold=object_mask_threshold)
    kept = keep.nonzero().squeeze(1)
    num_queries, size = mask_prob.shape[0], mask_prob.shape[-2:]
    areas = {name: torch.zeros(num_queries, dtype=torch.int64, device=mask_prob.device)
             for name in ("owned_areas", "original_areas", "segment_areas")}
    if len(kept) == 0:
        owner = torch.zeros(size, dtype=torch.int64, device=mask_prob.device)
        return {"labels": labels, "keep": keep, "owner": owner, "pixel_kept": torch.zeros_like(owner, dtype=torch.bool), **areas}
    prob = mask_prob[kept]
    # argmax returns the first of equal maxima, so ties go to the first kept query as in the reference.
    kept_owner = (scores[kept].view(-1, 1, 1) * prob).argmax(0)
    if require_mask_confidence:
        pixel_kept = prob.gather(0, kept_owner.unsqueeze(0)).squeeze(0) >= 0.5
    else:
        pixel_kept = torch.ones(size, dtype=torch.bool, device=mask_prob.device)
    areas["owned_areas"][kept] = torch.bincount(kept_owner.flatten(), minlength=len(kept))
    areas["original_areas"][kept] = count_true(prob >= 0.5)
    areas["segment_areas"][kept] = torch.bincount(kept_owner[pixel_kept], minlength=len(kept))
    return {"labels": labels, "keep": keep, "owner": kept[kept_owner], "pixel_kept": pixel_kept, **areas}


def panoptic_inference(
    mask_cls: Tensor,
    mask_prob: Tensor,
    *,
    num_classes: int,
    thing_classes: set,
    object_mask_threshold: float,
    overlap_threshold: float,
    require_mask_confidence: bool = True,
) -> Tuple[Tensor, List[Dict]]:
    """MaskFormer's general panoptic inference.

    Queries are kept when their best class is not "no object" and scores above
    ``object_mask_threshold``; each pixel goes to the kept query with the highest class score
    times mask probability; a query's segment is dropped when less than ``overlap_threshold`` of
    its own mask (probability >= 0.5) survives, and segments of one stuff class are merged.

    Args:
        mask_cls: ``[Q, K+1]`` logits; mask_prob: ``[Q, H, W]`` mask probabilities.
        num_classes: K.
        thing_classes: contiguous ids of the thing classes.
        require_mask_confidence: Mask2Former's rule (True): a pixel joins its winner's segment only
            where the winner's mask probability is >= 0.5; MaskFormer v1's (False): the winner alone.

    Returns:
        ``panoptic_seg`` int32 ``[H, W]`` (0 = void) and ``segments_info``, a list of dicts with
        ``id``, ``isthing`` and ``category_id``.
    """
    stage = kept_panoptic_tensors(
        mask_cls, mask_prob, num_classes=num_classes, object_mask_threshold=object_mask_threshold,
        require_mask_confidence=require_mask_confidence,
    )
    panoptic_seg, segments_info = assemble_panoptic(
        **{k: v.cpu().numpy() for k, v in stage.items()}, thing_classes=thing_classes, overlap_threshold=overlap_threshold
    )
    return torch.from_numpy(panoptic_seg).to(mask_prob.device), segments_info


def instance_tensors(mask_cls: Tensor, mask_pred: Tensor, mask_prob: Tensor) -> Dict[str, Tensor]:
    """The tensor stage of :func:`instance_inference`: fixed-rank, traceable.

    Returns:
        ``pair_scores`` ``[Q * K]`` (the class probability of each (query, class) pair, query-major),
        ``mask_scores`` ``[Q]`` (mean mask probability inside each query's mask) and ``query_masks``
        bool ``[Q, H, W]``.
    """
    # A query can appear in several pairs: its mask and mask score are computed once.
    query_masks = mask_pred > 0
    return {
        "pair_scores": class_pair_scores(mask_cls),
        "mask_scores": mean_inside_probability(mask_prob, query_masks),
        "query_masks": query_masks,
    }


def mean_inside_probability(mask_prob: Tensor, query_masks: Tensor) -> Tensor:
    """``[Q]`` mean of ``mask_prob [Q, H, W]`` over each query's predicted mask ``query_masks`` (bool)."""
    inside = query_masks.flatten(1).to(mask_prob.dtype)
    return (mask_prob.flatten(1) * inside).sum(1) / (inside.sum(1) + 1e-6)


def mean_inside_probability_per_query(mask_prob: Tensor, query_masks: Tensor, queries: Tensor) -> Tensor:
    """:func:`mean_inside_probability` (its plain reference) of the rows ``queries`` only, one query at a time as
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


def instance_inference(
    mask_cls: Tensor,
    query_masks: Tensor,
    mask_prob: Tensor,
    *,
    num_classes: int,
    topk: int,
    thing_classes: set = None,
) -> Instances:
    """Top-k (query, class) pairs by class probability; score = class probability times the mean
    mask probability inside the predicted mask (mask logit > 0).

    Args:
        mask_cls: ``[Q, K+1]`` logits; query_masks: bool ``[Q, H, W]``, the mask logits at the output
            size ``> 0``; mask_prob: the logits' sigmoid.
        topk: number of (query, class) pairs kept (at most ``Q * K``).
        thing_classes: when given (panoptic models), pairs of other classes are dropped.

    Returns:
        ``Instances`` with ``pred_masks`` float ``[N, H, W]``, ``pred_boxes`` (zeros, as
        upstream), ``scores [N]`` and ``pred_classes [N]``.
    """
    # instance_tensors (the plain reference, exported) scores every query's mask; only those of the
    # top pairs' queries are needed.
    pair_scores = class_pair_scores(mask_cls)
    top = pair_scores.topk(min(topk, pair_scores.numel()), sorted=False).indices
    queries = (top // num_classes).unique()
    mask_scores = mask_prob.new_zeros(mask_cls.shape[0])
    mask_scores[queries] = mean_inside_probability_per_query(mask_prob, query_masks, queries)
    scores, pred_classes, pair_query = (
        torch.from_numpy(x).to(mask_cls.device)
        for x in assemble_instances(
            pair_scores.cpu().numpy(), mask_scores.cpu().numpy(), top.cpu().numpy(),
            num_classes=num_classes, thing_classes=thing_classes,
        )
    )
    result = Instances(tuple(query_masks.shape[-2:]))
    result.pred_masks = query_masks[pair_query].float()
    result.pred_boxes = Boxes(torch.zeros(len(pair_query), 4, device=query_masks.device))
    result.scores = scores
    result.pred_classes = pred_classes
    return result
