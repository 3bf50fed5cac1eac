"""Parameter reconstruction: a real K'-parallel LIF network from a convex solution.

Given the witnesses, their spike dictionary and a solution ``(W, b)`` of the
convex program (``W`` of shape (P, C) over the atoms, ``b`` of shape (C,)),
:func:`reconstruct` builds a :class:`~cvxsnn.network.ParallelLIFNet` whose
output at the supervised steps is ``D W + b`` exactly:

- a branch is kept only when at least one of its last-layer neurons is the
  representative of a support atom (an atom with a non-zero row of ``W``);
- a kept branch keeps all its hidden layers, and in its last layer only the
  representative neurons of its support atoms; the readout weight of such a
  neuron is the atom's row of ``W``. Other neurons that produced the same
  atom are dropped, so no atom is counted twice;
- the readout bias is ``b``.

``ParallelLIFNet`` needs equal widths in all branches, so a kept branch with
fewer kept last-layer neurons than the widest is padded with neurons whose
incoming weights are all zero, whose threshold is 1 and whose readout weight
is zero. Such a neuron has ``U_t = 0`` at every step (no current, never a
reset), and ``0 > 1`` is false, so it never spikes and adds nothing. Its
threshold is set to 1 explicitly because learned thresholds (SG witnesses)
may be ``<= 0``, and a padding neuron with such a threshold would fire.

:func:`verify_reconstruction` checks the result on the training data with the
same kernel in float64 and reports the smallest distance ``|U - theta|`` of a
membrane to its threshold (a spike closer than that to flipping could flip in
float32 or on another machine).
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from cvxsnn.dictionary import SpikeDictionary, _as64, _check_steps, _check_x
from cvxsnn.network import (
    ForwardWorkspace,
    HiddenParams,
    NetConfig,
    ParallelLIFNet,
    check_chunk,
)
from cvxsnn.samples import repeated_samples
from cvxsnn.witnesses import check_hidden_params, named_tensors

__all__ = [
    "ReconstructionError",
    "ReconstructionReport",
    "SmallMarginWarning",
    "reconstruct",
    "verify_reconstruction",
]

#: Key of the reconstruction map stored in ``NetConfig.meta``.
META_KEY = "reconstruction"


class ReconstructionError(RuntimeError):
    """A reconstructed network does not reproduce ``D W + b`` exactly."""


class SmallMarginWarning(UserWarning):
    """A membrane came closer to its threshold than the warning level."""


@dataclass(frozen=True)
class ReconstructionReport:
    """Result of :func:`verify_reconstruction`.

    Attributes
    ----------
    spikes_identical : bool
        Every kept last-layer neuron spikes exactly as its dictionary column,
        and no padding neuron ever spikes.
    n_spike_mismatch : int
        Number of (row, neuron) entries that differ.
    max_abs_error : float
        ``max |f(x) - (D W + b)|`` over all rows and outputs.
    atol : float
        Tolerance on ``max_abs_error`` for the reconstruction to count as exact.
    min_margin : float
        Smallest ``|U - theta|`` over all layers, steps, samples and neurons
        of the kept branches (padding neurons excluded).
    margin_at : tuple of int
        ``(layer, step, sample, branch, neuron)`` where it occurs (branch
        index in the reconstructed network).
    margin_warn : float
        Warning level for ``min_margin``.
    n_rows : int
    support_size : int
        Atoms with a non-zero coefficient row.
    n_branches : int
        K' of the reconstructed network.
    n_neurons : int
        Kept (non-padding) last-layer neurons; equals ``support_size``.
    outputs : ndarray of shape (S, n, C) or None
        The network's own outputs ``f(x)`` at the supervised steps, for every
        sample of ``x`` (with ``keep_outputs``; not part of the record).
    """

    spikes_identical: bool
    n_spike_mismatch: int
    max_abs_error: float
    atol: float
    min_margin: float
    margin_at: tuple[int, ...]
    margin_warn: float
    n_rows: int
    support_size: int
    n_branches: int
    n_neurons: int
    outputs: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def exact(self) -> bool:
        """Identical spikes and ``max_abs_error <= atol``."""
        return self.spikes_identical and self.max_abs_error <= self.atol

    def check(self) -> ReconstructionReport:
        """Return ``self`` when exact, raise :class:`ReconstructionError` otherwise."""
        if not self.exact:
            raise ReconstructionError(
                f"reconstruction is not exact: {self.n_spike_mismatch} spike mismatches, "
                f"max |f(x) - (D W + b)| = {self.max_abs_error:.3e} (tolerance {self.atol:.0e})"
            )
        return self

    def to_dict(self) -> dict[str, object]:
        return {
            "spikes_identical": self.spikes_identical,
            "n_spike_mismatch": self.n_spike_mismatch,
            "max_abs_error": self.max_abs_error,
            "atol": self.atol,
            "min_margin": self.min_margin,
            "margin_at": list(self.margin_at),
            "margin_warn": self.margin_warn,
            "n_rows": self.n_rows,
            "support_size": self.support_size,
            "n_branches": self.n_branches,
            "n_neurons": self.n_neurons,
        }


def reconstruct(
    params: HiddenParams,
    dictionary: SpikeDictionary,
    coef: np.ndarray,
    intercept: np.ndarray,
    *,
    out_layout: Sequence[int],
    head_classes: Sequence[int],
    beta: float | None = None,
    bias_channel: bool | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> ParallelLIFNet:
    """Build the K'-parallel LIF network realizing ``D W + b``.

    Parameters
    ----------
    params : HiddenParams
        The witnesses the dictionary was built from (checked against it).
    dictionary : SpikeDictionary
        P atoms with their representative neurons.
    coef : ndarray of shape (P, C)
        Readout coefficients over the atoms (``(P,)`` is read as C = 1).
    intercept : ndarray of shape (C,)
        Readout bias.
    out_layout, head_classes : sequence of int
        Heads of the readout (see :class:`~cvxsnn.network.NetConfig`);
        ``sum(out_layout) = C``.
    beta, bias_channel : optional
        Default to the dictionary's; given values must agree with it.
    dtype, device
        Precision and place of the returned network.

    Returns
    -------
    ParallelLIFNet
        ``K'`` branches (those holding a support atom, in increasing branch
        order) with hidden widths ``(m_1, ..., m_{L-2}, m')``, ``m'`` the most
        support atoms in one branch. ``config.meta["reconstruction"]`` holds
        ``branches`` (original branch of each kept branch), ``neurons`` and
        ``atoms`` (per kept branch, the original last-layer neuron and atom
        index of each last-layer slot; ``-1`` for padding).

    Notes
    -----
    With an empty support (``W = 0``) the network has one branch of silent
    padding neurons (widths all 1, zero weights, thresholds 1) and outputs
    ``b``.
    """
    if not isinstance(dictionary, SpikeDictionary):
        raise TypeError(f"dictionary must be a SpikeDictionary; got {type(dictionary).__name__}")
    _, d_eff, widths = check_hidden_params(params)
    _check_same_witnesses(params, dictionary)
    beta = _agree("beta", beta, dictionary.beta)
    bias_channel = _agree("bias_channel", bias_channel, dictionary.bias_channel)
    coef, intercept = _check_coef(coef, intercept, dictionary.n_atoms)
    C = coef.shape[1]
    if sum(out_layout) != C:
        raise ValueError(
            f"out_layout must sum to C = {C} (the columns of coef); got {tuple(out_layout)}"
        )
    support = np.flatnonzero(np.any(coef != 0, axis=1))
    prov = dictionary.provenance[support]
    kept = np.unique(prov[:, 0])
    per_branch = [support[prov[:, 0] == k] for k in kept]
    m_kept = max((len(a) for a in per_branch), default=1)
    d_in = d_eff - int(bias_channel)

    if len(kept) == 0:  # empty support: one silent branch
        n_hidden = len(widths)
        new_widths = (1,) * n_hidden
        w_in = torch.zeros(1, d_eff, 1, dtype=torch.float64)
        w_hidden = tuple(torch.zeros(1, 1, 1, dtype=torch.float64) for _ in range(n_hidden - 1))
        thetas = tuple(torch.ones(1, 1, dtype=torch.float64) for _ in range(n_hidden))
        w_out = torch.zeros(1, 1, C, dtype=torch.float64)
        neurons_meta: list[list[int]] = [[-1]]
        atoms_meta: list[list[int]] = [[-1]]
    else:
        idx = torch.as_tensor(kept, dtype=torch.long)
        p64 = _as64(params)
        weights = [p64.w_in.index_select(0, idx), *(w.index_select(0, idx) for w in p64.w_hidden)]
        thetas_l = [t.index_select(0, idx) for t in p64.thetas]
        Kp = len(kept)
        fan_in = weights[-1].shape[1]
        w_last = torch.zeros(Kp, fan_in, m_kept, dtype=torch.float64)
        th_last = torch.ones(Kp, m_kept, dtype=torch.float64)  # padding thresholds: 1
        w_out = torch.zeros(Kp, m_kept, C, dtype=torch.float64)
        neurons_meta, atoms_meta = [], []
        for b, atoms_b in enumerate(per_branch):
            neurons = dictionary.provenance[atoms_b, 1]
            j = torch.as_tensor(neurons, dtype=torch.long)
            c = len(atoms_b)
            w_last[b, :, :c] = weights[-1][b].index_select(1, j)
            th_last[b, :c] = thetas_l[-1][b].index_select(0, j)
            w_out[b, :c] = torch.as_tensor(coef[atoms_b], dtype=torch.float64)
            pad = [-1] * (m_kept - c)
            neurons_meta.append([int(v) for v in neurons] + pad)
            atoms_meta.append([int(v) for v in atoms_b] + pad)
        weights[-1] = w_last
        thetas_l[-1] = th_last
        w_in, w_hidden, thetas = weights[0], tuple(weights[1:]), tuple(thetas_l)
        new_widths = (*widths[:-1], m_kept)

    config = NetConfig(
        d_in=d_in,
        widths=new_widths,
        branches=int(w_in.shape[0]),
        out_layout=tuple(out_layout),
        head_classes=tuple(head_classes),
        beta=beta,
        bias_channel=bias_channel,
        meta={
            META_KEY: {
                "branches": [int(k) for k in kept],
                "neurons": neurons_meta,
                "atoms": atoms_meta,
            }
        },
    )
    net = ParallelLIFNet.from_hidden_params(
        config, HiddenParams(w_in, tuple(w_hidden), tuple(thetas)), device=device, dtype=dtype
    )
    dev = net.device
    with torch.no_grad():
        net.w_out.copy_(w_out.to(dev, dtype))
        net.b_out.copy_(torch.as_tensor(intercept, dtype=torch.float64).to(dev, dtype))
    return net


def verify_reconstruction(
    net: ParallelLIFNet,
    dictionary: SpikeDictionary,
    x: Tensor | np.ndarray,
    steps: Sequence[int] | None,
    coef: np.ndarray,
    intercept: np.ndarray,
    *,
    atol: float = 1e-9,
    margin_warn: float = 1e-6,
    chunk_rows: int | None = None,
    progress: bool = False,
    keep_outputs: bool = False,
) -> ReconstructionReport:
    """Check a reconstructed network against its dictionary on the training data.

    Parameters
    ----------
    net : ParallelLIFNet
        Output of :func:`reconstruct` (its ``config.meta["reconstruction"]``
        maps last-layer slots to atoms). Run in float64 on a copy whatever
        its own dtype.
    dictionary : SpikeDictionary
    x : Tensor of shape (T, n, d)
        The data the dictionary was built from (n must equal
        ``dictionary.n_samples``).
    steps : sequence of int or None
        The dictionary's supervised steps (``None``: take them from it).
    coef : ndarray of shape (P, C)
    intercept : ndarray of shape (C,)
    atol : float
        Largest accepted ``max |f(x) - (D W + b)|``.
    margin_warn : float
        Warn (:class:`SmallMarginWarning`) when the smallest ``|U - theta|``
        is below this.
    chunk_rows : int, optional
        Samples per forward pass; by default one (B, K', m) float64 step
        tensor is about ``CACHE_STEP_BYTES`` (cache-sized, as in the dictionary).
    progress : bool
        Show a progress bar over samples on stderr.
    keep_outputs : bool
        Keep the network's outputs on ``x`` in the report (``outputs``), e.g. for
        training metrics without another forward pass. Their labels are those of
        :meth:`~cvxsnn.network.ParallelLIFNet.predict` on ``x`` but at an exact tie
        (its readout may run on other groups of rows, which can change the last bit).

    Returns
    -------
    ReconstructionReport
        Use ``.check()`` to raise when the reconstruction is not exact.

    Notes
    -----
    Every row of the dictionary is compared, but the network runs once per
    distinct input sequence when at least a tenth of the samples are repeats
    (:func:`cvxsnn.samples.repeated_samples`, as in the dictionary build): the
    spikes and outputs of a repeated sample are those of its first occurrence,
    and they are compared with each of its rows. The report is the one a pass
    over every sample gives: the same spike comparison and smallest margin
    (``margin_at`` names the first occurrence), and the output error to
    rounding (the readout runs on other batches of rows).
    """
    if not isinstance(net, ParallelLIFNet):
        raise TypeError(f"net must be a ParallelLIFNet; got {type(net).__name__}")
    meta = net.config.meta.get(META_KEY)
    if meta is None:
        raise ValueError(f"net has no config.meta[{META_KEY!r}]; it must come from reconstruct()")
    steps = dictionary.steps if steps is None else _check_steps(steps, dictionary.n_steps_total)
    if tuple(steps) != dictionary.steps:
        raise ValueError(
            f"steps must be the dictionary's supervised steps {dictionary.steps}; got {steps}"
        )
    x = _check_x(x, net.config.d_in, "x")
    T, n, _ = x.shape
    if n != dictionary.n_samples or T != dictionary.n_steps_total:
        raise ValueError(
            f"x must be the dictionary's training data of shape (T, n) = "
            f"({dictionary.n_steps_total}, {dictionary.n_samples}); got ({T}, {n})"
        )
    coef, intercept = _check_coef(coef, intercept, dictionary.n_atoms)
    atoms_map = np.asarray(meta["atoms"], dtype=np.int64)  # (K', m')
    real = atoms_map >= 0
    net64 = copy.deepcopy(net).to(device=net.device, dtype=torch.float64).requires_grad_(False)
    S = len(steps)
    Kp, mp = atoms_map.shape
    step_idx = torch.as_tensor(steps, dtype=torch.long, device=net64.device)
    # Spikes and outputs are compared chunk by chunk, so memory stays that of one chunk
    # (whole-split copies were several GiB at 50,000 rows x 20,000 atoms).
    flat_atoms = atoms_map.reshape(-1)
    cols = np.flatnonzero(flat_atoms >= 0)  # kept slots; the others are padding
    pad = np.flatnonzero(flat_atoms < 0)
    used = np.flatnonzero(np.any(coef != 0, axis=1))  # D W + b from the support columns
    n_mismatch, err = 0, 0.0
    best = (np.inf, (-1, -1, -1, -1, -1))
    # padding slots of the last layer (never spiking, checked above): out of the margin
    pad_k, pad_j = (torch.as_tensor(i, device=net64.device) for i in np.nonzero(~real))
    chunk_rows = net64.chunk_samples() if chunk_rows is None else check_chunk(chunk_rows)
    # The network runs on the distinct samples (all of x when few repeat); the samples of
    # x whose first occurrence is run sample r are members[bounds[r]:bounds[r + 1]].
    distinct = repeated_samples(x)
    x_run = x if distinct is None else distinct.take(x)
    n_run = x_run.shape[1]
    first = np.arange(n) if distinct is None else distinct.first
    if distinct is not None:
        members = np.argsort(distinct.inverse, kind="stable")
        bounds = np.searchsorted(distinct.inverse[members], np.arange(n_run + 1))
    kept = np.empty((S, n, net64.config.n_out)) if keep_outputs else None
    ws = ForwardWorkspace()  # the chunks reuse one set of buffers
    bar = tqdm(total=n_run, desc="check", unit="sample", file=sys.stderr, disable=not progress)
    with torch.no_grad(), bar:
        for a in range(0, n_run, chunk_rows):
            b = min(a + chunk_rows, n_run)
            trace = net64.run_hidden(
                x_run[:, a:b].to(net64.device), return_membrane=True, workspace=ws
            )
            last = trace.spikes[-1]  # (T, B, K', m')
            sel = last.index_select(0, step_idx)  # (S, B, K', m')
            got = sel.to(torch.uint8).cpu().numpy().reshape(S, b - a, Kp * mp)
            outs = net64.readout(sel).cpu().numpy()  # (S, B, C)
            samples = np.arange(a, b)  # the samples of x these rows stand for
            if distinct is not None:
                samples = members[bounds[a] : bounds[b]]
                at = distinct.inverse[samples] - a
                got, outs = got[:, at], outs[:, at]  # (S, B_x, ...): one per sample of x
            if kept is not None:
                kept[:, samples] = outs
            rows = (np.arange(S)[:, None] * n + samples[None, :]).reshape(-1)
            # identical spikes: each kept slot equals its atom; padding never spikes
            block = dictionary.atoms[rows]  # (S B_x, P), step-major like got
            ref = block[:, flat_atoms[cols]].reshape(S, samples.size, -1)
            n_mismatch += int(np.count_nonzero(got[..., cols] != ref))
            n_mismatch += int(np.count_nonzero(got[..., pad]))
            target = block[:, used].astype(np.float64) @ coef[used] + intercept  # (S B_x, C)
            if target.size:
                err = max(err, float(np.max(np.abs(outs.reshape(-1, outs.shape[-1]) - target))))
            n_layers = len(trace.membranes)
            for layer, (v, th) in enumerate(zip(trace.membranes, net64.thetas, strict=True)):
                # |U - theta| in place, in the membranes' memory layout (K, T, B, m): the
                # membranes are the workspace's and not read again (a reduction over a
                # permuted view would first copy it to contiguous)
                vk = v.permute(2, 0, 1, 3)  # (K', T, B, m_l), contiguous
                gap = vk.sub_(th[:, None, None, :]).abs_()
                if layer == n_layers - 1 and pad_k.numel():
                    gap[pad_k, :, :, pad_j] = np.inf  # the padding slots only
                val = float(gap.min())
                if val < best[0]:
                    k, t, i, j = np.unravel_index(int(gap.argmin()), tuple(gap.shape))
                    best = (val, (layer, int(t), int(first[a + i]), int(k), int(j)))
            bar.update(b - a)
    support = int(np.count_nonzero(np.any(coef != 0, axis=1)))
    report = ReconstructionReport(
        spikes_identical=n_mismatch == 0,
        n_spike_mismatch=n_mismatch,
        max_abs_error=err,
        atol=float(atol),
        min_margin=float(best[0]),
        margin_at=best[1],
        margin_warn=float(margin_warn),
        n_rows=S * n,
        support_size=support,
        n_branches=int(Kp) if len(meta["branches"]) else 0,
        n_neurons=int(real.sum()),
        outputs=kept,
    )
    if report.min_margin < margin_warn:
        warnings.warn(
            f"smallest margin |U - theta| = {report.min_margin:.3e} (layer, step, sample, "
            f"branch, neuron = {report.margin_at}) is below {margin_warn:.0e}: in float32 or "
            "on another machine this spike could flip",
            SmallMarginWarning,
            stacklevel=2,
        )
    return report


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _check_same_witnesses(params: HiddenParams, dictionary: SpikeDictionary) -> None:
    mine, theirs = _as64(params), dictionary.params
    if len(mine.thetas) != len(theirs.thetas):
        raise ValueError(
            f"params has {len(mine.thetas)} hidden layers but the dictionary's witnesses have "
            f"{len(theirs.thetas)}"
        )
    for (name, a), (_, b) in zip(named_tensors(mine), named_tensors(theirs), strict=True):
        if a.shape != b.shape or not torch.equal(a, b):
            raise ValueError(
                f"params.{name} differs from the witnesses the dictionary was built from "
                f"(shapes {tuple(a.shape)} and {tuple(b.shape)})"
            )


def _check_coef(coef: np.ndarray, intercept: np.ndarray, P: int) -> tuple[np.ndarray, np.ndarray]:
    coef = np.asarray(coef, dtype=np.float64)
    if coef.ndim == 1:
        coef = coef[:, None]
    if coef.ndim != 2 or coef.shape[0] != P:
        raise ValueError(f"coef must have shape (P, C) with P = {P}; got {coef.shape}")
    intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
    if intercept.shape != (coef.shape[1],):
        raise ValueError(
            f"intercept must have shape (C,) = ({coef.shape[1]},); got {intercept.shape}"
        )
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise ValueError("coef and intercept must be finite; got NaN or infinite values")
    return coef, intercept


def _agree(name: str, given: float | bool | None, stored: float | bool) -> float | bool:
    if given is None:
        return stored
    if given != stored:
        raise ValueError(f"{name} must match the dictionary's ({stored!r}); got {given!r}")
    return given
