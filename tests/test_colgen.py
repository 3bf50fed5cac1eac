"""Column generation: exact pricing reaches the enumerated optimum; bounds are valid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cvxsnn.colgen import (
    EnumeratedPricer,
    PricingContext,
    RandomSearch,
    SurrogateAscent,
    all_binary_patterns,
    column_generation,
    dual_direction,
    enumerate_patterns,
    enumerate_realizable_patterns,
    pattern_bounds,
)
from cvxsnn.dictionary import last_layer_spikes
from cvxsnn.network import ForwardWorkspace
from cvxsnn.reconstruct import reconstruct, verify_reconstruction
from cvxsnn.solver import rho_max, solve
from cvxsnn.solver.losses import make_loss
from cvxsnn.solver.penalties import make_penalty
from cvxsnn.witnesses import sample_witnesses


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _xor(T: int, n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    bits = torch.randint(0, 2, (T, n), generator=_gen(seed))
    x = torch.nn.functional.one_hot(bits, 2).to(torch.float64)  # (T, n, 2)
    y = (bits[0] ^ bits[-1]).numpy() * 2.0 - 1.0
    return x, y


def _context(x, y, steps, widths, rho, seed):
    """A pricing context at the dual point of a small dictionary's solve (l1, squared)."""
    from cvxsnn.dictionary import build_dictionary

    p0 = sample_witnesses(x.shape[2], widths, 2, generator=_gen(1))
    dic = build_dictionary(p0, x, steps)
    sol = solve(dic.atoms, y, rho)
    u0, _ = dual_direction(dic.atoms, y[:, None], sol.coef, make_loss("squared", 1, None, None))
    return PricingContext(
        x=x,
        steps=steps,
        widths=widths,
        beta=0.99,
        bias_channel=True,
        u0=u0,
        rho=rho,
        penalty=make_penalty("l1"),
        generator=_gen(seed),
        device=None,
        dtype=torch.float64,
    )


@pytest.fixture(scope="module")
def tiny():
    """n = 10 samples, T = 4, one hidden layer of width 2; every realizable pattern."""
    x, y = _xor(4, 10, seed=0)
    steps = (3,)
    pool = enumerate_realizable_patterns(x, steps, width=2)
    rho = 0.1 * rho_max(all_binary_patterns(10), y)
    return x, y, steps, pool, rho


def _cols(D: np.ndarray) -> set[bytes]:
    return {D[:, j].tobytes() for j in range(D.shape[1])}


