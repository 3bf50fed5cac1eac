"""Duality-gap certificate of the convex program (SPEC section 4), usable on any (W, b).

The program is

    min_{W, b}  F(D W + 1 b^T, Y) + rho * R(W).

Its dual, with the free intercept, is

    max_u  -F*(-u)   subject to   1^T u = 0  (per output),   R°(D^T u) <= rho,

with R° the dual norm of R. A dual-feasible point is built from any W: re-optimise b for W
(closed form for the squared loss, Newton for logistic / softmax), take the negative loss
gradient u0 = -dF/dZ at Z = D W + 1 b^T (its columns sum to zero because b is optimal; the
tiny remainder of an iterative intercept is removed by subtracting the column mean) and
rescale it, u = s u0 with s = min(1, rho / R°(D^T u0)). The gap primal - dual >= 0 bounds the
suboptimality of (W, b). Everything is computed in float64; D^T u is accumulated in float64
block by block, whatever the storage type of D.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cvxsnn.solver.losses import Loss, LossName, check_targets, make_loss
from cvxsnn.solver.penalties import Penalty, PenaltyName, make_penalty

__all__ = ["Certificate", "Dictionary", "duality_gap", "prepare_dictionary"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Certificate:
    """Primal value, dual value and duality gap of a point (W, b).

    Attributes
    ----------
    primal : float
        F(D W + 1 b^T, Y) + rho R(W) at the given (W, b).
    dual : float
        Dual objective at the rescaled negative gradient (a dual-feasible point).
    gap : float
        primal - dual >= 0, an upper bound on primal - optimum.
    rel_gap : float
        gap / max(1, |primal|).
    intercept : ndarray of shape (C,)
        The intercept re-optimised for W (where the dual point was taken).
    scale : float
        The rescaling s in (0, 1] applied to the negative gradient.
    """

    primal: float
    dual: float
    gap: float
    rel_gap: float
    intercept: Array
    scale: float


class Dictionary:
    """A dictionary D (n, P) stored atom-major for fast float64 products.

    Binary dictionaries (all entries 0 or 1) are stored as uint8; others as float64.
    ``D^T R`` and ``D W`` are accumulated in float64 over blocks of atoms, so a float64
    copy of D is never formed. With ``device`` set, the blocks run through torch there.

    Parameters
    ----------
    D : array_like of shape (n, P)
        uint8, bool or float entries; finite.
    device : str or None
        torch device for the large products; None uses numpy on the CPU.
    """

    def __init__(self, D: Any, device: str | None = None) -> None:
        D = _as_numpy(D)
        if D.ndim != 2:
            raise ValueError(f"D must be a 2-D array of shape (n, P); got shape {D.shape}")
        n, P = D.shape
        if n == 0 or P == 0:
            raise ValueError(
                f"D must have at least one row and one atom (n >= 1, P >= 1); got shape {D.shape}"
            )
        if D.dtype == np.bool_ or D.dtype == np.uint8:
            binary = bool(D.dtype == np.bool_ or D.max() <= 1)
        else:
            if not np.issubdtype(D.dtype, np.number):
                raise ValueError(f"D must hold numbers; got dtype {D.dtype}")
            if not np.all(np.isfinite(D)):
                raise ValueError("D must be finite; got NaN or inf entries")
            binary = bool(np.all((D == 0) | (D == 1)))
        self.n, self.P = n, P
        self.binary = binary
        store = np.uint8 if binary else np.float64
        self.Dt = np.ascontiguousarray(np.asarray(D).T, dtype=store)  # (P, n)
        self.colsum = self.Dt.sum(axis=1, dtype=np.float64)  # (P,)
        self.device = device
        self._Dt_torch = None
        if device is not None:
            import torch

            self._Dt_torch = torch.as_tensor(self.Dt, device=device)
        self._block = int(np.clip(2**19 // max(n, 1), 8, 4096))

    def dtr(self, R: Array, rows: NDArray[np.intp] | None = None) -> Array:
        """``D[:, rows]^T R`` in float64, shape (len(rows), C); all atoms when rows is None."""
        R = np.ascontiguousarray(R, dtype=np.float64)
        idx = np.arange(self.P) if rows is None else np.asarray(rows)
        out = np.empty((idx.size, R.shape[1]))
        if self._Dt_torch is not None:
            import torch

            Rt = torch.as_tensor(R, device=self.device)
            it = torch.as_tensor(idx, device=self.device)
            bs = self._block * 8
            for s in range(0, idx.size, bs):
                blk = self._Dt_torch[it[s : s + bs]].to(torch.float64)
                out[s : s + bs] = (blk @ Rt).cpu().numpy()
            return out
        bs = self._block
        buf = np.empty((min(bs, idx.size), self.n))
        contiguous = rows is None
        for s in range(0, idx.size, bs):
            blk = self.Dt[s : s + bs] if contiguous else self.Dt[idx[s : s + bs]]
            b = buf[: blk.shape[0]]
            b[...] = blk
            np.matmul(b, R, out=out[s : s + blk.shape[0]])
        return out

    def dw(self, W: Array) -> Array:
        """``D W`` in float64 for W of shape (P, C), using only the nonzero rows of W."""
        W = np.asarray(W, dtype=np.float64)
        S = np.flatnonzero(np.any(W != 0, axis=1))
        Z = np.zeros((self.n, W.shape[1]))
        bs = self._block
        for s in range(0, S.size, bs):
            rows = S[s : s + bs]
            Z += self.Dt[rows].T.astype(np.float64) @ W[rows]
        return Z

    def atoms(self, rows: NDArray[np.intp], dtype: Any = np.float64) -> NDArray[Any]:
        """The selected atoms as rows, shape (len(rows), n), in ``dtype``."""
        return self.Dt[rows].astype(dtype)


def _as_numpy(A: Any) -> NDArray[Any]:
    if hasattr(A, "detach") and hasattr(A, "cpu"):  # torch tensor
        A = A.detach().cpu().numpy()
    return np.asarray(A)


def prepare_dictionary(D: Any, device: str | None = None) -> Dictionary:
    """Wrap D once (validation, atom-major storage) so that repeated solves reuse it."""
    return D if isinstance(D, Dictionary) else Dictionary(D, device=device)


def check_targets_array(Y: Any, n: int) -> Array:
    """Y as a float64 (n, C) array; a 1-D Y becomes one column."""
    Y = np.asarray(_as_numpy(Y), dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[1] == 0:
        raise ValueError(f"Y must have shape (n,) or (n, C) with C >= 1; got shape {Y.shape}")
    if Y.shape[0] != n:
        raise ValueError(f"Y must have as many rows as D (n = {n}); got Y with {Y.shape[0]} rows")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y must be finite; got NaN or inf entries")
    return Y


def check_rho(rho: float) -> float:
    """rho must be a finite positive number."""
    try:
        r = float(rho)
    except (TypeError, ValueError):
        raise ValueError(f"rho must be a finite float > 0; got {rho!r}") from None
    if not np.isfinite(r) or r <= 0:
        raise ValueError(f"rho must be a finite float > 0; got {rho!r}")
    return r


def certify(
    Dk: Dictionary,
    Y: Array,
    W: Array,
    b: Array | None,
    rho: float,
    loss: Loss,
    penalty: Penalty,
    fit_intercept: bool,
    Z0: Array | None = None,
) -> tuple[Certificate, Array]:
    """Certificate of (W, b) on a prepared dictionary (see :func:`duality_gap`).

    Also returns ``D^T u0`` of shape (P, C), the unscaled dual scores of every atom.
    """
    W = np.asarray(W, dtype=np.float64)
    Z0 = Dk.dw(W) if Z0 is None else Z0
    C = Y.shape[1]
    if fit_intercept:
        b_opt = loss.optimal_intercept(Z0, Y, b)
        b_eval = b_opt if b is None else np.asarray(b, dtype=np.float64)
    else:
        b_opt = np.zeros(C)
        b_eval = b_opt if b is None else np.asarray(b, dtype=np.float64)
    primal = loss.value(Z0 + b_eval, Y) + rho * penalty.value(W)
    u0 = loss.neg_grad(Z0 + b_opt, Y)
    if fit_intercept:
        u0 -= u0.mean(axis=0)
    G = Dk.dtr(u0)  # (P, C), float64
    dn = penalty.dual_norm(G)
    s = 1.0 if dn <= rho else rho / dn
    dual = loss.dual(s * u0, Y)
    gap = primal - dual
    scale_ = max(1.0, abs(primal))
    if -1e-13 * scale_ < gap < 0:  # rounding only; a larger negative gap would be a bug
        gap = 0.0
    cert = Certificate(
        primal=primal, dual=dual, gap=gap, rel_gap=gap / scale_, intercept=b_opt, scale=s
    )
    return cert, G


def duality_gap(
    D: Any,
    Y: Any,
    W: Any,
    b: Any,
    rho: float,
    loss: LossName = "squared",
    penalty: PenaltyName = "l1",
    heads: tuple[int, ...] | None = None,
    head_weights: tuple[float, ...] | None = None,
    fit_intercept: bool = True,
) -> Certificate:
    """Certify any (W, b) for the convex program: primal, dual, duality gap.

    Parameters
    ----------
    D : array_like of shape (n, P)
        The dictionary (uint8 / bool / float).
    Y : array_like of shape (n, C) or (n,)
        Targets.
    W : array_like of shape (P, C) or (P,)
        Readout weights.
    b : array_like of shape (C,) or None
        Intercept at which the primal is evaluated; None uses the optimal intercept for W.
        Must be None or zero when ``fit_intercept`` is False.
    rho : float
        Regularization strength, > 0.
    loss, penalty, heads, head_weights
        As in :func:`cvxsnn.solver.solve`.
    fit_intercept : bool
        Whether the program has a free intercept (adds the constraint 1^T u = 0).

    Returns
    -------
    Certificate

    Notes
    -----
    u0 = -grad F at D W + 1 b*^T with b* the intercept optimal for W; u = s u0 with
    s = min(1, rho / R°(D^T u0)), R° = max |.| (l1) or max row 2-norm (group l2);
    dual = -F*(-u); gap = primal - dual. All in float64.
    """
    Dk = prepare_dictionary(D)
    Yv = check_targets_array(Y, Dk.n)
    rho = check_rho(rho)
    lo = make_loss(loss, Yv.shape[1], heads, head_weights)
    pe = make_penalty(penalty)
    check_targets(lo, Yv, fit_intercept)
    Wv = np.asarray(_as_numpy(W), dtype=np.float64)
    if Wv.ndim == 1:
        Wv = Wv[:, None]
    if Wv.shape != (Dk.P, Yv.shape[1]):
        raise ValueError(f"W must have shape (P, C) = {(Dk.P, Yv.shape[1])}; got {Wv.shape}")
    bv = None
    if b is not None:
        bv = np.asarray(_as_numpy(b), dtype=np.float64).reshape(-1)
        if bv.shape != (Yv.shape[1],):
            raise ValueError(f"b must have shape (C,) = ({Yv.shape[1]},); got {bv.shape}")
        if not fit_intercept and np.any(bv != 0):
            raise ValueError("b must be None or zero when fit_intercept=False")
    return certify(Dk, Yv, Wv, bv, rho, lo, pe, fit_intercept)[0]
