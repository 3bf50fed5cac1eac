"""NIR export and import of a ParallelLIFNet (optional extra ``nir``).

Graph written by :func:`export_nir` for K branches and L - 1 hidden layers::

    input -> b{k}_affine0 -> b{k}_lif0 -> b{k}_linear1 -> b{k}_lif1 -> ...
          -> b{k}_readout (Linear, C x m_last) -> readout (Affine, I_C, bias b) -> output

The first layer is an ``Affine`` whose bias is the constant-1 channel's row
of ``w_in``; deeper layers are ``Linear``; the K branch readouts all feed
``readout`` (NIR sums the inputs of a node), an identity ``Affine`` adding
the readout bias.

LIF mapping
-----------
NIR's LIF is ``tau dv/dt = (v_leak - v) + r I``. Forward Euler with step dt
gives ``v_t = (1 - dt/tau) v_{t-1} + (dt/tau) (v_leak + r I_t)``. Matching
cvxsnn's ``U_t = beta U_{t-1} + I_t`` needs ``1 - dt/tau = beta`` and
``(dt/tau) r = 1``, ``v_leak = 0``; so ``tau = dt / (1 - beta)`` and
``r = tau / dt = 1 / (1 - beta)`` (snnTorch's own export uses the same
formulas with dt = 1e-4). ``v_threshold = theta``, ``v_reset = 0``. With
beta = 1 the node is an ``IF`` (``dv/dt = r I``, so ``v_t = v_{t-1} + dt r I_t``
and ``r = 1 / dt``). NIR's LIF resets to ``v_reset`` at the spiking step, whereas
cvxsnn subtracts theta at the next step; this is recorded in each LIF
node's metadata (``reset = "subtract"``, ``reset_delay = 1``, ``beta``,
``dt``) and :func:`export_nir` warns about it: a simulator following NIR's
definition to the letter will not reproduce the spikes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvxsnn.network import NetConfig, ParallelLIFNet

__all__ = ["ResetSemanticsWarning", "export_nir", "import_nir", "to_nir_graph"]


class ResetSemanticsWarning(UserWarning):
    """NIR's LIF reset (to a value, same step) differs from cvxsnn's (subtract, next step)."""


def _nir():
    try:
        import nir
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("NIR export needs the 'nir' package: pip install cvxsnn[nir]") from err
    return nir


def to_nir_graph(net: ParallelLIFNet, dt: float = 1.0) -> Any:
    """Build the ``nir.NIRGraph`` of ``net`` (see the module docstring); float64 arrays."""
    if not isinstance(net, ParallelLIFNet):
        raise TypeError(f"net must be a ParallelLIFNet; got {type(net).__name__}")
    if not dt > 0:
        raise ValueError(f"dt must be > 0; got {dt}")
    nir = _nir()
    cfg = net.config
    hp = net.hidden_params()
    d, K, C = cfg.d_in, cfg.branches, cfg.n_out
    beta = float(cfg.beta)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array([d])})}
    edges: list[tuple[str, str]] = []
    weights = [hp.w_in, *hp.w_hidden]
    w_out = net.w_out.detach().to("cpu", torch.float64).numpy()  # (K, m, C)
    meta = {
        "reset": "subtract",
        "reset_delay": 1,
        "beta": beta,
        "dt": float(dt),
        "kernel": "U_t = beta U_{t-1} + I_t - theta S_{t-1}; S_t = 1[U_t > theta]",
    }
    for k in range(K):
        prev = "input"
        for l, (w, th) in enumerate(zip(weights, hp.thetas, strict=True)):
            wk = w[k].detach().to("cpu", torch.float64).numpy()  # (in, m)
            if l == 0:
                bias = wk[d] if cfg.bias_channel else np.zeros(wk.shape[1])
                syn = nir.Affine(weight=np.ascontiguousarray(wk[:d].T), bias=bias.copy())
                sname = f"b{k}_affine0"
            else:
                syn = nir.Linear(weight=np.ascontiguousarray(wk.T))
                sname = f"b{k}_linear{l}"
            theta = th[k].detach().to("cpu", torch.float64).numpy().copy()
            m = theta.shape[0]
            if beta < 1.0:
                tau = np.full(m, dt / (1.0 - beta))
                lif = nir.LIF(
                    tau=tau,
                    r=np.full(m, 1.0 / (1.0 - beta)),
                    v_leak=np.zeros(m),
                    v_threshold=theta,
                    v_reset=np.zeros(m),
                    metadata=dict(meta),
                )
            else:
                lif = nir.IF(
                    r=np.full(m, 1.0 / dt),
                    v_threshold=theta,
                    v_reset=np.zeros(m),
                    metadata=dict(meta),
                )
            lname = f"b{k}_lif{l}"
            nodes[sname], nodes[lname] = syn, lif
            edges += [(prev, sname), (sname, lname)]
            prev = lname
        rname = f"b{k}_readout"
        nodes[rname] = nir.Linear(weight=np.ascontiguousarray(w_out[k].T))
        edges += [(prev, rname), (rname, "readout")]
    b = net.b_out.detach().to("cpu", torch.float64).numpy().copy()
    nodes["readout"] = nir.Affine(weight=np.eye(C), bias=b)
    nodes["output"] = nir.Output(output_type={"output": np.array([C])})
    edges.append(("readout", "output"))
    graph_meta = {
        "format": "cvxsnn",
        "d_in": d,
        "widths": list(cfg.widths),
        "branches": K,
        "out_layout": list(cfg.out_layout),
        "head_classes": list(cfg.head_classes),
        "beta": beta,
        "dt": float(dt),
        "bias_channel": int(cfg.bias_channel),
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph_meta)


def export_nir(net: ParallelLIFNet, path: str | Path, dt: float = 1.0) -> Path:
    """Write ``net`` as a NIR graph (HDF5) at ``path``; warns about the reset semantics.

    Parameters
    ----------
    net : ParallelLIFNet
    path : str or Path
    dt : float
        Time step of the forward-Euler mapping (see the module docstring).

    Returns
    -------
    Path
    """
    nir = _nir()
    graph = to_nir_graph(net, dt)
    warnings.warn(
        "NIR's LIF resets to v_reset at the spiking step; cvxsnn subtracts theta at the next "
        "step (snnTorch Leaky, reset_mechanism='subtract'). The exact semantics are in each "
        "LIF node's metadata (reset='subtract', reset_delay=1).",
        ResetSemanticsWarning,
        stacklevel=2,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(path, graph)
    return path


def _meta(node: Any, key: str) -> Any:
    v = node.metadata.get(key)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v.item()
    return v


def import_nir(path_or_graph: str | Path | Any) -> ParallelLIFNet:
    """Read a graph written by :func:`export_nir` back as a float64 ParallelLIFNet.

    Parameters
    ----------
    path_or_graph : str, Path or nir.NIRGraph

    Raises
    ------
    ValueError
        When the graph does not have the structure :func:`export_nir` writes.
    """
    nir = _nir()
    graph = path_or_graph
    if isinstance(graph, str | Path):
        graph = nir.read(graph)
    meta = graph.metadata or {}
    if _meta(graph, "format") != "cvxsnn":
        raise ValueError("the NIR graph was not written by cvxsnn.export_nir (no format metadata)")
    K = int(_meta(graph, "branches"))
    widths = tuple(int(w) for w in np.atleast_1d(meta["widths"]))
    config = NetConfig(
        d_in=int(_meta(graph, "d_in")),
        widths=widths,
        branches=K,
        out_layout=tuple(int(c) for c in np.atleast_1d(meta["out_layout"])),
        head_classes=tuple(int(c) for c in np.atleast_1d(meta["head_classes"])),
        beta=float(_meta(graph, "beta")),
        bias_channel=bool(_meta(graph, "bias_channel")),
    )
    net = ParallelLIFNet(config, dtype=torch.float64, init=False)  # every parameter set below
    nodes, d = graph.nodes, config.d_in
    with torch.no_grad():
        for k in range(K):
            first = nodes[f"b{k}_affine0"]
            net.w_in[k, :d] = torch.as_tensor(np.asarray(first.weight).T)
            if config.bias_channel:
                net.w_in[k, d] = torch.as_tensor(np.asarray(first.bias))
            for l in range(len(widths)):
                if l > 0:
                    w = np.asarray(nodes[f"b{k}_linear{l}"].weight)
                    net.w_hidden[l - 1][k] = torch.as_tensor(w.T)
                net.thetas[l][k] = torch.as_tensor(np.asarray(nodes[f"b{k}_lif{l}"].v_threshold))
            net.w_out[k] = torch.as_tensor(np.asarray(nodes[f"b{k}_readout"].weight).T)
        net.b_out.copy_(torch.as_tensor(np.asarray(nodes["readout"].bias)))
    return net