def test_exact_enumeration_contains_every_sampled_pattern(tiny):
    x, _, steps, pool, _ = tiny
    sampled = enumerate_patterns(x, steps, (2,), samples=3000, generator=_gen(1))
    exact = _cols(pool.atoms)
    assert _cols(sampled.atoms) <= exact
    # dense sampling misses patterns that the exact search finds (30 of 41 here)
    assert len(exact) > sampled.n_atoms
    # the pool's witnesses realize the atoms under the one kernel, width 2 per branch
    assert pool.params.w_in.shape[2] == 2
    spikes = last_layer_spikes(pool.params, x, steps)
    assert exact <= _cols(spikes)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(2, 6), T=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_exact_enumeration_covers_random_witnesses(n, T, seed):
    """Any witness's pattern on random inputs is among the enumerated ones."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.integers(0, 2, size=(T, n, 2)).astype(np.float64))
    # identical input sequences make every neuron constant: nothing to enumerate (an empty
    # dictionary is refused with a ValueError, tested elsewhere)
    assume(len({x[:, i].numpy().tobytes() for i in range(n)}) > 1)
    pool = enumerate_realizable_patterns(x, (T - 1,), width=1)
    exact = _cols(pool.atoms)
    w = sample_witnesses(2, (8,), 16, sigma=2.0, generator=_gen(seed))
    got = last_layer_spikes(w, x, (T - 1,))
    nonconst = [j for j in range(got.shape[1]) if 0 < got[:, j].sum() < n]
    assert {got[:, j].tobytes() for j in nonconst} <= exact
    # the all-pattern lower bounds never exceed the global optimum over realizable patterns
    y = rng.normal(size=n)
    if pool.n_atoms and rho_max(pool.atoms, y) > 1e-9:
        rho = 0.3 * rho_max(pool.atoms, y)
        opt = solve(pool.atoms, y, rho, tol=1e-12)
        sub = pool.atoms[:, :1]
        fit = solve(sub, y, rho, tol=1e-12)
        b = pattern_bounds(sub, y, fit.coef, fit.intercept, rho)
        assert b.lower_bound <= opt.primal + 1e-10


def test_all_binary_patterns_are_distinct_and_complete():
    A = all_binary_patterns(4)
    assert A.shape == (4, 14)
    assert len({A[:, j].tobytes() for j in range(14)}) == 14
    assert A.sum(axis=0).min() >= 1 and A.sum(axis=0).max() <= 3


def _cg_on_tiny(tiny, pricer, rounds: int, seed: int):
    """Column generation from 2 random branches on the tiny instance (3 atoms a round)."""
    x, y, steps, _, rho = tiny
    p0 = sample_witnesses(2, (2,), 2, generator=_gen(2))
    return column_generation(
        p0,
        x,
        steps,
        y,
        rho,
        generator=_gen(seed),
        pricer=pricer,
        max_rounds=rounds,
        atoms_per_round=3,
        tol=1e-10,
    )


def test_exact_pricing_reaches_enumerated_optimum(tiny):
    _, y, _, pool, rho = tiny
    opt = solve(pool.atoms, y, rho, tol=1e-10)
    res = _cg_on_tiny(tiny, EnumeratedPricer(pool.params), rounds=30, seed=3)
    assert res.stop_reason == "no_violation"
    assert abs(res.solve.primal - opt.primal) <= 1e-8 * max(1.0, opt.primal) + opt.gap
    # every pool pattern was examined: optimality over dictionary + examined set
    assert res.examined_max_score <= rho * (1 + 1e-6)
    assert res.examined_gap <= 1e-8
    primals = [r.primal for r in res.rounds]
    assert all(b <= a + 1e-15 for a, b in itertools.pairwise(primals))
    assert res.bounds.lower_bound <= opt.primal + 1e-12


def test_heuristic_search_distance_to_enumerated_optimum(tiny):
    """The random search never sees the pool; report how far it ends from the exact optimum."""
    _, y, _, pool, rho = tiny
    opt = solve(pool.atoms, y, rho, tol=1e-10)
    res = _cg_on_tiny(tiny, RandomSearch(proposals=32), rounds=8, seed=4)
    start = res.rounds[0].primal
    assert res.solve.primal < start  # the search found violators on this instance
    # every pattern is in the pool, so the search cannot end below its optimum; measured
    # 1.4e-4 above it (0.07% of the initial distance)
    distance = res.solve.primal - opt.primal
    assert -1e-10 <= distance <= 0.05 * (start - opt.primal)
    assert res.bounds.lower_bound <= opt.primal + 1e-12


def test_surrogate_ascent_patterns_are_exact_and_cg_monotone(tiny):
    _, y, _, pool, rho = tiny
    opt = solve(pool.atoms, y, rho, tol=1e-10)
    ascent = SurrogateAscent(base=RandomSearch(proposals=16), starts=4, iters=10)
    res = _cg_on_tiny(tiny, ascent, rounds=6, seed=4)
    primals = [r.primal for r in res.rounds]
    assert all(b <= a + 1e-15 for a, b in itertools.pairwise(primals))
    assert primals[-1] < primals[0]
    assert res.solve.primal >= opt.primal - 1e-10  # never below the global optimum
    assert res.bounds.lower_bound <= opt.primal + 1e-12


@pytest.mark.parametrize("widths", [(3,), (4, 3), (4, 4, 3)])
@pytest.mark.parametrize("n", [30, 200])
def test_threshold_sweep_runs_only_the_last_layer_per_factor(widths, n):
    """ctx.swept equals running every scaled copy through the whole kernel (with n = 200
    at T = 5 most samples repeat, and the sweep runs the distinct ones only)."""
    from cvxsnn.colgen import _scale_last

    x, _ = _xor(5, n, seed=2)
    ctx = PricingContext(
        x=x,
        steps=(2, 4),
        widths=widths,
        beta=0.9,
        bias_channel=True,
        u0=np.zeros((2 * n, 1)),
        rho=1.0,
        penalty=make_penalty("l1"),
        generator=_gen(0),
        device=None,
        dtype=torch.float64,
    )
    params = sample_witnesses(2, widths, 5, generator=_gen(3))
    factors = (0.3, 1.0, 2.5)
    swept, pats = ctx.swept(params, factors)
    full = _scale_last(params, factors)
    assert all(torch.equal(a, b) for a, b in zip(swept.w_in, full.w_in, strict=True))
    assert np.array_equal(pats, ctx.spikes(full))
    assert pats.flags.f_contiguous  # each pattern contiguous, as the scoring reads them
    assert 0 < pats.mean() < 1
    run_x, distinct = ctx._distinct
    assert run_x.shape[1] == (n if distinct is None else len(distinct.first))
    if n == 200:  # at most 2^5 distinct sequences
        assert distinct is not None and len(distinct.first) <= 32


def test_surrogate_ascent_raises_scores_from_random_starts():
    """From random starts (no base search) the ascent's exact patterns score higher."""
    x, y = _xor(6, 200, seed=3)
    ctx = _context(x, y, (5,), (8, 8), 0.02, seed=9)
    asc = SurrogateAscent(base=None, starts=8, iters=40, check_every=40, scales=(1.0,))
    cand = asc(ctx)
    starts = sample_witnesses(2, (8, 8), 8, generator=_gen(9))  # same draw as the pricer's
    base = ctx.scores(ctx.spikes(starts))
    # every returned pattern is the kernel's pattern of its returned witness
    assert np.array_equal(cand.patterns, ctx.spikes(cand.params))
    assert np.sort(cand.scores)[-8:].mean() > np.sort(base)[-8:].mean()


