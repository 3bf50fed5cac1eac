"""Plots write PNGs; the CLI's plot command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from cvxsnn.cli import main
from cvxsnn.network import NetConfig, ParallelLIFNet, save_model
from cvxsnn.plots import plot_path, plot_raster, plot_rates, plot_support, save
from cvxsnn.solver import solve_path


def _net():
    cfg = NetConfig(d_in=2, widths=(8, 6), branches=2)
    net = ParallelLIFNet(cfg, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.w_in.mul_(4)
    return net


def test_figures_written(tmp_path):
    net = _net()
    x = torch.rand(6, 5, 2, dtype=torch.float64)
    rng = np.random.default_rng(0)
    D = (rng.random((40, 12)) < 0.4).astype(np.uint8)
    Y = rng.normal(size=(40, 1))
    path = solve_path(D, Y, n_rhos=5)
    for name, fig in [
        ("raster", plot_raster(net, x, 1)),
        ("rates", plot_rates(net, x)),
        ("path", plot_path(path)),
        ("support", plot_support(path)),
    ]:
        out = save(fig, tmp_path / f"{name}.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="sample"):
        plot_raster(net, x, 9)


def test_cli_plot(tmp_path, capsys):
    model = save_model(_net(), tmp_path / "m.pt")
    out = tmp_path / "r.png"
    assert (
        main(
            [
                "plot",
                "raster",
                "--model",
                str(model),
                "--task",
                "xor",
                "--steps",
                "6",
                "--n",
                "20",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.is_file() and out.stat().st_size > 1000
    X = np.random.default_rng(0).random((30, 4, 2))
    np.savez(tmp_path / "d.npz", X=X, y=(X[:, -1, 0] > 0.5).astype(int))
    assert (
        main(
            [
                "plot",
                "path",
                "--model",
                str(model),
                "--data",
                str(tmp_path / "d.npz"),
                "--out",
                str(tmp_path / "p.png"),
            ]
        )
        == 0
    )
