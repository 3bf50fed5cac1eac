"""Custom tasks from .npz files: layout, splits and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cvxsnn.tasks.custom import load_custom


def _arrays(n: int = 50, T: int = 4, d: int = 3, classes: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"X": rng.normal(size=(n, T, d)), "y": rng.integers(0, classes, n)}


def test_npz_roundtrip_and_split(tmp_path: Path) -> None:
    arrays = _arrays()
    path = tmp_path / "task.npz"
    np.savez(path, **arrays)
    task = load_custom(path, n_val_frac=0.2, n_test_frac=0.1, seed=3)
    assert (task.train.n, task.val.n, task.test.n) == (35, 10, 5)
    rows = [set(d.aux["index"].tolist()) for d in (task.train, task.val, task.test)]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    assert rows[0] | rows[1] | rows[2] == set(range(50))
    for data in (task.train, task.val, task.test):
        idx = data.aux["index"].numpy()
        assert data.x.shape == (4, len(idx), 3) and data.steps == (3,)
        assert np.allclose(data.x.numpy(), arrays["X"][idx].transpose(1, 0, 2).astype(np.float32))
        assert np.array_equal(data.targets[0, :, 0].numpy(), arrays["y"][idx])
        assert data.head_classes == (3,)
    assert task.params["source"] == str(path) and task.params["per_step"] is False
    again = load_custom(path, n_val_frac=0.2, n_test_frac=0.1, seed=3)
    other = load_custom(path, n_val_frac=0.2, n_test_frac=0.1, seed=4)
    assert torch.equal(task.train.aux["index"], again.train.aux["index"])
    assert not torch.equal(task.train.aux["index"], other.train.aux["index"])


def test_per_step_targets_and_given_test() -> None:
    rng = np.random.default_rng(1)
    arrays = {
        "X": rng.normal(size=(40, 5, 2)),
        "Y": rng.integers(0, 2, (40, 5)),
        "X_test": rng.normal(size=(7, 5, 2)),
        "Y_test": rng.integers(0, 4, (7, 5)),
    }
    task = load_custom(arrays, n_val_frac=0.25, seed=0, dtype=torch.float64)
    assert task.test.n == 7 and task.train.n + task.val.n == 40 and task.val.n == 10
    assert task.train.steps == tuple(range(5))
    assert task.train.head_classes == (max(4, int(arrays["Y_test"].max()) + 1),)
    assert task.test.x.dtype == torch.float64
    assert np.array_equal(task.test.x.numpy(), arrays["X_test"].transpose(1, 0, 2))
    assert np.array_equal(task.test.targets[..., 0].numpy(), arrays["Y_test"].T)
    idx = task.train.aux["index"].numpy()
    assert np.array_equal(task.train.targets[..., 0].numpy(), arrays["Y"][idx].T)


def test_n_train_caps_the_training_split() -> None:
    task = load_custom(_arrays(n=100), n_val_frac=0.1, n_test_frac=0.1, seed=0, n_train=20)
    assert task.train.n == 20 and task.val.n == 10 and task.test.n == 10


def test_float_labels_with_integer_values_are_accepted() -> None:
    arrays = _arrays()
    arrays["y"] = arrays["y"].astype(np.float64)
    assert load_custom(arrays).train.targets.dtype == torch.long


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"X": None}, r"custom data must hold an array 'X' of shape \(n, T, d\)"),
        ({"y": None}, "custom data must hold exactly one of 'y'"),
        ({"Y": np.zeros((50, 4))}, "custom data must hold exactly one of 'y'"),
        (
            {"X": np.zeros((50, 4))},
            r"X must have shape \(n, T, d\) with n, T, d >= 1; got \(50, 4\)",
        ),
        (
            {"X": np.zeros((50, 0, 3))},
            r"X must have shape \(n, T, d\) with n, T, d >= 1; got \(50, 0, 3\)",
        ),
        ({"X": np.full((50, 4, 3), np.nan)}, "X contains NaN or infinite values"),
        ({"X": np.array([[["a"]]])}, "X must hold real numbers"),
        ({"y": np.zeros(49, dtype=int)}, r"y must have shape \(50,\); got \(49,\)"),
        ({"y": np.full(50, 0.5)}, "y must hold integer class labels; got non-integer values"),
        ({"y": -np.ones(50, dtype=int)}, "y must hold class labels >= 0; got -1"),
        ({"X_test": np.zeros((5, 4, 3))}, "custom data must give 'X_test' and 'y_test' together"),
        (
            {"X_test": np.zeros((5, 4, 2)), "y_test": np.zeros(5, dtype=int)},
            r"X_test must have shape \(n, T, d\) = \(n, 4, 3\) like X; got \(5, 4, 2\)",
        ),
        (
            {"X_test": np.zeros((5, 4, 3)), "y_test": np.zeros(6, dtype=int)},
            r"y_test must have shape \(5,\); got \(6,\)",
        ),
        ({"Y_test": np.zeros((5, 4))}, "its test labels must be 'y_test'; got 'Y_test'"),
        ({"labels": np.zeros(50)}, r"unknown arrays \['labels'\]"),
    ],
)
def test_bad_data_raises_clear_errors(change: dict, match: str) -> None:
    arrays = _arrays()
    for key, value in change.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    with pytest.raises(ValueError, match=match):
        load_custom(arrays)


def test_bad_files_and_fractions(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="custom task file not found"):
        load_custom(tmp_path / "none.npz")
    single = tmp_path / "x.npy"
    np.save(single, np.zeros((3, 2, 1)))
    with pytest.raises(ValueError, match=r"must be a \.npz archive"):
        load_custom(single)
    with pytest.raises(ValueError, match=r"n_val_frac must lie in \[0, 1\); got 1.5"):
        load_custom(_arrays(), n_val_frac=1.5)
    with pytest.raises(ValueError, match=r"too few for n_val_frac = 0\.5 and n_test_frac = 0\.5"):
        load_custom(_arrays(n=2), n_val_frac=0.5, n_test_frac=0.5)
