"""Witnesses: the hidden parameters that define a spike dictionary.

A witness fixes every hidden weight and threshold of a K-parallel LIF network
(a :class:`~cvxsnn.network.HiddenParams`); the spikes of its last hidden layer
on the training data are the dictionary atoms (see :mod:`cvxsnn.dictionary`).

Three sources:

- :func:`sample_witnesses` with ``scheme="gaussian"``: the paper's plain option,
  every hidden weight ``~ N(0, sigma^2)`` and every threshold 1.
- :func:`sample_witnesses` with ``scheme="calibrated"`` (ours): Gaussian
  directions, then each neuron's incoming weights are rescaled so that its
  firing rate on a batch of data hits a target rate drawn uniformly in
  ``rate_range``. Thresholds stay 1; by scale invariance a weight scale ``c``
  with threshold 1 is the same neuron as threshold ``1 / c``.
- :func:`witnesses_from_network` (SG witnesses), optionally widened by
  :func:`perturb_witnesses` (Gaussian perturbations as extra branches).

All randomness comes from an explicit :class:`torch.Generator`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from cvxsnn.kernel import get_surrogate, lif_run
from cvxsnn.network import HiddenParams, ParallelLIFNet

__all__ = [
    "WitnessScheme",
    "check_hidden_params",
    "named_tensors",
    "perturb_witnesses",
    "sample_witnesses",
    "witnesses_from_network",
]

WitnessScheme = Literal["gaussian", "calibrated"]
#: Lowest threshold tried in calibration, relative to the largest reachable membrane.
_FLOOR = 1e-6
_SCHEMES = ("gaussian", "calibrated")


def sample_witnesses(
    d_in: int,
    widths: Sequence[int],
    branches: int,
    *,
    sigma: float = 1.0,
    scheme: WitnessScheme = "gaussian",
    bias_channel: bool = True,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    x: Tensor | np.ndarray | None = None,
    beta: float = 0.99,
    rate_range: tuple[float, float] = (0.05, 0.95),
    steps: Sequence[int] | None = None,
    calib_samples: int = 256,
    calib_iters: int = 16,
) -> HiddenParams:
    """Draw random witnesses for K parallel branches.

    Parameters
    ----------
    d_in : int
        Input features d per step (without the constant-1 channel).
    widths : sequence of int
        Width ``m_l`` of every hidden LIF layer, ``len(widths) = L - 1 >= 1``.
    branches : int
        K, the number of parallel branches.
    sigma : float
        Standard deviation of the Gaussian weights (``scheme="gaussian"``).
        With ``"calibrated"`` it only sets the scale before rescaling, which
        by scale invariance changes no spike.
    scheme : {"gaussian", "calibrated"}
        ``"gaussian"``: all hidden weights ``~ N(0, sigma^2)``, thresholds 1
        (the paper's plain option). ``"calibrated"``: per-neuron rescaling to
        a target firing rate measured on ``x`` (ours; see Notes).
    bias_channel : bool
        Whether the first layer sees a constant-1 input channel
        (``d_eff = d_in + 1``).
    generator : torch.Generator
        The only source of randomness; the same seed gives the same witnesses.
    device, dtype
        Where and in which precision the witnesses are returned.
    x : Tensor of shape (T, n, d_in), optional
        Calibration data; required by ``"calibrated"``, ignored otherwise.
    beta : float
        Leak factor of the network the witnesses are calibrated for.
    rate_range : tuple of float
        ``(lo, hi)`` with ``0 < lo <= hi < 1``: target firing rates are drawn
        uniformly in this interval, one per neuron (``"calibrated"``).
    steps : sequence of int, optional
        Supervised steps (``"calibrated"``): the last layer's rate is measured
        at these steps only, since only they enter the dictionary. All steps
        when omitted. Hidden layers below always use all steps.
    calib_samples : int
        At most this many samples of ``x`` (a random subset) are used for
        calibration, which bounds its memory to about
        ``calib_samples * T * K * m * 8 * 4`` bytes per layer.
    calib_iters : int
        Bisection steps on the log threshold per layer.

    Returns
    -------
    HiddenParams
        ``w_in`` of shape (K, d_eff, m_1), ``w_hidden[l]`` of shape
        (K, m_{l-1}, m_l), ``thetas[l]`` of shape (K, m_l), all thresholds 1.

    Notes
    -----
    Calibration runs layer by layer. With the spikes of layer ``l - 1`` fixed
    (the input for ``l = 1``), the currents ``I_t = S^{l-1}_t W_l`` of layer
    ``l`` are computed once; a neuron's firing rate (mean of ``S_t`` over all
    steps and calibration samples) is then a function of its threshold
    ``theta`` alone, evaluated with :func:`cvxsnn.kernel.lif_run` (the one
    kernel) for all neurons of all branches at once. A bisection on
    ``log theta`` in ``(hi * 1e-6, hi]`` with ``hi = max_n sum_t relu(I_t)``
    (no spike is possible above it) finds ``theta_j`` whose rate is closest to
    the neuron's target; the incoming weights are then divided by
    ``theta_j`` and the threshold set back to 1. A neuron whose current is
    never positive on the data cannot fire for any positive threshold; its
    incoming weights are negated (the Gaussian law is symmetric) when that
    makes it able to fire. A neuron that can fire in neither sign keeps its
    Gaussian weights.
    """
    widths = _check_arch(d_in, widths, branches)
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme must be one of {list(_SCHEMES)}; got {scheme!r}")
    if not (isinstance(sigma, int | float) and sigma > 0 and np.isfinite(sigma)):
        raise ValueError(f"sigma must be a finite float > 0; got {sigma!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    d_eff = d_in + int(bias_channel)
    K = branches
    shapes = [(K, d_eff, widths[0])] + [(K, a, b) for a, b in itertools.pairwise(widths)]
    weights = [_randn(s, generator, dtype, device) * sigma for s in shapes]
    thetas = [torch.ones(K, w, dtype=dtype, device=_device(device)) for w in widths]
    if scheme == "calibrated":
        if x is None:
            raise ValueError(
                "scheme='calibrated' needs calibration data x of shape (T, n, d_in); got None"
            )
        lo, hi = rate_range
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"rate_range must satisfy 0 < lo <= hi < 1; got {rate_range}")
        if calib_samples < 1 or calib_iters < 1:
            raise ValueError(
                f"calib_samples and calib_iters must be >= 1; got {calib_samples} and {calib_iters}"
            )
        xt = _check_data(x, d_in)
        rate_steps = None
        if steps is not None:
            rate_steps = tuple(int(s) for s in steps)
            T = xt.shape[0]
            if not rate_steps or any(not 0 <= s < T for s in rate_steps):
                raise ValueError(f"steps must be non-empty indices in [0, {T}); got {rate_steps}")
        weights = _calibrate(
            weights,
            xt,
            generator,
            bias_channel,
            beta,
            (lo, hi),
            calib_samples,
            calib_iters,
            rate_steps,
        )
    return HiddenParams(weights[0], tuple(weights[1:]), tuple(thetas))


def witnesses_from_network(
    net: ParallelLIFNet, *, dtype: torch.dtype | None = torch.float64
) -> HiddenParams:
    """SG witnesses: the hidden parameters of a (trained) network, learned thresholds kept.

    Parameters
    ----------
    net : ParallelLIFNet
    dtype : torch.dtype, optional
        Precision of the copies (float64 by default, for the convex path);
        ``None`` keeps the network's dtype.

    Returns
    -------
    HiddenParams
        Detached copies on the network's device. Thresholds may be anything
        the training produced (also ``<= 0``); they are kept as learned.
    """
    if not isinstance(net, ParallelLIFNet):
        raise TypeError(f"net must be a ParallelLIFNet; got {type(net).__name__}")
    hp = net.hidden_params()
    if dtype is None:
        return hp
    return HiddenParams(
        hp.w_in.to(dtype),
        tuple(w.to(dtype) for w in hp.w_hidden),
        tuple(t.to(dtype) for t in hp.thetas),
    )


def perturb_witnesses(
    params: HiddenParams,
    scale: float,
    generator: torch.Generator,
    copies: int = 1,
) -> HiddenParams:
    """Widen witnesses with Gaussian perturbations of them, as extra branches.

    Parameters
    ----------
    params : HiddenParams
        K branches (e.g. from :func:`witnesses_from_network`).
    scale : float
        Relative size of the perturbation, ``>= 0``: each neuron's incoming
        weights get noise ``scale * rms(w_j) * N(0, 1)``, with ``rms(w_j)``
        the root mean square of that neuron's incoming weights.
    generator : torch.Generator
        Source of the noise.
    copies : int
        Number of perturbed copies, ``>= 1``.

    Returns
    -------
    HiddenParams
        ``K * (1 + copies)`` branches: the original K first, then copy 1 of
        all K branches, copy 2, ... Thresholds are copied unchanged.

    Notes
    -----
    The noise is relative per neuron so that it respects scale invariance:
    rescaling a neuron's weights and threshold by ``c > 0`` before perturbing
    gives the same perturbed neuron up to that same rescaling.
    """
    check_hidden_params(params)
    if not (isinstance(scale, int | float) and scale >= 0 and np.isfinite(scale)):
        raise ValueError(f"scale must be a finite float >= 0; got {scale!r}")
    if not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies must be an int >= 1; got {copies!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    weights = [params.w_in, *params.w_hidden]
    out_w: list[list[Tensor]] = [[w] for w in weights]
    for _ in range(copies):
        for layer, w in enumerate(weights):
            rms = w.pow(2).mean(dim=1, keepdim=True).sqrt()  # (K, 1, m)
            noise = _randn(tuple(w.shape), generator, w.dtype, w.device)
            out_w[layer].append(w + scale * rms * noise)
    ws = [torch.cat(parts, dim=0) for parts in out_w]
    ths = tuple(t.repeat(copies + 1, 1) for t in params.thetas)
    return HiddenParams(ws[0], tuple(ws[1:]), ths)


def check_hidden_params(params: HiddenParams) -> tuple[int, int, tuple[int, ...]]:
    """Validate the shapes of witnesses; return ``(K, d_eff, widths)``.

    Raises
    ------
    ValueError
        When shapes are inconsistent or a value is NaN or infinite.
    """
    if not isinstance(params, HiddenParams):
        raise TypeError(f"params must be a HiddenParams; got {type(params).__name__}")
    w_in = params.w_in
    if w_in.dim() != 3:
        raise ValueError(f"params.w_in must have shape (K, d_eff, m_1); got {tuple(w_in.shape)}")
    K, d_eff, m1 = w_in.shape
    widths = [m1]
    for i, w in enumerate(params.w_hidden):
        if w.dim() != 3 or w.shape[0] != K or w.shape[1] != widths[-1]:
            raise ValueError(
                f"params.w_hidden[{i}] must have shape ({K}, {widths[-1]}, m); got {tuple(w.shape)}"
            )
        widths.append(w.shape[2])
    if len(params.thetas) != len(widths):
        raise ValueError(
            f"params.thetas must hold {len(widths)} tensors (one per hidden layer); "
            f"got {len(params.thetas)}"
        )
    for i, (t, m) in enumerate(zip(params.thetas, widths, strict=True)):
        if tuple(t.shape) != (K, m):
            raise ValueError(f"params.thetas[{i}] must have shape ({K}, {m}); got {tuple(t.shape)}")
    for name, tensor in named_tensors(params):
        if not torch.isfinite(tensor).all():
            raise ValueError(f"params.{name} contains NaN or infinite values")
    return int(K), int(d_eff), tuple(int(m) for m in widths)


def named_tensors(params: HiddenParams) -> list[tuple[str, Tensor]]:
    """``[("w_in", ...), ("w_hidden[0]", ...), ..., ("thetas[0]", ...), ...]``."""
    return [
        ("w_in", params.w_in),
        *[(f"w_hidden[{i}]", w) for i, w in enumerate(params.w_hidden)],
        *[(f"thetas[{i}]", t) for i, t in enumerate(params.thetas)],
    ]


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _check_arch(d_in: int, widths: Sequence[int], branches: int) -> tuple[int, ...]:
    if not isinstance(d_in, int) or d_in < 1:
        raise ValueError(f"d_in must be an int >= 1; got {d_in!r}")
    widths = tuple(int(w) for w in widths)
    if len(widths) < 1 or min(widths) < 1:
        raise ValueError(f"widths must hold at least one hidden width >= 1; got {widths}")
    if not isinstance(branches, int) or branches < 1:
        raise ValueError(f"branches (K) must be an int >= 1; got {branches!r}")
    return widths


def _check_data(x: Tensor | np.ndarray, d_in: int) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 3 or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] != d_in:
        raise ValueError(
            f"x must have shape (T, n, d) with T, n >= 1 and d = {d_in}; got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        x = x.to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    return x


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def _randn(
    shape: Sequence[int],
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device | str | None,
) -> Tensor:
    """Standard normal draws from ``generator`` (on its device), moved to ``device``."""
    z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=generator.device)
    return z.to(_device(device) if device is not None else z.device)


def _calibrate(
    weights: list[Tensor],
    x: Tensor,
    generator: torch.Generator,
    bias_channel: bool,
    beta: float,
    rate_range: tuple[float, float],
    calib_samples: int,
    calib_iters: int,
    rate_steps: tuple[int, ...] | None,
) -> list[Tensor]:
    """Rescale (and possibly negate) each neuron's incoming weights to a target rate."""
    dev, dtype = weights[0].device, weights[0].dtype
    n = x.shape[1]
    if n > calib_samples:
        idx = torch.randperm(n, generator=generator, device=generator.device)[:calib_samples]
        x = x[:, idx.cpu()]
    x = x.to(device=dev, dtype=dtype)
    if bias_channel:
        x = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)
    surrogate = get_surrogate("sigmoid")
    lo_r, hi_r = rate_range
    K = weights[0].shape[0]
    out: list[Tensor] = []
    prev: Tensor | None = None  # spikes of the layer below, (T, B, K, m_{l-1})
    with torch.no_grad():
        for layer, w in enumerate(weights):
            m = w.shape[2]
            last = layer == len(weights) - 1
            at = None if rate_steps is None or not last else torch.as_tensor(rate_steps, device=dev)
            u = torch.rand(K, m, generator=generator, dtype=dtype, device=generator.device)
            target = (lo_r + (hi_r - lo_r) * u).to(dev)  # (K, m)
            cur = _currents(x if layer == 0 else prev, w, first=layer == 0)  # (T, B, K, m)

            def rate_at(c: Tensor, theta: Tensor, at: Tensor | None = at) -> Tensor:
                s, _, _ = lif_run(c, theta, beta, surrogate)
                if at is not None:
                    s = s.index_select(0, at)
                return s.mean(dim=(0, 1))  # (K, m)

            # No spike is possible above top = max_n sum_t relu(I_t); the rate at
            # top * 1e-6 is about the most the neuron can reach with that sign.
            pos = cur.clamp(min=0).sum(0).amax(0)  # (K, m)
            neg = (-cur).clamp(min=0).sum(0).amax(0)
            r_pos = rate_at(cur, pos * _FLOOR)
            r_neg = rate_at(-cur, neg * _FLOOR)
            # Keep the drawn sign when it can reach the target, else the better one.
            flip = (r_pos < target) & (r_neg > r_pos)
            alive = torch.maximum(r_pos, r_neg) > 0
            sign = torch.where(flip, -1.0, 1.0).to(dtype)  # (K, m)
            cur = cur * sign
            top = torch.where(flip, neg, pos)
            log_hi = torch.log(torch.where(alive, top, torch.ones_like(top)))
            log_lo = log_hi + np.log(_FLOOR)
            for _ in range(calib_iters):
                mid = 0.5 * (log_lo + log_hi)
                too_many = rate_at(cur, torch.exp(mid)) > target  # threshold too low
                log_lo = torch.where(too_many, mid, log_lo)
                log_hi = torch.where(too_many, log_hi, mid)
            theta = torch.exp(0.5 * (log_lo + log_hi))
            scale = torch.where(alive, sign / theta, torch.ones_like(theta))  # (K, m)
            w_new = w * scale[:, None, :]
            out.append(w_new)
            cur = _currents(x if layer == 0 else prev, w_new, first=layer == 0)
            ones = torch.ones(K, m, dtype=dtype, device=dev)
            prev, _, _ = lif_run(cur, ones, beta, surrogate)
    return out


def _currents(inp: Tensor, w: Tensor, first: bool) -> Tensor:
    """Currents of one layer for all branches, as in :meth:`ParallelLIFNet.run_hidden`.

    ``inp`` is (T, B, d_eff) for the first layer (shared by all branches) or
    (T, B, K, m_{l-1}) spikes; ``w`` is (K, fan_in, m). Returns (T, B, K, m).
    """
    K = w.shape[0]
    if first:
        T, B, d = inp.shape
        cur = inp.reshape(T * B, d) @ w.permute(1, 0, 2).reshape(d, -1)
        return cur.reshape(T, B, K, -1)
    T, B = inp.shape[:2]
    cur = torch.bmm(inp.permute(2, 0, 1, 3).reshape(K, T * B, -1), w)
    return cur.reshape(K, T, B, -1).permute(1, 2, 0, 3)
