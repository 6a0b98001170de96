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
from typing import Dict, Sequence

import torch

from timing import median_seconds

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def gemm_gflops(dtype: torch.dtype, size: int = 2048, runs: int = 5, warmup: int = 1) -> float:
    """Median GFLOP/s of ``torch.mm`` of two random ``[size, size]`` matrices in ``dtype`` on the CPU."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    seconds = median_seconds(lambda: torch.mm(a, b, out=out), runs, warmup)
    return 2.0 * size**3 / seconds / 1e9


def roofline(dtypes: Sequence[str], size: int = 2048, runs: int = 5) -> Dict[str, float]:
    """GFLOP/s of each dtype (keys of :data:`DTYPES`)."""
    return {name: gemm_gflops(DTYPES[name], size, runs) for name in dtypes}


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
    print("| dtype | GEMM | GFLOP/s | vs float32 | torch | machine |")
    print("|---|---|---|---|---|---|")
    for name, value in gflops.items():
        ratio = f"{value / gflops['float32']:.2f}x" if "float32" in gflops else "-"
        print(f"| {name} | {args.size}^2 | {value:.1f} | {ratio} | {torch.__version__} | {machine()} |")


if __name__ == "__main__":
    main()
