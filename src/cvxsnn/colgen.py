"""Column generation: grow the spike dictionary where the dual says it is incomplete.

The convex program of SPEC section 4 is solved over a *sampled* dictionary; its
certificate proves optimality over those atoms only. Column generation closes
part of that gap. After each solve, with ``u0 = -grad F`` at the optimal
intercept (columns summing to zero), an atom ``d`` outside the dictionary would
lower the objective exactly when it violates dual feasibility,

    R°(d^T u0) > rho      (R° = max |.| for l1, the 2-norm for group l2).

Finding such a ``d`` among the last-layer spike patterns of witnesses is the
*pricing* problem: a weighted classification of the rows (labels
``sign(u0)``, weights ``|u0|``). A pricer proposes witnesses (single branches
of the same depth and widths), their patterns are scored, and the best
distinct violators become new atoms: their branch is appended to the
witnesses with every other last-layer neuron silenced (incoming weights 0,
so those columns are all-zero and dropped), the dictionary is extended by running
the new branches through the one kernel (old atoms keep their indices), and the
program is re-solved from the old solution padded with zeros.

Certificates (see :func:`pattern_bounds` and ``docs/COLUMN_GENERATION.md``):

- over the final dictionary and every candidate pattern examined, the
  duality gap with the dual point rescaled over both sets;
- over *all* binary patterns ``{0, 1}^n`` (a relaxation of every network of
  this kind): for squared loss + l1 with intercept the relaxed optimum is
  computed exactly (a projection), and a rescaled ``u0`` gives a cheap bound
  for every loss. Both are lower bounds on the optimum of any network, hence
  ``primal - bound`` bounds the distance to the global optimum. The bound is
  loose: the label pattern itself is a binary column.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from cvxsnn.dictionary import (
    CACHE_STEP_BYTES,
    SpikeDictionary,
    _net_for,
    _select_branches,
    build_dictionary,
    concat_params,
    extend_dictionary,
    last_layer_spikes,
)
from cvxsnn.kernel import get_surrogate, lif_run
from cvxsnn.network import ForwardWorkspace, HiddenParams, ParallelLIFNet
from cvxsnn.samples import DistinctSamples, repeated_samples
from cvxsnn.solver import SolveResult, solve
from cvxsnn.solver.certificate import check_targets_array
from cvxsnn.solver.losses import Loss, LossName, make_loss
from cvxsnn.solver.penalties import Penalty, PenaltyName, make_penalty
from cvxsnn.witnesses import (
    WitnessScheme,
    check_hidden_params,
    perturb_witnesses,
    sample_witnesses,
)

__all__ = [
    "CGResult",
    "CGRound",
    "Candidates",
    "EnumeratedPricer",
    "PatternBounds",
    "Pricer",
    "PricingContext",
    "RandomSearch",
    "SurrogateAscent",
    "all_binary_patterns",
    "column_generation",
    "concat_params",
    "dual_direction",
    "enumerate_patterns",
    "enumerate_realizable_patterns",
    "estimate_search_bytes",
    "pattern_bounds",
    "pattern_scores",
    "pricer_candidates",
]

StopReason = Literal["no_violation", "no_improvement", "max_rounds", "no_new_atom"]

Array = np.ndarray

#: Distinct examined patterns :func:`column_generation` keeps by default for its
#: examined-set certificate (one byte per dictionary row each).
MAX_EXAMINED = 100_000


# --------------------------------------------------------------------------- #
# Scoring
# --------------------------------------------------------------------------- #
def dual_direction(
    D: Array, Y: Array, W: Array, loss: Loss, b: Array | None = None
) -> tuple[Array, Array]:
    """The unscaled dual direction at (W, optimal b).

    Parameters
    ----------
    D : ndarray of shape (n, P), uint8
    Y : ndarray of shape (n, C)
    W : ndarray of shape (P, C)
    loss : Loss
    b : ndarray of shape (C,), optional
        Start of the intercept search (logistic / softmax).

    Returns
    -------
    u0 : ndarray of shape (n, C)
        ``-grad F`` at ``D W + 1 b*^T``, columns centred (sum zero).
    b_opt : ndarray of shape (C,)
    """
    Z = D.astype(np.float64) @ W if D.shape[1] else np.zeros_like(Y)
    b_opt = loss.optimal_intercept(Z, Y, b)
    u0 = loss.neg_grad(Z + b_opt, Y)
    u0 -= u0.mean(axis=0)
    return u0, b_opt


def pattern_scores(
    patterns: Array,
    u0: Array,
    penalty: Penalty,
    block: int = 4096,
    workspace: ForwardWorkspace | None = None,
) -> Array:
    """``R°(d^T u0)`` of every column ``d`` of ``patterns``.

    Parameters
    ----------
    patterns : ndarray of shape (n, Q), values in {0, 1}
        Any memory layout; column-major (each column contiguous, as the pricers
        return them) is read fastest.
    u0 : ndarray of shape (n, C), float64
    penalty : Penalty
    block : int
        Columns widened to float64 at a time (into one reused buffer).
    workspace : ForwardWorkspace, optional
        Holds that buffer across calls (a search scores many candidate sets of the same
        size: a fresh buffer of block x n floats each time costs its page faults again).

    Returns
    -------
    ndarray of shape (Q,), float64 (accumulated in float64).
    """
    n, Q = patterns.shape
    out = np.empty(Q)
    # One float64 buffer for every block (a fresh (block, n) array per block cost more in
    # page faults than the product). With several outputs the product is a BLAS gemm,
    # whose sums came out bit for bit the same in either layout in every run measured: the
    # buffer takes the patterns' layout, so the widening reads and writes contiguously.
    # With one output it is a gemv, whose order of summation depends on the layout: the
    # buffer is then always sample-major (n, q), so that a score does not depend on how
    # its patterns were stored.
    row_major = patterns.flags.c_contiguous and not patterns.flags.f_contiguous
    q_max = min(block, Q)
    if workspace is None:
        flat = np.empty(n * q_max)
    else:
        flat = workspace.take("pattern_scores", (n * q_max,), _FLOAT64).numpy()
    if u0.shape[1] == 1 or row_major:
        buf = flat.reshape(n, q_max).T
    else:
        buf = flat.reshape(q_max, n)
    for a in range(0, Q, block):
        cols = patterns[:, a : a + block].T  # (q, n)
        wide = buf[: cols.shape[0]]
        np.copyto(wide, cols, casting="unsafe")
        out[a : a + block] = penalty.row_scores(wide @ u0)  # (q, C) scores
    return out


_FLOAT64 = torch.empty(0, dtype=torch.float64)  # dtype and device of the scoring buffer


def _keys(patterns: Array) -> list[bytes]:
    """Exact byte keys of the columns (bit-packed along rows)."""
    if patterns.flags.f_contiguous:  # every column contiguous: pack each in place
        packed = np.packbits(patterns.T, axis=1)  # (Q, ceil(n / 8))
    else:
        packed = np.ascontiguousarray(np.packbits(patterns, axis=0).T)
    return [row.tobytes() for row in packed]


def _take_columns(parts: Sequence[Array], cols: Array) -> Array:
    """Columns ``cols`` of ``_hcat(parts)`` without forming it, shape (n, len(cols))."""
    bounds = np.cumsum([0, *(p.shape[1] for p in parts)])
    which = np.searchsorted(bounds, cols, side="right") - 1
    return np.stack([parts[w][:, c - bounds[w]] for w, c in zip(which, cols, strict=True)], 1)


def _hcat(parts: Sequence[Array]) -> Array:
    """Columns of ``parts`` side by side, (n, sum Q), stored column-major."""
    return np.concatenate([p.T for p in parts], axis=0).T


# --------------------------------------------------------------------------- #
# Witness utilities
# --------------------------------------------------------------------------- #
def _best_branches(scores: Array, m_last: int, count: int) -> list[int]:
    """The first ``count`` distinct branches in order of their best pattern's score
    (columns branch-major, ``m_last`` per branch)."""
    best: list[int] = []
    for col in np.argsort(-scores, kind="stable"):
        k = int(col) // m_last
        if k not in best:
            best.append(k)
            if len(best) >= count:
                break
    return best


def _scale_last(params: HiddenParams, factors: Sequence[float]) -> HiddenParams:
    """Copies of all branches with the last layer's incoming weights times each factor.

    By scale invariance, factor ``c`` is the threshold ``theta / c``: a threshold sweep.
    Returns ``len(factors) * K`` branches, factor-major.
    """
    out = []
    for c in factors:
        if params.w_hidden:
            last = params.w_hidden[-1] * c
            out.append(HiddenParams(params.w_in, (*params.w_hidden[:-1], last), params.thetas))
        else:
            out.append(HiddenParams(params.w_in * c, (), params.thetas))
    return concat_params(out)


def _masked_branch(params: HiddenParams, branch: int, keep: Sequence[int]) -> HiddenParams:
    """One branch with every last-layer neuron outside ``keep`` silenced (zero input)."""
    one = _select_branches(params, [branch])
    mask = torch.zeros(one.thetas[-1].shape[1], dtype=one.w_in.dtype, device=one.w_in.device)
    mask[list(keep)] = 1.0
    if one.w_hidden:
        last = one.w_hidden[-1] * mask
        return HiddenParams(one.w_in, (*one.w_hidden[:-1], last), one.thetas)
    return HiddenParams(one.w_in * mask, (), one.thetas)


def _run_device(params: HiddenParams, device: Any) -> torch.device:
    """Where the witnesses run: ``device``, else where they are."""
    return torch.device(device) if device is not None else params.w_in.device


def _below_net(
    params: HiddenParams, beta: float, bias_channel: bool, device: Any
) -> ParallelLIFNet | None:
    """The network of the layers below the last (None with one hidden layer)."""
    _, d_eff, widths = check_hidden_params(params)
    if len(widths) == 1:
        return None
    dev = _run_device(params, device)
    below = HiddenParams(params.w_in, params.w_hidden[:-1], params.thetas[:-1])
    return _net_for(below, d_eff - int(bias_channel), beta, bias_channel, dev)


def _last_layer_input(
    params: HiddenParams,
    x: Tensor,
    beta: float,
    bias_channel: bool,
    device: Any,
    below: ParallelLIFNet | None = None,
    workspace: ForwardWorkspace | None = None,
) -> Tensor:
    """What the last hidden layer reads: ``[x, 1]`` (T, B, d_eff) for one hidden layer,
    else the spikes of the layer below, (T, B, K, m_{L-2}), run by the one kernel.

    ``below`` is :func:`_below_net` of ``params`` when the caller runs many chunks; with
    ``workspace`` the spikes are a view into its buffers (valid until its next use)."""
    if below is None and params.w_hidden:
        below = _below_net(params, beta, bias_channel, device)
    if below is None:  # one hidden layer: it reads the inputs
        xb = x.to(device=_run_device(params, device), dtype=torch.float64)
        if bias_channel:
            xb = torch.cat([xb, torch.ones_like(xb[..., :1])], dim=-1)
        return xb
    xb = x.to(device=below.device, dtype=torch.float64)
    if workspace is not None:  # the same spikes bit for bit, in reused buffers
        return below.last_spikes(xb, workspace)
    with torch.no_grad():
        return below.run_hidden(xb).spikes[-1]


def _last_layer_current(inp: Tensor, w_last: Tensor) -> Tensor:
    """Currents (T, B, K, m) of the last layer, computed as ``ParallelLIFNet.run_hidden`` does."""
    K, fan_in, m = w_last.shape
    if inp.dim() == 3:  # the first layer: one matmul to K m columns
        T, B, _ = inp.shape
        cur = inp.reshape(T * B, fan_in) @ w_last.permute(1, 0, 2).reshape(fan_in, K * m)
        return cur.reshape(T, B, K, m)
    T, B = inp.shape[:2]
    cur = torch.bmm(inp.permute(2, 0, 1, 3).reshape(K, T * B, fan_in), w_last)
    return cur.reshape(K, T, B, m).permute(1, 2, 0, 3)


# --------------------------------------------------------------------------- #
# Pricers
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class PricingContext:
    """What a pricer sees in one round.

    Attributes
    ----------
    x : Tensor of shape (T, n, d)
        Training inputs.
    steps : tuple of int
        Supervised steps.
    widths : tuple of int
        Hidden widths every proposed branch must have.
    beta, bias_channel
        Kernel settings of the dictionary.
    u0 : ndarray of shape (S n, C)
        The dual direction (columns sum to zero).
    rho : float
    penalty : Penalty
    generator : torch.Generator
    device : torch.device or None
    dtype : torch.dtype
        Precision of the witnesses (that of the initial witnesses).
    workspace : ForwardWorkspace, optional
        Scratch reused by every round's scoring (see :func:`pattern_scores`).
    """

    x: Tensor
    steps: tuple[int, ...]
    widths: tuple[int, ...]
    beta: float
    bias_channel: bool
    u0: Array
    rho: float
    penalty: Penalty
    generator: torch.Generator
    device: torch.device | None
    dtype: torch.dtype
    workspace: ForwardWorkspace | None = None

    def spikes(self, params: HiddenParams) -> Array:
        """Last-layer patterns of all branches, shape (S n, K m_last), branch-major,
        stored column-major."""
        spikes = last_layer_spikes(
            params,
            self.x,
            self.steps,
            beta=self.beta,
            bias_channel=self.bias_channel,
            device=self.device,
        )
        return np.asfortranarray(spikes)

    def scores(self, patterns: Array) -> Array:
        """``R°(d^T u0)`` per column, shape (Q,)."""
        return pattern_scores(patterns, self.u0, self.penalty, workspace=self.workspace)

    def propose(self, count: int, sigma: float, scheme: WitnessScheme) -> HiddenParams:
        """``count`` random single-network branches of the dictionary's widths."""
        calibrated = scheme == "calibrated"
        return sample_witnesses(
            self.x.shape[2],
            self.widths,
            count,
            sigma=sigma,
            scheme=scheme,
            bias_channel=self.bias_channel,
            generator=self.generator,
            device=self.device,
            dtype=self.dtype,
            x=self.x if calibrated else None,
            beta=self.beta,
            steps=self.steps if calibrated else None,
        )

    @cached_property
    def _distinct(self) -> tuple[Tensor, DistinctSamples | None]:
        """The inputs to run (the distinct samples when enough repeat) and their map."""
        distinct = repeated_samples(self.x)
        return (self.x if distinct is None else distinct.take(self.x)), distinct

    def swept(
        self, params: HiddenParams, factors: Sequence[float], dest: Array | None = None
    ) -> tuple[HiddenParams, Array]:
        """Branches under a threshold sweep and their last-layer patterns.

        Equal to ``(p, self.spikes(p))`` with ``p = _scale_last(params, factors)``
        (factor-major), but the layers below the last run once: a factor on the
        last layer's incoming weights scales its current, so only the last
        layer's recurrence is run per factor (by the one kernel). As in
        :func:`~cvxsnn.dictionary.last_layer_spikes`, the kernel runs once per
        distinct input sequence and repeated samples copy its rows.

        ``dest``, a C-contiguous uint8 array of shape (F K m_last, S n), receives the
        patterns (one row per pattern), and the returned patterns are its transpose:
        a search writes all its sweeps into one array instead of concatenating them.
        """
        swept = _scale_last(params, factors)
        K, _, widths = check_hidden_params(params)
        x, distinct = self._distinct
        n = x.shape[1]
        S, m_last = len(self.steps), widths[-1]
        Q = len(factors) * K * m_last
        if dest is not None and (
            dest.shape != (Q, S * self.x.shape[1])
            or dest.dtype != np.uint8
            or not dest.flags.c_contiguous
        ):
            raise ValueError(
                f"dest must be a C-contiguous uint8 array of shape {(Q, S * self.x.shape[1])}; "
                f"got {dest.shape} {dest.dtype}"
            )
        # column-major patterns: (F, K, m, S, n) is (S n, F K m) with every column contiguous
        if dest is not None and distinct is None:
            out = dest.reshape(len(factors), K, m_last, S, n)
        else:
            out = np.empty((len(factors), K, m_last, S, n), dtype=np.uint8)
        dst = torch.from_numpy(out)
        # samples per chunk: one (B, K, m) float64 step tensor stays cache-sized
        chunk = max(1, min(n, CACHE_STEP_BYTES // max(1, 8 * K * max(widths))))
        w_last = params.w_hidden[-1] if len(widths) > 1 else params.w_in
        surrogate = get_surrogate("sigmoid")
        # the layers below, built once and run chunk by chunk in reused buffers
        below = _below_net(params, self.beta, self.bias_channel, self.device)
        dev = below.device if below is not None else _run_device(params, self.device)
        workspace = ForwardWorkspace()
        w = w_last.to(device=dev, dtype=torch.float64)
        theta = params.thetas[-1].to(device=dev, dtype=torch.float64)
        step_idx = torch.as_tensor(self.steps, dtype=torch.long, device=dev)
        with torch.no_grad():
            for a in range(0, n, chunk):
                b = min(a + chunk, n)
                xb = x[:, a:b]
                inp = _last_layer_input(
                    params, xb, self.beta, self.bias_channel, dev, below, workspace
                )
                cur = _last_layer_current(inp, w)
                for f, c in enumerate(factors):
                    spk, _, _ = lif_run(cur * c, theta, self.beta, surrogate)  # (T, B, K, m)
                    sel = spk.index_select(0, step_idx).to(torch.uint8)  # (S, B, K, m)
                    dst[f, :, :, :, a:b].copy_(sel.permute(2, 3, 0, 1))
        # columns factor-major then branch-major; rows (S n), step-major
        cols = out.reshape(Q, S, n)
        if distinct is not None:  # sample i takes the spikes of distinct sample inverse[i]
            into = None if dest is None else dest.reshape(Q, S, -1)
            cols = np.take(cols, distinct.inverse, axis=2, out=into)
        return swept, cols.reshape(Q, -1).T


class _Candidates:
    """One array that a search's threshold sweeps fill in turn, one row per pattern.

    ``capacity`` patterns at most (:func:`pricer_candidates`); None, or a sweep that
    does not fit, falls back to a fresh array per sweep (then ``used`` is False and
    the caller concatenates the parts). Writing every sweep into one array saves the
    concatenation: a copy of every candidate pattern, into a fresh array whose page
    faults cost as much again (4.6 s of a 44 s ADDITION search).
    """

    def __init__(self, capacity: int | None, ctx: PricingContext) -> None:
        self.ctx = ctx
        n_rows = len(ctx.steps) * ctx.x.shape[1]
        self.rows = None if capacity is None else np.empty((capacity, n_rows), dtype=np.uint8)
        self.filled = 0
        self.used = self.rows is not None

    def sweep(self, params: HiddenParams, factors: Sequence[float]) -> tuple[HiddenParams, Array]:
        q = len(factors) * int(params.w_in.shape[0]) * self.ctx.widths[-1]
        if self.used and self.rows is not None and self.filled + q <= len(self.rows):
            dest = self.rows[self.filled : self.filled + q]
            self.filled += q
            return self.ctx.swept(params, factors, dest)
        self.used = False  # not planned for: every later part is a fresh array too
        return self.ctx.swept(params, factors)

    def patterns(self) -> Array:
        """The filled patterns, (S n, Q) column-major."""
        assert self.rows is not None and self.used
        return self.rows[: self.filled].T


@dataclass(frozen=True)
class Candidates:
    """Witnessed candidate patterns returned by a pricer.

    Attributes
    ----------
    params : HiddenParams
        ``K_c`` single-network branches (same widths as the dictionary's).
    patterns : ndarray of shape (S n, K_c m_last), uint8
        Their last-layer patterns, branch-major (column ``k m_last + j``),
        stored column-major (each pattern contiguous) by the pricers here.
    scores : ndarray of shape (K_c m_last,)
        ``R°(d^T u0)`` of each pattern.
    """

    params: HiddenParams
    patterns: Array
    scores: Array


class Pricer(Protocol):
    """Anything that proposes witnessed patterns for a dual direction."""

    def __call__(self, ctx: PricingContext) -> Candidates: ...


@dataclass(frozen=True)
class RandomSearch:
    """Heuristic pricing: batched random witnesses, threshold sweeps, local perturbation.

    Attributes
    ----------
    proposals : int
        Random single-branch witnesses drawn per round (run as one batch).
    scales : tuple of float
        Factors on the last layer's incoming weights (a threshold sweep by
        scale invariance) applied to every proposal.
    local_rounds : int
        Rounds of local search around the best patterns.
    elite : int
        Branches holding the best-scoring patterns that are perturbed.
    local_copies : int
        Perturbed copies per elite branch and local round.
    local_scale : float
        Relative perturbation size (see :func:`~cvxsnn.witnesses.perturb_witnesses`),
        halved after every local round.
    local_scales : tuple of float
        Threshold sweep applied to the perturbed copies.
    sigma : float
        Standard deviation of the random proposals.
    scheme : {"gaussian", "calibrated"}
        How proposals are drawn (see :func:`~cvxsnn.witnesses.sample_witnesses`).
    """

    proposals: int = 64
    scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    local_rounds: int = 2
    elite: int = 8
    local_copies: int = 4
    local_scale: float = 0.3
    local_scales: tuple[float, ...] = (0.8, 1.0, 1.25)
    sigma: float = 1.0
    scheme: WitnessScheme = "gaussian"

    def __post_init__(self) -> None:
        for name in ("proposals", "elite", "local_copies"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be an int >= 1; got {getattr(self, name)!r}")
        if self.local_rounds < 0:
            raise ValueError(f"local_rounds must be >= 0; got {self.local_rounds}")
        for name in ("scales", "local_scales"):
            v = getattr(self, name)
            if not v or any(not (c > 0 and math.isfinite(c)) for c in v):
                raise ValueError(f"{name} must be non-empty positive finite factors; got {v}")
        if not self.local_scale > 0 or not self.sigma > 0:
            raise ValueError(
                f"local_scale and sigma must be > 0; got {self.local_scale} and {self.sigma}"
            )

    def __call__(self, ctx: PricingContext) -> Candidates:
        dest = _Candidates(pricer_candidates(self, ctx.widths[-1]), ctx)
        parts, pat_parts, score_parts = self._search(ctx, dest)
        pats = dest.patterns() if dest.used else _hcat(pat_parts)
        return Candidates(concat_params(parts), pats, np.concatenate(score_parts))

    def _search(
        self, ctx: PricingContext, dest: _Candidates | None = None
    ) -> tuple[list[HiddenParams], list[Array], list[Array]]:
        """The search's branches, patterns and scores, one part per sweep (in order).

        With ``dest`` every sweep writes its patterns into the next rows of that one
        array, and the parts are views into it."""
        dest = _Candidates(None, ctx) if dest is None else dest
        base = ctx.propose(self.proposals, self.sigma, self.scheme)
        params, pats = dest.sweep(base, self.scales)
        scores = ctx.scores(pats)
        parts, pat_parts, score_parts = [params], [pats], [scores]
        m_last = ctx.widths[-1]
        scale = self.local_scale
        for _ in range(self.local_rounds):
            all_params = concat_params(parts)
            elite = _best_branches(np.concatenate(score_parts), m_last, self.elite)
            sel = _select_branches(all_params, elite)
            moved = perturb_witnesses(sel, scale, ctx.generator, self.local_copies)
            # drop the originals: the copies follow them
            moved = _select_branches(moved, range(len(elite), moved.w_in.shape[0]))
            moved, p = dest.sweep(moved, self.local_scales)
            parts.append(moved)
            pat_parts.append(p)
            score_parts.append(ctx.scores(p))
            scale *= 0.5
        return parts, pat_parts, score_parts


@dataclass(frozen=True)
class SurrogateAscent:
    """Pricing by surrogate-gradient ascent, started from the best patterns of a base search.

    Each started branch keeps its depth and widths; every last-layer neuron
    ``j`` of it gets a fixed direction ``v_j = u0 e_j`` in row space
    (``e_j = sign(g_c) e_c`` at ``c = argmax |g_c|`` for l1, ``g / ||g||``
    for group l2, with ``g = d_j^T u0`` the neuron's current correlation),
    and Adam maximizes

        J = sum_j sum_i v_{j,i} sigmoid((U_{j,i} - theta_j) / tau)

    over all the branch's hidden weights (thresholds fixed, which loses
    nothing by scale invariance), gradients flowing through the hidden spikes
    by the kernel's surrogate (``layers="all"``), or over the last layer's incoming
    weights only (``layers="last"``, the default: on FIRST-LAST-XOR at L = 3
    and 10 it raised the 16 best scores of a round about 1.4x and 2x over the
    base search, while moving every layer often lowered them, since a step in
    an early layer flips many downstream spikes). ``U`` is the last layer's
    membrane at the supervised steps, computed by the one kernel. Every
    ``check_every`` iterations the weights are snapshotted; the snapshots,
    under a threshold sweep, are run by the same kernel without gradient, so
    every returned pattern is an
    exact spike pattern of its returned witness, whatever the surrogate did.

    Attributes
    ----------
    base : Pricer or None
        Search run first; its candidates are returned too and the branches
        holding its ``starts`` best patterns are ascended. None: ``starts``
        random branches (``sigma``, ``scheme``).
    starts : int
        Branches ascended.
    iters : int
        Adam iterations.
    lr : float
        Adam step size (weights are O(sigma)).
    tau : float
        Temperature of the sigmoid relaxation of the last layer's spike.
    check_every : int
        Iterations between snapshots whose exact patterns are scored.
    scales : tuple of float
        Threshold sweep (factors on the last layer's incoming weights)
        applied to every snapshot.
    max_samples : int
        Samples (sequences) the ascent sees, a fixed random subset when the
        data has more; the exact patterns are always computed on every row.
        Repeated sequences among them run once (:func:`_merge_repeats`: the
        same objective and gradient, up to rounding).
    surrogate, surrogate_scale
        Backward surrogate of the hidden spikes (see
        :func:`cvxsnn.kernel.get_surrogate`).
    sigma, scheme
        Random starts when ``base`` is None.
    """

    base: Pricer | None = field(default_factory=RandomSearch)
    starts: int = 8
    iters: int = 30
    lr: float = 0.02
    tau: float = 1.0
    check_every: int = 5
    scales: tuple[float, ...] = (0.8, 1.0, 1.25)
    max_samples: int = 4096
    surrogate: str = "sigmoid"
    surrogate_scale: float | None = None
    sigma: float = 1.0
    scheme: WitnessScheme = "gaussian"
    layers: Literal["all", "last"] = "last"

    def __post_init__(self) -> None:
        if self.layers not in ("all", "last"):
            raise ValueError(f"layers must be one of ['all', 'last']; got {self.layers!r}")
        for name in ("starts", "iters", "check_every", "max_samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1; got {v!r}")
        for name in ("lr", "tau", "sigma"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite float > 0; got {v!r}")
        if not self.scales or any(not (c > 0 and math.isfinite(c)) for c in self.scales):
            raise ValueError(f"scales must be non-empty positive finite factors; got {self.scales}")
        get_surrogate(self.surrogate, self.surrogate_scale)  # validates the name

    def __call__(self, ctx: PricingContext) -> Candidates:
        m_last = ctx.widths[-1]
        C = ctx.u0.shape[1]
        params: list[HiddenParams] = []
        pat_parts: list[Array] = []
        score_parts: list[Array] = []
        dest = _Candidates(pricer_candidates(self, m_last), ctx)
        if self.base is not None:
            if isinstance(self.base, RandomSearch):  # its sweeps and ours fill one array
                params, pat_parts, score_parts = self.base._search(ctx, dest)
            else:
                first = self.base(ctx)
                params, pat_parts, score_parts = [first.params], [first.patterns], [first.scores]
            scores = np.concatenate(score_parts)
            elite = _best_branches(scores, m_last, self.starts)
            start = _select_branches(concat_params(params), elite)
            cols = (np.asarray(elite)[:, None] * m_last + np.arange(m_last)).reshape(-1)
            pats = _take_columns(pat_parts, cols)  # the elite branches' m_last columns each
        else:
            start = ctx.propose(self.starts, self.sigma, self.scheme)
            pats = ctx.spikes(start)
        # row-major: with one output the product is a gemv, whose rounding depends on the
        # layout (the sign of a correlation that is zero up to rounding picks a direction)
        pats = np.ascontiguousarray(pats)
        G = pats.T.astype(np.float64) @ ctx.u0  # (K_s m, C)
        if ctx.penalty.name == "l1":
            c = np.abs(G).argmax(axis=1)
            E = np.zeros_like(G)
            sgn = np.sign(G[np.arange(len(G)), c])
            # a silent or saturated neuron has no correlation yet: pick a random sign
            flip = torch.randint(0, 2, (len(G),), generator=ctx.generator).numpy() * 2.0 - 1.0
            E[np.arange(len(G)), c] = np.where(sgn == 0, flip, sgn)
        else:
            norm = np.linalg.norm(G, axis=1, keepdims=True)
            rnd = torch.randn(G.shape, generator=ctx.generator, dtype=torch.float64).numpy()
            rnd /= np.linalg.norm(rnd, axis=1, keepdims=True)
            E = np.where(norm > 0, G / np.maximum(norm, 1e-300), rnd)
        snaps = self._ascend(ctx, start, E.reshape(-1, m_last, C))
        snaps, p = dest.sweep(snaps, self.scales)
        return Candidates(
            concat_params([*params, snaps]),
            dest.patterns() if dest.used else _hcat([*pat_parts, p]),
            np.concatenate([*score_parts, ctx.scores(p)]),
        )

    def _ascend(self, ctx: PricingContext, start: HiddenParams, E: Array) -> HiddenParams:
        """Adam on J from ``start`` (K_s branches); the snapshots, concatenated."""
        _T, n, d = ctx.x.shape
        Ks = int(start.w_in.shape[0])
        idx = None
        if n > self.max_samples:
            idx = torch.randperm(n, generator=ctx.generator)[: self.max_samples].sort().values
        x = ctx.x if idx is None else ctx.x[:, idx]
        net = _net_for(start, d, ctx.beta, ctx.bias_channel, ctx.device)
        net.surrogate = get_surrogate(self.surrogate, self.surrogate_scale)
        dev, dt = net.device, net.dtype
        rows = (
            np.arange(len(ctx.steps))[:, None] * n
            + (np.arange(n) if idx is None else idx.numpy())[None, :]
        )
        x, u_rows = _merge_repeats(x, ctx.u0[rows])  # (S, nb, C) -> (S, n_run, C)
        nb = x.shape[1]
        u_sub = torch.as_tensor(u_rows.reshape(-1, E.shape[2]), device=dev, dtype=dt)
        V = torch.einsum("rc,kjc->rkj", u_sub, torch.as_tensor(E, device=dev, dtype=dt))
        V = V.reshape(len(ctx.steps), nb, Ks, -1)  # (S, n_run, K_s, m)
        weights = [net.w_in, *net.w_hidden]
        inp = None
        if self.layers == "last":
            weights = weights[-1:]
            # the layers below do not move: run them once, then only the last layer
            inp = _last_layer_input(start, x, ctx.beta, ctx.bias_channel, dev)
        for w in weights:
            w.requires_grad_(True)
        opt = torch.optim.Adam(weights, lr=self.lr, maximize=True)
        step_idx = torch.as_tensor(ctx.steps, dtype=torch.long, device=dev)
        theta = net.thetas[-1].detach()  # (K_s, m)
        snaps: list[HiddenParams] = [start]
        for it in range(1, self.iters + 1):
            opt.zero_grad(set_to_none=True)
            if inp is None:
                tr = net.run_hidden(x.to(device=dev, dtype=dt), return_membrane=True)
                mem = tr.membranes[-1]
            else:
                cur = _last_layer_current(inp, weights[0])
                _, mem, _ = lif_run(cur, theta, ctx.beta, net.surrogate, return_membrane=True)
            U = mem.index_select(0, step_idx)  # (S, nb, K_s, m)
            J = (V * torch.sigmoid((U - theta) / self.tau)).sum()
            J.backward()
            opt.step()
            if it % self.check_every == 0 or it == self.iters:
                snaps.append(net.hidden_params())
        return _to(concat_params(snaps[1:]), start)


def _merge_repeats(x: Tensor, u_rows: Array) -> tuple[Tensor, Array]:
    """The ascent's sequences and residual rows with repeated sequences run once.

    Samples with the same input sequence have the same membranes, so their terms of
    ``J = sum_i v_i . sigmoid((U_i - theta) / tau)``, with ``v_i`` linear in the
    residual row ``u_i``, merge into one term whose row is the sum of theirs: the
    same objective and gradient, from one run per distinct sequence (FIRST-LAST-XOR
    at T = 6 has 64 among 2,000 samples). Merging follows the rule of the dictionary
    build (:func:`repeated_samples`), and the rows are summed in sample order on the
    host, so the result does not depend on the device; otherwise ``x`` and
    ``u_rows`` (S, n, C) come back as they are.
    """
    distinct = repeated_samples(x)
    if distinct is None:
        return x, u_rows
    merged = np.zeros((u_rows.shape[0], len(distinct.first), u_rows.shape[2]), dtype=np.float64)
    np.add.at(merged, (slice(None), distinct.inverse), u_rows)
    return distinct.take(x), merged


class EnumeratedPricer:
    """Exact pricing over a fixed pool of witnesses: every pool pattern is scored.

    With a pool that realizes every pattern of a model class (see
    :func:`enumerate_patterns`), this is an exact pricing oracle for that class,
    and column generation ends at the optimum over the pool's dictionary.

    Parameters
    ----------
    pool : HiddenParams
        The witnesses whose patterns are scanned every round.
    """

    def __init__(self, pool: HiddenParams) -> None:
        check_hidden_params(pool)
        self.pool = pool
        self._patterns: Array | None = None

    def __call__(self, ctx: PricingContext) -> Candidates:
        if self._patterns is None:
            self._patterns = ctx.spikes(self.pool)
        return Candidates(self.pool, self._patterns, ctx.scores(self._patterns))


# --------------------------------------------------------------------------- #
# Enumeration for tiny instances
# --------------------------------------------------------------------------- #
def all_binary_patterns(n_rows: int) -> Array:
    """Every binary column except all-zero and all-ones, shape (n_rows, 2^n_rows - 2), uint8.

    The dictionary of the relaxation over all patterns; ``n_rows <= 20``.
    """
    if not isinstance(n_rows, int) or not 1 <= n_rows <= 20:
        raise ValueError(f"n_rows must be an int in [1, 20]; got {n_rows!r}")
    codes = np.arange(1, 2**n_rows - 1, dtype=np.int64)
    return ((codes[None, :] >> np.arange(n_rows)[:, None]) & 1).astype(np.uint8)


def enumerate_patterns(
    x: Tensor | np.ndarray,
    steps: Sequence[int],
    widths: Sequence[int],
    *,
    samples: int,
    generator: torch.Generator,
    scales: Sequence[float] = (0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0, 5.0, 10.0),
    sigma: float = 1.0,
    beta: float = 0.99,
    bias_channel: bool = True,
    device: torch.device | str | None = None,
) -> SpikeDictionary:
    """Distinct last-layer patterns reachable by dense sampling of witnesses.

    Exhaustive *by sampling*, not exact: ``samples`` random branches, each
    under every threshold factor in ``scales``, are run and their distinct
    patterns kept (a :class:`SpikeDictionary` whose witnesses realize them).
    A pattern reachable only from a tiny region of parameter space can be
    missed; the count of distinct patterns as ``samples`` grows tells how
    complete the pool is.

    Parameters
    ----------
    x : Tensor of shape (T, n, d)
    steps : sequence of int
    widths : sequence of int
        Hidden widths of the model class.
    samples : int
        Random branches drawn.
    generator : torch.Generator
    scales, sigma, beta, bias_channel, device
        Threshold factors, weight scale, kernel settings.

    Returns
    -------
    SpikeDictionary
        Deduplicated patterns; its ``params`` is the pool of witnesses.
    """
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.float64)
    base = sample_witnesses(
        int(x.shape[2]),
        tuple(widths),
        int(samples),
        sigma=sigma,
        bias_channel=bias_channel,
        generator=generator,
        dtype=torch.float64,
    )
    pool = _scale_last(base, tuple(scales))
    return build_dictionary(
        pool, x.to(torch.float64), steps, beta=beta, bias_channel=bias_channel, device=device
    )


def enumerate_realizable_patterns(
    x: Tensor | np.ndarray,
    steps: Sequence[int],
    *,
    beta: float = 0.99,
    bias_channel: bool = True,
    weight_bound: float = 1e3,
    margin: float = 1e-6,
    max_nodes: int = 200_000,
    width: int = 1,
) -> SpikeDictionary:
    """Every spike pattern one LIF neuron on the inputs can produce, by exact enumeration.

    For one hidden layer (L = 2) the last layer's pattern of a neuron depends
    on its own incoming weights ``w`` (``d_eff`` numbers, theta = 1 by scale
    invariance) only. Given a neuron's spike history ``S_1 .. S_{t-1}`` on a
    sample, its membrane is affine in ``w``,

        U_t = (sum_{s <= t} beta^{t-s} x_s) . w - sum_{s < t} beta^{t-1-s} S_s,

    so the set of ``w`` producing a given full spike history on every sample is
    a polyhedron. A depth-first search over (step, sample) decides each spike
    in turn and keeps a branch when the linear program

        max eps  s.t.  +-(U_t(w) - 1) >= eps for every decided spike,
                       |w_i| <= weight_bound,  eps <= 1

    has ``eps >= margin`` (the child that holds the parent's optimal point is
    accepted without a solve when that point's own margin suffices). Every
    leaf is a realizable history; its supervised-step spikes are a pattern,
    realized by the leaf's LP point.

    Parameters
    ----------
    x : Tensor of shape (T, n, d)
    steps : sequence of int
        Supervised steps.
    beta, bias_channel
        Kernel settings (theta = 1).
    weight_bound : float
        Box on the weights searched.
    margin : float
        Smallest ``|U - theta|`` a realization must keep at every step and
        sample.
    max_nodes : int
        Linear programs allowed; exceeding it raises (the instance is not tiny).
    width : int
        Neurons per branch of the returned pool (the width of the model
        class, so that the pool can price a dictionary of that width); the
        last branch is padded with zero-weight neurons, which never fire.

    Returns
    -------
    SpikeDictionary
        The distinct non-constant patterns, built by :func:`build_dictionary`
        (the one kernel) from a pool of witnesses, one neuron per pattern;
        every witness is checked to reproduce its LP pattern.

    Notes
    -----
    Exact over ``{w : |w_i| <= weight_bound}`` up to ``margin``: a pattern
    realizable only with ``U_t = theta`` exactly at some step, or only with
    weights beyond the box, is not listed. With that caveat the dictionary is
    every last-layer pattern of every one-hidden-layer network on ``x``, so
    the program over it is the global optimum of the non-convex training
    problem (same ``rho``, path penalty), and :class:`EnumeratedPricer` over
    ``result.params`` is an exact pricing oracle.
    """
    from scipy.optimize import linprog

    xt = torch.as_tensor(x)
    xt = xt.to(torch.float64)
    if xt.dim() != 3:
        raise ValueError(f"x must have shape (T, n, d); got {tuple(xt.shape)}")
    T, n, _ = xt.shape
    steps = tuple(int(s) for s in steps)
    if not steps or min(steps) < 0 or max(steps) >= T:
        raise ValueError(f"steps must be non-empty indices in [0, {T}); got {steps}")
    if not (weight_bound > 0 and margin > 0) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise ValueError(
            "weight_bound and margin must be > 0 and max_nodes an int >= 1; got "
            f"{weight_bound}, {margin}, {max_nodes!r}"
        )
    X = xt.numpy()
    if bias_channel:
        X = np.concatenate([X, np.ones((T, n, 1))], axis=2)
    de = X.shape[2]
    A = np.zeros_like(X)  # A[t, i] = sum_{s <= t} beta^{t-s} x_{s, i}
    acc = np.zeros((n, de))
    for t in range(T):
        acc = beta * acc + X[t]
        A[t] = acc
    order = [(t, i) for t in range(T) for i in range(n)]
    bounds = [(-weight_bound, weight_bound)] * de + [(None, 1.0)]
    cost = np.zeros(de + 1)
    cost[-1] = -1.0
    nodes = 0

    def lp(rows: list[Array], rhs: list[float]) -> tuple[float, Array]:
        nonlocal nodes
        nodes += 1
        if nodes > max_nodes:
            raise RuntimeError(
                f"enumeration needs more than max_nodes = {max_nodes} linear programs; "
                "use fewer samples or steps"
            )
        r = linprog(cost, A_ub=np.array(rows), b_ub=np.array(rhs), bounds=bounds, method="highs")
        if r.status != 0:
            return -math.inf, np.zeros(de)
        return float(-r.fun), r.x[:de]

    leaves: dict[bytes, Array] = {}
    # state: depth, reset sums R[i] = sum_{s<t} beta^{t-1-s} S_s, spikes, constraints, point
    stack: list[tuple[int, Array, Array, list[Array], list[float], Array, float]] = []
    w0 = np.zeros(de)
    stack.append((0, np.zeros(n), np.zeros((T, n), dtype=np.uint8), [], [], w0, 1.0))
    while stack:
        depth, R, S, rows, rhs, w, eps = stack.pop()
        if depth == len(order):
            leaves.setdefault(S[list(steps)].reshape(-1).tobytes(), w)
            continue
        t, i = order[depth]
        a, c = A[t, i], 1.0 + R[i]  # U - theta = a . w - c
        val = float(a @ w) - c
        for spike in (1, 0):
            sign = 1.0 if spike else -1.0
            # -(sign (a.w - c)) + eps <= 0
            new_rows = [*rows, np.concatenate([-sign * a, [1.0]])]
            new_rhs = [*rhs, -sign * c]
            if sign * val >= margin and eps >= margin:
                e2, w2 = min(eps, sign * val), w
            else:
                e2, w2 = lp(new_rows, new_rhs)
                if e2 < margin:
                    continue
            S2 = S.copy()
            S2[t, i] = spike
            R2 = R.copy()
            R2[i] = beta * R[i] + spike  # reset sum of sample i for step t + 1
            stack.append((depth + 1, R2, S2, new_rows, new_rhs, w2, e2))
    if not leaves:
        raise RuntimeError("no realizable pattern found (margin or weight_bound too strict)")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be an int >= 1; got {width!r}")
    N = len(leaves)
    K = -(-N // width)
    W = np.zeros((K * width, de))
    W[:N] = np.stack(list(leaves.values()))
    pool = HiddenParams(
        torch.from_numpy(W.reshape(K, width, de).transpose(0, 2, 1).copy()),  # (K, d_eff, m)
        (),
        (torch.ones(K, width, dtype=torch.float64),),
    )
    dic = build_dictionary(pool, xt, steps, beta=beta, bias_channel=bias_channel)
    got = last_layer_spikes(pool, xt, steps, beta=beta, bias_channel=bias_channel)[:, :N]
    want = np.stack([np.frombuffer(k, dtype=np.uint8) for k in leaves], axis=1)
    if not np.array_equal(got, want):
        raise AssertionError("an LP witness does not reproduce its pattern under the kernel")
    return dic


# --------------------------------------------------------------------------- #
# Bounds over all binary patterns
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class PatternBounds:
    """Lower bounds on the optimum over every binary pattern (hence over every network).

    Attributes
    ----------
    primal : float
        Objective of the point certified.
    rescaled_dual : float
        Dual value at ``s u0`` with ``s`` the best value in ``[0, s_max]``,
        ``s_max = min(1, rho / max_d R°(d^T u0))`` over all ``d`` in
        ``{0, 1}^n``. Valid for every loss.
    scale : float
        The ``s`` used.
    relaxation : float or None
        The optimum of the program over all binary patterns (squared loss and
        l1 only, computed as a projection; a certified lower bound: the dual
        value of a feasible point), else None.
    lower_bound : float
        The larger of the two.
    distance : float
        ``primal - lower_bound``: an upper bound on how far ``primal`` is from
        the optimum over all networks of this kind (and all binary patterns).
    """

    primal: float
    rescaled_dual: float
    scale: float
    relaxation: float | None
    lower_bound: float
    distance: float


def _max_over_patterns(u0: Array, penalty: Penalty) -> float:
    """``max_{d in {0,1}^n} R°(d^T u0)`` (exact for l1, an upper bound for group l2)."""
    half = 0.5 * np.abs(u0).sum(axis=0)  # per column: sum of the positive part (sum u0 = 0)
    pos = np.clip(u0, 0, None).sum(axis=0)
    neg = np.clip(-u0, 0, None).sum(axis=0)
    per = np.maximum(np.maximum(pos, neg), half)
    if penalty.name == "l1":
        return float(per.max())
    return float(np.sqrt((per**2).sum()))


def _project_l1_zero_sum(v: Array, radius: float, iters: int = 100) -> Array:
    """Euclidean projection of v (n,) onto ``{u : 1^T u = 0, ||u||_1 <= radius}``."""
    c = v - v.mean()
    if np.abs(c).sum() <= radius:
        return c

    def u_of(lam: float) -> Array:
        lo, hi = float(v.min()) - lam, float(v.max()) + lam
        for _ in range(iters):  # sum soft(v - mu, lam) is non-increasing in mu
            mu = 0.5 * (lo + hi)
            s = np.sign(v - mu) * np.maximum(np.abs(v - mu) - lam, 0.0)
            if s.sum() > 0:
                lo = mu
            else:
                hi = mu
        mu = 0.5 * (lo + hi)
        return np.sign(v - mu) * np.maximum(np.abs(v - mu) - lam, 0.0)

    lo, hi = 0.0, float(v.max() - v.min())
    for _ in range(iters):  # ||u(lam)||_1 is non-increasing in lam
        lam = 0.5 * (lo + hi)
        if np.abs(u_of(lam)).sum() > radius:
            lo = lam
        else:
            hi = lam
    return u_of(hi)


def pattern_bounds(
    D: Array,
    Y: Array,
    W: Array,
    b: Array | None,
    rho: float,
    *,
    loss: LossName = "squared",
    penalty: PenaltyName = "l1",
    heads: tuple[int, ...] | None = None,
    head_weights: tuple[float, ...] | None = None,
) -> PatternBounds:
    """Lower bounds on the optimum of the program over *all* binary patterns.

    Parameters
    ----------
    D : ndarray of shape (n, P), uint8
        The dictionary the point (W, b) lives on.
    Y : ndarray of shape (n, C) or (n,)
    W : ndarray of shape (P, C)
    b : ndarray of shape (C,) or None
        Intercept at which the primal is taken (None: optimal for W).
    rho : float
    loss, penalty, heads, head_weights
        As in :func:`cvxsnn.solver.solve` (always with a free intercept).

    Returns
    -------
    PatternBounds

    Notes
    -----
    With ``1^T u = 0`` per output, ``max_{d in {0,1}^n} |d^T u_c| = ||u_c||_1 / 2``
    (take ``d`` the indicator of the positive entries). So any such ``u`` with
    ``max_c ||u_c||_1 / 2 <= rho`` (l1) is dual feasible for the dictionary of
    every binary pattern, and its dual value lower-bounds the optimum over every
    dictionary, in particular over every realizable spike pattern of any
    witness. Every network of this architecture (its readout on last-layer
    spikes, penalty ``rho`` times the l1 norm of the readout with hidden weights
    normalized) is a point of the program over some sub-dictionary, so its
    objective is at least the bound. For group l2, ``max_d ||d^T U||_2`` is
    replaced by the upper bound ``(sum_c (||u_c||_1/2)^2)^{1/2}``, which keeps
    the point feasible.

    For the squared loss with l1 the program separates over outputs and its
    dual over all patterns is ``max_u u^T y - n ||u||^2 / (2 w)`` subject to
    ``1^T u = 0``, ``||u||_1 <= 2 rho``: the projection of ``w y / n`` onto
    that set, computed by nested bisection. Its dual value is ``relaxation``.
    The bound is loose by construction: the label pattern ``1[y > 0]`` is one
    of the binary columns, so the relaxation can fit the labels at the cost of
    one atom.
    """
    lo = make_loss(loss, np.asarray(Y).reshape(len(Y), -1).shape[1], heads, head_weights)
    pe = make_penalty(penalty)
    Yv = check_targets_array(Y, D.shape[0])
    W = np.asarray(W, dtype=np.float64).reshape(D.shape[1], -1)
    u0, b_opt = dual_direction(D, Yv, W, lo, b)
    Z = D.astype(np.float64) @ W if D.shape[1] else np.zeros_like(Yv)
    b_eval = b_opt if b is None else np.asarray(b, dtype=np.float64)
    primal = lo.value(Z + b_eval, Yv) + rho * pe.value(W)
    M = _max_over_patterns(u0, pe)
    s_max = 1.0 if M <= rho else rho / M
    s = s_max
    if lo.name == "squared":  # dual(s u0) = s a - s^2 q is concave: take its best s <= s_max
        w = lo.column_weights
        pos = w > 0
        a = float(np.einsum("ic,ic->", u0[:, pos], Yv[:, pos]))
        q = float(np.einsum("ic,ic->c", u0[:, pos], u0[:, pos]) @ (len(Yv) / (2 * w[pos])))
        if q > 0 and a > 0:
            s = min(s_max, a / (2 * q))
    rescaled = lo.dual(s * u0, Yv)
    relax = None
    if lo.name == "squared" and pe.name == "l1":
        n = len(Yv)
        U = np.zeros_like(Yv)
        for c, wc in enumerate(lo.column_weights):
            if wc <= 0:
                continue
            uc = _project_l1_zero_sum(wc * Yv[:, c] / n, 2.0 * rho)
            uc = uc - uc.mean()  # exact feasibility of the bisection's point
            l1 = np.abs(uc).sum()
            if l1 > 2.0 * rho:
                uc = uc * (2.0 * rho / l1)
            U[:, c] = uc
        relax = lo.dual(U, Yv)
    best = rescaled if relax is None else max(rescaled, relax)
    return PatternBounds(
        primal=float(primal),
        rescaled_dual=float(rescaled),
        scale=float(s),
        relaxation=None if relax is None else float(relax),
        lower_bound=float(best),
        distance=float(primal - best),
    )


# --------------------------------------------------------------------------- #
# The loop
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class CGRound:
    """One round of column generation (round 0 is the solve on the initial dictionary).

    Attributes
    ----------
    round : int
    primal, dual, gap : float
        Certificate of the solve on the dictionary of this round.
    n_atoms : int
        P of this round's dictionary.
    max_score : float
        Largest ``R°(d^T u0)`` among the candidates examined after this solve
        (``nan`` when no search ran); a violation when above ``rho``.
    atoms_added : int
        Atoms the search added after this solve.
    n_examined : int
        Candidate patterns scored after this solve.
    time_s : float
        Solve plus search time of the round.
    """

    round: int
    primal: float
    dual: float
    gap: float
    n_atoms: int
    max_score: float
    atoms_added: int
    n_examined: int
    time_s: float

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CGResult:
    """Result of :func:`column_generation`.

    Attributes
    ----------
    params : HiddenParams
        The initial witnesses followed by the appended branches.
    dictionary : SpikeDictionary
        The final dictionary (built from ``params`` with the one kernel).
    solve : SolveResult
        The final solve on it.
    rounds : tuple of CGRound
    stop_reason : {"no_violation", "no_improvement", "max_rounds", "no_new_atom"}
    rho : float
    n_examined : int
        Distinct candidate patterns kept for the examined-set certificate.
    examined_capped : bool
        Whether more candidates were examined than kept (``max_examined``).
    examined_max_score : float
        ``max R°(d^T u0)`` over the kept examined patterns at the final ``u0``.
    examined_gap : float
        Duality gap of the final solution over the final dictionary plus every
        kept examined pattern (the dual point rescaled over both sets); its
        dual value, ``primal - examined_gap``, is a lower bound on the optimum
        over the patterns the search reached (``examined_lower_bound`` in
        :meth:`summary`), and on nothing beyond them.
    bounds : PatternBounds
        Lower bounds over all binary patterns.
    """

    params: HiddenParams
    dictionary: SpikeDictionary
    solve: SolveResult
    rounds: tuple[CGRound, ...]
    stop_reason: StopReason
    rho: float
    n_examined: int
    examined_capped: bool
    examined_max_score: float
    examined_gap: float
    bounds: PatternBounds
    log: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (rounds, stop reason, certificates)."""
        return {
            "rho": self.rho,
            "stop_reason": self.stop_reason,
            "rounds": [r.to_dict() for r in self.rounds],
            "P": self.dictionary.n_atoms,
            "branches": int(self.params.w_in.shape[0]),
            "primal": float(self.solve.primal),
            "gap": float(self.solve.gap),
            "n_examined": self.n_examined,
            "examined_capped": self.examined_capped,
            "examined_max_score": self.examined_max_score,
            "examined_gap": self.examined_gap,
            "examined_lower_bound": float(self.solve.primal - self.examined_gap),
            "bounds": dict(self.bounds.__dict__),
        }


def column_generation(
    params0: HiddenParams,
    x: Tensor | np.ndarray,
    steps: Sequence[int],
    Y: Array,
    rho: float,
    *,
    generator: torch.Generator,
    pricer: Pricer | None = None,
    max_rounds: int = 10,
    atoms_per_round: int = 16,
    loss: LossName = "squared",
    penalty: PenaltyName = "l1",
    heads: tuple[int, ...] | None = None,
    head_weights: tuple[float, ...] | None = None,
    beta: float = 0.99,
    bias_channel: bool = True,
    tol: float = 1e-6,
    violation_tol: float = 1e-6,
    improve_tol: float = 1e-9,
    max_examined: int = MAX_EXAMINED,
    dictionary: SpikeDictionary | None = None,
    W0: Array | None = None,
    b0: Array | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    callback: Callable[[CGRound, SolveResult, SpikeDictionary], None] | None = None,
) -> CGResult:
    """Solve, price, append violating atoms, re-solve warm; repeat.

    Parameters
    ----------
    params0 : HiddenParams
        Initial witnesses (K branches, widths ``(m_1, ..., m_{L-1})``).
    x : Tensor of shape (T, n, d)
        Training inputs.
    steps : sequence of int
        Supervised steps.
    Y : ndarray of shape (S n, C) or (S n,)
        Targets, step-major rows (see :func:`cvxsnn.pipeline.encode_targets`).
    rho : float
        Regularization strength (> 0).
    generator : torch.Generator
        Source of all randomness of the search.
    pricer : Pricer, optional
        Proposes witnessed candidates; :class:`RandomSearch` by default.
    max_rounds : int
        Pricing rounds at most (``>= 0``; 0 only solves).
    atoms_per_round : int
        Largest number of new atoms per round (the best distinct violators).
    loss, penalty, heads, head_weights, tol
        The program and the solver tolerance (a free intercept always).
    beta, bias_channel
        Kernel settings of the dictionary.
    violation_tol : float
        A candidate is accepted when ``R°(d^T u0) > rho (1 + violation_tol)``.
    improve_tol : float
        Stop when a round lowers the primal by less than
        ``improve_tol * max(1, |primal|)``.
    max_examined : int
        Distinct examined patterns kept for the examined-set certificate.
    dictionary : SpikeDictionary, optional
        The dictionary of ``params0`` on ``x`` (as :func:`build_dictionary`
        returns it with the same kernel settings), to skip rebuilding it.
    W0, b0 : ndarray, optional
        Warm start of the first solve (shape (P, C) and (C,)).
    device : torch.device or str, optional
        Where the witnesses run.
    progress : bool
        One line per round on stderr.
    callback : callable, optional
        Called after every round with the round, its solve and its dictionary.

    Returns
    -------
    CGResult

    Notes
    -----
    The primal objective is non-increasing across rounds: old atoms keep their
    indices when the dictionary is rebuilt, so the old solution padded with
    zeros is feasible with the same objective; the re-solve starts there, and
    should it end higher (it stops at a duality gap, not at the exact
    optimum), the padded old solution is kept instead. Stops when no candidate
    violates dual feasibility (``"no_violation"``), when no accepted
    candidate is new (``"no_new_atom"``), when the objective stops improving
    (``"no_improvement"``) or after ``max_rounds``.
    """
    _, _, widths = check_hidden_params(params0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    if not isinstance(max_rounds, int) or max_rounds < 0:
        raise ValueError(f"max_rounds must be an int >= 0; got {max_rounds!r}")
    if not isinstance(atoms_per_round, int) or atoms_per_round < 1:
        raise ValueError(f"atoms_per_round must be an int >= 1; got {atoms_per_round!r}")
    if not (violation_tol >= 0 and improve_tol >= 0):
        raise ValueError(
            f"violation_tol and improve_tol must be >= 0; got {violation_tol} and {improve_tol}"
        )
    pricer = RandomSearch() if pricer is None else pricer
    x = torch.as_tensor(x)
    x = x.to(torch.float64) if not x.is_floating_point() else x
    dev = torch.device(device) if device is not None else None
    steps = tuple(int(s) for s in steps)
    if dictionary is None:
        dic = build_dictionary(params0, x, steps, beta=beta, bias_channel=bias_channel, device=dev)
    else:
        dic = dictionary
        if (
            dic.branches != params0.w_in.shape[0]
            or dic.widths != tuple(widths)
            or dic.steps != steps
            or dic.n_samples != x.shape[1]
            or dic.beta != beta
            or dic.bias_channel != bias_channel
        ):
            raise ValueError(
                "dictionary must be built from params0 on x with the same steps, beta and "
                f"bias_channel; got a dictionary of {dic.branches} branches of widths "
                f"{dic.widths} on {dic.n_samples} samples"
            )
    Yv = check_targets_array(Y, dic.n_rows)
    lo = make_loss(loss, Yv.shape[1], heads, head_weights)
    pe = make_penalty(penalty)
    solver_device = None if dev is None or dev.type == "cpu" else str(dev)
    kw: dict[str, Any] = dict(
        loss=loss,
        penalty=penalty,
        heads=heads,
        head_weights=head_weights,
        tol=tol,
        device=solver_device,
    )
    params = params0
    res = solve(dic.atoms, Yv, rho, W0=W0, b0=b0, **kw)
    known = dict.fromkeys(_keys(dic.atoms))
    examined: dict[bytes, None] = {}
    ex_cols = _ColumnStore(dic.n_rows, max_examined)
    capped = False
    rounds: list[CGRound] = []
    stop: StopReason = "max_rounds"
    workspace = ForwardWorkspace()  # the scoring buffer of every round
    t_round = time.perf_counter()
    for r in range(max_rounds + 1):
        u0, _ = dual_direction(dic.atoms, Yv, res.coef, lo, res.intercept)
        if r == max_rounds:
            rounds.append(_round(r, res, dic, math.nan, 0, 0, t_round))
            break
        ctx = PricingContext(
            x=x,
            steps=steps,
            widths=widths,
            beta=beta,
            bias_channel=bias_channel,
            u0=u0,
            rho=float(rho),
            penalty=pe,
            generator=generator,
            device=dev,
            dtype=params0.w_in.dtype,
            workspace=workspace,
        )
        cand = pricer(ctx)
        keys = _keys(cand.patterns)
        for j, key in enumerate(keys):  # keep distinct examined patterns (capped)
            if key not in examined and key not in known:
                if len(examined) < max_examined:
                    examined[key] = None
                    ex_cols.append(cand.patterns[:, j])  # a copy: the round's array is freed
                else:
                    capped = True
        max_score = float(cand.scores.max()) if cand.scores.size else 0.0
        order = np.argsort(-cand.scores, kind="stable")
        chosen: list[int] = []
        seen: set[bytes] = set()
        for j in order:
            if cand.scores[j] <= rho * (1.0 + violation_tol) or len(chosen) >= atoms_per_round:
                break
            if keys[j] in known or keys[j] in seen:
                continue
            seen.add(keys[j])
            chosen.append(int(j))
        if max_score <= rho * (1.0 + violation_tol):
            rounds.append(_round(r, res, dic, max_score, 0, len(keys), t_round))
            stop = "no_violation"
            break
        if not chosen:
            rounds.append(_round(r, res, dic, max_score, 0, len(keys), t_round))
            stop = "no_new_atom"
            break
        m_last = widths[-1]
        by_branch: dict[int, list[int]] = {}
        for j in chosen:
            by_branch.setdefault(j // m_last, []).append(j % m_last)
        new = [_masked_branch(cand.params, k, sorted(js)) for k, js in sorted(by_branch.items())]
        added_params = concat_params([_to(p, params) for p in new])
        new_params = concat_params([params, added_params])
        # only the appended branches run; the old atoms keep their indices
        new_dic = extend_dictionary(dic, added_params, x, device=dev)
        W0 = _carry_over(dic, new_dic, res.coef)
        added = new_dic.n_atoms - dic.n_atoms
        rounds.append(_round(r, res, dic, max_score, added, len(keys), t_round))
        if callback is not None:
            callback(rounds[-1], res, dic)
        if progress:
            _print_round(rounds[-1], rho)
        t_round = time.perf_counter()
        new_res = solve(new_dic.atoms, Yv, rho, W0=W0, b0=res.intercept, **kw)
        if new_res.primal > res.primal:  # keep the feasible padded old point
            new_res = _padded_result(new_dic.atoms, Yv, W0, rho, res, kw)
        improved = res.primal - new_res.primal
        params, dic, res = new_params, new_dic, new_res
        known.update(dict.fromkeys(_keys(dic.atoms)))
        if improved < improve_tol * max(1.0, abs(res.primal)):
            u0, _ = dual_direction(dic.atoms, Yv, res.coef, lo, res.intercept)
            rounds.append(_round(r + 1, res, dic, math.nan, 0, 0, t_round))
            stop = "no_improvement"
            break
    if callback is not None and rounds:
        callback(rounds[-1], res, dic)
    if progress and rounds:
        _print_round(rounds[-1], rho)
    ex_max, ex_gap = _examined_certificate(dic.atoms, ex_cols, Yv, res, u0, lo, pe, rho, workspace)
    bounds = pattern_bounds(
        dic.atoms,
        Yv,
        res.coef,
        res.intercept,
        rho,
        loss=loss,
        penalty=penalty,
        heads=heads,
        head_weights=head_weights,
    )
    return CGResult(
        params=params,
        dictionary=dic,
        solve=res,
        rounds=tuple(rounds),
        stop_reason=stop,
        rho=float(rho),
        n_examined=len(ex_cols),
        examined_capped=capped,
        examined_max_score=ex_max,
        examined_gap=ex_gap,
        bounds=bounds,
        log=[r.to_dict() for r in rounds],
    )


def pricer_candidates(pricer: Any, m_last: int) -> int | None:
    """Candidate patterns one call of ``pricer`` returns at most, or None if unknown.

    Counted for the pricers of this module (their sweeps, local rounds and snapshots);
    a user pricer's count is not known in advance.
    """
    if isinstance(pricer, RandomSearch):
        branches = pricer.proposals * len(pricer.scales)
        branches += (
            pricer.local_rounds * pricer.elite * pricer.local_copies * len(pricer.local_scales)
        )
        return branches * m_last
    if isinstance(pricer, SurrogateAscent):
        base = 0 if pricer.base is None else pricer_candidates(pricer.base, m_last)
        if base is None:
            return None
        snaps = pricer.iters // pricer.check_every + (pricer.iters % pricer.check_every > 0)
        return base + pricer.starts * snaps * len(pricer.scales) * m_last
    if isinstance(pricer, EnumeratedPricer):
        return int(pricer.pool.w_in.shape[0]) * m_last
    return None


def estimate_search_bytes(
    n_rows: int, candidates: int | None, max_examined: int = MAX_EXAMINED, block: int = 4096
) -> dict[str, int]:
    """Upper estimate of the host memory the column-generation search adds, in bytes.

    Parameters
    ----------
    n_rows : int
        Rows of the dictionary (supervised steps x samples).
    candidates : int or None
        Patterns per pricing round (:func:`pricer_candidates`); None leaves them out.
    max_examined, block
        :func:`column_generation`'s cap on kept examined patterns, and
        :func:`pattern_scores`'s block.

    Returns
    -------
    dict of str to int
        ``examined``: the kept examined patterns, one byte per row each, at the cap,
        with their byte keys (bit-packed, about 100 bytes of Python object and dict
        entry each); ``candidates``: one round's patterns (the pricers of this module
        write all their sweeps into one array); ``scoring``: the float64 buffer a block
        of patterns is widened into; ``total``: their sum. The dictionary itself and the
        forward passes' chunk buffers (cache-sized) come on top.
    """
    for name, v in (("n_rows", n_rows), ("max_examined", max_examined), ("block", block)):
        if int(v) < (0 if name == "max_examined" else 1):
            raise ValueError(f"{name} must be >= {0 if name == 'max_examined' else 1}; got {v}")
    q = 0 if candidates is None else int(candidates)
    out = {
        "examined": _ColumnStore.max_bytes(n_rows, max_examined)
        + int(max_examined) * (-(-int(n_rows) // 8) + 100),
        "candidates": int(n_rows) * q,
        "scoring": 8 * int(n_rows) * (int(block) if candidates is None else min(int(block), q)),
    }
    out["total"] = sum(out.values())
    return out


def _to(p: HiddenParams, like: HiddenParams) -> HiddenParams:
    dev, dt = like.w_in.device, like.w_in.dtype
    return HiddenParams(
        p.w_in.to(dev, dt),
        tuple(w.to(dev, dt) for w in p.w_hidden),
        tuple(t.to(dev, dt) for t in p.thetas),
    )


def _carry_over(old: SpikeDictionary, new: SpikeDictionary, coef: Array) -> Array:
    """The old coefficients on the new dictionary's atoms (zeros on new atoms)."""
    W0 = np.zeros((new.n_atoms, coef.shape[1]))
    P = old.n_atoms
    if new.n_atoms >= P and np.array_equal(new.atoms[:, :P], old.atoms):
        W0[:P] = coef
        return W0
    index = {k: i for i, k in enumerate(_keys(new.atoms))}  # robust fallback: match by pattern
    for i, k in enumerate(_keys(old.atoms)):
        if k in index:
            W0[index[k]] += coef[i]
    return W0


def _padded_result(
    D: Array, Y: Array, W0: Array, rho: float, old: SolveResult, kw: dict[str, Any]
) -> SolveResult:
    """A SolveResult for the padded old point, certified on the new dictionary."""
    from dataclasses import replace

    from cvxsnn.solver import duality_gap

    cert = duality_gap(
        D,
        Y,
        W0,
        None,
        rho,
        loss=kw["loss"],
        penalty=kw["penalty"],
        heads=kw["heads"],
        head_weights=kw["head_weights"],
    )
    return replace(
        old,
        coef=W0,
        intercept=cert.intercept,
        primal=cert.primal,
        dual=cert.dual,
        gap=cert.gap,
        rel_gap=cert.rel_gap,
        converged=bool(cert.gap <= old.tol * max(1.0, abs(cert.primal))),
        support=np.flatnonzero(np.any(W0 != 0, axis=1)),
    )


class _ColumnStore:
    """Examined patterns, copied into blocks of ``BLOCK`` contiguous rows (one per pattern).

    A kept pattern is copied rather than kept as a view into its round's candidate
    array: a view holds the whole array (every candidate of that round) alive, so the
    search's memory grew with every round that added an examined pattern. The store
    holds at most ``cap`` patterns of ``n_rows`` bytes each, allocated block by block as
    they fill; block ``b`` is what :func:`_examined_certificate` scores as one block.
    """

    BLOCK = 8192

    def __init__(self, n_rows: int, cap: int) -> None:
        self.n_rows, self.cap = int(n_rows), int(cap)
        self.blocks: list[Array] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def append(self, column: Array) -> None:
        if self.count >= self.cap:
            raise ValueError(f"the store holds at most {self.cap} patterns")
        b, i = divmod(self.count, self.BLOCK)
        if b == len(self.blocks):
            rows = min(self.BLOCK, self.cap - b * self.BLOCK)
            self.blocks.append(np.empty((rows, self.n_rows), dtype=np.uint8))
        self.blocks[b][i] = column
        self.count += 1

    def filled(self) -> list[Array]:
        """The blocks, the last cut to its filled rows: (rows, n_rows) each."""
        full, rest = divmod(self.count, self.BLOCK)
        return self.blocks[:full] + ([self.blocks[full][:rest]] if rest else [])

    @staticmethod
    def max_bytes(n_rows: int, cap: int) -> int:
        """What a full store holds."""
        return int(n_rows) * int(cap)


def _examined_certificate(
    D: Array,
    ex_cols: _ColumnStore,
    Y: Array,
    res: SolveResult,
    u0: Array,
    lo: Loss,
    pe: Penalty,
    rho: float,
    workspace: ForwardWorkspace | None = None,
) -> tuple[float, float]:
    """Max score over examined patterns and the gap over dictionary + examined patterns."""
    m_d = float(pattern_scores(D, u0, pe, workspace=workspace).max()) if D.shape[1] else 0.0
    m_e = 0.0
    for rows in ex_cols.filled():
        # the patterns are contiguous rows of the store, read through the transpose
        m_e = max(m_e, float(pattern_scores(rows.T, u0, pe, workspace=workspace).max()))
    M = max(m_d, m_e)
    s = 1.0 if M <= rho else rho / M
    dual = lo.dual(s * u0, Y)
    return m_e, float(res.primal - dual)


def _round(
    r: int,
    res: SolveResult,
    dic: SpikeDictionary,
    max_score: float,
    added: int,
    n_examined: int,
    t0: float,
) -> CGRound:
    return CGRound(
        round=r,
        primal=float(res.primal),
        dual=float(res.dual),
        gap=float(res.gap),
        n_atoms=dic.n_atoms,
        max_score=float(max_score),
        atoms_added=int(added),
        n_examined=int(n_examined),
        time_s=float(time.perf_counter() - t0),
    )


def _print_round(rd: CGRound, rho: float) -> None:
    print(
        f"[cvxsnn] cg round {rd.round}: primal={rd.primal:.6e} gap={rd.gap:.1e} "
        f"P={rd.n_atoms} max_score/rho={rd.max_score / rho:.4f} added={rd.atoms_added} "
        f"examined={rd.n_examined} ({rd.time_s:.2f}s)",
        file=sys.stderr,
        flush=True,
    )
