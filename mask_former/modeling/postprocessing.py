"""Turn one image's (class logits, mask logits) pairs into semantic, panoptic and instance results.

The panoptic and instance results run on the kept queries in eager inference: see
:mod:`mask_former.modeling.fast_paths.kept_queries` for those fast paths and their references.
"""
from typing import Dict, List, Tuple

import torch
from detectron2.structures import Boxes, Instances
from torch import Tensor
from torch.nn import functional as F

from ..assembly import assemble_instances, assemble_panoptic
from .fast_paths.kept_queries import mean_inside_probability, panoptic_stage, query_mask_scores


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


def class_pair_scores(mask_cls: Tensor) -> Tensor:
    """``[Q * K]`` class probability of every (query, class) pair, "no object" left out, query-major."""
    return F.softmax(mask_cls, dim=-1)[:, :-1].flatten()


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
    stage = panoptic_stage(
        mask_cls, mask_prob, num_classes=num_classes, object_mask_threshold=object_mask_threshold,
        require_mask_confidence=require_mask_confidence,
    )
    stage = {k: v.cpu().numpy() for k, v in stage.items()}
    panoptic_seg, segments_info = assemble_panoptic(
        **stage, thing_classes=thing_classes, overlap_threshold=overlap_threshold
    )
    return torch.from_numpy(panoptic_seg).to(mask_prob.device), segments_info


def instance_tensors(mask_cls: Tensor, mask_pred: Tensor, mask_prob: Tensor) -> Dict[str, Tensor]:
    """The tensor stage of :func:`instance_inference` as the exporter traces it: fixed-rank, every query's
    mask scored (the runtime takes the top pairs).

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
    # Only the top pairs' queries need a mask score (instance_tensors, exported, scores every query).
    pair_scores = class_pair_scores(mask_cls)
    top = pair_scores.topk(min(topk, pair_scores.numel()), sorted=False).indices
    queries = (top // num_classes).unique()
    mask_scores = query_mask_scores(mask_prob, query_masks, queries)
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
