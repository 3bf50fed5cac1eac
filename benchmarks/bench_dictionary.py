"""Time spike-dictionary construction: cvxsnn vs a per-branch snnTorch loop, with a roofline.

Both sides get the same Gaussian witnesses and the same float64 data. cvxsnn runs
``build_dictionary`` (the kernel once per distinct input sequence, one matmul per layer
over all T and K, the LIF recurrence on (B, K, m) tensors, the rows of repeated samples
copied, then bit-packed deduplication of the columns). The peer is what one writes with
snnTorch: for every branch, a stack of ``nn.Linear`` + ``snn.Leaky(reset_mechanism=
"subtract")`` run step by step over T on every sample (the constant-1 input channel is
the first Linear's bias), keeping the last layer's spikes at the supervised steps; it does
not deduplicate columns. Before timing, the peer's raw spikes must equal cvxsnn's raw
spikes bit for bit (``last_layer_spikes``), and the deduplicated dictionary built from the
peer's spikes must equal ours. The ``distinct`` column counts the distinct input sequences
(FIRST-LAST-XOR at T = 6 has 64; MNIST-SEQ has no repeats).

The roofline measures this machine's matmul rate (float64 and float32, one large square
matmul) and memory bandwidth (a large copy), counts the build's matmul FLOPs over the
distinct samples and its compulsory bytes (every input read once, the uint8 spikes of the
supervised steps written once for every sample), and prints the larger of the two times
as the bound beside ours. A second, design-level byte count is printed too: every
layer's float64 currents and spikes written once and read once (32 bytes per
neuron-step), which is what a chunked eager forward moves when its (T, B, K, m) buffers
do not fit in cache.

Examples
--------
    python benchmarks/bench_dictionary.py                   # xor and mnist, 1 thread
    python benchmarks/bench_dictionary.py --tasks xor --repeat 5
    python benchmarks/bench_dictionary.py --tasks xor,add2,mnist,mnist640
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
import snntorch as snn  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import DATA_DIR, format_table, machine_rates, time_call  # noqa: E402

from cvxsnn.dictionary import (  # noqa: E402
    build_dictionary,
    dedup_columns,
    distinct_samples,
    last_layer_spikes,
)
from cvxsnn.network import HiddenParams  # noqa: E402
from cvxsnn.tasks import make_task  # noqa: E402
from cvxsnn.witnesses import sample_witnesses  # noqa: E402

BETA = 0.99
SETTINGS = {  # name -> (task, T, n, L, K, m)
    "xor": ("xor", 6, 2000, 3, 64, 32),
    "add2": ("addition", 6, 2000, 3, 64, 32),  # ADDITION base 2: some inputs repeat
    "mnist": ("mnist-seq", 28, 10000, 3, 64, 32),
    "mnist640": ("mnist-seq", 28, 2000, 3, 640, 32),  # the width of the full-scale run
}
# Bytes per neuron-step of the design count: the float64 current written by the matmul and
# read by the recurrence, the float64 spike written by the recurrence and read by the next
# layer's matmul (or the selection of the supervised steps).
DESIGN_BYTES_PER_NEURON_STEP = 32


def load(task: str, T: int, n: int, seed: int = 0) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Training inputs (T, n, d) float64 and the supervised steps."""
    kw = {"data_dir": str(DATA_DIR)} if task == "mnist-seq" else {}
    if task == "addition":
        kw["base"] = 2
    data = make_task(task, steps=T, n_train=n, n_val=10, n_test=10, seed=seed, **kw)
    return data.train.x.to(torch.float64), tuple(data.train.steps)


