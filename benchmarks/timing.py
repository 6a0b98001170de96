"""The timing loop the CPU benchmarks share."""
import statistics
import sys
import time
from typing import Callable, Optional


def median_seconds(run: Callable[[], object], runs: int, warmup: int = 1, label: Optional[str] = None) -> float:
    """Median wall-clock seconds of ``runs`` calls of ``run`` after ``warmup`` untimed ones; with a ``label``,
    each run's time is printed to stderr as it ends."""
    for _ in range(warmup):
        run()
    times = []
    for i in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        if label is not None:
            print(f"[{label}] run {i + 1}/{runs}: {times[-1]:.3f} s", file=sys.stderr, flush=True)
    return statistics.median(times)
