"""One LIF kernel computes every spike: SG training, the dictionary, the rebuilt network,
autoregressive evaluation. A spy on the kernel step sees each of them, and a kernel with a
different threshold rule changes each of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cvxsnn.kernel as kernel_module
import cvxsnn.network as network_module
from cvxsnn.dictionary import build_dictionary
from cvxsnn.network import NetConfig, ParallelLIFNet
from cvxsnn.reconstruct import reconstruct
from cvxsnn.sg import SGConfig, train_sg
from cvxsnn.tasks import make_task
from cvxsnn.tasks.addition import evaluate_addition
from cvxsnn.witnesses import sample_witnesses


class Spy:
    def __init__(self, offset: float = 0.0):
        self.calls = 0
        self.offset = offset
        self.original = kernel_module.lif_step

    def __call__(self, current, state, theta, beta, surrogate, detach_reset=True, out=None):
        self.calls += 1
        # offset != 0 shifts every threshold: a different spike rule
        return self.original(
            current, state, theta + self.offset, beta, surrogate, detach_reset, out=out
        )


@pytest.fixture
def spy(monkeypatch):
    s = Spy()
    monkeypatch.setattr(kernel_module, "lif_step", s)  # used by lif_run
    monkeypatch.setattr(network_module, "lif_step", s)  # used by ParallelLIFNet.step
    return s


def _witnesses(d=2, K=4, widths=(6, 5), seed=0):
    return sample_witnesses(d, widths, K, generator=torch.Generator().manual_seed(seed))


def test_dictionary_uses_the_kernel(spy):
    x = torch.rand(6, 30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    build_dictionary(_witnesses(), x, (5,))
    assert spy.calls >= 6 * 2  # T steps x hidden layers


def test_sg_training_uses_the_kernel(spy):
    task = make_task("xor", steps=4, n_train=32, n_val=16, n_test=16, seed=0)
    cfg = NetConfig(d_in=2, widths=(4,), branches=2, out_layout=(2,), head_classes=(2,))
    train_sg(task, cfg, SGConfig(epochs=1, lrs=(1e-2,), batch_size=16), progress=False)
    assert spy.calls > 0


def test_rebuilt_network_and_step_api_use_the_kernel(spy):
    params = _witnesses()
    x = torch.rand(6, 30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    dic = build_dictionary(params, x, (5,))
    coef = np.zeros((dic.atoms.shape[1], 1))
    coef[:2, 0] = [1.0, -2.0]
    net = reconstruct(params, dic, coef, np.zeros(1), out_layout=(1,), head_classes=(2,))
    before = spy.calls
    net(x)
    assert spy.calls > before
    before = spy.calls
    net.step(x[0], net.init_state(30))
    assert spy.calls > before


def test_autoregressive_evaluation_uses_the_kernel(spy):
    task = make_task("addition", steps=4, n_train=16, n_val=8, n_test=8, seed=0, base=2)
    cfg = NetConfig(d_in=3, widths=(4,), branches=2, out_layout=(2, 2), head_classes=(2, 2))
    net = ParallelLIFNet(cfg, dtype=torch.float64)
    evaluate_addition(net, task.test, 2)
    assert spy.calls >= 4


def test_changing_the_kernel_changes_every_consumer(monkeypatch):
    """Dictionary and rebuilt network move together with the kernel: no second copy exists."""
    params = _witnesses(seed=3)
    x = torch.rand(6, 50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2
    steps = (5,)
    raw = ParallelLIFNet(NetConfig(d_in=2, widths=(6, 5), branches=4), dtype=torch.float64)
    raw.set_hidden_params(params)
    normal = raw.run_hidden(x).spikes[-1]
    shifted = Spy(offset=0.3)
    monkeypatch.setattr(kernel_module, "lif_step", shifted)
    monkeypatch.setattr(network_module, "lif_step", shifted)
    changed = raw.run_hidden(x).spikes[-1]
    assert not torch.equal(normal, changed)
    dic = build_dictionary(params, x, steps, drop_ones=False)
    # the dictionary follows the changed kernel exactly
    cols = changed[5].detach().reshape(50, -1).numpy().astype(np.uint8)
    rep = dic.provenance[:, 0] * 5 + dic.provenance[:, 1]
    assert np.array_equal(dic.atoms, cols[:, rep])
    # and the step API follows it too
    state = raw.init_state(50)
    for t in range(6):
        _, state = raw.step(x[t], state)
    assert torch.equal(state[-1].s, changed[5])
