"""This machine's own GEMM throughput, the roof the CPU benchmarks measure a model against.

    .venv/bin/python benchmarks/roofline.py [--dtypes float32 bfloat16] [--size 2048] [--runs 5] [--threads N]

:func:`gemm_gflops` times ``size x size`` matrix products (``torch.mm``) in a dtype and returns the median
throughput in GFLOP/s (two floating-point operations per multiply-add), with torch's current thread count.
On a CPU with native bfloat16 (AVX-512 BF16, AMX, Arm BF16) the bfloat16 roof is about twice the float32 one
or more; without it bfloat16 is emulated and the roof is lower than float32's.
"""
import argparse
import os
import platform
from typing import Callable, Dict, Sequence

import torch

from mask_former.layers.onednn_linear import ONEDNN_LINEAR_AVAILABLE, onednn_linear
from timing import median_seconds

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def library_gflops(dtype: torch.dtype, size: int = 2048, runs: int = 5, warmup: int = 1) -> Dict[str, float]:
    """Library -> median GFLOP/s of its product of two random ``[size, size]`` matrices in ``dtype`` on the CPU
    (oneDNN's where :data:`ONEDNN_LINEAR_AVAILABLE`)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    products: Dict[str, Callable] = {"torch.mm": lambda: torch.mm(a, b, out=out)}
    if ONEDNN_LINEAR_AVAILABLE:
        products["oneDNN linear"] = lambda: onednn_linear(a, b)
    return {name: 2.0 * size**3 / median_seconds(product, runs, warmup) / 1e9 for name, product in products.items()}


def gemm_gflops(dtype: torch.dtype, size: int = 2048, runs: int = 5, warmup: int = 1) -> float:
    """The faster library's GFLOP/s in :func:`library_gflops`."""
    return max(library_gflops(dtype, size, runs, warmup).values())


def roofline(dtypes: Sequence[str], size: int = 2048, runs: int = 5) -> Dict[str, Dict[str, float]]:
    """Dtype (keys of :data:`DTYPES`) -> :func:`library_gflops`."""
    return {name: library_gflops(DTYPES[name], size, runs) for name in dtypes}


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["float32", "bfloat16"])
    parser.add_argument("--size", type=int, default=2048, help="matrix side")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gflops = roofline(args.dtypes, args.size, args.runs)
    roofs = {name: max(libraries.values()) for name, libraries in gflops.items()}
    print("| dtype | GEMM | GFLOP/s (roof) | vs float32 | each library's GFLOP/s | torch | machine |")
    print("|---|---|---|---|---|---|---|")
    for name, libraries in gflops.items():
        ratio = f"{roofs[name] / roofs['float32']:.2f}x" if "float32" in roofs else "-"
        each = ", ".join(f"{library} {value:.1f}" for library, value in libraries.items())
        print(f"| {name} | {args.size}^2 | {roofs[name]:.1f} | {ratio} | {each} | {torch.__version__} | {machine()} |")


if __name__ == "__main__":
    main()
