"""Turn one image's (class logits, mask logits) pairs into semantic, panoptic and instance results."""
from typing import Dict, List, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from detectron2.structures import Boxes, Instances


def semantic_inference(mask_cls: Tensor, mask_prob: Tensor) -> Tensor:
    """Per-class score map: sum over queries of class probability times mask probability.

    Args:
        mask_cls: ``[Q, K+1]`` class logits (the last class is "no object").
        mask_prob: ``[Q, H, W]`` mask probabilities (sigmoid of the mask logits).

    Returns:
        ``[K, H, W]``.
    """
    probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_prob)


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
        require_mask_confidence: a pixel also needs its query's mask probability >= 0.5
            (Mask2Former); False: the argmax alone decides (MaskFormer v1).

    Returns:
        ``panoptic_seg`` int32 ``[H, W]`` (0 = void) and ``segments_info``, a list of dicts with
        ``id``, ``isthing`` and ``category_id``.
    """
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes = scores[keep], labels[keep]
    cur_masks = mask_prob[keep]
    h, w = mask_prob.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=mask_prob.device)
    segments_info = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info

    owner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    confident = cur_masks >= 0.5
    owned = owner.unsqueeze(0) == torch.arange(cur_masks.shape[0], device=owner.device).view(-1, 1, 1)
    # Areas for every kept query at once; only the merge below needs a loop.
    owned_areas = owned.flatten(1).sum(1).tolist()
    original_areas = confident.flatten(1).sum(1).tolist()
    segment_masks = owned & confident if require_mask_confidence else owned
    segment_areas = segment_masks.flatten(1).sum(1).tolist()
    stuff_segment_ids = {}
    current_id = 0
    for k, pred_class in enumerate(cur_classes.tolist()):
        if owned_areas[k] == 0 or original_areas[k] == 0 or segment_areas[k] == 0:
            continue
        if owned_areas[k] / original_areas[k] < overlap_threshold:
            continue
        isthing = pred_class in thing_classes
        if not isthing and pred_class in stuff_segment_ids:
            panoptic_seg[segment_masks[k]] = stuff_segment_ids[pred_class]
            continue
        current_id += 1
        if not isthing:
            stuff_segment_ids[pred_class] = current_id
        panoptic_seg[segment_masks[k]] = current_id
        segments_info.append({"id": current_id, "isthing": bool(isthing), "category_id": int(pred_class)})
    return panoptic_seg, segments_info


def instance_inference(
    mask_cls: Tensor,
    mask_pred: Tensor,
    mask_prob: Tensor,
    *,
    num_classes: int,
    topk: int,
    thing_classes: set = None,
) -> Instances:
    """Top-k (query, class) pairs by class probability; score = class probability times the mean
    mask probability inside the predicted mask (mask logit > 0).

    Args:
        mask_cls: ``[Q, K+1]`` logits; mask_pred: ``[Q, H, W]`` logits at the output size;
        mask_prob: their sigmoid.
        topk: number of (query, class) pairs kept (at most ``Q * K``).
        thing_classes: when given (panoptic models), pairs of other classes are dropped.

    Returns:
        ``Instances`` with ``pred_masks`` float ``[N, H, W]``, ``pred_boxes`` (zeros, as
        upstream), ``scores [N]`` and ``pred_classes [N]``.
    """
    num_queries = mask_cls.shape[0]
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    labels = torch.arange(num_classes, device=mask_cls.device).repeat(num_queries)
    scores_per_image, topk_indices = scores.flatten(0, 1).topk(min(topk, scores.numel()), sorted=False)
    labels_per_image = labels[topk_indices]
    query_per_pair = topk_indices // num_classes
    if thing_classes is not None:
        keep = torch.tensor([int(c) in thing_classes for c in labels_per_image.tolist()], dtype=torch.bool, device=mask_cls.device)
        scores_per_image, labels_per_image, query_per_pair = scores_per_image[keep], labels_per_image[keep], query_per_pair[keep]

    # A query can appear in several pairs: its mask and mask score are computed once.
    queries, pair_to_query = query_per_pair.unique(return_inverse=True)
    binary = mask_pred[queries] > 0
    inside = binary.flatten(1).float()
    mask_scores = (mask_prob[queries].flatten(1) * inside).sum(1) / (inside.sum(1) + 1e-6)

    result = Instances(tuple(mask_pred.shape[-2:]))
    result.pred_masks = binary[pair_to_query].float()
    result.pred_boxes = Boxes(torch.zeros(len(query_per_pair), 4, device=mask_pred.device))
    result.scores = scores_per_image * mask_scores[pair_to_query]
    result.pred_classes = labels_per_image
    return result
