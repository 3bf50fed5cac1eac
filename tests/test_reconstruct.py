"""Parameter reconstruction: exact outputs, representatives only, padding, checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cvxsnn.dictionary import build_dictionary
from cvxsnn.network import HiddenParams, NetConfig, ParallelLIFNet, load_model, save_model
from cvxsnn.reconstruct import (
    ReconstructionError,
    SmallMarginWarning,
    reconstruct,
    verify_reconstruction,
)
from cvxsnn.witnesses import sample_witnesses, witnesses_from_network


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(T: int, n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(T, n, d, generator=_gen(seed), dtype=torch.float64) * 2


def _coef(P: int, C: int, seed: int, density: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(P, C))
    coef[rng.random(P) > density] = 0.0
    return coef, rng.normal(size=C)


def _layout(C: int) -> dict[str, tuple[int, ...]]:
    return {"out_layout": (C,), "head_classes": (max(C, 2),)}


def _outputs(net: ParallelLIFNet, x: torch.Tensor, steps) -> np.ndarray:
    with torch.no_grad():
        return net(x, steps).reshape(-1, net.config.n_out).numpy()  # (S n, C), step-major


@settings(max_examples=20, deadline=None)
@given(
    K=st.integers(1, 4),
    widths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    T=st.integers(1, 6),
    n=st.integers(2, 10),
    C=st.integers(1, 3),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_reconstruction_is_exact(K, widths, T, n, C, seed, data):
    p = sample_witnesses(3, widths, K, sigma=1.5, generator=_gen(seed))
    x = _data(T, n, 3, seed)
    steps = tuple(sorted(data.draw(st.sets(st.integers(0, T - 1), min_size=1))))
    try:
        D = build_dictionary(p, x, steps)
    except ValueError:
        assume(False)
    coef, b = _coef(D.n_atoms, C, seed)
    if C == 1:
        layout = {"out_layout": (1,), "head_classes": (2,)}
    else:
        layout = _layout(C)
    net = reconstruct(p, D, coef, b, **layout)
    report = verify_reconstruction(net, D, x, steps, coef, b, margin_warn=0.0).check()
    assert report.spikes_identical and report.max_abs_error <= 1e-9
    # independent recomputation of f(x) against D W + b
    target = D.atoms.astype(np.float64) @ coef + b
    assert np.max(np.abs(_outputs(net, x, steps) - target), initial=0.0) <= 1e-9
    support = np.flatnonzero(np.any(coef != 0, axis=1))
    assert report.support_size == report.n_neurons == len(support)
    kept = sorted(set(D.provenance[support, 0].tolist()))
    assert net.config.meta["reconstruction"]["branches"] == kept
    assert net.config.branches == max(len(kept), 1)
    if kept:
        assert net.config.widths[:-1] == D.widths[:-1]
    for th in net.thetas[-1:]:
        atoms = np.asarray(net.config.meta["reconstruction"]["atoms"])
        assert bool((th[torch.as_tensor(atoms < 0)] == 1).all())  # padding thresholds 1


def test_representatives_only_nothing_counted_twice():
    p = sample_witnesses(2, (5, 4), 3, sigma=1.5, generator=_gen(1))
    w = p.w_hidden[0].clone()
    w[0, :, 0] = torch.tensor([1.0, 1.0, -0.5, 0.7, 0.2], dtype=torch.float64)
    w_in = p.w_in.clone()
    w_in[1] = w_in[0]
    w[1, :, 3] = w[0, :, 0]  # neuron (1, 3) duplicates neuron (0, 0)
    w[0, :, 2] = w[0, :, 0]  # and so does (0, 2)
    p = HiddenParams(w_in, (w,), p.thetas)
    x = _data(5, 40, 2, seed=1)
    D = build_dictionary(p, x, (4,))
    assert tuple(D.provenance[0]) == (0, 0) and D.multiplicity[0] == 3
    coef = np.zeros((D.n_atoms, 1))
    coef[0, 0] = 2.5
    net = reconstruct(p, D, coef, np.array([-1.0]), out_layout=(1,), head_classes=(2,))
    assert net.config.branches == 1 and net.config.widths[-1] == 1
    out = _outputs(net, x, (4,))[:, 0]
    assert np.array_equal(out, 2.5 * D.atoms[:, 0] - 1.0)  # not 3 x 2.5


def test_padding_with_learned_nonpositive_thresholds():
    """SG witnesses may have theta <= 0; padding neurons get theta = 1 and stay silent."""
    cfg = NetConfig(d_in=2, widths=(6, 5), branches=3)
    sg = ParallelLIFNet(cfg, dtype=torch.float64, generator=_gen(2))
    sg.reset_parameters(gain=3.0, generator=_gen(2))
    with torch.no_grad():
        sg.thetas[1].uniform_(-0.5, 1.0, generator=_gen(3))
    p = witnesses_from_network(sg)
    x = _data(4, 30, 2, seed=2)
    D = build_dictionary(p, x, (1, 3))
    branches = D.provenance[:, 0]
    big = int(np.bincount(branches).argmax())
    other = np.flatnonzero(branches != big)
    assert (branches == big).sum() >= 2 and other.size  # so the other branch gets padding
    coef = np.zeros((D.n_atoms, 2))
    coef[branches == big] = 1.0
    coef[other[0]] = [0.5, -0.5]
    net = reconstruct(p, D, coef, np.zeros(2), out_layout=(2,), head_classes=(2,))
    atoms = np.asarray(net.config.meta["reconstruction"]["atoms"])
    assert (atoms < 0).any()
    with torch.no_grad():
        last = net.run_hidden(x).spikes[-1]  # (T, n, K', m')
    assert not bool(last[:, :, torch.as_tensor(atoms < 0)].any())
    verify_reconstruction(net, D, x, None, coef, np.zeros(2), margin_warn=0.0).check()


def test_empty_support_outputs_the_intercept():
    p = sample_witnesses(2, (4, 4), 2, sigma=1.5, generator=_gen(4))
    x = _data(3, 8, 2, seed=4)
    D = build_dictionary(p, x, (2,))
    coef = np.zeros((D.n_atoms, 2))
    net = reconstruct(p, D, coef, np.array([0.5, -2.0]), **_layout(2))
    assert net.config.branches == 1 and net.config.widths == (1, 1)
    assert np.array_equal(_outputs(net, x, (2,)), np.tile([0.5, -2.0], (8, 1)))
    report = verify_reconstruction(net, D, x, (2,), coef, np.array([0.5, -2.0]))
    assert report.exact and report.n_branches == 0 and report.support_size == 0


def _with_repeats(T: int, n_distinct: int, n: int, d: int, seed: int) -> torch.Tensor:
    """n samples drawn from n_distinct distinct sequences (each at least once), shuffled."""
    pool = _data(T, n_distinct, d, seed)
    rng = np.random.default_rng(seed)
    pick = np.concatenate([np.arange(n_distinct), rng.integers(0, n_distinct, n - n_distinct)])
    return pool[:, torch.as_tensor(rng.permutation(pick))]


@settings(max_examples=20, deadline=None)
@given(
    n_distinct=st.integers(2, 12),
    extra=st.integers(2, 40),
    chunk=st.sampled_from([1, 3, 7, None]),
    seed=st.integers(0, 10_000),
)
def test_check_on_distinct_samples_reports_as_a_pass_over_every_sample(
    n_distinct, extra, chunk, seed
):
    # With repeated inputs the network runs once per distinct sequence; every row of the
    # dictionary is still compared, and the report equals the full pass's. Two values are
    # equal to rounding only: the output error, measured on other batches of rows, and the
    # smallest margin, because the membranes come from matmuls over batches of another
    # size (MKL's float64 mm can round a row differently in the last bit when the batch
    # around it changes). The margin's location may name another sample where the
    # minimum is tied.
    import cvxsnn.reconstruct as rec

    n = n_distinct + max(extra, n_distinct)  # at least half repeats
    x = _with_repeats(4, n_distinct, n, 2, seed)
    p = sample_witnesses(2, (5, 4), 3, sigma=1.5, generator=_gen(seed))
    try:
        D = build_dictionary(p, x, (1, 3))
    except ValueError:
        assume(False)
    coef, b = _coef(D.n_atoms, 2, seed)
    net = reconstruct(p, D, coef, b, **_layout(2))
    # a corrupted row of a repeated sample (not its first occurrence) must be found
    first = {}
    for i in range(n):
        first.setdefault(x[:, i].numpy().tobytes(), i)
    repeat = next(i for i in range(n) if first[x[:, i].numpy().tobytes()] != i)
    support = np.flatnonzero(np.any(coef != 0, axis=1))  # atoms the network carries
    assume(support.size > 0)
    bad = D.atoms.copy()
    bad[n + repeat, support[0]] ^= 1  # step 3's row of that sample
    D_bad = dataclasses.replace(D, atoms=bad)
    kw = dict(margin_warn=0.0, chunk_rows=chunk)
    fast = [rec.verify_reconstruction(net, dd, x, None, coef, b, **kw) for dd in (D, D_bad)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rec, "repeated_samples", lambda x: None)
        full = [rec.verify_reconstruction(net, dd, x, None, coef, b, **kw) for dd in (D, D_bad)]
    for f, g in zip(fast, full, strict=True):
        assert f.max_abs_error == pytest.approx(g.max_abs_error, abs=1e-12)
        assert f.min_margin == pytest.approx(g.min_margin, rel=1e-12, abs=1e-14)
        same = dict(margin_at=g.margin_at, max_abs_error=g.max_abs_error, min_margin=g.min_margin)
        assert dataclasses.replace(f, **same) == g
        assert f.margin_at[2] in range(n)
    assert fast[0].exact and fast[1].n_spike_mismatch == 1 and not fast[1].spikes_identical


@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("repeats", [False, True])
def test_kept_outputs_are_the_networks_outputs_on_every_sample(chunk, repeats):
    """keep_outputs returns f(x) at the supervised steps for every sample of x (repeats
    copied from their first occurrence), the values the network's own forward gives."""
    n = 24
    x = _with_repeats(4, 6, n, 2, 1) if repeats else torch.rand(4, n, 2, dtype=torch.float64)
    p = sample_witnesses(2, (5, 4), 3, sigma=1.5, generator=_gen(2))
    D = build_dictionary(p, x, (1, 3))
    coef, b = _coef(D.n_atoms, 2, 2)
    net = reconstruct(p, D, coef, b, **_layout(2))
    kw = dict(margin_warn=0.0, chunk_rows=chunk)
    rep = verify_reconstruction(net, D, x, None, coef, b, keep_outputs=True, **kw)
    assert verify_reconstruction(net, D, x, None, coef, b, **kw).outputs is None
    assert rep.exact and rep.outputs.shape == (2, n, 2)
    want = net.outputs(x, (1, 3)).numpy()
    np.testing.assert_allclose(rep.outputs, want, rtol=0, atol=1e-12)
    target = (D.atoms.astype(np.float64) @ coef + b).reshape(2, n, 2)
    np.testing.assert_allclose(rep.outputs, target, rtol=0, atol=1e-9)


