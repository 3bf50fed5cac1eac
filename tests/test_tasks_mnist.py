"""MNIST-SEQ: IDX reading, chunking, disjoint splits and clear errors for missing files."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cvxsnn.tasks import mnist
from cvxsnn.tasks.mnist import MNIST_FILES, load_mnist, make_mnist_seq, mnist_split

MNIST_DIR = Path(
    os.environ.get(
        "CVXSNN_DATA_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
    )
)
# The real files are part of every test environment: missing ones fail (conftest's fixture).
needs_mnist = pytest.mark.usefixtures("mnist_dir")


@needs_mnist
def test_load_real_mnist() -> None:
    tr_x, tr_y, te_x, te_y = load_mnist(MNIST_DIR)
    assert tr_x.shape == (60000, 28, 28) and tr_x.dtype == torch.uint8
    assert te_x.shape == (10000, 28, 28) and te_x.dtype == torch.uint8
    assert tr_y.shape == (60000,) and te_y.shape == (10000,)
    counts = torch.bincount(tr_y, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(te_y, minlength=10).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert tr_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert int(tr_x.max()) == 255 and int(tr_x.min()) == 0
    assert load_mnist(MNIST_DIR) is load_mnist(MNIST_DIR)  # cached in-process


@needs_mnist
@pytest.mark.parametrize("T", [1, 2, 5, 14, 28, 56, 784])
def test_chunks_are_contiguous_row_major_pixels(T: int) -> None:
    task = make_mnist_seq(T, n_train=50, n_val=20, n_test=30, seed=0, data_dir=MNIST_DIR)
    images, labels = load_mnist(MNIST_DIR)[:2]
    P = math.ceil(784 / T)
    data = task.train
    assert data.x.shape == (T, 50, P) and data.steps == (T - 1,)
    assert data.head_classes == (10,) and data.x.dtype == torch.float32
    flat = data.x.transpose(0, 1).reshape(50, T * P)  # (n, T P), step-major
    idx = data.aux["index"]
    expected = images[idx].reshape(50, 784).float() / 255
    assert torch.equal(flat[:, :784], expected)
    assert torch.all(flat[:, 784:] == 0)
    assert torch.equal(data.targets[0, :, 0], labels[idx])
    # Row-major: step 0 starts with the image's first row.
    assert torch.equal(data.x[0, :, : min(P, 28)], images[idx, 0, : min(P, 28)].float() / 255)
    assert task.params["chunk"] == P and task.params["padding"] == T * P - 784


def test_split_indices_partition_and_seeds() -> None:
    # Full pools: validation (10 000) and training (50 000) partition the 60 000 images.
    tr, va, te = mnist_split(60000, 10000, 50000, 10000, 10000, seed=0)
    trs, vas = set(tr.tolist()), set(va.tolist())
    assert len(trs) == 50000 and len(vas) == 10000
    assert not trs & vas and trs | vas == set(range(60000))
    assert sorted(te.tolist()) == list(range(10000))
    for seed in (1, 2, 3):
        tr_s, va_s, te_s = mnist_split(60000, 10000, 5000, 3000, 200, seed=seed)
        assert len(set(tr_s.tolist())) == 5000 and set(tr_s.tolist()) <= trs  # train pool only
        assert torch.equal(va_s, va[:3000])  # validation fixed across seeds
        assert torch.equal(te_s, te[:200])  # test fixed across seeds
    assert not torch.equal(
        mnist_split(60000, 10000, 100, 0, 0, 1)[0], mnist_split(60000, 10000, 100, 0, 0, 2)[0]
    )


@needs_mnist
def test_make_mnist_seq_uses_the_split() -> None:
    a = make_mnist_seq(28, n_train=500, n_val=300, n_test=200, seed=1, data_dir=MNIST_DIR)
    tr, va, te = mnist_split(60000, 10000, 500, 300, 200, seed=1)
    assert torch.equal(a.train.aux["index"], tr)
    assert torch.equal(a.val.aux["index"], va)
    assert torch.equal(a.test.aux["index"], te)
    assert not set(a.train.aux["index"].tolist()) & set(a.val.aux["index"].tolist())
    test_labels = load_mnist(MNIST_DIR).test_labels
    assert torch.equal(a.test.targets[0, :, 0], test_labels[te])


@needs_mnist
def test_bad_sizes_and_steps() -> None:
    with pytest.raises(ValueError, match=r"steps \(T\) must be >= 1 and <= 784; got 0"):
        make_mnist_seq(0, n_train=5, n_val=0, n_test=0, seed=0, data_dir=MNIST_DIR)
    with pytest.raises(ValueError, match=r"steps \(T\) must be >= 1 and <= 784; got 785"):
        make_mnist_seq(785, n_train=5, n_val=0, n_test=0, seed=0, data_dir=MNIST_DIR)
    with pytest.raises(ValueError, match="n_train must be >= 1 and <= 50000; got 50001"):
        make_mnist_seq(2, n_train=50001, n_val=0, n_test=0, seed=0, data_dir=MNIST_DIR)
    with pytest.raises(ValueError, match="n_val must be >= 0 and <= 10000; got 10001"):
        make_mnist_seq(2, n_train=5, n_val=10001, n_test=0, seed=0, data_dir=MNIST_DIR)


# --------------------------------------------------------------------------- #
# Synthetic IDX files: formats and errors
# --------------------------------------------------------------------------- #
def _idx(magic: int, array: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fake(
    folder: Path, n: int = 12, n_test: int = 6, gz: bool = False
) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (n, 28, 28)),
        rng.integers(0, 10, n),
        rng.integers(0, 256, (n_test, 28, 28)),
        rng.integers(0, 10, n_test),
    )
    for name, magic, array in zip(MNIST_FILES, (2051, 2049, 2051, 2049), arrays, strict=True):
        blob = _idx(magic, array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_reads_plain_and_gzipped_idx(tmp_path: Path, gz: bool) -> None:
    arrays = _write_fake(tmp_path, gz=gz)
    got = load_mnist(tmp_path)
    for a, b in zip(arrays, got, strict=True):
        assert np.array_equal(a, b.numpy())
    assert got.train_images.dtype == torch.uint8 and got.train_labels.dtype == torch.int64
    task = make_mnist_seq(14, n_train=10, n_val=2, n_test=6, seed=0, data_dir=tmp_path)
    assert not set(task.train.aux["index"].tolist()) & set(task.val.aux["index"].tolist())


def test_missing_directory_says_what_to_put_where(tmp_path: Path) -> None:
    where = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="never downloads") as err:
        load_mnist(where)
    message = str(err.value)
    assert str(where) in message
    for name in MNIST_FILES:
        assert name in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    _write_fake(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing: t10k-labels-idx1-ubyte\)"):
        load_mnist(tmp_path)


def test_bad_magic_and_sizes(tmp_path: Path) -> None:
    _write_fake(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    good = labels.read_bytes()
    labels.write_bytes(_idx(2051, np.zeros(12)))
    with pytest.raises(ValueError, match="has IDX magic number 2051; expected 2049"):
        load_mnist(tmp_path)
    labels.write_bytes(good[:-1])
    with pytest.raises(
        ValueError, match=r"announces 12 items \(12 bytes of data\) but holds 11 bytes"
    ):
        load_mnist(tmp_path)
    labels.write_bytes(_idx(2049, np.zeros(11)))
    with pytest.raises(ValueError, match="MNIST training files disagree: 12 images but 11 labels"):
        load_mnist(tmp_path)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(_idx(2051, np.zeros((6, 28, 27))))
    labels.write_bytes(good)
    with pytest.raises(ValueError, match=r"holds items of shape \(28, 27\); expected \(28, 28\)"):
        load_mnist(tmp_path)


def test_cache_follows_file_changes(tmp_path: Path) -> None:
    _write_fake(tmp_path, n=12)
    first = load_mnist(tmp_path)
    _write_fake(tmp_path, n=18)
    assert load_mnist(tmp_path).train_images.shape[0] == 18 != first.train_images.shape[0]
    mnist._CACHE.clear()
