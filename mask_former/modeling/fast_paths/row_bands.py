"""Fast path: full-resolution post-processing a band of rows at a time, in eager inference.

Reference: :func:`mask_former.modeling.postprocessing.full_size_inference`: the mask logits resized at once to
the size the tasks run at, a float ``[Q, H, W]``, with the instances' boolean ``[Q, H, W]`` beside it, and each
task on the whole tensors, with ``[Q, H, W]``-sized temporaries of its own (the instances' masks gathered, then
made float). Fast path: :func:`row_band_inference`, the same tasks on bands of rows of those logits, which are
made one band at a time (see :class:`BandSource`); each task writes its rows of its outputs (``sem_seg``, the
panoptic owner map, the instances' float masks) or adds to its sums over the pixels (the panoptic areas, the
instances' mask scores). Memory holds the outputs, which the reference makes too, and one band. Where
``tasks.recycle_output_memory``, ``sem_seg`` and the instances' masks are written into memory of earlier outputs
(:mod:`.recycled_memory`).

The same results: the logits' rows are bit-identical to the reference's, every per-pixel value and count is
computed as there, ``sem_seg`` is the same matrix product a band of columns at a time (on
:func:`~mask_former.layers.onednn_linear.mm_into`), and the instances' mask
scores add the same dot products a band at a time (in float64). Picked by :func:`uses_row_bands`.
"""
import math
from typing import Dict, Optional, Tuple

import torch
from detectron2.structures import Boxes, Instances
from torch import Tensor
from torch.nn import functional as F

from ...assembly import assemble_instances, assemble_panoptic, instance_pairs
from ...layers import capturing_graph
from ...layers.onednn_linear import mm_into
from ..postprocessing import InferenceTasks, class_pair_scores, resize_to_output, upsample_masks
from .kept_queries import classify_queries, kept_query_owners
from .recycled_memory import empty_output

__all__ = [
    "BAND_BYTES", "SEMANTIC_BLOCK_COLUMNS", "SMALL_OUTPUT_SPAN", "BandSource", "SemanticRows", "exact_resize",
    "row_band_inference", "upsampled_rows", "uses_row_bands",
]

BAND_BYTES = 24 * 2**20
"""The float logits of one band, about: a small addition to the outputs' memory, large enough that the rows
recomputed at each band's edges (:func:`upsampled_rows`) are a small share."""

SEMANTIC_BLOCK_COLUMNS = 2048
"""Columns of ``sem_seg`` one matrix product writes: a block's output (1 MiB at 133 classes) fits the core's L2
cache while the product writes it. One product over a band's tens of thousands of columns was slower at
1024x2048 (``benchmarks/bench_cpu_pieces.py``); the values are the same (each is the same sum over the
queries)."""


def uses_row_bands() -> bool:
    """Whether post-processing runs a band of rows at a time: in eager inference. A graph being captured for export
    takes the reference, which the exporter traces."""
    return not capturing_graph()


def exact_resize(low_size, size) -> bool:
    """Whether :func:`upsampled_rows` can make bands of ``low_size`` resized to ``size``: in both directions an
    integer factor that is a power of two, so that every source coordinate and weight of the bilinear resize is
    exact in floating point, the same whichever row the computation starts at."""
    factors = [divmod(out, low) for out, low in zip(size, low_size)]
    return all(remainder == 0 and factor & (factor - 1) == 0 for factor, remainder in factors)


# torch's bilinear resize on the CPU takes one of two kernels, which round differently: one vectorized over the
# channels where the input is channels-last, or where the output's height plus width is at most this (torch 2.x,
# ``_use_vectorized_kernel_cond_2d``), the generic one otherwise.
SMALL_OUTPUT_SPAN = 128


