"""The K-parallel LIF network: K branches of (L-1) hidden LIF layers and a linear readout.

The K branches share the input and nothing else. All branches advance in one
batched computation: the first layer is one matmul to ``K * m`` columns, each
deeper layer one batched matmul over K, and the LIF recurrence runs on tensors
of shape ``(B, K, m)``. The readout is linear in the last hidden layer's spikes
and shared over time; it is read at the supervised steps.

The network is a thin ``nn.Module`` over :mod:`cvxsnn.kernel`: state is never
kept between calls, so there is nothing to reset between batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from cvxsnn.kernel import LIFState, get_surrogate, init_state, lif_run, lif_step

__all__ = [
    "ForwardWorkspace",
    "HiddenParams",
    "NetConfig",
    "NetTrace",
    "ParallelLIFNet",
    "decode_outputs",
    "load_model",
    "save_model",
]

#: Target size of one (B, K, m) step tensor of a chunked no-gradient forward pass, in bytes:
#: the LIF recurrence is memory-bound, so its per-step work should stay in cache.
CACHE_STEP_BYTES = 2**20

MODEL_FORMAT = "cvxsnn-model"
MODEL_FORMAT_VERSION = 1


@dataclass(frozen=True)
class NetConfig:
    """Architecture of a :class:`ParallelLIFNet`.

    Attributes
    ----------
    d_in : int
        Input features d per step (without the constant-1 channel).
    widths : tuple of int
        Width of each hidden LIF layer; ``len(widths) = L - 1 >= 1``.
    branches : int
        K, the number of parallel branches.
    out_layout : tuple of int
        Readout columns per output head; C = ``sum(out_layout)``. A binary
        head may use one column (sign decides) or two (argmax decides).
    head_classes : tuple of int
        Number of classes of each head (same length as ``out_layout``).
    beta : float
        Leak factor, fixed (not trained).
    bias_channel : bool
        Append a constant-1 input channel, acting as a first-layer bias.
    surrogate, surrogate_scale
        Backward-pass surrogate (see :func:`cvxsnn.kernel.get_surrogate`).
    learn_theta : bool
        Whether thresholds are trainable parameters (SG trains them).
    """

    d_in: int
    widths: tuple[int, ...]
    branches: int
    out_layout: tuple[int, ...] = (1,)
    head_classes: tuple[int, ...] = (2,)
    beta: float = 0.99
    bias_channel: bool = True
    surrogate: str = "sigmoid"
    surrogate_scale: float | None = None
    learn_theta: bool = True
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "out_layout", tuple(int(c) for c in self.out_layout))
        object.__setattr__(self, "head_classes", tuple(int(c) for c in self.head_classes))
        if self.d_in < 1:
            raise ValueError(f"d_in must be >= 1; got {self.d_in}")
        if len(self.widths) < 1 or min(self.widths) < 1:
            raise ValueError(
                f"widths must hold at least one hidden width >= 1 (depth L >= 2); got {self.widths}"
            )
        if self.branches < 1:
            raise ValueError(f"branches (K) must be >= 1; got {self.branches}")
        if len(self.out_layout) != len(self.head_classes) or not self.out_layout:
            raise ValueError(
                "out_layout and head_classes must be non-empty and of equal length; "
                f"got {self.out_layout} and {self.head_classes}"
            )
        for cols, classes in zip(self.out_layout, self.head_classes, strict=True):
            if classes < 2 or not (cols == classes or (classes == 2 and cols == 1)):
                raise ValueError(
                    "each head needs one column per class, or one column for a binary head; "
                    f"got out_layout={self.out_layout}, head_classes={self.head_classes}"
                )
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1]; got {self.beta}")
        get_surrogate(self.surrogate)  # validates the name

    @property
    def depth(self) -> int:
        """L: hidden layers + readout."""
        return len(self.widths) + 1

    @property
    def n_out(self) -> int:
        """C: readout columns."""
        return sum(self.out_layout)

    @property
    def d_eff(self) -> int:
        """Input width seen by the first layer (with the constant channel)."""
        return self.d_in + int(self.bias_channel)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown NetConfig keys: {sorted(unknown)}")
        return cls(**data)


class HiddenParams(NamedTuple):
    """All hidden parameters of a network (the "witnesses" of the convex path).

    Attributes
    ----------
    w_in : Tensor of shape (K, d_eff, m_1)
    w_hidden : tuple of Tensor, each of shape (K, m_{l-1}, m_l), l = 2..L-1
    thetas : tuple of Tensor, each of shape (K, m_l), l = 1..L-1
    """

    w_in: Tensor
    w_hidden: tuple[Tensor, ...]
    thetas: tuple[Tensor, ...]


class NetTrace(NamedTuple):
    """Everything one forward pass computed.

    Attributes
    ----------
    spikes : list of Tensor, each of shape (T, B, K, m_l)
    membranes : list of Tensor, each of shape (T, B, K, m_l), or None
    """

    spikes: list[Tensor]
    membranes: list[Tensor] | None


class ForwardWorkspace:
    """Reusable buffers for :meth:`ParallelLIFNet.last_spikes` (no gradients), and for
    other loops that need the same large scratch many times (the scoring of column
    generation, :func:`cvxsnn.colgen.pattern_scores`).

    A chunked forward pass over many samples allocates the same few
    ``(T, B, K, m)`` tensors for every chunk; each fresh allocation of that size
    is mapped anew by the allocator and its pages are zero-filled on first
    touch, which on the dictionary's sizes costs as much as the LIF recurrence.
    One workspace per chunk loop keeps them: a buffer grows when a larger one
    is asked for and is otherwise reused as a view of its first elements.
    Buffers hold no meaning between calls; a workspace is not thread-safe.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A contiguous tensor of ``shape`` (dtype and device of ``like``), contents undefined."""
        numel = math.prod(int(size) for size in shape)
        buf = self._buffers.get(name)
        fits = buf is not None and buf.numel() >= numel
        if not fits or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[name] = buf
        return buf[:numel].view(shape)

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


class ParallelLIFNet(nn.Module):
    """K parallel branches of LIF layers with a shared linear readout.

    Parameters
    ----------
    config : NetConfig
    device, dtype
        Where and in which precision the parameters live (any device and
        floating dtype; float64 on CPU for the convex path).
    generator : torch.Generator, optional
        Source of randomness for the initial weights.
    init : bool
        Draw the initial weights (:meth:`reset_parameters`). ``False`` sets every
        weight to zero and the thresholds to 1 instead (much cheaper), for a caller
        that writes the parameters next; :meth:`from_hidden_params` does both.

    Notes
    -----
    For branch k, layer l, neuron j and step t::

        I^1_t = [x_t, 1] @ W^1_k,   I^l_t = S^{l-1}_t @ W^l_k
        U_t = beta U_{t-1} + I_t - theta S_{t-1},  S_t = 1[U_t > theta]
        f_t = sum_k S^{L-1}_{t,k} @ W^out_k + b
    """

    def __init__(
        self,
        config: NetConfig,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
        *,
        init: bool = True,
    ) -> None:
        super().__init__()
        self.config = config
        self.surrogate = get_surrogate(config.surrogate, config.surrogate_scale)
        kw = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        K, widths = config.branches, config.widths
        self.w_in = nn.Parameter(torch.empty(K, config.d_eff, widths[0], **kw))
        self.w_hidden = nn.ParameterList(
            [nn.Parameter(torch.empty(K, a, b, **kw)) for a, b in itertools.pairwise(widths)]
        )
        self.thetas = nn.ParameterList(
            [nn.Parameter(torch.ones(K, w, **kw), requires_grad=config.learn_theta) for w in widths]
        )
        self.w_out = nn.Parameter(torch.empty(K, widths[-1], config.n_out, **kw))
        self.b_out = nn.Parameter(torch.zeros(config.n_out, **kw))
        if init:
            self.reset_parameters(generator=generator)
        else:  # zeros, not torch.empty's leftovers, for a caller that misses one
            with torch.no_grad():
                for w in (self.w_in, *self.w_hidden, self.w_out):
                    w.zero_()

    @classmethod
    def from_hidden_params(
        cls,
        config: NetConfig,
        params: HiddenParams,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> ParallelLIFNet:
        """A network with the given hidden parameters and a zero readout, built without
        drawing initial weights (the draw costs more than a short forward pass)."""
        net = cls(config, device=device, dtype=dtype, init=False)
        net.set_hidden_params(params)  # copy_ converts device and dtype
        return net

    # ------------------------------------------------------------------ #
    def reset_parameters(self, gain: float = 1.0, generator: torch.Generator | None = None) -> None:
        """Draw weights ~ N(0, gain^2 / fan_in), thresholds 1, readout ~ U(+-1/sqrt(fan_in))."""
        with torch.no_grad():
            for w in [self.w_in, *self.w_hidden]:
                fan_in = w.shape[1]
                w.copy_(_randn(w.shape, generator, w) * (gain / fan_in**0.5))
            for th in self.thetas:
                th.fill_(1.0)
            bound = 1.0 / (self.config.branches * self.config.widths[-1]) ** 0.5
            u = torch.rand(self.w_out.shape, generator=generator, dtype=self.w_out.dtype)
            self.w_out.copy_((2 * u - 1).to(self.w_out.device) * bound)
            self.b_out.zero_()

    @property
    def device(self) -> torch.device:
        return self.w_in.device

    @property
    def dtype(self) -> torch.dtype:
        return self.w_in.dtype

    def hidden_params(self) -> HiddenParams:
        """Detached copies of all hidden parameters."""
        return HiddenParams(
            self.w_in.detach().clone(),
            tuple(w.detach().clone() for w in self.w_hidden),
            tuple(t.detach().clone() for t in self.thetas),
        )

    def set_hidden_params(self, params: HiddenParams) -> None:
        """Write hidden parameters (shapes must match the config)."""
        with torch.no_grad():
            pairs = [(self.w_in, params.w_in)]
            if len(params.w_hidden) != len(self.w_hidden) or len(params.thetas) != len(self.thetas):
                raise ValueError(
                    f"params must hold {len(self.w_hidden)} deeper weights and {len(self.thetas)} "
                    f"thresholds; got {len(params.w_hidden)} and {len(params.thetas)}"
                )
            pairs += list(zip(self.w_hidden, params.w_hidden, strict=True))
            pairs += list(zip(self.thetas, params.thetas, strict=True))
            for dst, src in pairs:
                if tuple(dst.shape) != tuple(src.shape):
                    raise ValueError(
                        f"hidden parameter shape mismatch: expected {tuple(dst.shape)}, "
                        f"got {tuple(src.shape)}"
                    )
                dst.copy_(src)

    # ------------------------------------------------------------------ #
    def _check_input(self, x: Tensor) -> Tensor:
        x = self._check_input_shape(x)
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError("x contains NaN or infinite values")
        x = x.to(device=self.device, dtype=self.dtype)
        if self.config.bias_channel:
            x = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)
        return x

    def run_hidden(
        self,
        x: Tensor,
        return_membrane: bool = False,
        workspace: ForwardWorkspace | None = None,
    ) -> NetTrace:
        """Run all hidden layers on a whole sequence.

        Parameters
        ----------
        x : Tensor of shape (T, B, d)
        return_membrane : bool
            Also keep every layer's membrane trace.
        workspace : ForwardWorkspace, optional
            Without gradients only: write every layer's spikes (and membranes)
            into these reusable buffers, branch-major, as :meth:`last_spikes`
            does. The trace is then a set of views, valid until the
            workspace's next use; the values are the same bit for bit.

        Returns
        -------
        NetTrace
            ``spikes[l]`` of shape (T, B, K, m_l) for every hidden layer l.
        """
        if workspace is not None:
            if torch.is_grad_enabled():
                raise ValueError("run_hidden takes a workspace only with gradients off")
            return self._hidden_into(x, workspace, keep_all=True, membranes=return_membrane)
        x = self._check_input(x)
        T, B, _ = x.shape
        K = self.config.branches
        cur = x.reshape(T * B, -1) @ self.w_in.permute(1, 0, 2).reshape(x.shape[-1], -1)
        cur = cur.reshape(T, B, K, -1)  # (T, B, K, m_1)
        spikes, membranes = [], [] if return_membrane else None
        for layer in range(len(self.thetas)):
            if layer > 0:
                prev = spikes[-1]  # (T, B, K, m_{l-1})
                w = self.w_hidden[layer - 1]  # (K, m_{l-1}, m_l)
                cur = torch.bmm(prev.permute(2, 0, 1, 3).reshape(K, T * B, -1), w)
                cur = cur.reshape(K, T, B, -1).permute(1, 2, 0, 3)  # (T, B, K, m_l)
            s, v, _ = lif_run(
                cur,
                self.thetas[layer],
                self.config.beta,
                self.surrogate,
                return_membrane=return_membrane,
            )
            spikes.append(s)
            if membranes is not None:
                membranes.append(v)
        return NetTrace(spikes, membranes)

    def last_spikes(self, x: Tensor, workspace: ForwardWorkspace | None = None) -> Tensor:
        """Spikes of the last hidden layer, without gradients, in reusable buffers.

        The same computation as ``run_hidden(x).spikes[-1]``, bit for bit (a test
        checks it), arranged for long chunked passes (the spike dictionary): the
        spikes of each layer are written branch-major, ``(K, T, B, m)`` in
        memory, so the next layer's batched matmul reads them without a copy
        and writes its currents in the layout the recurrence reads; two spike
        buffers alternate between layers, and all buffers come from
        ``workspace`` and are reused by the next call.

        Parameters
        ----------
        x : Tensor of shape (T, B, d)
        workspace : ForwardWorkspace, optional
            Buffers to reuse; a fresh one when omitted.

        Returns
        -------
        Tensor of shape (T, B, K, m_{L-1})
            A view into ``workspace``: valid until its next use.
        """
        ws = ForwardWorkspace() if workspace is None else workspace
        with torch.no_grad():
            return self._hidden_into(x, ws, keep_all=False, membranes=False).spikes[-1]

    def _hidden_into(
        self, x: Tensor, ws: ForwardWorkspace, keep_all: bool, membranes: bool
    ) -> NetTrace:
        """The no-gradient forward of :meth:`run_hidden` in ``ws``'s buffers.

        ``keep_all=False`` keeps the last layer only (two spike buffers alternate).
        """
        x = self._check_input(x)
        T, B, d_eff = x.shape
        K, widths = self.config.branches, self.config.widths
        cur = ws.take("current_in", (T * B, K * widths[0]), x)
        w_in = self.w_in.detach().permute(1, 0, 2).reshape(d_eff, -1)
        torch.mm(x.reshape(T * B, d_eff), w_in, out=cur)
        cur = cur.view(T, B, K, widths[0])  # (T, B, K, m_1)
        spikes: list[Tensor] = []
        mems: list[Tensor] | None = [] if membranes else None
        for layer, m in enumerate(widths):
            if layer > 0:
                prev = spikes[-1].permute(2, 0, 1, 3).reshape(K, T * B, widths[layer - 1])  # view
                buf = ws.take("current", (K, T * B, m), x)
                torch.bmm(prev, self.w_hidden[layer - 1].detach(), out=buf)
                cur = buf.view(K, T, B, m).permute(1, 2, 0, 3)  # (T, B, K, m) view
            name = f"spikes{layer}" if keep_all else f"spikes{layer % 2}"
            out = ws.take(name, (K, T, B, m), x).permute(1, 2, 0, 3)
            mem_out = None
            if mems is not None:
                mem_out = ws.take(f"membranes{layer}", (K, T, B, m), x).permute(1, 2, 0, 3)
            s, v, _ = lif_run(
                cur,
                self.thetas[layer].detach(),
                self.config.beta,
                self.surrogate,
                return_membrane=mems is not None,
                out=out,
                membrane_out=mem_out,
            )
            spikes = [*spikes, s] if keep_all else [s]
            if mems is not None:
                mems.append(v)
        return NetTrace(spikes, mems)

    def chunk_samples(self) -> int:
        """Samples per chunk of a no-gradient pass: one (B, K, m) step tensor of the
        widest layer about ``CACHE_STEP_BYTES``, at least 16 samples."""
        step = self.dtype.itemsize * self.config.branches * max(self.config.widths)
        return max(16, CACHE_STEP_BYTES // step)

    def readout(self, last_spikes: Tensor) -> Tensor:
        """Linear readout ``sum_k S_k @ W^out_k + b``.

        Parameters
        ----------
        last_spikes : Tensor of shape (..., K, m_{L-1})

        Returns
        -------
        Tensor of shape (..., C)
        """
        lead = last_spikes.shape[:-2]
        flat = last_spikes.reshape(-1, last_spikes.shape[-2] * last_spikes.shape[-1])
        out = flat @ self.w_out.reshape(-1, self.config.n_out) + self.b_out
        return out.reshape(*lead, self.config.n_out)

    def forward(self, x: Tensor, steps: Sequence[int] | Tensor | None = None) -> Tensor:
        """Readout at the supervised steps.

        Parameters
        ----------
        x : Tensor of shape (T, B, d)
        steps : sequence of int, optional
            Time indices (0-based) to read; all steps when omitted.

        Returns
        -------
        Tensor of shape (S, B, C)
        """
        last = self.run_hidden(x).spikes[-1]  # (T, B, K, m)
        if steps is not None:
            last = last[torch.as_tensor(steps, device=last.device, dtype=torch.long)]
        return self.readout(last)

    def predict(
        self,
        x: Tensor,
        steps: Sequence[int] | Tensor | None = None,
        chunk_rows: int | None = None,
    ) -> Tensor:
        """Predicted class of each head: Tensor of shape (S, B, H), dtype long.

        Runs without gradients in chunks of ``chunk_rows`` samples
        (:meth:`chunk_samples` by default) through :meth:`last_spikes`, so
        memory does not grow with B: the labels are those of ``self(x, steps)``
        (a chunk's readout can differ from the whole batch's in the last bit, as
        a one-row product takes another BLAS path; a label changes only at an
        exact tie; :meth:`outputs` gives ``forward``'s values exactly).
        When at least a tenth of the samples in ``x`` are repeats, each distinct
        sample runs once and its predictions are copied
        (:func:`cvxsnn.samples.repeated_samples`).
        """
        from cvxsnn.samples import repeated_samples

        x = self._check_input_shape(x)
        chunk = self.chunk_samples() if chunk_rows is None else check_chunk(chunk_rows)
        distinct = repeated_samples(x)
        if distinct is None:
            return self._predict_chunks(x, steps, chunk)
        out = self._predict_chunks(distinct.take(x), steps, chunk)
        return out.index_select(1, torch.as_tensor(distinct.inverse, device=out.device))

    def _predict_chunks(
        self, x: Tensor, steps: Sequence[int] | Tensor | None, chunk: int
    ) -> Tensor:
        idx = None
        if steps is not None:
            idx = torch.as_tensor(steps, device=self.device, dtype=torch.long)
        ws = ForwardWorkspace()
        preds = []
        with torch.no_grad():
            for a in range(0, x.shape[1], chunk):
                last = self.last_spikes(x[:, a : a + chunk], ws)  # (T, b, K, m)
                if idx is not None:
                    last = last.index_select(0, idx)
                preds.append(decode_outputs(self.readout(last), self.config.out_layout))
        if not preds:
            return torch.zeros(
                (x.shape[0] if idx is None else len(idx), 0, len(self.config.out_layout)),
                dtype=torch.long,
                device=self.device,
            )
        return torch.cat(preds, dim=1)

    def outputs(
        self,
        x: Tensor,
        steps: Sequence[int] | Tensor | None = None,
        chunk_rows: int | None = None,
    ) -> Tensor:
        """``self(x, steps)`` without gradients, the hidden layers run in sample chunks.

        The last layer's spikes at the supervised steps are gathered chunk by chunk
        through :meth:`last_spikes` (reused buffers, chunks of ``chunk_rows``
        samples, :meth:`chunk_samples` by default), then read out in one product
        over all samples, as ``forward`` does: the values are ``forward``'s (a test
        checks it bit for bit, and so did SG runs at the standard MNIST-SEQ sizes;
        a BLAS may round a chunk's membranes differently from the whole batch's in
        the last bit, which changes a spike only at a tie with its threshold),
        while a forward pass over a whole validation split
        allocates (T, B, K, m) tensors per layer (0.9 GiB at T = 56, B = 2,000,
        K m = 2,048 in float32) and runs about three times slower. Memory holds the
        (S, B, K, m) spikes of the supervised steps.

        Parameters
        ----------
        x : Tensor of shape (T, B, d)
        steps : sequence of int, optional
            Time indices to read; all steps when omitted.
        chunk_rows : int, optional

        Returns
        -------
        Tensor of shape (S, B, C)
        """
        x = self._check_input_shape(x)
        chunk = self.chunk_samples() if chunk_rows is None else check_chunk(chunk_rows)
        T, B = x.shape[0], x.shape[1]
        idx = torch.arange(T, device=self.device)
        if steps is not None:
            idx = torch.as_tensor(steps, device=self.device, dtype=torch.long)
        K, m = self.config.branches, self.config.widths[-1]
        last = torch.empty((len(idx), B, K, m), dtype=self.dtype, device=self.device)
        ws = ForwardWorkspace()
        with torch.no_grad():
            for a in range(0, B, chunk):
                spikes = self.last_spikes(x[:, a : a + chunk], ws)  # (T, b, K, m)
                torch.index_select(spikes, 0, idx, out=last[:, a : a + chunk])
            return self.readout(last)

    def _check_input_shape(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (T, B, d); got {type(x).__name__}")
        if x.dim() != 3 or x.shape[0] < 1 or x.shape[2] != self.config.d_in:
            raise ValueError(
                f"x must have shape (T, B, d) with T >= 1 and d = {self.config.d_in}; "
                f"got {tuple(x.shape)}"
            )
        return x

    # ------------------------------------------------------------------ #
    # Stateful step API (autoregressive evaluation)
    # ------------------------------------------------------------------ #
    def init_state(self, batch: int) -> tuple[LIFState, ...]:
        """Zero state of every hidden layer for ``batch`` sequences."""
        K = self.config.branches
        return tuple(
            init_state(torch.empty(batch, K, w, device=self.device, dtype=self.dtype))
            for w in self.config.widths
        )

    def step(self, x_t: Tensor, state: tuple[LIFState, ...]) -> tuple[Tensor, tuple[LIFState, ...]]:
        """Advance one time step.

        Parameters
        ----------
        x_t : Tensor of shape (B, d)
        state : tuple of LIFState, one per hidden layer, each of shape (B, K, m_l)

        Returns
        -------
        out : Tensor of shape (B, C)
            Readout at this step.
        state : tuple of LIFState
        """
        x = self._check_input(x_t.unsqueeze(0))[0]  # (B, d_eff)
        B = x.shape[0]
        K = self.config.branches
        cur = (x @ self.w_in.permute(1, 0, 2).reshape(x.shape[-1], -1)).reshape(B, K, -1)
        new_state = []
        for layer, st in enumerate(state):
            if layer > 0:
                prev = new_state[-1].s  # (B, K, m_{l-1})
                cur = torch.bmm(prev.transpose(0, 1), self.w_hidden[layer - 1]).transpose(0, 1)
            new_state.append(
                lif_step(cur, st, self.thetas[layer], self.config.beta, self.surrogate)
            )
        return self.readout(new_state[-1].s), tuple(new_state)


def check_chunk(chunk_rows: int) -> int:
    """``chunk_rows`` if it is an int >= 1; ValueError naming it otherwise."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be an int >= 1; got {chunk_rows!r}")
    return chunk_rows


