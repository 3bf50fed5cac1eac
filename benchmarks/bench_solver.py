"""Time cvxsnn.solver against celer, skglm, scikit-learn and cvxpy + Clarabel.

Every solver gets the identical problem, (1/(2n)) ||Y - D W - 1 b^T||^2 + rho R(W) (the
scaling of scikit-learn / celer / skglm Lasso with alpha = rho, fit_intercept=True), and
every answer is certified by cvxsnn's own ``duality_gap``. A peer's tolerance is tightened
(1e-4, 1e-6, ... 1e-14) until its answer reaches rel gap <= 1e-6 or its time cap is spent;
then it is reported as '> cap'. Each peer run is a child process killed at the cap, so
the cap holds even inside one long fit. Peers get D already as float64 (their conversion
is not timed); cvxsnn gets the uint8 dictionary and its preparation is timed.

Examples
--------
    python benchmarks/bench_solver.py --sizes S,M --ratios 0.1,0.01
    python benchmarks/bench_solver.py --dict my_dictionary.npz      # arrays D (n, P) uint8, Y
    python benchmarks/bench_solver.py --sizes "" --real xor,xor10,addition,mnist
    python benchmarks/bench_solver.py --sizes "" --real xor --path 12  # warm-started paths
    python benchmarks/bench_solver.py --sizes "" --real xor,mnist --loss cross-entropy

Real dictionaries (built with the package, Gaussian witnesses, m = 32, seed 0): ``xor``
(FIRST-LAST-XOR, T = 6, L = 3, K = 64, 2000 samples), ``xor10`` (L = 10), ``xorwide``
(K = 512), ``addition`` (base 3, T = 6, 2000 samples = 12000 rows, C = 4: sum digit + carry),
``mnist`` (MNIST-SEQ, T = 28, ``--mnist-n`` samples, C = 10 one-hot). Multi-output problems
run both penalties. ``--loss cross-entropy`` runs the same dictionaries with the logistic loss
(one binary head: XOR) or the softmax loss (MNIST-SEQ; ADDITION's two heads), l1 only, against
skglm's SparseLogisticRegression (binary), scikit-learn's LogisticRegression (saga) and
cvxpy + Clarabel; celer's LogisticRegression fits no intercept and is left out.
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
from threadpoolctl import threadpool_limits  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import DATA_DIR, format_table, run_capped, time_call  # noqa: E402

from cvxsnn.solver import duality_gap, rho_max, solve, solve_path  # noqa: E402

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


REAL = {  # name -> (task, make_task kwargs, L, K)
    "xor": ("xor", dict(steps=6), 3, 64),
    "xor10": ("xor", dict(steps=6), 10, 64),
    "xorwide": ("xor", dict(steps=6), 3, 512),
    "addition": ("addition", dict(steps=6, base=3), 3, 64),
    "mnist": ("mnist-seq", dict(steps=28), 3, 64),
}


def real_problem(
    name: str,
    n: int,
    m: int = 32,
    seed: int = 0,
    data_dir: str | Path = DATA_DIR,
    loss: str = "squared",
) -> tuple:
    """A spike dictionary of a real task (Gaussian witnesses) and its targets for ``loss``
    (``squared``, or ``cross-entropy``: logistic for one binary head, softmax otherwise);
    MNIST-SEQ reads its IDX files from ``data_dir``. Returns (label, D, Y, loss spec)."""
    import torch

    from cvxsnn.dictionary import build_dictionary
    from cvxsnn.pipeline import encode_targets
    from cvxsnn.tasks import make_task
    from cvxsnn.witnesses import sample_witnesses

    task_name, kw, L, K = REAL[name]
    if task_name == "mnist-seq":
        kw = {**kw, "data_dir": str(data_dir)}
    task = make_task(task_name, n_train=n, n_val=10, n_test=10, seed=seed, **kw)
    params = sample_witnesses(
        task.train.d, (m,) * (L - 1), K, generator=torch.Generator().manual_seed(seed)
    )
    dic = build_dictionary(params, task.train.x.double(), task.train.steps)
    heads = task.train.head_classes
    spec = {"loss": "squared", "heads": None}
    if loss == "cross-entropy":
        binary = len(heads) == 1 and heads[0] == 2
        spec["loss"] = "logistic" if binary else "softmax"
    Y, layout, _ = encode_targets(task.train, spec["loss"], (1.0,) * len(heads))
    if spec["loss"] == "softmax":
        spec["heads"] = tuple(layout)
    D = np.asarray(dic.atoms)
    label = f"{name.upper()} L={L} K={K} {D.shape[0]}x{D.shape[1]}"
    return label, D, np.asarray(Y, dtype=np.float64), spec


def _peers(C: int, penalty: str) -> dict[str, Any]:
    """Factories fit(X, Y, rho, tol, warm) -> (coef (P, C), intercept (C,)).

    Multi-output l1 is separable: celer and skglm fit one Lasso per output, scikit-learn's
    Lasso takes the 2-D target. ``warm`` is an estimator to reuse (warm start) or None.
    """
    out: dict[str, Any] = {}

    def wrap(make, per_column=False):
        def fit(X, Y, rho, tol, warm=None):
            cols = [Y[:, [c]] for c in range(C)] if per_column else [Y]
            models = warm if warm is not None else [make(rho, tol) for _ in cols]
            coefs, icpts = [], []
            for mdl, Yc in zip(models, cols, strict=True):
                mdl.set_params(alpha=rho, tol=tol)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mdl.fit(X, Yc[:, 0] if Yc.shape[1] == 1 else Yc)
                coef = np.asarray(mdl.coef_, dtype=np.float64)
                coefs.append(coef.reshape(-1, 1) if coef.ndim == 1 else coef.T)
                icpts.append(np.atleast_1d(np.asarray(mdl.intercept_, dtype=np.float64)))
            return np.hstack(coefs), np.concatenate(icpts), models

        return fit

    multi = penalty == "group_l2"
    try:
        import skglm

        if multi:
            out["skglm"] = wrap(lambda a, t: skglm.MultiTaskLasso(alpha=a, tol=t, max_iter=1000))
        else:
            out["skglm"] = wrap(
                lambda a, t: skglm.Lasso(alpha=a, tol=t, max_iter=1000, warm_start=True), C > 1
            )
    except ImportError:
        pass
    try:
        import celer

        if multi:
            out["celer"] = wrap(lambda a, t: celer.MultiTaskLasso(alpha=a, tol=t, max_iter=1000))
        else:
            out["celer"] = wrap(
                lambda a, t: celer.Lasso(alpha=a, tol=t, max_iter=1000, warm_start=True), C > 1
            )
    except ImportError:
        pass
    from sklearn import linear_model as lm

    if multi:
        out["sklearn"] = wrap(
            lambda a, t: lm.MultiTaskLasso(alpha=a, tol=t, max_iter=100000, warm_start=True)
        )
    else:
        out["sklearn"] = wrap(
            lambda a, t: lm.Lasso(alpha=a, tol=t, precompute=True, max_iter=100000,
                                  warm_start=True)
        )  # fmt: skip
    return out


def _ce_peers(spec: dict, n: int) -> dict[str, Any]:
    """Peers of the cross-entropy problems (l1 only), as factories like :func:`_peers`.

    The program (1/n) sum_i loss_i + rho ||W||_1 with a free intercept is scikit-learn's
    LogisticRegression (saga, l1, C = 1 / (n rho), multinomial for several classes) and
    skglm's SparseLogisticRegression (alpha = rho; binary only). celer's
    LogisticRegression cannot fit an intercept, and no peer fits several softmax heads.
    """
    heads = spec["heads"]
    if spec["loss"] == "softmax" and heads is not None and len(heads) > 1:
        return {}
    out: dict[str, Any] = {}

    def wrap(make, set_rho):
        def fit(X, Y, rho, tol, warm=None):
            y = Y[:, 0] if Y.shape[1] == 1 else Y.argmax(axis=1)
            mdl = warm if warm is not None else make(rho, tol)
            set_rho(mdl, rho, tol)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mdl.fit(X, y)
            coef_ = np.atleast_2d(np.asarray(mdl.coef_, dtype=np.float64))
            icpt_ = np.atleast_1d(np.asarray(mdl.intercept_, dtype=np.float64))
            if Y.shape[1] == 1:
                return coef_.T, icpt_, mdl
            coef, icpt = np.zeros((X.shape[1], Y.shape[1])), np.zeros(Y.shape[1])
            cls = np.asarray(mdl.classes_, dtype=np.intp)
            coef[:, cls], icpt[cls] = coef_.T, icpt_
            return coef, icpt, mdl

        return fit

    if spec["loss"] == "logistic":
        try:
            import skglm

            out["skglm"] = wrap(
                lambda a, t: skglm.SparseLogisticRegression(
                    alpha=a, tol=t, max_iter=1000, max_epochs=100000, warm_start=True
                ),
                lambda m, a, t: m.set_params(alpha=a, tol=t),
            )
        except ImportError:
            pass
    from sklearn import linear_model as lm

    out["sklearn"] = wrap(
        lambda a, t: lm.LogisticRegression(
            l1_ratio=1.0, solver="saga", C=1.0 / (n * a), tol=t, max_iter=100000,
            warm_start=True,
        ),
        lambda m, a, t: m.set_params(C=1.0 / (n * a), tol=t),
    )  # fmt: skip
    return out


def _ce_objective(cp, Z, Y, spec):
    """The mean cross-entropy of predictions Z (a cvxpy expression) against Y."""
    n = Y.shape[0]
    if spec["loss"] == "logistic":
        return cp.sum(cp.logistic(Z) - cp.multiply(Y, Z)) / n
    heads = spec["heads"] or (Y.shape[1],)
    total, a = 0, 0
    for h in heads:
        Zh, Yh = Z[:, a : a + h], Y[:, a : a + h]
        total += cp.sum(cp.log_sum_exp(Zh, axis=1)) - cp.sum(cp.multiply(Yh, Zh))
        a += h
    return total / n


def _cvxpy_fit(X, Y, rho, tol, penalty, time_limit=None, spec=None):
    """cvxpy + Clarabel on the primal; Clarabel stops at ``time_limit`` seconds (its
    answer is then whatever it holds, or zeros when it holds none, and the caller's
    certificate decides)."""
    import cvxpy as cp

    n, P = X.shape
    W, b = cp.Variable((P, Y.shape[1])), cp.Variable(Y.shape[1])
    R = cp.sum(cp.abs(W)) if penalty == "l1" else cp.sum(cp.norm(W, 2, axis=1))
    Z = X @ W + np.ones((n, 1)) @ b[None, :]
    if spec is None or spec["loss"] == "squared":
        F = cp.sum_squares(Y - Z) / (2 * n)
    else:
        F = _ce_objective(cp, Z, Y, spec)
    prob = cp.Problem(cp.Minimize(F + rho * R))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opts = {} if time_limit is None else {"time_limit": float(time_limit)}
        try:
            prob.solve(solver="CLARABEL", tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol, **opts)
        except cp.error.SolverError:  # stopped at the time limit without an answer
            pass
    if W.value is None or b.value is None:
        return np.zeros((P, Y.shape[1])), np.zeros(Y.shape[1])
    return W.value, b.value


def _peer_rows(base, fits, X, D, Y, rhos, penalty, cap, repeat, t_ours, cert=None) -> list[dict]:
    """Time each peer on the rho sequence (one rho, or a warm-started path).

    The peer tol is tightened until every answer on the sequence reaches rel gap <= TARGET
    within the cap; then the run is repeated (``repeat`` times while that fits in the cap).
    Every run is a child process killed at the cap (``_runner.run_capped``): one fit inside
    compiled code cannot be stopped otherwise. Each peer first fits a small slice of the
    problem in this process, so that compiled (numba) code is inherited by the children and
    no timed run pays for compilation or imports. cvxpy is only imported: after a Clarabel
    solve in the parent a forked child hangs.
    """
    rows = []
    cert = cert or {}
    for pname, fit in fits.items():

        def run_seq(tol, fit=fit, X=X, Y=Y, rhos=rhos):
            warm, res = None, []
            for r in rhos:
                coef, icpt, warm = fit(X, Y, r, tol, warm)
                res.append((coef, icpt))
            return res

        spent, row, worst = 0.0, None, float("nan")
        try:
            if pname == "cvxpy+clarabel":  # a Clarabel solve here hangs every later fork
                import cvxpy  # noqa: F401
            else:
                # a sparse answer on a slice: quick, and it runs the compiled paths
                head = slice(0, min(X.shape[0], 200))
                run_seq(PEER_TOLS[0], X=np.ascontiguousarray(X[head]), Y=Y[head], rhos=rhos[:1])
        except Exception as exc:  # a peer incompatible with the installed libraries
            rows.append({**base, "solver": pname, "time_s": f"error ({type(exc).__name__})"})
            continue
        for tol in PEER_TOLS:
            got = run_capped(lambda tol=tol: run_seq(tol), cap - spent)
            if got.status == "error":
                row = {"time_s": f"error ({got.error.split(':')[0]})", "tol": tol}
                break
            if got.status == "timeout":
                break
            el = got.time_s
            spent += el
            worst = max(
                duality_gap(D, Y, c, b, r, penalty=penalty, **cert).rel_gap
                for (c, b), r in zip(got.result, rhos, strict=True)
            )
            if worst <= TARGET:
                med, n_rep = el, 1
                if el * repeat <= cap:
                    tm = run_capped(
                        lambda tol=tol: time_call(lambda: run_seq(tol), repeat, False).median_s,
                        cap,
                    )  # only the median comes back: the answers were certified above
                    if tm.status == "ok":
                        med, n_rep = tm.result, repeat
                row = {"time_s": med, "rel_gap": worst, "tol": tol, "x ours": med / t_ours,
                       "runs": n_rep}  # fmt: skip
                break
            if spent >= cap:
                break
        if row is None:
            row = {"time_s": f"> {cap:g}", "rel_gap": worst, "tol": tol,
                   "x ours": f"> {cap / t_ours:.3g}"}  # fmt: skip
        rows.append({**base, "solver": pname, **row})
    return rows


def run_problem(name, D, Y, ratio, penalty, cap, repeat, peers, use_cvxpy, spec=None) -> list[dict]:
    """One rho = ratio * rho_max: cvxsnn, then every peer."""
    spec = spec or {"loss": "squared", "heads": None}
    cert_kw = {"loss": spec["loss"], "heads": spec["heads"]}
    rho = ratio * rho_max(D, Y, penalty=penalty, **cert_kw)
    base = {"problem": name, "rho/rho_max": ratio, "penalty": penalty, "loss": spec["loss"]}

    def ours():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return solve(D, Y, rho, penalty=penalty, tol=TARGET, max_time=cap, **cert_kw)

    t0 = time.perf_counter()
    first = ours()
    el = time.perf_counter() - t0
    n_rep = repeat if el * repeat <= cap else 1
    t_ours = time_call(ours, n_rep) if n_rep > 1 else None
    res = t_ours.result if t_ours is not None else first
    med = t_ours.median_s if t_ours is not None else el
    cert = duality_gap(D, Y, res.coef, res.intercept, rho, penalty=penalty, **cert_kw)
    row = {**base, "solver": "cvxsnn", "time_s": med, "rel_gap": cert.rel_gap, "x ours": 1.0,
           "peak_MiB": t_ours.peak_mib if t_ours is not None else float("nan"), "tol": TARGET,
           "runs": n_rep}  # fmt: skip
    if cert.rel_gap > TARGET:
        row["time_s"] = f"> {cap:g}"
    rows = [row]
    X = D.astype(np.float64)
    fits = dict(peers)
    if use_cvxpy:
        fits["cvxpy+clarabel"] = lambda X, Y, r, tol, warm: (
            *_cvxpy_fit(X, Y, r, tol, penalty, time_limit=cap, spec=spec),
            None,
        )
    rows += _peer_rows(base, fits, X, D, Y, [rho], penalty, cap, repeat, med, cert_kw)
    return rows


def run_path(name, D, Y, n_rhos, penalty, cap, repeat, peers) -> list[dict]:
    """A warm-started path of ``n_rhos`` values from rho_max down to 0.01 rho_max."""
    rhos = list(rho_max(D, Y, penalty=penalty) * np.geomspace(1.0, 0.01, n_rhos))
    base = {"problem": name, "rho/rho_max": f"path {n_rhos}", "penalty": penalty}
    t_ours = time_call(lambda: solve_path(D, Y, rhos, penalty=penalty, tol=TARGET), repeat)
    worst = max(
        duality_gap(D, Y, r.coef, r.intercept, r.rho, penalty=penalty).rel_gap
        for r in t_ours.result
    )
    rows = [{**base, "solver": "cvxsnn", "time_s": t_ours.median_s, "rel_gap": worst,
             "x ours": 1.0, "peak_MiB": t_ours.peak_mib, "tol": TARGET,
             "runs": repeat}]  # fmt: skip
    X = D.astype(np.float64)
    rows += _peer_rows(base, peers, X, D, Y, rhos, penalty, cap, repeat, t_ours.median_s)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="S,M", help="comma list of S, M, L (Bernoulli)")
    ap.add_argument("--ratios", default="0.1,0.01", help="rho / rho_max values")
    ap.add_argument("--outputs", type=int, default=1, help="C; >1 also runs group l2")
    ap.add_argument(
        "--penalties", default="l1,group_l2", help="penalties to run (group_l2 needs C > 1)"
    )
    ap.add_argument("--dict", type=Path, help="npz with D (n, P) uint8 and Y")
    ap.add_argument("--xor", type=int, default=0, help="rows of a real XOR dictionary (0: off)")
    ap.add_argument("--real", default="", help=f"comma list of real dictionaries: {list(REAL)}")
    ap.add_argument("--real-n", type=int, default=2000, help="samples of the real tasks")
    ap.add_argument("--mnist-n", type=int, default=10000, help="samples of MNIST-SEQ")
    ap.add_argument("--path", type=int, default=0, help="also time warm-started paths of N rhos")
    ap.add_argument("--cap", type=float, default=30.0, help="time cap per solver, seconds")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", default="1", help="BLAS threads for all (write --threads=N)")
    ap.add_argument("--cvxpy-max-n", type=int, default=1000, help="cvxpy only up to this n")
    ap.add_argument(
        "--loss",
        default="squared",
        choices=("squared", "cross-entropy"),
        help="loss of the --real problems: cross-entropy is logistic for one binary head, "
        "softmax otherwise (l1 only)",
    )
    ap.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma list of peers to run, among {PEERS}"
    )
    args = ap.parse_args(argv)
    chosen = [p for p in args.peers.split(",") if p]
    if any(p not in PEERS for p in chosen):
        ap.error(f"--peers: choose among {PEERS}; got {args.peers!r}")

    squared = {"loss": "squared", "heads": None}
    problems: list[tuple[str, np.ndarray, np.ndarray, dict]] = []
    for s in filter(None, args.sizes.split(",")):
        n, P = SIZES[s]
        problems.append((f"{s} {n}x{P}", *bernoulli_problem(n, P, args.outputs), squared))
    if args.dict is not None:
        z = np.load(args.dict)
        Y = np.asarray(z["Y"], dtype=np.float64)
        problems.append(
            (args.dict.name, np.asarray(z["D"]), Y[:, None] if Y.ndim == 1 else Y, squared)
        )
    if args.xor:
        D, Y = xor_problem(args.xor)
        problems.append((f"XOR {D.shape[0]}x{D.shape[1]}", D, Y, squared))
    for name in filter(None, args.real.split(",")):
        if name not in REAL:
            raise ValueError(f"--real must name dictionaries among {list(REAL)}; got {name!r}")
        n = args.mnist_n if name == "mnist" else args.real_n
        problems.append(real_problem(name, n, loss=args.loss))
    rows: list[dict] = []
    with threadpool_limits(limits=int(args.threads)):
        for name, D, Y, spec in problems:
            pens = ["l1"] if Y.shape[1] == 1 or spec["loss"] != "squared" else ["l1", "group_l2"]
            pens = [p for p in pens if p in args.penalties.split(",")]
            for pen in pens:
                if spec["loss"] == "squared":
                    peers = _peers(Y.shape[1], pen)
                else:
                    peers = _ce_peers(spec, D.shape[0])
                peers = {k: v for k, v in peers.items() if k in chosen}
                for ratio in map(float, args.ratios.split(",")):
                    new = run_problem(
                        name, D, Y, ratio, pen, args.cap, args.repeat, peers,
                        "cvxpy" in chosen and D.shape[0] <= args.cvxpy_max_n, spec,
                    )  # fmt: skip
                    rows += new
                    print(format_table(new, COLUMNS), flush=True)
                if args.path and pen == "l1" and spec["loss"] == "squared":
                    new = run_path(name, D, Y, args.path, pen, args.cap, args.repeat, peers)
                    rows += new
                    print(format_table(new, COLUMNS), flush=True)
    print("\n" + format_table(rows, COLUMNS))


PEERS = ("skglm", "celer", "sklearn", "cvxpy")

COLUMNS = ["problem", "loss", "penalty", "rho/rho_max", "solver", "time_s", "runs", "x ours",
           "rel_gap", "tol", "peak_MiB"]  # fmt: skip

if __name__ == "__main__":
    main()
