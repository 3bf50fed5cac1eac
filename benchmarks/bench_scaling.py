"""How the CVX pipeline's cost grows with n, K (and so P), L and T: time per stage and peak RSS.

Each point is one ``cvxsnn.pipeline.train`` run of CVX on FIRST-LAST-XOR (Gaussian
witnesses, rho path selected on validation, support reduction, reconstruction with its
exact check, evaluation), in a fresh subprocess so that its peak resident memory is its
own. One axis moves at a time around the base point n = 1000, K = 16, m = 32, L = 3,
T = 6. Every point is repeated ``--repeat`` times; the medians are kept.

    python benchmarks/bench_scaling.py --out docs/results/scaling.jsonl --plot docs/perf_scaling.png
    python benchmarks/bench_scaling.py --plot-only --out docs/results/scaling.jsonl --plot ...

Rows already in ``--out`` are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BASE = dict(n=1000, K=16, L=3, T=6)
AXES = {
    "n": [250, 500, 1000, 2000, 4000, 8000],
    "K": [4, 8, 16, 32, 64, 128],
    "L": [2, 3, 5, 10, 15],
    "T": [6, 11, 14, 28, 56],
}
STAGES = ("dictionary", "solve", "reconstruction", "evaluation")

CHILD = r"""
import json, resource, sys, torch
from cvxsnn.pipeline import TrainConfig, train
p = json.loads(sys.argv[1])
torch.set_num_threads(1)
cfg = TrainConfig(task="xor", method="cvx", n_train=p["n"], n_val=500, n_test=1000,
                  branches=p["K"], width=32, depth=p["L"], steps=p["T"], seed=0, threads=1)
rec = train(cfg, progress=False).record
print(json.dumps({"time_s": rec["time_s"], "P_raw": rec["P_raw"], "P": rec["P"],
                  "test_acc": rec["test_acc"], "gap": rec["gap"],
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_point(point: dict[str, int]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(point)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(path: Path, repeat: int) -> None:
    done = set()
    if path.exists():
        done = {json.loads(line)["key"] for line in path.read_text().splitlines() if line}
    for axis, values in AXES.items():
        for v in values:
            point = {**BASE, axis: v}
            key = f"{axis}={v}"
            if key in done:
                continue
            runs = [run_point(point) for _ in range(repeat)]
            row = {
                "key": key,
                "axis": axis,
                "value": v,
                **point,
                "repeat": repeat,
                "P_raw": runs[0]["P_raw"],
                "P": runs[0]["P"],
                "test_acc": runs[0]["test_acc"],
                "gap": max(r["gap"] for r in runs),
                "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
                "total_s": statistics.median(r["time_s"]["total"] for r in runs),
                **{
                    f"{s}_s": statistics.median(r["time_s"].get(s, 0.0) for r in runs)
                    for s in STAGES
                },
            }
            print(json.dumps(row), flush=True)
            with open(path, "a") as fh:
                fh.write(json.dumps(row) + "\n")


def plot(path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for j, axis in enumerate(AXES):
        rs = sorted((r for r in rows if r["axis"] == axis), key=lambda r: r["value"])
        if not rs:
            continue
        xs = [r["P"] if axis == "K" else r["value"] for r in rs]
        ax = axes[0, j]
        for s in STAGES:
            ax.plot(xs, [max(r[f"{s}_s"], 1e-3) for r in rs], marker="o", label=s)
        ax.plot(xs, [r["total_s"] for r in rs], marker="s", color="k", label="total")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("P (atoms after dedup; K varies)" if axis == "K" else axis)
        ax.set_ylabel("seconds (median)")
        ax.set_title(f"time vs {'P' if axis == 'K' else axis}")
        if j == 0:
            ax.legend(fontsize=8)
        ax = axes[1, j]
        ax.plot(xs, [r["peak_rss_mib"] for r in rs], marker="o", color="tab:red")
        ax.set_xscale("log")
        ax.set_xlabel("P" if axis == "K" else axis)
        ax.set_ylabel("peak RSS (MiB)")
        ax.set_title(f"memory vs {'P' if axis == 'K' else axis}")
    base = ", ".join(f"{k}={v}" for k, v in BASE.items())
    fig.suptitle(f"CVX pipeline on FIRST-LAST-XOR, one thread; one axis moves from {base}")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/results/scaling.jsonl"))
    ap.add_argument("--plot", type=Path, default=Path("docs/perf_scaling.png"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    if not args.plot_only:
        measure(args.out, args.repeat)
    plot(args.out, args.plot)


if __name__ == "__main__":
    main()
