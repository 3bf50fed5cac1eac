"""Tests of the certified convex solver (SPEC section 4)."""

from __future__ import annotations

import itertools
import time
import warnings

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, log_softmax, softmax, xlogy

from cvxsnn.solver import (
    STOP_RULE,
    ConvergenceWarning,
    duality_gap,
    reduce_support,
    rho_max,
    solve,
    solve_path,
)

PAIRS = [(lo, pe) for lo in ("squared", "logistic", "softmax") for pe in ("l1", "group_l2")]


def _problem(loss: str, n: int = 50, P: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    D = (rng.random((n, P)) < 0.4).astype(np.uint8)
    if loss == "squared":
        Y = np.stack(
            [D @ rng.standard_normal(P) * 0.3 + rng.standard_normal(n) for _ in range(2)], 1
        )
    elif loss == "logistic":
        Y = (rng.random((n, 2)) < expit(D @ rng.standard_normal((P, 2)) * 0.3)).astype(float)
    else:
        Y = np.eye(3)[(D @ rng.standard_normal(P) * 0.5 + rng.integers(0, 3, n)).astype(int) % 3]
    return D, Y


def _gap_independent(D, Y, W, b, rho, loss, penalty):
    """The duality gap written out plainly (one head, unit weights, free intercept)."""
    D = D.astype(float)
    n = D.shape[0]
    Z = D @ W + b
    # Optimal intercept for this W, then u0 = -dF/dZ with zero column sums.
    if loss == "squared":
        bo = (Y - D @ W).mean(axis=0)
        primal_loss = ((Y - Z) ** 2).sum() / (2 * n)
        u0 = (Y - (D @ W + bo)) / n
    elif loss == "logistic":
        bo = np.array(
            [_brent_intercept(lambda t, c=c: np.mean(expit(D @ W[:, c] + t)) - Y[:, c].mean())
             for c in range(Y.shape[1])]
        )  # fmt: skip
        primal_loss = (np.logaddexp(0, Z) - Y * Z).sum() / n
        u0 = (Y - expit(D @ W + bo)) / n
    else:
        from scipy.optimize import minimize

        f = lambda t: -(Y * log_softmax(D @ W + t, axis=1)).sum() / n  # noqa: E731
        jac = lambda t: (softmax(D @ W + t, axis=1) - Y).sum(axis=0) / n  # noqa: E731
        bo = minimize(f, b, jac=jac, method="BFGS", options={"gtol": 1e-15}).x
        primal_loss = -(Y * log_softmax(Z, axis=1)).sum() / n
        u0 = (Y - softmax(D @ W + bo, axis=1)) / n
    u0 = u0 - u0.mean(axis=0)
    G = D.T @ u0
    if penalty == "l1":
        R, dn = np.abs(W).sum(), np.abs(G).max()
    else:
        R, dn = np.linalg.norm(W, axis=1).sum(), np.linalg.norm(G, axis=1).max()
    u = u0 * min(1.0, rho / dn)
    if loss == "squared":
        dual = (u * Y).sum() - n * (u**2).sum() / 2
    else:
        p = Y - n * u
        ent = -xlogy(p, p)
        if loss == "logistic":
            ent = ent - xlogy(1 - p, 1 - p)
        dual = ent.sum() / n
    primal = primal_loss + rho * R
    return primal, primal - dual


def _brent_intercept(g):
    from scipy.optimize import brentq

    return brentq(g, -50, 50, xtol=1e-15)


def _cvxpy(D, Y, rho, loss, penalty):
    n, P = D.shape
    C = Y.shape[1]
    W, b = cp.Variable((P, C)), cp.Variable(C)
    Z = D.astype(float) @ W + np.ones((n, 1)) @ b[None, :]
    if loss == "squared":
        F = cp.sum_squares(Y - Z) / (2 * n)
    elif loss == "logistic":
        F = cp.sum(cp.logistic(Z) - cp.multiply(Y, Z)) / n
    else:
        F = (cp.sum(cp.log_sum_exp(Z, axis=1)) - cp.sum(cp.multiply(Y, Z))) / n
    R = cp.sum(cp.abs(W)) if penalty == "l1" else cp.sum(cp.norm(W, 2, axis=1))
    prob = cp.Problem(cp.Minimize(F + rho * R))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return prob.value, D @ W.value + b.value


@pytest.mark.parametrize(("loss", "penalty"), PAIRS)
def test_gap_recomputed_independently(loss, penalty):
    D, Y = _problem(loss)
    rho = 0.05 * rho_max(D, Y, loss, penalty)
    res = solve(D, Y, rho, loss=loss, penalty=penalty, tol=1e-9)
    assert res.converged and res.stop_rule == STOP_RULE
    primal, gap = _gap_independent(D, Y, res.coef, res.intercept, rho, loss, penalty)
    assert primal == pytest.approx(res.primal, rel=1e-12, abs=1e-13)
    assert gap == pytest.approx(res.gap, abs=1e-10)
    assert 0 <= res.gap <= 1e-9 * max(1, abs(res.primal))
    # A perturbed (suboptimal) point: the public certificate agrees with the plain formula.
    rng = np.random.default_rng(1)
    W2 = res.coef + 0.01 * rng.standard_normal(res.coef.shape)
    cert = duality_gap(D, Y, W2, res.intercept, rho, loss=loss, penalty=penalty)
    p2, g2 = _gap_independent(D, Y, W2, res.intercept, rho, loss, penalty)
    assert cert.primal == pytest.approx(p2, rel=1e-12)
    assert cert.gap == pytest.approx(g2, rel=1e-7, abs=1e-12)
    assert cert.gap > 1e-6


@pytest.mark.parametrize(("loss", "penalty"), PAIRS)
def test_matches_cvxpy_clarabel(loss, penalty):
    D, Y = _problem(loss, n=40, P=15, seed=2)
    rho = 0.05 * rho_max(D, Y, loss, penalty)
    res = solve(D, Y, rho, loss=loss, penalty=penalty, tol=1e-10)
    value, Z = _cvxpy(D, Y, rho, loss, penalty)
    assert res.primal == pytest.approx(value, rel=1e-6)
    Zs = D @ res.coef + res.intercept
    if loss == "softmax":  # predictions are defined up to a per-row constant
        Zs, Z = log_softmax(Zs, axis=1), log_softmax(Z, axis=1)
    np.testing.assert_allclose(Zs, Z, rtol=0, atol=1e-4 * max(1, np.abs(Z).max()))


def test_squared_l1_matches_sklearn():
    from sklearn.linear_model import Lasso

    rng = np.random.default_rng(3)
    D = (rng.random((300, 120)) < 0.5).astype(np.uint8)
    y = D @ (rng.standard_normal(120) * (rng.random(120) < 0.1)) + rng.standard_normal(300)
    rho = 0.02 * rho_max(D, y)
    res = solve(D, y, rho)
    sk = Lasso(alpha=rho, tol=1e-14, max_iter=200000).fit(D.astype(float), y)
    sk_val = duality_gap(D, y, sk.coef_, sk.intercept_, rho).primal
    assert res.primal == pytest.approx(sk_val, rel=1e-9)
    np.testing.assert_allclose(D @ res.coef[:, 0] + res.intercept[0], sk.predict(D), atol=1e-5)


def test_head_weights_and_heads():
    rng = np.random.default_rng(4)
    D = (rng.random((80, 30)) < 0.5).astype(np.uint8)
    lab_a, lab_b = rng.integers(0, 3, 80), rng.integers(0, 2, 80)
    Y = np.hstack([np.eye(3)[lab_a], np.eye(2)[lab_b]])
    for loss in ("squared", "softmax"):
        res = solve(D, Y, 0.01, loss=loss, heads=(3, 2), head_weights=(1.0, 0.3), tol=1e-9)
        assert res.converged
        # Weighted objective recomputed by hand.
        Z = D @ res.coef + res.intercept
        if loss == "squared":
            F = (((Y - Z) ** 2)[:, :3].sum() + 0.3 * ((Y - Z) ** 2)[:, 3:].sum()) / (2 * 80)
        else:
            F = (-(Y[:, :3] * log_softmax(Z[:, :3], axis=1)).sum()
                 - 0.3 * (Y[:, 3:] * log_softmax(Z[:, 3:], axis=1)).sum()) / 80  # fmt: skip
        assert res.primal == pytest.approx(F + 0.01 * np.abs(res.coef).sum(), rel=1e-12)


def test_rho_above_rho_max_gives_zero_and_zero_gap():
    D, Y = _problem("squared")
    rm = rho_max(D, Y)
    res = solve(D, Y, 1.01 * rm)
    assert not res.coef.any() and res.support.size == 0
    np.testing.assert_allclose(res.intercept, Y.mean(axis=0))
    assert res.gap == pytest.approx(0, abs=1e-15)
    # Just below rho_max something enters.
    assert solve(D, Y, 0.9 * rm).support.size > 0


def test_orthogonal_binary_columns_closed_form():
    # Disjoint 0/1 columns, no intercept: each coordinate is a soft-threshold.
    n, P = 12, 3
    D = np.zeros((n, P), dtype=np.uint8)
    for j in range(P):
        D[4 * j : 4 * j + 4, j] = 1
    y = np.repeat([3.0, -1.0, 0.2], 4) + np.tile([0.1, -0.1, 0.0, 0.0], 3)
    rho = 0.1
    res = solve(D, y, rho, fit_intercept=False, tol=1e-12)
    # Objective per column: (1/(2n)) ||y_j - w||^2 over 4 rows -> w = soft(mean_j, n rho / 4).
    means = y.reshape(P, 4).mean(axis=1)
    expect = np.sign(means) * np.maximum(np.abs(means) - n * rho / 4, 0)
    np.testing.assert_allclose(res.coef[:, 0], expect, atol=1e-12)


def test_non_convergence_warns():
    D, Y = _problem("logistic", n=80, P=40)
    with pytest.warns(ConvergenceWarning, match=r"gap = .*tol = 1.0e-12"):
        res = solve(D, Y, 1e-4, loss="logistic", tol=1e-12, max_iter=1)
    assert not res.converged


def test_path_warm_starts_and_decreasing():
    D, Y = _problem("squared")
    path = solve_path(D, Y, n_rhos=6, rho_min_ratio=1e-2)
    rhos = [r.rho for r in path]
    assert rhos == sorted(rhos, reverse=True) and len(path) == 6
    assert path[0].support.size == 0
    assert all(r.converged for r in path)
    assert path[-1].support.size >= path[1].support.size


def test_torch_device_matches_numpy():
    D, Y = _problem("squared")
    a = solve(D, Y, 0.01)
    b = solve(D, Y, 0.01, device="cpu")
    assert a.primal == pytest.approx(b.primal, rel=1e-12)


def _rank_ok_l1(D, W, b):
    n = D.shape[0]
    for c in range(W.shape[1]):
        S = np.flatnonzero(W[:, c])
        M = np.hstack([D[:, S].astype(float), np.ones((n, 1))])
        assert np.linalg.matrix_rank(M) == M.shape[1]


def test_reduce_support_on_dependent_dictionary():
    # Two splits of one set U: d1 + d2 = d3 + d4 = 1_U, so {d1..d4, 1} is dependent and,
    # with equal signs, moving along (1, 1, -1, -1) keeps both D w and ||w||_1.
    rng = np.random.default_rng(5)
    n = 40
    U = rng.random(n) < 0.6
    A, Cs = U & (rng.random(n) < 0.5), U & (rng.random(n) < 0.5)
    cols = [A, U & ~A, Cs, U & ~Cs, rng.random(n) < 0.5]
    D = np.stack(cols, 1).astype(np.uint8)
    W = np.array([[1.0], [0.7], [0.4], [1.2], [-0.5]])
    W2, b2 = reduce_support(D, W, np.array([0.3]))
    np.testing.assert_allclose(D @ W2 + b2, D @ W + 0.3, atol=1e-10)
    assert np.abs(W2).sum() == pytest.approx(np.abs(W).sum(), abs=1e-10)
    _rank_ok_l1(D, W2, b2)
    assert np.count_nonzero(W2) < np.count_nonzero(W)


# --------------------------------------------------------------------------- properties
@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(6, 30),
    P=st.integers(1, 25),
    frac=st.floats(0.01, 1.2),
    penalty=st.sampled_from(["l1", "group_l2"]),
)
def test_properties_squared(seed, n, P, frac, penalty):
    rng = np.random.default_rng(seed)
    D = (rng.random((n, P)) < 0.5).astype(np.uint8)
    Y = rng.standard_normal((n, 2))
    rm = rho_max(D, Y, penalty=penalty)
    # a rho_max at rounding level (constant columns: zero correlation with the centred
    # targets) is zero; the solver refuses a rho below the float64 resolution
    rho = frac * rm if rm > 1e-10 else 1.0
    tol = 1e-8
    res = solve(D, Y, rho, penalty=penalty, tol=tol)
    assert res.gap >= 0
    if res.converged:
        assert res.rel_gap <= tol
    W2, b2 = reduce_support(D, res.coef, res.intercept, penalty)
    np.testing.assert_allclose(D @ W2 + b2, D @ res.coef + res.intercept, atol=1e-9)
    if penalty == "l1":
        assert np.abs(W2).sum() == pytest.approx(np.abs(res.coef).sum(), abs=1e-9)
        _rank_ok_l1(D, W2, b2)
    else:
        R0, R1 = np.linalg.norm(res.coef, axis=1).sum(), np.linalg.norm(W2, axis=1).sum()
        assert R1 == pytest.approx(R0, abs=1e-7 * max(1, R0))
        S = np.flatnonzero(np.any(W2 != 0, axis=1))
        A = np.einsum("ij,jc->icj", D[:, S].astype(float), W2[S]).reshape(n * 2, S.size)
        M = np.hstack([A, np.kron(np.ones((n, 1)), np.eye(2))])
        assert np.linalg.matrix_rank(M) == M.shape[1]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(10, 120),
    k=st.integers(1, 12),
    planted=st.integers(0, 3),
    binary=st.booleans(),
)
def test_gram_full_rank_test_never_contradicts_the_svd(seed, n, k, planted, binary):
    # the Gram shortcut may only say "full rank" where the SVD finds no null vector; with
    # planted dependencies (a column equal to a sum of others) it must stay silent
    from cvxsnn.solver.support import _clearly_full_rank, _null_basis

    rng = np.random.default_rng(seed)
    M = (rng.random((n, k)) < 0.4).astype(float) if binary else rng.standard_normal((n, k))
    for _ in range(planted):
        i, j = rng.integers(0, M.shape[1], size=2)
        M = np.hstack([M, M[:, [i]] + (M[:, [j]] if i != j else 0)])
    if M.shape[0] <= 2 * M.shape[1]:
        return
    nullity = M.shape[1] - np.linalg.matrix_rank(M)
    if _clearly_full_rank(M):
        assert nullity == 0
    assert _null_basis(M).shape == (M.shape[1], nullity)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(10, 150),
    k=st.integers(1, 12),
    planted=st.integers(0, 3),
    ones=st.booleans(),
    block=st.integers(1, 64),
)
def test_blocked_rank_proof_matches_the_unblocked_test(seed, n, k, planted, ones, block):
    # support reduction proves [D_S, 1] independent from a Gram matrix accumulated over
    # row blocks, never forming [D_S, 1]: same verdict as the one-shot test, whatever the
    # block size, and never "full rank" where the SVD finds a null vector (planted
    # complements d' = 1 - d are dependent with the ones column, sums d + d' without it)
    from cvxsnn.solver import support

    rng = np.random.default_rng(seed)
    Dt = (rng.random((k, n)) < 0.4).astype(np.uint8)
    extra = []
    for _ in range(planted):
        i = int(rng.integers(0, k))
        extra.append(1 - Dt[i] if ones else Dt[i])  # a complement, or a duplicate
    Dt = np.vstack([Dt, *extra]) if extra else Dt
    S = rng.permutation(Dt.shape[0])
    M = Dt[S].T.astype(np.float64)
    if ones:
        M = np.hstack([M, np.ones((n, 1))])
    old = support._GRAM_BLOCK_ROWS
    support._GRAM_BLOCK_ROWS = block
    try:
        got = support._binary_support_full_rank(Dt, S, ones)
    finally:
        support._GRAM_BLOCK_ROWS = old
    want = M.shape[0] > 2 * M.shape[1] and support._clearly_full_rank(M, True)
    assert got == want
    if got:
        assert np.linalg.matrix_rank(M) == M.shape[1]


