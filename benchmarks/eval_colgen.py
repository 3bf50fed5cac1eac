"""CVX vs CVX-CG (column generation) at equal dictionary size and equal wall time.

For each setting and seed this runs, through ``cvxsnn.pipeline.train`` (rho path on
validation, certified solve, support reduction, rebuilt network, test metrics of the
rebuilt network):

- ``cvx-cg`` from ``K0`` Gaussian branches, ``--rounds`` rounds of at most ``--atoms``
  atoms (the default ``ascent`` search);
- ``cvx`` at K = K0, 2 K0, 4 K0, ... up to ``--k-max``: the ladder from which the
  equal-size row (smallest K whose P reaches CVX-CG's final P) and the equal-time row
  (largest K whose total time does not exceed CVX-CG's) are read.

It also measures, on tiny FIRST-LAST-XOR instances whose every realizable one-hidden-layer
pattern is enumerated exactly (``enumerate_realizable_patterns``), how far CVX at several
K, CVX-CG with each search, and CVX-CG with the exact pricing oracle end from the global
optimum.

Every finished run is appended to ``--out`` (JSON lines) and skipped when the script is
run again, so an interrupted evaluation resumes. ``--summary`` prints the tables of
``docs/COLUMN_GENERATION.md`` from that file without running anything.

    python benchmarks/eval_colgen.py --settings xor-L10 add3-L3 mnist-L10 --seeds 0 1 2
    python benchmarks/eval_colgen.py --tiny --seeds 0 1 2 3 4
    python benchmarks/eval_colgen.py --summary
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvxsnn.pipeline import TrainConfig, train

SETTINGS: dict[str, dict[str, Any]] = {
    "xor-L10": dict(task="xor", depth=10, steps=6, n_train=2000, n_val=500, n_test=1000),
    "add3-L3": dict(
        task="addition", base=3, depth=3, steps=6, n_train=2000, n_val=500, n_test=1000
    ),
    "mnist-L10": dict(task="mnist-seq", depth=10, steps=2, n_train=5000, n_val=1000, n_test=2000),
}
PAPER = {
    "xor-L10": "CVX 0.973, SG 0.501",
    "add3-L3": "best 0.363 (token-wise)",
    "mnist-L10": "CVX 0.271, SG 0.099",
}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "colgen_eval.jsonl"


def _done(path: Path) -> set[str]:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text().splitlines():
        try:
            keys.add(json.loads(line)["key"])
        except (json.JSONDecodeError, KeyError):
            continue  # a truncated last line from a kill
    return keys


def _append(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _summary_row(rec: dict[str, Any]) -> dict[str, Any]:
    cg = rec.get("column_generation")
    row = {
        "method": rec["method"],
        "K": rec["K"],
        "P": rec["P"],
        "P_raw": rec["P_raw"],
        "rho": rec["rho"],
        "primal": rec["primal"],
        "gap": rec["gap"],
        "rel_gap": rec["rel_gap"],
        "test_acc": rec["test_acc"],
        "val_acc": rec["metrics"]["val"].get("acc"),
        "support": rec["support_size"],
        "time_s": rec["time_s"]["total"],
        "time_stages": rec["time_s"],
        "max_abs_error": rec["reconstruction"]["max_abs_error"],
        "spikes_identical": rec["reconstruction"]["spikes_identical"],
    }
    if cg is not None:
        row["cg"] = {
            k: cg[k]
            for k in (
                "stop_reason",
                "rounds",
                "P_initial",
                "examined_gap",
                "examined_lower_bound",
                "n_examined",
                "bounds",
                "branches",
                "pricer",
            )
        }
    return row


def run_settings(names: list[str], seeds: list[int], args: argparse.Namespace) -> None:
    done = _done(args.out)
    for name in names:
        base = dict(SETTINGS[name], width=args.width, threads=1, data_dir=args.data_dir)
        for seed in seeds:
            jobs = [("cvx-cg", args.k0)]
            k = args.k0
            while k <= args.k_max:
                jobs.append(("cvx", k))
                k *= 2
            for method, K in jobs:
                key = f"{name}|{seed}|{method}|{K}|{args.rounds}|{args.atoms}"
                if key in done and not (args.rerun_cg and method == "cvx-cg"):
                    continue
                cfg = TrainConfig(
                    **base,
                    method=method,
                    branches=K,
                    seed=seed,
                    cg_rounds=args.rounds,
                    cg_atoms=args.atoms,
                )
                print(f"[eval] {key}", file=sys.stderr, flush=True)
                rec = train(cfg, progress=not args.quiet).record
                row = {
                    "key": key,
                    "kind": "setting",
                    "setting": name,
                    "seed": seed,
                    **_summary_row(rec),
                }
                _append(args.out, row)
                print(
                    f"[eval]   test_acc={row['test_acc']:.4f} P={row['P']} "
                    f"time={row['time_s']:.1f}s gap={row['gap']:.1e}",
                    file=sys.stderr,
                )


def run_tiny(seeds: list[int], args: argparse.Namespace) -> None:
    from cvxsnn.colgen import (
        EnumeratedPricer,
        RandomSearch,
        SurrogateAscent,
        column_generation,
        enumerate_realizable_patterns,
    )
    from cvxsnn.dictionary import build_dictionary
    from cvxsnn.solver import rho_max, solve
    from cvxsnn.witnesses import sample_witnesses

    done = _done(args.out)
    T, n, width = 4, 12, 2
    for seed in seeds:
        key = f"tiny|{seed}"
        if key in done:
            continue
        g = torch.Generator().manual_seed(seed)
        bits = torch.randint(0, 2, (T, n), generator=g)
        x = torch.nn.functional.one_hot(bits, 2).to(torch.float64)
        y = (bits[0] ^ bits[-1]).numpy() * 2.0 - 1.0
        steps = (T - 1,)
        t0 = time.perf_counter()
        pool = enumerate_realizable_patterns(x, steps, width=width)
        t_enum = time.perf_counter() - t0
        rho = 0.1 * rho_max(pool.atoms, y)
        opt = solve(pool.atoms, y, rho, tol=1e-12)
        rows: dict[str, Any] = {}
        for K in (2, 8, 32, 128):
            w = sample_witnesses(2, (width,), K, generator=torch.Generator().manual_seed(seed))
            dic = build_dictionary(w, x, steps)
            r = solve(dic.atoms, y, rho, tol=1e-12) if dic.n_atoms else None
            primal = r.primal if r is not None else float(0.5 * np.mean((y - y.mean()) ** 2))
            rows[f"cvx K={K}"] = {"P": dic.n_atoms, "primal": primal}
        p0 = sample_witnesses(2, (width,), 2, generator=torch.Generator().manual_seed(seed))
        pricers = {
            "cvx-cg random": RandomSearch(proposals=32),
            "cvx-cg ascent": SurrogateAscent(base=RandomSearch(proposals=32)),
            "cvx-cg exact pricing": EnumeratedPricer(pool.params),
        }
        for label, pricer in pricers.items():
            res = column_generation(
                p0,
                x,
                steps,
                y,
                rho,
                generator=torch.Generator().manual_seed(seed + 100),
                pricer=pricer,
                max_rounds=30,
                atoms_per_round=3,
                tol=1e-12,
            )
            rows[label] = {
                "P": res.dictionary.n_atoms,
                "primal": res.solve.primal,
                "stop_reason": res.stop_reason,
                "rounds": len(res.rounds) - 1,
                "lower_bound_all_patterns": res.bounds.lower_bound,
                "examined_lower_bound": res.solve.primal - res.examined_gap,
            }
        for r in rows.values():
            r["distance"] = r["primal"] - opt.primal
            r["relative_distance"] = r["distance"] / opt.primal
        _append(
            args.out,
            {
                "key": key,
                "kind": "tiny",
                "seed": seed,
                "n": n,
                "T": T,
                "width": width,
                "realizable_patterns": pool.n_atoms,
                "all_patterns": 2**n - 2,
                "rho": rho,
                "optimum": opt.primal,
                "optimum_gap": opt.gap,
                "enumeration_s": t_enum,
                "methods": rows,
            },
        )
        print(
            f"[eval] tiny seed {seed}: {pool.n_atoms} patterns, optimum {opt.primal:.6f}",
            file=sys.stderr,
        )


def _mean_ci(v: list[float]) -> str:
    if not v:
        return "-"
    m = statistics.fmean(v)
    if len(v) < 2:
        return f"{m:.3f}"
    from scipy.stats import t

    h = t.ppf(0.975, len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v))
    return f"{m:.3f} ± {h:.3f}"


def summary(path: Path) -> None:
    newest: dict[str, dict[str, Any]] = {}  # a rerun row replaces the earlier one
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            newest.pop(row["key"], None)
            newest[row["key"]] = row
    rows = list(newest.values())
    sett = [r for r in rows if r["kind"] == "setting"]
    for name in SETTINGS:
        rs = [r for r in sett if r["setting"] == name]
        if not rs:
            continue
        print(f"\n### {name} (paper: {PAPER[name]})\n")
        print(
            "| seed | CVX-CG: P, s, acc | CVX at P below: K, P, acc | CVX at P above: K, P, acc | "
            "CVX at equal time: K, s, acc | CVX at K0 |"
        )
        print("|---|---|---|---|---|---|")
        agg: dict[str, list[float]] = {"cg": [], "lo": [], "hi": [], "eqt": [], "k0": []}
        for seed in sorted({r["seed"] for r in rs}):
            cg = [r for r in rs if r["seed"] == seed and r["method"] == "cvx-cg"]
            lad = sorted(
                (r for r in rs if r["seed"] == seed and r["method"] == "cvx"), key=lambda r: r["K"]
            )
            if not cg or not lad:
                continue
            cg = cg[0]
            lo = [r for r in lad if r["P"] <= cg["P"]][-1:] or [lad[0]]
            hi = [r for r in lad if r["P"] >= cg["P"]][:1] or [lad[-1]]
            under = [r for r in lad if r["time_s"] <= cg["time_s"]]
            eqt = under[-1] if under else lad[0]
            # the ladder's top still faster than CVX-CG: equal time lies beyond it
            beyond = "+" if eqt is lad[-1] and eqt["time_s"] < cg["time_s"] else ""
            for k, r in (("cg", cg), ("lo", lo[0]), ("hi", hi[0]), ("eqt", eqt), ("k0", lad[0])):
                agg[k].append(r["test_acc"])
            print(
                f"| {seed} | {cg['P']}, {cg['time_s']:.0f}, {cg['test_acc']:.3f} | "
                f"{lo[0]['K']}, {lo[0]['P']}, {lo[0]['test_acc']:.3f} | "
                f"{hi[0]['K']}, {hi[0]['P']}, {hi[0]['test_acc']:.3f} | "
                f"{eqt['K']}{beyond}, {eqt['time_s']:.0f}, {eqt['test_acc']:.3f} | "
                f"{lad[0]['test_acc']:.3f} |"
            )
        print(
            f"| mean ± 95% | {_mean_ci(agg['cg'])} | {_mean_ci(agg['lo'])} | "
            f"{_mean_ci(agg['hi'])} | {_mean_ci(agg['eqt'])} | {_mean_ci(agg['k0'])} |"
        )
        print("\nCVX ladder (all seeds): K, mean P, mean time s, test acc")
        for K in sorted({r["K"] for r in rs if r["method"] == "cvx"}):
            lr = [r for r in rs if r["method"] == "cvx" and r["K"] == K]
            print(
                f"- K={K}: P {statistics.fmean(r['P'] for r in lr):.0f}, "
                f"{statistics.fmean(r['time_s'] for r in lr):.0f} s, "
                f"acc {_mean_ci([r['test_acc'] for r in lr])}, "
                f"max gap {max(r['gap'] for r in lr):.1e}"
            )
        for r in (r for r in rs if r["method"] == "cvx-cg"):
            c = r["cg"]
            per = ", ".join(
                f"{x['round']}: P={x['n_atoms']} primal={x['primal']:.4f} val={x['val_acc']:.3f}"
                + (f" test={x['test_row_acc']:.3f}" if x.get("test_row_acc") is not None else "")
                for x in c["rounds"]
            )
            print(
                f"- seed {r['seed']} rounds ({c['stop_reason']}, gap {r['gap']:.1e}, "
                f"examined-set gap {c['examined_gap']:.3g}, all-pattern distance "
                f"{c['bounds']['distance']:.3g}): {per}"
            )
    tiny = [r for r in rows if r["kind"] == "tiny"]
    if tiny:
        print("\n### tiny instances (distance to the enumerated global optimum)\n")
        labels = [f"cvx K={k}" for k in (2, 8, 32, 128)]
        labels += ["cvx-cg random", "cvx-cg ascent", "cvx-cg exact pricing"]
        print(
            "| seed | patterns (of 2^n - 2) | optimum | "
            + " | ".join(labels)
            + " | all-pattern bound | ascent: examined-set bound |"
        )
        print("|---|---|---|" + "---|" * (len(labels) + 2))
        for r in tiny:
            ms = r["methods"]
            cells = [f"{ms[k]['relative_distance']:+.1%} (P={ms[k]['P']})" for k in labels]
            lb = ms["cvx-cg exact pricing"]["lower_bound_all_patterns"]
            ex = ms["cvx-cg ascent"]["examined_lower_bound"]
            print(
                f"| {r['seed']} | {r['realizable_patterns']} ({r['all_patterns']}) | "
                f"{r['optimum']:.4f} | " + " | ".join(cells) + f" | {lb:.4f} | {ex:.4f} |"
            )
        for r in tiny:
            stops = [
                f"{k.removeprefix('cvx-cg ')}: {r['methods'][k]['stop_reason']} after "
                f"{r['methods'][k]['rounds']} rounds"
                for k in labels
                if k.startswith("cvx-cg")
            ]
            print(f"- seed {r['seed']}: " + "; ".join(stops))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="*", default=[], choices=list(SETTINGS))
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--k0", type=int, default=8)
    ap.add_argument("--k-max", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--atoms", type=int, default=32)
    ap.add_argument("--data-dir", default=os.environ.get("CVXSNN_DATA_DIR"))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--rerun-cg", action="store_true", help="run the cvx-cg rows again (the newest row wins)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.summary:
        summary(args.out)
        return
    if args.tiny:
        run_tiny(args.seeds, args)
    run_settings(args.settings, args.seeds, args)


if __name__ == "__main__":
    main()
