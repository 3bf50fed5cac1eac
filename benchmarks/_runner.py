"""A small common runner for the benchmarks: repeat, median time, peak memory, ratios."""

from __future__ import annotations

import contextlib
import multiprocessing
import statistics
import time
import traceback
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The MNIST IDX files of the shared data folder beside the repository (the tests' too).
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

__all__ = [
    "DATA_DIR",
    "Capped",
    "Timing",
    "format_table",
    "machine_rates",
    "run_capped",
    "sg_epoch",
    "time_call",
]


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


@dataclass(frozen=True)
class Capped:
    """What :func:`run_capped` saw: the result and the call's own wall time, or why not.

    ``status`` is ``"ok"``, ``"timeout"`` (the call was stopped at the cap; ``result`` and
    ``time_s`` are None) or ``"error"`` (``error`` holds the exception's type and message).
    """

    status: str
    result: Any = None
    time_s: float | None = None
    error: str = ""


def _child(conn: Any, fn: Callable[[], Any]) -> None:
    try:
        t0 = time.perf_counter()
        result = fn()
        conn.send(("ok", result, time.perf_counter() - t0, ""))
    except BaseException as exc:  # reported to the parent, which decides
        conn.send(("error", None, None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def run_capped(fn: Callable[[], Any], cap_s: float) -> Capped:
    """Call ``fn()`` in a forked child process and stop it after ``cap_s`` seconds.

    A peer library's ``fit`` cannot be interrupted from Python once it is inside compiled
    code, so a cap checked between calls lets one fit run far past it. In a child the cap is
    a hard one: at ``cap_s`` the child is killed and the call reported as a timeout.
    ``fn`` needs no pickling (the child is forked with the parent's memory); its result
    comes back pickled. The time returned is measured inside the child around ``fn()``
    alone (not the fork or the transfer of the result).

    Where ``fork`` does not exist (Windows) ``fn`` runs in this process and the cap is only
    checked after it returns.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        t0 = time.perf_counter()
        result = fn()
        el = time.perf_counter() - t0
        return Capped("ok", result, el) if el <= cap_s else Capped("timeout")
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(max(cap_s, 0.0)):
            return Capped("timeout")
        try:
            status, result, el, err = recv.recv()
        except EOFError:  # the child died without a word (killed, out of memory)
            proc.join(5)
            return Capped("error", error=f"child process exited with code {proc.exitcode}")
        return Capped(status, result, el, err)
    finally:
        recv.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)


def machine_rates(repeat: int = 3) -> dict[str, float]:
    """This machine's ceilings for the rooflines, measured now (so under the same load as
    the run beside them): matmul FLOP/s in float64 and float32 (one 2048^3 product) and
    copy bandwidth in bytes/s (512 MiB read and written once)."""
    import torch

    out = {}
    for name, dt in (("float64", torch.float64), ("float32", torch.float32)):
        a = torch.randn(2048, 2048, dtype=dt)
        b = torch.randn(2048, 2048, dtype=dt)
        a @ b
        t = time_call(lambda a=a, b=b: a @ b, repeat=repeat, trace_memory=False).median_s
        out[f"flops_{name}"] = 2 * 2048**3 / t
    src = torch.empty(2**26, dtype=torch.float64).fill_(1.0)  # 512 MiB
    dst = torch.empty_like(src)
    dst.copy_(src)
    t = time_call(lambda: dst.copy_(src), repeat=repeat, trace_memory=False).median_s
    out["bandwidth"] = 2 * src.numel() * 8 / t  # read + write
    return out


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
