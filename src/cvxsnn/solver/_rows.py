"""Merging identical rows of a binary dictionary.

Spike dictionaries often repeat rows: FIRST-LAST-XOR at T = 6 has at most 2^6 = 64 distinct
input strings, so 2000 samples give at most 64 distinct rows. With the distinct rows U
(n_u, P), the map ``inv`` (row i of D is row inv[i] of U) and the aggregation matrix
S (n_u, n) with S[g, i] = 1 iff inv[i] = g,

    D = S^T U,   D^T R = U^T (S R),   D W = (U W)[inv],   D^T D = U^T diag(counts) U,

exactly (in exact arithmetic; in float64 only the summation order changes). The solver uses
this form for its working-set Gram matrices and the intermediate ``D^T u`` passes; the
certificate it returns is recomputed on the dictionary as given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from cvxsnn.solver.certificate import Dictionary

__all__ = ["RowCompressed", "compress_rows"]

Array = NDArray[np.float64]

_SAMPLE = 256  # rows screened for duplicates before the full pass
_MIN_GAIN = 0.5  # merge only when at most this share of the rows is distinct


class RowCompressed:
    """A binary dictionary stored as its distinct rows, with the products of Dictionary.

    Attributes
    ----------
    n, P : int
        Shape of the full dictionary.
    U : Dictionary
        The distinct rows, shape (n_u, P).
    counts : ndarray of shape (n_u,)
        Multiplicity of each distinct row.
    inv : ndarray of shape (n,)
        Row i of D is row ``inv[i]`` of U.
    """

    def __init__(self, U: Dictionary, inv: NDArray[np.intp], counts: Array, P: int) -> None:
        self.U, self.inv, self.counts = U, inv, counts
        self.n, self.P = int(inv.size), P
        self.n_u = U.n
        self.binary = True
        self.S = sp.csr_matrix(
            (np.ones(self.n), (inv, np.arange(self.n))), shape=(self.n_u, self.n)
        )

    def dtr(self, R: Array, rows: NDArray[np.intp] | None = None) -> Array:
        """``D[:, rows]^T R`` (float64) as ``U[:, rows]^T (S R)``."""
        return self.U.dtr(np.asarray(self.S @ np.ascontiguousarray(R, dtype=np.float64)), rows)

    def dw(self, W: Array) -> Array:
        """``D W`` (float64) as ``(U W)[inv]``."""
        return self.U.dw(W)[self.inv]

    def atoms(self, rows: NDArray[np.intp], dtype: Any = np.float64) -> NDArray[Any]:
        """Atoms ``rows`` of U (distinct rows only), shape (len(rows), n_u)."""
        return self.U.atoms(rows, dtype)


def compress_rows(Dk: Dictionary) -> RowCompressed | None:
    """Merge identical rows of a binary dictionary; None when that would not pay.

    A sample of rows is screened first (no repeat in it: return None at the cost of the
    sample). The full pass packs every row's bits into bytes and finds the distinct byte
    strings (an exact comparison: different rows are never merged). The distinct rows
    are then put in the order of an integer-valued row hash (a float64 product with random
    integer weights, exact whatever the summation order), so that U's row order does not
    depend on the bit packing.
    """
    if not Dk.binary or Dk.device is not None or Dk.n < 2 * _SAMPLE:
        return None
    rng = np.random.default_rng(0)
    sample = rng.choice(Dk.n, _SAMPLE, replace=False)
    # bits packed along each row of D (rows contiguous first: packing across the rows of
    # the atom-major Dt, axis 0, is about 8 times slower)
    pk = np.packbits(np.ascontiguousarray(Dk.Dt[:, sample].T), axis=1)
    if np.unique(pk.view(np.dtype((np.void, pk.shape[1]))).ravel()).size == _SAMPLE:
        return None
    weights = rng.integers(1, 2**20, size=(Dk.P, 2)).astype(np.float64)  # sums < 2^53: exact
    rows = _packed_rows(Dk.Dt)  # (n, ceil(P / 8)) bytes
    _, first, inv, counts = np.unique(
        rows.view(np.dtype((np.void, rows.shape[1]))).ravel(),
        return_index=True,
        return_inverse=True,
        return_counts=True,
    )
    if first.size > _MIN_GAIN * Dk.n:
        return None
    # Hash order of the distinct rows (lexicographic in the two hash columns).
    h = (weights.T @ Dk.Dt[:, first]).T  # (n_u, 2) integer-valued
    order = np.lexsort((h[:, 1], h[:, 0]))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    first, counts, inv = first[order], counts[order], rank[inv.reshape(-1)]
    U = Dictionary(Dk.Dt[:, first].T)
    return RowCompressed(U, inv.astype(np.intp), counts.astype(np.float64), Dk.P)


def _packed_rows(Dt: NDArray[np.uint8], block_bytes: int = 1 << 26) -> NDArray[np.uint8]:
    """The rows of D = Dt^T with their bits packed into bytes, shape (n, ceil(P / 8)).

    Blocks of rows are transposed to contiguous memory before packing (at most
    ``block_bytes`` at a time): packing across the rows of the atom-major Dt directly
    (axis 0) is about 8 times slower, and a transposed copy of all of D would double its
    memory.
    """
    P, n = Dt.shape
    out = np.empty((n, (P + 7) // 8), dtype=np.uint8)
    step = max(1, block_bytes // max(P, 1))
    for a in range(0, n, step):
        out[a : a + step] = np.packbits(np.ascontiguousarray(Dt[:, a : a + step].T), axis=1)
    return out
