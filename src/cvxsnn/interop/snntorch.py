"""snnTorch interoperation: read a feed-forward snnTorch model, write a ParallelLIFNet back.

Supported snnTorch models
-------------------------
A *chain* is an ``nn.Sequential`` (or any module whose direct children, in
registration order, are its forward order) of ``nn.Linear`` followed by
``snn.Leaky``, repeated, optionally ended by one ``nn.Linear`` without a
Leaky after it: the readout. Several branches sharing the input are a
``list``, ``tuple`` or ``nn.ModuleList`` of chains of equal depth; their
readouts (all or none) are summed. Branches of different widths are padded
with silent neurons (zero incoming weights, threshold 1; they never spike).

Every Leaky must compute cvxsnn's kernel, ``U_t = beta U_{t-1} + I_t -
theta S_{t-1}``, ``S_t = 1[U_t > theta]``: ``reset_mechanism="subtract"``,
``reset_delay=True`` (the default), a fixed beta (``learn_beta=False``) equal
in every neuron and every layer, no graded spikes (factor 1), no
``state_quant``, no ``inhibition``, and a ``spike_grad`` whose forward is the
Heaviside step. Thresholds may differ per neuron. Anything else (another
neuron type, a recurrent layer, a convolution) is refused with a
``ValueError`` naming the layer (its path in the model) and the reason.

Biases: the first Linear's bias becomes the constant-1 input channel's row
of ``w_in``. A deeper Linear's bias cannot be represented (a
ParallelLIFNet has no deeper bias): an all-zero bias is accepted, any other
is refused. The readout Linear's bias is the readout bias (summed over
branches).

The written model (:func:`to_snntorch`) is a :class:`SNNTorchParallel`:
``branches`` (an ``nn.ModuleList`` of one ``nn.Sequential`` per branch,
``Linear, Leaky, Linear, Leaky, ...`` with float64 beta/threshold tensors) and
``readout`` (one ``nn.Linear`` over the concatenated last-layer spikes of all
branches, branch-major, i.e. the sum of the branch readouts). Its
``forward(x)`` with ``x`` of shape (T, B, d) runs the time loop: at each step
it feeds ``x_t`` to every branch, passes each Linear's output and the
layer's membrane to its Leaky, and applies the readout to the spikes of the
last Leaky of every branch; it returns the readouts of shape (T, B, C).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cvxsnn.network import HiddenParams, NetConfig, ParallelLIFNet

__all__ = [
    "SNNTorchImport",
    "SNNTorchParallel",
    "fit_readout",
    "from_snntorch",
    "to_snntorch",
]


def _snn():
    try:
        import snntorch as snn
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("cvxsnn.interop.snntorch needs snntorch: pip install snntorch") from err
    return snn


@dataclass(frozen=True, eq=False)
class SNNTorchImport:
    """What :func:`from_snntorch` read.

    Attributes
    ----------
    params : HiddenParams
        ``w_in`` (K, d + 1, m_1) with the first Linear's bias as the last
        row, ``w_hidden`` (K, m_{l-1}, m_l), ``thetas`` (K, m_l); float64.
    beta : float
        The common leak of every Leaky.
    d_in : int
        Input features d.
    widths : tuple of int
        Hidden widths (after padding to the widest branch).
    readout_weight : Tensor of shape (K, m_last, C) or None
    readout_bias : Tensor of shape (C,) or None
    layer_names : tuple of tuple of str
        Per branch, the path of each Linear / Leaky read.
    """

    params: HiddenParams
    beta: float
    d_in: int
    widths: tuple[int, ...]
    readout_weight: Tensor | None
    readout_bias: Tensor | None
    layer_names: tuple[tuple[str, ...], ...]

    @property
    def branches(self) -> int:
        return int(self.params.w_in.shape[0])

    def network(
        self,
        out_layout: Sequence[int] | None = None,
        head_classes: Sequence[int] | None = None,
        device: torch.device | str | None = None,
    ) -> ParallelLIFNet:
        """The whole model as a float64 ParallelLIFNet (needs a readout).

        ``out_layout`` / ``head_classes`` default to one head of C columns
        (a binary head when C = 1).
        """
        if self.readout_weight is None or self.readout_bias is None:
            raise ValueError(
                "the snnTorch model has no readout Linear after its last Leaky; use "
                "fit_readout() to fit one, or add an nn.Linear at the end of each branch"
            )
        C = int(self.readout_weight.shape[-1])
        out_layout = tuple(out_layout) if out_layout is not None else (C,)
        if head_classes is None:
            head_classes = (2,) if out_layout == (1,) else out_layout
        config = NetConfig(
            d_in=self.d_in,
            widths=self.widths,
            branches=self.branches,
            out_layout=out_layout,
            head_classes=tuple(head_classes),
            beta=self.beta,
            bias_channel=True,
        )
        net = ParallelLIFNet.from_hidden_params(
            config, self.params, device=device, dtype=torch.float64
        )
        with torch.no_grad():
            net.w_out.copy_(self.readout_weight)
            net.b_out.copy_(self.readout_bias)
        return net


def _branches_of(model: Any) -> list[tuple[str, nn.Module]]:
    if isinstance(model, SNNTorchParallel):
        model = model.as_branches()
    if isinstance(model, list | tuple | nn.ModuleList):
        if len(model) == 0:
            raise ValueError("model must hold at least one branch; got an empty list")
        return [(f"branch{k}", b) for k, b in enumerate(model)]
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be an nn.Module, or a list / nn.ModuleList of them; got "
            f"{type(model).__name__}"
        )
    return [("", model)]


def _check_leaky(layer: nn.Module, name: str, snn: Any) -> tuple[float, Tensor]:
    """Refuse any Leaky whose dynamics differ from the kernel; return (beta, theta)."""
    if type(layer) is not snn.Leaky:
        raise ValueError(
            f"layer {name} is {type(layer).__name__}: only snn.Leaky is supported (no recurrent "
            "layers such as RLeaky / RSynaptic, no Synaptic / Alpha / Lapicque neurons)"
        )
    why = None
    if layer.reset_mechanism != "subtract":
        why = f'reset_mechanism="{layer.reset_mechanism}" (only "subtract" is supported)'
    elif not getattr(layer, "reset_delay", True):
        why = "reset_delay=False (the kernel resets at the next step: reset_delay=True)"
    elif isinstance(layer.beta, nn.Parameter) and layer.beta.requires_grad:
        why = "learn_beta=True (beta must be fixed)"
    elif getattr(layer, "inhibition", False):
        why = "inhibition=True"
    elif getattr(layer, "state_quant", False):
        why = "state_quant is set (membrane quantization)"
    elif float(torch.as_tensor(layer.graded_spikes_factor).detach().ne(1).sum()) > 0:
        why = f"graded spikes (graded_spikes_factor={layer.graded_spikes_factor.tolist()})"
    if why is None:
        probe = torch.tensor([-1.0, -1e-12, 0.0, 1e-12, 1.0], dtype=torch.float64)
        with torch.no_grad():
            out = layer.spike_grad(probe).to(torch.float64)
        if not torch.equal(out, (probe > 0).to(torch.float64)):
            why = "its spike_grad's forward is not the Heaviside step 1[U > theta]"
    beta = layer.beta.detach().to("cpu", torch.float64).clamp(0, 1).reshape(-1)
    if why is None and beta.numel() > 1 and not torch.all(beta == beta[0]):
        why = "beta differs between neurons (one beta per network is supported)"
    if why is not None:
        raise ValueError(f"layer {name} (snn.Leaky) is not supported: {why}")
    theta = layer.threshold.detach().to("cpu", torch.float64).reshape(-1)
    return float(beta[0]), theta


def _read_chain(prefix: str, chain: nn.Module, snn: Any) -> dict[str, Any]:
    children = list(chain.named_children())
    if not children:
        raise ValueError(f"branch {prefix or 'model'} has no layers")
    linears, thetas, betas, names = [], [], [], []
    readout = None
    i = 0
    while i < len(children):
        name, lin = children[i]
        path = f"'{prefix}{'.' if prefix else ''}{name}' (index {i})"
        if not isinstance(lin, nn.Linear):
            kind = "a convolution" if isinstance(lin, nn.modules.conv._ConvNd) else "not nn.Linear"
            raise ValueError(
                f"layer {path} is {type(lin).__name__} ({kind}): a branch must alternate "
                "nn.Linear and snn.Leaky, optionally ending with one nn.Linear readout"
            )
        if i == len(children) - 1:
            if not linears:
                raise ValueError(f"branch {prefix or 'model'} has no snn.Leaky layer")
            readout = lin
            names.append(path)
            break
        lname, leaky = children[i + 1]
        lpath = f"'{prefix}{'.' if prefix else ''}{lname}' (index {i + 1})"
        beta, theta = _check_leaky(leaky, lpath, snn)
        if linears and lin.bias is not None and torch.any(lin.bias != 0):
            raise ValueError(
                f"layer {path} has a nonzero bias: only the first Linear may have one (it "
                "becomes the constant-1 input channel); a deeper bias cannot be represented"
            )
        m = lin.out_features
        if theta.numel() not in (1, m):
            raise ValueError(f"layer {lpath} has {theta.numel()} thresholds for {m} neurons")
        linears.append(lin)
        thetas.append(theta.expand(m).clone())
        betas.append((beta, lpath))
        names += [path, lpath]
        i += 2
    return {
        "linears": linears,
        "thetas": thetas,
        "betas": betas,
        "readout": readout,
        "names": tuple(names),
        "prefix": prefix or "model",
    }


def from_snntorch(model: Any, *, device: torch.device | str | None = None) -> SNNTorchImport:
    """Read a feed-forward snnTorch model into cvxsnn witnesses (and its readout).

    Parameters
    ----------
    model : nn.Module, or list / tuple / nn.ModuleList of nn.Module
        One chain, or parallel branches sharing the input (see the module
        docstring for what a chain is and which dynamics are accepted).
    device : torch.device or str, optional
        Where the returned tensors live (CPU by default).

    Returns
    -------
    SNNTorchImport
        Witnesses (float64) plus the readout when the model has one; use
        ``.network()`` for the whole model as a ParallelLIFNet.

    Raises
    ------
    ValueError
        Naming the layer (its path and index in the model) and the reason
        when the model's dynamics are not cvxsnn's kernel.
    """
    snn = _snn()
    chains = [_read_chain(p, c, snn) for p, c in _branches_of(model)]
    depth = len(chains[0]["linears"])
    for ch in chains[1:]:
        if len(ch["linears"]) != depth:
            raise ValueError(
                f"all branches must have the same number of Leaky layers; branch "
                f"{chains[0]['prefix']} has {depth}, branch {ch['prefix']} has "
                f"{len(ch['linears'])}"
            )
    has_readout = {ch["readout"] is not None for ch in chains}
    if len(has_readout) > 1:
        raise ValueError("either every branch ends with a readout nn.Linear or none does")
    betas = [(b, where) for ch in chains for b, where in ch["betas"]]
    for b, where in betas[1:]:
        if b != betas[0][0]:
            raise ValueError(
                f"layer {where} (snn.Leaky) is not supported: its beta {b!r} differs from "
                f"beta {betas[0][0]!r} of layer {betas[0][1]} (one beta per network)"
            )
    d_in = chains[0]["linears"][0].in_features
    for ch in chains:
        if ch["linears"][0].in_features != d_in:
            raise ValueError(
                f"all branches must read the same input width; got {d_in} and "
                f"{ch['linears'][0].in_features} (branch {ch['prefix']})"
            )
    widths = tuple(max(ch["linears"][l].out_features for ch in chains) for l in range(depth))
    K = len(chains)
    f64 = dict(dtype=torch.float64)
    w_in = torch.zeros(K, d_in + 1, widths[0], **f64)
    w_hidden = [torch.zeros(K, widths[l - 1], widths[l], **f64) for l in range(1, depth)]
    thetas = [torch.ones(K, widths[l], **f64) for l in range(depth)]
    C = chains[0]["readout"].out_features if chains[0]["readout"] is not None else None
    w_out = torch.zeros(K, widths[-1], C, **f64) if C is not None else None
    b_out = torch.zeros(C, **f64) if C is not None else None
    for k, ch in enumerate(chains):
        first = ch["linears"][0]
        W = first.weight.detach().to("cpu", torch.float64)  # (m1, d)
        w_in[k, :d_in, : W.shape[0]] = W.T
        if first.bias is not None:
            w_in[k, d_in, : W.shape[0]] = first.bias.detach().to("cpu", torch.float64)
        for l in range(1, depth):
            W = ch["linears"][l].weight.detach().to("cpu", torch.float64)  # (m_l, m_{l-1})
            w_hidden[l - 1][k, : W.shape[1], : W.shape[0]] = W.T
        for l in range(depth):
            th = ch["thetas"][l]
            thetas[l][k, : th.numel()] = th
        ro = ch["readout"]
        if ro is not None:
            if ro.out_features != C:
                raise ValueError(
                    f"readouts must have the same number of outputs; got {C} and "
                    f"{ro.out_features} (branch {ch['prefix']})"
                )
            W = ro.weight.detach().to("cpu", torch.float64)  # (C, m_last)
            w_out[k, : W.shape[1]] = W.T
            if ro.bias is not None:
                b_out += ro.bias.detach().to("cpu", torch.float64)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    params = HiddenParams(
        w_in.to(dev), tuple(w.to(dev) for w in w_hidden), tuple(t.to(dev) for t in thetas)
    )
    return SNNTorchImport(
        params=params,
        beta=float(betas[0][0]),
        d_in=int(d_in),
        widths=widths,
        readout_weight=None if w_out is None else w_out.to(dev),
        readout_bias=None if b_out is None else b_out.to(dev),
        layer_names=tuple(ch["names"] for ch in chains),
    )


class SNNTorchParallel(nn.Module):
    """K parallel snnTorch branches with one summed readout (written by :func:`to_snntorch`).

    Attributes
    ----------
    branches : nn.ModuleList of nn.Sequential
        Per branch ``Linear, Leaky, Linear, Leaky, ...`` (float64).
    readout : nn.Linear
        ``K * m_last -> C`` over the branch-major concatenation of the last
        Leaky's spikes; equal to the sum of per-branch readouts.
    """

    def __init__(self, branches: nn.ModuleList, readout: nn.Linear) -> None:
        super().__init__()
        self.branches = branches
        self.readout = readout

    def forward(self, x: Tensor, return_spikes: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Run the time loop.

        Parameters
        ----------
        x : Tensor of shape (T, B, d)
        return_spikes : bool
            Also return the last Leaky's spikes of every branch.

        Returns
        -------
        out : Tensor of shape (T, B, C)
        spikes : Tensor of shape (T, B, K, m_last), when ``return_spikes``
        """
        dtype = self.readout.weight.dtype
        x = x.to(dtype)
        mems = [[None] * (len(b) // 2) for b in self.branches]
        outs, spk_all = [], []
        for t in range(x.shape[0]):
            last = []
            for k, branch in enumerate(self.branches):
                h = x[t]
                for j in range(0, len(branch), 2):
                    cur = branch[j](h)
                    mem = mems[k][j // 2]
                    if mem is None:
                        mem = torch.zeros_like(cur)
                    spk, mem = branch[j + 1](cur, mem)
                    mems[k][j // 2] = mem
                    h = spk.to(dtype)  # snnTorch's Heaviside returns float32 spikes
                last.append(h)
            s = torch.stack(last, dim=1)  # (B, K, m)
            spk_all.append(s)
            outs.append(self.readout(s.reshape(s.shape[0], -1)))
        out = torch.stack(outs)
        return (out, torch.stack(spk_all)) if return_spikes else out

    def as_branches(self) -> list[nn.Sequential]:
        """Each branch as ``Sequential(Linear, Leaky, ..., Linear)`` with its readout slice."""
        K = len(self.branches)
        m = self.branches[0][-2].out_features if len(self.branches[0]) >= 2 else 0
        out = []
        for k, branch in enumerate(self.branches):
            ro = nn.Linear(m, self.readout.out_features, dtype=self.readout.weight.dtype)
            with torch.no_grad():
                ro.weight.copy_(self.readout.weight[:, k * m : (k + 1) * m])
                ro.bias.copy_(self.readout.bias if k == 0 else torch.zeros_like(ro.bias))
            out.append(nn.Sequential(*branch, ro))
        assert len(out) == K
        return out


def to_snntorch(net: ParallelLIFNet) -> SNNTorchParallel:
    """Write a ParallelLIFNet as an snnTorch model (float64, same outputs).

    Parameters
    ----------
    net : ParallelLIFNet

    Returns
    -------
    SNNTorchParallel
        See the module docstring for its structure and how it runs; beta and
        thresholds are float64 tensors so the dynamics match exactly.
    """
    if not isinstance(net, ParallelLIFNet):
        raise TypeError(f"net must be a ParallelLIFNet; got {type(net).__name__}")
    snn = _snn()
    cfg = net.config
    f64 = dict(dtype=torch.float64)
    hp = net.hidden_params()
    K, d = cfg.branches, cfg.d_in
    branches = nn.ModuleList()
    weights = [hp.w_in, *hp.w_hidden]
    for k in range(K):
        layers: list[nn.Module] = []
        for l, (w, th) in enumerate(zip(weights, hp.thetas, strict=True)):
            w = w[k].detach().to("cpu", torch.float64)  # (in, m)
            rows = w[:d] if l == 0 else w
            lin = nn.Linear(rows.shape[0], rows.shape[1], bias=(l == 0), **f64)
            with torch.no_grad():
                lin.weight.copy_(rows.T)
                if l == 0:
                    lin.bias.copy_(w[d] if cfg.bias_channel else torch.zeros(w.shape[1], **f64))
            beta = torch.tensor(float(cfg.beta), **f64)
            theta = th[k].detach().to("cpu", torch.float64).clone()
            layers += [lin, snn.Leaky(beta=beta, threshold=theta, reset_mechanism="subtract")]
        branches.append(nn.Sequential(*layers))
    m = cfg.widths[-1]
    readout = nn.Linear(K * m, cfg.n_out, **f64)
    with torch.no_grad():
        readout.weight.copy_(net.w_out.detach().to("cpu", torch.float64).reshape(K * m, -1).T)
        readout.bias.copy_(net.b_out.detach().to("cpu", torch.float64))
    return SNNTorchParallel(branches, readout).to(net.device)


def fit_readout(
    model: Any,
    X: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    *,
    steps: Sequence[int] | None = None,
    n_classes: int | None = None,
    loss: str = "squared",
    penalty: str = "l1",
    rho: float | None = None,
    tol: float = 1e-6,
    random_state: int | None = 0,
    device: torch.device | str | None = None,
):
    """SG-CVX for snnTorch: keep the model's hidden layers, fit a certified optimal readout.

    Parameters
    ----------
    model
        A supported snnTorch model (see :func:`from_snntorch`); its own
        readout, if any, is ignored.
    X : Tensor of shape (T, n, d)
        Training sequences, time-major.
    y : Tensor of shape (n,) or (S, n), int
        Class labels at the supervised steps (the last step for (n,)).
    steps : sequence of int, optional
        Supervised steps (default the last one; must have S entries).
    n_classes : int, optional
        Default ``max(y) + 1``.
    loss, penalty, rho, tol, random_state, device
        As in :func:`cvxsnn.estimator.convex_readout`.

    Returns
    -------
    ReadoutFit
        ``.net`` is the rebuilt ParallelLIFNet (``to_snntorch(fit.net)``
        gives it back as an snnTorch model), ``.certificate`` the duality gap.
    """
    from cvxsnn.estimator import convex_readout, encode_labels

    imp = from_snntorch(model, device=device)
    x = torch.as_tensor(X, dtype=torch.float64)
    labels = torch.as_tensor(y).long().cpu().numpy()
    labels = labels[None] if labels.ndim == 1 else labels
    T = x.shape[0]
    steps = (T - 1,) if steps is None else tuple(int(s) for s in steps)
    if labels.shape != (len(steps), x.shape[1]):
        raise ValueError(
            f"y must have shape (n,) or (S, n) = {(len(steps), x.shape[1])}; got {labels.shape}"
        )
    flat = labels.reshape(-1)
    C = int(n_classes) if n_classes is not None else int(flat.max()) + 1
    Y, heads, layout, head_classes = encode_labels(flat, C, loss)  # type: ignore[arg-type]
    return convex_readout(
        imp.params,
        x,
        Y,
        steps=steps,
        beta=imp.beta,
        loss=loss,
        penalty=penalty,  # type: ignore[arg-type]
        heads=heads,
        out_layout=layout,
        head_classes=head_classes,
        rho=rho,
        tol=tol,
        labels=flat,
        random_state=random_state,
        device=device,
    )
