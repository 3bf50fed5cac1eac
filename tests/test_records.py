"""Stage timers and peak-memory accounting of run records."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cvxsnn.records import StageTimer, _rss_high_water_mib, peak_memory_mb

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


def _touch(mib: int) -> None:
    a = np.ones(mib * 2**20 // 8)  # written, so resident
    assert a[-1] == 1.0
    del a


def _skip_unless_tracked(timer: StageTimer) -> None:
    if not timer.peak_rss_mib:
        pytest.skip("the kernel's high-water mark cannot be reset here")


def test_stage_timer_sums_repeated_stages():
    timer = StageTimer()
    for _ in range(2):
        with timer("a"):
            pass
    with timer("b"):
        pass
    assert set(timer.seconds) == {"a", "b"}
    assert all(v >= 0.0 for v in timer.seconds.values())


@linux_only
def test_stage_peak_rss_sees_the_stage_allocation_only():
    timer = StageTimer()
    with timer("big"):
        _touch(300)
    with timer("small"):
        pass
    _skip_unless_tracked(timer)
    assert timer.peak_rss_mib["big"] - timer.peak_rss_mib["small"] > 250


@linux_only
def test_nested_stage_peak_counts_for_the_outer_stage():
    timer = StageTimer()
    with timer("outer"):
        with timer("inner"):
            _touch(300)
        with timer("after"):
            pass
    _skip_unless_tracked(timer)
    assert timer.peak_rss_mib["outer"] >= timer.peak_rss_mib["inner"]
    assert timer.peak_rss_mib["inner"] - timer.peak_rss_mib["after"] > 250


@linux_only
def test_resets_never_lower_the_process_peak():
    _touch(400)
    before = _rss_high_water_mib()
    timer = StageTimer()
    with timer("later"):
        pass
    assert peak_memory_mb()["host_peak_rss_mib"] >= before - 0.1


@linux_only
def test_outer_stage_keeps_its_peak_from_before_a_nested_stage():
    timer = StageTimer()
    with timer("outer"):
        _touch(300)  # before the nested stage resets the kernel's mark
        with timer("inner"):
            pass
    _skip_unless_tracked(timer)
    assert timer.peak_rss_mib["outer"] - timer.peak_rss_mib["inner"] > 250
