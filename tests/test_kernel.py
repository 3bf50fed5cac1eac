"""The LIF kernel: golden trace, snnTorch equivalence, surrogates, errors."""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cvxsnn.kernel import (
    Atan,
    FastSigmoid,
    LIFState,
    Sigmoid,
    _broadcast_shape,
    get_surrogate,
    init_state,
    lif_run,
    lif_step,
)

# Hand-computed trace: beta = 0.5 keeps every value an exact binary fraction.
# Neuron A (theta 1):   U = .5, .75, .875, 1.9375 (spike), .96875 - 1 = -.03125
# Neuron B (theta .5):  U = .5 (not > .5: strict), .75 (spike), .375 - .5 = -.125,
#                       -.0625, -.03125 + 1 = .96875 (spike)
# Neuron C (theta 2):   U = 3 (spike), 1.5 - 2 = -.5, -.25, -.125 + 2.5 = 2.375 (spike),
#                       1.1875 - 1 - 2 = -1.8125
GOLDEN_CURRENTS = [
    [0.5, 0.5, 3.0],
    [0.5, 0.5, 0.0],
    [0.5, 0.0, 0.0],
    [1.5, 0.0, 2.5],
    [0.0, 1.0, -1.0],
]
GOLDEN_THETA = [1.0, 0.5, 2.0]
GOLDEN_U = [
    [0.5, 0.5, 3.0],
    [0.75, 0.75, -0.5],
    [0.875, -0.125, -0.25],
    [1.9375, -0.0625, 2.375],
    [-0.03125, 0.96875, -1.8125],
]
GOLDEN_S = [
    [0, 0, 1],
    [0, 1, 0],
    [0, 0, 0],
    [1, 0, 1],
    [0, 1, 0],
]


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_golden_trace(dtype, grad):
    cur = torch.tensor(GOLDEN_CURRENTS, dtype=dtype).unsqueeze(1)  # (T=5, B=1, 3)
    theta = torch.tensor(GOLDEN_THETA, dtype=dtype)
    with torch.set_grad_enabled(grad):  # the pure step, and the in-place one without grad
        s, u, _ = lif_run(cur, theta, 0.5, Sigmoid(), return_membrane=True)
    assert torch.equal(u[:, 0], torch.tensor(GOLDEN_U, dtype=dtype))
    assert torch.equal(s[:, 0], torch.tensor(GOLDEN_S, dtype=dtype))


@settings(max_examples=40, deadline=None)
@given(
    T=st.integers(1, 8),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    beta=st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]),
    beta_tensor=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    scale=st.floats(0.1, 10.0),
    seed=st.integers(0, 10_000),
)
def test_in_place_path_is_bit_identical_to_the_pure_step(
    T, shape, beta, beta_tensor, dtype, scale, seed
):
    g = torch.Generator().manual_seed(seed)
    cur = torch.randn(T, *shape, generator=g, dtype=dtype) * scale
    theta = torch.rand(tuple(shape[1:]), generator=g, dtype=dtype) + 0.25
    b = torch.tensor(beta, dtype=dtype) if beta_tensor else beta
    start = LIFState(
        torch.randn(*shape, generator=g, dtype=dtype), torch.zeros(*shape, dtype=dtype)
    )
    ref_s, ref_u, ref_last = lif_run(cur, theta, b, Sigmoid(), state=start, return_membrane=True)
    with torch.no_grad():
        s, u, last = lif_run(cur, theta, b, Sigmoid(), state=start, return_membrane=True)
        s2, none, last2 = lif_run(cur, theta, b, Sigmoid(), state=start)
    assert torch.equal(s, ref_s) and torch.equal(u, ref_u) and torch.equal(s2, ref_s)
    assert none is None
    for st_ in (last, last2):
        assert torch.equal(st_.v, ref_last.v) and torch.equal(st_.s, ref_last.s)
    assert torch.equal(start.s, torch.zeros(*shape, dtype=dtype))  # the input is not written


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    beta=st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    theta_dtype=st.sampled_from([None, torch.float32, torch.float64]),
    transposed=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_step_without_grad_equals_the_pure_step(shape, beta, dtype, theta_dtype, transposed, seed):
    """lif_step without gradients takes the in-place arithmetic (fresh buffers) where it
    can, and the pure form elsewhere (mixed dtypes); the values are the same bit for bit,
    and the state passed in is not written."""
    g = torch.Generator().manual_seed(seed)
    cur = torch.randn(*shape, generator=g, dtype=dtype) * 2
    if transposed and cur.dim() > 1:
        cur = cur.transpose(0, -1)  # a strided step, as the step API's bmm gives
    theta = torch.rand(tuple(cur.shape[1:]), generator=g, dtype=theta_dtype or dtype) + 0.25
    v0 = torch.randn(cur.shape, generator=g, dtype=dtype)
    s0 = (torch.rand(cur.shape, generator=g) > 0.5).to(dtype)
    ref = lif_step(cur, LIFState(v0, s0), theta, beta, Sigmoid())  # grad on: the pure form
    v_in, s_in = v0.clone(), s0.clone()
    with torch.no_grad():
        got = lif_step(cur, LIFState(v0, s0), theta, beta, Sigmoid())
    assert got.v.dtype == ref.v.dtype and got.s.dtype == ref.s.dtype
    assert torch.equal(got.v, ref.v) and torch.equal(got.s, ref.s)
    assert torch.equal(v0, v_in) and torch.equal(s0, s_in)


