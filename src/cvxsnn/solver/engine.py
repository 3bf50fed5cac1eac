"""Working-set solver for the convex program, stopped by a duality-gap certificate.

Squared loss (any penalty): a working set of atoms is grown from the atoms whose dual
constraint is violated. On the working set the problem is solved from its exact Gram
matrix: for a binary dictionary, D_W^T D_W is an integer count matrix, computed exactly by a
float32 matmul of 0/1 values (exact while counts < 2^24), then centred in float64 with the
precomputed column sums (this removes the free intercept). Identical rows of D are merged
first when that halves the rows (:mod:`cvxsnn.solver._rows`), and the Gram entries are cached
with the dictionary so that the solves of a path reuse them. For l1 every output's Lasso is
solved exactly by a primal active-set method with Cholesky up/down-dates that keeps the
support linearly independent (:mod:`cvxsnn.solver._active_set`); group l2 uses block
coordinate descent with a Newton polish on the support. After each working-set solve, one
float64 ``D^T u`` pass over all atoms gives the certificate and the next working set; the
returned certificate is always computed on the dictionary as given.

Logistic and softmax losses: the same outer loop. With l1, a proximal Newton method on the
working set, each iteration's second-order model (column by column) solved exactly by the
same active-set method on a reweighted Gram matrix whose rows are computed as the method
reads them, over the distinct rows of D (targets averaged), and for softmax rounds of
proximal Newton steps with the full (head-coupled) Hessian, solved by the same method;
with group l2, the same coupled steps over whole rows (their group Lasso solved by block
coordinate descent), then, if they stall, an accelerated proximal gradient method (FISTA
with step 1/L and adaptive restart) on the working set's atoms and the intercept.

Stopping rule (every loss): gap <= tol * max(1, |primal|).
"""

from __future__ import annotations

import math
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.blas import dsyrk
from scipy.special import expit, log_softmax, softmax

from cvxsnn.solver._active_set import LazyGram, lasso_active_set
from cvxsnn.solver._rows import compress_rows
from cvxsnn.solver.certificate import (
    Certificate,
    Dictionary,
    _as_numpy,
    certify,
    check_rho,
    check_targets_array,
    prepare_dictionary,
)
from cvxsnn.solver.losses import Loss, LossName, check_targets, make_loss
from cvxsnn.solver.penalties import Penalty, PenaltyName, make_penalty

__all__ = ["STOP_RULE", "ConvergenceWarning", "SolveResult", "rho_max", "solve"]

Array = NDArray[np.float64]
STOP_RULE = "gap <= tol * max(1, |primal|)"

# Coupled softmax Newton steps (_ProxNewtonEngine._coupled_step): zero entries whose
# gradient exceeds _COUPLED_NEAR rho join a step's variables (the strongest, at most the
# larger of _COUPLED_MIN_NEW and an eighth of the nonzeros); the Hessian is accumulated over
# row blocks of _COUPLED_BLOCK_BYTES, and not formed when its copies would exceed
# _COUPLED_MAX_BYTES; a round takes at most _COUPLED_STEPS steps and ends when a step cuts
# the working-set gap by less than the factor _COUPLED_RATE.
_COUPLED_NEAR = 0.95
_COUPLED_MIN_NEW = 100
_COUPLED_BLOCK_BYTES = 64 * 2**20
_COUPLED_MAX_BYTES = 2 * 2**30
_COUPLED_STEPS = 20
_COUPLED_RATE = 0.5
_GROUP_STEPS = 50  # coupled steps of a group-l2 subproblem before FISTA takes over


#: rho_max at or below this is rounding noise: W = 0 is then optimal for every rho > 0.
RHO_MAX_FLOOR = 1e-10


class ConvergenceWarning(UserWarning):
    """A solve stopped before its duality gap met the stopping rule."""


@dataclass(frozen=True)
class SolveResult:
    """Result of :func:`solve`, with its certificate.

    Attributes
    ----------
    coef : ndarray of shape (P, C)
        Readout weights W.
    intercept : ndarray of shape (C,)
        Intercept b (zeros when ``fit_intercept`` is False); optimal for ``coef``.
    primal, dual, gap : float
        Primal value, dual value and absolute duality gap (float64).
    rel_gap : float
        gap / max(1, |primal|).
    tol : float
        The tolerance of the stopping rule.
    stop_rule : str
        ``"gap <= tol * max(1, |primal|)"``.
    n_iter : int
        Outer (working-set) iterations, each ending with a full certificate.
    time_s : float
        Wall time of the solve.
    converged : bool
        Whether the stopping rule was met.
    loss, penalty : str
    rho : float
    support : ndarray of int
        Indices of the nonzero rows of ``coef``.
    heads, head_weights : tuple
        The head partition and head weights used.
    fit_intercept : bool
    """

    coef: Array
    intercept: Array
    primal: float
    dual: float
    gap: float
    rel_gap: float
    tol: float
    stop_rule: str
    n_iter: int
    time_s: float
    converged: bool
    loss: str
    penalty: str
    rho: float
    support: NDArray[np.intp]
    heads: tuple[int, ...] = ()
    head_weights: tuple[float, ...] = ()
    fit_intercept: bool = True
    history: tuple[tuple[float, float], ...] = field(default=(), repr=False)


@dataclass
class _Setup:
    Dk: Dictionary
    Y: Array
    loss: Loss
    penalty: Penalty
    fit_intercept: bool


def _setup(
    D: Any,
    Y: Any,
    loss: str,
    penalty: str,
    fit_intercept: bool,
    heads: tuple[int, ...] | None,
    head_weights: tuple[float, ...] | None,
    device: str | None,
) -> _Setup:
    Dk = prepare_dictionary(D, device=device)
    Yv = check_targets_array(Y, Dk.n)
    lo = make_loss(loss, Yv.shape[1], heads, head_weights)
    pe = make_penalty(penalty)
    check_targets(lo, Yv, fit_intercept)
    return _Setup(Dk, Yv, lo, pe, bool(fit_intercept))


def _grad_at_zero(st: _Setup) -> Array:
    """D^T u0 at W = 0 (intercept optimal), shape (P, C)."""
    Z0 = np.zeros_like(st.Y)
    b = st.loss.optimal_intercept(Z0, st.Y) if st.fit_intercept else np.zeros(st.Y.shape[1])
    u0 = st.loss.neg_grad(Z0 + b, st.Y)
    if st.fit_intercept:
        u0 -= u0.mean(axis=0)
    return st.Dk.dtr(u0)


def _check_rho_resolution(st: _Setup, rho: float) -> None:
    """Refuse a rho below what float64 can resolve in the dual constraint ``|d^T u| <= rho``.

    ``d^T u`` sums n terms; its rounding error is at most about ``n eps ||u||_1``
    (0/1 atoms). A rho below that bound cannot be certified: the rescaling
    ``s = min(1, rho / ||D^T u0||)`` would act on rounding noise.
    """
    Z0 = np.zeros_like(st.Y)
    b = st.loss.optimal_intercept(Z0, st.Y) if st.fit_intercept else np.zeros(st.Y.shape[1])
    u0 = st.loss.neg_grad(Z0 + b, st.Y)
    floor = 8.0 * np.finfo(np.float64).eps * st.Y.shape[0] * float(np.abs(u0).sum(axis=0).max())
    if rho < floor:
        raise ValueError(
            f"rho = {rho:.3e} is below the float64 resolution of the dual constraint for this "
            f"problem (about {floor:.1e}); use rho >= {floor:.1e}. (W = 0 is optimal for every "
            f"rho >= rho_max; see rho_max().)"
        )


def rho_max(
    D: Any,
    Y: Any,
    loss: LossName = "squared",
    penalty: PenaltyName = "l1",
    *,
    fit_intercept: bool = True,
    heads: tuple[int, ...] | None = None,
    head_weights: tuple[float, ...] | None = None,
    device: str | None = None,
) -> float:
    """Smallest rho for which W = 0 is optimal.

    Returns ``R°(D^T u0)`` with u0 the negative loss gradient at W = 0 and the optimal
    intercept (zero without intercept); R° is the dual norm of the penalty.
    """
    st = _setup(D, Y, loss, penalty, fit_intercept, heads, head_weights, device)
    return st.penalty.dual_norm(_grad_at_zero(st))


