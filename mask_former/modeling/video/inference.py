"""Inference of Mask2Former-VIS over a video: upstream's top-10 rule and masks, and the windows of a long video.

A video decoded at once gives one (class logits, masks) pair per query, a query standing for one object
through the video. Decoded window by window, each window's queries are put in the order of the previous
window's by Hungarian matching of their embeddings (MinVIS: Huang et al., "MinVIS: A Minimal Video Instance
Segmentation Framework without Video-based Training", NeurIPS 2022), so that query ``j`` of every window is
one track.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torch.nn import functional as F

from ..meta_arch.maskformer import resize_to_output


def associate_queries(previous: Tensor, current: Tensor) -> Tensor:
    """The order of ``current``'s queries that continues ``previous``'s: ``current[order[j]]`` is matched to
    ``previous[j]`` by Hungarian matching on the cosine similarity of the embeddings.

    Args:
        previous, current: ``[Q, C]`` query embeddings of two windows.

    Returns:
        ``[Q]`` int64, a permutation.
    """
    similarity = F.normalize(previous.float(), dim=-1) @ F.normalize(current.float(), dim=-1).t()
    rows, cols = linear_sum_assignment(similarity.cpu().numpy(), maximize=True)
    order = torch.empty(len(rows), dtype=torch.int64)
    order[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.int64)
    return order.to(current.device)


class QueryTracks:
    """The decoder's outputs of the consecutive windows of one video, as tracks: each window's queries in the
    order that continues the previous window's (:func:`associate_queries`).

    ``add`` one window at a time; then :meth:`scores` are the class probabilities of each track averaged over
    the windows and :meth:`masks` its mask logits through the video. With one window they are that window's
    outputs, unchanged.
    """

    def __init__(self):
        self.windows = 0
        self.score_sum: Optional[Tensor] = None
        self.window_masks: List[Tensor] = []
        self.embeds: Optional[Tensor] = None

    def add(self, logits: Tensor, masks: Tensor, embeds: Tensor) -> None:
        """
        Args:
            logits: ``[Q, K+1]`` class logits of the window's queries ("no object" last).
            masks: ``[Q, t, h, w]`` their mask logits in the window's t frames.
            embeds: ``[Q, C]`` their embeddings, by which the next window is associated.
        """
        if self.embeds is not None:
            order = associate_queries(self.embeds, embeds)
            logits, masks, embeds = logits[order], masks[order], embeds[order]
        scores = F.softmax(logits, dim=-1)[:, :-1]
        self.score_sum = scores if self.score_sum is None else self.score_sum + scores
        self.window_masks.append(masks)
        self.embeds = embeds
        self.windows += 1

    def scores(self) -> Tensor:
        """``[Q, K]`` class probabilities ("no object" left out), the mean over the windows."""
        return self.score_sum if self.windows == 1 else self.score_sum / self.windows

    def masks(self, tracks: Tensor) -> Tensor:
        """``[len(tracks), T, h, w]`` mask logits of the given tracks through all the frames."""
        return torch.cat([masks[tracks] for masks in self.window_masks], dim=1)


def top_pairs(scores: Tensor, k: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Upstream's rule: the ``k`` (query, class) pairs of highest probability, in ``topk``'s unsorted order.

    Args:
        scores: ``[Q, K]`` class probabilities.

    Returns:
        scores ``[k]``, classes ``[k]`` and queries ``[k]`` of the pairs (``k`` at most ``Q * K``).
    """
    num_classes = scores.shape[1]
    top, index = scores.flatten().topk(min(k, scores.numel()), sorted=False)
    return top, index % num_classes, index // num_classes


def binary_video_masks(
    mask_logits: Tensor, padded_size: Sequence[int], image_size: Sequence[int], output_size: Sequence[int],
    frame_chunk: int = 0,
) -> Tensor:
    """Upstream's masks: the logits upsampled (bilinear) to the padded input size, the padding cut off, resized to
    the output size, ``> 0``; computed ``frame_chunk`` frames at a time (0: all at once), which gives the same
    masks: each frame is resized alone.

    Args:
        mask_logits: ``[N, T, h, w]``.
        padded_size, image_size: the frames' size padded (the model's input) and unpadded.
        output_size: ``(height, width)`` asked for.

    Returns:
        bool ``[N, T, height, width]``.
    """
    num, frames = mask_logits.shape[:2]
    height, width = output_size
    masks = torch.empty((num, frames, height, width), dtype=torch.bool, device=mask_logits.device)
    step = frame_chunk if frame_chunk > 0 else max(frames, 1)
    for start in range(0, frames, step):
        chunk = mask_logits[:, start:start + step]
        upsampled = F.interpolate(chunk, size=tuple(padded_size), mode="bilinear", align_corners=False)
        resized = resize_to_output(upsampled.flatten(0, 1), image_size, height, width)
        masks[:, start:start + step] = resized.view(num, chunk.shape[1], height, width) > 0
    return masks
