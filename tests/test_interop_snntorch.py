"""snnTorch <-> cvxsnn: exact round trips, refusal of other dynamics, convex readout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

snn = pytest.importorskip("snntorch")

from cvxsnn.interop.snntorch import SNNTorchParallel, fit_readout, from_snntorch, to_snntorch  # noqa: E402
from cvxsnn.network import NetConfig, ParallelLIFNet  # noqa: E402
from cvxsnn.tasks import make_task  # noqa: E402


def _run_sequential(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Plain snnTorch time loop over a Sequential of Linear / Leaky (+ final Linear)."""
    mems: dict[int, torch.Tensor] = {}
    outs = []
    for t in range(x.shape[0]):
        h = x[t]
        for i, layer in enumerate(seq):
            if isinstance(layer, nn.Linear):
                h = layer(h.to(layer.weight.dtype))
            else:
                mem = mems.get(i, torch.zeros_like(h))
                h, mems[i] = layer(h, mem)
        outs.append(h)
    return torch.stack(outs)


def _model(beta=0.9, **leaky):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3, 8),
        snn.Leaky(beta=torch.tensor(beta, dtype=torch.float64)),
        nn.Linear(8, 6, bias=False),
        snn.Leaky(
            beta=torch.tensor(beta, dtype=torch.float64),
            threshold=torch.linspace(0.5, 1.5, 6, dtype=torch.float64),
            **leaky,
        ),
        nn.Linear(6, 2),
    ).double()