def test_check_catches_wrong_outputs_and_wrong_spikes():
    p = sample_witnesses(2, (6, 6), 3, sigma=1.5, generator=_gen(5))
    x = _data(4, 25, 2, seed=5)
    D = build_dictionary(p, x, (3,))
    coef, b = _coef(D.n_atoms, 1, 5, density=1.0)
    net = reconstruct(p, D, coef, b, out_layout=(1,), head_classes=(2,))
    with torch.no_grad():
        net.b_out.add_(1e-6)
    report = verify_reconstruction(net, D, x, None, coef, b, margin_warn=0.0)
    assert report.spikes_identical and report.max_abs_error == pytest.approx(1e-6, rel=1e-3)
    with pytest.raises(ReconstructionError, match="not exact"):
        report.check()
    net2 = reconstruct(p, D, coef, b, out_layout=(1,), head_classes=(2,))
    with torch.no_grad():
        net2.w_in.mul_(-1.0)
    bad = verify_reconstruction(net2, D, x, None, coef, b, margin_warn=0.0)
    assert not bad.spikes_identical and bad.n_spike_mismatch > 0
    with pytest.raises(ReconstructionError):
        bad.check()


def test_small_margin_warns():
    # one neuron, input 1, weight 1 + 1e-9: U_1 = 1 + 1e-9 > theta = 1 by a hair
    w_in = torch.tensor([[[1.0 + 1e-9], [0.0]]], dtype=torch.float64)  # (1, 2, 1)
    p = HiddenParams(w_in, (), (torch.ones(1, 1, dtype=torch.float64),))
    x = torch.tensor([[[1.0], [0.0]]], dtype=torch.float64)  # (T=1, n=2, d=1)
    D = build_dictionary(p, x, (0,))
    coef = np.array([[1.0]])
    net = reconstruct(p, D, coef, np.zeros(1), out_layout=(1,), head_classes=(2,))
    with pytest.warns(SmallMarginWarning, match=r"smallest margin \|U - theta\| = 1\.0\d*e-09"):
        report = verify_reconstruction(net, D, x, None, coef, np.zeros(1))
    assert report.exact
    assert report.min_margin == pytest.approx(1e-9, rel=1e-6)
    assert report.margin_at == (0, 0, 0, 0, 0)


