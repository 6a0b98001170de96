"""Speed of multi-scale deformable attention on Mask2Former's shapes (R50 at 800x1333).

Three levels at strides 8, 16, 32: (100, 167), (50, 84), (25, 42); 8 heads, 4 points, 32 channels per
head, one query per pixel (the pixel decoder's encoder: Lq = S), batch 2. Sampling locations are each
query's own pixel plus offsets of a few pixels, as in a trained encoder. Times the forward and the
forward+backward of the PyTorch reference, an im2col-style baseline kernel (``im2col_baseline/``, built
here with torch's JIT loader, never shipped) and mask_former's kernel in float32, float16, bfloat16 and
deterministic mode: CUDA events, warmup, median. Prints a markdown table; ``--out FILE`` also writes it.

Run from the repository root with mask_former importable (``pip install -e .`` or ``PYTHONPATH=.``); needs
a CUDA GPU, the built extension and nvcc (set CUDA_HOME if torch does not find the toolkit):

    FORCE_CUDA=1 python setup.py build_ext --inplace
    python benchmarks/bench_ms_deform_attn.py --out benchmarks/out/ms_deform_attn.md
"""
import argparse
import functools
import os
import statistics
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import torch
from tqdm import tqdm

from mask_former.ops import ms_deform_attn_cuda, ms_deform_attn_pytorch
from mask_former.ops.ms_deform_attn_func import load_extension

LEVEL_SHAPES = [(100, 167), (50, 84), (25, 42)]
HEADS = 8
POINTS = 4
CHANNELS = 32
OFFSET_PIXELS = 2.0
BASELINE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "im2col_baseline")
REFERENCE = "PyTorch reference (grid_sample)"
BASELINE = "im2col baseline"
OURS = "mask_former kernel"
TARGETS = {"fwd+bwd vs PyTorch, float32": 5.0, "fwd+bwd vs im2col, float32": 2.0}


@dataclass
class Variant:
    name: str
    dtype: torch.dtype
    function: Callable[..., torch.Tensor]  # (value, shapes, starts, locations, weights) -> [N, Lq, M * D]


@dataclass
class Timing:
    variant: Variant
    forward_ms: float
    forward_backward_ms: float
    max_error: float  # over output and the three gradients, relative to the float32 reference's largest value


class Im2colFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, baseline, value, shapes, starts, locations, weights):
        ctx.baseline = baseline
        ctx.save_for_backward(value, shapes, starts, locations, weights)
        return baseline.forward(value, shapes, starts, locations, weights)

    @staticmethod
    def backward(ctx, grad_output):
        grad_value, grad_locations, grad_weights = ctx.baseline.backward(*ctx.saved_tensors, grad_output.contiguous())
        return None, grad_value, None, None, grad_locations, grad_weights


def load_im2col_baseline():
    from torch.utils.cpp_extension import load

    sources = [os.path.join(BASELINE_DIR, name) for name in ("im2col_baseline.cpp", "im2col_baseline.cu")]
    return load(name="ms_deform_attn_im2col_baseline", sources=sources, extra_cuda_cflags=["-O3"], verbose=False)


