"""Time cvxsnn.solver against celer, skglm, scikit-learn and cvxpy + Clarabel.

Every solver gets the identical problem, (1/(2n)) ||Y - D W - 1 b^T||^2 + rho R(W) (the
scaling of scikit-learn / celer / skglm Lasso with alpha = rho, fit_intercept=True), and
every answer is certified by cvxsnn's own ``duality_gap``. A peer's tolerance is tightened
(1e-4, 1e-6, ... 1e-14) until its answer reaches rel gap <= 1e-6 or its time cap is spent;
then it is reported as '> cap'. Peers get D already as float64 (their conversion is not
timed); cvxsnn gets the uint8 dictionary and its preparation is timed.

Examples
--------
    python benchmarks/bench_solver.py --sizes S,M --ratios 0.1,0.01
    python benchmarks/bench_solver.py --dict my_dictionary.npz      # arrays D (n, P) uint8, Y
    python benchmarks/bench_solver.py --xor --sizes ""               # a real spike dictionary
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

# One BLAS thread for every solver (set before numpy loads): on a shared 2-core machine
# multi-threaded BLAS on small matrices spends its time waiting. Override with --threads.
_THREADS = next((a.split("=")[1] for a in sys.argv if a.startswith("--threads=")), "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import format_table, time_call  # noqa: E402

from cvxsnn.solver import duality_gap, rho_max, solve  # noqa: E402

SIZES = {"S": (1000, 500), "M": (5000, 2000), "L": (20000, 5000)}
TARGET = 1e-6
PEER_TOLS = (1e-4, 1e-6, 1e-8, 1e-10, 1e-12, 1e-14)


def bernoulli_problem(n: int, P: int, C: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bernoulli(1/2) dictionary and targets from a sparse readout plus noise."""
    rng = np.random.default_rng(seed)
    D = (rng.random((n, P)) < 0.5).astype(np.uint8)
    W = rng.standard_normal((P, C)) * (rng.random((P, 1)) < 0.05)
    Y = D @ W + rng.standard_normal((n, C))
    return D, Y


def xor_problem(n: int, T: int = 6, K: int = 64, m: int = 32, seed: int = 0) -> tuple:
    """A real FIRST-LAST-XOR spike dictionary (L = 3, Gaussian witnesses), +-1 targets."""
    import torch

    from cvxsnn.dictionary import build_dictionary
    from cvxsnn.witnesses import sample_witnesses

    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (T, n), generator=g)
    x = torch.nn.functional.one_hot(bits, 2).to(torch.float64)  # (T, n, 2)
    params = sample_witnesses(2, [m, m], K, generator=g)
    sd = build_dictionary(params, x, [T - 1])
    y = (2.0 * (bits[0] ^ bits[-1]).numpy() - 1.0)[:, None]
    return sd.atoms, y


def _peers(C: int) -> dict[str, Any]:
    """Factories tol -> fit(X, Y) returning (coef (P, C), intercept (C,))."""
    out: dict[str, Any] = {}

    def wrap(make):
        def fit(X, Y, rho, tol):
            m = make(rho, tol)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m.fit(X, Y[:, 0] if C == 1 else Y)
            coef = np.asarray(m.coef_, dtype=np.float64)
            coef = coef.reshape(-1, 1) if C == 1 else coef.T
            return coef, np.atleast_1d(np.asarray(m.intercept_, dtype=np.float64))

        return fit

    try:
        import skglm

        if C == 1:
            out["skglm"] = wrap(lambda a, t: skglm.Lasso(alpha=a, tol=t, max_iter=1000))
        else:
            out["skglm"] = wrap(lambda a, t: skglm.MultiTaskLasso(alpha=a, tol=t, max_iter=1000))
    except ImportError:
        pass
    try:
        import celer

        if C == 1:
            out["celer"] = wrap(lambda a, t: celer.Lasso(alpha=a, tol=t, max_iter=1000))
        else:
            out["celer"] = wrap(lambda a, t: celer.MultiTaskLasso(alpha=a, tol=t, max_iter=1000))
    except ImportError:
        pass
    from sklearn import linear_model as lm

    if C == 1:
        out["sklearn"] = wrap(
            lambda a, t: lm.Lasso(alpha=a, tol=t, precompute=True, max_iter=100000)
        )
    else:
        out["sklearn"] = wrap(lambda a, t: lm.MultiTaskLasso(alpha=a, tol=t, max_iter=100000))
    return out