@pytest.mark.parametrize("dependent", [False, True])
def test_reduction_memory_estimate_bounds_the_traced_peak(dependent):
    """estimate_reduction_bytes bounds what reduce_support allocates (numpy, traced): the
    blocked rank proof when [D_S, 1] is independent, the factorization when it is not;
    the proof needs far less than the float64 [D_S, 1] it replaces."""
    import tracemalloc

    from cvxsnn.solver import estimate_reduction_bytes, prepare_dictionary

    rng = np.random.default_rng(3)
    n, P, k = 6000, 500, 400
    D = (rng.random((n, P)) < 0.3).astype(np.uint8)
    if dependent:
        D[:, 1] = 1 - D[:, 0]
    W = np.zeros((P, 1))
    W[:k, 0] = rng.uniform(0.5, 1.5, size=k)
    Dk = prepare_dictionary(D)  # the pipeline's wrapped dictionary, outside the trace
    proof, factor = estimate_reduction_bytes(n, k)
    tracemalloc.start()
    try:
        W2, b2 = reduce_support(Dk, W, np.zeros(1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.count_nonzero(W2) == (k - 1 if dependent else k)
    np.testing.assert_allclose(D @ W2 + b2, D @ W, atol=1e-9)
    assert peak <= (factor if dependent else proof)
    assert proof < 8 * n * (k + 1)  # below the float64 [D_S, 1] alone
    # group l2 builds the (n C, k + C) matrix of vec(d_j W_j^T) and the intercepts
    C, kg = 3, 150
    Wg = np.zeros((P, C))
    Wg[:kg] = rng.normal(size=(kg, C))
    tracemalloc.start()
    try:
        reduce_support(Dk, Wg, np.zeros(C), penalty="group_l2")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= estimate_reduction_bytes(n, kg, C, "group_l2")[1]
    with pytest.raises(ValueError, match="support must be >= 1"):
        estimate_reduction_bytes(n, 0)
    with pytest.raises(ValueError, match="penalty must be one of"):
        estimate_reduction_bytes(n, 5, penalty="l2")


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(4, 20), P=st.integers(2, 12))
def test_reduce_support_arbitrary_point(seed, n, P):
    rng = np.random.default_rng(seed)
    D = (rng.random((n, P)) < 0.5).astype(np.uint8)
    W = rng.standard_normal((P, 1)) * (rng.random((P, 1)) < 0.8)
    W2, b2 = reduce_support(D, W, np.zeros(1))
    np.testing.assert_allclose(D @ W2 + b2, D @ W, atol=1e-9)
    assert np.abs(W2).sum() <= np.abs(W).sum() + 1e-9  # never larger away from an optimum
    _rank_ok_l1(D, W2, b2)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), loss=st.sampled_from(["logistic", "softmax"]))
