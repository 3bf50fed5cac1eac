"""MNIST-SEQ: MNIST digits streamed as T contiguous chunks of pixels.

An image's 784 pixels, scaled to [0, 1] by / 255 and read row-major, are cut
into T contiguous chunks of P = ceil(784 / T) pixels (the last one zero
padded); chunk t is the input of step t (d = P) and the digit is read at the
last step (10 classes).

The images are read from the four standard IDX files (gzipped or not) in a
data directory; cvxsnn never downloads them. Splits: the validation set is a
fixed held-out part of the 60 000 training images (the first ``N // 6`` of a
fixed permutation, 10 000 for the full set), disjoint from the pool the
training subsample is drawn from by the run's seed; the test set is a fixed
subset of the 10 000 test images. ``aux["index"]`` holds each sequence's row in
its source file.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from cvxsnn.tasks.base import SequenceDataset, TaskData, check_int, seeded_generator

__all__ = [
    "MNIST_FILES",
    "MnistArrays",
    "load_mnist",
    "make_mnist_seq",
    "mnist_sequences",
    "mnist_split",
]

#: Standard IDX file names, in the order train images, train labels, test images, test labels.
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IMAGE_MAGIC = 2051
_LABEL_MAGIC = 2049
_PIXELS = 784
#: Seed of the fixed permutations (validation pool, test subset).
SPLIT_SEED = 0


class MnistArrays(NamedTuple):
    """Decoded MNIST.

    Attributes
    ----------
    train_images : Tensor of shape (N, 28, 28), uint8
    train_labels : Tensor of shape (N,), int64
    test_images : Tensor of shape (N_test, 28, 28), uint8
    test_labels : Tensor of shape (N_test,), int64
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


_CACHE: dict[tuple, MnistArrays] = {}


def _find(data_dir: Path, name: str) -> Path | None:
    for candidate in (data_dir / f"{name}.gz", data_dir / name):
        if candidate.is_file():
            return candidate
    return None


def _missing_message(data_dir: Path, missing: list[str]) -> str:
    names = "\n".join(f"  {name}[.gz]" for name in MNIST_FILES)
    return (
        f"MNIST files not found in {data_dir} (missing: {', '.join(missing)}). "
        f"Put the four standard IDX files, gzipped or not, in that directory:\n{names}\n"
        "cvxsnn never downloads data."
    )


