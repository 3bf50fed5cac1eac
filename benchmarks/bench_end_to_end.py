"""Wall time of CVX and SG to their final test accuracy, through ``cvxsnn.pipeline.train``.

Both methods get the same task, architecture (L, T, K, m), seed and split. CVX: Gaussian
witnesses, dictionary, the rho path (validation-selected), reconstruction, evaluation. SG:
the fixed protocol of ``SGConfig`` (Adam, batch 64, learning rates 1e-3, 3e-3, 1e-2, each
up to ``epochs`` with patience 30, best validation epoch and rate kept). The protocol's
200 epochs per rate do not fit a ~10-minute benchmark on two shared cores, so by default
SG runs with ``--sg-epochs`` (10) per rate: a budget-limited run, printed as such in every
row. Pass ``--sg-epochs 0`` for the full protocol.

Examples
--------
    python benchmarks/bench_end_to_end.py
    python benchmarks/bench_end_to_end.py --settings xor10 --sg-epochs 0 --n 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

_THREADS = next((a.split("=")[1] for a in sys.argv if a.startswith("--threads=")), "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import DATA_DIR, format_table  # noqa: E402

from cvxsnn.pipeline import TrainConfig, train  # noqa: E402

SETTINGS = {  # name -> TrainConfig keywords
    "xor10": dict(task="xor", steps=6, depth=10),
    "mnist": dict(task="mnist-seq", steps=28, depth=3, data_dir=str(DATA_DIR)),
}


def run(name: str, method: str, n: int, K: int, m: int, sg_epochs: int, threads: int) -> dict:
    kw = dict(SETTINGS[name])
    cfg = TrainConfig(
        **kw,
        method=method,
        n_train=n,
        n_val=500,
        n_test=1000,
        branches=K,
        width=m,
        epochs=(sg_epochs or None) if method == "sg" else None,
        threads=threads,
        seed=0,
    )
    t0 = time.perf_counter()
    rec = train(cfg, progress=False).record
    wall = time.perf_counter() - t0
    row = {
        "setting": f"{name} L={cfg.depth} T={cfg.T} K={K} m={m} n={n}",
        "method": method,
        "wall_s": wall,
        "test_acc": rec["test_acc"],
        "val_acc": rec["metrics"]["val"].get("acc", float("nan")),
        "stages": ", ".join(f"{k} {v:.3g}" for k, v in rec["time_s"].items() if k != "total"),
        "peak_rss_MiB": rec["memory"]["host_peak_rss_mib"],
    }
    if method == "cvx":
        row["detail"] = f"P {rec['P']}/{rec['P_raw']}, support {rec['support_size']}, "
        row["detail"] += f"rel gap {rec['rel_gap']:.1e}"
    else:
        sg = rec["sg"]
        budget = "full protocol" if not sg_epochs else f"BUDGET-LIMITED {sg_epochs} ep/lr"
        row["detail"] = f"{budget}; lr {sg['sg_selected_lr']:g}, kept epoch {sg['sg_epochs']}"
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="xor10,mnist", help=f"comma list of {list(SETTINGS)}")
    ap.add_argument("--n", type=int, default=1000, help="training sequences")
    ap.add_argument("--branches", type=int, default=16, help="K")
    ap.add_argument("--width", type=int, default=32, help="m")
    ap.add_argument("--sg-epochs", type=int, default=10, help="epochs per rate; 0 = protocol")
    ap.add_argument("--threads", default="1", help="torch/BLAS threads (write --threads=N)")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(args.threads))
    print(f"threads {args.threads}, load average {os.getloadavg()}", flush=True)
    rows = []
    for name in [s for s in args.settings.split(",") if s]:
        if name not in SETTINGS:
            raise ValueError(f"--settings must name among {list(SETTINGS)}; got {name!r}")
        for method in ("cvx", "sg"):
            row = run(name, method, args.n, args.branches, args.width, args.sg_epochs, 1)
            rows.append(row)
            print(f"{name} {method}: {row['wall_s']:.1f} s, test {row['test_acc']}", flush=True)
    for r in rows:
        cvx = next(c for c in rows if c["setting"] == r["setting"] and c["method"] == "cvx")
        r["sg/cvx_time"] = r["wall_s"] / cvx["wall_s"]
    print()
    cols = ["setting", "method", "wall_s", "sg/cvx_time", "test_acc", "val_acc", "detail"]
    print(format_table(rows, [*cols, "stages", "peak_rss_MiB"]))
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.1f} s")
