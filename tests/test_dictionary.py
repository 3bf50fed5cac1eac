"""Spike dictionary: same kernel as the network, dedup, chunking, layout, memory limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import cvxsnn.network as network_module
from cvxsnn.dictionary import (
    DictionaryTooLarge,
    SpikeDictionary,
    build_dictionary,
    dedup_columns,
    distinct_samples,
    estimate_dictionary_bytes,
    extend_dictionary,
    last_layer_spikes,
)
from cvxsnn.network import HiddenParams, NetConfig, ParallelLIFNet
from cvxsnn.witnesses import sample_witnesses


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(T: int, n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(T, n, d, generator=_gen(seed), dtype=torch.float64) * 2


def _net_spikes(params: HiddenParams, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """Last-layer spikes (T, n, K, m) from an independently built ParallelLIFNet."""
    K, d_eff = params.w_in.shape[:2]
    widths = tuple(t.shape[1] for t in params.thetas)
    cfg = NetConfig(d_in=d_eff - int(bias), widths=widths, branches=K, bias_channel=bias)
    net = ParallelLIFNet(cfg, dtype=torch.float64)
    net.set_hidden_params(params)
    with torch.no_grad():
        return net.run_hidden(x).spikes[-1]


def _expand(D: SpikeDictionary) -> np.ndarray:
    """Raw (n_rows, K m) matrix rebuilt from atoms and members; dropped columns zero."""
    m = D.widths[-1]
    raw = np.zeros((D.n_rows, D.n_atoms_raw), dtype=np.uint8)
    for p in range(D.n_atoms):
        for k, j in D.neurons_of(p):
            raw[:, k * m + j] = D.atoms[:, p]
    return raw


# --------------------------------------------------------------------------- #
# The kernel is the network's
# --------------------------------------------------------------------------- #
@settings(max_examples=20, deadline=None)
@given(
    K=st.integers(1, 4),
    widths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    T=st.integers(1, 6),
    n=st.integers(1, 9),
    seed=st.integers(0, 10_000),
)
def test_dictionary_equals_network_spikes(K, widths, T, n, seed):
    p = sample_witnesses(3, widths, K, sigma=1.5, generator=_gen(seed))
    x = _data(T, n, 3, seed)
    steps = tuple(range(T))
    spikes = _net_spikes(p, x)  # (T, n, K, m)
    raw = spikes.reshape(T * n, -1).to(torch.uint8).numpy()  # step-major rows
    if not (raw.any(axis=0) & ~raw.all(axis=0)).any():
        with pytest.raises(ValueError, match="empty"):
            build_dictionary(p, x, steps)
        return
    D = build_dictionary(p, x, steps)
    expanded = _expand(D)
    ones = raw.all(axis=0)
    assert np.array_equal(expanded[:, ~ones], raw[:, ~ones])
    assert D.n_ones == int(ones.sum())
    assert np.array_equal(last_layer_spikes(p, x, steps), raw)


def test_build_goes_through_the_network_kernel(monkeypatch):
    """build_dictionary has no LIF code of its own: it runs ParallelLIFNet's lif_run."""
    calls = []
    original = network_module.lif_run

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(network_module, "lif_run", counting)
    p = sample_witnesses(2, (5, 4, 3), 2, sigma=2.0, generator=_gen(0))
    x = _data(4, 10, 2)
    D = build_dictionary(p, x, (3,), chunk_rows=4)
    assert len(calls) == 3 * 3  # 3 layers x 3 chunks (4 + 4 + 2 samples)
    assert [c[1] for c in calls[::3]] == [4, 4, 2]

    # A changed kernel changes the dictionary: there is no second implementation.
    def inverted(currents, theta, beta, surrogate, **kwargs):
        s, v, state = original(currents, theta, beta, surrogate, **kwargs)
        return 1.0 - s, v, state

    monkeypatch.setattr(network_module, "lif_run", inverted)
    flipped = last_layer_spikes(p, x, (3,))
    monkeypatch.setattr(network_module, "lif_run", original)
    assert not np.array_equal(flipped, last_layer_spikes(p, x, (3,)))
    assert D.n_atoms >= 1


# --------------------------------------------------------------------------- #
# Dedup
# --------------------------------------------------------------------------- #
@st.composite
def _binary_with_duplicates(draw):
    R = draw(st.integers(1, 20))
    base = draw(arrays(np.uint8, (R, draw(st.integers(1, 6))), elements=st.integers(0, 1)))
    picks = draw(st.lists(st.integers(0, base.shape[1] + 1), min_size=1, max_size=15))
    cols = [
        base[:, i] if i < base.shape[1] else np.full(R, i - base.shape[1], np.uint8) for i in picks
    ]  # repeated columns, plus all-zero and all-one columns
    return np.ascontiguousarray(np.stack(cols, axis=1))


