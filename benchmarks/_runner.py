"""A small common runner for the benchmarks: repeat, median time, peak memory, ratios."""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Timing", "format_table", "time_call"]


@dataclass(frozen=True)
class Timing:
    """Median wall time over repeats, each time, peak traced memory and the last result."""

    median_s: float
    times_s: tuple[float, ...]
    peak_mib: float
    result: Any


def time_call(fn: Callable[[], Any], repeat: int = 3, trace_memory: bool = True) -> Timing:
    """Call ``fn`` ``repeat`` times; peak memory (tracemalloc) is taken on one extra call.

    tracemalloc sees numpy and Python allocations (not BLAS or compiled-extension buffers),
    and slows the call, so it runs on a separate, untimed call.
    """
    times, result = [], None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    peak = float("nan")
    if trace_memory:
        tracemalloc.start()
        try:
            fn()
            peak = tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()
    return Timing(statistics.median(times), tuple(times), peak, result)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Markdown table of ``rows`` (dicts) with the given columns; missing cells blank."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "-"
        return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"
    return str(v)
