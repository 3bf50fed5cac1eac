"""Time one surrogate-gradient training epoch: cvxsnn vs the same network in snnTorch.

cvxsnn: the inner loop of ``cvxsnn.sg.train_sg`` (the same calls: ``net(x, steps)``,
``sg_loss``, backward, gradient clipping at 1, Adam, threshold clamp), on the K-parallel
``ParallelLIFNet`` (one matmul per layer over all T and K). snnTorch: K separate
``nn.Linear`` + ``snn.Leaky`` stacks (learnable per-neuron threshold, sigmoid surrogate of
slope 5 via ``snntorch.surrogate.sigmoid``, subtractive reset), run step by step over T,
the last layer's spikes of all branches concatenated into one readout ``nn.Linear``;
cross-entropy at the last step, the same clipping, Adam and clamp. Both start from the
same weights (checked: equal initial loss), float32, the same batch order.

Examples
--------
    python benchmarks/bench_sg_epoch.py
    python benchmarks/bench_sg_epoch.py --tasks xor --repeat 5 --branches 64
    python benchmarks/bench_sg_epoch.py --tasks mnist56 --branches 64 --n 640

cvxsnn is timed twice: with its fused recurrence (the default) and with the step-by-step
graph of ``lif_step`` (``lif_run(..., fused=False)``); ``fused_gain`` is their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from pathlib import Path

_THREADS = next((a.split("=")[1] for a in sys.argv if a.startswith("--threads=")), "1")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import snntorch as snn  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from snntorch import surrogate  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import DATA_DIR, format_table, sg_epoch, time_call  # noqa: E402

import cvxsnn.network  # noqa: E402
from cvxsnn.network import NetConfig, ParallelLIFNet  # noqa: E402
from cvxsnn.sg import SGConfig, head_weights_for, sg_loss  # noqa: E402
from cvxsnn.tasks import make_task  # noqa: E402

SETTINGS = {  # name -> (task, T, L)
    "xor": ("xor", 6, 3),
    "mnist": ("mnist-seq", 28, 3),
    "mnist56": ("mnist-seq", 56, 3),  # Table 5b's longest sequences
}


class SnnTorchNet(nn.Module):
    """K separate Linear/Leaky stacks and one readout Linear over their concatenated spikes."""

    def __init__(self, net: ParallelLIFNet, slope: float) -> None:
        super().__init__()
        cfg = net.config
        K, beta = cfg.branches, cfg.beta
        weights = [net.w_in, *net.w_hidden]
        grad = surrogate.sigmoid(slope=slope)
        self.branches = nn.ModuleList()
        for k in range(K):
            layers = nn.ModuleList()
            for layer, w in enumerate(weights):
                w_k = w[k].detach()  # (fan_in, m_l)
                first = layer == 0
                lin = nn.Linear(w_k.shape[0] - int(first), w_k.shape[1], bias=first)
                with torch.no_grad():
                    lin.weight.copy_((w_k[:-1] if first else w_k).T)
                    if first:
                        lin.bias.copy_(w_k[-1])
                lif = snn.Leaky(
                    beta=torch.tensor(beta, dtype=torch.float32),
                    threshold=net.thetas[layer][k].detach().clone(),
                    spike_grad=grad,
                    learn_threshold=True,
                    reset_mechanism="subtract",
                )
                layers.append(nn.ModuleList([lin, lif]))
            self.branches.append(layers)
        m = cfg.widths[-1]
        self.readout = nn.Linear(K * m, cfg.n_out)
        with torch.no_grad():
            self.readout.weight.copy_(net.w_out.detach().reshape(K * m, -1).T)
            self.readout.bias.copy_(net.b_out.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) at the last step for inputs (T, B, d)."""
        T = x.shape[0]
        last = []
        for layers in self.branches:
            mems = [lif.reset_mem() for _, lif in layers]
            for t in range(T):
                h = x[t]
                for i, (lin, lif) in enumerate(layers):
                    h, mems[i] = lif(lin(h), mems[i])
            last.append(h)
        return self.readout(torch.cat(last, dim=1))  # (B, C)

    def thresholds(self) -> list[torch.Tensor]:
        return [lif.threshold for layers in self.branches for _, lif in layers]


@contextlib.contextmanager
def _recurrence(fused: bool):
    """cvxsnn's recurrence as one fused autograd node (the default) or, with
    ``fused=False``, as the step-by-step graph of ``lif_step``: the same values, timed
    side by side to show what the fused node saves."""
    if fused:
        yield
        return
    saved = cvxsnn.network.lif_run
    cvxsnn.network.lif_run = functools.partial(saved, fused=False)
    try:
        yield
    finally:
        cvxsnn.network.lif_run = saved