@settings(max_examples=60, deadline=None)
@given(raw=_binary_with_duplicates(), drop_ones=st.booleans())
def test_dedup_keeps_exactly_the_distinct_nonzero_columns(raw, drop_ones):
    g = dedup_columns(raw, drop_ones=drop_ones)
    R, Q = raw.shape
    cols = [tuple(raw[:, q]) for q in range(Q)]
    dropped = {tuple([0] * R)} | ({tuple([1] * R)} if drop_ones else set())
    brute = {c for c in cols if c not in dropped}
    kept = [cols[q] for q in g.representatives]
    assert len(kept) == len(set(kept)) == len(brute)
    assert set(kept) == brute
    # each representative is the first occurrence; groups hold exactly the equal columns
    for p, q in enumerate(g.representatives):
        assert cols.index(cols[q]) == q
        members = g.members[g.member_ptr[p] : g.member_ptr[p + 1]]
        assert members[0] == q
        assert list(members) == [i for i in range(Q) if cols[i] == cols[q]]
    assert list(g.representatives) == sorted(g.representatives)
    assert g.n_zero == sum(c == tuple([0] * R) for c in cols)
    assert g.n_ones == (sum(c == tuple([1] * R) for c in cols) if drop_ones else 0)
    assert g.n_zero + g.n_ones + g.n_duplicate + len(kept) == Q


def test_dedup_with_long_columns_compares_every_bit():
    """Columns equal in all but the last of 1001 rows stay distinct (no collision)."""
    rng = np.random.default_rng(0)
    col = rng.integers(0, 2, 1001).astype(np.uint8)
    other = col.copy()
    other[-1] ^= 1
    g = dedup_columns(np.stack([col, other, col], axis=1))
    assert list(g.representatives) == [0, 1]
    assert g.n_duplicate == 1


