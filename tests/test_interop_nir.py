"""NIR export: LIF mapping, and write -> read giving the same graph and parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from cvxsnn.interop.nir import ResetSemanticsWarning, export_nir, import_nir, to_nir_graph  # noqa: E402
from cvxsnn.network import NetConfig, ParallelLIFNet  # noqa: E402


def _net(beta=0.9):
    cfg = NetConfig(
        d_in=3, widths=(5, 4), branches=2, out_layout=(2,), head_classes=(2,), beta=beta
    )
    net = ParallelLIFNet(cfg, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.thetas[1].uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(1))
    return net


def test_write_read_round_trip(tmp_path):
    net = _net()
    graph = to_nir_graph(net)
    with pytest.warns(ResetSemanticsWarning):
        path = export_nir(net, tmp_path / "net.nir")
    back = nir.read(path)
    assert set(back.nodes) == set(graph.nodes)
    assert sorted(map(tuple, back.edges)) == sorted(graph.edges)
    for name, node in graph.nodes.items():
        other = back.nodes[name]
        assert type(other) is type(node)
        for field in ("weight", "bias", "tau", "r", "v_leak", "v_threshold", "v_reset"):
            if hasattr(node, field):
                np.testing.assert_array_equal(
                    np.asarray(getattr(other, field)), np.asarray(getattr(node, field))
                )
    assert back.nodes["b0_lif1"].metadata["reset"] in ("subtract", b"subtract")
    net2 = import_nir(path)
    for (k, a), (_, b) in zip(net.state_dict().items(), net2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = torch.rand(6, 7, 3, dtype=torch.float64)
    assert torch.equal(net(x), net2(x))


def test_lif_mapping_forward_euler():
    beta, dt = 0.9, 1.0
    lif = to_nir_graph(_net(beta), dt).nodes["b0_lif0"]
    tau, r = lif.tau[0], lif.r[0]
    assert tau == pytest.approx(dt / (1 - beta)) and r == pytest.approx(1 / (1 - beta))
    # forward Euler of tau dv/dt = (v_leak - v) + r I reproduces U_t = beta U_{t-1} + I_t
    v, u = 0.3, 0.3
    for i_t in (0.2, -0.1, 0.7):
        v = v + dt / tau * ((lif.v_leak[0] - v) + r * i_t)
        u = beta * u + i_t
        assert v == pytest.approx(u, abs=1e-12)


def test_graph_structure_and_types():
    g = to_nir_graph(_net())
    assert isinstance(g.nodes["b0_affine0"], nir.Affine)
    assert isinstance(g.nodes["b1_linear1"], nir.Linear)
    assert isinstance(g.nodes["readout"], nir.Affine)
    assert ("b0_readout", "readout") in g.edges and ("b1_readout", "readout") in g.edges
    assert list(g.nodes["input"].input_type["input"]) == [3]
    assert list(g.nodes["output"].output_type["output"]) == [2]
    assert isinstance(to_nir_graph(_net(beta=1.0)).nodes["b0_lif0"], nir.IF)
