"""Surrogate-gradient training (SG) and its continuation (SG-SG).

The network is the same K-parallel LIF network the convex path reconstructs
(:class:`cvxsnn.network.ParallelLIFNet`), trained end to end by
backpropagation through time: forward is the Heaviside step of the one LIF
kernel, backward replaces its derivative by a surrogate (sigmoid, slope 5 by
default, the paper's baseline). The optimizer is Adam, the loss cross-entropy
over every supervised step and every head.

The protocol (fixed in ``docs/SG_PROTOCOL.md``, the same for every task and
setting):

1. one initial network per seed (``torch.Generator``), weights
   ``N(0, init_gain^2 / fan_in)``, thresholds 1;
2. for each learning rate of the grid, train a copy of that same network with
   the same batch order; after every epoch evaluate on the validation split and
   keep the state with the best validation accuracy (ties: lower validation
   loss, then the earlier epoch); stop after ``patience`` epochs without
   improvement or after ``epochs`` epochs;
3. select the learning rate whose kept state has the best validation accuracy
   (ties: lower validation loss, then the smaller learning rate).

SG-SG passes a trained network as ``init``: the same protocol runs again from
it for up to ``epochs`` more epochs, with the learning rate re-selected on the
same grid. The starting network itself is a candidate (epoch 0), so SG-SG is
never worse than its checkpoint on validation.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from cvxsnn.network import NetConfig, ParallelLIFNet, config_hash, load_model, save_model
from cvxsnn.tasks.base import SequenceDataset, TaskData

__all__ = [
    "EpochRecord",
    "LRHistory",
    "SGCheckpoint",
    "SGConfig",
    "SGMetrics",
    "SGResult",
    "SGSnapshot",
    "evaluate_sg",
    "head_weights_for",
    "load_checkpoint",
    "progress_path",
    "read_progress",
    "save_checkpoint",
    "selection_key",
    "sg_loss",
    "snapshot_progress",
    "train_sg",
]

SurrogateName = Literal["sigmoid", "atan", "fast_sigmoid"]
DtypeName = Literal["float32", "float64"]
CHECKPOINT_KIND = "cvxsnn-sg-checkpoint"
CHECKPOINT_VERSION = 1
SNAPSHOT_KIND = "cvxsnn-sg-snapshot"
PROGRESS_KIND = "cvxsnn-sg-progress"
SNAPSHOT_VERSION = 1
_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SGConfig:
    """Settings of surrogate-gradient training (defaults = the fixed protocol).

    Attributes
    ----------
    epochs : int
        Maximum number of epochs per learning rate (for SG-SG: more epochs
        on top of the checkpoint).
    batch_size : int
        Sequences per Adam step.
    lrs : tuple of float
        Learning-rate grid; one run per value, the best on validation is kept.
    patience : int or None
        Stop a run after this many epochs without a better validation score;
        None trains all ``epochs``.
    init_gain : float
        Hidden weights start as ``N(0, init_gain^2 / fan_in)`` (thresholds 1).
    surrogate : {"sigmoid", "atan", "fast_sigmoid"}
        Backward-pass surrogate of the spike; overrides the network config's.
    surrogate_scale : float
        Its sharpness (slope of the sigmoid; 5 is the paper's baseline).
    lambda_carry : float
        Weight of a head named ``"carry"`` in the loss (addition:
        ``CE(sum) + lambda_carry * CE(carry)``); other heads weigh 1. Ignored
        when ``head_weights`` is given.
    head_weights : tuple of float, optional
        Explicit loss weight per head, in the task's head order.
    grad_clip : float or None
        Clip the global gradient norm to this value; None disables.
    weight_decay : float
        Adam's L2 weight decay (0 in the protocol).
    theta_min : float or None
        After every step, thresholds are clamped to ``>= theta_min`` so that
        every neuron keeps a positive threshold (needed to normalize a trained
        network to theta = 1 for SG-CVX); None disables.
    seed : int
        Seeds the initial weights and the batch order.
    device : str
        Torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
    dtype : {"float32", "float64"}
        Precision of the parameters and the data during training.
    max_time_s : float or None
        Wall-clock budget per learning rate; a run stops (keeping its best
        state) when it is spent.
    eval_batch_size : int
        Sequences per forward pass when evaluating.
    """

    epochs: int = 200
    batch_size: int = 64
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    patience: int | None = 30
    init_gain: float = 2.0
    surrogate: SurrogateName = "sigmoid"
    surrogate_scale: float = 5.0
    lambda_carry: float = 1.0
    head_weights: tuple[float, ...] | None = None
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0
    theta_min: float | None = 1e-2
    seed: int = 0
    device: str = "cpu"
    dtype: DtypeName = "float32"
    max_time_s: float | None = None
    eval_batch_size: int = 4096

    def __post_init__(self) -> None:
        if isinstance(self.lrs, (list, tuple)):
            object.__setattr__(self, "lrs", tuple(self.lrs))
        if isinstance(self.head_weights, list):
            object.__setattr__(self, "head_weights", tuple(self.head_weights))
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("eval_batch_size", self.eval_batch_size, 1)
        _check_int("seed", self.seed, 0)
        if self.patience is not None:
            _check_int("patience", self.patience, 1, "an int >= 1 or None")
        if not isinstance(self.lrs, tuple) or not self.lrs:
            raise ValueError(
                f"The 'lrs' parameter of SGConfig must be a non-empty tuple of floats > 0; "
                f"got {self.lrs!r}"
            )
        for lr in self.lrs:
            _check_float("lrs", lr, "each a float in (0, inf)", positive=True)
        if len(set(self.lrs)) != len(self.lrs):
            raise ValueError(
                f"The 'lrs' parameter of SGConfig must not repeat a value; got {self.lrs!r}"
            )
        _check_float("init_gain", self.init_gain, "a float in (0, inf)", positive=True)
        _check_float("surrogate_scale", self.surrogate_scale, "a float in (0, inf)", positive=True)
        _check_float("lambda_carry", self.lambda_carry, "a float in [0, inf)")
        _check_float("weight_decay", self.weight_decay, "a float in [0, inf)")
        if self.grad_clip is not None:
            _check_float("grad_clip", self.grad_clip, "a float in (0, inf) or None", positive=True)
        if self.theta_min is not None:
            _check_float("theta_min", self.theta_min, "a float in [0, inf) or None")
        if self.max_time_s is not None:
            _check_float(
                "max_time_s", self.max_time_s, "a float in (0, inf) or None", positive=True
            )
        if self.head_weights is not None:
            if not isinstance(self.head_weights, tuple) or not self.head_weights:
                raise ValueError(
                    "The 'head_weights' parameter of SGConfig must be a non-empty tuple of "
                    f"floats >= 0 or None; got {self.head_weights!r}"
                )
            for w in self.head_weights:
                _check_float("head_weights", w, "each a float in [0, inf)")
            if sum(self.head_weights) <= 0:
                raise ValueError(
                    "The 'head_weights' parameter of SGConfig must hold at least one weight > 0; "
                    f"got {self.head_weights!r}"
                )
        if self.surrogate not in get_args(SurrogateName):
            raise ValueError(
                f"The 'surrogate' parameter of SGConfig must be one of "
                f"{list(get_args(SurrogateName))}; got {self.surrogate!r}"
            )
        if self.dtype not in _DTYPES:
            raise ValueError(
                f"The 'dtype' parameter of SGConfig must be one of {sorted(_DTYPES)}; "
                f"got {self.dtype!r}"
            )
        if not isinstance(self.device, str):
            raise ValueError(
                f"The 'device' parameter of SGConfig must be a device string such as 'cpu' or "
                f"'cuda'; got {self.device!r}"
            )
        try:
            torch.device(self.device)
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"The 'device' parameter of SGConfig must be a device string such as 'cpu' or "
                f"'cuda'; got {self.device!r}"
            ) from err

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["lrs"] = list(self.lrs)
        if self.head_weights is not None:
            data["head_weights"] = list(self.head_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SGConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(
                f"unknown SGConfig keys: {sorted(unknown)}; valid keys: {sorted(names)}"
            )
        return cls(**data)

    def hash(self) -> str:
        """Short stable hash of the config."""
        return config_hash(self.to_dict())


def _check_int(name: str, value: Any, low: int, expected: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(
            f"The '{name}' parameter of SGConfig must be {expected or f'an int >= {low}'}; "
            f"got {value!r}"
        )


def _check_float(name: str, value: Any, expected: str, positive: bool = False) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value > 0 if positive else value >= 0)
    )
    if not ok:
        raise ValueError(f"The '{name}' parameter of SGConfig must be {expected}; got {value!r}")


# --------------------------------------------------------------------------- #
# Results
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class EpochRecord:
    """One epoch of one learning-rate run (epoch 0 = before any update).

    Attributes
    ----------
    epoch : int
    train_loss : float or None
        Mean weighted loss over the epoch's batches (None at epoch 0).
    val_loss : float
        Weighted cross-entropy on the whole validation split.
    val_accuracy : float
        Joint accuracy on validation: share of (sequence, step) pairs whose
        every head is right (plain accuracy for a single head).
    val_head_accuracy : tuple of float
        Accuracy of each head.
    """

    epoch: int
    train_loss: float | None
    val_loss: float
    val_accuracy: float
    val_head_accuracy: tuple[float, ...]


@dataclass(frozen=True)
class LRHistory:
    """Everything one learning rate of the grid did.

    Attributes
    ----------
    lr : float
    records : tuple of EpochRecord
        Epoch 0 (the starting network) and every trained epoch.
    best_epoch : int
        Epoch of the kept state.
    best_val_accuracy, best_val_loss : float
        Validation scores of the kept state.
    epochs_run : int
        Trained epochs (the last record's epoch).
    stop_reason : {"epochs", "patience", "time", "non-finite loss"}
    time_s : float
        Wall time of this run.
    """

    lr: float
    records: tuple[EpochRecord, ...]
    best_epoch: int
    best_val_accuracy: float
    best_val_loss: float
    epochs_run: int
    stop_reason: str
    time_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LRHistory:
        records = tuple(_epoch_record(r) for r in data["records"])
        return cls(**{**data, "records": records})


def _epoch_record(data: dict[str, Any]) -> EpochRecord:
    return EpochRecord(**{**data, "val_head_accuracy": tuple(data["val_head_accuracy"])})


@dataclass(frozen=True)
class SGResult:
    """Outcome of :func:`train_sg`.

    Attributes
    ----------
    net : ParallelLIFNet
        The kept state of the selected learning rate.
    config : SGConfig
    net_config : NetConfig
        The trained network's config (with the SG surrogate).
    selected_lr : float
    best_epoch : int
        Epoch (of this call) of the kept state; 0 means the starting network.
    best_val_accuracy, best_val_loss : float
    epochs_run : int
        Epochs trained by the selected learning rate in this call.
    histories : tuple of LRHistory
        One per learning rate of the grid, in grid order.
    time_s : float
        Wall time of the whole grid.
    prior_epochs : int
        Epochs the starting network had already been trained (0 for SG; the
        checkpoint's total for SG-SG).
    resumed_s : float
        Seconds of this grid's training done by earlier calls, read from the
        snapshot this call resumed (0 otherwise); included in ``time_s``.
    """

    net: ParallelLIFNet
    config: SGConfig
    net_config: NetConfig
    selected_lr: float
    best_epoch: int
    best_val_accuracy: float
    best_val_loss: float
    epochs_run: int
    histories: tuple[LRHistory, ...]
    time_s: float
    prior_epochs: int = 0
    resumed_s: float = 0.0

    @property
    def total_epochs(self) -> int:
        """Epochs behind the kept state, counting those of the starting network."""
        return self.prior_epochs + self.best_epoch

    @property
    def history(self) -> LRHistory:
        """History of the selected learning rate."""
        return next(h for h in self.histories if h.lr == self.selected_lr)


@dataclass(frozen=True)
class SGMetrics:
    """Loss and teacher-forced accuracy at the supervised steps.

    Attributes
    ----------
    loss : float
        Weighted cross-entropy (sum over heads of weight * mean CE).
    accuracy : float
        Share of (sequence, step) pairs with every head right.
    head_accuracy : tuple of float
        Share of right answers per head.
    """

    loss: float
    accuracy: float
    head_accuracy: tuple[float, ...]


# --------------------------------------------------------------------------- #
# Loss and evaluation
# --------------------------------------------------------------------------- #
def head_weights_for(dataset: SequenceDataset, config: SGConfig) -> tuple[float, ...]:
    """Loss weight of each head of ``dataset`` under ``config``.

    ``config.head_weights`` when given (its length must equal the number of
    heads), else 1 per head and ``config.lambda_carry`` for a head named
    ``"carry"``.
    """
    H = len(dataset.head_classes)
    if config.head_weights is not None:
        if len(config.head_weights) != H:
            raise ValueError(
                f"head_weights must hold one weight per head {dataset.head_names}; "
                f"got {len(config.head_weights)} weights"
            )
        return tuple(float(w) for w in config.head_weights)
    weights = tuple(
        float(config.lambda_carry) if name == "carry" else 1.0 for name in dataset.head_names
    )
    if sum(weights) <= 0:
        raise ValueError(
            f"the loss weights of heads {dataset.head_names} are all zero; "
            f"got lambda_carry = {config.lambda_carry}"
        )
    return weights


def sg_loss(
    outputs: Tensor,
    targets: Tensor,
    out_layout: tuple[int, ...],
    weights: tuple[float, ...],
) -> Tensor:
    """Weighted cross-entropy over all supervised steps and heads.

    Parameters
    ----------
    outputs : Tensor of shape (S, B, C)
        Readout at the supervised steps; columns laid out per head.
    targets : Tensor of shape (S, B, H), dtype long
    out_layout : tuple of int
        Columns per head (one per class).
    weights : tuple of float
        Loss weight per head.

    Returns
    -------
    Tensor of shape ()
        ``sum_h weights[h] * mean_{s,b} CE(outputs[s, b, head h], targets[s, b, h])``.
    """
    loss = outputs.new_zeros(())
    start = 0
    for h, cols in enumerate(out_layout):
        logits = outputs[..., start : start + cols].reshape(-1, cols)  # (S*B, c_h)
        start += cols
        if weights[h] == 0:
            continue
        loss = loss + weights[h] * F.cross_entropy(logits, targets[..., h].reshape(-1))
    return loss


def evaluate_sg(
    net: ParallelLIFNet,
    dataset: SequenceDataset,
    weights: tuple[float, ...] | None = None,
    batch_size: int = 4096,
) -> SGMetrics:
    """Loss and teacher-forced accuracy of ``net`` on ``dataset``.

    Parameters
    ----------
    net : ParallelLIFNet
        One column per class in every head.
    dataset : SequenceDataset
        ``x`` of shape (T, n, d), targets of shape (S, n, H).
    weights : tuple of float, optional
        Loss weight per head (1 each when omitted).
    batch_size : int
        Sequences per forward pass.

    Returns
    -------
    SGMetrics
    """
    layout = net.config.out_layout
    H = len(layout)
    weights = weights if weights is not None else (1.0,) * H
    n = dataset.n
    loss_sum = 0.0
    joint = 0
    per_head = torch.zeros(H, dtype=torch.float64)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for start in range(0, n, batch_size):
            sl = slice(start, min(start + batch_size, n))
            x = dataset.x[:, sl].to(device=net.device, dtype=net.dtype)  # (T, B, d)
            y = dataset.targets[:, sl].to(net.device)  # (S, B, H)
            out = net.outputs(x, dataset.steps)  # (S, B, C): net(x, steps), in cache-sized chunks
            B = x.shape[1]
            loss_sum += float(sg_loss(out, y, layout, weights)) * B
            starts = [sum(layout[:h]) for h in range(H)]
            pred = torch.stack(
                [out[..., s : s + c].argmax(-1) for s, c in zip(starts, layout, strict=True)], -1
            )  # (S, B, H)
            right = pred == y
            joint += int(right.all(-1).sum())
            per_head += right.sum(dim=(0, 1)).double().cpu()
    net.train(was_training)
    pairs = n * len(dataset.steps)
    return SGMetrics(
        loss=loss_sum / n,
        accuracy=joint / pairs,
        head_accuracy=tuple(float(a) / pairs for a in per_head),
    )


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #
def _sg_net_config(net_config: NetConfig, config: SGConfig) -> NetConfig:
    return dataclasses.replace(
        net_config, surrogate=config.surrogate, surrogate_scale=float(config.surrogate_scale)
    )


def _arch(cfg: NetConfig) -> dict[str, Any]:
    data = cfg.to_dict()
    for key in ("surrogate", "surrogate_scale", "meta"):
        data.pop(key)
    return data


def _check_compatible(task: TaskData, net_config: NetConfig) -> None:
    train = task.train
    if net_config.d_in != train.d:
        raise ValueError(
            f"net_config.d_in must equal the task's input width d = {train.d}; "
            f"got {net_config.d_in}"
        )
    if tuple(net_config.head_classes) != tuple(train.head_classes):
        raise ValueError(
            f"net_config.head_classes must equal the task's {train.head_classes}; "
            f"got {net_config.head_classes}"
        )
    if tuple(net_config.out_layout) != tuple(net_config.head_classes):
        raise ValueError(
            "SG trains with cross-entropy and needs one readout column per class: "
            f"net_config.out_layout must equal head_classes {net_config.head_classes}; "
            f"got {net_config.out_layout}"
        )
    for name, split in (("val", task.val), ("test", task.test)):
        if split.d != train.d or split.head_classes != train.head_classes:
            raise ValueError(
                f"task.{name} must have d = {train.d} and head_classes {train.head_classes} "
                f"like task.train; got d = {split.d} and {split.head_classes}"
            )
    if task.val.n < 1:
        raise ValueError("task.val must hold at least one sequence for model selection; got 0")


def _better(acc: float, loss: float, best_acc: float, best_loss: float) -> bool:
    """Strictly better validation score: higher accuracy, ties broken by lower loss."""
    if acc != best_acc:
        return acc > best_acc
    return loss < best_loss


def selection_key(val_accuracy: float, val_loss: float, lr: float) -> tuple[float, float, float]:
    """Sort key of the protocol's choice among learning rates (smallest first): higher
    validation accuracy, then lower validation loss, then the smaller rate."""
    return (-val_accuracy, val_loss, lr)


def _lr_key(hist: LRHistory) -> tuple[float, float, float]:
    """Sort key of a finished learning-rate run (:func:`selection_key` of its best)."""
    return selection_key(hist.best_val_accuracy, hist.best_val_loss, hist.lr)


def _initial_net(
    net_config: NetConfig, config: SGConfig, init: ParallelLIFNet | None
) -> ParallelLIFNet:
    device, dtype = torch.device(config.device), config.torch_dtype
    cfg = _sg_net_config(net_config, config)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    net = ParallelLIFNet(cfg, device=device, dtype=dtype, generator=gen)
    if init is None:
        net.reset_parameters(
            gain=config.init_gain, generator=torch.Generator(device="cpu").manual_seed(config.seed)
        )
    else:
        net.load_state_dict(init.state_dict())
    return net


def _train_one_lr(
    start_net: ParallelLIFNet,
    train: SequenceDataset,
    val: SequenceDataset,
    lr: float,
    config: SGConfig,
    weights: tuple[float, ...],
    progress: bool,
    desc: str,
    resume: dict[str, Any] | None = None,
    on_epoch: Callable[[Callable[[], dict[str, Any]]], None] | None = None,
    report: Callable[[EpochRecord, tuple[float, float, int]], None] | None = None,
) -> tuple[ParallelLIFNet, LRHistory]:
    """Train one learning rate of the grid from ``start_net``.

    ``resume`` is the state an earlier call handed to ``on_epoch`` (network,
    Adam, batch-order generator, epoch records, kept state, elapsed time):
    training continues after its epoch exactly as if it had never stopped.
    ``on_epoch`` is called after every epoch that does not end the run, with
    a function returning that state. ``report`` is called with the latest
    epoch record and the best (accuracy, loss, epoch) so far once training
    starts or resumes and after every epoch.
    """
    t0 = time.perf_counter()
    net = copy.deepcopy(start_net)
    net.train()
    layout = net.config.out_layout
    x_all = train.x.to(device=net.device, dtype=net.dtype)  # (T, n, d)
    y_all = train.targets.to(net.device)  # (S, n, H)
    steps = train.steps
    n = train.n
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    order_gen = torch.Generator(device="cpu").manual_seed(config.seed + 1)

    if resume is None:
        m0 = evaluate_sg(net, val, weights, config.eval_batch_size)
        records = [EpochRecord(0, None, m0.loss, m0.accuracy, m0.head_accuracy)]
        best = (m0.accuracy, m0.loss, 0)
        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    else:
        net.load_state_dict(resume["net"])
        opt.load_state_dict(resume["opt"])
        order_gen.set_state(resume["order_gen"].cpu())
        records = [_epoch_record(r) for r in resume["records"]]
        acc, loss_, ep = resume["best"]
        best = (float(acc), float(loss_), int(ep))
        best_state = resume["best_state"]
        t0 -= float(resume["elapsed_s"])

    def state() -> dict[str, Any]:
        return {
            "net": net.state_dict(),
            "opt": opt.state_dict(),
            "order_gen": order_gen.get_state(),
            "records": [dataclasses.asdict(r) for r in records],
            "best": list(best),
            "best_state": best_state,
            "epoch": records[-1].epoch,
            "elapsed_s": time.perf_counter() - t0,
        }

    stop_reason = "epochs"
    if report is not None:
        report(records[-1], best)
    bar = _progress_bar(config.epochs, desc, progress, initial=records[-1].epoch)
    try:
        for epoch in range(records[-1].epoch + 1, config.epochs + 1):
            perm = torch.randperm(n, generator=order_gen).to(net.device)
            total, count, finite = 0.0, 0, True
            for start in range(0, n, config.batch_size):
                idx = perm[start : start + config.batch_size]
                out = net(x_all[:, idx], steps)  # (S, B, C)
                loss = sg_loss(out, y_all[:, idx], layout, weights)
                if not torch.isfinite(loss):
                    finite = False
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                opt.step()
                if config.theta_min is not None:
                    with torch.no_grad():
                        for th in net.thetas:
                            th.clamp_(min=config.theta_min)
                total += float(loss.detach()) * idx.numel()
                count += idx.numel()
            if not finite:
                stop_reason = "non-finite loss"
                break
            m = evaluate_sg(net, val, weights, config.eval_batch_size)
            records.append(EpochRecord(epoch, total / count, m.loss, m.accuracy, m.head_accuracy))
            if _better(m.accuracy, m.loss, best[0], best[1]):
                best = (m.accuracy, m.loss, epoch)
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            bar.update(1)
            bar.set_postfix(
                loss=f"{total / count:.4f}", val_acc=f"{m.accuracy:.4f}", best=f"{best[0]:.4f}"
            )
            if report is not None:
                report(records[-1], best)
            if config.patience is not None and epoch - best[2] >= config.patience:
                stop_reason = "patience"
                break
            if config.max_time_s is not None and time.perf_counter() - t0 >= config.max_time_s:
                stop_reason = "time"
                break
            if on_epoch is not None and epoch < config.epochs:
                on_epoch(state)
    finally:
        bar.close()
    net.load_state_dict(best_state)
    net.eval()
    history = LRHistory(
        lr=float(lr),
        records=tuple(records),
        best_epoch=best[2],
        best_val_accuracy=best[0],
        best_val_loss=best[1],
        epochs_run=records[-1].epoch,
        stop_reason=stop_reason,
        time_s=time.perf_counter() - t0,
    )
    return net, history


def _progress_bar(total: int, desc: str, enabled: bool, initial: int = 0) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        file=sys.stderr,
        disable=not enabled,
        leave=False,
    )


def check_snapshot_interval(value: Any, name: str) -> float:
    """``value`` as a float when it is a finite number >= 0 (seconds between snapshots)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


class SGSnapshot:
    """A file holding the training state of one :func:`train_sg` call, so that an
    interrupted call resumes where it stopped.

    SG cells of the larger settings run for hours (MNIST-SEQ at T = 56: about
    seven hours on one core); a kill, a preempted cluster job or a job's time
    limit would otherwise lose all of it. :func:`train_sg` given a snapshot
    writes the state of the grid to it: every finished learning rate (its
    history, and the kept state of the best so far), and for the learning rate
    in progress the network, Adam's moments, the batch-order generator, the
    epoch records and the kept state. A later call with the same arguments
    reads it and continues after the last written epoch; the result is
    identical, bit for bit, to that of an uninterrupted call on the same
    device and thread count (timings aside). A snapshot written by another
    run (other data, config, architecture, initial network or device) is
    refused, never mixed in.

    Parameters
    ----------
    path : str or Path
        The file (its folder is created). Written atomically: a temporary file
        in the same folder, fsynced, then renamed over the old one.
    every_s : float
        Write the state of a learning rate in progress at the end of an epoch
        at most this often (seconds); the end of each learning rate is always
        written. 0 writes after every epoch.
    """

    def __init__(self, path: str | Path, every_s: float = 120.0) -> None:
        self.path = Path(path)
        self.every_s = check_snapshot_interval(every_s, "every_s")
        self._last = time.perf_counter()

    def read(self, fingerprint: str, device: torch.device) -> dict[str, Any] | None:
        """The state written for the run ``fingerprint``, or None when there is no file."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as err:
            raise ValueError(
                f"SG snapshot {self.path} cannot be read ({type(err).__name__}: {err}); "
                "delete it to train from the start"
            ) from err
        if not isinstance(state, dict) or state.get("kind") != SNAPSHOT_KIND:
            raise ValueError(f"{self.path} is not an SG snapshot; pass another snapshot path")
        if state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(
                f"SG snapshot {self.path} has version {state.get('version')}; this cvxsnn reads "
                f"version {SNAPSHOT_VERSION}: delete it to train from the start"
            )
        if state.get("fingerprint") != fingerprint:
            raise ValueError(
                f"SG snapshot {self.path} was written by another run (fingerprint "
                f"{state.get('fingerprint')}, this run {fingerprint}: other data, settings, "
                "initial network or device); delete it or pass another snapshot path"
            )
        return state

    def write(self, state: dict[str, Any]) -> None:
        """Replace the file by ``state`` atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._last = time.perf_counter()

    def due(self) -> bool:
        """Whether ``every_s`` has passed since the last write."""
        return time.perf_counter() - self._last >= self.every_s

    @property
    def progress_path(self) -> Path:
        """The progress file beside the snapshot (:func:`progress_path`)."""
        return progress_path(self.path)

    def write_progress(self, info: dict[str, Any]) -> None:
        """Replace the progress file by ``info`` (JSON) atomically."""
        path = self.progress_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"kind": PROGRESS_KIND, **info}, sort_keys=True))
        os.replace(tmp, path)


