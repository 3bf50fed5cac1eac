"""Data-fitting losses F(Z, Y) of the convex program, with their gradients and conjugates.

Every loss is the mean over the n rows, weighted per output head:

- ``squared``: F = (1/(2n)) sum_c w_c ||Y_c - Z_c||^2.
- ``logistic``: one column per binary head, Y in [0, 1];
  F = (1/n) sum_c w_c sum_i [log(1 + exp(Z_ic)) - Y_ic Z_ic].
- ``softmax``: one softmax per head h (a block of columns), rows of Y_h on the simplex;
  F = (1/n) sum_h w_h sum_i [logsumexp(Z_ih) - Y_ih . Z_ih].

The dual of the program is written with u = -grad F (the negative loss gradient). The dual
objective is ``-F*(-u)``; :meth:`Loss.dual` returns it, with ``+inf`` conjugates never
reached because the dual points built by the certificate stay in the conjugate's domain.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit, log_softmax, softmax, xlogy

__all__ = ["LOSSES", "Loss", "LossName", "make_loss"]

LossName = Literal["squared", "logistic", "softmax"]
LOSSES: tuple[str, ...] = ("squared", "logistic", "softmax")

Array = NDArray[np.float64]


def _entropy(p: Array) -> Array:
    """Shannon entropy -p log p, elementwise, with 0 log 0 = 0 (p clipped to [0, 1])."""
    p = np.clip(p, 0.0, 1.0)
    return -xlogy(p, p)


@dataclass(frozen=True)
class Loss:
    """A loss with its head partition and head weights.

    Attributes
    ----------
    name : {"squared", "logistic", "softmax"}
    heads : tuple of int
        Number of columns of each head; they partition the C columns in order.
    head_weights : tuple of float
        Weight w_h >= 0 of each head's loss.
    """

    name: LossName
    heads: tuple[int, ...]
    head_weights: tuple[float, ...]

    @property
    def n_outputs(self) -> int:
        return int(sum(self.heads))

    @property
    def column_weights(self) -> Array:
        """Weight of each column, shape (C,): the weight of its head."""
        return np.repeat(np.asarray(self.head_weights, dtype=np.float64), self.heads)

    def head_slices(self) -> list[slice]:
        ends = np.cumsum((0, *self.heads))
        return [slice(int(a), int(b)) for a, b in itertools.pairwise(ends)]

    # ------------------------------------------------------------------ values
    def value(self, Z: Array, Y: Array) -> float:
        """F(Z, Y) for predictions Z and targets Y, both of shape (n, C)."""
        n = Z.shape[0]
        w = self.column_weights
        if self.name == "squared":
            R = Y - Z
            return float(np.einsum("ic,ic,c->", R, R, w) / (2 * n))
        if self.name == "logistic":
            per = np.logaddexp(0.0, Z) - Y * Z  # (n, C)
            return float(per.sum(axis=0) @ w / n)
        total = 0.0
        for sl, wh in zip(self.head_slices(), self.head_weights, strict=True):
            total += wh * float(-(Y[:, sl] * log_softmax(Z[:, sl], axis=1)).sum())
        return total / n

    def neg_grad(self, Z: Array, Y: Array) -> Array:
        """u0 = -dF/dZ, shape (n, C)."""
        n = Z.shape[0]
        w = self.column_weights / n
        if self.name == "squared":
            return (Y - Z) * w
        if self.name == "logistic":
            return (Y - expit(Z)) * w
        out = np.empty_like(Z)
        for sl in self.head_slices():
            out[:, sl] = Y[:, sl] - softmax(Z[:, sl], axis=1)
        return out * w

    def dual(self, u: Array, Y: Array) -> float:
        """Dual objective -F*(-u) at a dual point u of shape (n, C).

        For the squared loss, sum_c [u_c . Y_c - n ||u_c||^2 / (2 w_c)]; for logistic and
        softmax, (1/n) sum_h w_h sum_i H(Y_ih - n u_ih / w_h) with H the Shannon entropy
        (binary entropy for logistic). Columns of weight 0 must have u_c = 0.
        """
        n = u.shape[0]
        w = self.column_weights
        pos = w > 0
        if self.name == "squared":
            uw, Yw = u[:, pos], Y[:, pos]
            return float(
                np.einsum("ic,ic->", uw, Yw) - (np.einsum("ic,ic->c", uw, uw) @ (n / (2 * w[pos])))
            )
        P = Y[:, pos] - u[:, pos] * (n / w[pos])  # probabilities (n, C')
        if self.name == "logistic":
            H = _entropy(P) + _entropy(1.0 - P)
            return float(H.sum(axis=0) @ w[pos] / n)
        return float(_entropy(P).sum(axis=0) @ w[pos] / n)

    # --------------------------------------------------------------- intercept
    def optimal_intercept(self, Z0: Array, Y: Array, b0: Array | None = None) -> Array:
        """Intercept b of shape (C,) minimising F(Z0 + 1 b^T, Y), to high accuracy.

        Closed form (column mean of Y - Z0) for the squared loss; Newton's method with a
        backtracking line search for logistic (1-D per column) and softmax (per head).
        """
        if self.name == "squared":
            return (Y - Z0).mean(axis=0)
        C = Z0.shape[1]
        b = np.zeros(C) if b0 is None else np.array(b0, dtype=np.float64)
        if self.name == "logistic":
            for c in range(C):
                b[c] = _newton_intercept(Z0[:, c : c + 1], Y[:, c : c + 1], b[c : c + 1], "lg")[0]
            return b
        for sl in self.head_slices():
            b[sl] = _newton_intercept(Z0[:, sl], Y[:, sl], b[sl], "sm")
            b[sl] -= b[sl].mean()
        return b


_DECREMENT_FLOOR = 1e-24


def _newton_intercept(Z0: Array, Y: Array, b: Array, kind: str, max_iter: int = 100) -> Array:
    """Minimise the mean logistic / softmax loss of Z0 + 1 b^T over b (one head)."""
    target = Y.mean(axis=0)  # (C,)
    k = Z0.shape[1]

    def f(bb: Array) -> float:
        Z = Z0 + bb
        if kind == "lg":
            return float(np.mean(np.logaddexp(0.0, Z) - Y * Z))
        return float(-np.mean(np.sum(Y * log_softmax(Z, axis=1), axis=1)))

    def grad_hess(bb: Array) -> tuple[Array, Array]:
        Z = Z0 + bb
        if kind == "lg":
            p = expit(Z)
            return p.mean(axis=0) - target, np.atleast_2d((p * (1 - p)).mean(axis=0))
        p = softmax(Z, axis=1)
        return p.mean(axis=0) - target, np.diag(p.mean(axis=0)) - p.T @ p / Z0.shape[0]

    fb = f(b)
    g, H = grad_hess(b)
    for _ in range(max_iter):
        if np.max(np.abs(g)) <= 1e-15:
            break
        # Softmax: H is singular along the ones vector; the gradient is orthogonal to it.
        step = np.linalg.lstsq(H + 1e-300 * np.eye(k), g, rcond=None)[0]
        if kind == "sm":
            step -= step.mean()
        # Newton decrement at the rounding floor of the gradient (a mean over n rows: about
        # 1e-16 sqrt(n), above the 1e-15 test once n is in the tens of thousands): b is
        # then within about 1e-12 of the optimum, and further steps only trade rounding.
        if float(g @ step) <= _DECREMENT_FLOOR:
            break
        t = 1.0
        while True:
            bn = b - t * step
            fn = f(bn)
            if fn <= fb - 1e-4 * t * float(g @ step):
                gn, Hn = grad_hess(bn)
                break
            # Near the optimum the decrease of f falls below its rounding (a large intercept
            # with probabilities near 0 or 1 makes f flat): then a step that does not raise f
            # beyond rounding and shrinks the gradient is taken, so Newton still converges.
            if fn <= fb + 1e-15 * max(1.0, abs(fb)):
                gn, Hn = grad_hess(bn)
                if np.max(np.abs(gn)) < np.max(np.abs(g)):
                    break
            if t < 1e-12:
                break
            t *= 0.5
        if t < 1e-12:
            break
        b, fb, g, H = bn, fn, gn, Hn
    return b


def make_loss(
    loss: str, n_outputs: int, heads: tuple[int, ...] | None, head_weights: tuple[float, ...] | None
) -> Loss:
    """Build and validate a :class:`Loss`; errors name the offending argument."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}; got {loss!r}")
    if heads is None:
        heads = (n_outputs,) if loss != "logistic" else (1,) * n_outputs
    heads = tuple(int(h) for h in heads)
    if any(h < 1 for h in heads) or sum(heads) != n_outputs:
        raise ValueError(
            f"heads must be positive column counts summing to the number of outputs C = "
            f"{n_outputs}; got heads={heads}"
        )
    if loss == "logistic" and any(h != 1 for h in heads):
        raise ValueError(
            f"heads for loss='logistic' must all be 1 (one column per binary head); got {heads}"
        )
    if loss == "softmax" and any(h < 2 for h in heads):
        raise ValueError(
            f"heads for loss='softmax' must each have at least 2 columns; got heads={heads}"
        )
    if head_weights is None:
        head_weights = (1.0,) * len(heads)
    head_weights = tuple(float(w) for w in head_weights)
    if len(head_weights) != len(heads):
        raise ValueError(
            f"head_weights must have one weight per head ({len(heads)}); "
            f"got {len(head_weights)} weights"
        )
    if not all(np.isfinite(w) and w >= 0 for w in head_weights) or max(head_weights) <= 0:
        raise ValueError(
            f"head_weights must be finite, >= 0 and not all 0; got head_weights={head_weights}"
        )
    return Loss(name=loss, heads=heads, head_weights=head_weights)  # type: ignore[arg-type]


def check_targets(loss: Loss, Y: Array, fit_intercept: bool) -> None:
    """Check that Y suits the loss (values in range; finite intercept exists)."""
    if loss.name == "squared":
        return
    if Y.min() < 0 or Y.max() > 1:
        raise ValueError(
            f"Y for loss={loss.name!r} must lie in [0, 1]; got values in [{Y.min()}, {Y.max()}]"
        )
    if loss.name == "softmax":
        for h, sl in enumerate(loss.head_slices()):
            sums = Y[:, sl].sum(axis=1)
            if np.max(np.abs(sums - 1)) > 1e-9:
                raise ValueError(
                    f"Y rows of softmax head {h} (columns {sl.start}..{sl.stop - 1}) must sum "
                    f"to 1; got sums in [{sums.min()}, {sums.max()}]"
                )
    if fit_intercept:
        means = Y.mean(axis=0)
        bad = np.flatnonzero((means <= 0) | ((means >= 1) & (loss.name == "logistic")))
        if bad.size:
            raise ValueError(
                f"Y columns {bad.tolist()} never (or always) take their class, so the optimal "
                f"intercept for loss={loss.name!r} is infinite; drop those classes from Y"
            )
