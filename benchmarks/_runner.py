"""A small common runner for the benchmarks: repeat, median time, peak memory, ratios."""

from __future__ import annotations

import contextlib
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Timing", "format_table", "sg_epoch", "time_call"]


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


def sg_epoch(
    net: Any,
    x: Any,
    y: Any,
    steps: Sequence[int],
    weights: Sequence[float],
    sgc: Any,
    order_seed: int = 1,
    context: Callable[[], Any] = contextlib.nullcontext,
) -> float:
    """One epoch of ``cvxsnn.sg.train_sg``'s inner loop on ``net`` (the same calls: Adam at
    the grid's first rate, the protocol's batch size, clipping and threshold clamp); the
    batch order comes from ``order_seed``, and each forward pass runs inside ``context()``.

    Returns the mean weighted loss over the epoch. It is summed in float64 on the data's
    device, so a GPU run waits for no batch.
    """
    import torch

    from cvxsnn.sg import sg_loss

    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=sgc.lrs[0])
    n = x.shape[1]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(order_seed)).to(x.device)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for a in range(0, n, sgc.batch_size):
        idx = perm[a : a + sgc.batch_size]
        with context():
            out = net(x[:, idx], steps)
        loss = sg_loss(out, y[:, idx], net.config.out_layout, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, sgc.grad_clip)
        opt.step()
        with torch.no_grad():
            for th in net.thetas:
                th.clamp_(min=sgc.theta_min)
        total += loss.detach().double() * idx.numel()
    return float(total) / n


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