def test_margin_is_the_smallest_distance_to_threshold():
    p = sample_witnesses(2, (5, 4), 2, sigma=1.5, generator=_gen(6))
    x = _data(4, 12, 2, seed=6)
    D = build_dictionary(p, x, (3,))
    coef, b = _coef(D.n_atoms, 1, 6, density=1.0)
    net = reconstruct(p, D, coef, b, out_layout=(1,), head_classes=(2,))
    report = verify_reconstruction(net, D, x, None, coef, b, margin_warn=0.0)
    with torch.no_grad():
        trace = net.run_hidden(x, return_membrane=True)
    atoms = torch.as_tensor(np.asarray(net.config.meta["reconstruction"]["atoms"]) >= 0)
    gaps = [(v - th.detach()).abs() for v, th in zip(trace.membranes, net.thetas, strict=True)]
    gaps[-1] = gaps[-1][:, :, atoms]
    assert report.min_margin == min(float(g.min()) for g in gaps)


@pytest.mark.parametrize("chunk_rows", [None, 5])
def test_margin_and_where_it_is_skip_the_padding_slots(chunk_rows):
    # a rebuilt net whose branches keep different numbers of neurons has padding slots in
    # its last layer; the margin is the smallest |U - theta| over the real neurons, and
    # margin_at (layer, step, sample, branch, neuron) says where
    p = sample_witnesses(2, (5, 6), 4, sigma=1.5, generator=_gen(8))
    x = _data(5, 12, 2, seed=8)
    D = build_dictionary(p, x, (2, 4))
    coef, b = _coef(D.n_atoms, 1, 8, density=0.4)
    net = reconstruct(p, D, coef, b, out_layout=(1,), head_classes=(2,))
    real = np.asarray(net.config.meta["reconstruction"]["atoms"]) >= 0
    assert not real.all()  # padding exists
    with torch.no_grad():  # padding (zero weights, U = 0) still never fires, at margin 1e-12
        net.thetas[-1][torch.as_tensor(~real)] = 1e-12
    report = verify_reconstruction(net, D, x, None, coef, b, margin_warn=0.0, chunk_rows=chunk_rows)
    with torch.no_grad():
        trace = net.to(torch.float64).run_hidden(x, return_membrane=True)
    best = (np.inf, None)
    for layer, (v, th) in enumerate(zip(trace.membranes, net.thetas, strict=True)):
        gap = (v - th.detach()).abs().permute(2, 0, 1, 3).numpy().copy()  # (K, T, B, m)
        if layer == len(trace.membranes) - 1:
            np.moveaxis(gap, 3, 1)[~real] = np.inf  # (K, m, T, B) view: the padding slots
        k, t, i, j = np.unravel_index(int(gap.argmin()), gap.shape)
        if gap[k, t, i, j] < best[0]:
            best = (float(gap[k, t, i, j]), (layer, int(t), int(i), int(k), int(j)))
    assert (report.min_margin, report.margin_at) == best