@pytest.mark.parametrize("layers", ["last", "all"])
def test_surrogate_ascent_runs_repeated_sequences_once(monkeypatch, layers):
    """Merging repeated sequences (their residual rows summed) leaves the ascent's path.

    The reference runs every sample; the merged ascent runs each of the 64 distinct
    sequences once. Same objective and gradient up to rounding, so the same snapshots to
    rounding and the same exact patterns.
    """
    import cvxsnn.colgen as colgen

    x, y = _xor(6, 300, seed=5)
    x = x[:, torch.randperm(300, generator=_gen(2))]  # repeats not adjacent
    y = y[torch.randperm(300, generator=_gen(2)).numpy()]

    def run():
        ctx = _context(x, y, (5,), (8, 8), 0.02, seed=9)  # a fresh generator each run
        asc = SurrogateAscent(base=None, starts=4, iters=20, check_every=5, layers=layers)
        return asc(ctx)

    seen = []
    merge = colgen._merge_repeats

    def spy(xs, u):
        seen.append(merge(xs, u))
        return seen[-1]

    monkeypatch.setattr(colgen, "_merge_repeats", spy)
    merged = run()
    xs, us = seen[0]
    assert xs.shape[1] == 64 and us.shape == (1, 64, 1)
    u0_rows = _context(x, y, (5,), (8, 8), 0.02, seed=9).u0
    codes = (x.argmax(dim=2) * (2 ** torch.arange(6))[:, None]).sum(0).numpy()  # (n,)
    first = np.unique(codes, return_index=True)[1]
    for q, code in enumerate(codes[np.sort(first)]):  # distinct sequences in first-seen order
        assert torch.equal(xs[:, q], x[:, np.flatnonzero(codes == code)[0]])
        np.testing.assert_allclose(
            us[0, q], u0_rows[codes == code].sum(axis=0), rtol=1e-12, atol=1e-15
        )
    monkeypatch.setattr(colgen, "_merge_repeats", lambda xs, u: (xs, u))
    every = run()
    # every weight and threshold of every snapshot (nested sequences of tensors)
    torch.testing.assert_close(tuple(merged.params), tuple(every.params), rtol=1e-9, atol=1e-12)
    assert np.array_equal(merged.patterns, every.patterns)
    np.testing.assert_array_equal(merged.scores, every.scores)


def test_merge_repeats_leaves_distinct_sequences_alone():
    from cvxsnn.colgen import _merge_repeats

    x = torch.randn(4, 50, 3, generator=_gen(0), dtype=torch.float64)
    u = np.random.default_rng(0).standard_normal((2, 50, 3))
    xs, us = _merge_repeats(x, u)
    assert xs is x and us is u


