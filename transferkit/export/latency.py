"""How long a model call takes: the one place transferkit times models.

Exports do not time anything (timing on a loaded machine says little and costs every
export); `benchmarks/export_latency.py` calls `latency_ms` to compare the formats.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np


def latency_ms(calls: Mapping[str, Callable[[], Any]], n: int = 20,
               warmup: int = 3) -> dict[str, dict[str, float]]:
    """Median (and 90th percentile) wall time of each call, in milliseconds.

    The calls are interleaved round-robin, so background load slows each alike and
    their ratios stay meaningful.

    Args:
        calls: Name → a function of no arguments (e.g. one batch-1 prediction).
        n: Timed calls of each function.
        warmup: Untimed calls of each function first (tracing, caches, thread pools).

    Returns:
        Name → `{"median_ms", "p90_ms"}`, rounded to the microsecond.

    Raises:
        ValueError: `n` is under 1 or `warmup` is negative.
    """
    if n < 1 or warmup < 0:
        raise ValueError(f"need n >= 1 timed calls and warmup >= 0, got n={n}, "
                         f"warmup={warmup}")
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup + n):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: {"median_ms": round(float(np.median(t)), 3),
                   "p90_ms": round(float(np.percentile(t, 90)), 3)}
            for name, t in times.items()}