def test_snntorch_to_cvxsnn_to_snntorch_identical_outputs():
    model = _model()
    imp = from_snntorch(model)
    net = imp.network()
    back = to_snntorch(net)
    assert isinstance(back, SNNTorchParallel)
    x = 2.0 * torch.rand(9, 17, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        ref = _run_sequential(model, x)
        ours = net(x)
        again = back(x)
    assert ref.abs().sum() > 0
    assert torch.equal(ref, ours)
    assert torch.equal(ours, again)
    # spikes too, and reading the written model gives the same parameters
    assert torch.equal(net.run_hidden(x).spikes[-1], back(x, return_spikes=True)[1])
    imp2 = from_snntorch(back)
    for a, b in zip(
        [imp.params.w_in, *imp.params.w_hidden, *imp.params.thetas],
        [imp2.params.w_in, *imp2.params.w_hidden, *imp2.params.thetas],
        strict=True,
    ):
        assert torch.equal(a, b)


def test_parallel_branches_of_different_widths():
    torch.manual_seed(3)
    b0 = nn.Sequential(nn.Linear(2, 4), snn.Leaky(beta=0.5), nn.Linear(4, 1)).double()
    b1 = nn.Sequential(nn.Linear(2, 6), snn.Leaky(beta=0.5), nn.Linear(6, 1)).double()
    net = from_snntorch(nn.ModuleList([b0, b1])).network()
    assert net.config.branches == 2 and net.config.widths == (6,)
    x = 3 * torch.rand(5, 11, 2, dtype=torch.float64)
    with torch.no_grad():
        ref = _run_sequential(b0, x) + _run_sequential(b1, x)
        assert torch.equal(ref, net(x)) or torch.allclose(ref, net(x), atol=1e-14, rtol=0)


def test_cvxsnn_network_round_trip_random():
    cfg = NetConfig(d_in=4, widths=(7, 5), branches=3, out_layout=(3,), head_classes=(3,))
    net = ParallelLIFNet(cfg, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for th in net.thetas:
            th.uniform_(0.3, 1.2, generator=torch.Generator().manual_seed(4))
        net.w_in.mul_(3.0)
    x = torch.rand(8, 20, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a = net(x)
        b = to_snntorch(net)(x)
        c = from_snntorch(to_snntorch(net)).network(out_layout=(3,), head_classes=(3,))(x)
    assert torch.allclose(a, b, atol=1e-12, rtol=0) and torch.allclose(a, c, atol=1e-12, rtol=0)
    assert torch.equal(net.run_hidden(x).spikes[-1], to_snntorch(net)(x, return_spikes=True)[1])


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: snn.Leaky(beta=0.9, reset_mechanism="zero"), 'reset_mechanism="zero"'),
        (lambda: snn.Leaky(beta=0.9, reset_mechanism="none"), 'reset_mechanism="none"'),
        (lambda: snn.Leaky(beta=0.9, learn_beta=True), "learn_beta=True"),
        (lambda: snn.Leaky(beta=torch.tensor([0.9, 0.8, 0.9, 0.9])), "beta differs"),
        (lambda: snn.Leaky(beta=0.9, graded_spikes_factor=2.0), "graded spikes"),
        (lambda: snn.Leaky(beta=0.9, inhibition=True), "inhibition"),
        (lambda: snn.Leaky(beta=0.9, state_quant=lambda u: u.round()), "state_quant"),
        (lambda: snn.Leaky(beta=0.9, reset_delay=False), "reset_delay=False"),
        (lambda: snn.Synaptic(alpha=0.8, beta=0.9), "is Synaptic"),
        (lambda: snn.Alpha(alpha=0.8, beta=0.7), "is Alpha"),
        (lambda: snn.Lapicque(beta=0.9), "is Lapicque"),
        (lambda: snn.RLeaky(beta=0.9, linear_features=4), "is RLeaky"),
    ],
)
@pytest.mark.filterwarnings("ignore:Inhibition is an unstable feature:UserWarning")
def test_unsupported_dynamics_refused_naming_layer(make, reason):
    model = nn.Sequential(nn.Linear(3, 4), make(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"layer '1' \(index 1\)") as err:
        from_snntorch(model)
    assert reason in str(err.value)


def test_unsupported_structure_refused():
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), snn.Leaky(beta=0.9))
    with pytest.raises(ValueError, match=r"layer '0' \(index 0\).*convolution"):
        from_snntorch(conv)
    deep_bias = nn.Sequential(
        nn.Linear(3, 4), snn.Leaky(beta=0.9), nn.Linear(4, 4), snn.Leaky(beta=0.9)
    )
    with torch.no_grad():
        deep_bias[2].bias.fill_(0.1)
    with pytest.raises(ValueError, match=r"layer '2' \(index 2\) has a nonzero bias"):
        from_snntorch(deep_bias)
    with torch.no_grad():
        deep_bias[2].bias.zero_()
    from_snntorch(deep_bias)  # an all-zero deeper bias is exact: accepted
    two_betas = nn.Sequential(
        nn.Linear(3, 4), snn.Leaky(beta=0.9), nn.Linear(4, 4, bias=False), snn.Leaky(beta=0.8)
    )
    with pytest.raises(ValueError, match=r"layer '3' \(index 3\).*differs"):
        from_snntorch(two_betas)
    with pytest.raises(ValueError, match="branch1"):
        from_snntorch(
            [
                nn.Sequential(nn.Linear(3, 4), snn.Leaky(beta=0.9)),
                nn.Sequential(nn.Linear(3, 4), snn.Leaky(beta=0.9, reset_mechanism="zero")),
            ]
        )


def test_fit_readout_certified_on_xor():
    task = make_task("xor", steps=6, n_train=200, n_val=2, n_test=200, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 32), snn.Leaky(beta=0.99), nn.Linear(32, 32, bias=False), snn.Leaky(beta=0.99)
    )
    fit = fit_readout(model, task.train.x, task.train.targets[-1, :, 0], rho=0.01)
    assert fit.certified and fit.rel_gap <= 1e-6
    assert fit.reconstruction.exact
    # the rebuilt network, written back to snnTorch, gives the same outputs
    x = task.test.x.to(torch.float64)
    with torch.no_grad():
        assert torch.allclose(fit.net(x), to_snntorch(fit.net)(x), atol=1e-12, rtol=0)
    assert np.isfinite(fit.gap)