def test_gap_nonnegative_any_point(seed, loss):
    D, Y = _problem(loss, n=30, P=10, seed=seed % 7)
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((10, Y.shape[1])) * rng.random()
    cert = duality_gap(D, Y, W, None, 0.05, loss=loss)
    assert cert.gap >= 0 and cert.rel_gap == pytest.approx(cert.gap / max(1, abs(cert.primal)))


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(D=np.zeros((0, 3))), r"D must have at least one row"),
        (dict(D=np.zeros((5, 0))), r"D must have at least one row"),
        (dict(rho=0.0), r"rho must be a finite float > 0; got 0.0"),
        (dict(rho=float("nan")), r"rho must be a finite float > 0"),
        (dict(rho=-1), r"rho must be a finite float > 0; got -1"),
        (dict(Y=np.ones(4)), r"Y must have as many rows as D \(n = 5\); got Y with 4 rows"),
        (dict(Y=np.array([1, np.nan, 0, 1, 0.0])), r"Y must be finite"),
        (dict(D=np.full((5, 3), np.inf)), r"D must be finite"),
        (dict(loss="hinge"), r"loss must be one of \['squared', 'logistic', 'softmax'\]"),
        (dict(penalty="l2"), r"penalty must be one of \['l1', 'group_l2'\]"),
        (dict(heads=(2,)), r"heads must be positive column counts summing to .* C = 1"),
        (dict(loss="softmax"), r"heads for loss='softmax' must each have at least 2"),
        (dict(Y=np.array([0, 2, 1, 0, 1.0]), loss="logistic"), r"must lie in \[0, 1\]"),
        (dict(Y=np.ones(5), loss="logistic"), r"intercept .* is infinite"),
        (dict(head_weights=(1.0, 2.0)), r"head_weights must have one weight per head \(1\)"),
        (dict(tol=-1), r"tol must be a finite float > 0"),
    ],
)
def test_bad_input(kwargs, match):
    rng = np.random.default_rng(0)
    args = dict(D=(rng.random((5, 3)) < 0.5).astype(np.uint8), Y=np.array([0, 1, 1, 0, 1.0]))
    args["rho"] = 0.1
    args.update(kwargs)
    D, Y, rho = args.pop("D"), args.pop("Y"), args.pop("rho")
    with pytest.raises(ValueError, match=match):
        solve(D, Y, rho, **args)


