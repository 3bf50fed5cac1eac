"""One pass over the dictionary, D^T R, against its roofline on this machine.

The solver's outer iteration makes one full pass over the dictionary per certificate:
``D^T u`` for every atom (``cvxsnn.solver.certificate.Dictionary.dtr``). The dictionary is
stored atom-major as uint8 (one byte per entry) and each block of atoms is widened to
float64 in a cache-sized buffer before a BLAS product, so the pass reads n P bytes of
dictionary from memory. The roofline is the larger of its compulsory bytes (the uint8
dictionary, R and the output, each moved once) at the measured copy bandwidth and its
FLOPs (2 n P C) at the measured float64 matmul rate; both ceilings are measured in the
same run, so under the same load.

Beside it, the same product on a float64 copy of the dictionary (``R^T D`` by BLAS, 8
bytes per entry: the storage the peer libraries take as input), where it fits in memory.

Examples
--------
    python benchmarks/bench_pass.py                                  # real MNIST-SEQ + 50000 x 8000
    python benchmarks/bench_pass.py --real "" --sizes 50000x16000 --outputs 1,10
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_THREADS = next((a.split("=")[1] for a in sys.argv if a.startswith("--threads=")), "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import DATA_DIR, format_table, machine_rates, time_call  # noqa: E402
from bench_solver import real_problem  # noqa: E402

from cvxsnn.solver.certificate import Dictionary  # noqa: E402

COLUMNS = [
    "dictionary", "n", "P", "C", "GB read", "GFLOP", "t bytes s", "t flops s", "bound s",
    "cvxsnn s", "cvxsnn / bound", "achieved GB/s", "float64 copy s", "x cvxsnn",
]  # fmt: skip


def real_mnist(n: int, data_dir: str) -> tuple[str, np.ndarray]:
    """The MNIST-SEQ spike dictionary of the solver benchmark (T = 28, L = 3, K = 64)."""
    label, D, _ = real_problem("mnist", n, data_dir=data_dir)
    return label, D


def bernoulli(n: int, P: int, seed: int = 0) -> tuple[str, np.ndarray]:
    """A binary dictionary of the given size (the pass does not depend on the values)."""
    rng = np.random.default_rng(seed)
    return f"Bernoulli {n}x{P}", (rng.random((n, P), dtype=np.float32) < 0.3).astype(np.uint8)


def measure(label: str, D: np.ndarray, C: int, rates: dict, repeat: int, f64_max_gb: float):
    n, P = D.shape
    R = np.random.default_rng(1).standard_normal((n, C))
    dic = Dictionary(D)
    tm = time_call(lambda: dic.dtr(R), repeat, trace_memory=False)
    gb = (n * P * 1 + n * C * 8 + P * C * 8) / 1e9
    gflop = 2.0 * n * P * C / 1e9
    t_bytes = gb * 1e9 / rates["bandwidth"]
    t_flops = gflop * 1e9 / rates["flops_float64"]
    bound = max(t_bytes, t_flops)
    row = {
        "dictionary": label, "n": n, "P": P, "C": C, "GB read": gb, "GFLOP": gflop,
        "t bytes s": t_bytes, "t flops s": t_flops, "bound s": bound,
        "cvxsnn s": tm.median_s, "cvxsnn / bound": tm.median_s / bound,
        "achieved GB/s": gb / tm.median_s,
    }  # fmt: skip
    if n * P * 8 / 1e9 <= f64_max_gb:
        X = D.astype(np.float64)
        tf = time_call(lambda: R.T @ X, repeat, trace_memory=False)
        err = np.max(np.abs(tf.result.T - tm.result)) / max(1.0, np.max(np.abs(tm.result)))
        if err > 1e-12:
            raise AssertionError(f"{label}: the two products differ by {err:.2e}")
        row["float64 copy s"] = tf.median_s
        row["x cvxsnn"] = tf.median_s / tm.median_s
        del X
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", default="mnist", help="'mnist' or '' (none)")
    ap.add_argument("--mnist-n", type=int, default=10000)
    ap.add_argument("--data-dir", default=str(DATA_DIR))
    ap.add_argument("--sizes", default="50000x8000", help="comma list of NxP Bernoulli sizes")
    ap.add_argument("--outputs", default="1,10", help="comma list of C (columns of R)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--f64-max-gb", type=float, default=4.0, help="largest float64 copy")
    ap.add_argument("--threads", default="1", help="BLAS threads (write --threads=N)")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(args.threads))
    problems = []
    if args.real == "mnist":
        problems.append(real_mnist(args.mnist_n, args.data_dir))
    elif args.real:
        ap.error(f"--real must be 'mnist' or ''; got {args.real!r}")
    for size in filter(None, args.sizes.split(",")):
        n, P = (int(v) for v in size.lower().split("x"))
        problems.append(bernoulli(n, P))
    with open("/proc/loadavg") if os.path.exists("/proc/loadavg") else open(os.devnull) as f:
        print(f"load average: {f.read().strip()}", flush=True)
    rates = machine_rates(args.repeat)
    print(
        f"float64 matmul {rates['flops_float64'] / 1e9:.1f} GFLOP/s, copy bandwidth "
        f"{rates['bandwidth'] / 1e9:.1f} GB/s (read + write)",
        flush=True,
    )
    rows = []
    for label, D in problems:
        for C in map(int, args.outputs.split(",")):
            rows.append(measure(label, D, C, rates, args.repeat, args.f64_max_gb))
            print(format_table(rows[-1:], COLUMNS), flush=True)
    print("\n" + format_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