def test_float32_net_is_verified_in_float64_and_roundtrips(tmp_path):
    p = sample_witnesses(2, (6,), 3, sigma=1.5, generator=_gen(7))
    x = _data(5, 20, 2, seed=7)
    D = build_dictionary(p, x, (2, 4))
    coef, b = _coef(D.n_atoms, 2, 7)
    net = reconstruct(p, D, coef, b, **_layout(2), dtype=torch.float32)
    assert net.dtype == torch.float32
    report32 = verify_reconstruction(net, D, x, None, coef, b, margin_warn=0.0)
    assert net.dtype == torch.float32  # a float64 copy was run, not the net
    # float32 coefficients are rounded: same spikes, but not exact to 1e-9
    assert report32.spikes_identical and 0 < report32.max_abs_error < 1e-6
    assert not report32.exact
    net64 = reconstruct(p, D, coef, b, **_layout(2))
    report = verify_reconstruction(net64, D, x, None, coef, b, margin_warn=0.0)
    path = save_model(net64, tmp_path / "model.pt")
    loaded, _ = load_model(path)
    assert loaded.config.meta["reconstruction"] == net64.config.meta["reconstruction"]
    assert np.array_equal(_outputs(loaded, x, (2, 4)), _outputs(net64, x, (2, 4)))
    assert report.exact