def test_dictionary_counts_and_provenance():
    p = sample_witnesses(2, (6, 8), 3, sigma=1.0, generator=_gen(1))
    # plant duplicates: neurons (0, 1) and (2, 4) copy neuron (0, 0), which spikes sometimes
    w = p.w_hidden[0].clone()
    w[0, :, 0] = torch.linspace(-1.0, 1.5, 6, dtype=torch.float64)
    w[0, :, 1] = w[0, :, 0]
    w_in = p.w_in.clone()
    w_in[2] = w_in[0]
    w[2, :, 4] = w[0, :, 0]
    p = HiddenParams(w_in, (w,), p.thetas)
    x = _data(5, 30, 2)
    col = _net_spikes(p, x)[[2, 4], :, 0, 0].reshape(-1)
    assert 0 < int(col.sum()) < 60  # neuron (0, 0) is an atom
    D = build_dictionary(p, x, (2, 4))
    assert D.n_atoms_raw == 24
    assert D.n_atoms == D.n_atoms_raw - D.n_zero - D.n_ones - D.n_duplicate
    assert D.n_duplicate >= 2
    assert D.atoms.dtype == np.uint8 and D.provenance.dtype == np.int64
    assert D.atoms.shape == (2 * 30, D.n_atoms)
    assert D.multiplicity.sum() == D.n_atoms_raw - D.n_zero - D.n_ones
    assert tuple(D.provenance[0]) == (0, 0)
    assert np.array_equal(D.atoms[:, 0], col.to(torch.uint8).numpy())
    assert {tuple(r) for r in D.neurons_of(0)} >= {(0, 0), (0, 1), (2, 4)}
    assert tuple(D.neurons_of(0)[0]) == (0, 0)  # representative first
    assert np.array_equal(D.raw_columns, D.provenance[:, 0] * 8 + D.provenance[:, 1])
    packed = D.packed()
    assert packed.shape == (-(-D.n_rows // 8), D.n_atoms)
    assert np.array_equal(np.unpackbits(packed, axis=0, count=D.n_rows), D.atoms)


def test_drop_ones_option():
    p = sample_witnesses(1, (3,), 1, generator=_gen(0), bias_channel=True)
    w = p.w_in.clone()
    w[0, :, 0] = torch.tensor([0.0, 5.0])  # bias 5 > theta: spikes at every step
    w[0, :, 1] = torch.tensor([3.0, 0.0])  # spikes when x > 1/3
    w[0, :, 2] = torch.tensor([0.0, -1.0])  # never
    p = HiddenParams(w, (), p.thetas)
    x = torch.tensor([[[0.0], [1.0], [0.5], [0.1]]], dtype=torch.float64)  # (1, 4, 1)
    D = build_dictionary(p, x, (0,))
    assert (D.n_zero, D.n_ones, D.n_atoms) == (1, 1, 1)
    assert D.atoms[:, 0].tolist() == [0, 1, 1, 0]
    D2 = build_dictionary(p, x, (0,), drop_ones=False)
    assert (D2.n_zero, D2.n_ones, D2.n_atoms) == (1, 0, 2)
    assert D2.atoms[:, 0].tolist() == [1, 1, 1, 1]


# --------------------------------------------------------------------------- #
# Chunking, row layout, transform
# --------------------------------------------------------------------------- #
def test_chunking_gives_the_identical_dictionary():
    p = sample_witnesses(3, (7, 9), 4, sigma=1.3, generator=_gen(2))
    x = _data(5, 23, 3, seed=2)
    ref = build_dictionary(p, x, (1, 4))
    for chunk in (1, 4, 22, 23, 100):
        D = build_dictionary(p, x, (1, 4), chunk_rows=chunk)
        assert np.array_equal(D.atoms, ref.atoms)
        assert np.array_equal(D.provenance, ref.provenance)
        assert np.array_equal(D.members, ref.members)
        assert (D.n_zero, D.n_duplicate, D.n_ones) == (ref.n_zero, ref.n_duplicate, ref.n_ones)


# --------------------------------------------------------------------------- #
# Repeated samples run once
# --------------------------------------------------------------------------- #
@settings(max_examples=30, deadline=None)
@given(
    n_distinct=st.integers(1, 6),
    picks=st.lists(st.integers(0, 5), min_size=1, max_size=25),
    T=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_repeated_samples_give_the_dictionary_of_a_run_over_every_sample(
    n_distinct, picks, T, seed
):
    """Building on the distinct samples and copying rows equals running every sample."""
    base = _data(T, n_distinct, 2, seed)
    x = base[:, [i % n_distinct for i in picks]]  # (T, n, 2) with repeated samples
    steps = tuple(range(T))
    p = sample_witnesses(2, (4, 3), 3, sigma=1.5, generator=_gen(seed))
    raw = _net_spikes(p, x).reshape(T * x.shape[1], -1).to(torch.uint8).numpy()
    assert np.array_equal(last_layer_spikes(p, x, steps), raw)
    if not (raw.any(axis=0) & ~raw.all(axis=0)).any():
        with pytest.raises(ValueError, match="empty"):
            build_dictionary(p, x, steps)
        return
    D = build_dictionary(p, x, steps)
    groups = dedup_columns(raw, drop_ones=True)  # the dedup of the full raw matrix
    assert np.array_equal(D.atoms, raw[:, groups.representatives])
    m = D.widths[-1]
    assert np.array_equal(D.raw_columns, groups.representatives)
    assert np.array_equal(D.members[:, 0] * m + D.members[:, 1], groups.members)
    assert np.array_equal(D.member_ptr, groups.member_ptr)
    assert (D.n_zero, D.n_ones, D.n_duplicate) == (groups.n_zero, groups.n_ones, groups.n_duplicate)
    assert D.n_samples == x.shape[1] and D.n_rows == T * x.shape[1]
    assert np.array_equal(D.transform(x), D.atoms)


@settings(max_examples=25, deadline=None)
@given(
    K_old=st.integers(1, 4),
    K_new=st.integers(1, 4),
    copies=st.integers(0, 2),
    widths=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    repeats=st.booleans(),
    drop_ones=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_extend_dictionary_equals_a_build_of_all_branches(
    K_old, K_new, copies, widths, repeats, drop_ones, seed
):
    """Extending by new branches gives the dictionary of a build over old + new branches:
    the same atoms in the same order, representatives, members and counts. New branches
    include copies of old ones (every column a duplicate) and silenced ones (zeros)."""
    from cvxsnn.dictionary import _select_branches as _select
    from cvxsnn.dictionary import concat_params

    T, n = 4, 12
    x = _data(T, 4 if repeats else n, 2, seed)
    if repeats:
        x = x[:, torch.arange(n) % 4]
    steps = (1, 3)
    old_p = sample_witnesses(2, tuple(widths), K_old, sigma=1.5, generator=_gen(seed))
    new_p = sample_witnesses(2, tuple(widths), K_new, sigma=1.5, generator=_gen(seed + 1))
    parts = [new_p, *([_select(old_p, list(range(K_old)))] * copies)]
    silent = _select(new_p, [0])
    if silent.w_hidden:
        silent = HiddenParams(
            silent.w_in, (*silent.w_hidden[:-1], silent.w_hidden[-1] * 0), silent.thetas
        )
    else:
        silent = HiddenParams(silent.w_in * 0, (), silent.thetas)
    add = concat_params([*parts, silent])
    try:
        old = build_dictionary(old_p, x, steps, drop_ones=drop_ones)
    except ValueError:
        return  # an empty starting dictionary
    got = extend_dictionary(old, add, x, drop_ones=drop_ones)
    want = build_dictionary(concat_params([old_p, add]), x, steps, drop_ones=drop_ones)
    for name in ("atoms", "provenance", "member_ptr", "members"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    for name in ("n_atoms_raw", "n_zero", "n_ones", "n_duplicate", "steps", "n_samples"):
        assert getattr(got, name) == getattr(want, name), name
    g, w = got.params, want.params
    tensors = zip((g.w_in, *g.w_hidden, *g.thetas), (w.w_in, *w.w_hidden, *w.thetas), strict=True)
    assert all(torch.equal(u, v) for u, v in tensors)
    P = old.n_atoms
    assert np.array_equal(got.transform(x, atoms=slice(P, None)), got.atoms[:, P:])
    assert np.array_equal(got.transform(x, atoms=[P - 1, 0]), got.atoms[:, [P - 1, 0]])


def test_extend_dictionary_errors():
    x = _data(4, 10, 2)
    p = sample_witnesses(2, (4, 3), 3, sigma=1.5, generator=_gen(0))
    D = build_dictionary(p, x, (3,))
    with pytest.raises(ValueError, match="widths"):
        extend_dictionary(D, sample_witnesses(2, (4, 4), 1, generator=_gen(1)), x)
    with pytest.raises(ValueError, match="dictionary's data"):
        extend_dictionary(D, p, _data(4, 11, 2))
    assert D.n_ones > 0  # this fixture has an always-spiking neuron at step 3
    with pytest.raises(ValueError, match="drop_ones"):
        extend_dictionary(D, p, x, drop_ones=False)
    with pytest.raises(ValueError, match="drop_ones"):
        extend_dictionary(build_dictionary(p, x, (3,), drop_ones=False), p, x)
    with pytest.raises(TypeError, match="SpikeDictionary"):
        extend_dictionary(D.atoms, p, x)  # type: ignore[arg-type]


def test_build_runs_the_kernel_on_the_distinct_samples_only(monkeypatch):
    from cvxsnn.samples import repeated_samples

    calls = []
    original = network_module.lif_run

    def counting(*args, **kwargs):
        calls.append(args[0].shape[1])  # samples in this call
        return original(*args, **kwargs)

    p = sample_witnesses(2, (5, 4), 3, sigma=1.5, generator=_gen(1))
    x = _data(4, 5, 2, seed=1)[:, [0, 1, 0, 2, 3, 4, 1, 0, 2, 2]]  # 10 samples, 5 distinct
    assert repeated_samples(x) is not None
    monkeypatch.setattr(network_module, "lif_run", counting)
    D = build_dictionary(p, x, (1, 3))
    assert sum(calls[::2]) == 5  # first layer of each chunk: 5 samples in all
    monkeypatch.setattr(network_module, "lif_run", original)
    raw = _net_spikes(p, x)[[1, 3]].reshape(2 * 10, -1).to(torch.uint8).numpy()
    assert np.array_equal(D.atoms, raw[:, D.raw_columns])
    # few repeats: the whole batch runs (no copy of the distinct samples)
    y = _data(4, 20, 2, seed=2)
    y[:, 19] = y[:, 0]
    assert distinct_samples(y) is not None and repeated_samples(y) is None


def test_distinct_samples():
    x = _data(3, 5, 2)
    assert distinct_samples(x) is None  # all distinct
    y = x[:, [2, 0, 2, 4, 0, 1, 2]]
    first, inverse = distinct_samples(y)
    assert first.tolist() == [0, 1, 3, 5]  # first occurrences, increasing
    assert inverse.tolist() == [0, 1, 0, 2, 1, 3, 0]
    assert torch.equal(y[:, first[inverse]], y)
    # Equal fingerprints are not enough: only byte-equal samples merge.
    z = torch.zeros(2, 3, 1, dtype=torch.float64)
    z[1, 1, 0] = -0.0
    z[0, 2, 0] = 1e-300
    assert distinct_samples(z) is None
    # A sample differing in one step only is kept apart.
    w = x[:, [0, 0, 0]].clone()
    w[2, 1, 1] += 2**-40
    first, inverse = distinct_samples(w)
    assert first.tolist() == [0, 1] and inverse.tolist() == [0, 1, 0]
    assert distinct_samples(x[:, :1]) is None


def test_rows_are_step_major():
    p = sample_witnesses(2, (6,), 3, sigma=1.5, generator=_gen(3))
    T, n = 7, 11
    x = _data(T, n, 2, seed=3)
    steps = (0, 2, 6)
    D = build_dictionary(p, x, steps, drop_ones=False)
    assert D.row_layout == "step-major"
    spikes = _net_spikes(p, x)  # (T, n, K, m)
    for s, t in enumerate(steps):
        for i in range(n):
            r = s * n + i
            for a, (k, j) in enumerate(D.provenance):
                assert D.atoms[r, a] == int(spikes[t, i, k, j])
    assert np.array_equal(D.atoms.reshape(3, n, -1)[1], spikes[2].reshape(n, -1)[:, D.raw_columns])


def test_transform():
    p = sample_witnesses(2, (5, 6), 4, sigma=1.5, generator=_gen(4))
    x = _data(6, 20, 2, seed=4)
    D = build_dictionary(p, x, (3, 5))
    assert np.array_equal(D.transform(x), D.atoms)
    assert np.array_equal(D.transform(x, chunk_rows=3), D.atoms)
    x_new = _data(9, 13, 2, seed=5)  # longer sequences, other samples
    got = D.transform(x_new, steps=(8,))
    spikes = _net_spikes(p, x_new)[8]  # (n, K, m)
    ref = spikes[:, D.provenance[:, 0], D.provenance[:, 1]].to(torch.uint8).numpy()
    assert got.shape == (13, D.n_atoms) and got.dtype == np.uint8
    assert np.array_equal(got, ref)
    with pytest.raises(ValueError, match="steps"):
        D.transform(_data(3, 4, 2))  # steps (3, 5) out of range for T = 3


def test_float32_witnesses_and_global_rng():
    p = sample_witnesses(2, (5,), 2, generator=_gen(6), dtype=torch.float32)
    x = _data(4, 10, 2).float()
    state = torch.get_rng_state()
    D = build_dictionary(p, x, (3,))
    assert torch.equal(state, torch.get_rng_state())
    assert D.params.w_in.dtype == torch.float64
    assert torch.equal(D.params.w_in, p.w_in.double())


# --------------------------------------------------------------------------- #
# Memory limit and errors
# --------------------------------------------------------------------------- #
def test_too_large_raises_before_computing(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("no forward pass may run when the dictionary does not fit")

    monkeypatch.setattr(ParallelLIFNet, "run_hidden", forbidden)
    p = sample_witnesses(2, (8, 16), 4, generator=_gen(0))
    x = _data(5, 100, 2)
    est = estimate_dictionary_bytes(5, 100, 2, 4, 3, (8, 16), chunk_rows=1)
    with pytest.raises(DictionaryTooLarge, match=rf"needs about .*\({est} bytes\).*limit is 1000"):
        build_dictionary(p, x, (2, 4), max_bytes=1000, chunk_rows=1)
    with pytest.raises(MemoryError):
        build_dictionary(p, x, (2, 4), max_bytes=1000)
    with pytest.raises(DictionaryTooLarge):
        last_layer_spikes(p, x, (2, 4), max_bytes=1000)


def test_estimate_closed_form():
    # rows 2 * 100 = 200, raw columns 4 * 16 = 64, packed rows 25
    work = 8 * 5 * (3 + 4 * (8 + 16) + 3 * 4 * 16) * 10
    expected = 2 * 200 * 64 + 3 * 25 * 64 + 8 * 64 + work
    assert estimate_dictionary_bytes(5, 100, 2, 4, 3, (8, 16), chunk_rows=10) == expected


def test_errors():
    p = sample_witnesses(2, (4,), 2, generator=_gen(0))
    x = _data(4, 5, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(T, n, d\).*d = 2.*\(4, 5\)"):
        build_dictionary(p, x[..., 0], (3,))
    with pytest.raises(ValueError, match=r"d = 2.*\(4, 5, 3\)"):
        build_dictionary(p, _data(4, 5, 3), (3,))
    bad = x.clone()
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        build_dictionary(p, bad, (3,))
    with pytest.raises(ValueError, match=r"steps must be non-empty increasing"):
        build_dictionary(p, x, (3, 1))
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        build_dictionary(p, x, (4,))
    with pytest.raises(ValueError, match="chunk_rows"):
        build_dictionary(p, x, (3,), chunk_rows=0)
    silent = HiddenParams(torch.zeros_like(p.w_in), (), p.thetas)
    with pytest.raises(ValueError, match=r"dictionary is empty.*calibrated"):
        build_dictionary(silent, x, (3,))
