"""FIRST-LAST-XOR: labels, balance, encoding, seeds and the memorization caveat."""

from __future__ import annotations

import pytest
import torch

from cvxsnn.tasks.xor import make_xor, xor_dataset


def _bits(x: torch.Tensor) -> torch.Tensor:
    """The task bits back from the one-hot channels: (n, T)."""
    return x[..., :2].argmax(-1).T


@pytest.mark.parametrize("T", [2, 6, 14])
def test_labels_are_first_xor_last(T: int) -> None:
    task = make_xor(T, n_train=501, n_val=64, n_test=300, seed=3)
    for data in (task.train, task.val, task.test):
        bits = _bits(data.x)
        assert data.steps == (T - 1,)
        assert data.head_names == ("label",) and data.head_classes == (2,)
        assert torch.equal(data.targets[0, :, 0], bits[:, 0] ^ bits[:, -1])
        assert torch.equal(data.aux["bits"], bits)


@pytest.mark.parametrize("n", [1, 2, 501, 1000])
def test_classes_are_balanced_exactly(n: int) -> None:
    data = xor_dataset(6, n, torch.Generator().manual_seed(0))
    counts = torch.bincount(data.targets.reshape(-1), minlength=2)
    assert sorted(counts.tolist()) == [n // 2, n - n // 2]


def test_one_hot_encoding_and_uniform_bits() -> None:
    data = xor_dataset(8, 20000, torch.Generator().manual_seed(1))
    assert data.d == 2
    assert torch.equal(data.x.sum(-1), torch.ones(8, 20000))
    assert set(data.x.unique().tolist()) == {0.0, 1.0}
    # Every bit (the last one included, set from the label) is uniform: 4 sigma = 0.014.
    p = _bits(data.x).double().mean(0)
    assert torch.all((p - 0.5).abs() < 0.015), p
    # x_1 and x_T are independent: each of the 4 pairs has probability 1/4.
    bits = _bits(data.x)
    pairs = torch.bincount(2 * bits[:, 0] + bits[:, -1], minlength=4).double() / 20000
    assert torch.all((pairs - 0.25).abs() < 0.015), pairs


def test_distractor_channels() -> None:
    task = make_xor(10, n_train=400, n_val=0, n_test=100, seed=0, distractors=3)
    x = task.train.x
    assert x.shape == (10, 400, 5)
    assert set(x[..., 2:].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(task.train.targets[0, :, 0], _bits(x)[:, 0] ^ _bits(x)[:, -1])
    assert task.params["distractors"] == 3


def test_seed_fixes_train_and_val_but_never_test() -> None:
    a = make_xor(6, n_train=100, n_val=50, n_test=80, seed=0)
    b = make_xor(6, n_train=100, n_val=50, n_test=80, seed=1)
    c = make_xor(6, n_train=100, n_val=50, n_test=80, seed=0)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.targets, b.test.targets)
    assert not torch.equal(a.train.x, b.train.x)
    assert not torch.equal(a.val.x, b.val.x)
    assert torch.equal(a.train.x, c.train.x) and torch.equal(a.val.x, c.val.x)
    # The test set does not depend on the training size either.
    d = make_xor(6, n_train=7, n_val=3, n_test=80, seed=5)
    assert torch.equal(a.test.x, d.test.x)


def test_memorization_caveat_is_recorded() -> None:
    small = make_xor(6, n_train=2000, n_val=0, n_test=500, seed=0)
    assert small.params["distinct_inputs"] == 64
    assert small.params["test_seen_in_train"] == 1.0
    big = make_xor(20, n_train=300, n_val=0, n_test=300, seed=0)
    seen = {tuple(r) for r in _bits(big.train.x).tolist()}
    expected = sum(tuple(r) in seen for r in _bits(big.test.x).tolist()) / 300
    assert big.params["test_seen_in_train"] == expected
    assert expected < 0.01


def test_dtype() -> None:
    task = make_xor(4, n_train=10, n_val=2, n_test=2, seed=0, dtype=torch.float64)
    assert task.train.x.dtype == torch.float64


@pytest.mark.parametrize("T", [0, 1, -3])
def test_too_short_raises(T: int) -> None:
    with pytest.raises(ValueError, match=r"steps \(T\) must be >= 2; got"):
        make_xor(T, n_train=10, n_val=0, n_test=0, seed=0)


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="n_train must be >= 1; got 0"):
        make_xor(6, n_train=0, n_val=0, n_test=0, seed=0)
    with pytest.raises(ValueError, match="distractors must be >= 0; got -1"):
        make_xor(6, n_train=4, n_val=0, n_test=0, seed=0, distractors=-1)
    with pytest.raises(ValueError, match=r"n_val must be an integer; got 2\.5"):
        make_xor(6, n_train=4, n_val=2.5, n_test=0, seed=0)