def test_in_place_step_needs_no_grad_and_falls_back_on_mixed_dtypes():
    cur = torch.randn(3, 2, 4, dtype=torch.float64)
    st0 = init_state(cur[0])
    with pytest.raises(ValueError, match="only with gradients off"):
        lif_step(cur[0], st0, torch.ones(4, dtype=torch.float64), 0.9, Sigmoid(), out=st0)
    theta32 = torch.ones(4, dtype=torch.float32)  # promotes in the pure step: no in-place path
    ref = lif_run(cur, theta32, 0.9, Sigmoid())[0]
    with torch.no_grad():
        assert torch.equal(lif_run(cur, theta32, 0.9, Sigmoid())[0], ref)


def test_run_writes_into_a_strided_out_buffer():
    # the dictionary's forward writes spikes branch-major: (K, T, B, m) in memory,
    # seen as (T, B, K, m); the values are those of a fresh buffer
    g = torch.Generator().manual_seed(3)
    cur = torch.randn(6, 4, 3, 5, generator=g, dtype=torch.float64) * 2  # (T, B, K, m)
    theta = torch.rand(3, 5, generator=g, dtype=torch.float64) + 0.5
    ref = lif_run(cur, theta, 0.9, Sigmoid())[0]
    buf = torch.full((3, 6, 4, 5), 7.0, dtype=torch.float64)
    out = buf.permute(1, 2, 0, 3)
    with torch.no_grad():
        s, _, last = lif_run(cur, theta, 0.9, Sigmoid(), out=out)
    assert s.data_ptr() == buf.data_ptr() and torch.equal(s, ref)
    assert torch.equal(last.s, ref[-1])
    with pytest.raises(ValueError, match="only with gradients off"):
        lif_run(cur, theta, 0.9, Sigmoid(), out=out)
    with torch.no_grad(), pytest.raises(ValueError, match="out must have the shape"):
        lif_run(cur, theta, 0.9, Sigmoid(), out=out[:2])
    ref_u = lif_run(cur, theta, 0.9, Sigmoid(), return_membrane=True)[1]
    mem = torch.empty(3, 6, 4, 5, dtype=torch.float64).permute(1, 2, 0, 3)
    with torch.no_grad():
        _, u, _ = lif_run(cur, theta, 0.9, Sigmoid(), return_membrane=True, membrane_out=mem)
        with pytest.raises(ValueError, match="membrane_out needs return_membrane"):
            lif_run(cur, theta, 0.9, Sigmoid(), membrane_out=mem)
    assert u.data_ptr() == mem.data_ptr() and torch.equal(u, ref_u)


