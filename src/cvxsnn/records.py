"""Result records: stage timers, peak memory, package versions, atomic JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["StageTimer", "environment", "peak_memory_mb", "to_jsonable", "write_json"]


class StageTimer:
    """Wall time, and on Linux the peak resident memory, per named stage.

    ``seconds[stage]`` sums the wall time of every entry into ``stage``;
    ``peak_rss_mib[stage]`` is the largest resident set size the process reached
    inside it (MiB), read from the kernel's high-water mark, which is reset when
    the stage starts (``/proc/self/clear_refs``). Where that reset is not
    available (not Linux, or not permitted) ``peak_rss_mib`` stays empty.
    Nested stages are allowed; an outer stage's peak then covers its inner ones.

    Examples
    --------
    >>> timer = StageTimer()
    >>> with timer("solve"):
    ...     pass
    >>> sorted(timer.seconds)
    ['solve']
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss_mib: dict[str, float] = {}
        self._open: list[str] = []

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        before = _reset_rss_high_water()
        tracked = before is not None
        if tracked:
            # the reset forgets what the stages around this one reached so far: keep it
            for name in self._open:
                self.peak_rss_mib[name] = max(self.peak_rss_mib.get(name, 0.0), before)
        self._open.append(stage)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
            self._open.pop()
            peak = _rss_high_water_mib() if tracked else None
            if peak is not None:
                # a reset inside this stage (a nested stage) lowered the kernel's mark;
                # the nested stage's own peak is counted for every stage around it
                for name in [stage, *self._open]:
                    self.peak_rss_mib[name] = max(self.peak_rss_mib.get(name, 0.0), peak)


#: The largest high-water mark seen before a reset (MiB): a reset must not lower the
#: process-wide peak that :func:`peak_memory_mb` reports.
_PEAK_BEFORE_RESETS_MIB = 0.0


def _rss_high_water_mib() -> float | None:
    """The kernel's resident-set high-water mark (``VmHWM``) in MiB, or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_rss_high_water() -> float | None:
    """Reset ``VmHWM`` to the current RSS (Linux); the mark before the reset (MiB), or
    None where it could not be reset."""
    global _PEAK_BEFORE_RESETS_MIB
    before = _rss_high_water_mib()
    if before is None:
        return None
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return None
    _PEAK_BEFORE_RESETS_MIB = max(_PEAK_BEFORE_RESETS_MIB, before)
    return before


def peak_memory_mb(device: torch.device | str | None = None) -> dict[str, float]:
    """Peak resident memory of this process (MiB), and of the CUDA device when used.

    The host figure is the process-wide high-water mark (``ru_maxrss``, or the
    largest mark seen before a :class:`StageTimer` reset it), so a run in a
    fresh process reports its own peak.
    """
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1.0 / 1024.0 if sys.platform != "darwin" else 1.0 / 1024.0**2
    now = _rss_high_water_mib() or 0.0
    peak = max(rss_kb * scale, _PEAK_BEFORE_RESETS_MIB, now)
    out = {"host_peak_rss_mib": round(peak, 1)}
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        out["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return out


def environment() -> dict[str, Any]:
    """Versions of Python, the package and its numerical dependencies; thread count."""
    versions = {"python": platform.python_version()}
    for pkg in ("cvxsnn", "torch", "numpy", "scipy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, numpy values, tuples and paths into JSON-serialisable values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", None) == 0:
        return obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return str(obj)
    return obj


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
