"""Carathéodory support reduction (SPEC section 4).

Both penalties are handled by one routine. The prediction is written as
``vec(D W + 1 b^T) = A lam + E beta`` with atoms A (one column per support element), free
columns E (the intercept) and coefficients lam; the penalty is ``c^T lam`` while no lam_j
changes sign. While [A, E] has a null vector v with ``c^T v_A = 0``, moving ``lam`` along
``v_A`` (and ``beta`` along ``v_E``) keeps the prediction and the penalty fixed; it moves
until the first lam_j reaches zero and that element leaves the support.

- l1, per output c: A = D_S (the atoms with W_jc != 0), lam = W_Sc, c = sign(W_Sc), E = 1.
- group l2: A_j = vec(d_j W_j^T) for the nonzero rows, lam = 1 (row j becomes lam_j W_j),
  c_j = ||W_j||, E = vec(1 e_c^T) for each output c.

At an optimum every null vector satisfies ``c^T v_A = 0`` (else the penalty could drop with the
prediction fixed). At a point that is not optimal, a null space of dimension 1 with
``c^T v_A != 0`` is followed in the direction that lowers the penalty, so the penalty never
increases. Afterwards the columns of [A, E] are linearly independent.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import null_space
from scipy.linalg.blas import dsyrk, ssyrk

from cvxsnn.solver.certificate import _as_numpy, prepare_dictionary
from cvxsnn.solver.penalties import make_penalty

__all__ = ["estimate_reduction_bytes", "reduce_support"]

Array = NDArray[np.float64]


def _null_basis(M: Array, binary: bool | None = None, gram_tested: bool = False) -> Array:
    """Orthonormal basis of the null space of M, shape (M.shape[1], r).

    ``binary`` says whether M holds only 0 and 1 (None: look); ``gram_tested`` that the
    Gram test of :func:`_clearly_full_rank` already ran on M and proved nothing.
    """
    if M.shape[1] == 0:
        return np.zeros((0, 0))
    if M.shape[0] == 0:
        return np.eye(M.shape[1])
    rcond = max(M.shape) * np.finfo(np.float64).eps * 10
    if M.shape[0] > 2 * M.shape[1]:
        if not gram_tested and _clearly_full_rank(M, binary):
            return np.zeros((M.shape[1], 0))
        # Tall M (rows >> support): its R factor has the same singular values and null space,
        # and the SVD then costs O(k^3) instead of O(n k^2).
        M = np.linalg.qr(M, mode="r")
    return null_space(M, rcond=rcond)


#: A Gram matrix whose computed smallest eigenvalue exceeds this many times ``k eps``
#: times its largest is taken as proof of full column rank.
_GRAM_MARGIN = 1e3


def _clearly_full_rank(M: Array, binary: bool | None = None) -> bool:
    """Whether the tall M (n, k) has full column rank by a margin, from its Gram matrix.

    ``G = M^T M`` is formed exactly for 0/1 entries (a float32 product of 0/1 values sums
    integers below 2^24 without rounding), with BLAS syrk in float64 otherwise; its
    eigenvalues are computed to an absolute error of about ``k eps ||G||``. When the
    smallest exceeds ``_GRAM_MARGIN k eps`` times the largest, ``sigma_min(M) /
    sigma_max(M) > (1e3 k eps)^(1/2)`` (1.8e-5 at k = 3000), far above the SVD's rank
    tolerance, so M has full column rank and its null space is empty. Otherwise this
    says nothing and the caller decides by QR and SVD. Cost: n k^2 flops of syrk plus an
    eigenvalue solve of order k, against QR's 2 n k^2 and the SVD of R. ``binary``: whether
    M holds only 0 and 1 (None: look, which costs two boolean copies of M).
    """
    n, k = M.shape
    if binary is None:
        binary = bool(np.all((M == 0) | (M == 1)))
    binary = binary and n < 2**24
    if binary:
        G = ssyrk(1.0, np.asarray(M.T, dtype=np.float32)).astype(np.float64)  # exact counts
    else:
        G = dsyrk(1.0, np.asarray(M.T, dtype=np.float64))
    lam = np.linalg.eigvalsh(G, UPLO="U")  # syrk fills the upper triangle
    return bool(lam[-1] > 0 and lam[0] > _GRAM_MARGIN * k * np.finfo(np.float64).eps * lam[-1])


#: Rows of [D_S, 1] cast to float32 at a time by :func:`_binary_support_full_rank`.
_GRAM_BLOCK_ROWS = 4096


def _binary_support_full_rank(Dt: NDArray[np.uint8], S: NDArray[np.intp], ones: bool) -> bool:
    """The test of :func:`_clearly_full_rank` on ``[D_S, 1]`` without forming it.

    ``Dt`` is the atom-major 0/1 dictionary (P, n) and S the support. The Gram matrix is
    accumulated over row blocks of ``_GRAM_BLOCK_ROWS`` by float32 syrk, exactly (integer
    counts below 2^24), and its eigenvalues taken in float64 in place, so the memory is
    the k x k Gram matrix in float32 and float64 plus one block, instead of the float64
    (n, k + 1) matrix, its float32 copy and the Gram matrices (see
    :func:`estimate_reduction_bytes`). Returns False where it proves nothing.
    """
    from scipy.linalg import eigvalsh

    n = Dt.shape[1]
    k = S.size + int(ones)
    if n >= 2**24 or n <= 2 * k:
        return False
    # Fortran order: syrk then updates G in place and reads each block without a copy
    G = np.zeros((k, k), dtype=np.float32, order="F")
    blk = np.empty((min(_GRAM_BLOCK_ROWS, n), k), dtype=np.float32, order="F")
    if ones:
        blk[:, -1] = 1.0
    for a in range(0, n, _GRAM_BLOCK_ROWS):
        b = min(a + _GRAM_BLOCK_ROWS, n)
        rows = blk[: b - a]
        rows[:, : S.size] = Dt[S, a:b].T
        G = ssyrk(1.0, rows, beta=1.0, c=G, trans=1, overwrite_c=1)  # G += rows^T rows
    G64 = G.astype(np.float64)
    del G, blk
    # syevd, the driver of the unblocked test's numpy.linalg.eigvalsh, in place
    lam = eigvalsh(G64, lower=False, overwrite_a=True, check_finite=False, driver="evd")
    eps = np.finfo(np.float64).eps
    return bool(lam[-1] > 0 and lam[0] > _GRAM_MARGIN * k * eps * lam[-1])


def estimate_reduction_bytes(
    n: int, support: int, C: int = 1, penalty: Literal["l1", "group_l2"] = "l1"
) -> tuple[int, int]:
    """Upper estimates of the memory :func:`reduce_support` adds, in bytes.

    Parameters
    ----------
    n : int
        Rows of the dictionary.
    support : int
        Largest support of one output (l1) or number of nonzero rows (group l2), k.
    C : int
        Outputs.
    penalty : {"l1", "group_l2"}

    Returns
    -------
    proof, factor : int
        For l1 with a binary dictionary: the blocked rank proof (``12 k^2`` for the Gram
        matrix in float32 and float64, ``9 b k`` for a block of b rows in uint8 and
        float32 and syrk's copy of the last, shorter block) and, where the proof
        fails and [D_S, 1] is factored, the float64 (n, k + 1) matrix with its QR
        (``16 n k + 16 k^2``). For group l2 both are the (n C, k + C) matrix, its
        ``hstack`` copy, the float64 atoms and the QR.
    """
    for name, v in (("n", n), ("support", support), ("C", C)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1; got {v}")
    if penalty not in ("l1", "group_l2"):
        raise ValueError(f"penalty must be one of 'l1', 'group_l2'; got {penalty!r}")
    k = int(support) + 1
    if penalty == "l1":
        # + the float32 block, syrk's copy of a shorter last block, the uint8 gather
        proof = 12 * k * k + 9 * min(_GRAM_BLOCK_ROWS, n) * k
        factor = 16 * n * k + 16 * k * k + n * k
        return proof, factor
    k = int(support) + C
    # the float64 atoms (k, n), A, E and their hstack (n C, k + C), then QR (or the
    # float32 copy and Gram matrices of the rank test)
    factor = 8 * n * int(support) + 32 * n * C * k + 24 * k * k
    return factor, factor


def _reduce(
    M: Array, k: int, lam: Array, c: Array, binary: bool | None = None, gram_tested: bool = False
) -> tuple[Array, Array]:
    """Move (lam, beta) along null vectors of M = [A, E] (A its first k columns) until the
    columns of A with lam != 0 and E are independent.

    Returns the new lam (k,) and the change of beta (e,). ``binary`` and ``gram_tested``
    as in :func:`_null_basis`.
    """
    e = M.shape[1] - k
    lam = lam.astype(np.float64).copy()
    beta = np.zeros(e)
    N = _null_basis(M, binary, gram_tested)  # (k + e, r)
    active = np.ones(k, dtype=bool)
    while N.shape[1] > 0:
        Na = N[:k]
        a = c @ Na  # (r,) penalty slope of each basis direction
        r = N.shape[1]
        if r >= 2:
            z = _null_basis(a[None, :])[:, 0] if np.linalg.norm(a) > 0 else np.eye(r)[0]
        else:
            z = np.ones(1)
        v = N @ z
        va = v[:k] * active
        if np.max(np.abs(va), initial=0.0) <= 1e-12 * max(np.linalg.norm(v), 1e-300):
            break  # a null vector on E alone: E itself is dependent; nothing to move
        slope = float(c @ va)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_all = np.where(np.abs(va) > 1e-14 * np.abs(va).max(), -lam / va, np.nan)
        if r == 1 and abs(slope) > 1e-12 * np.abs(c).max() * np.abs(va).max():
            # Not an optimum: go the way that lowers the penalty.
            ok = (t_all * np.sign(-slope) > 0) & np.isfinite(t_all)
            if not np.any(ok):
                break
            cand = np.where(ok, np.abs(t_all), np.inf)
        else:
            cand = np.where(np.isfinite(t_all), np.abs(t_all), np.inf)
        j = int(np.argmin(cand))
        t = float(t_all[j])
        lam += t * va
        beta += t * v[k:]
        lam[j] = 0.0
        active[j] = False
        # Null space of the matrix without column j: the part of N with zero entry j.
        B = _null_basis(N[j][None, :])  # (r, r - 1)
        N = N @ B
        N[j] = 0.0
    return lam, beta


def reduce_support(
    D: Any,
    W: Any,
    b: Any,
    penalty: Literal["l1", "group_l2"] = "l1",
    *,
    fit_intercept: bool = True,
) -> tuple[Array, Array]:
    """Carathéodory support reduction of an (optimal) readout.

    Parameters
    ----------
    D : array_like of shape (n, P)
        Dictionary.
    W : array_like of shape (P, C) or (P,)
        Readout weights (an optimum of the program, for the penalty to stay fixed).
    b : array_like of shape (C,) or None
        Intercept (None means zero).
    penalty : {"l1", "group_l2"}
    fit_intercept : bool
        Whether the intercept may absorb changes (the ones column joins the rank test).

    Returns
    -------
    W : ndarray of shape (P, C)
    b : ndarray of shape (C,)
        New readout with the same D W + 1 b^T and the same penalty (at an optimum; never a
        larger one elsewhere), whose support is independent: for l1, per output c,
        [D_S(c), 1] has full column rank; for group l2, the vectors vec(d_j W_j^T) of the
        support rows with the vec(1 e_c^T) have full column rank.
    """
    pen = make_penalty(penalty)
    Dk = prepare_dictionary(D)
    Wv = np.asarray(_as_numpy(W), dtype=np.float64)
    Wv = Wv[:, None] if Wv.ndim == 1 else Wv.copy()
    if Wv.shape[0] != Dk.P:
        raise ValueError(f"W must have shape (P, C) with P = {Dk.P}; got {Wv.shape}")
    C = Wv.shape[1]
    bv = np.zeros(C) if b is None else np.asarray(_as_numpy(b), dtype=np.float64).reshape(-1)
    if bv.shape != (C,):
        raise ValueError(f"b must have shape (C,) = ({C},); got {bv.shape}")
    bv = bv.copy()
    n = Dk.n
    if pen.name == "l1":
        for c in range(C):
            S = np.flatnonzero(Wv[:, c])
            if S.size == 0:
                continue
            tested = Dk.binary and Dk.n < 2**24 and Dk.n > 2 * (S.size + int(fit_intercept))
            if tested and _binary_support_full_rank(Dk.Dt, S, fit_intercept):
                continue  # [D_S, 1] has independent columns: nothing to remove
            # [D_S, 1] built in place: one float64 (n, k + 1) array, the atoms cast from
            # uint8 on assignment (an atoms copy and then an hstack made two)
            M = np.empty((n, S.size + int(fit_intercept)))
            M[:, : S.size] = Dk.Dt[S].T
            if fit_intercept:
                M[:, S.size] = 1.0
            lam, dbeta = _reduce(
                M, S.size, Wv[S, c], np.sign(Wv[S, c]), binary=Dk.binary, gram_tested=tested
            )
            del M
            Wv[S, c] = lam
            if fit_intercept:
                bv[c] += dbeta[0]
        return Wv, bv
    S = np.flatnonzero(np.any(Wv != 0, axis=1))
    if S.size == 0:
        return Wv, bv
    X = Dk.atoms(S)  # (k, n)
    A = np.einsum("ji,jc->icj", X, Wv[S]).reshape(n * C, S.size)  # vec(d_j W_j^T)
    E = np.kron(np.ones((n, 1)), np.eye(C)) if fit_intercept else np.zeros((n * C, 0))
    lam, dbeta = _reduce(np.hstack([A, E]), S.size, np.ones(S.size), np.linalg.norm(Wv[S], axis=1))
    Wv[S] *= lam[:, None]
    if fit_intercept:
        bv += dbeta
    return Wv, bv
