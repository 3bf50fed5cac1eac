"""Regularization path: solves from rho_max down, each warm-started from the previous one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cvxsnn.solver.certificate import prepare_dictionary
from cvxsnn.solver.engine import SolveResult, rho_max, solve
from cvxsnn.solver.losses import LossName
from cvxsnn.solver.penalties import PenaltyName

__all__ = ["rho_grid", "solve_path"]


def rho_grid(rho_hi: float, n_rhos: int = 20, rho_min_ratio: float = 1e-3) -> np.ndarray:
    """Geometric grid of ``n_rhos`` values from ``rho_hi`` down to ``rho_hi * rho_min_ratio``."""
    if not (isinstance(n_rhos, (int, np.integer)) and n_rhos >= 1):
        raise ValueError(f"n_rhos must be an int >= 1; got {n_rhos!r}")
    if not (0 < rho_min_ratio <= 1):
        raise ValueError(f"rho_min_ratio must be in (0, 1]; got {rho_min_ratio!r}")
    return rho_hi * np.geomspace(1.0, rho_min_ratio, n_rhos)


def solve_path(
    D: Any,
    Y: Any,
    rhos: Sequence[float] | None = None,
    n_rhos: int = 20,
    rho_min_ratio: float = 1e-3,
    *,
    loss: LossName = "squared",
    penalty: PenaltyName = "l1",
    fit_intercept: bool = True,
    heads: tuple[int, ...] | None = None,
    head_weights: tuple[float, ...] | None = None,
    device: str | None = None,
    **solve_kwargs: Any,
) -> list[SolveResult]:
    """Solve along a decreasing sequence of rho with warm starts.

    Parameters
    ----------
    D : array_like of shape (n, P)
    Y : array_like of shape (n, C) or (n,)
    rhos : sequence of float, optional
        The rho values; solved in decreasing order. Default: ``n_rhos`` values from
        :func:`rho_max` down to ``rho_max * rho_min_ratio`` (geometric).
    n_rhos, rho_min_ratio
        The default grid.
    loss, penalty, fit_intercept, heads, head_weights, device
        As in :func:`solve`.
    **solve_kwargs
        Passed to :func:`solve` (tol, max_iter, max_time, verbose).

    Returns
    -------
    list of SolveResult
        One per rho, in decreasing rho order; each keeps ``coef`` and ``intercept`` so the
        caller can pick a rho on validation data.
    """
    Dk = prepare_dictionary(D, device=device)
    common = dict(
        loss=loss, penalty=penalty, fit_intercept=fit_intercept, heads=heads,
        head_weights=head_weights,
    )  # fmt: skip
    if rhos is None:
        rhos = rho_grid(rho_max(Dk, Y, **common), n_rhos, rho_min_ratio)  # type: ignore[arg-type]
    rhos = sorted((float(r) for r in rhos), reverse=True)
    results: list[SolveResult] = []
    W0 = b0 = None
    for r in rhos:
        res = solve(Dk, Y, r, W0=W0, b0=b0, **common, **solve_kwargs)  # type: ignore[arg-type]
        results.append(res)
        W0, b0 = res.coef, res.intercept
    return results
