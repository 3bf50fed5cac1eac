"""ParallelLIFNet: K-parallel == K separate runs, step API, saving, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cvxsnn.network import (
    ForwardWorkspace,
    HiddenParams,
    NetConfig,
    ParallelLIFNet,
    decode_outputs,
    load_model,
    save_model,
)


def _net(K, widths, d=3, C=2, seed=0, bias=True, gain=2.0):
    cfg = NetConfig(
        d_in=d,
        widths=tuple(widths),
        branches=K,
        out_layout=(C,),
        head_classes=(C,),
        bias_channel=bias,
    )
    net = ParallelLIFNet(cfg, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    net.reset_parameters(gain=gain, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for th in net.thetas:  # per-neuron thresholds, not all equal
            th.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(seed + 1))
        net.w_out.normal_(generator=torch.Generator().manual_seed(seed + 2))
        net.b_out.normal_(generator=torch.Generator().manual_seed(seed + 3))
    return net


def _branch(net: ParallelLIFNet, k: int) -> ParallelLIFNet:
    cfg = NetConfig(**{**net.config.to_dict(), "branches": 1})
    single = ParallelLIFNet(cfg, dtype=net.dtype)
    hp = net.hidden_params()
    single.set_hidden_params(
        HiddenParams(
            hp.w_in[k : k + 1],
            tuple(w[k : k + 1] for w in hp.w_hidden),
            tuple(t[k : k + 1] for t in hp.thetas),
        )
    )
    with torch.no_grad():
        single.w_out.copy_(net.w_out[k : k + 1])
        single.b_out.zero_()
    return single


@settings(max_examples=25, deadline=None)
@given(
    K=st.integers(1, 5),
    widths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    T=st.integers(1, 8),
    B=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_k_parallel_equals_k_separate_runs(K, widths, T, B, seed):
    net = _net(K, widths, seed=seed)
    x = torch.rand(T, B, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2
    trace = net.run_hidden(x, return_membrane=True)
    total = torch.zeros(T, B, 2, dtype=torch.float64)
    for k in range(K):
        single = _branch(net, k)
        tr_k = single.run_hidden(x, return_membrane=True)
        for layer in range(len(widths)):
            assert torch.equal(trace.spikes[layer][:, :, k], tr_k.spikes[layer][:, :, 0])
            diff = (trace.membranes[layer][:, :, k] - tr_k.membranes[layer][:, :, 0]).abs()
            assert diff.max() <= 1e-12
        total += single(x)
    torch.testing.assert_close(net(x), total + net.b_out, rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    K=st.integers(1, 5),
    widths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    T=st.integers(1, 8),
    chunks=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    seed=st.integers(0, 10_000),
)
def test_last_spikes_in_a_reused_workspace_equal_run_hidden(K, widths, T, chunks, seed):
    # the dictionary's forward: same spikes bit for bit, whatever chunk sizes follow
    # each other through one workspace (buffers grow, shrink to views, and alternate)
    net = _net(K, widths, seed=seed)
    ws = ForwardWorkspace()
    for i, B in enumerate(chunks):
        gen = torch.Generator().manual_seed(seed + i)
        x = torch.rand(T, B, 3, dtype=torch.float64, generator=gen) * 2
        got = net.last_spikes(x, ws)
        ref = net.run_hidden(x, return_membrane=True)
        assert got.shape == ref.spikes[-1].shape == (T, B, K, widths[-1])
        assert torch.equal(got, ref.spikes[-1])
        with torch.no_grad():  # every layer, membranes too, in the same workspace
            into = net.run_hidden(x, return_membrane=True, workspace=ws)
        for layer in range(len(widths)):
            assert torch.equal(into.spikes[layer], ref.spikes[layer])
            assert torch.equal(into.membranes[layer], ref.membranes[layer])
    assert ws.nbytes > 0


def test_last_spikes_needs_no_workspace_and_keeps_gradients_off():
    net = _net(3, (4, 5), seed=1)
    x = torch.rand(4, 2, 3, dtype=torch.float64)
    got = net.last_spikes(x)
    assert not got.requires_grad
    assert torch.equal(got, net.run_hidden(x).spikes[-1])
    with pytest.raises(ValueError, match="workspace only with gradients off"):
        net.run_hidden(x, workspace=ForwardWorkspace())


@pytest.mark.parametrize("chunk", [None, 1, 3, 64])
def test_predict_in_chunks_equals_forward(chunk):
    net = _net(3, (4, 5), C=3, seed=4)
    x = torch.rand(6, 10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 2
    ref = decode_outputs(net(x, [2, 5]).detach(), net.config.out_layout)
    got = net.predict(x, [2, 5], chunk_rows=chunk)
    assert got.shape == (2, 10, 1) and torch.equal(got, ref)
    assert torch.equal(net.predict(x, chunk_rows=chunk), net.predict(x))


@settings(max_examples=30, deadline=None)
@given(
    K=st.integers(1, 5),
    widths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    T=st.integers(1, 8),
    B=st.integers(1, 40),
    chunk=st.sampled_from([None, 1, 3, 16]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    all_steps=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_outputs_in_chunks_equal_forward(K, widths, T, B, chunk, dtype, all_steps, seed):
    # the no-gradient readout of SG's validation passes: forward's values bit for bit
    net = _net(K, widths, C=3, seed=seed).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, 3, dtype=torch.float64, generator=gen) * 2).to(dtype)
    steps = None if all_steps else sorted({0, T - 1, T // 2})
    got = net.outputs(x, steps, chunk_rows=chunk)
    with torch.no_grad():
        ref = net(x, steps)
    assert got.shape == ref.shape and got.dtype == dtype
    assert torch.equal(got, ref)


@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_predict_runs_repeated_samples_once_with_the_same_predictions(chunk, monkeypatch):
    net = _net(3, (4, 5), C=3, seed=4)
    base = torch.rand(6, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    x = base[:, [3, 0, 3, 1, 0, 2, 3, 3]] * 2  # 8 samples, 4 distinct
    ref = decode_outputs(net(x, [2, 5]).detach(), net.config.out_layout)  # every sample
    seen = []
    original = net.last_spikes
    monkeypatch.setattr(
        net, "last_spikes", lambda xb, ws=None: seen.append(xb.shape[1]) or original(xb, ws)
    )
    got = net.predict(x, [2, 5], chunk_rows=chunk)
    assert torch.equal(got, ref)
    assert sum(seen) == 4  # the kernel ran on the distinct samples only


def test_predict_rejects_bad_chunk_and_shapes():
    net = _net(2, (3,), seed=0)
    with pytest.raises(ValueError, match="chunk_rows must be an int >= 1"):
        net.predict(torch.rand(3, 2, 3, dtype=torch.float64), chunk_rows=0)
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, d\)"):
        net.predict(torch.rand(3, 2, 4, dtype=torch.float64))


def test_step_api_matches_forward():
    net = _net(4, (5, 3, 2), seed=3)
    x = torch.rand(9, 6, 3, dtype=torch.float64) * 2
    state = net.init_state(6)
    outs = []
    for t in range(9):
        out, state = net.step(x[t], state)
        outs.append(out)
    assert torch.equal(torch.stack(outs), net(x))
    assert torch.equal(net(x, steps=[2, 8]), net(x)[[2, 8]])


def test_forward_spikes_are_binary_and_network_fires():
    net = _net(3, (8, 8), seed=5)
    x = torch.rand(6, 10, 3, dtype=torch.float64)
    for s in net.run_hidden(x).spikes:
        assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert net.run_hidden(x).spikes[-1].sum() > 0


def test_save_load_round_trip(tmp_path):
    net = _net(3, (4, 4), seed=11)
    path = save_model(net, tmp_path / "m.pt", extra={"method": "sg"})
    net2, extra = load_model(path)
    assert extra == {"method": "sg"}
    assert net2.config == net.config
    x = torch.rand(5, 7, 3, dtype=torch.float64)
    assert torch.equal(net(x), net2(x))
    # a plain weights-only file: loading cannot execute code
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"header_json", "state_dict"}


def test_from_hidden_params_equals_an_initialised_net_given_the_same_params():
    ref = _net(3, (4, 5), seed=4)
    params = ref.hidden_params()
    state = torch.get_rng_state()
    net = ParallelLIFNet.from_hidden_params(ref.config, params, dtype=torch.float64)
    assert torch.equal(torch.get_rng_state(), state)  # no weights drawn
    for a, b in zip(net.hidden_params(), params, strict=True):
        if isinstance(a, tuple):
            assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
        else:
            assert torch.equal(a, b)
    assert not net.w_out.any() and not net.b_out.any()
    x = torch.rand(6, 5, 3, dtype=torch.float64)
    assert torch.equal(net.run_hidden(x).spikes[-1], ref.run_hidden(x).spikes[-1])
    with pytest.raises(ValueError, match="shape mismatch"):
        ParallelLIFNet.from_hidden_params(_net(2, (4, 5)).config, params)
    bare = ParallelLIFNet(ref.config, dtype=torch.float64, init=False)
    assert not any(p.any() for p in (bare.w_in, *bare.w_hidden, bare.w_out, bare.b_out))
    assert all(bool((t == 1).all()) for t in bare.thetas)


def test_load_rejects_foreign_files(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"a": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a cvxsnn model file"):
        load_model(bad)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(tmp_path / "missing.pt")


def test_decode_outputs():
    out = torch.tensor([[0.3, 1.0, 2.0, -1.0], [-0.1, 3.0, 0.0, 0.5]])
    labels = decode_outputs(out, (1, 3))
    assert labels.tolist() == [[1, 1], [0, 0]]
    with pytest.raises(ValueError, match="outputs must have 5 columns"):
        decode_outputs(out, (2, 3))


def test_bad_input_messages():
    net = _net(2, (3,))
    with pytest.raises(
        ValueError, match=r"x must have shape \(T, B, d\) with T >= 1 and d = 3; got \(5, 3\)"
    ):
        net(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="T >= 1"):
        net(torch.zeros(0, 2, 3))
    x = torch.zeros(4, 2, 3)
    x[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        net(x)
    with pytest.raises(ValueError, match="branches"):
        NetConfig(d_in=2, widths=(3,), branches=0)
    with pytest.raises(ValueError, match="widths"):
        NetConfig(d_in=2, widths=(), branches=2)
    with pytest.raises(ValueError, match="surrogate must be one of"):
        NetConfig(d_in=2, widths=(3,), branches=2, surrogate="nope")


def test_dtype_and_device_follow_arguments():
    cfg = NetConfig(d_in=2, widths=(3,), branches=2)
    net = ParallelLIFNet(cfg, dtype=torch.float32)
    assert net(torch.rand(3, 4, 2, dtype=torch.float64)).dtype == torch.float32
    assert net.init_state(2)[0].v.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    net = _net(4, (6, 5), seed=2)
    x = torch.rand(6, 8, 3, dtype=torch.float64)
    gpu = ParallelLIFNet(net.config, device="cuda", dtype=torch.float64)
    gpu.load_state_dict(net.state_dict())
    assert torch.equal(gpu(x.cuda()).cpu(), net(x))
