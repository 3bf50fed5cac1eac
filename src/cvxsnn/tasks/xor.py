"""FIRST-LAST-XOR: the label is the XOR of the first and the last input bit.

Each sequence holds T bits x_1..x_T drawn uniformly from {0, 1}, each encoded
one-hot (d = 2), optionally followed by ``distractors`` further uniform random
bits per step that carry no information. The label y = x_1 XOR x_T is read at
the last step. Classes are balanced exactly: the labels are a shuffled
alternation of 0 and 1, the bits x_1..x_{T-1} are uniform and x_T is set to
x_1 XOR y. Conditioned on a balanced label vector this is the uniform
distribution over bit strings, so nothing else about the inputs changes.

Caveat: at T = 6 there are only 2^6 = 64 distinct bit strings, so with
thousands of samples every test string was also seen in training and test
accuracy measures memorization. ``params["test_seen_in_train"]`` records the
share of test sequences whose whole input occurs in the training split;
settings with T >= 14 and n well below 2^T, or with distractor channels, need
generalization.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cvxsnn.tasks.base import SequenceDataset, TaskData, check_int, seeded_generator, seen_fraction

__all__ = ["make_xor", "xor_dataset"]

#: Seed of the test stream: the test set does not depend on the run's seed.
TEST_SEED = 0


def xor_dataset(
    T: int,
    n: int,
    generator: torch.Generator,
    distractors: int = 0,
    dtype: torch.dtype = torch.float32,
) -> SequenceDataset:
    """Draw ``n`` FIRST-LAST-XOR sequences with balanced classes.

    Parameters
    ----------
    T : int
        Sequence length, >= 2 (at T = 1 the label x_1 XOR x_1 is always 0).
    n : int
        Number of sequences; the two classes get ``n // 2`` and ``n - n // 2``.
    generator : torch.Generator
        Source of randomness (CPU).
    distractors : int
        Extra uniform random bits per step.
    dtype : torch.dtype
        Floating dtype of the inputs.

    Returns
    -------
    SequenceDataset
        ``x`` of shape (T, n, 2 + distractors), targets of shape (1, n, 1) at
        step T - 1, one head ``"label"`` with 2 classes; ``aux["bits"]`` of
        shape (n, T) holds the bits.
    """
    T = check_int("steps (T)", T, 2)
    n = check_int("n", n, 0)
    distractors = check_int("distractors", distractors, 0)
    y = (torch.arange(n) % 2)[torch.randperm(n, generator=generator)]  # (n,)
    bits = torch.randint(0, 2, (n, T), generator=generator)  # (n, T)
    bits[:, -1] = bits[:, 0] ^ y
    onehot = torch.nn.functional.one_hot(bits.T, 2)  # (T, n, 2)
    noise = torch.randint(0, 2, (T, n, distractors), generator=generator)  # (T, n, distractors)
    x = torch.cat([onehot, noise], dim=-1).to(dtype)  # (T, n, d)
    return SequenceDataset(
        x=x,
        targets=y.reshape(1, n, 1),
        steps=(T - 1,),
        head_classes=(2,),
        head_names=("label",),
        aux={"bits": bits},
    )


def make_xor(
    T: int,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int,
    dtype: torch.dtype = torch.float32,
    distractors: int = 0,
) -> TaskData:
    """FIRST-LAST-XOR splits.

    Parameters
    ----------
    T : int
        Sequence length, >= 2.
    n_train, n_val, n_test : int
        Split sizes (``n_train >= 1``).
    seed : int
        Run seed: fixes the training and validation draws.
    dtype : torch.dtype
        Floating dtype of the inputs.
    distractors : int
        Extra uniform random input bits per step (d = 2 + distractors).

    Returns
    -------
    TaskData
        Train and validation drawn from independent streams of ``seed``; the
        test set drawn from a fixed stream, identical for every seed.
    """
    T = check_int("steps (T)", T, 2)
    n_train = check_int("n_train", n_train, 1)
    n_val = check_int("n_val", n_val, 0)
    n_test = check_int("n_test", n_test, 0)
    kw = {"distractors": distractors, "dtype": dtype}
    train = xor_dataset(T, n_train, seeded_generator(seed, "xor-train"), **kw)
    val = xor_dataset(T, n_val, seeded_generator(seed, "xor-val"), **kw)
    test = xor_dataset(T, n_test, seeded_generator(TEST_SEED, "xor-test"), **kw)
    return TaskData(
        name="xor",
        train=train,
        val=val,
        test=test,
        params={
            "T": T,
            "n_train": n_train,
            "n_val": n_val,
            "n_test": n_test,
            "seed": int(seed),
            "distractors": int(distractors),
            "distinct_inputs": _distinct_inputs(T, distractors),
            "test_seen_in_train": seen_fraction(_rows(train), _rows(test)),
        },
    )


def _rows(data: SequenceDataset) -> Tensor:
    """Whole input of each sequence as one row of bytes: (n, T * d), uint8."""
    return data.x.permute(1, 0, 2).reshape(data.n, -1).to(torch.uint8)


def _distinct_inputs(T: int, distractors: int) -> float:
    """Number of distinct input sequences, 2^(T (1 + distractors)), as a float."""
    return float(2.0 ** (T * (1 + distractors)))
