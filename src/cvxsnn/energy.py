"""Spiking activity and synaptic operations (SynOps) of a ParallelLIFNet.

SynOps count the synaptic events a spike triggers: every spike of a neuron
is delivered to each of its outgoing synapses. Two counts are reported:

- ``synops_dense``: nominal fan-out, the width of the next layer (for the
  last hidden layer, the C readout columns), as on dense hardware;
- ``synops_nonzero``: the neuron's nonzero outgoing weights only, as on
  hardware that skips zero synapses (a neuron whose readout row is all zero,
  such as a padding neuron of a rebuilt network, costs nothing).

Input currents are not spikes and are not counted (the first layer's
``[x_t, 1] @ W_in`` is a dense matmul whatever x is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from cvxsnn.network import ForwardWorkspace, ParallelLIFNet
from cvxsnn.samples import repeated_samples

__all__ = ["activity", "activity_record"]


def _fanouts(net: ParallelLIFNet) -> list[tuple[Tensor, Tensor]]:
    """Per hidden layer, (dense, nonzero) fan-out of each neuron, each of shape (K, m_l)."""
    outs = [*net.w_hidden, net.w_out]  # outgoing weights of layer l: (K, m_l, m_{l+1})
    res = []
    for w in outs:
        w = w.detach()
        dense = torch.full(w.shape[:2], float(w.shape[2]), dtype=torch.float64, device=w.device)
        nonzero = (w != 0).sum(dim=2).to(torch.float64)
        res.append((dense, nonzero))
    return res


def activity(net: ParallelLIFNet, x: Tensor, steps: Sequence[int] | None = None) -> dict[str, Any]:
    """Firing rates, spike counts and SynOps of one forward pass (under no_grad).

    Parameters
    ----------
    net : ParallelLIFNet
    x : Tensor of shape (T, B, d)
    steps : sequence of int, optional
        Count only up to and including the last of these steps (the readout
        is not needed after it); all T steps when omitted.

    Returns
    -------
    dict
        ``T``, ``n`` (= B), per layer lists ``rate`` (spikes per neuron per
        step), ``spikes`` (total), ``neurons``; totals ``total_spikes``,
        ``synops_dense``, ``synops_nonzero``; and per-sample averages
        ``spikes_per_sample``, ``synops_dense_per_sample``,
        ``synops_nonzero_per_sample``.

    Notes
    -----
    ``SynOps = sum_l sum_{t, b, k, j} S^l_{t,b,k,j} * fanout^l_{k,j}``.
    """
    T, B = int(x.shape[0]), int(x.shape[1])
    if steps is not None and len(steps):
        T = int(max(steps)) + 1
    # spike counts per neuron, accumulated over sample chunks so that memory does not grow
    # with B (integer counts: the float64 sums are exact, so chunking changes nothing); a
    # repeated input sequence runs once and its counts weigh as many samples
    x = x[:T]
    distinct = repeated_samples(x)
    mult = None
    if distinct is not None:
        x = distinct.take(x)
        mult = torch.bincount(torch.as_tensor(distinct.inverse)).to(net.device, torch.float64)
    per_layer = [
        torch.zeros(net.config.branches, w, dtype=torch.float64, device=net.device)
        for w in net.config.widths
    ]
    chunk, ws = net.chunk_samples(), ForwardWorkspace()
    with torch.no_grad():
        for a in range(0, x.shape[1], chunk):
            trace = net.run_hidden(x[:, a : a + chunk], workspace=ws)
            for acc, s in zip(per_layer, trace.spikes, strict=True):
                if mult is None:
                    acc += s.sum(dim=(0, 1), dtype=torch.float64)  # (K, m)
                else:
                    acc += torch.einsum("tbkm,b->km", s.to(torch.float64), mult[a : a + chunk])
    rates, counts, neurons = [], [], []
    dense_total = nonzero_total = 0.0
    for per_neuron, (dense, nonzero) in zip(per_layer, _fanouts(net), strict=True):
        total = float(per_neuron.sum())
        counts.append(total)
        neurons.append(int(per_neuron.numel()))
        rates.append(total / max(1, T * B * per_neuron.numel()))
        dense_total += float((per_neuron * dense).sum())
        nonzero_total += float((per_neuron * nonzero).sum())
    spikes = float(sum(counts))
    return {
        "T": T,
        "n": B,
        "rate": rates,
        "spikes": counts,
        "neurons": neurons,
        "total_spikes": spikes,
        "synops_dense": dense_total,
        "synops_nonzero": nonzero_total,
        "spikes_per_sample": spikes / max(B, 1),
        "synops_dense_per_sample": dense_total / max(B, 1),
        "synops_nonzero_per_sample": nonzero_total / max(B, 1),
    }


def activity_record(
    net: ParallelLIFNet, x: Tensor, steps: Sequence[int] | None = None, prefix: str = "test"
) -> dict[str, Any]:
    """Activity of ``net`` on ``x`` as flat record keys (``{prefix}_firing_rate`` ...).

    Cheap: one forward pass under no_grad, in sample chunks. Meant for a result record, e.g.
    ``record["activity"] = activity_record(net, task.test.x, task.test.steps)``.
    """
    a = activity(net, x, steps)
    return {
        f"{prefix}_firing_rate": a["rate"],
        f"{prefix}_spikes_per_sample": a["spikes_per_sample"],
        f"{prefix}_synops_dense_per_sample": a["synops_dense_per_sample"],
        f"{prefix}_synops_nonzero_per_sample": a["synops_nonzero_per_sample"],
    }
