"""How the CVX pipeline's cost grows with n, K (and so P), L and T: time per stage and peak RSS.

Each point is one ``cvxsnn.pipeline.train`` run of CVX (Gaussian witnesses, rho path
selected on validation, support reduction, reconstruction with its exact check,
evaluation), in a fresh subprocess so that its peak resident memory is its own. One axis
moves at a time around a base point: MNIST-SEQ n = 1000, K = 16, m = 32, L = 3, T = 28
(every training sequence distinct), or FIRST-LAST-XOR n = 1000, K = 16, m = 32, L = 3,
T = 6 (``--task xor``; at T = 6 it has 64 distinct inputs, which the dictionary build
and the solver merge, so its cost barely grows with n). 500 validation and 1,000 test
samples. Every point is repeated ``--repeat`` times; the medians are kept.

    python benchmarks/bench_scaling.py --data-dir ../shared/data/mnist   # MNIST-SEQ
    python benchmarks/bench_scaling.py --task xor --out docs/results/scaling-xor.jsonl \
        --plot docs/results/perf_scaling_xor.png
    python benchmarks/bench_scaling.py --plot-only        # redraw from the rows kept

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

TASKS = {
    "xor": (
        dict(n=1000, K=16, L=3, T=6),
        {
            "n": [250, 500, 1000, 2000, 4000, 8000],
            "K": [4, 8, 16, 32, 64, 128],
            "L": [2, 3, 5, 10, 15],
            "T": [6, 11, 14, 28, 56],
        },
    ),
    "mnist-seq": (  # T must divide the 784 pixels
        dict(n=1000, K=16, L=3, T=28),
        {
            "n": [250, 500, 1000, 2000, 4000, 8000],
            "K": [4, 8, 16, 32, 64, 128],
            "L": [2, 3, 5, 10, 15],
            "T": [7, 14, 28, 56],
        },
    ),
}
STAGES = ("dictionary", "solve", "reconstruction", "evaluation")

CHILD = r"""
import json, resource, sys, torch
from cvxsnn.pipeline import TrainConfig, train
p = json.loads(sys.argv[1])
torch.set_num_threads(1)
cfg = TrainConfig(task=p["task"], method="cvx", n_train=p["n"], n_val=500, n_test=1000,
                  branches=p["K"], width=32, depth=p["L"], steps=p["T"], seed=0, threads=1,
                  data_dir=p["data_dir"])
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


def measure(path: Path, repeat: int, task: str, data_dir: str | None) -> None:
    base, axes = TASKS[task]
    done = set()
    if path.exists():
        done = {json.loads(line)["key"] for line in path.read_text().splitlines() if line}
    for axis, values in axes.items():
        for v in values:
            point = {**base, axis: v}
            key = f"{task}:{axis}={v}"
            if key in done:
                continue
            runs = [run_point({**point, "task": task, "data_dir": data_dir}) for _ in range(repeat)]
            row = {
                "key": key,
                "task": task,
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
    """One column per axis: time per stage (top) and peak RSS (bottom), log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    def ticks(ax, xs) -> None:  # the measured values as plain labels, no minor clutter
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs], fontsize=7)
        ax.xaxis.set_minor_locator(NullLocator())

    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    task = rows[0].get("task", "xor")
    base, axes_of = TASKS[task]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for j, axis in enumerate(axes_of):
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
        ticks(ax, xs)
        ax = axes[1, j]
        ax.plot(xs, [r["peak_rss_mib"] for r in rs], marker="o", color="tab:red")
        ax.set_xscale("log")
        ax.set_xlabel("P" if axis == "K" else axis)
        ax.set_ylabel("peak RSS (MiB)")
        ax.set_title(f"memory vs {'P' if axis == 'K' else axis}")
        ticks(ax, xs)
    at = ", ".join(f"{k}={v}" for k, v in base.items())
    name = {"xor": "FIRST-LAST-XOR", "mnist-seq": "MNIST-SEQ"}[task]
    fig.suptitle(f"CVX pipeline on {name}, one thread; one axis moves from {at} (m=32)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.955), fontsize=8, ncol=5)
    fig.tight_layout(rect=(0, 0, 1, 0.91))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(TASKS), default="mnist-seq")
    ap.add_argument("--data-dir", default=os.environ.get("CVXSNN_DATA_DIR"), help="MNIST files")
    ap.add_argument("--out", type=Path, default=Path("docs/results/scaling-mnist.jsonl"))
    ap.add_argument("--plot", type=Path, default=Path("docs/results/perf_scaling_mnist.png"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    if not args.plot_only:
        if args.task == "mnist-seq" and not args.data_dir:
            ap.error("--data-dir (or CVXSNN_DATA_DIR) must name the folder of the MNIST files")
        measure(args.out, args.repeat, args.task, args.data_dir)
    plot(args.out, args.plot)


if __name__ == "__main__":
    main()