# ------------------------------------------------------------------ active-set engine
def _lasso_objective(H, q, lam, x):
    return 0.5 * x @ H @ x - q @ x + lam * np.abs(x).sum()


def test_active_set_orthogonal_closed_form():
    # Orthogonal atoms: H diagonal, so x_j = soft(q_j, lam) / H_jj exactly.
    from cvxsnn.solver._active_set import lasso_active_set

    H = np.diag([4.0, 2.0, 1.0, 3.0])
    q = np.array([5.0, -0.5, -3.0, 1.0])
    x, ok = lasso_active_set(H, q, 1.5)
    expect = np.sign(q) * np.maximum(np.abs(q) - 1.5, 0) / np.diag(H)
    assert ok
    np.testing.assert_allclose(x, expect, rtol=0, atol=1e-15)


def test_active_set_two_atoms_closed_form():
    # H = [[1, r], [r, 1]], q = (a, a): symmetric solution x1 = x2 = (a - lam) / (1 + r).
    from cvxsnn.solver._active_set import lasso_active_set

    r, a, lam = 0.5, 2.0, 0.5
    x, ok = lasso_active_set(np.array([[1.0, r], [r, 1.0]]), np.array([a, a]), lam)
    assert ok
    np.testing.assert_allclose(x, [(a - lam) / (1 + r)] * 2, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(5, 40),
    P=st.integers(1, 30),
    frac=st.sampled_from([0.5, 0.1, 0.01, 0.001]),
    dependent=st.booleans(),
    warm=st.booleans(),
)
def test_active_set_kkt_and_independent_support(seed, n, P, frac, dependent, warm):
    # KKT conditions hold exactly (to rounding) and the support's Gram block is definite,
    # also for dictionaries with duplicated and summed (dependent) atoms and warm starts.
    from cvxsnn.solver._active_set import lasso_active_set

    rng = np.random.default_rng(seed)
    D = (rng.random((n, P)) < 0.5).astype(float)
    if dependent:
        i, j = rng.integers(P, size=2)
        D = np.hstack([D, D[:, :2], np.minimum(D[:, [i]] + D[:, [j]], 1)])
    Dc = D - D.mean(axis=0)
    y = rng.standard_normal(n)
    H, q = Dc.T @ Dc, Dc.T @ (y - y.mean())
    if np.abs(q).max() == 0:
        return
    lam = frac * np.abs(q).max()
    x0 = rng.standard_normal(q.size) * (rng.random(q.size) < 0.5) if warm else None
    x, ok = lasso_active_set(H, q, lam, x0)
    assert ok
    g = H @ x - q
    S = np.flatnonzero(x)
    scale = lam + np.abs(q).max()
    usable = np.diag(H) > 1e-9 * np.diag(H).max()
    assert np.all(np.abs(g[usable]) <= lam + 1e-9 * scale)
    np.testing.assert_allclose(g[S], -lam * np.sign(x[S]), atol=1e-9 * scale)
    if S.size:
        assert np.linalg.eigvalsh(H[np.ix_(S, S)]).min() > 1e-10 * np.trace(H)