def test_step_and_run_agree_and_state_returned():
    g = torch.Generator().manual_seed(1)
    cur = torch.randn(7, 4, 3, 5, generator=g, dtype=torch.float64)
    theta = torch.rand(3, 5, generator=g, dtype=torch.float64) + 0.5
    s, u, last = lif_run(cur, theta, 0.9, Sigmoid(), return_membrane=True)
    st = init_state(cur[0])
    for t in range(7):
        st = lif_step(cur[t], st, theta, 0.9, Sigmoid())
        assert torch.equal(st.v, u[t]) and torch.equal(st.s, s[t])
    assert torch.equal(last.v, u[-1])
    # resuming from a state continues the same trajectory
    s2, _, _ = lif_run(cur[3:], theta, 0.9, Sigmoid(), state=LIFState(u[2], s[2]))
    assert torch.equal(s2, s[3:])


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.99])
def test_equals_snntorch_leaky(beta):
    snn = pytest.importorskip("snntorch")
    g = torch.Generator().manual_seed(7)
    T, B, m = 30, 16, 12
    cur = torch.randn(T, B, m, generator=g, dtype=torch.float64) * 0.8
    theta = torch.rand(m, generator=g, dtype=torch.float64) + 0.3
    ours, ours_u, _ = lif_run(cur, theta, beta, Sigmoid(), return_membrane=True)
    # a float64 beta: snnTorch would otherwise round 0.9 to float32
    beta64 = torch.tensor(beta, dtype=torch.float64)
    leaky = snn.Leaky(beta=beta64, threshold=theta, reset_mechanism="subtract")
    mem = torch.zeros(B, m, dtype=torch.float64)
    ref_s, ref_u = [], []
    for t in range(T):
        spk, mem = leaky(cur[t], mem)
        ref_s.append(spk)
        ref_u.append(mem)
    assert torch.equal(ours, torch.stack(ref_s).to(ours.dtype))
    torch.testing.assert_close(ours_u, torch.stack(ref_u), rtol=0, atol=1e-12)
    assert ours.sum() > 0 and (1 - ours).sum() > 0  # the test exercises both branches


def test_strict_threshold():
    cur = torch.tensor([[[1.0]], [[0.0]]])
    s, _, _ = lif_run(cur, torch.tensor([1.0]), 1.0, Sigmoid())
    assert s.sum() == 0  # U == theta does not spike


@pytest.mark.parametrize("sur", [Sigmoid(), Atan(), FastSigmoid(), Sigmoid(slope=2.0)])
def test_surrogates_backward_and_pickle(sur):
    x = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    y = sur.spike(x)
    assert torch.equal(y.detach(), (x > 0).double().detach())
    y.sum().backward()
    expected = sur.derivative(x.detach())
    assert torch.allclose(x.grad, expected)
    assert x.grad.min() > 0
    assert pickle.loads(pickle.dumps(sur)) == sur
    assert get_surrogate(sur.name) == type(sur)()


def test_sigmoid_derivative_closed_form():
    x = torch.tensor([-1.0, 0.0, 0.3], dtype=torch.float64)
    k = 5.0
    closed = k * torch.exp(-k * x) / (1 + torch.exp(-k * x)) ** 2
    assert torch.allclose(Sigmoid(k).derivative(x), closed)
    # stable far in the tails
    assert torch.isfinite(Sigmoid(k).derivative(torch.tensor([-1e4, 1e4]))).all()


def test_gradients_flow_through_time():
    cur = torch.full((5, 2, 3), 0.6, dtype=torch.float64, requires_grad=True)
    s, _, _ = lif_run(cur, torch.ones(3, dtype=torch.float64), 0.99, Sigmoid())
    s.sum().backward()
    assert (cur.grad[0] != 0).all()


def test_unknown_surrogate_and_bad_shapes():
    with pytest.raises(ValueError, match="surrogate must be one of"):
        get_surrogate("relu")
    with pytest.raises(ValueError, match=r"currents must have shape \(T, B, \.\.\.\)"):
        lif_run(torch.zeros(3), torch.ones(1), 0.9, Sigmoid())
    with pytest.raises(ValueError, match="T >= 1"):
        lif_run(torch.zeros(0, 2, 3), torch.ones(3), 0.9, Sigmoid())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    cur = torch.tensor(GOLDEN_CURRENTS, device="cuda").unsqueeze(1)
    s, _, _ = lif_run(cur, torch.tensor(GOLDEN_THETA, device="cuda"), 0.5, Sigmoid())
    assert torch.equal(s[:, 0].cpu(), torch.tensor(GOLDEN_S, dtype=torch.float32))


