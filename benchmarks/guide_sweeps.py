"""Sweeps behind docs/CHOOSING_PARAMETERS.md: witness scale sigma, K against m at a fixed
number of raw atoms, and where the validation-selected rho lies on the path.

Every run is CVX through ``cvxsnn.pipeline.train`` (rho path selected on validation,
certified solve, rebuilt network, test metrics of the rebuilt network), one thread,
appended to ``--out`` as it finishes and skipped when the script runs again.

    python benchmarks/guide_sweeps.py                 # runs what is missing, then prints
    python benchmarks/guide_sweeps.py --summary       # prints the tables only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvxsnn.pipeline import TrainConfig, train

SETTINGS: dict[str, dict[str, Any]] = {
    "xor-L10-T6": dict(task="xor", depth=10, steps=6, n_train=2000, n_val=500, n_test=1000),
    "add3-L3": dict(
        task="addition", base=3, depth=3, steps=6, n_train=2000, n_val=500, n_test=1000
    ),
    "mnist-L3-T14": dict(task="mnist-seq", depth=3, steps=14, n_train=2000, n_val=500, n_test=1000),
    "xor-L3-T14": dict(task="xor", depth=3, steps=14, n_train=2000, n_val=500, n_test=1000),
}
SIGMAS = ("0.25", "0.5", "1", "2", "4", "calibrated")
KM = ((128, 8), (32, 32), (8, 128))  # K x m = 1024 raw atoms
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "guide_sweeps.jsonl"


def _runs(seeds: list[int]) -> list[tuple[str, str, dict[str, Any]]]:
    runs = []
    for name in SETTINGS:
        for s in SIGMAS:
            kw = {"witnesses": "calibrated"} if s == "calibrated" else {"sigma": float(s)}
            for seed in seeds:
                runs.append(
                    (f"sigma|{name}|{s}|{seed}", name, dict(kw, branches=16, width=32, seed=seed))
                )
        for K, m in KM:
            for seed in seeds:
                runs.append(
                    (f"km|{name}|{K}x{m}|{seed}", name, dict(branches=K, width=m, seed=seed))
                )
    return runs


def run(seeds: list[int], out: Path, data_dir: str | None) -> None:
    done = set()
    if out.exists():
        done = {json.loads(line)["key"] for line in out.read_text().splitlines() if line}
    for key, name, kw in _runs(seeds):
        if key in done:
            continue
        cfg = TrainConfig(**SETTINGS[name], **kw, method="cvx", threads=1, data_dir=data_dir)
        try:
            rec = train(cfg, progress=False).record
        except ValueError as err:  # e.g. every sampled neuron silent: nothing to solve over
            if "dictionary is empty" not in str(err):
                raise
            row = {"key": key, "setting": name, **kw, "empty": True, "error": str(err)}
            with open(out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"[guide] {key}: empty dictionary", file=sys.stderr)
            continue
        top = rec["rho_path"][0]["rho"] / float(
            np.geomspace(1.0, cfg.rho_min_ratio, cfg.n_rhos + 1)[1]
        )
        row = {
            "key": key,
            "setting": name,
            **{k: v for k, v in kw.items()},
            "P_raw": rec["P_raw"],
            "P": rec["P"],
            "n_zero": rec["n_zero"],
            "n_ones": rec["n_ones"],
            "n_duplicate": rec["n_duplicate"],
            "support": rec["support_size"],
            "rho": rec["rho"],
            "rho_over_max": rec["rho"] / top if rec["rho_path"] else None,
            "path": [(p["rho"] / top, p["val_acc"]) for p in rec["rho_path"]],
            "val_acc": rec["metrics"]["val"].get("acc"),
            "test_acc": rec["test_acc"],
            "gap": rec["gap"],
            "time_s": rec["time_s"]["total"],
        }
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        print(f"[guide] {key}: test {row['test_acc']:.3f} P {row['P']}", file=sys.stderr)


def _mean_ci(v: list[float]) -> str:
    if len(v) < 2:
        return f"{v[0]:.3f}" if v else "-"
    from scipy.stats import t

    h = t.ppf(0.975, len(v) - 1) * statistics.stdev(v) / math.sqrt(len(v))
    return f"{statistics.fmean(v):.3f} ± {h:.3f}"


def summary(out: Path) -> None:
    rows = [json.loads(line) for line in out.read_text().splitlines() if line]
    print("### Witness scale (K = 16, m = 32: 512 raw atoms)\n")
    print(
        "| setting | " + " | ".join(f"sigma {s}" if s != "calibrated" else s for s in SIGMAS) + " |"
    )
    print("|---|" + "---|" * len(SIGMAS))
    for name in SETTINGS:
        cells = []
        for s in SIGMAS:
            rs = [r for r in rows if r["key"].startswith(f"sigma|{name}|{s}|")]
            if rs and all(r.get("empty") for r in rs):
                cells.append(f"empty dictionary ({len(rs)} seeds)")
                continue
            n_empty = sum(bool(r.get("empty")) for r in rs)
            rs = [r for r in rs if not r.get("empty")]
            if not rs:
                cells.append("-")
                continue
            note = f"; {n_empty} seed(s) with an empty dictionary" if n_empty else ""
            cells.append(
                f"{_mean_ci([r['test_acc'] for r in rs])} "
                f"(P {statistics.fmean(r['P'] for r in rs):.0f}{note})"
            )
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n### K against m at K m = 1024 raw atoms (sigma = 1)\n")
    print("| setting | " + " | ".join(f"K={K}, m={m}" for K, m in KM) + " |")
    print("|---|" + "---|" * len(KM))
    for name in SETTINGS:
        cells = []
        for K, m in KM:
            rs = [r for r in rows if r["key"].startswith(f"km|{name}|{K}x{m}|")]
            if not rs:
                cells.append("-")
                continue
            acc = _mean_ci([r["test_acc"] for r in rs])
            cells.append(f"{acc} (P {statistics.fmean(r['P'] for r in rs):.0f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n### Selected rho / rho_max (all runs above)\n")
    for name in SETTINGS:
        v = [r["rho_over_max"] for r in rows if r["setting"] == name and r.get("rho_over_max")]
        if v:
            gap = max(r["gap"] for r in rows if r["setting"] == name and "gap" in r)
            print(
                f"- {name}: median {statistics.median(v):.3g}, range {min(v):.3g}-{max(v):.3g}"
                f" over {len(v)} runs; max gap {gap:.1e}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--data-dir", default=os.environ.get("CVXSNN_DATA_DIR"))
    ap.add_argument("--summary", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.summary:
        run(args.seeds, args.out, args.data_dir)
    summary(args.out)


if __name__ == "__main__":
    main()