def _real_like_dictionary(seed=0, n=600, n_distinct=24, P=80):
    """Few distinct rows (like FIRST-LAST-XOR at T = 6) and atoms that are sums of others."""
    rng = np.random.default_rng(seed)
    base = (rng.random((n_distinct, P // 2)) < 0.5).astype(np.uint8)
    a, b = rng.integers(0, P // 2, (2, P // 4))
    # d_a = (d_a AND NOT d_b) + (d_a AND d_b): pairs of atoms summing to another atom.
    split = np.hstack([base[:, a] & (1 - base[:, b]), base[:, a] & base[:, b]])
    D_rows = np.hstack([base, split, base[:, :5]])  # + exact duplicates of columns
    D = D_rows[rng.integers(0, n_distinct, n)]
    y = np.where(D_rows[:, 0] ^ D_rows[:, 1], 1.0, -1.0)[rng.integers(0, n_distinct, n)]
    return D, y


@pytest.mark.parametrize("frac", [0.3, 0.05, 0.005])
def test_rank_deficient_real_like_dictionary_certifies(frac):
    # rank(D) <= 24 < P = 85: the support solve must still reach a tiny certified gap and
    # agree with scikit-learn's objective; the row-merged certificate equals the plain one.
    from sklearn.linear_model import Lasso

    D, y = _real_like_dictionary()
    assert np.linalg.matrix_rank(D.astype(float)) < D.shape[1]
    rho = frac * rho_max(D, y)
    res = solve(D, y, rho, tol=1e-10)
    assert res.converged and res.rel_gap <= 1e-10
    cert = duality_gap(D, y, res.coef, res.intercept, rho)
    assert cert.gap == pytest.approx(res.gap, abs=1e-13)
    sk = Lasso(alpha=rho, tol=1e-12, max_iter=500000).fit(D.astype(float), y)
    sk_val = duality_gap(D, y, sk.coef_, sk.intercept_, rho).primal
    assert res.primal <= sk_val + 1e-9
    # The support is independent (SPEC section 4: some optimum has one; we return one).
    _rank_ok_l1(D, res.coef, res.intercept)


def test_row_merging_is_exact():
    from cvxsnn.solver._rows import compress_rows
    from cvxsnn.solver.certificate import Dictionary

    D, _ = _real_like_dictionary(seed=3)
    Dk = Dictionary(D)
    rc = compress_rows(Dk)
    assert rc is not None and rc.n_u <= 24
    U = rc.U.Dt.T.astype(float)
    np.testing.assert_array_equal(U[rc.inv], D)
    assert rc.counts.sum() == D.shape[0]
    rng = np.random.default_rng(0)
    R, W = rng.standard_normal((D.shape[0], 2)), rng.standard_normal((D.shape[1], 2))
    np.testing.assert_allclose(rc.dtr(R), D.T.astype(float) @ R, atol=1e-11)
    np.testing.assert_allclose(rc.dw(W), D.astype(float) @ W, atol=1e-11)
    # Distinct rows: no merging.
    D2 = (rng.random((600, 40)) < 0.5).astype(np.uint8)
    assert compress_rows(Dictionary(D2)) is None


def _compress_rows_by_hash(Dk):
    """Row merging as the solver did it before the byte-string pass (hash groups, then an
    exact check): the reference for the distinct rows, their order and the maps."""
    from cvxsnn.solver._rows import _MIN_GAIN, _SAMPLE

    rng = np.random.default_rng(0)
    sample = rng.choice(Dk.n, _SAMPLE, replace=False)
    if np.unique(Dk.Dt[:, sample].T, axis=0).shape[0] == _SAMPLE:  # no repeat in the sample
        return None
    weights = rng.integers(1, 2**20, size=(Dk.P, 2)).astype(np.float64)
    h = Dk.dw(weights)
    _, first, inv, counts = np.unique(
        h, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inv = inv.reshape(-1)
    if first.size > _MIN_GAIN * Dk.n:
        return None
    dup = np.flatnonzero(first[inv] != np.arange(Dk.n))
    if dup.size and not np.array_equal(Dk.Dt[:, dup], Dk.Dt[:, first[inv[dup]]]):
        return None
    return Dk.Dt[:, first], inv, counts


@settings(max_examples=40, deadline=None)
@given(
    n_distinct=st.integers(1, 400),
    n=st.integers(512, 1500),
    P=st.integers(1, 90),
    density=st.floats(0.05, 0.95),
    seed=st.integers(0, 10_000),
)
def test_row_merging_equals_the_hash_grouping(n_distinct, n, P, density, seed):
    # The byte-string pass finds the same distinct rows, in the same order, with the same
    # maps and counts as hash grouping with an exact check (every later product sums over
    # the distinct rows in this order, so solves are unchanged bit for bit).
    from cvxsnn.solver._rows import compress_rows
    from cvxsnn.solver.certificate import Dictionary

    rng = np.random.default_rng(seed)
    pool = (rng.random((n_distinct, P)) < density).astype(np.uint8)
    D = pool[rng.integers(0, n_distinct, n)]
    Dk = Dictionary(D)
    got, want = compress_rows(Dk), _compress_rows_by_hash(Dk)
    assert (got is None) == (want is None)  # no repeat in the sample, or too many distinct
    if want is None:
        return
    Ut, inv, counts = want
    np.testing.assert_array_equal(got.U.Dt, Ut)
    np.testing.assert_array_equal(got.inv, inv)
    np.testing.assert_array_equal(got.counts, counts)
    np.testing.assert_array_equal(got.U.Dt.T[got.inv], D)


def test_path_matches_cold_solves_and_reuses_gram():
    D, y = _real_like_dictionary(seed=1)
    path = solve_path(D, y, n_rhos=5, rho_min_ratio=1e-2, tol=1e-9)
    for r in path:
        cold = solve(D, y, r.rho, tol=1e-9)
        assert r.converged and cold.converged
        assert r.primal == pytest.approx(cold.primal, rel=1e-8, abs=1e-12)


def test_multi_output_l1_matches_per_column_solves():
    D, Y = _problem("squared", n=60, P=40, seed=6)
    rho = 0.02 * rho_max(D, Y)
    res = solve(D, Y, rho, tol=1e-10)
    for c in range(Y.shape[1]):
        one = solve(D, Y[:, c], rho, tol=1e-10)
        # the program is separable over outputs for l1 with unit weights
        Zc = D @ res.coef[:, c] + res.intercept[c]
        np.testing.assert_allclose(Zc, D @ one.coef[:, 0] + one.intercept[0], atol=1e-6)


def test_group_newton_step_matches_dense_system():
    # The Woodbury solve of the group-l2 Newton system equals the dense (sC x sC) solve.
    from scipy.linalg import block_diag

    from cvxsnn.solver.engine import _group_newton_step

    rng = np.random.default_rng(7)
    s, C = 9, 5
    B = rng.standard_normal((s, s))
    A = B @ B.T + 0.1 * np.eye(s)
    lam = rng.random(s) + 0.1
    U = rng.standard_normal((s, C))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    G = rng.standard_normal((s, C))
    blocks = [lam[i] * (np.eye(C) - np.outer(U[i], U[i])) for i in range(s)]
    M = np.kron(A, np.eye(C)) + block_diag(*blocks)
    dense = np.linalg.solve(M, G.reshape(-1)).reshape(s, C)
    np.testing.assert_allclose(_group_newton_step(A, lam, U, G), dense, atol=1e-12)


def test_group_l2_multi_output_certifies_and_matches_cvxpy():
    D, Y = _problem("squared", n=60, P=30, seed=8)
    Y = np.hstack([Y, Y[:, :1] * 0.5 + 0.1])  # C = 3
    rho = 0.03 * rho_max(D, Y, penalty="group_l2")
    res = solve(D, Y, rho, penalty="group_l2", tol=1e-10)
    assert res.converged
    value, _ = _cvxpy(D, Y, rho, "squared", "group_l2")
    assert res.primal == pytest.approx(value, rel=1e-7)


def test_rho_below_float64_resolution_is_refused():
    """A rho under the rounding level of D^T u cannot be certified: clear error, no hang."""
    rng = np.random.default_rng(0)
    D = np.stack([np.ones(24), np.zeros(24)], 1).astype(np.uint8)
    Y = rng.choice([-1.0, 1.0], size=(24, 1))
    with pytest.raises(ValueError, match="below the float64 resolution of the dual constraint"):
        solve(D, Y, 1e-18)


def test_gram_cache_entries_exact_through_growth_and_trimming(monkeypatch):
    """The cache returns D_ws^T D_ws exactly, in working-set order, while it grows in
    insertion order and while it is trimmed to the working set (a small cap forces it)."""
    from cvxsnn.solver import engine
    from cvxsnn.solver.certificate import prepare_dictionary

    monkeypatch.setattr(engine, "_GRAM_CACHE_ATOMS", 12)
    rng = np.random.default_rng(3)
    D = (rng.random((40, 30)) < 0.4).astype(np.uint8)
    cache = engine._GramCache(prepare_dictionary(D))
    for size in (5, 9, 3, 14, 20, 7, 30):
        ws = np.sort(rng.choice(30, size=size, replace=False))
        Dw = D[:, ws].astype(np.float64)
        np.testing.assert_array_equal(cache.raw(ws), Dw.T @ Dw)


def test_solve_memory_estimate_bounds_the_traced_peak():
    """estimate_solve_bytes (working sets up to P) bounds what a solve allocates (numpy
    allocations, traced), and it refuses sizes below 1."""
    import tracemalloc

    from cvxsnn.solver import estimate_solve_bytes

    rng = np.random.default_rng(0)
    n, P = 3000, 900
    D = (rng.random((n, P)) < 0.3).astype(np.uint8)
    W = np.zeros(P)
    W[rng.choice(P, 60, replace=False)] = rng.normal(size=60)
    y = D @ W + 0.1 * rng.normal(size=n)
    rho = 0.01 * rho_max(D, y)
    tracemalloc.start()
    try:
        res = solve(D, y, rho)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.converged
    assert peak <= estimate_solve_bytes(n, P, 1)
    assert estimate_solve_bytes(n, P, 1, 100) < estimate_solve_bytes(n, P, 1)
    with pytest.raises(ValueError, match="P must be >= 1"):
        estimate_solve_bytes(n, 0)


def test_packed_rows_in_blocks_equal_one_pass():
    from cvxsnn.solver._rows import _packed_rows

    rng = np.random.default_rng(0)
    Dt = (rng.random((37, 1001)) < 0.5).astype(np.uint8)  # P = 37 atoms, n = 1001 rows
    whole = np.packbits(Dt.T, axis=1)
    for block_bytes in (1, 37, 100, 37 * 1001, 1 << 26):
        np.testing.assert_array_equal(_packed_rows(Dt, block_bytes), whole)


# ------------------------------------------------------- logistic / softmax: proximal Newton
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 30),
    k=st.integers(1, 12),
    binary=st.booleans(),
    center=st.booleans(),
)
def test_lazy_gram_reads_as_the_dense_matrix(seed, n, k, binary, center):
    # Every indexing form the active set uses returns the entries of the dense
    # X^T diag(h) X (- s s^T / S), whatever order rows are first read in.
    from cvxsnn.solver._active_set import LazyGram

    rng = np.random.default_rng(seed)
    X = (rng.random((n, k)) < 0.5).astype(float) if binary else rng.standard_normal((n, k))
    h = rng.random(n) * (rng.random(n) < 0.8)
    M = X.T @ (X * h[:, None])
    if center and h.sum() > 0:
        s = X.T @ h
        M -= np.outer(s, s) / h.sum()
    H = LazyGram(X, h, center=center, binary=binary)
    tol = dict(rtol=1e-12, atol=1e-12 * max(1.0, np.abs(M).max()))
    A = rng.permutation(k)[: rng.integers(1, k + 1)].tolist()
    js = rng.integers(0, k, size=rng.integers(1, 4)).tolist()
    j = int(rng.integers(k))
    np.testing.assert_allclose(H.diagonal(), np.diag(M), **tol)
    np.testing.assert_allclose(H[np.ix_(A, js)], M[np.ix_(A, js)], **tol)
    np.testing.assert_allclose(H[A, j], M[A, j], **tol)
    np.testing.assert_allclose(H[j, j], M[j, j], **tol)
    np.testing.assert_allclose(H[js, js], M[js, js], **tol)
    np.testing.assert_allclose(H[A], M[A], **tol)
    assert H.shape == M.shape


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), frac=st.sampled_from([0.3, 0.05, 0.005]))
def test_active_set_on_lazy_gram_equals_dense(seed, frac):
    from cvxsnn.solver._active_set import LazyGram, lasso_active_set

    rng = np.random.default_rng(seed)
    X = (rng.random((40, 25)) < 0.5).astype(float)
    h = rng.random(40)
    dense = LazyGram(X, h, center=True, binary=True).rows(np.arange(25))
    q = X.T @ (h * rng.standard_normal(40))
    lam = frac * np.abs(q).max()
    x_dense, ok_dense = lasso_active_set(dense, q, lam)
    x_lazy, ok_lazy = lasso_active_set(LazyGram(X, h, center=True, binary=True), q, lam)
    assert ok_dense and ok_lazy

    def f(x):
        return 0.5 * x @ dense @ x - q @ x + lam * np.abs(x).sum()

    assert f(x_lazy) == pytest.approx(f(x_dense), rel=1e-12, abs=1e-12 * abs(q).max())


@pytest.mark.parametrize("loss", ["logistic", "softmax"])
@pytest.mark.parametrize("frac", [0.2, 0.02])
def test_cross_entropy_on_merged_rows_equals_the_rows_as_given(loss, frac, monkeypatch):
    # 600 rows with 30 distinct dictionary rows (and differing targets within a group):
    # the proximal Newton engine merges them (targets averaged); the certified optimum equals
    # the one reached without merging and cvxpy's.
    from cvxsnn.solver import engine
    from cvxsnn.solver._rows import compress_rows
    from cvxsnn.solver.certificate import prepare_dictionary

    rng = np.random.default_rng(3)
    base = (rng.random((30, 24)) < 0.5).astype(np.uint8)
    D = base[rng.integers(0, 30, 600)]
    if loss == "logistic":
        Y = (rng.random((600, 1)) < expit(D @ rng.standard_normal((24, 1)) * 0.5)).astype(float)
    else:
        Y = np.eye(3)[(D @ rng.standard_normal(24) + rng.integers(0, 3, 600)).astype(int) % 3]
    assert compress_rows(prepare_dictionary(D)) is not None
    rho = frac * rho_max(D, Y, loss=loss)
    merged = solve(D, Y, rho, loss=loss, tol=1e-10)
    monkeypatch.setattr(engine, "compress_rows", lambda Dk: None)
    plain = solve(D, Y, rho, loss=loss, tol=1e-10)
    for res in (merged, plain):
        assert res.converged and res.rel_gap <= 1e-10
        cert = duality_gap(D, Y, res.coef, res.intercept, rho, loss=loss)
        assert cert.rel_gap <= 1e-10
    assert merged.primal == pytest.approx(plain.primal, rel=1e-9)
    W, b = cp.Variable((24, Y.shape[1])), cp.Variable(Y.shape[1])
    Z = D.astype(float) @ W + np.ones((600, 1)) @ b[None, :]
    if loss == "logistic":
        F = cp.sum(cp.logistic(Z) - cp.multiply(Y, Z)) / 600
    else:
        F = (cp.sum(cp.log_sum_exp(Z, axis=1)) - cp.sum(cp.multiply(Y, Z))) / 600
    prob = cp.Problem(cp.Minimize(F + rho * cp.sum(cp.abs(W))))
    prob.solve(solver="CLARABEL")
    assert merged.primal <= prob.value + 1e-7


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), heads=st.sampled_from([(3,), (4,), (2, 3), (5, 2)]))
def test_softmax_recentring_keeps_outputs_and_lowers_l1(seed, heads):
    # The median shift of each atom's row per head leaves every softmax output unchanged,
    # never raises the l1 norm, and leaves 0 a median of every row.
    from cvxsnn.solver import engine
    from cvxsnn.solver.losses import make_loss
    from cvxsnn.solver.penalties import make_penalty

    rng = np.random.default_rng(seed)
    C, k = sum(heads), 7
    W = rng.standard_normal((k, C)) * (rng.random((k, C)) < 0.7)
    X = (rng.random((20, k)) < 0.5).astype(float)
    eng = engine._ProxNewtonEngine.__new__(engine._ProxNewtonEngine)
    loss = make_loss("softmax", C, heads, None)
    eng.st = engine._Setup(None, None, loss, make_penalty("l1"), True)
    V = eng._recentre(W)
    assert np.abs(V).sum() <= np.abs(W).sum() + 1e-12
    for sl in eng.st.loss.head_slices():
        np.testing.assert_allclose(
            log_softmax(X @ V[:, sl], axis=1), log_softmax(X @ W[:, sl], axis=1), atol=1e-12
        )
        B = V[:, sl]
        assert np.all((B <= 0).sum(axis=1) >= B.shape[1] / 2)
        assert np.all((B >= 0).sum(axis=1) >= B.shape[1] / 2)