@settings(max_examples=200, deadline=None)
@given(
    shapes=st.lists(
        st.lists(st.sampled_from([0, 1, 2, 3]), min_size=0, max_size=4).map(tuple),
        min_size=1,
        max_size=4,
    )
)
def test_broadcast_shape_agrees_with_torch(shapes):
    """The in-place step's shape check: the same verdict as torch.broadcast_shapes."""
    try:
        want = tuple(torch.broadcast_shapes(*shapes))
    except RuntimeError:
        want = None
    assert _broadcast_shape(*shapes) == want


@settings(max_examples=30, deadline=None)
@given(
    T=st.integers(1, 9),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    beta=st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]),
    layout=st.sampled_from(["time", "permuted"]),
    use_v=st.booleans(),
    sur=st.sampled_from([Sigmoid(5.0), Atan(), FastSigmoid()]),
    seed=st.integers(0, 10_000),
)
def test_fused_recurrence_matches_the_step_by_step_graph(T, shape, beta, layout, use_v, sur, seed):
    # the fused autograd node: identical forward values, and the gradients of the
    # currents and thresholds of the graph of lif_step to rounding, for any loss on
    # the spikes and the final state
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(T, *shape, generator=g, dtype=torch.float64) * 2
    if layout == "permuted" and len(shape) >= 2:  # branch-major memory, as the network's
        base = base.movedim(-2, 0).contiguous().movedim(0, -2)
    theta = torch.rand(tuple(shape[1:]), generator=g, dtype=torch.float64) + 0.25
    w = torch.randn(T, *shape, generator=g, dtype=torch.float64)
    wv = torch.randn(*shape, generator=g, dtype=torch.float64)
    results = []
    for fused in (True, False):
        cur = base.clone().requires_grad_()
        th = theta.clone().requires_grad_()
        s, _, last = lif_run(cur, th, beta, sur, fused=fused)
        assert (s.grad_fn is not None) and (type(s.grad_fn).__name__.startswith("_Fused") == fused)
        loss = (s * w).sum() + (last.s * wv).sum() + ((last.v * wv).sum() if use_v else 0.0)
        loss.backward()
        results.append((s.detach(), last.v.detach(), last.s.detach(), cur.grad, th.grad))
    (s1, v1, ls1, gc1, gt1), (s0, v0, ls0, gc0, gt0) = results
    assert torch.equal(s1, s0) and torch.equal(v1, v0) and torch.equal(ls1, ls0)
    torch.testing.assert_close(gc1, gc0, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gt1, gt0, rtol=1e-12, atol=1e-14)


def _reference_backward(mem, spk, theta, beta, sur, grad_spikes, grad_v_last):
    """The fused node's backward written with a fresh tensor for every operation (as the
    graph of lif_step computes each step); the fused one must give these values bit for
    bit, however it reuses its buffers."""
    T = mem.shape[0]
    grad_cur = torch.empty_like(mem)
    sum_a = sum_reset = None
    for t in range(T - 1, -1, -1):
        adj = grad_spikes[t] * sur.derivative(mem[t] - theta)
        sum_a = adj.clone() if sum_a is None else sum_a.add_(adj)
        if t == T - 1:
            if grad_v_last is not None:
                adj = adj + grad_v_last
        else:
            adj = adj.add_(grad_cur[t + 1] * beta)
        grad_cur[t] = adj
        if t > 0:
            r = adj * spk[t - 1]
            sum_reset = r if sum_reset is None else sum_reset.add_(r)
    total = sum_a if sum_reset is None else sum_a.add_(sum_reset)
    return grad_cur, -total.sum_to_size(theta.shape)


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(1, 9),
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    beta=st.sampled_from([0.0, 0.5, 0.99, 1.0]),
    layout=st.sampled_from(["time", "permuted"]),
    use_v=st.booleans(),
    sur=st.sampled_from([Sigmoid(5.0), Atan(), FastSigmoid()]),
    theta_dims=st.integers(0, 2),
    seed=st.integers(0, 10_000),
)
def test_fused_backward_is_bit_identical_to_fresh_tensors(
    T, shape, dtype, beta, layout, use_v, sur, theta_dims, seed
):
    _check_fused_backward(T, shape, dtype, beta, layout, use_v, sur, theta_dims, seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "theta_dims"), [([9, 9, 9], 1), ([9, 9, 9], 2), ([16, 8], 0)])