def _read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """One IDX file as a uint8 array of shape (N, *item_shape)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    ndim = 1 + len(item_shape)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is not an IDX file: {len(raw)} bytes, shorter than its header")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise ValueError(f"{path} has IDX magic number {got}; expected {magic}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != item_shape:
        raise ValueError(f"{path} holds items of shape {dims[1:]}; expected {item_shape}")
    size = math.prod(dims)
    if len(raw) - header != size:
        raise ValueError(
            f"{path} announces {dims[0]} items ({size} bytes of data) but holds "
            f"{len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(data_dir: str | Path) -> MnistArrays:
    """Read MNIST from the four standard IDX files in ``data_dir``.

    Decoded arrays are cached in-process (keyed by the files' paths, sizes and
    modification times); the returned tensors are shared, do not modify them.

    Parameters
    ----------
    data_dir : str or Path
        Directory holding ``train-images-idx3-ubyte[.gz]``,
        ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]`` and
        ``t10k-labels-idx1-ubyte[.gz]``.

    Returns
    -------
    MnistArrays
        ``(train_images, train_labels, test_images, test_labels)``.

    Raises
    ------
    FileNotFoundError
        When the directory or a file is missing (the message lists the files
        to put there).
    ValueError
        When a file has a wrong magic number, item shape or size, or images
        and labels disagree in number.
    """
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(_missing_message(data_dir, ["the directory itself"]))
    paths = [_find(data_dir, name) for name in MNIST_FILES]
    missing = [name for name, p in zip(MNIST_FILES, paths, strict=True) if p is None]
    if missing:
        raise FileNotFoundError(_missing_message(data_dir, missing))
    found = [p for p in paths if p is not None]
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in found)
    if key in _CACHE:
        return _CACHE[key]
    tr_x = _read_idx(found[0], _IMAGE_MAGIC, (28, 28))
    tr_y = _read_idx(found[1], _LABEL_MAGIC, ())
    te_x = _read_idx(found[2], _IMAGE_MAGIC, (28, 28))
    te_y = _read_idx(found[3], _LABEL_MAGIC, ())
    for images, labels, split in ((tr_x, tr_y, "training"), (te_x, te_y, "test")):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"MNIST {split} files disagree: {images.shape[0]} images but "
                f"{labels.shape[0]} labels in {data_dir}"
            )
        if labels.size and int(labels.max()) > 9:
            raise ValueError(f"MNIST {split} labels must lie in [0, 9]; got {int(labels.max())}")
    arrays = MnistArrays(
        torch.from_numpy(tr_x.copy()),
        torch.from_numpy(tr_y.astype(np.int64)),
        torch.from_numpy(te_x.copy()),
        torch.from_numpy(te_y.astype(np.int64)),
    )
    _CACHE[key] = arrays
    return arrays


def mnist_sequences(
    images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, T: int, dtype: torch.dtype
) -> SequenceDataset:
    """Stream ``images[index]`` as T chunks of ceil(784 / T) pixels.

    Parameters
    ----------
    images : Tensor of shape (N, 28, 28), uint8
    labels : Tensor of shape (N,), integer
    index : Tensor of shape (n,), long
    T : int
        1 <= T <= 784.
    dtype : torch.dtype

    Returns
    -------
    SequenceDataset
        ``x`` of shape (T, n, P), targets of shape (1, n, 1) at step T - 1,
        head ``"label"`` with 10 classes, ``aux["index"]`` = ``index``.
    """
    T = check_int("steps (T)", T, 1, _PIXELS)
    P = math.ceil(_PIXELS / T)
    n = index.shape[0]
    flat = images[index].reshape(n, _PIXELS).to(dtype) / 255  # (n, 784)
    flat = torch.nn.functional.pad(flat, (0, T * P - _PIXELS))  # (n, T * P)
    x = flat.reshape(n, T, P).transpose(0, 1).contiguous()  # (T, n, P)
    return SequenceDataset(
        x=x,
        targets=labels[index].long().reshape(1, n, 1),
        steps=(T - 1,),
        head_classes=(10,),
        head_names=("label",),
        aux={"index": index.clone()},
    )


def mnist_split(
    N: int, N_test: int, n_train: int, n_val: int, n_test: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of the MNIST-SEQ splits.

    A fixed permutation of the N training images puts its first ``N // 6``
    into the validation pool and the rest into the training pool; the
    validation set is the first ``n_val`` of its pool, the training set
    ``n_train`` images of its pool drawn by ``seed``, the test set the first
    ``n_test`` of a fixed permutation of the N_test test images.

    Returns
    -------
    train_idx, val_idx, test_idx : Tensor of shape (n_train,), (n_val,), (n_test,), long
        Rows into the training images (train, val) and the test images (test).
    """
    n_val_pool = N // 6
    n_train = check_int("n_train", n_train, 1, N - n_val_pool)
    n_val = check_int("n_val", n_val, 0, n_val_pool)
    n_test = check_int("n_test", n_test, 0, N_test)
    order = torch.randperm(N, generator=seeded_generator(SPLIT_SEED, "mnist-split"))
    val_pool, train_pool = order[:n_val_pool], order[n_val_pool:]
    pick = torch.randperm(train_pool.shape[0], generator=seeded_generator(seed, "mnist-train"))
    test_order = torch.randperm(N_test, generator=seeded_generator(SPLIT_SEED, "mnist-test"))
    return train_pool[pick[:n_train]], val_pool[:n_val], test_order[:n_test]


def make_mnist_seq(
    T: int,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int,
    data_dir: str | Path,
    dtype: torch.dtype = torch.float32,
) -> TaskData:
    """MNIST-SEQ splits.

    Parameters
    ----------
    T : int
        Steps per image, 1..784 (the paper uses 2, 14, 28, 56).
    n_train : int
        Training subsample drawn by ``seed`` from the training pool
        (``N - N // 6`` = 50 000 images for the full set).
    n_val : int
        First ``n_val`` images of the fixed validation pool (``N // 6`` =
        10 000), disjoint from the training pool.
    n_test : int
        First ``n_test`` images of a fixed permutation of the test images.
    seed : int
    data_dir : str or Path
        Directory of the IDX files (see :func:`load_mnist`).
    dtype : torch.dtype

    Returns
    -------
    TaskData
    """
    T = check_int("steps (T)", T, 1, _PIXELS)
    arrays = load_mnist(data_dir)
    N, N_test = arrays.train_images.shape[0], arrays.test_images.shape[0]
    train_idx, val_idx, test_idx = mnist_split(N, N_test, n_train, n_val, n_test, seed)
    P = math.ceil(_PIXELS / T)
    return TaskData(
        name="mnist-seq",
        train=mnist_sequences(arrays.train_images, arrays.train_labels, train_idx, T, dtype),
        val=mnist_sequences(arrays.train_images, arrays.train_labels, val_idx, T, dtype),
        test=mnist_sequences(arrays.test_images, arrays.test_labels, test_idx, T, dtype),
        params={
            "T": T,
            "chunk": P,
            "padding": T * P - _PIXELS,
            "n_train": n_train,
            "n_val": n_val,
            "n_test": n_test,
            "seed": int(seed),
            "data_dir": str(data_dir),
        },
    )