def _softmax_engine(X, Y, heads, head_weights, row_w):
    """A _ProxNewtonEngine on merged rows X (n_u, k) with row weights row_w, no Dictionary."""
    from cvxsnn.solver import engine
    from cvxsnn.solver.losses import make_loss
    from cvxsnn.solver.penalties import make_penalty

    eng = engine._ProxNewtonEngine.__new__(engine._ProxNewtonEngine)
    loss = make_loss("softmax", Y.shape[1], heads, head_weights)
    eng.st = engine._Setup(None, Y, loss, make_penalty("l1"), True)
    eng.Xu, eng.Yu, eng.row_w = X, Y, row_w
    eng.wcol = loss.column_weights
    eng.A = row_w[:, None] * eng.wcol[None, :]
    return eng


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    heads=st.sampled_from([(3,), (4,), (2, 3), (5, 2)]),
    block_rows=st.sampled_from([1, 3, 7, None]),
)
def test_coupled_hessian_is_the_softmax_hessian(seed, heads, block_rows):
    # The coupled step's Hessian, accumulated by syrk over row blocks, equals torch's
    # autograd Hessian of the weighted softmax loss in the step's variables (atoms of each
    # column, intercepts but one per head), for several heads with their weights.
    import torch

    from cvxsnn.solver.engine import _ProxNewtonEngine

    rng = np.random.default_rng(seed)
    C, k, n_u = sum(heads), 6, 11
    X = (rng.random((n_u, k)) < 0.5).astype(float)
    Y = np.hstack([np.eye(h)[rng.integers(0, h, n_u)] for h in heads])
    hw = tuple(float(w) for w in rng.uniform(0.2, 2.0, len(heads)))
    row_w = rng.uniform(0.5, 3.0, n_u)
    row_w /= row_w.sum()
    eng = _softmax_engine(X, Y, heads, hw, row_w)
    Z0 = rng.standard_normal((n_u, C))
    _, P = eng._model(Z0)
    last = np.cumsum(heads) - 1  # each head's last column keeps its intercept fixed
    cols = []
    for c in range(C):
        atoms = np.flatnonzero(rng.random(k) < 0.5)
        cols.append(np.append(atoms, [] if c in last else [-1]).astype(np.intp))
    cs = np.cumsum([0] + [v.size for v in cols])
    var = np.concatenate(cols)
    H = _ProxNewtonEngine._coupled_hessian(eng, P, var, cs, block_rows=block_rows)

    Zt, Yt = torch.tensor(Z0), torch.tensor(Y)
    Mt = torch.tensor(np.where(var[None, :] >= 0, X[:, np.maximum(var, 0)], 1.0))
    cls = np.repeat(np.arange(C), np.diff(cs))
    Et = torch.tensor(np.eye(C)[cls])  # variable -> its column

    def f(theta):
        Z = Zt + (Mt * theta) @ Et
        out = 0.0
        for sl, w in zip(eng.st.loss.head_slices(), hw, strict=True):
            lsm = torch.log_softmax(Z[:, sl], dim=1)
            out = out - w * (torch.tensor(row_w)[:, None] * Yt[:, sl] * lsm).sum()
        return out

    ref = torch.autograd.functional.hessian(f, torch.zeros(var.size, dtype=torch.float64))
    np.testing.assert_allclose(H, ref.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("heads", [(4,), (3, 2)])
def test_coupled_newton_steps_converge_superlinearly(heads):
    # From a perturbed optimum, coupled proximal Newton steps (the full Hessian of the
    # heads, signs free) converge superlinearly: every step cuts the suboptimality at least
    # a hundredfold, to rounding within four steps (the column-wise sweeps, which leave out
    # the coupling of a head's columns, only converge linearly).
    rng = np.random.default_rng(0)
    n, k = 400, 30
    X = (rng.random((n, k)) < 0.5).astype(float)
    labels = [(X @ rng.standard_normal(k) * 0.7 + rng.integers(0, h, n)).astype(int) % h
              for h in heads]  # fmt: skip
    Y = np.hstack([np.eye(h)[lab] for h, lab in zip(heads, labels, strict=True)])
    rho = 0.02 * rho_max(X, Y, loss="softmax", heads=heads)
    best = solve(X, Y, rho, loss="softmax", heads=heads, tol=1e-13)
    assert best.converged
    eng = _softmax_engine(X, Y, heads, None, np.full(n, 1.0 / n))
    eng.rho = rho
    W = best.coef + 0.05 * rng.standard_normal(best.coef.shape) * (best.coef != 0)
    b = best.intercept.copy()
    Z = X @ W + b
    f, P = eng._model(Z)
    F = f + rho * np.abs(W).sum()
    errs = [F - best.primal]
    for _ in range(4):
        step = eng._coupled_step(W, b, Z, P, F, None)
        if step is None:
            break
        W, b, Z, P, F = step
        errs.append(F - best.primal)
        if errs[-1] <= 1e-14:
            break
    assert errs[0] > 1e-5
    assert errs[-1] <= 1e-12, errs
    for e0, e1 in itertools.pairwise(errs):
        if e0 > 1e-12:
            assert e1 <= 0.01 * e0, errs


@pytest.mark.parametrize("loss", ["logistic", "softmax"])
def test_optimal_intercept_stops_at_the_rounding_floor(loss, monkeypatch):
    # On 60,000 rows the gradient of the mean loss in b cannot fall below about
    # 1e-16 sqrt(n): Newton's method stops there (its decrement at the floor) after a few
    # steps instead of running out its iterations, with b optimal to rounding.
    from scipy.optimize import minimize

    from cvxsnn.solver import losses

    rng = np.random.default_rng(5)
    n, C = 60_000, 3 if loss == "softmax" else 2
    Z0 = rng.standard_normal((n, C)) * 2.0
    if loss == "softmax":
        Y = np.eye(C)[rng.integers(0, C, n)]
    else:
        Y = (rng.random((n, C)) < 0.3).astype(float)
    calls = {"n": 0}
    real = np.linalg.lstsq

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(losses.np.linalg, "lstsq", counting)
    L = losses.make_loss(loss, C, None, None)
    b = L.optimal_intercept(Z0, Y)
    monkeypatch.undo()
    assert calls["n"] <= 12 * C  # Newton steps over all heads / columns
    grad = -L.neg_grad(Z0 + b, Y).sum(axis=0)
    assert np.max(np.abs(grad)) <= 1e-12
    ref = minimize(lambda t: L.value(Z0 + t, Y), np.zeros(C), method="BFGS", tol=1e-12)
    assert L.value(Z0 + b, Y) <= ref.fun + 1e-15


@pytest.mark.parametrize(
    ("loss", "penalty"), [("logistic", "l1"), ("softmax", "l1"), ("softmax", "group_l2")]
)
def test_cross_entropy_memory_estimate_bounds_the_traced_peak(loss, penalty):
    """estimate_solve_bytes for logistic / softmax bounds the traced numpy peak of a solve
    whose working set grows to all atoms (coupled softmax steps included)."""
    import tracemalloc

    from cvxsnn.solver import estimate_solve_bytes

    rng = np.random.default_rng(1)
    n, P, C = 1000, 150, (3 if loss == "softmax" else 1)
    D = (rng.random((n, P)) < 0.3).astype(np.uint8)
    Zt = D @ (rng.standard_normal((P, C)) * 0.3 * (rng.random((P, C)) < 0.2))
    if loss == "softmax":
        Y = np.eye(C)[np.argmax(Zt + rng.gumbel(size=(n, C)), axis=1)]
    else:
        Y = (rng.random((n, 1)) < expit(Zt)).astype(float)
    rho = 0.01 * rho_max(D, Y, loss=loss, penalty=penalty)
    tracemalloc.start()
    try:
        res = solve(D, Y, rho, loss=loss, penalty=penalty, max_time=60)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.converged and res.support.size > 0
    est = estimate_solve_bytes(n, P, C, loss=loss, penalty=penalty)
    assert peak <= est
    assert estimate_solve_bytes(n, P, C, 50, loss=loss, penalty=penalty) < est
    with pytest.raises(ValueError, match="loss must be one of"):
        estimate_solve_bytes(n, P, C, loss="hinge")


def test_group_newton_polish_stops_at_the_deadline():
    # The FISTA engine's Newton polish (group l2 with cross-entropy) checks the deadline
    # between its iterations, so that max_time bounds a solve: past the deadline it
    # returns the point it was given; without one it moves it.
    from cvxsnn.solver import engine

    rng = np.random.default_rng(2)
    D = (rng.random((200, 20)) < 0.5).astype(np.uint8)
    Y = np.eye(3)[rng.integers(0, 3, 200)]
    st = engine._setup(D, Y, "softmax", "group_l2", True, None, None, None)
    eng = engine._ProxGradEngine(st, 0.01)
    eng._set_working_set(np.arange(20))
    W = 0.1 * rng.standard_normal((20, 3))
    b = np.zeros(3)
    Wp, bp = eng._newton_polish(W, b, deadline=time.perf_counter() - 1.0)
    np.testing.assert_array_equal(Wp, W)
    np.testing.assert_array_equal(bp, b)
    Wq, _ = eng._newton_polish(W, b)
    assert not np.array_equal(Wq, W)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_softmax_with_coupled_steps_matches_cvxpy(fit_intercept, monkeypatch):
    # A softmax solve at 0.01 rho_max that takes coupled steps (with and without the
    # intercepts to eliminate) reaches cvxpy + Clarabel's optimum.
    from cvxsnn.solver import engine

    rng = np.random.default_rng(7)
    n, k = 300, 25
    X = (rng.random((n, k)) < 0.5).astype(np.uint8)
    Y = np.eye(3)[(X @ rng.standard_normal(k) * 0.8 + rng.integers(0, 3, n)).astype(int) % 3]
    taken = []
    real = engine._ProxNewtonEngine._coupled_step

    def counting(self, *a):
        out = real(self, *a)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(engine._ProxNewtonEngine, "_coupled_step", counting)
    rho = 0.01 * rho_max(X, Y, loss="softmax", fit_intercept=fit_intercept)
    res = solve(X, Y, rho, loss="softmax", fit_intercept=fit_intercept, tol=1e-10)
    assert res.converged and any(taken)
    W, b = cp.Variable((k, 3)), cp.Variable(3)
    Z = X.astype(float) @ W
    if fit_intercept:
        Z = Z + np.ones((n, 1)) @ b[None, :]
    F = (cp.sum(cp.log_sum_exp(Z, axis=1)) - cp.sum(cp.multiply(Y, Z))) / n
    prob = cp.Problem(cp.Minimize(F + rho * cp.sum(cp.abs(W))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob.solve(solver="CLARABEL")
    assert res.primal <= prob.value + 1e-8
    assert res.primal == pytest.approx(prob.value, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.integers(1, 10), zero_eig=st.booleans())
def test_block_mu_solves_the_secular_equation(seed, size, zero_eig):
    # mu ||c / (e + mu)|| = lam (the group-l2 block minimiser's norm condition), to
    # rounding, for eigenvalues over six decades and a null eigenvalue.
    from cvxsnn.solver.engine import _block_mu

    rng = np.random.default_rng(seed)
    e = rng.random(size) * 10.0 ** rng.integers(-3, 4)
    c = rng.standard_normal(size)
    if zero_eig and size > 1:
        e[0], c[0] = 0.0, 0.1 * c[0]
    nr = float(np.linalg.norm(c))
    lam = nr * rng.uniform(0.05, 0.95)
    if e.max() == 0 or np.linalg.norm(c[e == 0]) >= lam:
        return
    mu = _block_mu((c * c).tolist(), e.tolist(), lam, nr)
    ratio = np.where(e > 0, mu / np.maximum(e + mu, 1e-300), 1.0)
    assert mu > 0
    assert np.linalg.norm(c * ratio) == pytest.approx(lam, rel=1e-12)


@pytest.mark.parametrize("singular", [False, True])
def test_group_lasso_bcd_reaches_cvxpy_optimum(singular):
    # Block coordinate descent with exact block steps (the group-l2 coupled step's inner
    # solver) reaches the optimum of 0.5 x^T H x - q^T x + lam sum ||x_g||, also when H is
    # singular along a direction inside each group (softmax heads' row shifts).
    from cvxsnn.solver.engine import _group_lasso_bcd

    rng = np.random.default_rng(3)
    n_g, s = 12, 4
    B = rng.standard_normal((80, n_g * s))
    if singular:  # each group's coordinates summed: a null direction of H
        B -= B.reshape(80, n_g, s).mean(axis=2).repeat(s, axis=1)
    H = B.T @ B / 80
    q = H @ rng.standard_normal(n_g * s) + 0.1 * rng.standard_normal(n_g * s)
    if singular:
        q -= q.reshape(n_g, s).mean(axis=1).repeat(s)
    groups = np.arange(n_g * s).reshape(n_g, s)
    lam = 0.3 * float(np.linalg.norm(q.reshape(n_g, s), axis=1).max())
    x = _group_lasso_bcd(H, q, lam, np.zeros(n_g * s), groups, None)

    def f(v):
        return 0.5 * v @ H @ v - q @ v + lam * np.linalg.norm(v.reshape(n_g, s), axis=1).sum()

    v = cp.Variable(n_g * s)
    obj = 0.5 * cp.quad_form(v, cp.psd_wrap(H)) - q @ v
    obj += lam * sum(cp.norm(v[g]) for g in groups.tolist())
    prob = cp.Problem(cp.Minimize(obj))
    prob.solve(solver="CLARABEL")
    assert f(x) <= prob.value + 1e-9
    assert np.count_nonzero(np.linalg.norm(x.reshape(n_g, s), axis=1)) < n_g