def test_fused_backward_bit_identical_on_larger_permuted_steps(shape, theta_dims, dtype):
    # large enough that a change of the accumulators' layout changes the reduction's
    # rounding (an earlier buffer-reusing version failed these)
    for seed in range(3):
        _check_fused_backward(
            7, shape, dtype, 0.99, "permuted", True, Sigmoid(5.0), theta_dims, seed
        )


def _check_fused_backward(T, shape, dtype, beta, layout, use_v, sur, theta_dims, seed):
    # theta of the step's trailing dims (per neuron, per position, one for all): its
    # gradient is a reduction whose order follows the accumulators' memory layout
    g = torch.Generator().manual_seed(seed)
    cur = torch.randn(T, *shape, generator=g, dtype=dtype) * 2
    if layout == "permuted" and len(shape) >= 2:
        cur = cur.movedim(-2, 0).contiguous().movedim(0, -2)
    tail = min(theta_dims, len(shape) - 1)
    theta = torch.rand(tuple(shape[len(shape) - tail :]), generator=g, dtype=dtype) + 0.25
    w = torch.randn(T, *shape, generator=g, dtype=dtype)
    wv = torch.randn(*shape, generator=g, dtype=dtype)
    c, th = cur.clone().requires_grad_(), theta.clone().requires_grad_()
    s, _, last = lif_run(c, th, beta, sur, fused=True)
    ((s * w).sum() + ((last.v * wv).sum() if use_v else 0.0)).backward()
    s, mem, _ = lif_run(cur, theta, beta, sur, return_membrane=True)
    # the traces in the memory layout of the currents, as the fused node keeps them
    mem, s = torch.empty_like(cur).copy_(mem), torch.empty_like(cur).copy_(s)
    want_c, want_th = _reference_backward(mem, s, theta, beta, sur, w, wv if use_v else None)
    assert torch.equal(c.grad, want_c)
    assert torch.equal(th.grad, want_th)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    sur=st.sampled_from([Sigmoid(5.0), Sigmoid(0.5), Atan(), FastSigmoid()]),
    seed=st.integers(0, 10_000),
)
def test_in_place_derivative_equals_the_derivative(shape, dtype, sur, seed):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 3
    want = sur.derivative(x)
    buf = x.clone()
    got = sur.derivative_(buf, torch.empty_like(x))
    assert got.data_ptr() == buf.data_ptr()
    assert torch.equal(got, want)


def test_fused_recurrence_only_where_it_applies():
    cur = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    theta = torch.ones(5, dtype=torch.float64)
    fused = lambda s: type(s.grad_fn).__name__.startswith("_Fused")  # noqa: E731
    assert fused(lif_run(cur, theta, 0.9, Sigmoid())[0])
    # a given start state, an attached reset, the membrane trace, a trained beta,
    # a promoting dtype: the graph of lif_step
    start = init_state(cur[0].detach())
    assert not fused(lif_run(cur, theta, 0.9, Sigmoid(), state=start)[0])
    assert not fused(lif_run(cur, theta, 0.9, Sigmoid(), detach_reset=False)[0])
    assert not fused(lif_run(cur, theta, 0.9, Sigmoid(), return_membrane=True)[0])
    beta = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    s, _, _ = lif_run(cur, theta, beta, Sigmoid())
    assert not fused(s)
    s.sum().backward()
    assert beta.grad is not None
    assert not fused(lif_run(cur, theta.float(), 0.9, Sigmoid())[0])
    # a saved tensor overwritten before backward is caught, not silently used
    s, _, _ = lif_run(cur, theta, 0.9, Sigmoid())
    with torch.no_grad():
        s.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()
