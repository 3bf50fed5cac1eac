"""Exact primal active-set method for the Lasso in Gram form.

Solves, for a positive semidefinite H (k, k), q (k,) and lam > 0,

    min_x  f(x) = 0.5 x^T H x - q^T x + lam ||x||_1.

The method keeps an active set A of atoms whose columns are linearly independent in the
metric of H (H_AA positive definite, with an upper Cholesky factor R, H_AA = R^T R), and the
signs s_A of x_A:

1. Sign-fixed step: z = H_AA^{-1} (q_A - lam s_A). If sign(z) = s_A, x_A = z is optimal on A.
   Otherwise move from x_A towards z (f decreases along the segment while no sign changes)
   up to the first coordinate that reaches zero, drop it, and repeat.
2. Pricing: g = H x - q. If |g_j| <= lam (1 + tol) for every j outside A, x is optimal.
   Otherwise the most violating atoms enter with s_j = -sign(g_j). For one entering atom
   the new minimizer has the right sign on it (z_j - x_j = s_j (|g_j| - lam) (H_AA^{-1})_jj),
   so every step strictly decreases f; a batch of entering atoms is pruned of the ones whose
   sign comes out wrong.
3. An entering atom dependent on A (its Cholesky pivot vanishes, so d_j = D_A alpha in the
   centred metric) cannot enter directly: along x_j = t s_j, x_A -= t s_j alpha the fit is
   unchanged and the l1 norm falls at rate |alpha^T s_A| - 1 > 0 (the atom violates), until
   some x_i of A reaches zero; that atom leaves and j enters (a Carathéodory exchange, as
   in the simplex method). Supports therefore stay independent, which a solution always
   allows (SPEC section 4).

Entrants join as a block (one multi-right-hand-side triangular solve and a Cholesky factor
of their Schur complement; a greedy pivoted pass leaves out the ones dependent on the others).
Each step costs one gather of s rows of H (s = |A|), a block append or a Givens deletion
(``scipy.linalg.qr_delete``, O(s^2)) and two LAPACK triangular solves: no per-coordinate
Python loop. In exact arithmetic the method is finite (f strictly decreases, so no
(A, s_A) pair recurs); in floating point a step bound and a deadline guard it, and the
caller checks the working-set duality gap.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import qr_delete
from scipy.linalg.lapack import dtrtrs

__all__ = ["LazyGram", "lasso_active_set"]

Array = NDArray[np.float64]

_BATCH = 10  # entrants per pricing round: max(_BATCH, |A| // 2), strongest first
_DEP_TOL = 1e-9  # relative Cholesky pivot (squared) below which an atom counts as dependent


class LazyGram:
    """``X^T diag(h) X``, centred by ``- s s^T / S`` (s = X^T h, S = sum h) when asked,
    with its rows computed when first read and kept (``binary``: X holds 0/1 values).

    The active-set method reads only the rows of atoms that enter A (and the diagonal):
    for an active set of a atoms out of k this costs ``n a k`` instead of ``n k^2`` for
    the whole matrix (the Gram of a reweighted problem, which changes at every step of an
    outer Newton method). Indexing supports the forms the method uses: ``H[rows]``,
    ``H[np.ix_(rows, cols)]``, ``H[rows, j]``, ``H[i, j]`` and ``H[js, js]`` (pairs).
    """

    def __init__(self, X: Array, h: Array, center: bool, binary: bool = False) -> None:
        self.X, self.h = X, h
        k = X.shape[1]
        self.shape = (k, k)
        self._rows = np.empty((k, k))
        self._have = np.zeros(k, dtype=bool)
        xh = X.T @ h
        self._diag = xh.copy() if binary else (X * X).T @ h  # 0/1 entries: x^2 = x
        self.s: Array | None = None
        if center and h.sum() > 0:
            self.S = float(h.sum())
            self.s = xh
            self._diag -= self.s * (self.s / self.S)

    def diagonal(self) -> Array:
        return self._diag

    def rows(self, idx: Any) -> Array:
        """Rows ``idx`` (any integer index sequence), shape (len(idx), k)."""
        idx = np.asarray(idx, dtype=np.intp).reshape(-1)
        need = np.unique(idx[~self._have[idx]])
        if need.size:
            blk = (self.X[:, need] * self.h[:, None]).T @ self.X
            if self.s is not None:
                blk -= np.outer(self.s[need], self.s / self.S)
            self._rows[need] = blk
            self._have[need] = True
        return self._rows[idx]

    def __getitem__(self, key: Any) -> Any:
        if not isinstance(key, tuple):
            return self.rows(key)
        r, c = key
        if np.ndim(r) == 2:  # np.ix_(rows, cols)
            return self.rows(r)[:, np.asarray(c, dtype=np.intp).reshape(-1)]
        if np.ndim(r) == 0:
            return float(self.rows([r])[0, int(c)])
        if np.ndim(c) == 0:
            return self.rows(r)[:, int(c)]
        return self.rows(r)[np.arange(len(r)), np.asarray(c, dtype=np.intp)]


class _Factor:
    """Upper Cholesky factor R of H[A][:, A] for an ordered active list A.

    R lives in the leading block of a Fortran-ordered buffer, so that appending a column
    costs O(s^2) and LAPACK's triangular solve reads it in place (leading dimension = the
    buffer's).
    """

    def __init__(self, H: Array) -> None:
        self.H = H
        self.A: list[int] = []
        self.buf = np.zeros((64, 64), order="F")

    @property
    def size(self) -> int:
        return len(self.A)

    @property
    def R(self) -> Array:
        s = self.size
        return self.buf[:s, :s]

    def _reserve(self, s: int) -> None:
        cap = self.buf.shape[0]
        if s > cap:
            new = np.zeros((max(s, 2 * cap),) * 2, order="F")
            m = self.size
            new[:m, :m] = self.buf[:m, :m]
            self.buf = new

    def reset(self, A: list[int]) -> bool:
        """Factor H_AA from scratch; False (and empty) if it is not numerically definite."""
        self.A = []
        if not A:
            return True
        HAA = self.H[np.ix_(A, A)]
        try:
            L = np.linalg.cholesky(HAA)
        except np.linalg.LinAlgError:
            return False
        if np.min(np.diag(L) ** 2 / np.diag(HAA)) <= _DEP_TOL:
            return False
        self._reserve(len(A))
        self.buf[: len(A), : len(A)] = L.T
        self.A = list(A)
        return True

    def _trs(self, b: Array, trans: int) -> Array:
        x, info = dtrtrs(self.buf[:, : self.size], b, lower=0, trans=trans)
        if info != 0:
            raise np.linalg.LinAlgError(f"singular active-set factor (info = {info})")
        return x

    def coords(self, j: int) -> tuple[Array, float]:
        """(r, pivot^2) with R^T r = H_Aj and pivot^2 = H_jj - r.r."""
        if self.size == 0:
            return np.zeros(0), float(self.H[j, j])
        r = self._trs(self.H[self.A, j], 1)
        return r, float(self.H[j, j] - r @ r)

    def append(self, j: int, r: Array, piv2: float) -> None:
        s = self.size
        self._reserve(s + 1)
        self.buf[:s, s] = r
        self.buf[s, s] = np.sqrt(piv2)
        self.A.append(j)

    def extend(self, js: list[int]) -> list[bool]:
        """Append the atoms js (in order); returns which entered (dependent ones do not).

        One block solve R^T R12 = H_A,js gives the Schur complement S of H_A,A on js; a
        greedy pass in the given order keeps an atom when its residual pivot (after the
        kept ones) is not negligible, and the kept block of S is then factored.
        """
        if not js:
            return []
        s, m = self.size, len(js)
        if s:
            R12 = self._trs(self.H[np.ix_(self.A, js)], 1)  # (s, m)
            S = self.H[np.ix_(js, js)] - R12.T @ R12
        else:
            R12, S = np.zeros((0, m)), self.H[np.ix_(js, js)].copy()
        hjj = self.H[js, js]
        out = [True] * m
        L = None
        try:
            L = np.linalg.cholesky(S)
            if np.min(np.diag(L) ** 2 / hjj) <= _DEP_TOL:
                L = None
        except np.linalg.LinAlgError:
            pass
        if L is None:  # greedy pivoted elimination in the given order
            Sr = S.copy()
            for i in range(m):
                piv = Sr[i, i]
                if piv <= _DEP_TOL * hjj[i]:
                    out[i] = False
                    continue
                li = Sr[i, i:] / np.sqrt(piv)
                Sr[i:, i:] -= np.outer(li, li)
            keep = np.flatnonzero(out)
            if keep.size == 0:
                return out
            R12 = R12[:, keep]
            S = S[np.ix_(keep, keep)]
            js = [js[i] for i in keep.tolist()]
            hjj = hjj[keep]
            m = keep.size
            try:
                L = np.linalg.cholesky(S)
            except np.linalg.LinAlgError:
                return [False] * len(out)
        self._reserve(s + m)
        self.buf[:s, s : s + m] = R12
        self.buf[s : s + m, s : s + m] = L.T
        self.A.extend(js)
        return out

    def delete(self, pos: int) -> None:
        """Remove the atom at position pos of A.

        Rows above pos only lose a column; the trailing block R[pos:, pos:], less its first
        column, is upper Hessenberg and Givens rotations of its own rows (``qr_delete`` on
        that block alone, Q the identity) make it triangular again: O((s - pos)^2).
        """
        s = self.size
        if pos < s - 1:
            k = s - pos
            T = np.array(self.buf[pos:s, pos:s], order="F")
            _, T = qr_delete(
                np.eye(k, order="F"), T, 0, 1, which="col", overwrite_qr=True, check_finite=False
            )
            self.buf[:pos, pos : s - 1] = self.buf[:pos, pos + 1 : s]
            self.buf[pos : s - 1, pos : s - 1] = T[: k - 1]
        del self.A[pos]

    def truncate(self, s: int) -> None:
        del self.A[s:]

    def solve(self, b: Array) -> Array:
        """H_AA^{-1} b."""
        return self._trs(self._trs(b, 1), 0)

    def alpha(self, r: Array) -> Array:
        """Solve R alpha = r (so H_AA alpha = H_Aj when R^T r = H_Aj)."""
        return self._trs(r, 0)


def lasso_active_set(
    H: Array,
    q: Array,
    lam: float,
    x0: Array | None = None,
    *,
    tol: float = 1e-10,
    max_steps: int | None = None,
    deadline: float | None = None,
) -> tuple[Array, bool]:
    """Minimise 0.5 x^T H x - q^T x + lam ||x||_1 exactly by an active-set method.

    Parameters
    ----------
    H : ndarray of shape (k, k), or LazyGram
        Positive semidefinite (a centred Gram matrix); may be singular. A
        :class:`LazyGram` computes only the rows the method reads.
    q : ndarray of shape (k,)
    lam : float
        l1 weight, > 0.
    x0 : ndarray of shape (k,), optional
        Warm start. Its fit is kept exactly while dependent atoms are folded into an
        independent support.
    tol : float
        Relative tolerance of the pricing test |g_j| <= lam (1 + tol).
    max_steps : int, optional
        Bound on the number of steps (default 20 k + 100).
    deadline : float, optional
        ``time.perf_counter()`` value after which the method returns.

    Returns
    -------
    x : ndarray of shape (k,)
        The solution (nonzero only on an independent active set).
    optimal : bool
        Whether the optimality conditions held (to ``tol``) on return.
    """
    k = H.shape[0]
    diag = H.diagonal()
    usable = diag > 1e-12 * max(float(diag.max(initial=0.0)), 1e-300)
    fac = _Factor(H)
    x_A = np.zeros(0)
    if x0 is not None and np.any(x0 != 0):
        x_A = _fold_start(fac, x0, usable)
    max_steps = 20 * k + 100 if max_steps is None else max_steps
    s_A = np.sign(x_A)
    n_new = 0  # trailing atoms of A that entered at zero in the last pricing round
    for _ in range(max_steps):
        # ---- 1. sign-fixed step on A
        if fac.size:
            z = fac.solve(q[fac.A] - lam * s_A)
            if n_new:
                s_old = fac.size - n_new
                z, s_A = _prune_entrants(fac, q, lam, s_A, s_old, z)
                x_A = np.concatenate([x_A[:s_old], np.zeros(fac.size - s_old)])
                n_new = 0
                if fac.size == s_old:  # even the strongest entrant came out wrongly signed
                    break
            wrong = np.sign(z) != s_A
            if np.any(wrong):
                d = z - x_A
                with np.errstate(divide="ignore", invalid="ignore"):
                    t = np.where(wrong, -x_A / d, np.inf)
                t[~np.isfinite(t) | (t < 0)] = np.inf
                i = int(np.argmin(t))
                ti = float(t[i])
                if not np.isfinite(ti):
                    break
                x_A = x_A + ti * d
                fac.delete(i)
                x_A, s_A = np.delete(x_A, i), np.delete(s_A, i)
                continue
            x_A = z
        # ---- 2. pricing
        g = (x_A @ H[fac.A] if fac.size else np.zeros(k)) - q
        viol = np.abs(g) - lam * (1.0 + tol)
        viol[~usable] = -np.inf
        if fac.size:
            viol[fac.A] = -np.inf
        cand = np.flatnonzero(viol > 0)
        if cand.size == 0:
            return _scatter(k, fac.A, x_A), True
        if deadline is not None and time.perf_counter() > deadline:
            break
        m = min(cand.size, max(_BATCH, fac.size // 2))
        top = cand[np.argsort(-viol[cand], kind="stable")[:m]]
        entered = np.asarray(fac.extend(top.tolist()), dtype=bool)
        if entered.any():
            n_new = int(entered.sum())
            x_A = np.concatenate([x_A, np.zeros(n_new)])
            s_A = np.concatenate([s_A, -np.sign(g[top[entered]])])
        else:  # x_A is sign-optimal on A: exchange the top atom (dependent) for one of A
            j = int(top[0])
            r, _ = fac.coords(j)
            x_A, ok = _exchange(fac, x_A, j, -float(np.sign(g[j])), r)
            s_A = np.sign(x_A)
            if not ok:  # numerically dependent but not improving: leave it out
                usable[j] = False
    return _scatter(k, fac.A, x_A), False


def _prune_entrants(
    fac: _Factor, q: Array, lam: float, s_A: Array, s_old: int, z: Array
) -> tuple[Array, Array]:
    """Drop entrants (positions >= s_old) whose sign-fixed solution has the wrong sign.

    Halves the batch of entrants (keeping the strongest, which entered first) until every
    kept entrant has its sign; one entrant alone always does when A was sign-optimal.
    Returns the new (z, s_A); on numerical failure no entrant is kept.
    """
    while True:
        n_new = fac.size - s_old
        if n_new == 0 or not np.any(np.sign(z[s_old:]) != s_A[s_old:]):
            return z, s_A
        good = np.flatnonzero(np.sign(z[s_old:]) == s_A[s_old:])
        keep = good.tolist() if 0 < good.size < n_new else list(range(n_new // 2))
        if n_new == 1:
            keep = []
        js = [fac.A[s_old + i] for i in keep]
        sj = s_A[s_old:][keep]
        fac.truncate(s_old)
        entered = fac.extend(js)
        s_A = np.concatenate([s_A[:s_old], sj[entered]])
        z = fac.solve(q[fac.A] - lam * s_A) if fac.size else np.zeros(0)


def _scatter(k: int, A: list[int], x_A: Array) -> Array:
    x = np.zeros(k)
    if A:
        x[A] = x_A
    return x


def _exchange(fac: _Factor, x_A: Array, j: int, sj: float, r: Array) -> tuple[Array, bool]:
    """Carathéodory exchange for a violating atom j dependent on A: (new x_A, j entered)."""
    alpha = fac.alpha(r)  # H_AA alpha = H_Aj
    s_A = np.sign(x_A)
    # Along x_j = t sj, x_A -= t sj alpha: x_i shrinks where sj alpha_i s_i > 0.
    shrink = sj * alpha * s_A > 0
    if not np.any(shrink):
        return x_A, False
    t = np.where(shrink, np.abs(x_A) / np.maximum(np.abs(alpha), 1e-300), np.inf)
    i = int(np.argmin(t))
    ti = float(t[i])
    x_new = x_A - ti * sj * alpha
    x_new[i] = 0.0
    fac.delete(i)
    x_new = np.delete(x_new, i)
    r2, piv2 = fac.coords(j)
    if piv2 > _DEP_TOL * fac.H[j, j]:
        fac.append(j, r2, piv2)
        return np.concatenate([x_new, [ti * sj]]), True
    return x_new, False


def _fold_start(fac: _Factor, x0: Array, usable: NDArray[np.bool_]) -> Array:
    """Build an independent active set from the warm start x0, keeping H x0 exactly.

    A dependent atom's coefficient is folded into the atoms it depends on (d_j = D_A alpha,
    so x_j d_j = D_A (x_j alpha)).
    """
    nz = np.flatnonzero((x0 != 0) & usable)
    order = nz[np.argsort(-np.abs(x0[nz]), kind="stable")].tolist()
    if fac.reset(order):
        return x0[order].astype(np.float64)
    x_A = np.zeros(0)
    for j in order:
        r, piv2 = fac.coords(j)
        if piv2 > _DEP_TOL * fac.H[j, j]:
            fac.append(j, r, piv2)
            x_A = np.concatenate([x_A, [x0[j]]])
        else:
            x_A = x_A + x0[j] * fac.alpha(r)
    # Folding can zero a coordinate; drop those.
    for i in np.flatnonzero(x_A == 0)[::-1].tolist():
        fac.delete(i)
        x_A = np.delete(x_A, i)
    return x_A
