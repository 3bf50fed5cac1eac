"""The one leaky integrate-and-fire (LIF) kernel of cvxsnn.

Every part of the package that produces a spike goes through :func:`lif_step`
(one step) or :func:`lif_run` (a time-major loop over it): surrogate-gradient
training, the spike dictionary of the convex path, the reconstructed network,
autoregressive evaluation. There is no second implementation anywhere.

Dynamics of neuron ``i`` (state starts at ``U_0 = S_0 = 0``)::

    U_t = beta * U_{t-1} + I_t - theta_i * S_{t-1}
    S_t = 1[U_t > theta_i]

with a strict ``>`` and a subtractive reset by the previous step's spike. This
is snnTorch ``Leaky(beta, threshold, reset_mechanism="subtract")`` exactly.

The forward pass of the threshold is the Heaviside step. Its backward pass is a
surrogate derivative chosen by the caller (:class:`Sigmoid`, :class:`Atan`,
:class:`FastSigmoid`); surrogates are small picklable objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "Atan",
    "FastSigmoid",
    "LIFState",
    "Sigmoid",
    "Surrogate",
    "get_surrogate",
    "init_state",
    "lif_run",
    "lif_step",
]


# --------------------------------------------------------------------------- #
# Surrogate derivatives
# --------------------------------------------------------------------------- #
class _SpikeFn(torch.autograd.Function):
    """Heaviside forward, surrogate derivative backward."""

    @staticmethod
    def forward(ctx, x: Tensor, surrogate: Surrogate) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * ctx.surrogate.derivative(x), None


@dataclass(frozen=True)
class Surrogate:
    """Base class of surrogate derivatives: ``spike(x)`` is ``1[x > 0]`` in forward.

    Subclasses define :meth:`derivative`, the stand-in for the Heaviside
    derivative at ``x = U - theta`` used in backward only.
    """

    def derivative(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative_(self, x: Tensor, work: Tensor) -> Tensor:
        """:meth:`derivative` of ``x`` written over ``x`` (returned), equal to it bit for
        bit; ``work`` is scratch of ``x``'s shape and dtype. Subclasses may avoid the
        temporaries; this default does not."""
        return x.copy_(self.derivative(x))

    def spike(self, x: Tensor) -> Tensor:
        """Return ``1[x > 0]`` in the dtype of ``x``; the surrogate in backward."""
        if torch.is_grad_enabled() and x.requires_grad:
            return _SpikeFn.apply(x, self)
        return (x > 0).to(x.dtype)

    @property
    def name(self) -> str:
        return _SURROGATE_NAMES[type(self)]


@dataclass(frozen=True)
class Sigmoid(Surrogate):
    """Derivative of ``sigma(slope * x)``: ``slope * s * (1 - s)`` (the paper's baseline).

    The ``s (1 - s)`` form never overflows, unlike ``k e^{-kx} / (1 + e^{-kx})^2``.
    """

    slope: float = 5.0

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.slope * x)
        return self.slope * s * (1.0 - s)

    def derivative_(self, x: Tensor, work: Tensor) -> Tensor:
        # the operations of derivative() in its order, in place: (slope s) (1 - s)
        s = torch.sigmoid_(x.mul_(self.slope))
        torch.neg(s, out=work).add_(1.0)  # 1 + (-s) rounds as 1 - s
        return s.mul_(self.slope).mul_(work)


@dataclass(frozen=True)
class Atan(Surrogate):
    """Derivative of ``atan(pi/2 * alpha * x) / pi + 1/2`` (snnTorch ``atan``)."""

    alpha: float = 2.0

    def derivative(self, x: Tensor) -> Tensor:
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * x) ** 2)


@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """Derivative ``1 / (1 + slope * |x|)^2`` (SuperSpike, snnTorch ``fast_sigmoid``)."""

    slope: float = 25.0

    def derivative(self, x: Tensor) -> Tensor:
        return 1.0 / (1.0 + self.slope * x.abs()) ** 2


_SURROGATE_NAMES: dict[type, str] = {Sigmoid: "sigmoid", Atan: "atan", FastSigmoid: "fast_sigmoid"}
SurrogateName = Literal["sigmoid", "atan", "fast_sigmoid"]


def get_surrogate(name: str | Surrogate, scale: float | None = None) -> Surrogate:
    """Return a surrogate by name (``sigmoid``, ``atan``, ``fast_sigmoid``).

    Parameters
    ----------
    name : str or Surrogate
        A registered name, or a surrogate object returned unchanged.
    scale : float, optional
        The surrogate's sharpness parameter (``slope`` or ``alpha``); its
        default when omitted.
    """
    if isinstance(name, Surrogate):
        return name
    classes = {v: k for k, v in _SURROGATE_NAMES.items()}
    if name not in classes:
        raise ValueError(f"surrogate must be one of {sorted(classes)}; got {name!r}")
    cls = classes[name]
    return cls() if scale is None else cls(scale)


# --------------------------------------------------------------------------- #
# The kernel
# --------------------------------------------------------------------------- #
class LIFState(NamedTuple):
    """State of a population of LIF neurons after a step.

    Attributes
    ----------
    v : Tensor of shape (B, ...)
        Membrane potential ``U_t``.
    s : Tensor of shape (B, ...)
        Spikes ``S_t`` in {0, 1}, same dtype as ``v``.
    """

    v: Tensor
    s: Tensor


def init_state(like: Tensor) -> LIFState:
    """Zero state (``U_0 = S_0 = 0``) with the shape, dtype and device of ``like``."""
    z = torch.zeros_like(like)
    return LIFState(z, z)


def lif_step(
    current: Tensor,
    state: LIFState,
    theta: Tensor,
    beta: float | Tensor,
    surrogate: Surrogate,
    detach_reset: bool = True,
    out: LIFState | None = None,
) -> LIFState:
    """Advance LIF neurons by one step; pure function returning a fresh state.

    Parameters
    ----------
    current : Tensor of shape (B, ...)
        Input current ``I_t`` (the layer's weighted input at step t).
    state : LIFState
        ``(U_{t-1}, S_{t-1})``, each of the shape of ``current``.
    theta : Tensor broadcastable to ``current`` (e.g. shape (K, m))
        Per-neuron threshold, also the size of the subtractive reset.
    beta : float or Tensor
        Leak factor.
    surrogate : Surrogate
        Backward-pass stand-in for the Heaviside derivative.
    detach_reset : bool
        Treat the reset term ``theta * S_{t-1}`` as a constant in backward, as
        snnTorch does. Forward values do not depend on it.
    out : LIFState, optional
        Buffers of the shape and dtype of ``current`` to write ``(U_t, S_t)``
        into, with gradients off only (raises otherwise). ``out.v`` may be
        ``state.v`` (an update in place); ``out.s`` must not be ``state.s``.
        The values are bit for bit those of the pure form; only the
        temporaries are saved (the forward pass of the spike dictionary).
        Without gradients and without ``out`` the same in-place arithmetic
        runs in two fresh tensors (the step API of autoregressive evaluation),
        unless the pure form would promote dtypes or broadcast the result.

    Returns
    -------
    LIFState
        ``(U_t, S_t)`` (``out`` when given).

    Notes
    -----
    ``U_t = beta U_{t-1} + I_t - theta S_{t-1}``; ``S_t = 1[U_t > theta]``.
    In place, the reset is ``U += (-1) * theta * S`` (addcmul): ``theta * S``
    is exactly 0 or theta, so this rounds as the subtraction does, and
    ``U > theta`` is ``U - theta > 0`` for every pair of floats (with
    subnormals kept, torch's default: the difference of two distinct floats
    is then never rounded to zero).
    """
    if (
        out is None
        and not torch.is_grad_enabled()
        and _same_kind(current.unsqueeze(0), theta, beta, state)
    ):
        # no graph to keep: the in-place arithmetic in two fresh tensors (the same values
        # in four passes instead of about seven, without the temporaries)
        out = LIFState(torch.empty_like(current), torch.empty_like(current))
    if out is not None:
        if torch.is_grad_enabled():
            raise ValueError("lif_step writes into out only with gradients off (torch.no_grad)")
        v = out.v
        torch.mul(state.v, beta, out=v)
        v.add_(current).addcmul_(theta, state.s, value=-1.0)
        torch.gt(v, theta, out=out.s)
        return out
    s_prev = state.s.detach() if detach_reset else state.s
    v = beta * state.v + current - theta * s_prev
    s = surrogate.spike(v - theta)
    return LIFState(v, s)


def lif_run(
    currents: Tensor,
    theta: Tensor,
    beta: float | Tensor,
    surrogate: Surrogate,
    state: LIFState | None = None,
    return_membrane: bool = False,
    detach_reset: bool = True,
    out: Tensor | None = None,
    membrane_out: Tensor | None = None,
    fused: bool = True,
) -> tuple[Tensor, Tensor | None, LIFState]:
    """Run :func:`lif_step` over a time-major sequence of currents.

    Parameters
    ----------
    currents : Tensor of shape (T, B, ...)
        Input currents, time first. Any trailing shape, e.g. ``(T, B, K, m)``
        for K parallel branches of m neurons, all advanced in one call.
    theta : Tensor broadcastable to ``currents[0]``
        Per-neuron thresholds.
    beta, surrogate, detach_reset
        As in :func:`lif_step`.
    state : LIFState, optional
        Initial state; zeros when omitted.
    return_membrane : bool
        Also return the membrane trace.
    out : Tensor of shape (T, B, ...), optional
        Buffer (any strides, the dtype of ``currents``) the spikes are written
        into and returned as ``spikes``; gradients off only. Reusing one
        buffer across calls saves allocating, and first touching, a fresh
        ``(T, B, ...)`` tensor every call (the page faults of that first touch
        cost as much as the recurrence itself at the dictionary's sizes).
    membrane_out : Tensor of shape (T, B, ...), optional
        The same for the membrane trace (with ``return_membrane``).
    fused : bool
        With gradients on, from the zero state, with ``detach_reset`` and
        without ``return_membrane``: run the recurrence as one autograd node
        (:class:`_FusedLIFRun`) instead of a graph of about ten nodes per step.
        The forward values are those of the step-by-step graph bit for bit;
        the currents' gradients are rounded as the graph rounds them (bit for
        bit in the SG networks checked; a step whose size is not a multiple of
        the vector width can differ in the last bit of the surrogate), and
        the threshold's gradient is the same sum in another order (equal to
        rounding). ``False`` keeps the step-by-step graph.

    Returns
    -------
    spikes : Tensor of shape (T, B, ...)
    membranes : Tensor of shape (T, B, ...) or None
    state : LIFState
        The state after the last step.
    """
    if currents.dim() < 2:
        raise ValueError(
            f"currents must have shape (T, B, ...) with T >= 1; got {tuple(currents.shape)}"
        )
    if currents.shape[0] < 1:
        raise ValueError(f"currents must have T >= 1 time steps; got T = {currents.shape[0]}")
    from_zero = state is None
    if state is None:
        state = init_state(currents[0])
    fast = not torch.is_grad_enabled() and _same_kind(currents, theta, beta, state)
    if membrane_out is not None and not return_membrane:
        raise ValueError("membrane_out needs return_membrane=True")
    for name, buf in (("out", out), ("membrane_out", membrane_out)):
        if buf is None:
            continue
        if not fast:
            raise ValueError(
                f"lif_run writes into {name} only with gradients off (torch.no_grad) and theta, "
                "beta and the state of the dtype and per-step shape of currents"
            )
        if buf.shape != currents.shape or buf.dtype != currents.dtype:
            raise ValueError(
                f"{name} must have the shape {tuple(currents.shape)} and dtype {currents.dtype} "
                f"of currents; got {tuple(buf.shape)} {buf.dtype}"
            )
    if fast:
        # no graph to keep: every step writes into preallocated buffers (the same
        # arithmetic without its temporaries; 2.7x faster on cache-sized chunks)
        spk = torch.empty_like(currents) if out is None else out
        mem = None
        if return_membrane:
            mem = torch.empty_like(currents) if membrane_out is None else membrane_out
        v = torch.empty_like(currents[0]) if mem is None else None
        for t, current in enumerate(currents.unbind(0)):
            buf = LIFState(mem[t] if mem is not None else v, spk[t])
            state = lif_step(current, state, theta, beta, surrogate, detach_reset, out=buf)
        return spk, mem, LIFState(state.v if mem is None else state.v.clone(), state.s.clone())
    if (
        fused
        and from_zero
        and detach_reset
        and not return_membrane
        and not (isinstance(beta, Tensor) and beta.requires_grad)
        and _same_kind(currents, theta, beta, LIFState(currents[0], currents[0]))
    ):
        spk, v_last = _FusedLIFRun.apply(currents, theta, beta, surrogate)
        return spk, None, LIFState(v_last, spk[-1])
    spikes = []
    membranes = [] if return_membrane else None
    # unbind, not currents[t]: the backward of T selects would allocate and zero-fill T
    # tensors of the full (T, B, ...) shape (O(T^2) memory traffic); unbind's is one stack
    for current in currents.unbind(0):
        state = lif_step(current, state, theta, beta, surrogate, detach_reset)
        spikes.append(state.s)
        if membranes is not None:
            membranes.append(state.v)
    mem = torch.stack(membranes) if membranes is not None else None
    return torch.stack(spikes), mem, state


class _FusedLIFRun(torch.autograd.Function):
    """The whole recurrence from the zero state as one autograd node.

    Forward: the in-place steps of :func:`lif_step` (the values of the pure
    step bit for bit), keeping the membrane trace and the spikes. Backward,
    with ``x_t = U_t - theta``, ``a_t = dL/dS_t * surrogate'(x_t)`` and the
    reset detached (``S_{t-1}`` carries no gradient into ``U_t``)::

        dL/dU_t   = a_t + beta dL/dU_{t+1}      (one reverse scan)
        dL/dI_t   = dL/dU_t
        dL/dtheta = -sum_t (a_t + S_{t-1} dL/dU_t)

    The backward walks the time axis newest first with every temporary one
    (B, ...) step (measured faster than whole-block (T, B, ...) temporaries:
    1.9 s against 2.4 s of backward over 10 batches of MNIST-SEQ at T = 56,
    K = 64), and rounds as the step-by-step graph does (the surrogate times
    the incoming gradient, ``beta`` times the later gradient, then the sum).
    """

    @staticmethod
    def forward(ctx, currents: Tensor, theta: Tensor, beta, surrogate):  # type: ignore[override]
        spk = torch.empty_like(currents)
        mem = torch.empty_like(currents)
        _, _, last = lif_run(
            currents, theta, beta, surrogate, return_membrane=True, out=spk, membrane_out=mem
        )
        ctx.save_for_backward(mem, spk, theta, beta if isinstance(beta, Tensor) else None)
        ctx.beta = beta if not isinstance(beta, Tensor) else None
        ctx.surrogate = surrogate
        return spk, last.v

    @staticmethod
    def backward(ctx, grad_spikes: Tensor | None, grad_v_last: Tensor | None):  # type: ignore[override]
        mem, spk, theta, beta_t = ctx.saved_tensors
        beta = ctx.beta if beta_t is None else beta_t
        want_theta = ctx.needs_input_grad[1]
        grad_cur = torch.empty_like(mem)
        T = mem.shape[0]
        sum_a = sum_reset = None
        # The last step runs as the graph of lif_step does (fresh tensors: the memory
        # layout of the threshold-gradient accumulators, which sets the order of their
        # final reduction, is the graph's). Every earlier step forms a_t in its slot of
        # grad_cur with its temporaries in three reused buffers: the same elementwise
        # operations in the same order, so the same values bit for bit.
        t = T - 1
        if grad_spikes is None:
            adj = torch.zeros_like(mem[t])
        else:
            adj = grad_spikes[t] * ctx.surrogate.derivative(mem[t] - theta)  # a_t
        if want_theta:
            sum_a = adj.clone()
        if grad_v_last is not None:
            adj = adj + grad_v_last
        grad_cur[t] = adj
        if want_theta and t > 0:
            sum_reset = adj * spk[t - 1]
        x, work, tmp = (torch.empty_like(mem[0]) for _ in range(3))
        for t in range(T - 2, -1, -1):
            adj = grad_cur[t]
            if grad_spikes is None:
                adj.zero_()
            else:
                torch.sub(mem[t], theta, out=x)
                torch.mul(grad_spikes[t], ctx.surrogate.derivative_(x, work), out=adj)  # a_t
            if want_theta:
                sum_a.add_(adj)
            adj.add_(torch.mul(grad_cur[t + 1], beta, out=tmp))  # a_t + beta dL/dU_{t+1}
            if want_theta and t > 0:
                sum_reset.add_(torch.mul(adj, spk[t - 1], out=tmp))
        grad_theta = None
        if want_theta:
            total = sum_a if sum_reset is None else sum_a.add_(sum_reset)
            grad_theta = -total.sum_to_size(theta.shape)
        return grad_cur, grad_theta, None, None


def _same_kind(currents: Tensor, theta: Tensor, beta: float | Tensor, state: LIFState) -> bool:
    """Whether the in-place step gives what the pure one would: no dtype promotion, and
    the per-step result has the shape of one step of ``currents``."""
    dt, shape = currents.dtype, currents.shape[1:]
    tensors = [theta, state.v, state.s] + ([beta] if isinstance(beta, Tensor) else [])
    if any(not isinstance(t, Tensor) or t.dtype != dt for t in tensors):
        return False
    return _broadcast_shape(*(tuple(t.shape) for t in tensors), tuple(shape)) == tuple(shape)


def _broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
    """The broadcast of ``shapes`` (numpy's rule), or None when they do not broadcast.

    Plain Python: ``torch.broadcast_shapes`` imports sympy on its first call (over a
    second of a fresh process's first dictionary build).
    """
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for s in shapes:
        for i, size in enumerate(s, start=ndim - len(s)):
            if size != 1:
                if out[i] not in (1, size):
                    return None
                out[i] = size
    return tuple(out)