def solve(
    D: Any,
    Y: Any,
    rho: float,
    *,
    loss: LossName = "squared",
    penalty: PenaltyName = "l1",
    fit_intercept: bool = True,
    heads: tuple[int, ...] | None = None,
    head_weights: tuple[float, ...] | None = None,
    tol: float = 1e-6,
    max_iter: int = 100,
    max_time: float | None = None,
    W0: Any = None,
    b0: Any = None,
    verbose: bool = False,
    device: str | None = None,
) -> SolveResult:
    """Solve min_{W,b} F(D W + 1 b^T, Y) + rho R(W) to a certified duality gap.

    Parameters
    ----------
    D : array_like of shape (n, P)
        Dictionary, typically binary (uint8 / bool); float entries are accepted.
        A :class:`~cvxsnn.solver.certificate.Dictionary` can be passed to reuse its storage.
    Y : array_like of shape (n, C) or (n,)
        Targets: real for ``squared``; in [0, 1] for ``logistic``; rows of each head on the
        simplex (one-hot) for ``softmax``.
    rho : float
        Regularization strength, finite and > 0.
    loss : {"squared", "logistic", "softmax"}
    penalty : {"l1", "group_l2"}
    fit_intercept : bool
        Fit an unpenalized intercept b.
    heads : tuple of int, optional
        Column counts of the output heads (a partition of the C columns). Default: one head
        of all columns (one head per column for logistic).
    head_weights : tuple of float, optional
        Weight of each head's loss (default ones).
    tol : float
        Relative tolerance of the stopping rule.
    max_iter : int
        Maximum number of outer working-set iterations.
    max_time : float, optional
        Wall-time budget in seconds.
    W0 : array_like of shape (P, C), optional
        Warm start.
    b0 : array_like of shape (C,), optional
        Warm start of the intercept (used as Newton's start for logistic / softmax).
    verbose : bool
        Print the gap after every outer iteration.
    device : str, optional
        torch device for the full ``D^T u`` products; None uses numpy on the CPU.

    Returns
    -------
    SolveResult

    Notes
    -----
    Stopping rule: ``gap <= tol * max(1, |primal|)``, with gap = primal - dual from
    :func:`~cvxsnn.solver.certificate.duality_gap`. If it is not met within ``max_iter``
    outer iterations or ``max_time`` seconds, a :class:`ConvergenceWarning` gives the gap
    and the tolerance and ``converged`` is False.
    """
    t_start = time.perf_counter()
    rho = check_rho(rho)
    if not (isinstance(tol, (int, float)) and np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite float > 0; got {tol!r}")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise ValueError(f"max_iter must be an int >= 1; got {max_iter!r}")
    if max_time is not None and not (max_time > 0):
        raise ValueError(f"max_time must be None or > 0; got {max_time!r}")
    st = _setup(D, Y, loss, penalty, fit_intercept, heads, head_weights, device)
    _check_rho_resolution(st, rho)
    P, C = st.Dk.P, st.Y.shape[1]
    W = np.zeros((P, C))
    if W0 is not None:
        W0v = np.asarray(_as_numpy(W0), dtype=np.float64)
        W0v = W0v[:, None] if W0v.ndim == 1 else W0v
        if W0v.shape != (P, C):
            raise ValueError(f"W0 must have shape (P, C) = {(P, C)}; got {W0v.shape}")
        W = W0v.copy()
    b = None
    if b0 is not None and fit_intercept:
        b = np.asarray(_as_numpy(b0), dtype=np.float64).reshape(-1)
        if b.shape != (C,):
            raise ValueError(f"b0 must have shape (C,) = ({C},); got {b.shape}")
    deadline = None if max_time is None else t_start + float(max_time)

    engine = _SquaredEngine(st, rho) if st.loss.name == "squared" else _ProxNewtonEngine(st, rho)
    W, b, cert, n_iter, history = engine.run(W, b, tol, max_iter, deadline, verbose)
    converged = cert.gap <= tol * max(1.0, abs(cert.primal))
    if not converged:
        warnings.warn(
            f"solve stopped after {n_iter} outer iterations without meeting the stopping rule "
            f"{STOP_RULE}: gap = {cert.gap:.3e}, rel_gap = {cert.rel_gap:.3e}, tol = {tol:.1e}",
            ConvergenceWarning,
            stacklevel=2,
        )
    support = np.flatnonzero(np.any(W != 0, axis=1))
    return SolveResult(
        coef=W,
        intercept=cert.intercept.copy(),
        primal=cert.primal,
        dual=cert.dual,
        gap=cert.gap,
        rel_gap=cert.rel_gap,
        tol=float(tol),
        stop_rule=STOP_RULE,
        n_iter=n_iter,
        time_s=time.perf_counter() - t_start,
        converged=bool(converged),
        loss=st.loss.name,
        penalty=st.penalty.name,
        rho=rho,
        support=support,
        heads=st.loss.heads,
        head_weights=st.loss.head_weights,
        fit_intercept=st.fit_intercept,
        history=tuple(history),
    )


# --------------------------------------------------------------------------- outer loop
class _Engine:
    """Outer working-set loop shared by the engines; subclasses solve the subproblem."""

    def __init__(self, st: _Setup, rho: float) -> None:
        self.st, self.rho = st, rho
        self.ws: NDArray[np.intp] = np.zeros(0, dtype=np.intp)
        self.Dc: Any = st.Dk  # dictionary of the intermediate certificates

    def run(
        self,
        W: Array,
        b: Array | None,
        tol: float,
        max_iter: int,
        deadline: float | None,
        verbose: bool,
    ) -> tuple[Array, Array | None, Certificate, int, list[tuple[float, float]]]:
        st, rho = self.st, self.rho
        history: list[tuple[float, float]] = []
        ws_size = 0
        cert = None
        n_iter = 0
        for n_iter in range(1, max_iter + 1):
            Z0 = self.Dc.dw(W)
            cert, G = certify(self.Dc, st.Y, W, b, rho, st.loss, st.penalty, st.fit_intercept, Z0)
            if self.Dc is not st.Dk and cert.gap <= tol * max(1.0, abs(cert.primal)):
                # The returned certificate is always computed on the dictionary as given.
                Z0 = st.Dk.dw(W)
                cert, G = certify(st.Dk, st.Y, W, b, rho, st.loss, st.penalty, st.fit_intercept, Z0)
            b = cert.intercept
            history.append((cert.gap, cert.rel_gap))
            if verbose:
                print(
                    f"[solve] iter {n_iter:3d}  primal {cert.primal:.10e}  gap {cert.gap:.3e}  "
                    f"rel_gap {cert.rel_gap:.3e}  |ws| {self.ws.size}"
                )
            target = tol * max(1.0, abs(cert.primal))
            if cert.gap <= target or (deadline is not None and time.perf_counter() > deadline):
                break
            if n_iter == max_iter:
                break
            # Grow the working set from the atoms with the largest dual scores.
            scores = st.penalty.row_scores(G) / rho
            support = np.flatnonzero(np.any(W != 0, axis=1))
            new_ws, ws_size = self._grow(scores, support, ws_size)
            self._set_working_set(new_ws)
            W_ws = W[self.ws]
            W_ws, b = self._solve_subproblem(W_ws, b, 0.1 * target, deadline)
            W = np.zeros_like(W)
            W[self.ws] = W_ws
        assert cert is not None
        return W, b, cert, n_iter, history

    def _grow(
        self, scores: Array, support: NDArray[np.intp], ws_size: int
    ) -> tuple[NDArray[np.intp], int]:
        """Next working set: the old one, the support and the top-scored atoms (doubling)."""
        P = scores.size
        scores = scores.copy()
        scores[support] = np.inf
        ws_size = min(P, max(2 * ws_size, 2 * support.size, 100))
        if ws_size >= P:
            return np.arange(P), ws_size
        new_ws = np.sort(np.argpartition(-scores, ws_size - 1)[:ws_size])
        return np.union1d(new_ws, self.ws), ws_size

    def _set_working_set(self, ws: NDArray[np.intp]) -> None:
        self.ws = ws

    def _solve_subproblem(
        self, W: Array, b: Array | None, gap_target: float, deadline: float | None
    ) -> tuple[Array, Array | None]:
        raise NotImplementedError


# ------------------------------------------------------------------------- squared loss
class _SquaredEngine(_Engine):
    """Exact Gram-space working-set solves: active set (l1), block CD + Newton (group l2)."""

    def __init__(self, st: _Setup, rho: float) -> None:
        super().__init__(st, rho)
        Dk, Y = st.Dk, st.Y
        n = Dk.n
        self.gram = _gram_cache(Dk)
        if self.gram.rc is not None:  # identical rows merged: Gram = U^T diag(counts) U
            self.Dc = self.gram.rc
        self.w = st.loss.column_weights  # (C,)
        self.mu = Dk.colsum / n if st.fit_intercept else np.zeros(Dk.P)
        self.Yc = Y - Y.mean(axis=0) if st.fit_intercept else Y.copy()
        self.yy = np.einsum("ic,ic->c", self.Yc, self.Yc)  # (C,)
        self.q_all = self.Dc.dtr(self.Yc)  # (P, C): D^T Yc (= Dc^T Yc when centred)

    def _grow(
        self, scores: Array, support: NDArray[np.intp], ws_size: int
    ) -> tuple[NDArray[np.intp], int]:
        """Next working set: the old one plus the most violating atoms outside it.

        The subproblems are solved exactly, so only atoms outside the working set can
        violate their dual constraint (score > 1); up to max(100, |support|) of them enter,
        the strongest first. If none violates (the last subproblem stopped early) the
        top-scored outside atoms enter anyway.
        """
        P = scores.size
        outside = np.ones(P, dtype=bool)
        outside[self.ws] = False
        outside[support] = False
        cand = np.flatnonzero(outside)
        n_add = min(cand.size, max(100, support.size))
        viol = cand[scores[cand] > 1.0]
        if viol.size:
            cand = viol
            n_add = min(n_add, viol.size)
        if n_add == 0:
            return np.union1d(self.ws, support), ws_size
        top = cand[np.argpartition(-scores[cand], n_add - 1)[:n_add]]
        new_ws = np.union1d(np.union1d(self.ws, support), top)
        return new_ws, new_ws.size

    def _set_working_set(self, ws: NDArray[np.intp]) -> None:
        self.ws = ws
        mu = self.mu[ws]
        # centred Gram (k, k), H = raw - n mu mu^T, the rank-one term subtracted in row
        # blocks (the same arithmetic as one outer product, without its k x k temporary)
        H = self.gram.raw(ws)
        n = self.st.Dk.n
        step = max(1, 2**22 // max(1, mu.size))
        for r in range(0, mu.size, step):
            H[r : r + step] -= n * np.outer(mu[r : r + step], mu)
        self.H = H
        self.q = self.q_all[ws]  # (k, C)

    # Subproblem objective pieces in the scaled units of the program.
    def _ws_gap(self, W: Array, G: Array) -> tuple[float, float]:
        """(primal, gap) of the working-set problem; G = H W - q (raw)."""
        n, w, rho = self.st.Dk.n, self.w, self.rho
        qW = np.einsum("jc,jc->c", self.q, W)
        WHW = np.einsum("jc,jc->c", W, G + self.q)
        rr = self.yy - 2 * qW + WHW  # ||r_c||^2
        ry = self.yy - qW  # r_c . yc
        primal = float((w * rr).sum() / (2 * n) + rho * self.st.penalty.value(W))
        dn = self.st.penalty.dual_norm(-G * (w / n))
        s = 1.0 if dn <= rho else rho / dn
        dual = float((w * (s * ry - 0.5 * s * s * rr)).sum() / n)
        return primal, primal - dual

    def _solve_subproblem(
        self, W: Array, b: Array | None, gap_target: float, deadline: float | None
    ) -> tuple[Array, Array | None]:
        H, q = self.H, self.q
        W = W.copy()
        if self.st.penalty.name == "l1":
            W = self._active_set_l1(W, deadline)
        G = H @ W - q
        if self.st.penalty.name == "l1" and self._ws_gap(W, G)[1] <= gap_target:
            return W, None  # certify re-optimises the intercept for W
        epoch = 0
        while True:
            if self.st.penalty.name == "l1":
                self._cd_l1(W, G, n_epochs=5)
            else:
                self._cd_group(W, G, n_epochs=5)
            epoch += 5
            cur = self._ws_gap(W, G)
            # Polish: exact solve on the detected support.
            Wp = self._polish(W)
            if Wp is not None:
                Gp = H @ Wp - q
                cand = self._ws_gap(Wp, Gp)
                if cand[0] <= cur[0] + 1e-15 * abs(cur[0]) and cand[1] < cur[1]:
                    W, G, cur = Wp, Gp, cand
            if cur[1] <= gap_target or epoch >= 20000:
                break
            if deadline is not None and time.perf_counter() > deadline:
                break
        return W, None

    def _active_set_l1(self, W: Array, deadline: float | None) -> Array:
        """Exact active-set solve of each output's Lasso on the working set (warm start W)."""
        n = self.st.Dk.n
        for c in range(W.shape[1]):
            if self.w[c] == 0:
                W[:, c] = 0.0
                continue
            lam = n * self.rho / self.w[c]
            W[:, c], _ = lasso_active_set(self.H, self.q[:, c], lam, W[:, c], deadline=deadline)
        return W

    def _cd_l1(self, W: Array, G: Array, n_epochs: int) -> None:
        H = self.H
        diag = np.diag(H).copy()
        n = self.st.Dk.n
        lam = n * self.rho / np.maximum(self.w, 1e-300)  # (C,) per-column l1 weight
        k, C = W.shape
        for c in range(C):
            if self.w[c] == 0:
                W[:, c] = 0.0
                continue
            wc = W[:, c].copy()
            gc = G[:, c].copy()
            lc = float(lam[c])
            for _ in range(n_epochs):
                for j in range(k):
                    hjj = diag[j]
                    if hjj <= 0:
                        continue
                    old = wc[j]
                    z = old - gc[j] / hjj
                    t = lc / hjj
                    new = z - t if z > t else (z + t if z < -t else 0.0)
                    if new != old:
                        wc[j] = new
                        gc += H[j] * (new - old)
            W[:, c] = wc
            G[:, c] = gc

    def _cd_group(self, W: Array, G: Array, n_epochs: int) -> None:
        H = self.H
        diag = np.diag(H)
        n = self.st.Dk.n
        w = self.w
        wmax = float(w.max())
        k = W.shape[0]
        for _ in range(n_epochs):
            for j in range(k):
                L = diag[j] * wmax / n
                if L <= 0:
                    continue
                old = W[j].copy()
                z = old - G[j] * (w / n) / L
                nz = float(np.sqrt(z @ z))
                thr = self.rho / L
                new = z * (1 - thr / nz) if nz > thr else np.zeros_like(z)
                d = new - old
                if np.any(d != 0):
                    W[j] = new
                    G += np.outer(H[j], d)

    def _polish(self, W: Array) -> Array | None:
        """Exact solve on the support: l1 sign-fixed linear systems; group l2 Newton."""
        H, q = self.H, self.q
        n = self.st.Dk.n
        Wp = np.zeros_like(W)
        if self.st.penalty.name == "l1":
            lam = n * self.rho / np.maximum(self.w, 1e-300)
            for c in range(W.shape[1]):
                S = np.flatnonzero(W[:, c])
                if S.size == 0 or self.w[c] == 0:
                    continue
                sig = np.sign(W[S, c])
                rhs = q[S, c] - lam[c] * sig
                try:
                    x = np.linalg.solve(H[np.ix_(S, S)], rhs)
                except np.linalg.LinAlgError:
                    x = np.linalg.lstsq(H[np.ix_(S, S)], rhs, rcond=None)[0]
                if np.any(np.sign(x) != sig):
                    return None
                Wp[S, c] = x
            return Wp
        return self._newton_group(W)

    def _newton_group(self, W: Array) -> Array | None:
        """Newton's method on the group-l2 problem restricted to the current support rows."""
        S = np.flatnonzero(np.any(W != 0, axis=1))
        if S.size == 0:
            return None
        n, w, rho = self.st.Dk.n, self.w, self.rho
        HS = self.H[np.ix_(S, S)]
        qS = self.q[S]
        X = W[S].copy()
        equal = bool(np.all(w == w[0]))
        Hbig = None if equal else np.kron(HS, np.diag(w / n))  # smooth Hessian, (kC, kC)

        def obj(X: Array) -> float:
            Gs = (HS @ X - 2 * qS) * (w / n)
            return float(0.5 * np.einsum("jc,jc->", X, Gs) + rho * np.linalg.norm(X, axis=1).sum())

        f = obj(X)
        for _ in range(30):
            norms = np.linalg.norm(X, axis=1)
            if np.any(norms <= 1e-14):
                return None
            U = X / norms[:, None]
            grad = (HS @ X - qS) * (w / n) + rho * U
            try:
                if Hbig is None:
                    step = _group_newton_step(HS * (w[0] / n), rho / norms, U, grad)
                else:
                    Hn = Hbig.copy()
                    _add_group_curvature(Hn, U, norms, rho)
                    step = np.linalg.solve(Hn, grad.reshape(-1)).reshape(X.shape)
            except np.linalg.LinAlgError:
                return None
            if not np.all(np.isfinite(step)):
                return None
            t = 1.0
            dec = float(np.einsum("jc,jc->", grad, step))
            # Smooth part along X - t step is a quadratic in t: a - b t + c t^2 / 2.
            wn = w / n
            HX, Hs = HS @ X, HS @ step
            a = float(np.einsum("jc,jc->", X, (0.5 * HX - qS) * wn))
            b_ = float(np.einsum("jc,jc->", step, (HX - qS) * wn))
            c_ = float(np.einsum("jc,jc->", step, Hs * wn))
            while t > 1e-10:
                Xn = X - t * step
                fn = a - b_ * t + 0.5 * c_ * t * t + rho * float(np.linalg.norm(Xn, axis=1).sum())
                if fn <= f - 1e-4 * t * dec:
                    break
                t *= 0.5
            if t <= 1e-10:
                break
            fn = obj(Xn)  # exact value at the accepted point
            X, f_old, f = Xn, f, fn
            if f_old - f <= 1e-16 * max(1.0, abs(f)):
                break
        Wp = np.zeros_like(W)
        Wp[S] = X
        return Wp


class _GramCache:
    """Raw Gram entries D_j^T D_l of the atoms met so far, kept with the dictionary.

    For a binary dictionary the entries are counts, computed exactly by a float32 matmul of
    0/1 values (exact while counts < 2^24; float64 otherwise); with merged identical rows
    (:mod:`cvxsnn.solver._rows`) the product is U^T diag(counts) U. The cache lives as long
    as the :class:`Dictionary` does, so the solves of a path reuse it; it is dropped when it
    would exceed ``_GRAM_CACHE_ATOMS`` atoms.
    """

    def __init__(self, Dk: Dictionary) -> None:
        self.Dk = Dk
        self.rc = compress_rows(Dk)
        src = self.rc if self.rc is not None else Dk
        self.src: Any = src
        self.dtype = np.float32 if Dk.binary and Dk.n < 2**24 else np.float64
        self.weights = None if self.rc is None else self.rc.counts.astype(self.dtype)
        self.atoms = np.zeros(0, dtype=np.intp)  # sorted atom indices
        self.X = np.zeros((0, 0), dtype=self.dtype)  # their columns (k, n or n_u)
        self.Hraw = np.zeros((0, 0))

    def raw(self, ws: NDArray[np.intp]) -> Array:
        """Raw Gram D_ws^T D_ws (float64), computing only the atoms not cached yet.

        The cache keeps its atoms in insertion order, so growing it copies the old Gram
        block once into the larger matrix and never permutes it (at a working set of k
        atoms each k x k float64 copy is 8 k^2 bytes: 1.8 GB at k = 15,000).
        """
        new = np.setdiff1d(ws, self.atoms)
        if new.size and self.atoms.size + new.size > _GRAM_CACHE_ATOMS:
            pos = np.flatnonzero(np.isin(self.atoms, ws))
            self.atoms, self.X = self.atoms[pos], self.X[pos]
            self.Hraw = self.Hraw[np.ix_(pos, pos)]
        if new.size:
            Xn = self.src.atoms(new, self.dtype)  # (k_new, n) or (k_new, n_u)
            Xw = Xn if self.weights is None else Xn * self.weights
            k0 = self.atoms.size
            H = np.empty((k0 + new.size, k0 + new.size))
            H[:k0, :k0] = self.Hraw
            self.Hraw = H  # the old block is free from here on
            if k0:
                cross = (Xw @ self.X.T).astype(np.float64)
                H[k0:, :k0] = cross
                H[:k0, k0:] = cross.T
                del cross
            H[k0:, k0:] = (Xw @ Xn.T).astype(np.float64)
            self.X = np.concatenate([self.X, Xn]) if k0 else Xn
            self.atoms = np.concatenate([self.atoms, new])
        sorter = np.argsort(self.atoms, kind="stable")
        pos = sorter[np.searchsorted(self.atoms, ws, sorter=sorter)]
        return self.Hraw[np.ix_(pos, pos)]


_GRAM_CACHE_ATOMS = 6000


def estimate_solve_bytes(
    n: int,
    P: int,
    C: int = 1,
    working_set: int | None = None,
    *,
    loss: LossName = "squared",
    penalty: PenaltyName = "l1",
) -> int:
    """Upper estimate of the host memory one solve adds, in bytes.

    Parameters
    ----------
    n, P, C : int
        Rows, atoms and outputs of the program.
    working_set : int, optional
        Largest working set expected (atoms); P when omitted, the bound for any rho.
    loss, penalty : str
        As in :func:`solve`.

    Notes
    -----
    With k = min(P, working_set), every loss holds the atom-major copy of a binary D
    (``n P`` bytes) and a few (n, C) and (P, C) float64 arrays. Squared loss: the cached
    atom rows in float32 (``4 n k``) and three k x k float64 Gram matrices (the cache, the
    centred working-set block, the active set's factor and submatrices: ``24 k^2``).
    Logistic / softmax: the working set's atoms in float64 on the rows as given and on the
    merged rows (``16 n k``); with l1 the reweighted Gram rows of a column step, the
    weighted atoms they are computed from and the active set's factor (``8 n k + 48 k^2``)
    and, for softmax, a coupled Newton step's Hessian and its working copies (``64 m^2``
    for m = k C + C variables, capped at ``_COUPLED_MAX_BYTES``, which the step never
    exceeds) plus two blocks of rows of its variables; with group l2, the same coupled
    step (logistic too), and for the FISTA that may follow it ``[X, 1]`` and the spectral
    norm's copy (``16 n k``) and the Newton polish's dense Hessian and its solve
    (``32 (k C + C)^2``). The working set of a path grows as rho falls: about
    twice the support of the last solve.
    """
    for name, v in (("n", n), ("P", P), ("C", C)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1; got {v}")
    if loss not in ("squared", "logistic", "softmax"):
        raise ValueError(f"loss must be one of ['squared', 'logistic', 'softmax']; got {loss!r}")
    if penalty not in ("l1", "group_l2"):
        raise ValueError(f"penalty must be one of ['l1', 'group_l2']; got {penalty!r}")
    k = P if working_set is None else max(1, min(int(working_set), P))
    common = n * P + 8 * (6 * n * C + 4 * P * C)
    if loss == "squared":
        return int(common + 4 * n * k + 24 * k * k)
    est = common + 16 * n * k + 8 * 8 * n * C
    m = k * C + C
    coupled = min(_COUPLED_MAX_BYTES, 64 * m * m) + 2 * min(_COUPLED_BLOCK_BYTES, 8 * n * m)
    if penalty == "l1":
        est += 8 * n * k + 48 * k * k + (coupled if loss == "softmax" else 0)
    else:
        est += coupled + 16 * n * (k + 1) + 32 * m * m
    return int(est)


_GRAM_CACHES: weakref.WeakKeyDictionary[Dictionary, _GramCache] = weakref.WeakKeyDictionary()


def _gram_cache(Dk: Dictionary) -> _GramCache:
    cache = _GRAM_CACHES.get(Dk)
    if cache is None:
        cache = _GramCache(Dk)
        _GRAM_CACHES[Dk] = cache
    return cache


def _group_newton_step(A: Array, lam: Array, U: Array, G: Array) -> Array:
    """Solve the group-l2 Newton system (A kron I_C + blockdiag_j lam_j (I - u_j u_j^T)) d = g.

    With K = A + diag(lam) the matrix is P - V diag(lam) V^T, P = K kron I_C and V the
    block diagonal of the unit rows u_j, so by the Woodbury identity

        d = K^{-1} G + K^{-1} (y_j u_j)_j,
        (diag(1/lam) - K^{-1} o U U^T) y = (u_j . (K^{-1} G)_j)_j

    (o: entrywise product): two Cholesky factorizations of order s instead of one of
    order s C. A: (s, s) the smooth Hessian (equal column weights); lam, U, G: (s,), (s, C),
    (s, C). Raises LinAlgError when the system is not positive definite.
    """
    from scipy.linalg.lapack import dpotri

    s = lam.size
    diag = np.diag_indices(s)
    Km = A.copy()
    Km[diag] += lam  # K = A + diag(lam), without a second s x s temporary
    Kf = cho_factor(Km, overwrite_a=True)
    KG = cho_solve(Kf, G)
    # dpotri fills one triangle of K^{-1}, the one Kf holds; T is formed in that buffer
    # and factored from the same triangle, so the other is never read (symmetrizing
    # K^{-1} first cost three more s x s arrays and changed no value that is read)
    T, info = dpotri(Kf[0], lower=Kf[1])
    if info != 0:
        raise np.linalg.LinAlgError("singular Newton system")
    np.multiply(T, U @ U.T, out=T)
    np.negative(T, out=T)
    T[diag] += 1.0 / lam  # T = diag(1/lam) - K^{-1} o U U^T
    rhs = np.einsum("jc,jc->j", U, KG)
    y = cho_solve(cho_factor(T, lower=Kf[1], overwrite_a=True), rhs)
    return KG + cho_solve(Kf, U * y[:, None])


def _add_group_curvature(H: Array, U: Array, norms: Array, lam: float) -> None:
    """Add the Hessian of ``lam sum_i ||x_i||`` at x to H in place: the diagonal blocks
    ``lam (I - u_i u_i^T) / ||x_i||`` (u_i = x_i / ||x_i||, the rows of U), each group's
    entries consecutive from the start."""
    s = U.shape[1]
    for i in range(U.shape[0]):
        H[i * s : (i + 1) * s, i * s : (i + 1) * s] += (
            lam * (np.eye(s) - np.outer(U[i], U[i])) / norms[i]
        )


# ------------------------------------------------------------------- logistic / softmax
def _block_mu(c2: list[float], e: list[float], lam: float, nr: float) -> float:
    """The mu > 0 with ||mu c / (e + mu)|| = lam (c2 = c^2, e >= 0, ||c|| = nr > lam).

    The left side rises from ||c over e = 0|| at mu = 0 to ||c||; Newton's method kept
    in a shrinking bracket (bisection when it leaves it), on Python floats: the block
    size is the number of outputs, where numpy's per-call cost would dominate.
    """
    emax = max(e)
    lo, hi = 0.0, 1.01 * lam * emax / (nr - lam) + 1e-300
    mu = 0.0
    for _ in range(200):
        s = ds = 0.0
        for ci, ei in zip(c2, e, strict=True):
            if ei > 0:
                den = ei + mu
                r, dr = mu / den, ei / (den * den)
            else:
                r, dr = 1.0, 0.0
            s += ci * r * r
            ds += ci * r * dr
        f = math.sqrt(s) - lam
        if f < 0:
            lo = mu
        else:
            hi = mu
            if f == 0 or mu == 0:
                return mu
        if hi - lo <= 1e-15 * hi:
            return hi
        slope = (
            ds / math.sqrt(s)
            if s > 0
            else math.sqrt(sum(ci / (ei * ei) for ci, ei in zip(c2, e, strict=True) if ei > 0))
        )
        nxt = mu - f / slope if slope > 0 else hi
        mu = nxt if lo < nxt < hi else 0.5 * (lo + hi)
    return hi


def _group_lasso_bcd(
    H: Array,
    q: Array,
    lam: float,
    x0: Array,
    groups: NDArray[np.intp],
    deadline: float | None,
    tol: float = 1e-10,
    max_passes: int = 1000,
) -> Array:
    """Minimise 0.5 x^T H x - q^T x + lam sum_i ||x[groups[i]]|| by block coordinate descent.

    H is positive semidefinite; groups (g, s) partition the coordinates. Each block step is
    exact: with the block's eigendecomposition A = U diag(e) U^T and r = q_g - (H x)_g +
    A x_g, the block minimiser is 0 when ||r|| <= lam and otherwise U c / (e + mu), c =
    U^T r, for the mu > 0 with mu ||c / (e + mu)|| = lam (:func:`_block_mu`). Passes stop
    when no coordinate moves by more than ``tol`` times the largest one; once a pass leaves
    the nonzero groups as they were, Newton's method on them (:func:`_group_newton`)
    finishes the solve.
    """
    x = x0.copy()
    g = H @ x - q
    blocks = H[groups[:, :, None], groups[:, None, :]]  # (g, s, s)
    e, U = np.linalg.eigh(blocks)
    e = np.maximum(e, 0.0)
    prev = None
    for _ in range(max_passes):
        moved = 0.0
        for i in range(groups.shape[0]):
            gi = groups[i]
            xi = x[gi]
            r = blocks[i] @ xi - g[gi]
            nr = float(np.sqrt(r @ r))
            if nr <= lam:
                new = np.zeros_like(xi)
            else:
                c, ei = U[i].T @ r, e[i]
                mu = _block_mu((c * c).tolist(), ei.tolist(), lam, nr)
                new = U[i] @ (c / (ei + mu))
            d = new - xi
            if np.any(d != 0):
                x[gi] = new
                g += H[:, gi] @ d
                moved = max(moved, float(np.abs(d).max()))
        if moved <= tol * max(1e-300, float(np.abs(x).max(initial=0.0))):
            break
        if deadline is not None and time.perf_counter() > deadline:
            break
        active = np.any(x[groups] != 0, axis=1)
        if active.any() and prev is not None and np.array_equal(active, prev):
            # the active rows held over a pass: Newton's method on them (smooth there)
            x = _group_newton(H, q, lam, x, groups[active], deadline)
            g = H @ x - q
        prev = active
    return x


def _group_newton(
    H: Array, q: Array, lam: float, x: Array, groups: NDArray[np.intp], deadline: float | None
) -> Array:
    """Newton's method on 0.5 x^T H x - q^T x + lam sum ||x_g|| over the given (nonzero)
    groups, the other coordinates fixed at 0, with a backtracking line search, until the
    deadline; returns x with those groups updated (never a worse objective)."""
    idx = groups.ravel()
    ng, s = groups.shape
    HS, qS = H[np.ix_(idx, idx)], q[idx]
    xs = x[idx].copy()

    def obj(v: Array) -> float:
        return float(
            0.5 * v @ HS @ v - qS @ v + lam * np.linalg.norm(v.reshape(ng, s), axis=1).sum()
        )

    f = obj(xs)
    for _ in range(30):
        if deadline is not None and time.perf_counter() > deadline:
            break
        V = xs.reshape(ng, s)
        nr = np.linalg.norm(V, axis=1)
        if np.any(nr <= 1e-14 * max(1.0, float(nr.max()))):
            break
        Uv = V / nr[:, None]
        grad = HS @ xs - qS + lam * Uv.ravel()
        Hn = HS.copy()
        _add_group_curvature(Hn, Uv, nr, lam)
        try:
            step = cho_solve(
                cho_factor(Hn + 1e-12 * float(np.trace(Hn)) / idx.size * np.eye(idx.size)), grad
            )
        except np.linalg.LinAlgError:
            break
        dec = float(grad @ step)
        if not dec > 0:
            break
        t = 1.0
        while t >= 1e-10:
            xn = xs - t * step
            fn = obj(xn)
            if fn <= f - 1e-4 * t * dec:
                break
            t *= 0.5
        if t < 1e-10:
            break
        done = f - fn <= 1e-15 * max(1.0, abs(fn))
        xs, f = xn, fn
        if done:
            break
    out = x.copy()
    out[idx] = xs
    return out


class _ProxGradEngine(_Engine):
    """FISTA (constant step 1/L, adaptive restart) on the working set's atoms and intercept,
    with a Newton polish on the support (group l2; see :class:`_ProxNewtonEngine`)."""

    def _set_working_set(self, ws: NDArray[np.intp]) -> None:
        self.ws = ws
        self.X = self.st.Dk.atoms(ws, np.float64).T  # (n, k)

    def _ws_cert(self, W: Array, b: Array) -> tuple[float, float, Array]:
        """(primal, gap, b_opt) of the working-set problem."""
        st, rho = self.st, self.rho
        Z0 = self.X @ W
        b_opt = st.loss.optimal_intercept(Z0, st.Y, b) if st.fit_intercept else np.zeros_like(b)
        primal = st.loss.value(Z0 + b_opt, st.Y) + rho * st.penalty.value(W)
        u0 = st.loss.neg_grad(Z0 + b_opt, st.Y)
        if st.fit_intercept:
            u0 -= u0.mean(axis=0)
        dn = st.penalty.dual_norm(self.X.T @ u0)
        s = 1.0 if dn <= rho else rho / dn
        return primal, primal - st.loss.dual(s * u0, st.Y), b_opt

    def _solve_subproblem(
        self, W: Array, b: Array | None, gap_target: float, deadline: float | None
    ) -> tuple[Array, Array | None]:
        st, rho, X = self.st, self.rho, self.X
        Y = st.Y
        C = Y.shape[1]
        b = np.zeros(C) if b is None else b.copy()
        fi = st.fit_intercept
        pen = st.penalty

        def grads(Wv: Array, bv: Array) -> tuple[Array, Array]:
            u = st.loss.neg_grad(X @ Wv + bv, Y)
            return -(X.T @ u), (-u.sum(axis=0) if fi else np.zeros(C))

        # Lipschitz bound: (max head weight / n) * ||[X 1]||_2^2 (/4 for logistic).
        Xs = np.hstack([X, np.ones((X.shape[0], 1))]) if fi else X
        L = float(st.loss.column_weights.max() / X.shape[0] * np.linalg.norm(Xs, 2) ** 2)
        L = max(L * (0.25 if st.loss.name == "logistic" else 1.0), 1e-12)
        Wx, bx = W.copy(), b.copy()
        Wy, by = W.copy(), b.copy()
        tk = 1.0
        best_gap = np.inf
        for it in range(1, 20001):
            gW, gb = grads(Wy, by)
            Wn = pen.prox(Wy - gW / L, rho / L)
            bn = by - gb / L
            # Gradient-based adaptive restart (O'Donoghue and Candes).
            if np.sum((Wy - Wn) * (Wn - Wx)) + np.sum((by - bn) * (bn - bx)) > 0:
                tk = 1.0
            tn = 0.5 * (1 + np.sqrt(1 + 4 * tk * tk))
            Wy = Wn + ((tk - 1) / tn) * (Wn - Wx)
            by = bn + ((tk - 1) / tn) * (bn - bx)
            Wx, bx, tk = Wn, bn, tn
            if it % 25 == 0:
                _, gap, bx = self._ws_cert(Wx, bx)
                if gap <= gap_target:
                    break
                if gap < 0.5 * best_gap:  # support settling: try Newton on it
                    best_gap = gap
                    pol = self._newton_polish(Wx, bx, deadline)
                    if pol is not None:
                        _, gp, bp = self._ws_cert(*pol)
                        if gp < gap:
                            Wx, bx = pol[0], bp
                            Wy, by, tk = Wx.copy(), bx.copy(), 1.0
                            if gp <= gap_target:
                                break
                if deadline is not None and time.perf_counter() > deadline:
                    break
        return Wx, bx

    def _newton_polish(
        self, W: Array, b: Array, deadline: float | None = None
    ) -> tuple[Array, Array] | None:
        """Newton's method on the current support rows (group l2; l1 is solved by
        :class:`_ProxNewtonEngine`), stopped at the deadline between iterations."""
        st, rho, X = self.st, self.rho, self.X
        Y, loss = st.Y, st.loss
        n, C = X.shape[0], Y.shape[1]
        fi = st.fit_intercept
        rows = np.flatnonzero(np.any(W != 0, axis=1))
        if rows.size == 0:
            return None
        if 8 * 8 * ((rows.size + 1) * C) ** 2 > _COUPLED_MAX_BYTES:
            return None  # its dense Hessian and solve: too large (minutes an iteration)
        XS = X[:, rows]
        A = np.hstack([XS, np.ones((n, 1))]) if fi else XS  # (n, a)
        a = A.shape[1]
        theta = np.vstack([W[rows], b[None, :]]) if fi else W[rows].copy()  # (a, C)
        wcol = loss.column_weights / n

        def obj(th: Array) -> float:
            r = float(np.linalg.norm(th[: rows.size], axis=1).sum())
            return loss.value(A @ th, Y) + rho * r

        f = obj(theta)
        for _ in range(50):
            if deadline is not None and time.perf_counter() > deadline:
                break
            Z = A @ theta
            g = -(A.T @ loss.neg_grad(Z, Y))  # (a, C)
            Hm = np.zeros((a * C, a * C))
            if loss.name == "logistic":
                p = expit(Z)
                for c in range(C):
                    Hc = (A * (wcol[c] * p[:, c] * (1 - p[:, c]))[:, None]).T @ A
                    Hm[c::C, c::C] = Hc
            else:
                for sl in loss.head_slices():
                    p = softmax(Z[:, sl], axis=1)
                    for i, c in enumerate(range(sl.start, sl.stop)):
                        for j, c2 in enumerate(range(sl.start, sl.stop)):
                            wgt = wcol[c] * (p[:, i] * (i == j) - p[:, i] * p[:, j])
                            Hm[c::C, c2::C] = (A * wgt[:, None]).T @ A
            Wr = theta[: rows.size]
            nr = np.linalg.norm(Wr, axis=1)
            if np.any(nr <= 1e-14):
                return None
            U = Wr / nr[:, None]
            g[: rows.size] += rho * U
            _add_group_curvature(Hm, U, nr, rho)
            gv = g.reshape(-1)
            step = np.linalg.lstsq(Hm + 1e-14 * np.trace(Hm) * np.eye(a * C), gv, rcond=None)[0]
            dec = float(gv @ step)
            if dec <= 1e-30:
                break
            t = 1.0
            while t > 1e-10:
                th = (theta.reshape(-1) - t * step).reshape(theta.shape)
                fn = obj(th)
                if fn <= f - 1e-4 * t * dec:
                    break
                t *= 0.5
            if t <= 1e-10:
                break
            theta, f_old, f = th, f, fn
            if f_old - f <= 1e-15 * max(1.0, abs(f)):
                break
        Wp = np.zeros_like(W)
        Wp[rows] = theta[: rows.size]
        bp = theta[rows.size] if fi else np.zeros(C)
        return Wp, bp


class _ProxNewtonEngine(_ProxGradEngine):
    """Proximal Newton for logistic / softmax with the l1 penalty, inner problems exact.

    Each sweep takes the columns of W in turn, and for column c (with b_c) replaces the
    loss by its second-order model in that column at the current point (the exact
    Hessian in the column: for logistic, whose columns are separate problems, the exact
    Newton step; for softmax a block Gauss-Seidel step over a head's columns). With the
    intercept eliminated by weighted centring, the model is a Lasso in Gram form,
    ``0.5 v^T H_c v - q_c^T v + rho ||v||_1``, solved exactly by the active-set method of
    the squared loss (warm-started at the current column) on a :class:`LazyGram`, and a
    backtracking line search on the true objective along the step to the model's
    minimiser (Lee, Sun and Saunders 2014) makes every step descend. Identical rows of D
    are merged first (their targets averaged: the loss of a group of equal rows is its
    size times the loss at their mean target), so every product runs over the n_u
    distinct rows. For softmax, the sweeps alternate with rounds of coupled steps
    (:meth:`_coupled_step`: the full Hessian of the heads), which converge superlinearly
    where the sweeps, blind to the coupling of a head's columns, converge linearly. The
    working-set gap, on the rows as given, stops the iterations.
    """

    def __init__(self, st: _Setup, rho: float) -> None:
        super().__init__(st, rho)
        n = st.Dk.n
        # the squared engine's row merging, cached with the dictionary (a path reuses it)
        self.rc = _gram_cache(st.Dk).rc
        if self.rc is None:
            self.row_w = np.full(n, 1.0 / n)
            self.Yu = st.Y
        else:
            self.row_w = self.rc.counts / n
            self.Yu = np.asarray(self.rc.S @ st.Y) / self.rc.counts[:, None]
        self.wcol = st.loss.column_weights
        self.A = self.row_w[:, None] * self.wcol[None, :]  # weight of each (row, column) term

    def _set_working_set(self, ws: NDArray[np.intp]) -> None:
        super()._set_working_set(ws)
        self.Xu = self.X if self.rc is None else self.rc.atoms(ws, np.float64).T  # (n_u, k)

    def _start(self, W: Array, b: Array | None) -> tuple[Array, Array, Array, Array, float]:
        """A subproblem's starting point: copies of W and b (b optimal for W when there is
        an intercept; zeros when none is given), with :meth:`_state` there."""
        W = W.copy()
        b = np.zeros(W.shape[1]) if b is None else b.copy()
        if self.st.fit_intercept:
            b = self._ws_cert(W, b)[2]
        return (W, b, *self._state(W, b))

    def _state(self, W: Array, b: Array) -> tuple[Array, Array, float]:
        """(Z, P, objective) at (W, b) on the merged rows. The penalty is summed as the
        l1 path's steps sum it (group l2 of one column is l1 and takes that path)."""
        Z = self.Xu @ W + b
        f, P = self._model(Z)
        pen = self.st.penalty
        r = pen.value(W) if pen.name == "group_l2" and W.shape[1] > 1 else np.abs(W).sum()
        return Z, P, f + self.rho * float(r)

    def _model(self, Z: Array) -> tuple[float, Array]:
        """(loss, probabilities) on the merged rows at predictions Z (n_u, C)."""
        A, Yu = self.A, self.Yu
        if self.st.loss.name == "logistic":
            return float(np.sum(A * (np.logaddexp(0.0, Z) - Yu * Z))), expit(Z)
        P = np.empty_like(Z)
        f = 0.0
        for sl in self.st.loss.head_slices():
            lsm = log_softmax(Z[:, sl], axis=1)
            P[:, sl] = np.exp(lsm)
            f -= float(np.sum(A[:, sl] * Yu[:, sl] * lsm))
        return f, P

    def _solve_subproblem(
        self, W: Array, b: Array | None, gap_target: float, deadline: float | None
    ) -> tuple[Array, Array | None]:
        if self.st.penalty.name != "l1" and W.shape[1] > 1:  # one column: group l2 is l1
            return self._solve_group(W, b, gap_target, deadline)
        st = self.st
        C = W.shape[1]
        W, b, Z, P, F = self._start(W, b)
        is_softmax = st.loss.name == "softmax"
        sweep_s, newton_s = 0.0, 0.0  # time in sweeps since the last coupled round, in it
        for _ in range(1000):
            t0 = time.perf_counter()
            W_old = W.copy()
            for c in range(C):
                step = self._column_step(W, b, Z, P, F, c, deadline)
                if step is not None:
                    W[:, c], b[c], Z, P, F = step
            if is_softmax:
                W = self._recentre(W)
                Z, P, F = self._state(W, b)
            _, gap, _ = self._ws_cert(W, b)
            if gap <= gap_target or (deadline is not None and time.perf_counter() > deadline):
                break
            if np.array_equal(W, W_old):  # no column moved: the model's minimisers are W
                break
            sweep_s += time.perf_counter() - t0
            if is_softmax and sweep_s >= newton_s:
                # Proximal Newton with the full Hessian (the column-wise models leave out
                # the coupling of a head's columns, so alone the sweeps converge only
                # linearly). A coupled step costs far more than a sweep on large supports,
                # so the time of the last round of them is spent in sweeps before the next.
                t1 = time.perf_counter()
                for _ in range(_COUPLED_STEPS):
                    nstep = self._coupled_step(W, b, Z, P, F, deadline)
                    if nstep is None:
                        break
                    W, b = self._recentre(nstep[0]), nstep[1]
                    Z, P, F = self._state(W, b)
                    gap_old = gap
                    _, gap, _ = self._ws_cert(W, b)
                    if gap <= gap_target or gap > _COUPLED_RATE * gap_old:
                        break
                    if deadline is not None and time.perf_counter() > deadline:
                        break
                newton_s, sweep_s = time.perf_counter() - t1, 0.0
                if gap <= gap_target:
                    break
        return W, b

    def _solve_group(
        self, W: Array, b: Array | None, gap_target: float, deadline: float | None
    ) -> tuple[Array, Array | None]:
        """Group l2: coupled proximal Newton steps over whole rows of W, then FISTA.

        Each step's model (the full Hessian in the candidate rows' entries and the
        intercepts) is a group Lasso in Gram form, solved by block coordinate descent with
        exact block solves (:func:`_group_lasso_bcd`); a line search on the objective
        takes the step. Steps stop at the working-set gap target; if they stall or the
        Hessian would be too large, FISTA with its Newton polish goes on from the point
        reached.
        """
        W, b, Z, P, F = self._start(W, b)
        for _ in range(_GROUP_STEPS):
            step = self._coupled_step(W, b, Z, P, F, deadline)
            if step is None:
                break
            W, b, Z, P, F = step
            _, gap, _ = self._ws_cert(W, b)
            if gap <= gap_target or (deadline is not None and time.perf_counter() > deadline):
                return W, b
        return super()._solve_subproblem(W, b, gap_target, deadline)

    def _column_step(
        self, W: Array, b: Array, Z: Array, P: Array, F: float, c: int, deadline: float | None
    ) -> tuple[Array, float, Array, Array, float] | None:
        """One proximal Newton step on column c of W (and b_c), the others fixed.

        The second-order model of the loss in column c (its exact Hessian in that column:
        weights h = a p (1 - p), for both losses) is a Lasso in Gram form once the
        intercept is eliminated; its exact minimiser gives the direction, and a
        backtracking line search on the true objective the step. Returns (w_c, b_c, Z, P,
        objective) after the step, or None when the step does not descend.
        """
        st, rho, X = self.st, self.rho, self.Xu
        fi = st.fit_intercept
        h = self.A[:, c] * P[:, c] * (1.0 - P[:, c])
        if self.wcol[c] == 0 or not np.any(h > 0):
            return None
        g = self.A[:, c] * (P[:, c] - self.Yu[:, c])  # dF/dZ_c on the merged rows
        r = h * Z[:, c] - g  # linear term of the model in D v + beta
        H = LazyGram(X, h, center=fi, binary=st.Dk.binary)
        q = X.T @ r
        if fi:
            S, s = float(h.sum()), H.s
            q -= s * (float(r.sum()) / S)
        v, _ = lasso_active_set(H, q, rho, W[:, c], deadline=deadline)
        beta = (float(r.sum()) - float(s @ v)) / S if fi else b[c]
        d, db = v - W[:, c], beta - b[c]
        dz = X @ d + db
        l1_rest = float(np.abs(W).sum()) - float(np.abs(W[:, c]).sum())
        # directional derivative of the objective along the step (an upper bound)
        delta = float(g @ dz) + rho * (float(np.abs(v).sum()) - float(np.abs(W[:, c]).sum()))
        if not delta < 0:
            return None
        t = 1.0
        while t >= 1e-10:
            Zn = Z.copy()
            Zn[:, c] += t * dz
            fn, Pn = self._model(Zn)
            wn = W[:, c] + t * d
            Fn = fn + rho * (l1_rest + float(np.abs(wn).sum()))
            if Fn <= F + 1e-4 * t * delta:
                return wn, b[c] + t * db, Zn, Pn, Fn
            t *= 0.5
        return None

    def _coupled_step(
        self, W: Array, b: Array, Z: Array, P: Array, F: float, deadline: float | None
    ) -> tuple[Array, Array, Array, Array, float] | None:
        """One proximal Newton step with the full Hessian of the softmax heads.

        The variables are the candidate entries of W (its nonzeros, then the zeros whose
        gradient violates or nearly violates ``|g| <= rho``, strongest first, within a
        budget) and the intercepts but one per head (a head's intercepts move together
        without changing the loss). The second-order model in them couples a head's columns
        (:meth:`_coupled_hessian`); with the intercepts eliminated by their Schur complement
        it is a Lasso in Gram form, solved exactly by the active-set method, sign changes
        and new entries included (a Newton step on fixed signs stalls when a sign flips).
        A backtracking line search on the true objective gives the step. Returns (W, b, Z,
        P, objective) after the step, or None when it does not descend or when the Hessian
        and its working copies would exceed ``_COUPLED_MAX_BYTES``.
        """
        st, rho, X, pen = self.st, self.rho, self.Xu, self.st.penalty
        C = W.shape[1]
        R = self.A * (P - self.Yu)  # dF/dZ on the merged rows
        G = X.T @ R
        group = pen.name == "group_l2"
        if group:  # whole rows: the nonzero ones, then the near-violating ones
            nz = np.any(W != 0, axis=1)[:, None]
            score = pen.row_scores(G)
        else:
            nz = W != 0
            score = np.abs(G).ravel()
        n_nz = int(nz.sum())
        near = np.flatnonzero(~nz.ravel() & (score > _COUPLED_NEAR * rho))
        budget = max(_COUPLED_MIN_NEW, n_nz // 8)
        if near.size > budget:
            near = near[np.argsort(-score[near], kind="stable")[:budget]]
        cand = nz.copy()
        cand.ravel()[near] = True
        if group:
            cand = np.repeat(cand, C, axis=1)
        if not cand.any():
            return None
        heads = st.loss.head_slices()
        free_b = np.zeros(C, dtype=bool)  # intercepts in the step: all but one per softmax head
        if st.fit_intercept:
            for sl in heads:
                free_b[sl.start : sl.stop - (st.loss.name == "softmax")] = True
        cols = [np.append(np.flatnonzero(cand[:, c]), [-1] * int(free_b[c])) for c in range(C)]
        cs = np.cumsum([0] + [v.size for v in cols])  # column c's variables: cs[c]:cs[c+1]
        m = int(cs[-1])
        if 8 * 8 * m * m > _COUPLED_MAX_BYTES:  # H and its working copies: <= 8 m^2 floats
            return None
        var = np.concatenate(cols).astype(np.intp)  # atom of each variable, -1: intercept
        cls = np.repeat(np.arange(C), np.diff(cs))  # its column
        xpos, bpos = np.flatnonzero(var >= 0), np.flatnonzero(var < 0)
        H = self._coupled_hessian(P, var, cs)
        # ---- the model in Gram form: 0.5 t^T H t - q^T t + rho ||t_x||_1, t = (x, beta)
        # (an intercept's var of -1 reads W's last row, which np.where discards)
        theta0 = np.where(var >= 0, W[var, cls], b[cls])
        grad = np.where(var >= 0, G[var, cls], R.sum(axis=0)[cls])
        q = H @ theta0 - grad
        Hxx, qx = H[np.ix_(xpos, xpos)], q[xpos]
        if bpos.size:  # eliminate the intercepts: beta = Hbb^-1 (q_b - Hbx x)
            Hxb, Hbb = H[np.ix_(xpos, bpos)], H[np.ix_(bpos, bpos)]
            try:
                Ef = cho_factor(Hbb)
                EB, Eq = cho_solve(Ef, Hxb.T), cho_solve(Ef, q[bpos])
            except np.linalg.LinAlgError:
                Hp = np.linalg.pinv(Hbb, hermitian=True)
                EB, Eq = Hp @ Hxb.T, Hp @ q[bpos]
            Hxx -= Hxb @ EB
            Hxx = 0.5 * (Hxx + Hxx.T)
            qx = qx - Hxb @ Eq
        x0 = theta0[xpos]
        if group:  # every column holds the same atoms: group i is entry i of each column
            na = xpos.size // C
            groups = np.arange(C)[None, :] * na + np.arange(na)[:, None]
            x = _group_lasso_bcd(Hxx, qx, rho, x0, groups, deadline)
            pen_x, pen_x0 = (float(np.linalg.norm(v[groups], axis=1).sum()) for v in (x, x0))
        else:
            x, _ = lasso_active_set(Hxx, qx, rho, x0, deadline=deadline)
            pen_x, pen_x0 = float(np.abs(x).sum()), float(np.abs(x0).sum())
        # ---- line search on the true objective along the step to the model's minimiser
        dW = np.zeros_like(W)
        dW[var[xpos], cls[xpos]] = x - x0
        db = np.zeros(C)
        if bpos.size:
            db[cls[bpos]] = Eq - EB @ x - theta0[bpos]
        dZ = X @ dW + db
        delta = float(np.sum(R * dZ)) + rho * (pen_x - pen_x0)
        if not delta < 0:
            return None
        t = 1.0
        while t >= 1e-10:
            Wn = W + t * dW
            fn, Pn = self._model(Z + t * dZ)
            Fn = fn + rho * pen.value(Wn)
            if Fn <= F + 1e-4 * t * delta:
                return Wn, b + t * db, Z + t * dZ, Pn, Fn
            t *= 0.5
        return None

    def _coupled_hessian(
        self, P: Array, var: NDArray[np.intp], cs: NDArray[np.intp], block_rows: int | None = None
    ) -> Array:
        """Hessian of the merged-row softmax loss in the variables of a coupled step.

        Variable v is the coefficient of atom ``var[v]`` (of the intercept where
        ``var[v] < 0``) in column c for ``cs[c] <= v < cs[c + 1]``; P holds the heads'
        probabilities on the merged rows. With M the variables' columns of [X, 1] and
        ``a`` the row weights::

            H = blockdiag_c (M_c^T diag(a p_c) M_c) - sum_heads V_h^T V_h,
            V_h[:, v] = M[:, v] sqrt(a) p_c(v),

        each term's upper triangle by ``syrk`` over blocks of ``block_rows`` rows (default:
        ``_COUPLED_BLOCK_BYTES`` of them), so that memory stays bounded whatever n_u.
        """
        X = self.Xu
        n_u, C = X.shape[0], P.shape[1]
        m = int(cs[-1])
        xpos = np.flatnonzero(var >= 0)
        cls = np.repeat(np.arange(C), np.diff(cs))
        heads = self.st.loss.head_slices()
        Hc = [np.zeros((int(cs[c + 1] - cs[c]),) * 2, order="F") for c in range(C)]
        Hh = [np.zeros((int(cs[sl.stop] - cs[sl.start]),) * 2, order="F") for sl in heads]
        sa = np.sqrt(self.A)
        rb = block_rows or max(256, int(_COUPLED_BLOCK_BYTES // (16 * max(m, 1))))
        for r0 in range(0, n_u, rb):
            r1 = min(n_u, r0 + rb)
            Mb = np.ones((r1 - r0, m))
            Mb[:, xpos] = X[r0:r1][:, var[xpos]]
            Pb, sab = P[r0:r1], sa[r0:r1]
            Sb = np.sqrt(Pb) * sab
            for c in range(C):
                if cs[c + 1] > cs[c]:
                    Mc = Mb[:, cs[c] : cs[c + 1]] * Sb[:, c : c + 1]
                    Hc[c] = dsyrk(1.0, Mc.T, beta=1.0, c=Hc[c], trans=0, overwrite_c=1)
            V = Mb * (sab * Pb)[:, cls]
            for h, sl in enumerate(heads):
                if cs[sl.stop] > cs[sl.start]:
                    Vh = V[:, cs[sl.start] : cs[sl.stop]]
                    Hh[h] = dsyrk(1.0, Vh.T, beta=1.0, c=Hh[h], trans=0, overwrite_c=1)
        H = np.zeros((m, m))
        for c in range(C):
            H[cs[c] : cs[c + 1], cs[c] : cs[c + 1]] = Hc[c]
        for h, sl in enumerate(heads):
            H[cs[sl.start] : cs[sl.stop], cs[sl.start] : cs[sl.stop]] -= Hh[h]
        H = np.triu(H)
        H += np.triu(H, 1).T
        return H

    def _recentre(self, W: Array) -> Array:
        """Shift each atom's row of every softmax head by a median of its entries.

        Adding a constant to an atom's coefficients in all columns of a head leaves every
        softmax output unchanged, and ``sum_c |W_jc - t|`` is least at a median t of the
        row: the shift lowers the objective or keeps it, and it moves W along the flat
        directions of the loss, which the column-wise model of a Newton step does not see.
        Of the two middle entries of an even row, the one of smaller magnitude is used
        (0 when the row's median interval holds it), so that it becomes an exact zero.
        """
        W = W.copy()
        for sl in self.st.loss.head_slices():
            B = W[:, sl]
            srt = np.sort(B, axis=1)
            h = B.shape[1]
            lo, hi = srt[:, (h - 1) // 2], srt[:, h // 2]
            t = np.where(np.abs(lo) <= np.abs(hi), lo, hi)
            t[(lo <= 0) & (hi >= 0)] = 0.0
            W[:, sl] = B - t[:, None]  # x - x is exactly 0: the median entry becomes zero
        return W