def run_setting(name: str, n: int, K: int, m: int, repeat: int) -> dict:
    task_name, T, L = SETTINGS[name]
    kw = {"data_dir": str(DATA_DIR)} if task_name == "mnist-seq" else {}
    task = make_task(task_name, steps=T, n_train=n, n_val=10, n_test=10, seed=0, **kw)
    sgc = SGConfig()  # the protocol: batch 64, sigmoid slope 5, clip 1, theta_min 1e-2
    train = task.train.to(dtype=torch.float32)
    x_all, y_all, steps = train.x, train.targets, train.steps  # (T, n, d), (S, n, H)
    if list(steps) != [T - 1]:
        raise ValueError(f"{name}: expected supervision at the last step only; got {steps}")
    weights = head_weights_for(train, sgc)
    cfg = NetConfig(
        d_in=train.d,
        widths=(m,) * (L - 1),
        branches=K,
        out_layout=train.head_classes,
        head_classes=train.head_classes,
        surrogate=sgc.surrogate,
        surrogate_scale=sgc.surrogate_scale,
    )
    lr = sgc.lrs[0]

    def fresh() -> ParallelLIFNet:
        net = ParallelLIFNet(cfg, dtype=torch.float32)
        net.reset_parameters(gain=sgc.init_gain, generator=torch.Generator().manual_seed(0))
        return net

    def ours_epoch(fused: bool = True) -> float:
        return sg_epoch(
            fresh(), x_all, y_all, steps, weights, sgc, context=lambda: _recurrence(fused)
        )

    def peer_epoch() -> float:
        net = SnnTorchNet(fresh(), sgc.surrogate_scale)
        net.train()
        params = list(net.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
        y = y_all[0, :, 0]
        total = 0.0
        for a in range(0, n, sgc.batch_size):
            idx = perm[a : a + sgc.batch_size]
            loss = F.cross_entropy(net(x_all[:, idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, sgc.grad_clip)
            opt.step()
            with torch.no_grad():
                for th in net.thresholds():
                    th.clamp_(min=sgc.theta_min)
            total += float(loss.detach()) * idx.numel()
        return total / n

    # same function at the same weights: equal loss on the first batch
    net0 = fresh()
    xb, yb = x_all[:, :256], y_all[:, :256]
    with torch.no_grad():
        l_ours = float(sg_loss(net0(xb, steps), yb, cfg.out_layout, weights))
        l_peer = float(F.cross_entropy(SnnTorchNet(net0, 5.0)(xb), yb[0, :, 0]))
    if abs(l_ours - l_peer) > 1e-4 * max(1.0, abs(l_ours)):
        raise AssertionError(f"{name}: initial losses differ: {l_ours} vs {l_peer}")

    t_ours = time_call(ours_epoch, repeat=repeat)
    t_graph = time_call(lambda: ours_epoch(fused=False), repeat=repeat)
    t_peer = time_call(peer_epoch, repeat=repeat)
    return {
        "setting": f"{name} n={n} T={T} L={L} K={K} m={m} B={sgc.batch_size}",
        "batches": -(-n // sgc.batch_size),
        "cvxsnn_s": t_ours.median_s,
        "snntorch_s": t_peer.median_s,
        "ratio": t_peer.median_s / t_ours.median_s,
        "cvxsnn_graph_s": t_graph.median_s,
        "fused_gain": t_graph.median_s / t_ours.median_s,
        "cvxsnn_peak_MiB": t_ours.peak_mib,
        "snntorch_peak_MiB": t_peer.peak_mib,
        "loss_ours": t_ours.result,
        "loss_snntorch": t_peer.result,
        "init_loss_equal": f"{abs(l_ours - l_peer):.1e}",
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="xor,mnist", help=f"comma list of {list(SETTINGS)}")
    ap.add_argument("--n", type=int, default=2000, help="training sequences (one epoch)")
    ap.add_argument("--branches", type=int, default=16, help="K")
    ap.add_argument("--width", type=int, default=32, help="m")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", default="1", help="torch/BLAS threads (write --threads=N)")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(args.threads))
    print(f"threads {args.threads}, load average {os.getloadavg()}", flush=True)
    rows = []
    for name in [t for t in args.tasks.split(",") if t]:
        if name not in SETTINGS:
            raise ValueError(f"--tasks must name settings among {list(SETTINGS)}; got {name!r}")
        rows.append(run_setting(name, args.n, args.branches, args.width, args.repeat))
        print(f"{name}: done", flush=True)
    print()
    cols = ["setting", "batches", "cvxsnn_s", "snntorch_s", "ratio", "cvxsnn_graph_s"]
    cols += ["fused_gain", "cvxsnn_peak_MiB"]
    cols += ["snntorch_peak_MiB", "loss_ours", "loss_snntorch", "init_loss_equal"]
    print(format_table(rows, cols))
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.1f} s")
