"""Evaluation of a trained network on a task's splits.

Classification tasks (``xor``, ``mnist-seq``, ``custom``) report the accuracy
of every head over all supervised (step, sequence) pairs, beside its chance
level 1/C and the share of the most frequent class. ``addition`` is evaluated
autoregressively (the predicted carry is fed back, see
:func:`cvxsnn.tasks.addition.evaluate_addition`) and also with the true carry
fed (teacher-forced); the test split adds every out-of-distribution length.
All evaluation is batched and runs without gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cvxsnn.tasks.addition import evaluate_addition
from cvxsnn.tasks.base import SequenceDataset, TaskData, check_int

__all__ = [
    "classification_metrics",
    "evaluate",
    "evaluate_all",
    "evaluate_classification",
    "get_split",
]


def get_split(task: TaskData, split: str) -> SequenceDataset:
    """The dataset named ``split``: ``train``, ``val``, ``test`` or a key of ``task.extra``."""
    named = {"train": task.train, "val": task.val, "test": task.test, **task.extra}
    if split not in named:
        raise ValueError(
            f"unknown split {split!r} of task {task.name!r}; valid splits are {list(named)}"
        )
    return named[split]


def _check_heads(model: Any, data: SequenceDataset) -> None:
    head_classes = getattr(model.config, "head_classes", None)
    if head_classes is not None and tuple(head_classes) != data.head_classes:
        raise ValueError(
            f"model heads must match the data's: data has head_classes {data.head_classes} "
            f"({', '.join(data.head_names)}); model has {tuple(head_classes)}"
        )


@torch.no_grad()
def evaluate_classification(
    model: Any, data: SequenceDataset, batch_size: int = 4096
) -> dict[str, float]:
    """Accuracy of every head at the supervised steps.

    Parameters
    ----------
    model
        Anything with ``predict(x, steps) -> (S, B, H)`` long labels and
        ``config.head_classes``, such as :class:`cvxsnn.network.ParallelLIFNet`.
    data : SequenceDataset
    batch_size : int
        Sequences per forward pass.

    Returns
    -------
    dict of str to float
        One head: ``acc``, ``chance`` (1/C) and ``majority`` (share of the most
        frequent target class). Several heads: ``acc_<head>``,
        ``chance_<head>``, ``majority_<head>`` each, and ``acc`` = share of
        (step, sequence) pairs with every head right. Always ``n``.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    _check_heads(model, data)
    if data.n == 0:
        raise ValueError("data must hold at least one sequence; got n = 0")
    preds = []
    for start in range(0, data.n, batch_size):
        x = data.x[:, start : start + batch_size]  # (T, B, d)
        preds.append(model.predict(x, data.steps).cpu())  # (S, B, H)
    return classification_metrics(torch.cat(preds, dim=1), data)


def classification_metrics(preds: Tensor, data: SequenceDataset) -> dict[str, float]:
    """:func:`evaluate_classification`'s metrics from predicted labels.

    Parameters
    ----------
    preds : Tensor of shape (S, n, H), long
        Labels of every head at the supervised steps (``decode_outputs`` of a
        model's outputs).
    data : SequenceDataset
    """
    if tuple(preds.shape) != tuple(data.targets.shape):
        raise ValueError(
            f"preds must have the targets' shape {tuple(data.targets.shape)}; "
            f"got {tuple(preds.shape)}"
        )
    ok = preds.cpu() == data.targets.cpu()  # (S, n, H)
    result: dict[str, float] = {"n": float(data.n)}
    single = len(data.head_classes) == 1
    for h, (name, classes) in enumerate(zip(data.head_names, data.head_classes, strict=True)):
        suffix = "" if single else f"_{name}"
        counts = torch.bincount(data.targets[..., h].reshape(-1).cpu(), minlength=classes)
        result[f"acc{suffix}"] = ok[..., h].double().mean().item()
        result[f"chance{suffix}"] = 1.0 / classes
        result[f"majority{suffix}"] = counts.max().item() / counts.sum().item()
    if not single:
        result["acc"] = ok.all(dim=-1).double().mean().item()
    return result


def _addition(model: Any, task: TaskData, split: str, batch_size: int | None) -> dict[str, float]:
    base = int(task.params.get("base", task.train.head_classes[0]))
    sets = {"": get_split(task, split)}
    if split == "test":
        sets.update({f"{key}/": data for key, data in task.extra.items()})
    result: dict[str, float] = {}
    for prefix, data in sets.items():
        _check_heads(model, data)
        for mode, forced in (("", False), ("tf_", True)):
            metrics = evaluate_addition(
                model, data, base, teacher_forced=forced, batch_size=batch_size
            )
            result.update({f"{prefix}{mode}{key}": value for key, value in metrics.items()})
    result["acc"] = result["joint_token_acc"]
    return result


def evaluate(
    model: Any, task: TaskData, split: str, batch_size: int | None = None
) -> dict[str, float]:
    """Metrics of ``model`` on one split of ``task``.

    Parameters
    ----------
    model : ParallelLIFNet
        (or anything with the same ``predict`` / ``init_state`` / ``step``).
    task : TaskData
    split : str
        ``train``, ``val``, ``test`` or a key of ``task.extra``.
    batch_size : int, optional
        Sequences per batch: 4096 for classification (``predict`` chunks further
        itself); for ``addition``, which steps through time, cache-sized batches by
        default (see :func:`~cvxsnn.tasks.addition.evaluate_addition`).

    Returns
    -------
    dict of str to float
        Classification tasks: see :func:`evaluate_classification`.
        ``addition``: the autoregressive metrics of
        :func:`~cvxsnn.tasks.addition.evaluate_addition` under their own names
        (``sum_digit_acc``, ``joint_token_acc``, ``sequential_acc``, ... each
        with ``*_chance``), the teacher-forced ones prefixed ``tf_``, and
        ``acc`` = autoregressive joint-token accuracy (the metric the paper's
        "token-wise" numbers most likely are). For ``split="test"`` every OOD
        set adds the same keys prefixed ``"<name>/"`` (``ood_10x/sum_digit_acc``,
        ``ood_10x/tf_sum_digit_acc``, ...). An empty split gives ``{"n": 0.0}``.
    """
    data = get_split(task, split)
    if data.n == 0:
        return {"n": 0.0}
    if task.name == "addition":
        return _addition(model, task, split, batch_size)
    return evaluate_classification(model, data, 4096 if batch_size is None else batch_size)


def evaluate_all(
    model: Any, task: TaskData, batch_size: int | None = None
) -> dict[str, dict[str, float]]:
    """:func:`evaluate` on each non-empty split among ``train``, ``val`` and ``test``."""
    splits = [s for s in ("train", "val", "test") if get_split(task, s).n > 0]
    return {split: evaluate(model, task, split, batch_size) for split in splits}
