"""The benchmarks' hard time cap: a peer's fit runs in a child that is killed at the cap."""

from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _runner import run_capped

pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork"
)


def test_result_and_time_come_back_from_the_child():
    a = np.arange(12.0).reshape(3, 4)
    got = run_capped(lambda: (a @ a.T, "tag"), 30)
    assert got.status == "ok"
    np.testing.assert_array_equal(got.result[0], a @ a.T)
    assert got.result[1] == "tag"
    assert 0 <= got.time_s < 30


def test_a_call_past_the_cap_is_killed_at_the_cap():
    def stuck():  # stands in for a fit that never returns to Python
        time.sleep(120)
        return "never"

    t0 = time.perf_counter()
    got = run_capped(stuck, 1.0)
    waited = time.perf_counter() - t0
    assert got.status == "timeout"
    assert got.result is None and got.time_s is None
    assert waited < 15, f"the cap was 1 s but the call took {waited:.1f} s"


def test_an_exception_in_the_child_is_reported_not_raised():
    def bad():
        raise ValueError("tol must be positive")

    got = run_capped(bad, 30)
    assert got.status == "error"
    assert got.error.startswith("ValueError: tol must be positive")


def test_a_child_that_dies_is_an_error():
    import os

    got = run_capped(lambda: os._exit(3), 30)
    assert got.status == "error"
    assert "code 3" in got.error
