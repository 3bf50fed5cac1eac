"""A user's own sequence classification task, read from a ``.npz`` file.

Arrays (sample-major, as users usually store them):

- ``X`` of shape (n, T, d): inputs, real and finite, T >= 1.
- either ``y`` of shape (n,): integer class read at the last step,
  or ``Y`` of shape (n, T): an integer class at every step (all supervised).
- optionally ``X_test`` with ``y_test`` (or ``Y_test``): a fixed test set.

Without a test set the rows are split into train / validation / test by the
seed; with one, the rows are split into train / validation only and the given
test set stays fixed. The number of classes is one more than the largest label
(at least 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvxsnn.tasks.base import SequenceDataset, TaskData, check_int, seeded_generator

__all__ = ["load_custom"]

_KEYS = ("X", "y", "Y", "X_test", "y_test", "Y_test")


def _read(data: str | Path | Mapping[str, Any]) -> tuple[dict[str, np.ndarray], str]:
    if isinstance(data, Mapping):
        return {str(k): np.asarray(v) for k, v in data.items()}, "<arrays>"
    path = Path(data).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"custom task file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path} could not be read as a .npz file without pickles: {err}") from err
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path} must be a .npz archive holding 'X' and 'y' (or 'Y'); got one array"
        )
    with loaded:
        return {k: loaded[k] for k in loaded.files}, str(path)


def _inputs(name: str, X: np.ndarray, d: int | None, T: int | None) -> np.ndarray:
    if X.ndim != 3 or min(X.shape) < 1:
        raise ValueError(f"{name} must have shape (n, T, d) with n, T, d >= 1; got {X.shape}")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers; got dtype {X.dtype}")
    if (T is not None and X.shape[1] != T) or (d is not None and X.shape[2] != d):
        raise ValueError(f"{name} must have shape (n, T, d) = (n, {T}, {d}) like X; got {X.shape}")
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


def _labels(name: str, y: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if y.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise ValueError(f"{name} must hold integer class labels; got non-integer values")
    elif y.dtype.kind not in "biu":
        raise ValueError(f"{name} must hold integer class labels; got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"{name} must hold class labels >= 0; got {y.min()}")
    return y


def _dataset(
    X: np.ndarray, y: np.ndarray, index: np.ndarray, classes: int, dtype: torch.dtype
) -> SequenceDataset:
    """Rows ``index`` of X (n, T, d) and labels y (n,) or (n, T) as a time-major set."""
    T = X.shape[1]
    x = torch.from_numpy(np.ascontiguousarray(X[index])).to(dtype).transpose(0, 1)  # (T, n, d)
    lab = torch.from_numpy(y[index])
    per_step = lab.dim() == 2
    targets = lab.T.unsqueeze(-1) if per_step else lab.reshape(1, -1, 1)  # (S, n, 1)
    return SequenceDataset(
        x=x.contiguous(),
        targets=targets.contiguous(),
        steps=tuple(range(T)) if per_step else (T - 1,),
        head_classes=(classes,),
        head_names=("label",),
        aux={"index": torch.from_numpy(np.asarray(index, dtype=np.int64))},
    )


def load_custom(
    data: str | Path | Mapping[str, Any],
    n_val_frac: float = 0.1,
    n_test_frac: float = 0.2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    n_train: int | None = None,
) -> TaskData:
    """Read a custom task and split it.

    Parameters
    ----------
    data : str, Path or mapping of str to array
        A ``.npz`` file (read without pickles) or the arrays themselves.
    n_val_frac : float
        Share of the rows of ``X`` held out for validation, in [0, 1).
    n_test_frac : float
        Share of the rows of ``X`` held out for testing when no ``X_test``
        is given, in [0, 1).
    seed : int
        Fixes the split (and the training subsample).
    dtype : torch.dtype
        Floating dtype of the inputs.
    n_train : int, optional
        Keep at most this many training rows (drawn by ``seed``).

    Returns
    -------
    TaskData
        Heads ``("label",)``; supervised at the last step (``y``) or every
        step (``Y``). ``aux["index"]`` holds each sequence's row in its array.
    """
    arrays, source = _read(data)
    unknown = sorted(set(arrays) - set(_KEYS))
    if unknown:
        raise ValueError(f"custom data holds unknown arrays {unknown}; expected keys among {_KEYS}")
    if "X" not in arrays:
        raise ValueError(
            f"custom data must hold an array 'X' of shape (n, T, d); got keys {sorted(arrays)}"
        )
    X = _inputs("X", arrays["X"], None, None)
    n, T, d = X.shape
    if ("y" in arrays) == ("Y" in arrays):
        raise ValueError(
            "custom data must hold exactly one of 'y' (shape (n,), label at the last step) "
            f"and 'Y' (shape (n, T), a label at every step); got keys {sorted(arrays)}"
        )
    per_step = "Y" in arrays
    y = _labels("Y", arrays["Y"], (n, T)) if per_step else _labels("y", arrays["y"], (n,))
    test_label = "Y_test" if per_step else "y_test"
    other_label = "y_test" if per_step else "Y_test"
    if other_label in arrays:
        raise ValueError(
            f"custom data gives {'Y' if per_step else 'y'} for training, so its test labels "
            f"must be {test_label!r}; got {other_label!r}"
        )
    has_test = "X_test" in arrays
    if has_test != (test_label in arrays):
        raise ValueError(f"custom data must give 'X_test' and {test_label!r} together or neither")
    if not 0 <= n_val_frac < 1:
        raise ValueError(f"n_val_frac must lie in [0, 1); got {n_val_frac}")
    if not 0 <= n_test_frac < 1:
        raise ValueError(f"n_test_frac must lie in [0, 1); got {n_test_frac}")

    order = torch.randperm(n, generator=seeded_generator(seed, "custom-split")).numpy()
    n_val = round(n * n_val_frac)
    n_test = 0 if has_test else round(n * n_test_frac)
    n_tr = n - n_val - n_test
    if n_tr < 1:
        raise ValueError(
            f"custom data has n = {n} rows: too few for n_val_frac = {n_val_frac} and "
            f"n_test_frac = {n_test_frac} to leave a training row"
        )
    if n_train is not None:
        n_tr = min(n_tr, check_int("n_train", n_train, 1))
    val_idx, test_idx = order[:n_val], order[n_val : n_val + n_test]
    train_idx = order[n_val + n_test : n_val + n_test + n_tr]

    if has_test:
        X_test = _inputs("X_test", arrays["X_test"], d, T)
        shape = (X_test.shape[0], T) if per_step else (X_test.shape[0],)
        y_test = _labels(test_label, arrays[test_label], shape)
        classes = max(2, int(max(y.max(), y_test.max())) + 1)
        test = _dataset(X_test, y_test, np.arange(X_test.shape[0]), classes, dtype)
    else:
        classes = max(2, int(y.max()) + 1)
        test = _dataset(X, y, test_idx, classes, dtype)
    return TaskData(
        name="custom",
        train=_dataset(X, y, train_idx, classes, dtype),
        val=_dataset(X, y, val_idx, classes, dtype),
        test=test,
        params={
            "source": source,
            "T": T,
            "d": d,
            "n": n,
            "classes": classes,
            "per_step": per_step,
            "given_test": has_test,
            "n_train": int(train_idx.shape[0]),
            "n_val": n_val,
            "n_test": int(test.n),
            "n_val_frac": float(n_val_frac),
            "n_test_frac": float(n_test_frac),
            "seed": int(seed),
        },
    )