def snntorch_branches(params: HiddenParams, beta: float) -> list[list[tuple[nn.Linear, snn.Leaky]]]:
    """One Linear/Leaky stack per branch with the witnesses written in (float64)."""
    K = params.w_in.shape[0]
    weights = [params.w_in, *params.w_hidden]
    stacks = []
    for k in range(K):
        layers = []
        for layer, w in enumerate(weights):
            w_k = w[k].to(torch.float64)  # (m_{l-1} or d_eff, m_l)
            first = layer == 0
            lin = nn.Linear(
                w_k.shape[0] - int(first), w_k.shape[1], bias=first, dtype=torch.float64
            )
            with torch.no_grad():
                lin.weight.copy_((w_k[:-1] if first else w_k).T)
                if first:
                    lin.bias.copy_(w_k[-1])
            lif = snn.Leaky(
                beta=torch.tensor(beta, dtype=torch.float64),
                threshold=params.thetas[layer][k].to(torch.float64).clone(),
                reset_mechanism="subtract",
            )
            layers.append((lin, lif))
        stacks.append(layers)
    return stacks


def snntorch_spikes(stacks, x: torch.Tensor, steps: tuple[int, ...]) -> np.ndarray:
    """Last-layer spikes (S n, K m) uint8, step-major, by a Python loop over branches and T.

    The whole batch of n samples goes through each Linear at once (no chunking); a step's
    tensors are (n, m), small enough to stay in cache.
    """
    T, n, _ = x.shape
    S, K = len(steps), len(stacks)
    m = stacks[0][-1][0].out_features
    out = np.empty((S, n, K * m), dtype=np.uint8)
    want = {t: i for i, t in enumerate(steps)}
    with torch.no_grad():
        for k, layers in enumerate(stacks):
            mems = [lif.reset_mem() for _, lif in layers]
            for t in range(T):
                h = x[t]  # (n, d)
                for i, (lin, lif) in enumerate(layers):
                    # snnTorch emits float32 spikes whatever the dtype: cast for the next Linear
                    h, mems[i] = lif(lin(h.to(x.dtype)), mems[i])  # (n, m_l)
                if t in want:
                    out[want[t], :, k * m : (k + 1) * m] = h.to(torch.uint8).numpy()
    return out.reshape(S * n, K * m)


# --------------------------------------------------------------------------- #
# Roofline
# --------------------------------------------------------------------------- #
def build_cost(
    T: int, n: int, S: int, d_eff: int, K: int, widths: tuple[int, ...], n_run: int | None = None
) -> dict[str, float]:
    """Matmul FLOPs, compulsory bytes and design bytes of one forward pass of the build.

    ``n_run`` samples go through the kernel (the distinct ones; all ``n`` by default): the
    FLOPs and design bytes count those, the compulsory bytes read every input once and
    write every output row once.
    """
    n_run = n if n_run is None else n_run
    fan_in = [d_eff, *widths[:-1]]
    flops = sum(2.0 * T * n_run * K * a * b for a, b in zip(fan_in, widths, strict=True))
    neuron_steps = T * n_run * K * sum(widths)
    compulsory = 8.0 * T * n * d_eff + 1.0 * S * n * K * widths[-1]
    design = DESIGN_BYTES_PER_NEURON_STEP * neuron_steps + compulsory
    return {
        "flops": flops,
        "bytes": compulsory,
        "design_bytes": design,
        "neuron_steps": float(neuron_steps),
    }


