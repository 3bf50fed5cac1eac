"""Plots (optional extra ``plot``: matplotlib, imported only when a plot is drawn).

- :func:`plot_raster`: spikes of every hidden layer of a network on one sample;
- :func:`plot_rates`: mean firing rate per hidden layer;
- :func:`plot_path`: readout coefficients vs rho along a regularization path;
- :func:`plot_support`: support size vs rho.

Each returns the matplotlib ``Figure``; :func:`save` writes it (Agg backend).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cvxsnn.network import ParallelLIFNet

__all__ = ["plot_path", "plot_raster", "plot_rates", "plot_support", "save"]


def _plt():
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install cvxsnn[plot]") from err
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_raster(net: ParallelLIFNet, x: Tensor, sample: int = 0) -> Any:
    """Spike raster of every hidden layer of ``net`` on sample ``sample`` of ``x`` (T, B, d)."""
    plt = _plt()
    if not 0 <= sample < x.shape[1]:
        raise ValueError(f"sample must lie in [0, {x.shape[1]}); got {sample}")
    with torch.no_grad():
        spikes = net.run_hidden(x[:, sample : sample + 1]).spikes
    L = len(spikes)
    fig, axes = plt.subplots(L, 1, figsize=(7, 1.8 * L + 0.6), sharex=True, squeeze=False)
    for l, s in enumerate(spikes):
        s = s[:, 0].reshape(s.shape[0], -1).cpu().numpy()  # (T, K m)
        t, j = np.nonzero(s)
        ax = axes[l, 0]
        ax.scatter(t, j, marker="|", s=30, color="k")
        ax.set_ylabel(f"layer {l + 1}\nneuron (K*m)")
        ax.set_ylim(-0.5, s.shape[1] - 0.5)
    axes[-1, 0].set_xlabel("step t")
    axes[-1, 0].set_xlim(-0.5, x.shape[0] - 0.5)
    fig.suptitle(f"spike raster, sample {sample}")
    fig.tight_layout()
    return fig


def plot_rates(net: ParallelLIFNet, x: Tensor) -> Any:
    """Mean firing rate (spikes per neuron per step) of each hidden layer on ``x`` (T, B, d)."""
    from cvxsnn.energy import activity

    plt = _plt()
    rates = activity(net, x)["rate"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(np.arange(1, len(rates) + 1), rates, color="tab:blue")
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("firing rate")
    ax.set_xticks(np.arange(1, len(rates) + 1))
    ax.set_ylim(0, max(1e-3, max(rates) * 1.15))
    fig.tight_layout()
    return fig


def _path_arrays(results: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    if not results:
        raise ValueError("results must hold at least one SolveResult; got none")
    rhos = np.array([float(r.rho) for r in results])
    coefs = np.stack(
        [np.asarray(r.coef, dtype=np.float64).reshape(r.coef.shape[0], -1) for r in results]
    )  # (R, P, C)
    return rhos, coefs


def plot_path(results: Sequence[Any], max_atoms: int = 50) -> Any:
    """Coefficients vs rho from SolveResults (e.g. :func:`cvxsnn.solver.solve_path`).

    Plots the ``max_atoms`` atoms with the largest coefficient anywhere on the path.
    """
    plt = _plt()
    rhos, coefs = _path_arrays(results)
    flat = coefs.transpose(1, 2, 0).reshape(-1, len(rhos))  # (P C, R)
    top = np.argsort(-np.abs(flat).max(axis=1))[:max_atoms]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i in top:
        ax.plot(rhos, flat[i], lw=1)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("rho")
    ax.set_ylabel("readout coefficient")
    ax.set_title("regularization path")
    fig.tight_layout()
    return fig


def plot_support(results: Sequence[Any]) -> Any:
    """Support size (atoms with a nonzero coefficient row) vs rho."""
    plt = _plt()
    rhos, coefs = _path_arrays(results)
    sizes = np.any(coefs != 0, axis=2).sum(axis=1)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(rhos, sizes, marker="o")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("rho")
    ax.set_ylabel("support size")
    fig.tight_layout()
    return fig


def save(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (PNG by suffix) and close it."""
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_file(
    kind: str,
    model: str,
    out: str,
    data: str | None = None,
    task: str | None = None,
    steps: int | None = None,
    n: int = 200,
    sample: int = 0,
    seed: int = 0,
) -> dict:
    """Draw ``kind`` ("raster", "rates", "path") for a saved model; the CLI's ``plot``.

    The data is ``X`` (n, T, d) of a ``.npz`` file or a generated task; for
    ``path`` the model's dictionary is rebuilt on that data's last step with
    the model's hidden layers and a rho path solved (squared loss, l1) on
    labels ``y`` (or the task's labels).
    """
    from cvxsnn.network import load_model

    kinds = ("raster", "rates", "path")
    if kind not in kinds:
        raise ValueError(f"kind must be one of {list(kinds)}; got {kind!r}")
    net, _ = load_model(model)
    y = None
    if data is not None:
        if not Path(data).is_file():
            raise FileNotFoundError(f"data file not found: {data}")
        with np.load(data) as f:
            X = f["X"]
            y = f["y"] if "y" in f else None
        x = torch.from_numpy(np.ascontiguousarray(X.transpose(1, 0, 2))).to(net.dtype)
        if y is not None and y.ndim == 2:
            y = y[:, -1]
    else:
        from cvxsnn.tasks import make_task

        td = make_task(task or "xor", steps=steps, n_train=n, n_val=1, n_test=1, seed=seed)
        x, y = td.train.x.to(net.dtype), td.train.targets[-1, :, 0].numpy()
    if kind == "raster":
        fig = plot_raster(net, x, sample)
    elif kind == "rates":
        fig = plot_rates(net, x)
    else:
        if y is None:
            raise ValueError("a path plot needs labels: an array 'y' in the data file")
        from cvxsnn.dictionary import build_dictionary
        from cvxsnn.estimator import encode_labels
        from cvxsnn.solver import solve_path

        dic = build_dictionary(
            net.hidden_params(),
            x.to(torch.float64),
            (x.shape[0] - 1,),
            beta=net.config.beta,
            bias_channel=net.config.bias_channel,
        )
        labels = np.asarray(y, dtype=np.int64)
        Y, heads, _, _ = encode_labels(labels, int(labels.max()) + 1, "squared")
        fig = plot_path(solve_path(dic.atoms, Y, n_rhos=12, heads=heads))
    path = save(fig, out)
    return {"kind": kind, "out": str(path)}