def upsampled_rows(
    mask_pred: Tensor, size: Tuple[int, int], start: int, stop: int, width: int, buffer: Optional[Tensor] = None
) -> Tensor:
    """Rows ``start:stop`` and columns ``:width`` of ``upsample_masks(mask_pred, size)``, bit-identical to them,
    computed from the rows of ``mask_pred [Q, h, w]`` that they read and one more on each side
    (:func:`exact_resize` must hold). Written into ``buffer`` (1-d, grown as needed) where given, which the
    next call overwrites: a band's memory is then the same from band to band, instead of pages the kernel maps
    and clears anew for each (glibc returns a band's memory to the system when it is freed at the top of the
    heap).

    Output row ``y`` reads source rows ``floor((y + 0.5) / f - 0.5)`` and the one after (clamped to the image),
    ``f`` the factor. Resized at the same scale, a slice of source rows from ``first`` gives output rows from
    ``f * first`` with the same coordinates less ``first`` (exact numbers), except those within ``f / 2`` of the
    slice's edges, which are clamped to the slice instead of reading the rows beyond it: a source row on each side
    keeps them out of ``start:stop``. The resize is asked for the rows up to ``stop`` and the columns up to
    ``width`` only, at the whole's scale, and at least as many rows as make torch pick the kernel it resizes the
    whole with (see :data:`SMALL_OUTPUT_SPAN`).

    Returns:
        ``[Q, stop - start, width]``, a view (each query's rows contiguous) into a slightly taller band.
    """
    height = mask_pred.shape[-2]
    factor_h, factor_w = size[0] // height, size[1] // mask_pred.shape[-1]
    first = max(start // factor_h - 1, 0)
    last = min((stop - 1) // factor_h + 2, height)
    rows = stop - factor_h * first
    # Where the output has as many rows (columns) as the input, torch copies them whatever the scale: one more.
    rows += factor_h > 1 and rows == last - first
    columns = width + (factor_w > 1 and width == mask_pred.shape[-1])
    if size[0] + size[1] > SMALL_OUTPUT_SPAN:
        rows = max(rows, SMALL_OUTPUT_SPAN + 1 - columns)
    # F.interpolate cannot take both a size and the scale: the operator it calls can.
    arguments = (mask_pred[None, :, first:last], [rows, columns], False, float(factor_h), float(factor_w))
    if buffer is None:
        band = torch.ops.aten.upsample_bilinear2d(*arguments)[0]
    else:
        shape = (1, mask_pred.shape[0], rows, columns)
        numel = math.prod(shape)
        if buffer.numel() < numel:
            buffer.resize_(numel)
        out = buffer[:numel].view(shape)
        band = torch.ops.aten.upsample_bilinear2d.out(*arguments, out=out)[0]
    return band[:, start - factor_h * first: stop - factor_h * first, :width]


class BandSource:
    """The mask logits the tasks run on, ``[Q, H, W]`` at :attr:`size`, a band of rows at a time, as the reference
    makes them: resized to the padded size, then cropped to the image and resized to the output size where
    ``tasks.resize_before_inference`` (see :func:`full_size_inference`).

    Where no second resize is needed (the output has the image's size, or the tasks run at the padded size) and
    :func:`exact_resize` holds, each band is resized from the low-resolution rows it reads
    (:func:`upsampled_rows`); otherwise the reference's resized logits are made once and sliced.
    """

    def __init__(self, mask_pred: Tensor, *, tasks: InferenceTasks, padded_size, image_size, output_size):
        padded_size, image_size, output_size = tuple(padded_size), tuple(image_size), tuple(output_size)
        self.size = output_size if tasks.resize_before_inference else padded_size
        # Where the tasks run at the image's size, the reference's second resize is the identity (a crop).
        crops = not tasks.resize_before_inference or output_size == image_size
        if crops and exact_resize(mask_pred.shape[-2:], padded_size):
            buffer = mask_pred.new_empty(0)
            self._rows = lambda start, stop: upsampled_rows(
                mask_pred, padded_size, start, stop, self.size[1], buffer
            )
        else:
            resized = upsample_masks(mask_pred, padded_size)
            if tasks.resize_before_inference:
                resized = resize_to_output(resized, image_size, *output_size)
            self._rows = lambda start, stop: resized[:, start:stop]

    def rows(self, start: int, stop: int) -> Tensor:
        """``[Q, stop - start, W]`` logits of rows ``start:stop``, which the caller may change in place, and which
        the next call may overwrite."""
        return self._rows(start, stop)


class SemanticRows:
    """:func:`~mask_former.modeling.postprocessing.semantic_inference` written band by band into ``sem_seg``, each
    band ``block_columns`` columns of the ``[K, H * W]`` output at a time (see :data:`SEMANTIC_BLOCK_COLUMNS`)."""

    def __init__(
        self, mask_cls: Tensor, size, block_columns: int = SEMANTIC_BLOCK_COLUMNS, recycle_memory: bool = False
    ):
        self.probs = F.softmax(mask_cls, dim=-1)[:, :-1].t()
        self.sem_seg = empty_output("sem_seg", (self.probs.shape[0], *size), like=mask_cls, recycle=recycle_memory)
        self.block_columns = block_columns

    def add(self, start: int, stop: int, prob: Tensor):
        width = self.sem_seg.shape[-1]
        # The band's columns of the [K, H * W] output: a strided matrix the products write into directly.
        out = self.sem_seg.view(self.sem_seg.shape[0], -1)[:, start * width: stop * width]
        prob = prob.reshape(prob.shape[0], -1)
        for first in range(0, out.shape[1], self.block_columns):
            block = slice(first, first + self.block_columns)
            mm_into(self.probs, prob[:, block], out[:, block])

    def finish(self) -> Dict:
        return {"sem_seg": self.sem_seg}


class PanopticRows:
    """The panoptic tensor stage (:func:`~.kept_queries.kept_panoptic_tensors`) band by band, then its assembly."""

    def __init__(self, mask_cls: Tensor, size, tasks: InferenceTasks):
        self.tasks = tasks
        scores, self.labels, self.keep = classify_queries(
            mask_cls, num_classes=tasks.num_classes, object_mask_threshold=tasks.object_mask_threshold
        )
        self.kept = self.keep.nonzero().squeeze(1)
        self.kept_scores = scores[self.kept]
        self.owner = torch.zeros(size, dtype=torch.int64, device=mask_cls.device)
        self.pixel_kept = torch.zeros(size, dtype=torch.bool, device=mask_cls.device)
        self.areas = {name: torch.zeros(len(self.labels), dtype=torch.int64, device=mask_cls.device)
                      for name in ("owned_areas", "original_areas", "segment_areas")}

    def add(self, start: int, stop: int, prob: Tensor):
        if len(self.kept) == 0:
            return
        found = kept_query_owners(
            prob[self.kept], self.kept_scores, require_mask_confidence=self.tasks.require_mask_confidence
        )
        self.owner[start:stop] = self.kept[found["owner"]]
        self.pixel_kept[start:stop] = found["pixel_kept"]
        for name, area in self.areas.items():
            area[self.kept] += found[name]

    def finish(self) -> Dict:
        stage = {"labels": self.labels, "keep": self.keep, "owner": self.owner, "pixel_kept": self.pixel_kept,
                 **self.areas}
        panoptic_seg, segments_info = assemble_panoptic(
            **{k: v.cpu().numpy() for k, v in stage.items()}, thing_classes=self.tasks.thing_classes,
            overlap_threshold=self.tasks.overlap_threshold,
        )
        return {"panoptic_seg": (torch.from_numpy(panoptic_seg).to(self.owner.device), segments_info)}


class InstanceRows:
    """:func:`~mask_former.modeling.postprocessing.instance_inference` band by band. The instances' pairs are chosen
    from the class scores first; then each band writes its rows of their float masks straight into the output
    (:meth:`write_masks`, from the logits) and adds to their queries' mask scores, read from those rows
    (:meth:`add`, from the probabilities): no gathered copy of the queries' logits or masks."""

    def __init__(self, mask_cls: Tensor, size, tasks: InferenceTasks):
        self.tasks = tasks
        self.pair_scores = class_pair_scores(mask_cls)
        self.top = self.pair_scores.topk(min(tasks.topk, self.pair_scores.numel()), sorted=False).indices
        _, _, pair_query = instance_pairs(
            self.top.cpu().numpy(), num_classes=tasks.num_classes, thing_classes=tasks.thing_classes
        )
        self.pair_query = pair_query.tolist()
        # Each query whose mask is read, with the first instance taking it.
        self.queries = {}
        for instance, query in enumerate(self.pair_query):
            self.queries.setdefault(query, instance)
        self.sums = torch.zeros(len(self.queries), dtype=torch.float64, device=mask_cls.device)
        self.counts = torch.zeros(len(self.queries), dtype=torch.float64, device=mask_cls.device)
        self.masks = empty_output(
            "instance_masks", (len(pair_query), *size), like=mask_cls, recycle=tasks.recycle_output_memory
        )

    def write_masks(self, start: int, stop: int, logits: Tensor):
        for instance, query in enumerate(self.pair_query):
            torch.gt(logits[query], 0, out=self.masks[instance, start:stop])

    def add(self, start: int, stop: int, prob: Tensor):
        if not self.queries:
            return
        # Dot products (BLAS) and sums of one query's rows at a time: a batched product would add the pixels one
        # by one in float32 (off by 1e-4 over a 300 x 352 mask), and a product of every row a [n, rows, W] copy.
        masks = [self.masks[instance, start:stop].reshape(-1) for instance in self.queries.values()]
        self.sums += torch.stack([torch.dot(prob[query].reshape(-1), mask) for query, mask in zip(self.queries, masks)])
        self.counts += torch.stack([mask.sum() for mask in masks])

    def finish(self) -> Dict:
        totals = self.sums.to(self.masks.dtype)
        mask_scores = self.pair_scores.new_zeros(len(self.pair_scores) // self.tasks.num_classes)
        mask_scores[list(self.queries)] = totals / (self.counts.to(totals.dtype) + 1e-6)
        scores, pred_classes, pair_query = (
            torch.from_numpy(x).to(self.masks.device)
            for x in assemble_instances(
                self.pair_scores.cpu().numpy(), mask_scores.cpu().numpy(), self.top.cpu().numpy(),
                num_classes=self.tasks.num_classes, thing_classes=self.tasks.thing_classes,
            )
        )
        result = Instances(tuple(self.masks.shape[-2:]))
        result.pred_masks = self.masks
        result.pred_boxes = Boxes(torch.zeros(len(pair_query), 4, device=self.masks.device))
        result.scores = scores
        result.pred_classes = pred_classes
        return {"instances": result}


def row_band_inference(
    mask_cls: Tensor, mask_pred: Tensor, *, tasks: InferenceTasks, padded_size, image_size, output_size
) -> Dict:
    """The fast path: :func:`~mask_former.modeling.postprocessing.full_size_inference` (same arguments and
    results) a band of rows at a time."""
    source = BandSource(
        mask_pred, tasks=tasks, padded_size=padded_size, image_size=image_size, output_size=output_size
    )
    mask_cls = mask_cls.to(mask_pred.dtype)
    size = source.size
    builders = []
    if tasks.semantic:
        builders.append(SemanticRows(mask_cls, size, recycle_memory=tasks.recycle_output_memory))
    if tasks.panoptic:
        builders.append(PanopticRows(mask_cls, size, tasks))
    instances = InstanceRows(mask_cls, size, tasks) if tasks.instance else None
    if instances is not None:
        builders.append(instances)
    band = max(1, BAND_BYTES // max(1, mask_pred.shape[0] * size[1] * mask_pred.element_size()))
    for start in range(0, size[0], band):
        stop = min(start + band, size[0])
        logits = source.rows(start, stop)
        if instances is not None:
            instances.write_masks(start, stop, logits)
        prob = logits.sigmoid_()
        for builder in builders:
            builder.add(start, stop, prob)
    result = {}
    for builder in builders:
        result.update(builder.finish())
    if tasks.semantic and not tasks.resize_before_inference:
        result["sem_seg"] = resize_to_output(result["sem_seg"], image_size, *output_size)
    return result
