"""Micro-benchmarks of the CPU pieces the speed work changed, each beside what it replaced, on the
shapes of the Mask2Former R50 COCO-panoptic model (512x512 inference, 384x384 training):

    .venv/bin/python benchmarks/bench_cpu_pieces.py [--runs 9]

- page faults: filling a fresh 100 MB buffer against refilling one already mapped (ms per MB);
- the pixel decoder's bilinear upsampling of an encoder level (batch 1), from the old
  transpose-then-reshape view and from the reshape-then-permute view;
- the fused CPU deformable-attention op, forward and forward + backward, on the encoder's shapes;
- the matcher (2 images, 100 queries, 6 targets, 12544 points) with the queries sampled by grid_sample
  (MASK_FORMER_DEFORM_ATTN=pytorch) and by the fused op (cpu);
- instance mask scores of 100 masks at 512x512, all at once and one mask at a time;
- the semantic map of 133 classes at 1024x2048 from bands of 30 rows (as the row-band post-processing makes
  them), one matrix product per band and one per block of columns, into a fresh map as in inference, the
  products on MKL (``torch.mm``) and on oneDNN (``mm_into``);
- the linear layers of the deformable encoder at 512x512 (2048-token chunks, the value projection on all 5376
  tokens) and of the decoder's cross-attention (100 queries), on MKL (``F.linear``) and on oneDNN
  (``onednn_linear``);
- the backward of one decoder layer's mask logits (2 images, 100 queries, 96x96) with 6 supervised queries per
  image, through the einsum and through `mask_logits`;
- the importance-point top-k of the mask loss (12 masks, 9408 of 37632 points), sorted and unsorted;
- the R50 backbone at 512x512 in eval, with detectron2's conv-then-FrozenBN and with the folded convs.

Prints the median milliseconds of each as a markdown table with the machine.
"""
import argparse
import contextlib
import os
import platform
import sys

import torch
import torch.nn.functional as F

from bench_fast_paths_cpu import FAST_PATHS
from mask_former.layers import onednn_linear
from mask_former.modeling.fast_paths.kept_queries import (
    mean_inside_probability,
    mean_inside_probability_per_query,
)
from mask_former.modeling.fast_paths.mask_logits import mask_logits, mask_logits_reference
from mask_former.modeling.fast_paths.row_bands import SEMANTIC_BLOCK_COLUMNS, SemanticRows
from mask_former.modeling.matcher import HungarianMatcher
from mask_former.ops import IMPLEMENTATION_ENV, kernel_unavailable_reason, ms_deform_attn_cpu
from timing import median_seconds

MB = 2**20


def median_ms(run, runs: int) -> float:
    return median_seconds(run, runs) * 1000


def page_faults(runs):
    numel = 100 * MB // 4
    buffer = torch.empty(numel)
    fresh = median_ms(lambda: torch.empty(numel).fill_(0), runs)
    mapped = median_ms(lambda: buffer.fill_(0), runs)
    return [("fill a fresh 100 MB buffer", fresh), ("refill a mapped 100 MB buffer", mapped),
            ("page-fault cost, ms per MB", (fresh - mapped) / 100)]


def level_upsampling(runs):
    level = torch.randn(1, 5376, 256)[:, :4096]
    old = level.transpose(1, 2).reshape(1, -1, 64, 64)
    new = level.reshape(1, 64, 64, -1).permute(0, 3, 1, 2)

    def upsample(x):
        return lambda: F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)

    return [("upsample a level, transpose-reshape view", median_ms(upsample(old), runs)),
            ("upsample a level, reshape-permute view", median_ms(upsample(new), runs))]


def deformable_attention(runs):
    generator = torch.Generator().manual_seed(0)
    shapes, starts = torch.tensor([[64, 64], [32, 32], [16, 16]]), torch.tensor([0, 4096, 5120])
    value = torch.randn(1, 5376, 8, 32, generator=generator, requires_grad=True)
    locations = torch.rand(1, 5376, 8, 3, 4, 2, generator=generator, requires_grad=True)
    weights = torch.rand(1, 5376, 8, 3, 4, generator=generator).softmax(-1).requires_grad_()
    inputs = (value, shapes, starts, locations, weights)
    grad = torch.randn(1, 5376, 256, generator=generator)

    def forward():
        with torch.no_grad():
            ms_deform_attn_cpu(*inputs)

    def forward_backward():
        torch.autograd.grad(ms_deform_attn_cpu(*inputs), (value, locations, weights), grad)

    return [("fused op forward, encoder shapes", median_ms(forward, runs)),
            ("fused op forward + backward", median_ms(forward_backward, runs))]


def matcher(runs):
    generator = torch.Generator().manual_seed(0)
    match = HungarianMatcher(2, 5, 5, num_points=12544)
    outputs = {"pred_logits": torch.randn(2, 100, 134, generator=generator),
               "pred_masks": torch.randn(2, 100, 96, 96, generator=generator)}
    targets = [{"labels": torch.randint(0, 133, (6,), generator=generator),
                "masks": (torch.rand(6, 384, 384, generator=generator) > 0.5).float()} for _ in range(2)]
    rows = []
    for implementation in ("pytorch", "cpu"):
        os.environ[IMPLEMENTATION_ENV] = implementation
        rows.append((f"matcher call, queries sampled with {IMPLEMENTATION_ENV}={implementation}",
                     median_ms(lambda: match(outputs, targets), runs)))
    del os.environ[IMPLEMENTATION_ENV]
    return rows


