"""CVX on full MNIST-SEQ: every training image outside the validation pool, T = 28.

Stages, each timed with the peak RSS after it: task (50,000 training sequences, the most
the task allows), Gaussian witnesses, a pilot dictionary on ``--pilot`` samples (its time,
scaled linearly to n, is printed as the projected dictionary time before the full build),
the memory estimate (``estimate_dictionary_bytes``, printed before the large allocation),
then ``cvxsnn.pipeline.fit_convex`` (dictionary, rho path selected on validation,
support reduction, reconstruction with its exact-spike check) and test evaluation.
Progress lines go to stderr with time stamps, so a run stopped by a time limit still
shows which stage it reached and how far.

Examples
--------
    python benchmarks/bench_scale_mnist.py                          # K = 640, m = 32
    python benchmarks/bench_scale_mnist.py --branches 320 --width 64 --threads=2
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cvxsnn.dictionary import (  # noqa: E402
    _chunk_samples,
    _limit,
    available_memory,
    build_dictionary,
    estimate_dictionary_bytes,
)
from cvxsnn.evaluate import evaluate  # noqa: E402
from cvxsnn.pipeline import TrainConfig, fit_convex  # noqa: E402
from cvxsnn.records import StageTimer, peak_memory_mb  # noqa: E402
from cvxsnn.tasks import make_task  # noqa: E402
from cvxsnn.witnesses import sample_witnesses  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import DATA_DIR  # noqa: E402

N_MAX = 50_000  # 60,000 training images minus the validation pool (60,000 // 6)
T0 = time.perf_counter()


def rss_gib() -> float:
    """Peak resident memory of this process so far (GiB); the stage timer's resets of the
    kernel's high-water mark are accounted for by ``peak_memory_mb``."""
    return peak_memory_mb()["host_peak_rss_mib"] / 1024


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:8.1f} s | peak RSS {rss_gib():6.2f} GiB] {msg}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=N_MAX, help="training sequences (max 50000)")
    ap.add_argument("--branches", type=int, default=640, help="K")
    ap.add_argument("--width", type=int, default=32, help="m (last layer; L = 3)")
    ap.add_argument("--n-rhos", type=int, default=6, help="rho path length")
    ap.add_argument("--pilot", type=int, default=1000, help="samples of the pilot build")
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--threads", default="1", help="torch/BLAS threads (write --threads=N)")
    ap.add_argument("--memory-gib", type=float, default=24.0, help="memory limit of the build")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(args.threads))
    K, m, L, T = args.branches, args.width, 3, 28
    log(f"threads {args.threads}, load average {os.getloadavg()}, K={K} m={m} raw atoms {K * m}")
    timer = StageTimer()
    cfg = TrainConfig(
        task="mnist-seq",
        steps=T,
        n_train=args.n,
        n_val=2000,
        n_test=args.n_test,
        data_dir=str(DATA_DIR),
        method="cvx",
        depth=L,
        branches=K,
        width=m,
        n_rhos=args.n_rhos,
        rho_min_ratio=1e-2,
        seed=0,
    )
    with timer("task"):
        task = make_task(
            "mnist-seq",
            steps=T,
            n_train=args.n,
            n_val=cfg.n_val,
            n_test=cfg.n_test,
            seed=0,
            data_dir=cfg.data_dir,
        )
    log(f"task: train {task.train.n}, val {task.val.n}, test {task.test.n}")
    with timer("witnesses"):
        params = sample_witnesses(
            task.train.d,
            (m,) * (L - 1),
            K,
            sigma=cfg.sigma,
            generator=torch.Generator().manual_seed(0),
            dtype=torch.float64,
            x=task.train.x.to(torch.float64),
        )
    log("witnesses drawn")
    x64 = task.train.x.to(torch.float64)
    with timer("pilot"):
        pilot = build_dictionary(params, x64[:, : args.pilot], task.train.steps)
    per = timer.seconds["pilot"] / args.pilot
    log(
        f"pilot dictionary on {args.pilot} samples: {timer.seconds['pilot']:.1f} s, P = "
        f"{pilot.atoms.shape[1]}; projected full build {per * args.n:.0f} s"
    )
    del pilot
    widths = (m,) * (L - 1)
    # the forward chunk build_dictionary will choose by itself (fit_convex passes none)
    chunk = _chunk_samples(None, T, args.n, K, task.train.d + 1, widths, _limit(None))
    est = estimate_dictionary_bytes(T, args.n, 1, K, task.train.d + 1, widths, chunk_rows=chunk)
    avail = available_memory()
    log(
        f"memory estimate of the dictionary build: {est / 2**30:.2f} GiB (uint8 atoms "
        f"{args.n * K * m / 2**30:.2f} GiB; float64 copy for a dense solve would be "
        f"{8 * args.n * K * m / 2**30:.2f} GiB); available {avail / 2**30 if avail else 0:.1f} "
        f"GiB, limit {args.memory_gib} GiB; forward chunk {chunk} samples"
    )
    if est > args.memory_gib * 2**30:
        raise SystemExit(f"estimate {est / 2**30:.2f} GiB exceeds --memory-gib {args.memory_gib}")
    fit = fit_convex(params, task, cfg, timer, progress=True)
    log(
        f"fit done: P {fit.dictionary.atoms.shape[1]} of {fit.dictionary.n_atoms_raw}, rho "
        f"{fit.rho:.3e}, support {int((fit.coef != 0).any(axis=1).sum())}, gap "
        f"{fit.certificate.gap:.2e}, rel gap {fit.certificate.rel_gap:.2e}"
    )
    # Training accuracy from D W + b: verify_reconstruction (inside fit_convex) has just
    # checked that the rebuilt network's outputs on every training row equal it to 1e-9
    # with identical spikes, so a second forward pass over the 50,000 sequences would
    # recompute the same numbers. Validation and test run through the network.
    # in row blocks: the float64 copy of the support columns at once (2.9 GB at n = 50,000,
    # support 7,388) set the process's peak RSS above every pipeline stage
    used = np.flatnonzero(np.any(fit.coef != 0, axis=1))
    atoms = fit.dictionary.atoms
    scores = np.empty((atoms.shape[0], fit.coef.shape[1]))
    for a in range(0, atoms.shape[0], 4096):
        block = atoms[a : a + 4096, used].astype(np.float64)
        scores[a : a + 4096] = block @ fit.coef[used] + fit.intercept
    train_acc = float(np.mean(scores.argmax(axis=1) == task.train.targets[-1, :, 0].numpy()))
    with timer("evaluation"):
        metrics = {s: evaluate(fit.net, task, s)["acc"] for s in ("val", "test")}
    metrics = {"train (from D W + b)": round(train_acc, 4), **metrics}
    log(f"accuracy {metrics}")
    print("\n| stage | seconds | peak RSS in the stage, GiB |\n|---|---|---|")
    for k, v in timer.seconds.items():
        peak = timer.peak_rss_mib.get(k)
        print(f"| {k} | {v:.1f} | {'' if peak is None else f'{peak / 1024:.2f}'} |")
    print(f"\npeak RSS {rss_gib():.2f} GiB; total {time.perf_counter() - T0:.1f} s")
    print(f"rho path: {fit.path}")
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