def _cvxpy_fit(X, Y, rho, tol, penalty):
    import cvxpy as cp

    n, P = X.shape
    W, b = cp.Variable((P, Y.shape[1])), cp.Variable(Y.shape[1])
    R = cp.sum(cp.abs(W)) if penalty == "l1" else cp.sum(cp.norm(W, 2, axis=1))
    Z = X @ W + np.ones((n, 1)) @ b[None, :]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(Y - Z) / (2 * n) + rho * R))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob.solve(solver="CLARABEL", tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol)
    return W.value, b.value


def run_problem(name, D, Y, ratio, penalty, cap, repeat, peers, use_cvxpy) -> list[dict]:
    rho = ratio * rho_max(D, Y, penalty=penalty)
    rows = []
    t_ours = time_call(lambda: solve(D, Y, rho, penalty=penalty, tol=TARGET), repeat)
    res = t_ours.result
    cert = duality_gap(D, Y, res.coef, res.intercept, rho, penalty=penalty)
    base = {"problem": name, "rho/rho_max": ratio, "penalty": penalty}
    rows.append({**base, "solver": "cvxsnn", "time_s": t_ours.median_s, "rel_gap": cert.rel_gap,
                 "x ours": 1.0, "peak_MiB": t_ours.peak_mib, "tol": TARGET})  # fmt: skip
    X = D.astype(np.float64)
    fits = dict(peers)
    if use_cvxpy:
        fits["cvxpy+clarabel"] = lambda X, Y, rho, tol: _cvxpy_fit(X, Y, rho, tol, penalty)
    for pname, fit in fits.items():
        spent, row = 0.0, None
        for tol in PEER_TOLS:
            t0 = time.perf_counter()
            coef, icpt = fit(X, Y, rho, tol)
            el = time.perf_counter() - t0
            spent += el
            c = duality_gap(D, Y, coef, icpt, rho, penalty=penalty)
            if c.rel_gap <= TARGET and el <= cap:
                tm = time_call(lambda fit=fit, tol=tol: fit(X, Y, rho, tol), repeat, False)
                row = {"time_s": tm.median_s, "rel_gap": c.rel_gap, "tol": tol,
                       "x ours": tm.median_s / t_ours.median_s}  # fmt: skip
                break
            if spent > cap:
                break
        if row is None:
            row = {"time_s": f"> cap ({cap:g} s)", "rel_gap": c.rel_gap, "tol": tol}
        rows.append({**base, "solver": pname, **row})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="S,M", help="comma list of S, M, L (Bernoulli)")
    ap.add_argument("--ratios", default="0.1,0.01", help="rho / rho_max values")
    ap.add_argument("--outputs", type=int, default=1, help="C; >1 also runs group l2")
    ap.add_argument("--dict", type=Path, help="npz with D (n, P) uint8 and Y")
    ap.add_argument("--xor", type=int, default=0, help="rows of a real XOR dictionary (0: off)")
    ap.add_argument("--cap", type=float, default=30.0, help="time cap per peer, seconds")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", default="1", help="BLAS threads for all (write --threads=N)")
    ap.add_argument("--cvxpy-max-n", type=int, default=1000, help="cvxpy only up to this n")
    args = ap.parse_args(argv)

    problems: list[tuple[str, np.ndarray, np.ndarray]] = []
    for s in filter(None, args.sizes.split(",")):
        n, P = SIZES[s]
        problems.append((f"{s} {n}x{P}", *bernoulli_problem(n, P, args.outputs)))
    if args.dict is not None:
        z = np.load(args.dict)
        Y = np.asarray(z["Y"], dtype=np.float64)
        problems.append((args.dict.name, np.asarray(z["D"]), Y[:, None] if Y.ndim == 1 else Y))
    if args.xor:
        D, Y = xor_problem(args.xor)
        problems.append((f"XOR {D.shape[0]}x{D.shape[1]}", D, Y))
    rows: list[dict] = []
    for name, D, Y in problems:
        pens = ["l1"] if Y.shape[1] == 1 else ["l1", "group_l2"]
        for pen in pens:
            peers = _peers(Y.shape[1]) if pen == "group_l2" or Y.shape[1] == 1 else {}
            for ratio in map(float, args.ratios.split(",")):
                new = run_problem(
                    name, D, Y, ratio, pen, args.cap, args.repeat, peers,
                    D.shape[0] <= args.cvxpy_max_n,
                )  # fmt: skip
                rows += new
                print(format_table(new, COLUMNS), flush=True)
    print("\n" + format_table(rows, COLUMNS))


COLUMNS = ["problem", "penalty", "rho/rho_max", "solver", "time_s", "x ours", "rel_gap", "tol",
           "peak_MiB"]  # fmt: skip

if __name__ == "__main__":
    main()
