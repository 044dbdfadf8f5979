"""Side-by-side timing shared by the benchmarks: candidates interleaved round by round so that
machine noise hits all of them alike; the median of each is reported. ``clock`` may be
``time.thread_time`` (CPU time of the calling thread: with one torch thread the op runs there, and
time spent descheduled on a loaded machine is not counted)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(
    candidates: dict[str, Callable[[], object]],
    rounds: int = 30,
    warmup: int = 3,
    inner: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per call of each candidate."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = clock()
            for _ in range(inner):
                fn()
            samples[name].append((clock() - start) / inner)
    return {name: statistics.median(values) for name, values in samples.items()}