def instance_scores(runs):
    logits = torch.randn(100, 512, 512, generator=torch.Generator().manual_seed(0))
    prob, masks = logits.sigmoid(), logits > 0
    queries = torch.arange(100)
    rows = [("instance scores, all 100 masks at once", median_ms(lambda: mean_inside_probability(prob, masks), runs))]
    rows.append(("instance scores, one mask at a time (dot products)",
                 median_ms(lambda: mean_inside_probability_per_query(prob, masks, queries), runs)))
    return rows


@contextlib.contextmanager
def onednn(on: bool):
    """oneDNN's products (``mask_former/layers/onednn_linear.py``) on or off inside, by the switch
    ``bench_fast_paths_cpu.py --fast-path onednn_linear`` uses."""
    switch = FAST_PATHS["onednn_linear"].switch
    switch(None, on)
    try:
        yield
    finally:
        switch(None, True)


def semantic_bands(runs):
    generator = torch.Generator().manual_seed(0)
    size, band = (1024, 2048), 30
    mask_cls = torch.randn(100, 134, generator=generator)
    prob = torch.rand(100, band, size[1], generator=generator)

    def semantic_map(block_columns, on):
        def run():
            with onednn(on):
                rows = SemanticRows(mask_cls, size, block_columns)
                for start in range(0, size[0], band):
                    stop = min(start + band, size[0])
                    rows.add(start, stop, prob[:, : stop - start])
        return run

    blocks = ((band * size[1], "band of 30 rows"), (SEMANTIC_BLOCK_COLUMNS, f"{SEMANTIC_BLOCK_COLUMNS} columns"))
    return [
        (f"semantic map 1024x2048, one product per {what}, {library}", median_ms(semantic_map(columns, on), runs))
        for on, library in ((False, "MKL"), (True, "oneDNN"))
        for columns, what in blocks
    ]


def linear_layers(runs):
    generator = torch.Generator().manual_seed(0)
    shapes = {  # name -> (rows, in, out)
        "encoder feed-forward in, 2048 tokens": (2048, 256, 1024),
        "encoder feed-forward out, 2048 tokens": (2048, 1024, 256),
        "encoder value projection, 5376 tokens": (5376, 256, 256),
        "encoder sampling offsets, 2048 tokens": (2048, 256, 192),
        "decoder query projection, 100 queries": (100, 256, 256),
    }
    rows = []
    for name, (tokens, inputs, outputs) in shapes.items():
        x = torch.randn(tokens, inputs, generator=generator)
        weight, bias = torch.randn(outputs, inputs, generator=generator), torch.randn(outputs, generator=generator)
        rows += [(f"linear, {name}, MKL", median_ms(lambda: F.linear(x, weight, bias), runs))]
        if onednn_linear.ONEDNN_LINEAR_AVAILABLE:
            rows += [(f"linear, {name}, oneDNN", median_ms(lambda: onednn_linear.onednn_linear(x, weight, bias), runs))]
    return rows


def mask_logit_backward(runs):
    generator = torch.Generator().manual_seed(0)
    embed = torch.randn(2, 100, 256, generator=generator, requires_grad=True)
    features = torch.randn(2, 256, 96, 96, generator=generator).to(memory_format=torch.channels_last).requires_grad_()
    grad = torch.zeros(2, 100, 96, 96)
    grad[:, :6] = torch.randn(2, 6, 96, 96, generator=generator)

    def backward(function):
        return lambda: torch.autograd.grad(function(embed, features), (embed, features), grad)

    return [("mask logits backward, einsum", median_ms(backward(mask_logits_reference), runs)),
            ("mask logits backward, supervised queries only", median_ms(backward(mask_logits), runs))]


def importance_topk(runs):
    uncertainty = -torch.randn(12, 37632, generator=torch.Generator().manual_seed(0)).abs()
    return [
        (f"importance top-k, sorted={flag}", median_ms(lambda: torch.topk(uncertainty, 9408, dim=1, sorted=flag), runs))
        for flag in (True, False)
    ]


def backbone_eval(runs):
    from detectron2.config import get_cfg
    from detectron2.layers import Conv2d, ShapeSpec
    from detectron2.modeling import build_resnet_backbone

    from mask_former.modeling.fast_paths.frozen_bn import FrozenBNConv2d, fold_frozen_batch_norm

    cfg = get_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    torch.manual_seed(0)
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval().to(memory_format=torch.channels_last)
    image = torch.randn(1, 3, 512, 512).to(memory_format=torch.channels_last)
    folded = [m for m in fold_frozen_batch_norm(backbone).modules() if type(m) is FrozenBNConv2d]

    def run(kind):
        def forward():
            for conv in folded:
                conv.__class__ = kind
            with torch.no_grad():
                backbone(image)
        return forward

    return [("R50 backbone 512x512 eval, conv then FrozenBN", median_ms(run(Conv2d), runs)),
            ("R50 backbone 512x512 eval, folded convs", median_ms(run(FrozenBNConv2d), runs))]


PIECES = {piece.__name__: piece for piece in (
    page_faults, level_upsampling, deformable_attention, matcher, instance_scores, semantic_bands, linear_layers,
    mask_logit_backward, importance_topk, backbone_eval,
)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--pieces", nargs="+", choices=list(PIECES), metavar="NAME",
                        help=f"only these pieces (default: all): {', '.join(PIECES)}")
    args = parser.parse_args(argv)
    if kernel_unavailable_reason("cpu", torch.empty(0)):
        sys.exit(f"the fused CPU op is needed: {kernel_unavailable_reason('cpu', torch.empty(0))}")
    rows = []
    for piece in (PIECES[name] for name in args.pieces or PIECES):
        print(f"[bench_cpu_pieces] {piece.__name__}", file=sys.stderr, flush=True)
        rows += piece(args.runs)
    processor = platform.processor() or platform.machine()
    machine = f"{processor}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(f"machine: {machine}")
    print("| piece | median ms |\n|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