def decode_outputs(outputs: Tensor, out_layout: Sequence[int]) -> Tensor:
    """Turn readout values into class labels, head by head.

    A one-column head is binary (class 1 when the value is > 0); a wider head
    takes the argmax.

    Parameters
    ----------
    outputs : Tensor of shape (..., C)
    out_layout : sequence of int
        Columns per head, summing to C.

    Returns
    -------
    Tensor of shape (..., H), dtype long
    """
    if outputs.shape[-1] != sum(out_layout):
        raise ValueError(
            f"outputs must have {sum(out_layout)} columns for out_layout {tuple(out_layout)}; "
            f"got {outputs.shape[-1]}"
        )
    labels, start = [], 0
    for cols in out_layout:
        part = outputs[..., start : start + cols]
        labels.append((part[..., 0] > 0).long() if cols == 1 else part.argmax(-1))
        start += cols
    return torch.stack(labels, dim=-1)


def _randn(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(tuple(shape), generator=generator, dtype=like.dtype, device=gen_device)
    return z.to(like.device)


# --------------------------------------------------------------------------- #
# Saving and loading: a state_dict plus a versioned JSON config, never a pickle
# --------------------------------------------------------------------------- #
def save_model(net: ParallelLIFNet, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``net`` to ``path``: tensors plus a versioned JSON config.

    The file is read back with ``torch.load(weights_only=True)``, so loading it
    cannot run code. ``extra`` (JSON-serialisable) is stored beside the config.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "config": net.config.to_dict(),
        "extra": extra or {},
    }
    payload = {
        "header_json": json.dumps(header, sort_keys=True),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_model(
    path: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> tuple[ParallelLIFNet, dict[str, Any]]:
    """Read a model written by :func:`save_model`; returns ``(net, extra)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "header_json" not in payload:
        raise ValueError(f"{path} is not a cvxsnn model file")
    header = json.loads(payload["header_json"])
    if header.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a cvxsnn model file (format {header.get('format')!r})")
    if header.get("version") != MODEL_FORMAT_VERSION:
        raise ValueError(
            f"{path} has model format version {header.get('version')}; this cvxsnn reads "
            f"version {MODEL_FORMAT_VERSION}"
        )
    config = NetConfig.from_dict(header["config"])
    state = payload["state_dict"]
    net = ParallelLIFNet(config, device=device, dtype=dtype or state["w_in"].dtype, init=False)
    net.load_state_dict(state)  # every parameter
    return net, header.get("extra", {})


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
