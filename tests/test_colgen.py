"""Column generation: exact pricing reaches the enumerated optimum; bounds are valid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cvxsnn.colgen import (
    EnumeratedPricer,
    RandomSearch,
    all_binary_patterns,
    column_generation,
    enumerate_patterns,
    pattern_bounds,
)
from cvxsnn.reconstruct import reconstruct, verify_reconstruction
from cvxsnn.solver import rho_max, solve
from cvxsnn.witnesses import sample_witnesses


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _xor(T: int, n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    bits = torch.randint(0, 2, (T, n), generator=_gen(seed))
    x = torch.nn.functional.one_hot(bits, 2).to(torch.float64)  # (T, n, 2)
    y = (bits[0] ^ bits[-1]).numpy() * 2.0 - 1.0
    return x, y


@pytest.fixture(scope="module")
def tiny():
    """n = 10 samples, T = 4, one hidden layer of width 2; pool by dense sampling."""
    x, y = _xor(4, 10, seed=0)
    steps = (3,)
    pool = enumerate_patterns(x, steps, (2,), samples=3000, generator=_gen(1))
    rho = 0.1 * rho_max(all_binary_patterns(10), y)
    return x, y, steps, pool, rho


def test_all_binary_patterns_are_distinct_and_complete():
    A = all_binary_patterns(4)
    assert A.shape == (4, 14)
    assert len({A[:, j].tobytes() for j in range(14)}) == 14
    assert A.sum(axis=0).min() >= 1 and A.sum(axis=0).max() <= 3


def test_exact_pricing_reaches_enumerated_optimum(tiny):
    x, y, steps, pool, rho = tiny
    opt = solve(pool.atoms, y, rho, tol=1e-10)
    p0 = sample_witnesses(2, (2,), 2, generator=_gen(2))
    res = column_generation(
        p0,
        x,
        steps,
        y,
        rho,
        generator=_gen(3),
        pricer=EnumeratedPricer(pool.params),
        max_rounds=30,
        atoms_per_round=3,
        tol=1e-10,
    )
    assert res.stop_reason == "no_violation"
    assert abs(res.solve.primal - opt.primal) <= 1e-8 * max(1.0, opt.primal) + opt.gap
    # every pool pattern was examined: optimality over dictionary + examined set
    assert res.examined_max_score <= rho * (1 + 1e-6)
    assert res.examined_gap <= 1e-8
    primals = [r.primal for r in res.rounds]
    assert all(b <= a + 1e-15 for a, b in itertools.pairwise(primals))
    assert res.bounds.lower_bound <= opt.primal + 1e-12


def test_heuristic_search_distance_to_enumerated_optimum(tiny):
    """The random search never sees the pool; report how far it ends from the pool optimum."""
    x, y, steps, pool, rho = tiny
    opt = solve(pool.atoms, y, rho, tol=1e-10)
    p0 = sample_witnesses(2, (2,), 2, generator=_gen(2))
    res = column_generation(
        p0,
        x,
        steps,
        y,
        rho,
        generator=_gen(4),
        pricer=RandomSearch(proposals=32),
        max_rounds=8,
        atoms_per_round=3,
        tol=1e-10,
    )
    start = res.rounds[0].primal
    assert res.solve.primal < start  # the search found violators on this instance
    # distance to the sampled optimum (can be < 0 only if the search found patterns the
    # pool missed); never below the all-patterns bound
    distance = res.solve.primal - opt.primal
    assert distance <= 0.05 * (start - opt.primal)
    assert res.solve.primal >= res.bounds.lower_bound - 1e-12


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