def progress_path(snapshot: str | Path) -> Path:
    """Where a snapshot's progress summary is kept: ``sg.pt`` -> ``sg.progress.json``.

    :func:`train_sg` given a snapshot rewrites this small JSON file once training starts
    or resumes and after every epoch (the snapshot itself is written at most every
    ``every_s`` seconds): the learning rate in progress (``lr_index`` of ``n_lrs``,
    ``lr``), its ``epoch`` of ``max_epochs``, the epoch's ``val_accuracy``, the rate's
    ``best_val_accuracy`` and ``best_epoch``, the best over the grid so far
    (``grid_best_val_accuracy``), ``elapsed_s`` of training (resumed stretches
    included), ``done`` (the whole grid finished) and ``updated`` (Unix time). A sweep
    reads it to show the cells it is running (:func:`cvxsnn.experiments.reproduce`).
    """
    p = Path(snapshot)
    return p.with_name(f"{p.stem}.progress.json")


def snapshot_progress(path: str | Path) -> dict[str, Any] | None:
    """A progress summary (as in :func:`progress_path`) read from a snapshot itself, or
    None when ``path`` is not a readable snapshot.

    For snapshots without a progress file beside them. The snapshot is written at most
    every ``every_s`` seconds, so this can lag the training; it is the state a resumed
    run starts from. It does not hold the grid's size or the epoch limit (``n_lrs`` and
    ``max_epochs`` are None); ``rate_ended`` says that it was written at the end of a
    learning rate (a resumed run starts the next rate at its epoch 0).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(state, dict) or state.get("kind") != SNAPSHOT_KIND:
        return None
    try:
        finished = [float(h["best_val_accuracy"]) for h in state["finished"]]
        cur = state["current"]
        rate_ended = cur is None
        if cur is not None:
            acc, _, best_epoch = cur["best"]
            where = {"lr_index": int(cur["lr_index"]), "epoch": int(cur["epoch"])}
            where.update(best_val_accuracy=float(acc), best_epoch=int(best_epoch))
        else:
            last = state["finished"][-1]
            where = {"lr_index": len(finished) - 1, "epoch": int(last["epochs_run"])}
            where.update(best_val_accuracy=finished[-1], best_epoch=int(last["best_epoch"]))
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return {
        "kind": PROGRESS_KIND,
        **where,
        "n_lrs": None,
        "max_epochs": None,
        "grid_best_val_accuracy": max([where["best_val_accuracy"], *finished]),
        "elapsed_s": float(state["elapsed_s"]),
        "done": False,
        "rate_ended": rate_ended,
        "updated": Path(path).stat().st_mtime,
    }


def read_progress(path: str | Path) -> dict[str, Any] | None:
    """The progress summary in ``path`` (:func:`progress_path`), or None when the file is
    missing or is not one (never raises: a reader polls it while training rewrites it)."""
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("kind") == PROGRESS_KIND else None


def _run_fingerprint(
    config: SGConfig,
    start_net: ParallelLIFNet,
    train: SequenceDataset,
    val: SequenceDataset,
    prior_epochs: int,
) -> str:
    """Hash of everything that determines a :func:`train_sg` call's result."""
    h = hashlib.sha256()
    meta = {
        "sg_config": config.to_dict(),
        "net_config": start_net.config.to_dict(),
        "prior_epochs": prior_epochs,
        "steps": [list(train.steps), list(val.steps)],
    }
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    state = start_net.state_dict()
    for t in (*(state[k] for k in sorted(state)), train.x, train.targets, val.x, val.targets):
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def train_sg(
    task: TaskData,
    net_config: NetConfig | None,
    config: SGConfig,
    init: ParallelLIFNet | None = None,
    progress: bool = True,
    prior_epochs: int = 0,
    snapshot: str | Path | SGSnapshot | None = None,
) -> SGResult:
    """Train the K-parallel LIF network by surrogate gradients (SG), or continue one (SG-SG).

    Parameters
    ----------
    task : TaskData
        ``task.train`` is fitted, ``task.val`` selects the epoch and the
        learning rate; ``task.test`` is never touched. Inputs ``x`` of shape
        (T, n, d); targets of shape (S, n, H) at ``steps``.
    net_config : NetConfig or None
        Architecture; needs ``out_layout == head_classes`` (one column per
        class), ``d_in = d`` and the task's ``head_classes``. May be None when
        ``init`` is given (its config is used). ``surrogate`` and
        ``surrogate_scale`` are replaced by the SG config's.
    config : SGConfig
        Protocol settings.
    init : ParallelLIFNet, optional
        Start from this network instead of a fresh initialization (SG-SG).
        It is copied, never modified. Its architecture must match
        ``net_config`` (up to the surrogate).
    progress : bool
        Show a tqdm progress bar on stderr.
    prior_epochs : int
        Epochs already behind ``init`` (recorded in the result).
    snapshot : str, Path or SGSnapshot, optional
        Keep the training state in this file (:class:`SGSnapshot`; a path
        writes every 120 s and at the end of each learning rate). When the
        file exists, training resumes from it, with a result identical to an
        uninterrupted call's; once the grid is finished the file holds the
        whole result, and a further call returns it without training. The
        caller deletes the file when it no longer needs it.

    Returns
    -------
    SGResult
        The selected network (best validation state of the best learning rate)
        and the history of every learning rate.

    Notes
    -----
    Loss of a batch, with ``o`` the readout (S, B, C) at the supervised steps::

        sum_h w_h * mean_{s, b} CE(o[s, b, cols(h)], y[s, b, h])

    Per epoch the training set is reshuffled (a seeded ``torch.Generator``,
    the same order for every learning rate); after each epoch the validation
    split is evaluated. Selection of an epoch and of a learning rate uses
    the joint validation accuracy, ties broken by lower validation loss.
    """
    if not isinstance(config, SGConfig):
        raise TypeError(f"config must be an SGConfig; got {type(config).__name__}")
    if not isinstance(task, TaskData):
        raise TypeError(f"task must be a TaskData; got {type(task).__name__}")
    if init is not None and not isinstance(init, ParallelLIFNet):
        raise TypeError(f"init must be a ParallelLIFNet or None; got {type(init).__name__}")
    if net_config is None:
        if init is None:
            raise ValueError("net_config is required when init is None; got both None")
        net_config = init.config
    if init is not None and _arch(init.config) != _arch(net_config):
        raise ValueError(
            "init's architecture must match net_config (apart from the surrogate); "
            f"got {_arch(init.config)} and {_arch(net_config)}"
        )
    if isinstance(prior_epochs, bool) or not isinstance(prior_epochs, int) or prior_epochs < 0:
        raise ValueError(f"prior_epochs must be an int >= 0; got {prior_epochs!r}")
    if snapshot is not None and not isinstance(snapshot, (str, Path, SGSnapshot)):
        raise TypeError(
            f"snapshot must be a path, an SGSnapshot or None; got {type(snapshot).__name__}"
        )
    _check_compatible(task, net_config)
    weights = head_weights_for(task.train, config)

    snap = SGSnapshot(snapshot) if isinstance(snapshot, (str, Path)) else snapshot

    t0 = time.perf_counter()
    start_net = _initial_net(net_config, config, init)
    device, dtype = start_net.device, start_net.dtype
    train = task.train.to(device=device, dtype=dtype)
    val = task.val.to(device=device, dtype=dtype)

    saved: dict[str, Any] | None = None
    fingerprint = ""
    if snap is not None:
        fingerprint = _run_fingerprint(config, start_net, train, val, prior_epochs)
        saved = snap.read(fingerprint, device)
        if saved is not None:
            t0 -= float(saved["elapsed_s"])
            if progress:
                cur = saved["current"]
                where = (
                    f"learning rate {cur['lr_index'] + 1}/{len(config.lrs)}, epoch {cur['epoch']}"
                    if cur is not None
                    else f"{len(saved['finished'])}/{len(config.lrs)} learning rates finished"
                )
                print(
                    f"[cvxsnn] SG resumes from snapshot {snap.path} ({where})",
                    file=sys.stderr,
                    flush=True,
                )
    finished = [LRHistory.from_dict(h) for h in saved["finished"]] if saved else []

    best_net, best_hist, best_index = None, None, None
    histories: list[LRHistory] = []

    def grid_state(current: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "kind": SNAPSHOT_KIND,
            "version": SNAPSHOT_VERSION,
            "fingerprint": fingerprint,
            "finished": [h.to_dict() for h in histories],
            "best_index": best_index,
            "best_net": best_net.state_dict() if best_net is not None else None,
            "current": current,
            "elapsed_s": time.perf_counter() - t0,
        }

    def write_snapshot(i: int, lr_state: Callable[[], dict[str, Any]]) -> None:
        assert snap is not None
        if snap.due():
            snap.write(grid_state({"lr_index": i, **lr_state()}))

    def write_summary(
        i: int, epoch: int, val_acc: float, best_acc: float, best_epoch: int, done: bool
    ) -> None:
        assert snap is not None
        snap.write_progress(
            {
                "lr_index": i,
                "n_lrs": len(config.lrs),
                "lr": float(config.lrs[i]),
                "epoch": epoch,
                "max_epochs": config.epochs,
                "val_accuracy": val_acc,
                "best_val_accuracy": best_acc,
                "best_epoch": best_epoch,
                "grid_best_val_accuracy": max(
                    [best_acc, *(h.best_val_accuracy for h in histories)]
                ),
                "elapsed_s": round(time.perf_counter() - t0, 3),
                "done": done,
                "updated": time.time(),
            }
        )

    def report(i: int, record: EpochRecord, best: tuple[float, float, int]) -> None:
        write_summary(i, record.epoch, record.val_accuracy, best[0], best[2], False)

    for i, lr in enumerate(config.lrs):
        if i < len(finished):  # finished before the snapshot was written
            hist = finished[i]
            if saved is not None and i == saved["best_index"]:
                net = copy.deepcopy(start_net)
                net.load_state_dict(saved["best_net"])
                net.eval()
            else:
                net = None
        else:
            desc = f"SG lr={lr:g} ({i + 1}/{len(config.lrs)})"
            current = saved["current"] if saved is not None else None
            resume = current if current is not None and current["lr_index"] == i else None
            on_epoch = functools.partial(write_snapshot, i) if snap is not None else None
            on_report = functools.partial(report, i) if snap is not None else None
            net, hist = _train_one_lr(
                start_net,
                train,
                val,
                lr,
                config,
                weights,
                progress,
                desc,
                resume,
                on_epoch,
                on_report,
            )
        histories.append(hist)
        if best_hist is None or _lr_key(hist) < _lr_key(best_hist):
            best_net, best_hist, best_index = net, hist, i
        if snap is not None and i >= len(finished):
            snap.write(grid_state(None))
    assert best_net is not None and best_hist is not None
    if snap is not None:
        last = histories[-1]
        write_summary(
            len(histories) - 1,
            last.epochs_run,
            last.records[-1].val_accuracy,
            last.best_val_accuracy,
            last.best_epoch,
            True,
        )
    return SGResult(
        net=best_net,
        config=config,
        net_config=best_net.config,
        selected_lr=best_hist.lr,
        best_epoch=best_hist.best_epoch,
        best_val_accuracy=best_hist.best_val_accuracy,
        best_val_loss=best_hist.best_val_loss,
        epochs_run=best_hist.epochs_run,
        histories=tuple(histories),
        time_s=time.perf_counter() - t0,
        prior_epochs=prior_epochs,
        resumed_s=float(saved["elapsed_s"]) if saved is not None else 0.0,
    )


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SGCheckpoint:
    """What :func:`load_checkpoint` returns.

    Attributes
    ----------
    net : ParallelLIFNet
    config : SGConfig or None
        The SG config the network was trained with (None for a bare network).
    selected_lr : float or None
    total_epochs : int
        Epochs behind the saved state (pass as ``prior_epochs`` to continue).
    histories : tuple of LRHistory
    extra : dict
        Any further JSON stored by the caller.
    """

    net: ParallelLIFNet
    config: SGConfig | None
    selected_lr: float | None
    total_epochs: int
    histories: tuple[LRHistory, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    result_or_net: SGResult | ParallelLIFNet,
    path: str | Path,
    config: SGConfig | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write an SG result (or a bare network) with what SG-SG needs to continue.

    The file is :func:`cvxsnn.network.save_model`'s: a state_dict plus a
    versioned JSON header, read back with ``weights_only=True``. The JSON
    ``extra`` holds the SG config, the selected learning rate, the epochs
    behind the state and the per-learning-rate histories. Adam's moment
    estimates are not stored: SG-SG starts a fresh Adam on the saved weights.

    Parameters
    ----------
    result_or_net : SGResult or ParallelLIFNet
    path : str or Path
    config : SGConfig, optional
        For a bare network, the config it was trained with.
    extra : dict, optional
        JSON-serialisable extras stored under ``extra["user"]``.

    Returns
    -------
    Path
    """
    if isinstance(result_or_net, SGResult):
        res = result_or_net
        net = res.net
        config = config or res.config
        info: dict[str, Any] = {
            "selected_lr": res.selected_lr,
            "total_epochs": res.total_epochs,
            "histories": [h.to_dict() for h in res.histories],
        }
    elif isinstance(result_or_net, ParallelLIFNet):
        net = result_or_net
        info = {"selected_lr": None, "total_epochs": 0, "histories": []}
    else:
        raise TypeError(
            f"result_or_net must be an SGResult or a ParallelLIFNet; got "
            f"{type(result_or_net).__name__}"
        )
    header = {
        "kind": CHECKPOINT_KIND,
        "version": CHECKPOINT_VERSION,
        "sg_config": config.to_dict() if config is not None else None,
        **info,
        "user": extra or {},
    }
    return save_model(net, path, extra=header)


def load_checkpoint(
    path: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SGCheckpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or Path
    device, dtype
        Where to put the network (CPU and the stored dtype by default).

    Returns
    -------
    SGCheckpoint
    """
    net, header = load_model(path, device=device, dtype=dtype)
    if header.get("kind") != CHECKPOINT_KIND:
        raise ValueError(
            f"{path} is a model file but not an SG checkpoint (kind {header.get('kind')!r})"
        )
    if header.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has SG checkpoint version {header.get('version')}; this cvxsnn reads "
            f"version {CHECKPOINT_VERSION}"
        )
    cfg = header.get("sg_config")
    return SGCheckpoint(
        net=net,
        config=SGConfig.from_dict(cfg) if cfg is not None else None,
        selected_lr=header.get("selected_lr"),
        total_epochs=int(header.get("total_epochs", 0)),
        histories=tuple(LRHistory.from_dict(h) for h in header.get("histories", [])),
        extra=header.get("user", {}),
    )