def test_deep_cg_is_monotone_and_reconstruction_exact():
    x, y = _xor(6, 40, seed=5)
    steps = (5,)
    p0 = sample_witnesses(2, (4, 4), 2, generator=_gen(6))
    rho = 0.02
    res = column_generation(
        p0,
        x,
        steps,
        y,
        rho,
        generator=_gen(7),
        pricer=RandomSearch(proposals=16, local_rounds=1),
        max_rounds=4,
        atoms_per_round=4,
    )
    primals = [r.primal for r in res.rounds]
    assert len(primals) >= 2
    assert all(b <= a + 1e-15 for a, b in itertools.pairwise(primals))
    assert res.params.w_in.shape[0] >= 2
    s = res.solve
    net = reconstruct(
        res.params,
        res.dictionary,
        s.coef,
        s.intercept,
        out_layout=(1,),
        head_classes=(2,),
    )
    rep = verify_reconstruction(net, res.dictionary, x, steps, s.coef, s.intercept)
    assert rep.check().max_abs_error <= 1e-9
    assert sum(r.atoms_added for r in res.rounds) >= 1


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(3, 8),
    seed=st.integers(0, 10_000),
    frac=st.floats(0.02, 0.9),
    C=st.integers(1, 2),
)
def test_pattern_bounds_never_exceed_all_pattern_optimum(n, seed, frac, C):
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(n, C))
    full = all_binary_patterns(n)
    top = rho_max(full, Y)
    rho = max(frac * top, 1e-6)
    opt = solve(full, Y, rho, tol=1e-12, max_iter=500)
    D = full[:, rng.choice(full.shape[1], size=min(3, full.shape[1]), replace=False)]
    sub = solve(D, Y, rho, tol=1e-10)
    b = pattern_bounds(D, Y, sub.coef, sub.intercept, rho)
    lower_opt = opt.primal - opt.gap  # a certified lower end of the optimum
    assert b.rescaled_dual <= opt.primal + 1e-10
    assert b.relaxation is not None and b.relaxation <= opt.primal + 1e-10
    # the relaxation is the optimum over all patterns (up to bisection precision)
    assert b.relaxation >= lower_opt - 1e-7 * max(1.0, opt.primal)
    assert b.distance >= -1e-10
    bg = pattern_bounds(D, Y, sub.coef, sub.intercept, rho, penalty="group_l2")
    optg = solve(full, Y, rho, penalty="group_l2", tol=1e-10, max_iter=500)
    assert bg.rescaled_dual <= optg.primal + 1e-10


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 40),
    Q=st.integers(1, 30),
    C=st.integers(1, 3),
    block=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    penalty=st.sampled_from(["l1", "group_l2"]),
)
def test_pattern_scores_and_keys_do_not_depend_on_layout_or_block(n, Q, C, block, seed, penalty):
    """Scores are R°(d^T u0) of every column in either memory layout and any block size;
    with one output (a gemv, whose rounding depends on the layout) they are equal bit for
    bit across layouts. The byte keys are equal in both layouts and tell columns apart."""
    from cvxsnn.colgen import _hcat, _keys, _take_columns, pattern_scores

    rng = np.random.default_rng(seed)
    pats = (rng.random((n, Q)) < 0.4).astype(np.uint8)
    u0 = rng.normal(size=(n, C))
    pe = make_penalty(penalty)
    ref = pe.row_scores(pats.T.astype(np.float64) @ u0)
    row = pattern_scores(pats, u0, pe, block=block)
    col = pattern_scores(np.asfortranarray(pats), u0, pe, block=block)
    assert np.allclose(row, ref, rtol=1e-12, atol=1e-12)
    assert np.allclose(col, ref, rtol=1e-12, atol=1e-12)
    if C == 1:
        assert np.array_equal(row, col)
    ws = ForwardWorkspace()  # one buffer reused by calls of growing and shrinking size
    for cols in (pats[:, : max(1, Q // 2)], pats, pats[:, :1]):
        want = pattern_scores(np.asfortranarray(cols), u0, pe, block=block)
        got = pattern_scores(np.asfortranarray(cols), u0, pe, block=block, workspace=ws)
        assert np.array_equal(got, want)
    keys = _keys(pats)
    assert keys == _keys(np.asfortranarray(pats))
    assert len(set(keys)) == len(_cols(pats))
    parts = [np.asfortranarray(pats), pats[:, ::-1]]
    both = _hcat(parts)
    assert both.flags.f_contiguous and np.array_equal(both, np.hstack([pats, pats[:, ::-1]]))
    cols = rng.integers(0, 2 * Q, size=7)
    assert np.array_equal(_take_columns(parts, cols), both[:, cols])


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomSearch(proposals=5, scales=(0.5, 1.0), local_rounds=2, elite=3),
        lambda: RandomSearch(proposals=4, local_rounds=0),
        lambda: SurrogateAscent(base=RandomSearch(proposals=6, local_rounds=1), iters=7),
        lambda: SurrogateAscent(base=None, starts=3, iters=10, check_every=5, scales=(1.0,)),
    ],
)
@pytest.mark.parametrize("T", [5, 10])  # 40 samples: repeated sequences at T = 5, none at 10
@pytest.mark.parametrize("capacity", ["planned", "too small", "unknown"])
def test_pricer_candidates_counts_what_the_pricer_returns(make, T, capacity, monkeypatch):
    # the count is exact, and the search's sweeps written into one planned array give the
    # patterns and scores of the kernel run on the returned witnesses, as do fresh arrays
    import cvxsnn.colgen as colgen
    from cvxsnn.colgen import pricer_candidates

    x, y = _xor(T, 40, seed=4)
    widths = (6, 5)
    ctx = _context(x, y, (T - 1,), widths, 0.05, seed=3)
    pricer = make()
    count = pricer_candidates(pricer, widths[-1])
    if capacity != "planned":
        fake = None if capacity == "unknown" else count - 1
        monkeypatch.setattr(colgen, "pricer_candidates", lambda *a: fake)
    cand = pricer(ctx)
    assert count == cand.patterns.shape[1] == len(cand.scores)
    assert np.array_equal(cand.patterns, ctx.spikes(cand.params))
    # (each sweep is scored on its own: its blocks may sum in another order)
    np.testing.assert_allclose(cand.scores, ctx.scores(ctx.spikes(cand.params)), atol=1e-12)
    monkeypatch.undo()
    pool = EnumeratedPricer(sample_witnesses(2, widths, 2, generator=_gen(1)))
    assert pricer_candidates(pool, widths[-1]) == pool(ctx).patterns.shape[1]
    assert pricer_candidates(object(), widths[-1]) is None


def test_search_memory_estimate_and_the_examined_store(monkeypatch):
    import cvxsnn.colgen as colgen
    from cvxsnn.colgen import estimate_search_bytes

    est = estimate_search_bytes(1000, 300, max_examined=50, block=128)
    examined = 50 * 1000 + 50 * (125 + 100)  # patterns and their keys
    assert est == {
        "examined": examined,
        "candidates": 300_000,
        "scoring": 8 * 1000 * 128,
        "total": examined + 300_000 + 8 * 1000 * 128,
    }
    assert estimate_search_bytes(1000, None, max_examined=0)["scoring"] == 8 * 1000 * 4096
    with pytest.raises(ValueError, match="n_rows"):
        estimate_search_bytes(0, 10)
    # the store keeps copies, in order, across blocks; what it holds stays within the cap
    monkeypatch.setattr(colgen._ColumnStore, "BLOCK", 3)
    store = colgen._ColumnStore(4, cap=7)
    pats = np.asfortranarray(np.random.default_rng(0).integers(0, 2, (4, 9), dtype=np.uint8))
    for j in range(7):
        store.append(pats[:, j])
    pats[:] = 9  # the caller's array may change or be freed: the store has copies
    blocks = store.filled()
    assert [b.shape for b in blocks] == [(3, 4), (3, 4), (1, 4)]
    assert np.array_equal(
        np.concatenate(blocks),
        np.random.default_rng(0).integers(0, 2, (4, 9), dtype=np.uint8)[:, :7].T,
    )
    assert sum(b.nbytes for b in store.blocks) <= colgen._ColumnStore.max_bytes(4, 7)
    with pytest.raises(ValueError, match="at most 7"):
        store.append(pats[:, 7])


def test_bad_arguments():
    x, y = _xor(3, 6, seed=0)
    p0 = sample_witnesses(2, (2,), 1, generator=_gen(0))
    with pytest.raises(ValueError, match="atoms_per_round"):
        column_generation(p0, x, (2,), y, 0.1, generator=_gen(0), atoms_per_round=0)
    with pytest.raises(TypeError, match="generator"):
        column_generation(p0, x, (2,), y, 0.1, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="proposals"):
        RandomSearch(proposals=0)
    with pytest.raises(ValueError, match="n_rows"):
        all_binary_patterns(0)
    with pytest.raises(ValueError, match="iters"):
        SurrogateAscent(iters=0)
    with pytest.raises(ValueError, match="layers"):
        SurrogateAscent(layers="first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        enumerate_realizable_patterns(x, (3,))
    with pytest.raises(RuntimeError, match="max_nodes"):
        enumerate_realizable_patterns(x, (2,), max_nodes=3)
