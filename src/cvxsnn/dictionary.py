"""The spike dictionary: last-layer spikes of the witnesses on the training data.

Column ``(k, j)`` of the raw dictionary is the spike of last-layer neuron ``j``
of branch ``k`` at the supervised steps, for every sample. All-zero and
duplicate columns are dropped (and, by default, an all-ones column, which the
free intercept of the convex program covers); every kept column (an *atom*)
remembers the neuron that first produced it (its representative) and all the
neurons that produced it.

The spikes come from the one LIF kernel: the witnesses are written into a
:class:`~cvxsnn.network.ParallelLIFNet` and its ``run_hidden`` is called in
float64 under ``torch.no_grad`` (its ``last_spikes``, which is ``run_hidden``
bit for bit in reused buffers), chunked over samples so that memory stays
bounded. There is no other LIF implementation here.

Row layout (``"step-major"``): with ``steps = (t_0, ..., t_{S-1})`` and ``n``
samples, row ``r = s * n + i`` holds sample ``i`` at step ``t_s``. So the
rows of the first supervised step come first, then those of the second, and
``atoms.reshape(S, n, P)[s, i]`` is sample ``i`` at step ``t_s``.

Raw column order is branch-major: raw column ``k * m_last + j`` is neuron
``j`` of branch ``k``; atoms keep the order of their representatives.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from cvxsnn.network import (
    CACHE_STEP_BYTES,
    ForwardWorkspace,
    HiddenParams,
    NetConfig,
    ParallelLIFNet,
    check_chunk,
)
from cvxsnn.samples import distinct_samples, repeated_samples
from cvxsnn.witnesses import check_hidden_params

__all__ = [
    "ColumnGroups",
    "DictionaryTooLarge",
    "RowLayout",
    "SpikeDictionary",
    "available_memory",
    "build_dictionary",
    "concat_params",
    "dedup_columns",
    "distinct_samples",
    "estimate_dictionary_bytes",
    "extend_dictionary",
    "last_layer_spikes",
]

RowLayout = Literal["step-major"]

#: Share of the available RAM a dictionary may take when ``max_bytes`` is not given.
DEFAULT_MEMORY_FRACTION = 0.5
#: Upper bound on the float64 working memory of one forward chunk, in bytes.
DEFAULT_CHUNK_BYTES = 256 * 2**20


class DictionaryTooLarge(MemoryError):
    """The dictionary would not fit in the memory limit; nothing was computed."""


@dataclass(frozen=True, eq=False)
class SpikeDictionary:
    """Deduplicated binary dictionary with the provenance of every atom.

    Attributes
    ----------
    atoms : ndarray of shape (n_rows, P), dtype uint8
        The atoms, values in {0, 1}; ``n_rows = len(steps) * n_samples`` in
        the step-major layout (row ``s * n_samples + i``).
    provenance : ndarray of shape (P, 2), dtype int64
        ``(branch, neuron)`` of each atom's representative neuron (the first
        raw column, in branch-major order, that produced it).
    member_ptr : ndarray of shape (P + 1,), dtype int64
        Atom ``p`` was produced by the neurons
        ``members[member_ptr[p]:member_ptr[p + 1]]``.
    members : ndarray of shape (n_members, 2), dtype int64
        ``(branch, neuron)`` of every neuron that produced a kept atom, grouped
        by atom, representative first.
    n_atoms_raw : int
        ``K * m_last``, the columns before any dropping.
    n_zero : int
        Raw columns that never spike (dropped).
    n_ones : int
        Raw columns that spike in every row, dropped because the intercept
        covers them (0 when built with ``drop_ones=False``).
    n_duplicate : int
        Other raw columns equal to an earlier kept column (dropped).
        ``P = n_atoms_raw - n_zero - n_ones - n_duplicate``.
    steps : tuple of int
        The supervised steps (0-based).
    n_samples : int
        n, samples of the data the dictionary was built on.
    n_steps_total : int
        T of that data.
    row_layout : {"step-major"}
    params : HiddenParams
        The witnesses (float64, CPU copies); used by :meth:`transform`.
    beta : float
    bias_channel : bool
    """

    atoms: np.ndarray
    provenance: np.ndarray
    member_ptr: np.ndarray
    members: np.ndarray
    n_atoms_raw: int
    n_zero: int
    n_ones: int
    n_duplicate: int
    steps: tuple[int, ...]
    n_samples: int
    n_steps_total: int
    params: HiddenParams
    beta: float
    bias_channel: bool
    row_layout: RowLayout = "step-major"

    @property
    def n_rows(self) -> int:
        """Rows: ``len(steps) * n_samples``."""
        return int(self.atoms.shape[0])

    @property
    def n_atoms(self) -> int:
        """P: atoms after dropping zero, all-ones and duplicate columns."""
        return int(self.atoms.shape[1])

    @property
    def branches(self) -> int:
        """K of the witnesses."""
        return int(self.params.w_in.shape[0])

    @property
    def widths(self) -> tuple[int, ...]:
        """Hidden widths of the witnesses."""
        return tuple(int(t.shape[1]) for t in self.params.thetas)

    @property
    def multiplicity(self) -> np.ndarray:
        """Number of neurons that produced each atom, shape (P,)."""
        return np.diff(self.member_ptr)

    @property
    def raw_columns(self) -> np.ndarray:
        """Raw (branch-major) column index ``k * m_last + j`` of each atom, shape (P,)."""
        return self.provenance[:, 0] * self.widths[-1] + self.provenance[:, 1]

    def neurons_of(self, atom: int) -> np.ndarray:
        """``(branch, neuron)`` of all neurons that produced ``atom``, shape (c, 2)."""
        if not 0 <= atom < self.n_atoms:
            raise IndexError(f"atom must lie in [0, {self.n_atoms}); got {atom}")
        return self.members[self.member_ptr[atom] : self.member_ptr[atom + 1]]

    def packed(self) -> np.ndarray:
        """The atoms bit-packed along rows: ndarray (ceil(n_rows / 8), P), uint8."""
        return np.packbits(self.atoms, axis=0)

    def transform(
        self,
        x_new: Tensor | np.ndarray,
        steps: Sequence[int] | None = None,
        *,
        chunk_rows: int | None = None,
        device: torch.device | str | None = None,
        max_bytes: int | None = None,
        atoms: slice | Sequence[int] | None = None,
    ) -> np.ndarray:
        """Spikes of the same atoms (their representative neurons) on new data.

        Parameters
        ----------
        x_new : Tensor of shape (T', n', d)
        steps : sequence of int, optional
            Supervised steps of ``x_new``; the dictionary's steps by default.
        chunk_rows, device, max_bytes
            As in :func:`build_dictionary`.
        atoms : slice or sequence of int, optional
            Only these atoms (columns in this order); all by default. Only the
            branches of their representatives run.

        Returns
        -------
        ndarray of shape (len(steps) * n', P), dtype uint8
            Step-major rows; ``transform(x_train)`` equals ``atoms``.
        """
        steps = self.steps if steps is None else steps
        provenance = self.provenance
        if atoms is not None:
            provenance = provenance[atoms if isinstance(atoms, slice) else np.asarray(atoms)]
        return last_layer_spikes(
            self.params,
            x_new,
            steps,
            columns=provenance,
            beta=self.beta,
            bias_channel=self.bias_channel,
            chunk_rows=chunk_rows,
            device=device,
            max_bytes=max_bytes,
        )

    def __repr__(self) -> str:
        return (
            f"SpikeDictionary(n_rows={self.n_rows}, P={self.n_atoms}, "
            f"n_atoms_raw={self.n_atoms_raw}, n_zero={self.n_zero}, n_ones={self.n_ones}, "
            f"n_duplicate={self.n_duplicate}, steps={self.steps}, n_samples={self.n_samples})"
        )


# --------------------------------------------------------------------------- #
# Building
# --------------------------------------------------------------------------- #
def build_dictionary(
    params: HiddenParams,
    x: Tensor | np.ndarray,
    steps: Sequence[int],
    *,
    beta: float = 0.99,
    bias_channel: bool = True,
    drop_ones: bool = True,
    chunk_rows: int | None = None,
    device: torch.device | str | None = None,
    max_bytes: int | None = None,
    progress: bool = False,
) -> SpikeDictionary:
    """Build the deduplicated spike dictionary of witnesses on data.

    Parameters
    ----------
    params : HiddenParams
        Witnesses of K branches: ``w_in`` (K, d_eff, m_1), ``w_hidden``
        (K, m_{l-1}, m_l), ``thetas`` (K, m_l).
    x : Tensor of shape (T, n, d)
        Training inputs, time-major, finite.
    steps : sequence of int
        Supervised steps (0-based, increasing, in ``[0, T)``).
    beta : float
        Leak factor.
    bias_channel : bool
        Whether a constant-1 channel is appended to ``x`` (``d_eff = d + 1``).
    drop_ones : bool
        Also drop a column that spikes in every row; the unpenalized intercept
        of the convex program covers it. Use ``False`` for a solve without an
        intercept.
    chunk_rows : int, optional
        Samples per forward pass; chosen from the memory estimate when
        omitted (at most about 256 MiB of float64 working memory).
    device : torch.device or str, optional
        Where the forward passes run (CPU by default); the dictionary is
        returned in host memory.
    max_bytes : int, optional
        Memory limit of the whole build; a share (1/2) of the available RAM
        by default.
    progress : bool
        Show a progress bar over samples on stderr.

    Returns
    -------
    SpikeDictionary
        Atoms ``(len(steps) * n, P)`` uint8 in the step-major row layout.

    Raises
    ------
    DictionaryTooLarge
        Before any computation, when the estimate of
        :func:`estimate_dictionary_bytes` exceeds the limit.
    ValueError
        On bad shapes, NaN or infinite values, bad steps, or when every
        column is dropped (the witnesses never spike at the supervised steps).

    Notes
    -----
    The kernel runs once per distinct input sequence when at least a tenth of
    the samples are repeats (:func:`cvxsnn.samples.repeated_samples`); the rows
    of a repeated sample are copied. The atoms are those of a pass over every
    sample except where a membrane lies within rounding of its threshold: the
    float64 matmul of a BLAS (MKL here) may round a row differently in the last
    bit when the batch around it changes size, for any inner dimension, so
    membranes agree to rounding and spikes exactly up to such ties. The
    reconstruction check compares every row and reports the smallest margin.

    Deduplication packs each column's bits (``np.packbits`` along rows) and
    runs ``np.unique`` on the packed columns viewed as fixed-length byte
    strings: the comparison is on the whole byte string, so two columns are
    merged if and only if they are equal (no hash collision is possible).
    """
    K, d_eff, widths = check_hidden_params(params)
    x = _check_x(x, d_eff - int(bias_channel), "x")
    T, n, _ = x.shape
    steps = _check_steps(steps, T)
    S = len(steps)
    n_rows, n_raw = S * n, K * widths[-1]
    limit = _limit(max_bytes)
    chunk = _chunk_samples(chunk_rows, T, n, K, d_eff, widths, limit)
    estimate = estimate_dictionary_bytes(T, n, S, K, d_eff, widths, chunk_rows=chunk)
    # With repeated samples the kernel runs on a copy of the distinct ones (at most 90%
    # of the samples, see repeated_samples); the spikes then take less than the estimate.
    distinct = repeated_samples(x)
    if distinct is not None:
        estimate += distinct.take_bytes(x)
    if estimate > limit:
        raise DictionaryTooLarge(
            f"the spike dictionary needs about {_fmt(estimate)} ({n_rows} rows x {n_raw} raw "
            f"columns, plus a forward chunk of {chunk} samples) but the limit is {_fmt(limit)}; "
            "use fewer samples, fewer branches or a smaller last layer, or raise max_bytes"
        )
    x_run = x if distinct is None else distinct.take(x)
    raw = _spikes(params, x_run, steps, beta, bias_channel, chunk, device, None, progress)
    inverse = None if distinct is None else distinct.inverse
    return _dedup(raw, params, steps, n, T, beta, bias_channel, drop_ones, inverse)


def extend_dictionary(
    dictionary: SpikeDictionary,
    params: HiddenParams,
    x: Tensor | np.ndarray,
    *,
    drop_ones: bool = True,
    chunk_rows: int | None = None,
    device: torch.device | str | None = None,
    max_bytes: int | None = None,
) -> SpikeDictionary:
    """The dictionary of ``dictionary``'s witnesses followed by ``params``, running only
    the new branches.

    Equal to ``build_dictionary`` of the concatenated witnesses on the same data (the
    same atoms in the same order, representatives, members and counts): the old atoms
    keep their indices, a new column equal to an old atom joins its members, and the
    new distinct columns become atoms in the order of their first neuron.

    Parameters
    ----------
    dictionary : SpikeDictionary
        Built from ``x`` (with ``drop_ones`` as given here).
    params : HiddenParams
        The new branches, of the dictionary's input width and hidden widths.
    x : Tensor of shape (T, n, d)
        The training inputs the dictionary was built on.
    drop_ones, chunk_rows, device, max_bytes
        As in :func:`build_dictionary` (``max_bytes`` bounds the new branches' pass).

    Returns
    -------
    SpikeDictionary

    Notes
    -----
    The new branches run in batches of their own, so "equal" holds as in the Notes of
    :func:`build_dictionary`: exactly, except where a membrane lies within rounding of
    its threshold (the reconstruction check compares every row).
    """
    if not isinstance(dictionary, SpikeDictionary):
        raise TypeError(f"dictionary must be a SpikeDictionary; got {type(dictionary).__name__}")
    K_new, d_eff, widths = check_hidden_params(params)
    old = dictionary
    if widths != old.widths or d_eff != int(old.params.w_in.shape[1]):
        raise ValueError(
            f"params must have the dictionary's input width {int(old.params.w_in.shape[1])} "
            f"and hidden widths {old.widths}; got {d_eff} and {widths}"
        )
    x = _check_x(x, d_eff - int(old.bias_channel), "x")
    if (x.shape[0], x.shape[1]) != (old.n_steps_total, old.n_samples):
        raise ValueError(
            f"x must be the dictionary's data, (T, n) = ({old.n_steps_total}, "
            f"{old.n_samples}); got {tuple(x.shape[:2])}"
        )
    ones_kept = bool(old.n_rows) and bool(old.atoms.all(axis=0).any())
    if (drop_ones and ones_kept) or (not drop_ones and old.n_ones):
        raise ValueError(f"drop_ones={drop_ones} but the dictionary was built the other way")
    m_last, K_old, P = widths[-1], old.branches, old.n_atoms
    raw = last_layer_spikes(
        params,
        x,
        old.steps,
        beta=old.beta,
        bias_channel=old.bias_channel,
        chunk_rows=chunk_rows,
        device=device,
        max_bytes=max_bytes,
    )
    # the old atoms are distinct, non-zero (and not all-ones when those are dropped), and
    # every old raw column is zero, all-ones or equal to one of them: deduplicating them
    # beside the new columns gives the groups of the whole raw dictionary
    groups = dedup_columns(np.hstack([old.atoms, raw]), drop_ones=drop_ones)
    reps = groups.representatives
    if not np.array_equal(reps[:P], np.arange(P)):  # pragma: no cover - invariant
        raise AssertionError("the old atoms did not stay the first atoms")
    new_raw = K_old * m_last + reps[P:] - P  # raw column of each new atom's representative
    counts = np.diff(groups.member_ptr)
    atom_of = np.repeat(np.arange(len(reps)), counts)
    is_new = groups.members >= P
    old_raw = old.members[:, 0] * m_last + old.members[:, 1]
    atom_all = np.concatenate([np.repeat(np.arange(P), np.diff(old.member_ptr)), atom_of[is_new]])
    raw_all = np.concatenate([old_raw, K_old * m_last + groups.members[is_new] - P])
    order = np.lexsort((raw_all, atom_all))  # by atom, then by raw column
    members_raw = raw_all[order]
    member_ptr = np.zeros(len(reps) + 1, dtype=np.int64)
    np.cumsum(np.bincount(atom_all, minlength=len(reps)), out=member_ptr[1:])
    new_params = concat_params([old.params, _as64(params)])
    n_raw = old.n_atoms_raw + K_new * m_last
    n_zero, n_ones = old.n_zero + groups.n_zero, old.n_ones + groups.n_ones
    return SpikeDictionary(
        atoms=np.hstack([old.atoms, raw[:, reps[P:] - P]]),
        provenance=np.concatenate(
            [old.provenance, np.stack([new_raw // m_last, new_raw % m_last], axis=1)]
        ).astype(np.int64),
        member_ptr=member_ptr,
        members=np.stack([members_raw // m_last, members_raw % m_last], axis=1).astype(np.int64),
        n_atoms_raw=int(n_raw),
        n_zero=int(n_zero),
        n_ones=int(n_ones),
        n_duplicate=int(n_raw - n_zero - n_ones - len(reps)),
        steps=old.steps,
        n_samples=old.n_samples,
        n_steps_total=old.n_steps_total,
        params=new_params,
        beta=old.beta,
        bias_channel=old.bias_channel,
    )


def last_layer_spikes(
    params: HiddenParams,
    x: Tensor | np.ndarray,
    steps: Sequence[int],
    *,
    columns: np.ndarray | None = None,
    beta: float = 0.99,
    bias_channel: bool = True,
    chunk_rows: int | None = None,
    device: torch.device | str | None = None,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Last-layer spikes of witnesses at the supervised steps, step-major rows.

    Parameters
    ----------
    params : HiddenParams
    x : Tensor of shape (T, n, d)
    steps : sequence of int
    columns : ndarray of shape (Q, 2), optional
        ``(branch, neuron)`` of the wanted neurons; all ``K * m_last``
        (branch-major) when omitted. Only the branches named here are run.
    beta, bias_channel, chunk_rows, device, max_bytes
        As in :func:`build_dictionary`.

    Returns
    -------
    ndarray of shape (len(steps) * n, Q), dtype uint8
    """
    K, d_eff, widths = check_hidden_params(params)
    x = _check_x(x, d_eff - int(bias_channel), "x")
    T, n, _ = x.shape
    steps = _check_steps(steps, T)
    if columns is not None:
        columns = np.asarray(columns, dtype=np.int64).reshape(-1, 2)
        bad = (columns[:, 0] < 0) | (columns[:, 0] >= K) | (columns[:, 1] < 0)
        bad |= columns[:, 1] >= widths[-1]
        if bad.any():
            raise ValueError(
                f"columns must hold (branch, neuron) pairs with branch < {K} and neuron < "
                f"{widths[-1]}; got {columns[bad][0].tolist()}"
            )
        used = np.unique(columns[:, 0])
        params = _select_branches(params, used)
        remap = np.full(K, -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        columns = np.stack([remap[columns[:, 0]], columns[:, 1]], axis=1)
        K = len(used)
        if K == 0:  # no column asked for: nothing to run
            return np.zeros((len(steps) * n, 0), dtype=np.uint8)
    n_cols = K * widths[-1] if columns is None else len(columns)
    limit = _limit(max_bytes)
    chunk = _chunk_samples(chunk_rows, T, n, K, d_eff, widths, limit)
    estimate = _work_bytes(T, chunk, K, d_eff, widths) + len(steps) * n * n_cols
    distinct = repeated_samples(x)
    if distinct is not None:  # the distinct samples' copy and spikes, then the expansion
        estimate += distinct.take_bytes(x) + len(distinct.first) * len(steps) * n_cols
    if estimate > limit:
        raise DictionaryTooLarge(
            f"the spikes need about {_fmt(estimate)} but the limit is {_fmt(limit)}"
        )
    if distinct is None:
        return _spikes(params, x, steps, beta, bias_channel, chunk, device, columns)
    out = _spikes(params, distinct.take(x), steps, beta, bias_channel, chunk, device, columns)
    return _expand_rows(out, len(steps), distinct.inverse)


def _expand_rows(out: np.ndarray, S: int, inverse: np.ndarray) -> np.ndarray:
    """(S n_distinct, Q) step-major rows -> (S n, Q): sample i takes row inverse[i]."""
    n_distinct, Q = out.shape[0] // S, out.shape[1]
    full = out.reshape(S, n_distinct, Q)[:, inverse]
    return np.ascontiguousarray(full.reshape(S * len(inverse), Q))


def estimate_dictionary_bytes(
    T: int,
    n: int,
    S: int,
    K: int,
    d_eff: int,
    widths: Sequence[int],
    *,
    chunk_rows: int | None = None,
) -> int:
    """Bytes a dictionary build may hold at its peak.

    Parameters
    ----------
    T, n, S : int
        Steps of the data, samples, supervised steps.
    K, d_eff, widths
        Branches, first-layer input width, hidden widths.
    chunk_rows : int, optional
        Samples per forward chunk (all ``n`` when omitted).

    Returns
    -------
    int
        Raw spikes ``S n K m_last`` (uint8) + their column sums (8 per column)
        + the packed columns and the copies ``np.unique`` makes (3 x
        ``ceil(S n / 8) K m_last``) + the atoms (at most the raw size) + the
        float64 working memory of one forward chunk.
    """
    n_rows, n_raw = S * n, K * int(widths[-1])
    raw = n_rows * n_raw
    packed = -(-n_rows // 8) * n_raw
    chunk = n if chunk_rows is None else min(chunk_rows, n)
    return int(2 * raw + 3 * packed + 8 * n_raw + _work_bytes(T, chunk, K, d_eff, widths))


def available_memory() -> int | None:
    """Available RAM in bytes (``MemAvailable`` of /proc/meminfo, else sysconf), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


# --------------------------------------------------------------------------- #
# Internals
# --------------------------------------------------------------------------- #
def _net_for(
    params: HiddenParams,
    d_in: int,
    beta: float,
    bias_channel: bool,
    device: torch.device | str | None,
) -> ParallelLIFNet:
    """A float64 ParallelLIFNet with the witnesses written in (readout unused)."""
    widths = tuple(int(t.shape[1]) for t in params.thetas)
    config = NetConfig(
        d_in=d_in,
        widths=widths,
        branches=int(params.w_in.shape[0]),
        beta=beta,
        bias_channel=bias_channel,
        learn_theta=False,
    )
    net = ParallelLIFNet.from_hidden_params(config, params, device=device, dtype=torch.float64)
    net.requires_grad_(False)
    return net


def _spikes(
    params: HiddenParams,
    x: Tensor,
    steps: tuple[int, ...],
    beta: float,
    bias_channel: bool,
    chunk: int,
    device: torch.device | str | None,
    columns: np.ndarray | None,
    progress: bool = False,
) -> np.ndarray:
    """Run the kernel chunk by chunk; return (S n, Q) uint8 step-major rows."""
    from tqdm.auto import tqdm

    _, n, d = x.shape
    S = len(steps)
    net = _net_for(params, d, beta, bias_channel, device)
    K, m = net.config.branches, net.config.widths[-1]
    n_cols = K * m if columns is None else len(columns)
    out = np.empty((S, n, n_cols), dtype=np.uint8)
    step_idx = torch.as_tensor(steps, dtype=torch.long, device=net.device)
    if columns is not None:
        flat = torch.as_tensor(columns[:, 0] * m + columns[:, 1], device=net.device)
    workspace = ForwardWorkspace()  # one set of buffers for every chunk
    bar = tqdm(
        total=n,
        desc="dictionary",
        unit="sample",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    )
    with torch.no_grad(), bar:
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            xb = x[:, a:b].to(device=net.device, dtype=torch.float64)
            last = net.last_spikes(xb, workspace)  # (T, B, K, m)
            sel = last.index_select(0, step_idx).reshape(S, b - a, K * m)  # (S, B, K m)
            if columns is not None:
                sel = sel.index_select(2, flat)
            out[:, a:b] = sel.to(torch.uint8).cpu().numpy()
            bar.update(b - a)
    return out.reshape(S * n, n_cols)


class ColumnGroups(NamedTuple):
    """Distinct columns of a binary matrix, from :func:`dedup_columns`.

    Attributes
    ----------
    representatives : ndarray of shape (P,), int64
        Index of the first occurrence of each kept distinct column, increasing.
    member_ptr : ndarray of shape (P + 1,), int64
        Columns equal to kept column ``p`` are
        ``members[member_ptr[p]:member_ptr[p + 1]]``.
    members : ndarray of shape (n_members,), int64
        Column indices grouped by kept column, increasing within a group (so
        the representative comes first).
    n_zero, n_ones, n_duplicate : int
        Dropped all-zero columns, dropped all-ones columns, other dropped
        columns (equal to an earlier kept one).
    """

    representatives: np.ndarray
    member_ptr: np.ndarray
    members: np.ndarray
    n_zero: int
    n_ones: int
    n_duplicate: int


def dedup_columns(raw: np.ndarray, *, drop_ones: bool = False) -> ColumnGroups:
    """Group the equal columns of a 0/1 matrix; drop all-zero (and all-ones) ones.

    Parameters
    ----------
    raw : ndarray of shape (R, Q), dtype uint8, values in {0, 1}
    drop_ones : bool
        Also drop columns that are 1 in every row.

    Returns
    -------
    ColumnGroups

    Notes
    -----
    Columns are bit-packed (``np.packbits`` along rows) and ``np.unique``
    compares the packed columns as whole fixed-length byte strings, so two
    columns are grouped if and only if they are equal: there is no hash and
    no collision to guard against. Cost: one sort of Q keys of
    ``ceil(R / 8)`` bytes.
    """
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise ValueError(f"raw must be a 2-d uint8 array; got {raw.ndim}-d {raw.dtype}")
    n_rows, n_cols = raw.shape
    counts = raw.sum(axis=0, dtype=np.int64)  # (Q,)
    zero = counts == 0
    ones = (counts == n_rows) & (n_rows > 0) if drop_ones else np.zeros(n_cols, dtype=bool)
    packed = np.ascontiguousarray(np.packbits(raw, axis=0).T)  # (Q, ceil(R / 8))
    if packed.shape[1] == 0:
        packed = np.zeros((n_cols, 1), dtype=np.uint8)
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    group_ok = ~(zero[first] | ones[first])  # per distinct column
    reps = np.sort(first[group_ok]).astype(np.int64)  # first occurrences, in column order
    atom_of_group = np.full(len(first), -1, dtype=np.int64)
    atom_of_group[inverse[reps]] = np.arange(len(reps))
    atom_of_col = atom_of_group[inverse]  # (Q,), -1 for dropped groups
    kept_cols = np.flatnonzero(atom_of_col >= 0)
    members = kept_cols[np.argsort(atom_of_col[kept_cols], kind="stable")].astype(np.int64)
    member_ptr = np.zeros(len(reps) + 1, dtype=np.int64)
    np.cumsum(np.bincount(atom_of_col[kept_cols], minlength=len(reps)), out=member_ptr[1:])
    n_zero, n_ones = int(zero.sum()), int(ones.sum())
    return ColumnGroups(
        reps, member_ptr, members, n_zero, n_ones, int(n_cols - n_zero - n_ones - len(reps))
    )


def _dedup(
    raw: np.ndarray,
    params: HiddenParams,
    steps: tuple[int, ...],
    n: int,
    T: int,
    beta: float,
    bias_channel: bool,
    drop_ones: bool,
    inverse: np.ndarray | None = None,
) -> SpikeDictionary:
    """Deduplicate the columns of ``raw``; with ``inverse``, ``raw`` holds the distinct
    samples only (equal columns there are equal on every sample) and the atoms are
    expanded to all ``n`` samples."""
    n_raw = raw.shape[1]
    m_last = int(params.thetas[-1].shape[1])
    groups = dedup_columns(raw, drop_ones=drop_ones)
    reps = groups.representatives
    if reps.size == 0:
        raise ValueError(
            f"the spike dictionary is empty: all {n_raw} last-layer neurons are silent"
            + (" or always spiking" if groups.n_ones else "")
            + f" at the supervised steps {steps} on all {n} samples; use a larger sigma, "
            "scheme='calibrated' witnesses, wider layers or more branches"
        )
    members = np.stack([groups.members // m_last, groups.members % m_last], axis=1)
    provenance = np.stack([reps // m_last, reps % m_last], axis=1)
    atoms = np.ascontiguousarray(raw[:, reps])
    if inverse is not None:
        atoms = _expand_rows(atoms, len(steps), inverse)
    cpu = HiddenParams(
        params.w_in.detach().to("cpu", torch.float64).clone(),
        tuple(w.detach().to("cpu", torch.float64).clone() for w in params.w_hidden),
        tuple(t.detach().to("cpu", torch.float64).clone() for t in params.thetas),
    )
    return SpikeDictionary(
        atoms=atoms,
        provenance=provenance.astype(np.int64),
        member_ptr=groups.member_ptr,
        members=members.astype(np.int64),
        n_atoms_raw=int(n_raw),
        n_zero=groups.n_zero,
        n_ones=groups.n_ones,
        n_duplicate=groups.n_duplicate,
        steps=steps,
        n_samples=int(n),
        n_steps_total=int(T),
        params=cpu,
        beta=float(beta),
        bias_channel=bool(bias_channel),
    )


def _as64(params: HiddenParams) -> HiddenParams:
    """The witnesses detached, as float64 on the CPU (the tensors themselves when they
    already are)."""
    return HiddenParams(
        params.w_in.detach().to("cpu", torch.float64),
        tuple(w.detach().to("cpu", torch.float64) for w in params.w_hidden),
        tuple(t.detach().to("cpu", torch.float64) for t in params.thetas),
    )


def concat_params(parts: Sequence[HiddenParams]) -> HiddenParams:
    """Witnesses of all ``parts`` as one set of branches, in order."""
    parts = [p for p in parts if p.w_in.shape[0] > 0]
    return HiddenParams(
        torch.cat([p.w_in for p in parts]),
        tuple(torch.cat(ws) for ws in zip(*[p.w_hidden for p in parts], strict=True)),
        tuple(torch.cat(ts) for ts in zip(*[p.thetas for p in parts], strict=True)),
    )


def _select_branches(params: HiddenParams, branches: Sequence[int] | Tensor) -> HiddenParams:
    """The branches ``branches`` of ``params``, in that order."""
    idx = torch.as_tensor(branches, dtype=torch.long, device=params.w_in.device)
    return HiddenParams(
        params.w_in.index_select(0, idx),
        tuple(w.index_select(0, idx) for w in params.w_hidden),
        tuple(t.index_select(0, idx) for t in params.thetas),
    )


def _check_x(x: Tensor | np.ndarray, d_in: int, name: str) -> Tensor:
    if not isinstance(x, Tensor | np.ndarray):
        raise TypeError(f"{name} must be a Tensor of shape (T, n, d); got {type(x).__name__}")
    x = torch.as_tensor(x)
    if x.dim() != 3 or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] != d_in:
        raise ValueError(
            f"{name} must have shape (T, n, d) with T, n >= 1 and d = {d_in} (the witnesses' "
            f"input width); got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        x = x.to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _check_steps(steps: Sequence[int], T: int) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in steps)
    except TypeError:
        raise ValueError(f"steps must be a sequence of ints; got {steps!r}") from None
    if not out or list(out) != sorted(set(out)) or out[0] < 0 or out[-1] >= T:
        raise ValueError(
            f"steps must be non-empty increasing distinct indices in [0, {T}); got {out}"
        )
    return out


def _work_bytes(T: int, B: int, K: int, d_eff: int, widths: Sequence[int]) -> int:
    """Float64 working memory of one forward pass over B samples.

    The input with its constant channel, every layer's spikes (kept), and
    about three more tensors of the widest layer (currents, membrane,
    comparison) per step stacked over time.
    """
    per_sample = 8 * T * (d_eff + K * sum(widths) + 3 * K * max(widths))
    return int(B * per_sample)


def _limit(max_bytes: int | None) -> int:
    if max_bytes is not None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0; got {max_bytes}")
        return int(max_bytes)
    avail = available_memory()
    return int(DEFAULT_MEMORY_FRACTION * avail) if avail else 2**62


def _chunk_samples(
    chunk_rows: int | None,
    T: int,
    n: int,
    K: int,
    d_eff: int,
    widths: Sequence[int],
    limit: int,
) -> int:
    if chunk_rows is not None:
        return min(check_chunk(chunk_rows), n)
    per = max(_work_bytes(T, 1, K, d_eff, widths), 1)
    budget = min(DEFAULT_CHUNK_BYTES, max(limit // 4, 1))
    # The LIF recurrence is memory-bound: keep one (B, K, m) float64 step tensor near
    # CACHE_STEP_BYTES so the per-step elementwise work stays in cache (measured 1.7-2.7x
    # faster than chunks sized by the memory budget alone; benchmarks/bench_dictionary.py).
    cache = max(16, CACHE_STEP_BYTES // (8 * K * max(widths)))
    return max(1, min(n, budget // per, cache))


def _fmt(nbytes: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit} ({nbytes} bytes)"
    return f"{nbytes} bytes"