def run_setting(name: str, repeat: int, rates: dict[str, float]) -> tuple[dict, dict]:
    task, T, n, L, K, m = SETTINGS[name]
    x, steps = load(task, T, n)
    d = x.shape[-1]
    widths = (m,) * (L - 1)
    params = sample_witnesses(d, widths, K, generator=torch.Generator().manual_seed(0))

    # correctness first: identical raw spikes, identical deduplicated dictionary
    ours_raw = last_layer_spikes(params, x, steps, beta=BETA)
    stacks = snntorch_branches(params, BETA)
    peer_raw = snntorch_spikes(stacks, x, steps)
    n_diff = int((ours_raw != peer_raw).sum())
    if n_diff:
        raise AssertionError(f"{name}: snnTorch and cvxsnn spikes differ in {n_diff} entries")
    sd = build_dictionary(params, x, steps, beta=BETA)
    groups = dedup_columns(peer_raw, drop_ones=True)
    if not np.array_equal(peer_raw[:, groups.representatives], sd.atoms):
        raise AssertionError(f"{name}: deduplicated dictionaries differ")

    t_ours = time_call(lambda: build_dictionary(params, x, steps, beta=BETA), repeat=repeat)
    t_peer = time_call(lambda: snntorch_spikes(stacks, x, steps), repeat=repeat)
    distinct = distinct_samples(x)
    n_run = n if distinct is None else len(distinct.first)
    # The bound is for the work the build must do: the kernel over the distinct samples.
    cost = build_cost(T, n, len(steps), d + 1, K, widths, n_run=n_run)
    t_flop = cost["flops"] / rates["flops_float64"]
    t_mem = cost["bytes"] / rates["bandwidth"]
    t_design = cost["design_bytes"] / rates["bandwidth"]
    base = {"setting": f"{name} n={n} T={T} L={L} K={K} m={m}", "distinct": n_run, "P_raw": K * m}
    row = {
        **base,
        "P": sd.atoms.shape[1],
        "cvxsnn_s": t_ours.median_s,
        "snntorch_s": t_peer.median_s,
        "ratio": t_peer.median_s / t_ours.median_s,
        "cvxsnn_ms/sample": 1e3 * t_ours.median_s / n,
        "cvxsnn_peak_MiB": t_ours.peak_mib,
        "snntorch_peak_MiB": t_peer.peak_mib,
        "spikes_equal": "yes",
    }
    bound = max(t_flop, t_mem)
    roof = {
        **base,
        "GFLOP": cost["flops"] / 1e9,
        "GB_compulsory": cost["bytes"] / 1e9,
        "GB_design": cost["design_bytes"] / 1e9,
        "t_flop_s": t_flop,
        "t_mem_s": t_mem,
        "t_design_s": t_design,
        "bound_s": bound,
        "cvxsnn_s": t_ours.median_s,
        "achieved_GFLOP/s": cost["flops"] / t_ours.median_s / 1e9,
        "x_bound": t_ours.median_s / bound,
    }
    return row, roof


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="xor,mnist", help=f"comma list of {list(SETTINGS)}")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", default="1", help="torch/BLAS threads (write --threads=N)")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(args.threads))
    names = [t for t in args.tasks.split(",") if t]
    for t in names:
        if t not in SETTINGS:
            raise ValueError(f"--tasks must name settings among {list(SETTINGS)}; got {t!r}")
    print(f"threads {args.threads}, load average {os.getloadavg()}", flush=True)
    rates = machine_rates(args.repeat)
    print(
        f"machine: matmul float64 {rates['flops_float64'] / 1e9:.1f} GFLOP/s, float32 "
        f"{rates['flops_float32'] / 1e9:.1f} GFLOP/s; copy bandwidth "
        f"{rates['bandwidth'] / 1e9:.1f} GB/s",
        flush=True,
    )
    rows, roofs = [], []
    for name in names:
        row, roof = run_setting(name, args.repeat, rates)
        rows.append(row)
        roofs.append(roof)
        print(f"{name}: done ({row['cvxsnn_s']:.3g} s vs {row['snntorch_s']:.3g} s)", flush=True)
    print()
    cols = [
        "setting",
        "distinct",
        "P_raw",
        "P",
        "cvxsnn_s",
        "snntorch_s",
        "ratio",
        "cvxsnn_ms/sample",
    ]
    print(format_table(rows, [*cols, "cvxsnn_peak_MiB", "snntorch_peak_MiB", "spikes_equal"]))
    print()
    print(
        format_table(
            roofs,
            [
                "setting",
                "GFLOP",
                "GB_compulsory",
                "GB_design",
                "t_flop_s",
                "t_mem_s",
                "t_design_s",
                "bound_s",
                "cvxsnn_s",
                "achieved_GFLOP/s",
                "x_bound",
            ],
        )
    )
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.1f} s")
