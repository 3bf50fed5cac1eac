"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("CVXSNN_DATA_DIR", REPO.parent / "shared" / "data" / "mnist"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST IDX files (``../shared/data/mnist`` beside the repository)."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST files not found in {MNIST_DIR}; set CVXSNN_DATA_DIR")
    return MNIST_DIR


class FailingValidation:
    """Patches ``cvxsnn.sg.evaluate_sg`` (SG's validation pass, once per epoch): its
    ``fail_at``-th call raises ``error``, as a kill in that epoch would; every call is
    counted in ``calls``. ``disarm()`` stops the failing and restarts the count."""

    def __init__(self, monkeypatch, fail_at: int | None, error: BaseException) -> None:
        import cvxsnn.sg as sg

        self.real = sg.evaluate_sg
        self.fail_at, self.error, self.calls = fail_at, error, 0
        monkeypatch.setattr(sg, "evaluate_sg", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        return self.real(*args, **kwargs)

    def disarm(self) -> None:
        self.fail_at, self.calls = None, 0


@pytest.fixture
def fail_validation(monkeypatch):
    """``fail_validation(fail_at, error)``: a :class:`FailingValidation` for this test."""
    return lambda fail_at, error: FailingValidation(monkeypatch, fail_at, error)