def make_inputs(batch: int, seed: int = 0) -> List[torch.Tensor]:
    """float32 ``(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)`` on the GPU."""
    generator = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(LEVEL_SHAPES, dtype=torch.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    spatial = int(areas.sum())
    levels = len(LEVEL_SHAPES)
    value = torch.randn(batch, spatial, HEADS, CHANNELS, generator=generator)
    references = []
    for height, width in LEVEL_SHAPES:
        ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
        references.append(torch.stack([xs.flatten() / width, ys.flatten() / height], -1))
    reference_points = torch.cat(references)  # [S, 2]: each query's own pixel
    offsets = torch.randn(batch, spatial, HEADS, levels, POINTS, 2, generator=generator) * OFFSET_PIXELS
    level_sizes = shapes.flip(-1).float()  # (W, H)
    locations = reference_points[None, :, None, None, None, :] + offsets / level_sizes[None, None, None, :, None, :]
    logits = torch.randn(batch, spatial, HEADS, levels * POINTS, generator=generator)
    weights = logits.softmax(-1).view(batch, spatial, HEADS, levels, POINTS)
    return [tensor.cuda() for tensor in (value, shapes, starts, locations, weights)]


def variants(baseline) -> List[Variant]:
    ours = functools.partial(ms_deform_attn_cuda, deterministic=False)
    ours_deterministic = functools.partial(ms_deform_attn_cuda, deterministic=True)
    return [
        Variant(REFERENCE, torch.float32, ms_deform_attn_pytorch),
        Variant(BASELINE, torch.float32, functools.partial(Im2colFunction.apply, baseline)),
        Variant(OURS, torch.float32, ours),
        Variant(OURS + ", deterministic", torch.float32, ours_deterministic),
        Variant(OURS, torch.float16, ours),
        Variant(OURS, torch.bfloat16, ours),
        Variant(OURS + ", deterministic", torch.bfloat16, ours_deterministic),
    ]


def median_ms(step: Callable[[], None], warmup: int, iters: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def run_forward_backward(variant: Variant, inputs: Sequence[torch.Tensor], grad_output: torch.Tensor):
    """``[output, grad_value, grad_sampling_locations, grad_attention_weights]``."""
    value, shapes, starts, locations, weights = inputs
    leaves = [tensor.detach().clone().requires_grad_() for tensor in (value.to(variant.dtype), locations, weights)]
    output = variant.function(leaves[0], shapes, starts, leaves[1], leaves[2])
    output.backward(grad_output.to(variant.dtype))
    return [output.detach()] + [leaf.grad for leaf in leaves]


def max_error(results: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> float:
    return max(float((a.float() - e).abs().max() / e.abs().max()) for a, e in zip(results, expected))


def time_variant(variant, inputs, grad_output, expected, warmup, iters) -> Timing:
    value, shapes, starts, locations, weights = inputs
    cast_value = value.to(variant.dtype)
    error = max_error(run_forward_backward(variant, inputs, grad_output), expected)

    @torch.no_grad()
    def forward():
        variant.function(cast_value, shapes, starts, locations, weights)

    leaves = [tensor.detach().clone().requires_grad_() for tensor in (cast_value, locations, weights)]
    cast_grad = grad_output.to(variant.dtype)

    def forward_backward():
        for leaf in leaves:
            leaf.grad = None
        variant.function(leaves[0], shapes, starts, leaves[1], leaves[2]).backward(cast_grad)

    return Timing(variant, median_ms(forward, warmup, iters), median_ms(forward_backward, warmup, iters), error)


DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def markdown(timings: List[Timing], batch: int, warmup: int, iters: int) -> str:
    by_key: Dict[tuple, Timing] = {(t.variant.name, t.variant.dtype): t for t in timings}
    reference = by_key[(REFERENCE, torch.float32)]
    baseline = by_key[(BASELINE, torch.float32)]
    ours = by_key[(OURS, torch.float32)]
    ours_bf16 = by_key[(OURS, torch.bfloat16)]
    queries = sum(h * w for h, w in LEVEL_SHAPES)
    lines = [
        f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}, CUDA {torch.version.cuda}.",
        f"Shapes: levels {LEVEL_SHAPES}, {HEADS} heads, {POINTS} points, {CHANNELS} channels per head, "
        f"Lq = S = {queries}, batch {batch}. Median of {iters} runs after {warmup} warmup runs (CUDA events).",
        "",
        "| implementation | dtype | forward (ms) | fwd+bwd (ms) | forward vs PyTorch | fwd+bwd vs PyTorch "
        "| fwd+bwd vs im2col | max rel. error |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        forward_speedup = reference.forward_ms / t.forward_ms
        speedup = reference.forward_backward_ms / t.forward_backward_ms
        baseline_speedup = baseline.forward_backward_ms / t.forward_backward_ms
        lines.append(
            f"| {t.variant.name} | {DTYPE_NAMES[t.variant.dtype]} | {t.forward_ms:.3f} | {t.forward_backward_ms:.3f} "
            f"| {forward_speedup:.1f}x | {speedup:.1f}x | {baseline_speedup:.1f}x | {t.max_error:.1e} |"
        )
    speedups = {
        "fwd+bwd vs PyTorch, float32": reference.forward_backward_ms / ours.forward_backward_ms,
        "fwd+bwd vs im2col, float32": baseline.forward_backward_ms / ours.forward_backward_ms,
    }
    lines += ["", "Targets:"]
    for name, target in TARGETS.items():
        verdict = "met" if speedups[name] >= target else "NOT met"
        lines.append(f"- {name}: {speedups[name]:.1f}x (target {target:.0f}x): {verdict}")
    faster = ours_bf16.forward_backward_ms < ours.forward_backward_ms
    lines.append(f"- bfloat16 faster than float32 on fwd+bwd: {'met' if faster else 'NOT met'}")
    lines.append("- max rel. error: largest |difference| over output and gradients, divided by the largest value "
                 "of the float32 reference")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_ms_deform_attn: needs a CUDA GPU")
    if load_extension() is None:
        sys.exit("bench_ms_deform_attn: mask_former._C is not built (FORCE_CUDA=1 python setup.py build_ext --inplace)")

    inputs = make_inputs(args.batch)
    generator = torch.Generator().manual_seed(1)
    grad_output = torch.randn(args.batch, inputs[3].shape[1], HEADS * CHANNELS, generator=generator).cuda()
    all_variants = variants(load_im2col_baseline())
    expected = run_forward_backward(all_variants[0], inputs, grad_output)
    timings = []
    for variant in tqdm(all_variants, desc="ms_deform_attn variants"):
        timings.append(time_variant(variant, inputs, grad_output, expected, args.warmup, args.iters))
        torch.cuda.empty_cache()
    table = markdown(timings, args.batch, args.warmup, args.iters)
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