def test_errors():
    p = sample_witnesses(2, (4,), 2, sigma=1.5, generator=_gen(8))
    x = _data(3, 10, 2, seed=8)
    D = build_dictionary(p, x, (2,))
    coef, b = _coef(D.n_atoms, 1, 8)
    kw = {"out_layout": (1,), "head_classes": (2,)}
    with pytest.raises(ValueError, match=r"coef must have shape \(P, C\)"):
        reconstruct(p, D, np.zeros((D.n_atoms + 1, 1)), b, **kw)
    with pytest.raises(ValueError, match=r"intercept must have shape \(C,\)"):
        reconstruct(p, D, coef, np.zeros(2), **kw)
    with pytest.raises(ValueError, match="out_layout must sum to C = 1"):
        reconstruct(p, D, coef, b, out_layout=(2,), head_classes=(2,))
    other = sample_witnesses(2, (4,), 2, sigma=1.5, generator=_gen(9))
    with pytest.raises(ValueError, match="differs from the witnesses"):
        reconstruct(other, D, coef, b, **kw)
    with pytest.raises(ValueError, match="beta must match"):
        reconstruct(p, D, coef, b, beta=0.9, **kw)
    with pytest.raises(ValueError, match="finite"):
        reconstruct(p, D, coef * np.nan, b, **kw)
    net = reconstruct(p, D, coef, b, **kw)
    with pytest.raises(ValueError, match="training data"):
        verify_reconstruction(net, D, x[:, :5], None, coef, b)
    with pytest.raises(ValueError, match="supervised steps"):
        verify_reconstruction(net, D, x, (1,), coef, b)
    plain = ParallelLIFNet(NetConfig(d_in=2, widths=(4,), branches=2))
    with pytest.raises(ValueError, match="reconstruct"):
        verify_reconstruction(plain, D, x, None, coef, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pipeline_on_cuda_matches_cpu():
    x = _data(6, 64, 3, seed=10)
    kw = {"scheme": "calibrated", "x": x, "steps": (5,)}
    p_cpu = sample_witnesses(3, (8, 8), 4, generator=_gen(10), **kw)
    p_gpu = sample_witnesses(3, (8, 8), 4, generator=_gen(10), device="cuda", **kw)
    assert p_gpu.w_in.is_cuda
    D = build_dictionary(p_cpu, x, (2, 5))
    D_gpu = build_dictionary(p_cpu, x.cuda(), (2, 5), device="cuda", chunk_rows=16)
    assert np.array_equal(D.atoms, D_gpu.atoms)
    assert np.array_equal(D.transform(x, device="cuda"), D.atoms)
    coef, b = _coef(D.n_atoms, 2, 10)
    net = reconstruct(p_cpu, D, coef, b, **_layout(2), device="cuda")
    assert net.device.type == "cuda"
    verify_reconstruction(net, D, x, None, coef, b, margin_warn=0.0).check()
