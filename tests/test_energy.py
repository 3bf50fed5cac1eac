"""Activity and SynOps on a hand-sized network."""

from __future__ import annotations

import pytest
import torch

from cvxsnn.energy import activity, activity_record
from cvxsnn.network import NetConfig, ParallelLIFNet


def test_synops_hand_computed():
    # one branch, d = 1, widths (2, 2), C = 1, beta = 0, thresholds 0.5
    cfg = NetConfig(d_in=1, widths=(2, 2), branches=1, beta=0.0, bias_channel=False)
    net = ParallelLIFNet(cfg, dtype=torch.float64)
    with torch.no_grad():
        net.w_in.copy_(torch.tensor([[[1.0, 0.0]]]))  # neuron 0 copies x, neuron 1 silent
        net.w_hidden[0].copy_(torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))  # n0 -> n0 only
        for th in net.thetas:
            th.fill_(0.5)
        net.w_out.copy_(torch.tensor([[[2.0], [0.0]]]))
    # beta = 0: U_t = I_t - 0.5 S_{t-1}. x = 1,1,0: layer-1 n0 U = 1, 0.5, -0.5 -> spikes 1,0,0
    x = torch.tensor([[[1.0]], [[1.0]], [[0.0]]], dtype=torch.float64)  # (T=3, B=1, d=1)
    a = activity(net, x)
    assert a["spikes"] == [1.0, 1.0]  # layer 2 n0 follows layer 1 n0
    # dense fan-out: layer-1 neurons reach 2 neurons, layer-2 neurons 1 readout column
    assert a["synops_dense"] == pytest.approx(1 * 2 + 1 * 1)
    # nonzero fan-out: layer-1 n0 has one nonzero outgoing weight, layer-2 n0 one
    assert a["synops_nonzero"] == pytest.approx(1 * 1 + 1 * 1)
    assert a["rate"] == [pytest.approx(1 / 6), pytest.approx(1 / 6)]
    rec = activity_record(net, x)
    assert rec["test_synops_dense_per_sample"] == pytest.approx(3.0)


def test_synops_equal_recount_on_random_net():
    cfg = NetConfig(d_in=3, widths=(6, 5), branches=2, out_layout=(2,), head_classes=(2,))
    net = ParallelLIFNet(cfg, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.w_in.mul_(4)
        net.w_hidden[0][0, :, 2] = 0.0
    x = torch.rand(7, 9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = activity(net, x)
    with torch.no_grad():
        s1, s2 = net.run_hidden(x).spikes
    dense = float(s1.sum() * 5 + s2.sum() * 2)
    nz1 = (net.w_hidden[0].detach() != 0).sum(-1)  # (K, 6)
    nz2 = (net.w_out.detach() != 0).sum(-1)
    nonzero = float((s1.sum((0, 1)) * nz1).sum() + (s2.sum((0, 1)) * nz2).sum())
    assert a["synops_dense"] == pytest.approx(dense)
    assert a["synops_nonzero"] == pytest.approx(nonzero)
    assert a["synops_nonzero"] < a["synops_dense"]


def test_activity_in_chunks_equals_one_pass(monkeypatch):
    # counts are accumulated over sample chunks; the totals are exact, so identical
    cfg = NetConfig(d_in=3, widths=(6, 5), branches=3, out_layout=(2,), head_classes=(2,))
    net = ParallelLIFNet(cfg, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net.w_in.mul_(4)
    x = torch.rand(7, 50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    whole = activity(net, x, steps=[3, 5])
    monkeypatch.setattr(ParallelLIFNet, "chunk_samples", lambda self: 7)
    chunked = activity(net, x, steps=[3, 5])
    assert chunked == whole
    assert whole["total_spikes"] > 0
    with torch.no_grad():
        trace = net.run_hidden(x[:6])  # steps [3, 5]: counted up to step 5
    assert whole["spikes"] == [float(s.sum()) for s in trace.spikes]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_activity_of_repeated_samples_runs_them_once(monkeypatch, dtype):
    # 60 samples of 8 distinct sequences (equal up to the counted steps, different after):
    # the counts are the one-pass counts exactly, with the network run on 8 samples
    cfg = NetConfig(d_in=3, widths=(6, 5), branches=3, out_layout=(2,), head_classes=(2,))
    net = ParallelLIFNet(cfg, dtype=dtype, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        net.w_in.mul_(4)
    g = torch.Generator().manual_seed(4)
    pool = torch.rand(7, 8, 3, dtype=dtype, generator=g)
    x = pool[:, torch.randint(0, 8, (60,), generator=g)].clone()
    x[6] = torch.rand(60, 3, dtype=dtype, generator=g)  # after step 5: every sample differs
    seen = []
    real = ParallelLIFNet.run_hidden

    def counting(self, xs, *args, **kwargs):
        seen.append(xs.shape[1])
        return real(self, xs, *args, **kwargs)

    monkeypatch.setattr(ParallelLIFNet, "run_hidden", counting)
    monkeypatch.setattr(ParallelLIFNet, "chunk_samples", lambda self: 3)
    got = activity(net, x, steps=[3, 5])
    assert sum(seen) == len(torch.unique(x[:6].permute(1, 0, 2).reshape(60, -1), dim=0))
    with torch.no_grad():
        trace = real(net, x[:6])
    assert got["spikes"] == [float(s.double().sum()) for s in trace.spikes]
    assert got["n"] == 60 and got["total_spikes"] > 0
