"""Penalties R(W) on the readout W of shape (P, C), their dual norms and proximal maps.

- ``l1``: entrywise sum |W_jc| (one-vs-rest; the paper's form). Dual norm: max |G_jc|.
- ``group_l2``: row-wise sum_j ||W_j||_2 (an atom is shared by all outputs).
  Dual norm: max_j ||G_j||_2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["PENALTIES", "Penalty", "PenaltyName", "make_penalty"]

PenaltyName = Literal["l1", "group_l2"]
PENALTIES: tuple[str, ...] = ("l1", "group_l2")

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Penalty:
    """A penalty by name; see the module docstring for the formulas."""

    name: PenaltyName

    def value(self, W: Array) -> float:
        """R(W) for W of shape (P, C)."""
        if self.name == "l1":
            return float(np.abs(W).sum())
        return float(np.sqrt(np.einsum("jc,jc->j", W, W)).sum())

    def row_scores(self, G: Array) -> Array:
        """Per-atom dual-norm contributions of G = D^T u, shape (P,).

        ``max |G_j|`` for l1, ``||G_j||_2`` for group l2; the dual norm is their maximum.
        """
        if self.name == "l1":
            return np.abs(G).max(axis=1)
        return np.sqrt(np.einsum("jc,jc->j", G, G))

    def dual_norm(self, G: Array) -> float:
        """The dual norm of G (P, C): ``max |G|`` (l1) or ``max_j ||G_j||`` (group l2)."""
        return float(self.row_scores(G).max()) if G.size else 0.0

    def prox(self, V: Array, thresh: Array | float) -> Array:
        """Proximal map of ``thresh * R`` at V (rows); thresh may be per column for l1."""
        if self.name == "l1":
            return np.sign(V) * np.maximum(np.abs(V) - thresh, 0.0)
        norms = np.sqrt(np.einsum("jc,jc->j", V, V))
        scale = np.maximum(1.0 - thresh / np.maximum(norms, 1e-300), 0.0)
        return V * scale[:, None]


def make_penalty(penalty: str) -> Penalty:
    """Validate the penalty name."""
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {list(PENALTIES)}; got {penalty!r}")
    return Penalty(name=penalty)  # type: ignore[arg-type]
