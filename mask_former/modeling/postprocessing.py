"""Turn one image's (class logits, mask logits) pairs into semantic, panoptic and instance results.

:func:`full_size_inference` is the whole of it for one image, on the mask logits resized at once to the size the
tasks run at; :mod:`mask_former.modeling.fast_paths.row_bands` computes the same a band of rows at a time in eager
inference. The panoptic and instance results run on the kept queries in eager inference: see
:mod:`mask_former.modeling.fast_paths.kept_queries` for those fast paths and their references.
"""
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Tuple

import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import Boxes, Instances
from torch import Tensor
from torch.nn import functional as F

from ..assembly import assemble_instances, assemble_panoptic
from .fast_paths.kept_queries import mean_inside_probability, panoptic_stage, query_mask_scores


@dataclass(frozen=True)
class InferenceTasks:
    """The results inference makes of an image and their settings (the meta-architecture's test options).

    Attributes:
        num_classes: K.
        semantic, panoptic, instance: which results are made.
        resize_before_inference: the mask logits are resized to the output size before the tasks run
            (``SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE``, or panoptic / instance on); else the tasks run at the
            padded size and only ``sem_seg`` is resized.
        object_mask_threshold, overlap_threshold, require_mask_confidence: the panoptic rule
            (:func:`panoptic_inference`).
        topk: the instances' (query, class) pairs (:func:`instance_inference`).
        thing_classes: the thing classes, where panoptic inference is on (instances are then things only).
        recycle_output_memory: in eager CPU inference, the large outputs (``sem_seg``, the instances' masks) are
            written into the memory of earlier outputs that nothing refers to any more
            (:mod:`~mask_former.modeling.fast_paths.recycled_memory`) instead of fresh memory.
    """

    num_classes: int
    semantic: bool
    panoptic: bool
    instance: bool
    resize_before_inference: bool
    object_mask_threshold: float
    overlap_threshold: float
    require_mask_confidence: bool
    topk: int
    thing_classes: Optional[FrozenSet[int]] = None
    recycle_output_memory: bool = False


def resize_to_output(result: Tensor, image_size, height: int, width: int) -> Tensor:
    """detectron2's ``sem_seg_postprocess`` (crop the padding, resize to ``(height, width)``),
    without the resize when the crop already has the output size: bilinear resizing to the same
    size is the identity."""
    if tuple(image_size) == (height, width):
        return result[:, :height, :width]
    return sem_seg_postprocess(result, image_size, height, width)


def upsample_masks(mask_pred: Tensor, size) -> Tensor:
    """``[Q, h, w]`` mask logits resized (bilinear) to ``size`` ``(H, W)``: ``[Q, H, W]``."""
    return F.interpolate(mask_pred.unsqueeze(0), size=tuple(size), mode="bilinear", align_corners=False)[0]


def full_size_inference(
    mask_cls: Tensor, mask_pred: Tensor, *, tasks: InferenceTasks, padded_size, image_size, output_size
) -> Dict:
    """The reference: one image's results, the mask logits resized at once.

    Args:
        mask_cls: ``[Q, K+1]`` class logits.
        mask_pred: ``[Q, h, w]`` mask logits of the padded image, at the mask features' resolution.
        padded_size: ``(H_pad, W_pad)`` the padded image's size; image_size: ``(H, W)`` the image's size in it;
        output_size: ``(height, width)`` of the results.

    Returns:
        ``sem_seg [K, height, width]``, ``panoptic_seg`` ``(ids [height, width], segments_info)`` and
        ``instances``, those of ``tasks``.
    """
    mask_pred = upsample_masks(mask_pred, padded_size)
    if tasks.resize_before_inference:
        mask_pred = resize_to_output(mask_pred, image_size, *output_size)
        mask_cls = mask_cls.to(mask_pred)
    query_masks = mask_pred > 0 if tasks.instance else None
    # In place: past the instances' masks, the logits are not needed, and a fresh [Q, H, W] costs
    # more in page faults than the sigmoid itself.
    mask_prob = mask_pred.sigmoid_()
    result = {}
    if tasks.semantic:
        sem_seg = semantic_inference(mask_cls, mask_prob)
        if not tasks.resize_before_inference:
            sem_seg = resize_to_output(sem_seg, image_size, *output_size)
        result["sem_seg"] = sem_seg
    if tasks.panoptic:
        result["panoptic_seg"] = panoptic_inference(
            mask_cls, mask_prob, num_classes=tasks.num_classes, thing_classes=tasks.thing_classes,
            object_mask_threshold=tasks.object_mask_threshold, overlap_threshold=tasks.overlap_threshold,
            require_mask_confidence=tasks.require_mask_confidence,
        )
    if tasks.instance:
        result["instances"] = instance_inference(
            mask_cls, query_masks, mask_prob, num_classes=tasks.num_classes, topk=tasks.topk,
            thing_classes=tasks.thing_classes,
        )
    return result


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
