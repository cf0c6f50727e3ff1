"""Timing as the benchmarks do it: warm-up runs first (lazy initialisation, caches), then the median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def median_time_s(run: Callable[[], T], repeats: int = 5, warmup: int = 1) -> tuple[T, float]:
    """The last result of ``run`` and the median wall time in seconds of ``repeats`` runs after ``warmup``."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)
