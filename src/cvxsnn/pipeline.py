"""One training run end to end: task -> witnesses -> dictionary -> solve -> reconstruct -> evaluate.

:func:`train` runs one of the four methods of the paper (SPEC section 3) and
returns a result record with everything SPEC section 6 asks for. The CLI's
``cvxsnn train`` is a thin wrapper over it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from cvxsnn.network import NetConfig, ParallelLIFNet, config_hash, decode_outputs, load_model
from cvxsnn.records import StageTimer, environment, peak_memory_mb, to_jsonable
from cvxsnn.tasks.base import SequenceDataset, TaskData

__all__ = [
    "LOSSES",
    "METHODS",
    "PENALTIES",
    "TASKS",
    "WITNESS_SCHEMES",
    "ConvexFit",
    "RunResult",
    "TrainConfig",
    "encode_targets",
    "fit_convex",
    "predict_file",
    "sweep",
    "train",
]

TaskName = Literal["xor", "addition", "mnist-seq", "custom"]
MethodName = Literal["sg", "sg-sg", "cvx", "sg-cvx", "cvx-cg", "sg-cvx-cg"]
CGPricerName = Literal["random", "ascent"]
LossName = Literal["squared", "logistic", "softmax"]
PenaltyName = Literal["l1", "group_l2"]
WitnessScheme = Literal["gaussian", "calibrated"]
TASKS: tuple[str, ...] = get_args(TaskName)
METHODS: tuple[str, ...] = get_args(MethodName)
LOSSES: tuple[str, ...] = get_args(LossName)
PENALTIES: tuple[str, ...] = get_args(PenaltyName)
WITNESS_SCHEMES: tuple[str, ...] = get_args(WitnessScheme)
CG_PRICERS: tuple[str, ...] = get_args(CGPricerName)
#: TrainConfig fields added after results were first recorded: they enter a run's hash only
#: when set away from their defaults, so the hashes of earlier runs stay valid.
LATE_FIELDS: tuple[str, ...] = ("cg_rounds", "cg_atoms", "cg_pricer", "cg_proposals")
DEFAULT_STEPS = {"xor": 6, "addition": 6, "mnist-seq": 28, "custom": None}
RECORD_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one run (its hash identifies the run's settings).

    Attributes
    ----------
    task, steps, n_train, n_val, n_test, base, lambda_carry, data_dir, data
        The task (SPEC section 2). ``steps`` is T (addition: digits + 1);
        None picks the task's default (xor 6, addition 6, mnist-seq 28).
    method : {"sg", "sg-sg", "cvx", "sg-cvx", "cvx-cg", "sg-cvx-cg"}
        ``*-cg``: CVX / SG-CVX followed by column generation at the rho the
        path selected (``cvxsnn.colgen``).
    depth, branches, width, beta
        L (hidden layers + readout), K, m, the LIF leak.
    loss, penalty, rho, beta_reg, n_rhos, rho_min_ratio, tol
        The convex program (SPEC section 4). With neither ``rho`` nor
        ``beta_reg`` given, a path of ``n_rhos`` values from rho_max down to
        ``rho_min_ratio * rho_max`` is solved with warm starts and the value
        best on validation is kept. ``beta_reg`` gives rho = beta_reg / sqrt(m).
    witnesses, sigma, perturb_copies, perturb_scale
        Witness sampling (CVX) and SG-witness perturbation (SG-CVX).
    epochs, sg_checkpoint
        SG epochs (SG-SG: as many more); an SG model to continue or to take
        witnesses from (trained in the run when omitted).
    cg_rounds, cg_atoms, cg_pricer, cg_proposals
        Column generation (``*-cg`` methods): pricing rounds at most, atoms
        added per round at most, the search (``"random"``: random proposals,
        threshold sweeps and local perturbation; ``"ascent"``: that, then
        surrogate-gradient ascent from its best branches) and random
        proposals per round.
    seed, device, threads
        The seed fixes the training subsample, witnesses and SG init. ``threads``
        pins torch's threads and the BLAS/OpenMP pools of numpy and scipy for the
        run (None: left as they are).
    """

    task: TaskName = "xor"
    steps: int | None = None
    n_train: int = 2000
    n_val: int = 500
    n_test: int = 1000
    base: int = 3
    lambda_carry: float = 1.0
    data_dir: str | None = None
    data: str | None = None
    method: MethodName = "cvx"
    depth: int = 3
    branches: int = 16
    width: int = 32
    beta: float = 0.99
    loss: LossName = "squared"
    penalty: PenaltyName = "l1"
    rho: float | None = None
    beta_reg: float | None = None
    n_rhos: int = 12
    rho_min_ratio: float = 1e-3
    path_patience: int | None = 3
    tol: float = 1e-6
    witnesses: WitnessScheme = "gaussian"
    sigma: float = 1.0
    perturb_copies: int = 0
    perturb_scale: float = 0.1
    epochs: int | None = None
    sg_checkpoint: str | None = None
    cg_rounds: int = 10
    cg_atoms: int = 32
    cg_pricer: CGPricerName = "ascent"
    cg_proposals: int = 64
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        for name, valid in (
            ("task", TASKS),
            ("method", METHODS),
            ("loss", LOSSES),
            ("penalty", PENALTIES),
            ("witnesses", WITNESS_SCHEMES),
            ("cg_pricer", CG_PRICERS),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"{name} must be one of {list(valid)}; got {getattr(self, name)!r}"
                )
        if self.depth < 2:
            raise ValueError(
                f"depth (L) must be >= 2 (one hidden LIF layer + readout); got {self.depth}"
            )
        for name in (
            "branches",
            "width",
            "n_train",
            "n_val",
            "n_test",
            "n_rhos",
            "cg_atoms",
            "cg_proposals",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if int(self.cg_rounds) < 0:
            raise ValueError(f"cg_rounds must be >= 0; got {self.cg_rounds}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps (T) must be >= 1; got {self.steps}")
        if self.task == "addition" and self.steps is not None and self.steps < 2:
            raise ValueError(f"steps (T = digits + 1) must be >= 2 for addition; got {self.steps}")
        if self.task == "custom" and not self.data:
            raise ValueError("data must name a FILE.npz when task is 'custom'")
        if self.base not in (2, 3, 5):
            raise ValueError(f"base must be one of [2, 3, 5]; got {self.base}")
        for name in ("rho", "beta_reg"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number > 0; got {v}")
        if self.rho is not None and self.beta_reg is not None:
            raise ValueError("give at most one of rho and beta_reg")
        if not 0 < self.rho_min_ratio < 1:
            raise ValueError(f"rho_min_ratio must lie in (0, 1); got {self.rho_min_ratio}")
        if not 0 < self.tol < 1:
            raise ValueError(f"tol must lie in (0, 1); got {self.tol}")
        if not 0 <= self.beta <= 1:
            raise ValueError(f"beta must lie in [0, 1]; got {self.beta}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0; got {self.sigma}")
        if self.lambda_carry < 0:
            raise ValueError(f"lambda_carry must be >= 0; got {self.lambda_carry}")
        try:
            torch.device(self.device)
        except (RuntimeError, ValueError):
            raise ValueError(
                f"device must be a torch device such as 'cpu' or 'cuda'; got {self.device!r}"
            ) from None

    @property
    def T(self) -> int | None:
        return self.steps if self.steps is not None else DEFAULT_STEPS[self.task]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that identify the run (:data:`LATE_FIELDS` only when not at default)."""
        return identity_dict(self.to_dict())

    def hash(self) -> str:
        return config_hash(self.identity())


def identity_dict(config: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig dict (of a run, or of a record written before some fields existed)
    without the :data:`LATE_FIELDS` that are absent or at their defaults."""
    d = dict(config)
    for name in LATE_FIELDS:
        if name in d and d[name] == TrainConfig.__dataclass_fields__[name].default:
            del d[name]
    return d


@dataclass
class RunResult:
    """What :func:`train` returns: the record (JSON-ready) and the trained network."""

    record: dict[str, Any]
    net: ParallelLIFNet
    task: TaskData
    convex: ConvexFit | None = None


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[cvxsnn] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- #
# Targets of the convex program
# --------------------------------------------------------------------------- #
def encode_targets(
    data: SequenceDataset, loss: str, head_weights: tuple[float, ...]
) -> tuple[np.ndarray, tuple[int, ...], tuple[float, ...]]:
    """Targets Y of the convex program, one row per (supervised step, sample).

    Rows are step-major (row ``s * n + i``), as in the spike dictionary. A
    binary head is one column: +-1 for the squared loss, {0, 1} for the
    logistic loss. A head of C > 2 classes is C one-hot columns (squared or
    softmax); under the softmax loss a binary head is two columns.

    Returns
    -------
    Y : ndarray of shape (S * n, C), float64
    out_layout : tuple of int
        Columns per head (the readout layout of the rebuilt network).
    column_heads_weights : tuple of float
        The weight of each head (unchanged), for the solver.
    """
    S, n, H = data.targets.shape
    y = data.targets.reshape(S * n, H).cpu().numpy()
    cols, layout = [], []
    for h, classes in enumerate(data.head_classes):
        yh = y[:, h]
        if classes == 2 and loss in ("squared", "logistic"):
            cols.append(
                (2.0 * yh - 1.0)[:, None] if loss == "squared" else yh[:, None].astype(float)
            )
            layout.append(1)
        else:
            if loss == "logistic":
                raise ValueError(
                    f"loss 'logistic' needs binary heads; head {data.head_names[h]!r} has "
                    f"{classes} classes (use 'softmax' or 'squared')"
                )
            cols.append(np.eye(classes)[yh])
            layout.append(classes)
    return np.concatenate(cols, axis=1).astype(np.float64), tuple(layout), tuple(head_weights)


def _accuracy_from_outputs(
    out: np.ndarray, data: SequenceDataset, layout: tuple[int, ...]
) -> float:
    """Share of (step, sample) rows with every head right (teacher-forced)."""
    S, n, H = data.targets.shape
    pred = decode_outputs(torch.from_numpy(out), layout).numpy()
    truth = data.targets.reshape(S * n, H).cpu().numpy()
    return float((pred == truth).all(axis=1).mean())


# --------------------------------------------------------------------------- #
# The convex path
# --------------------------------------------------------------------------- #
@dataclass
class ConvexFit:
    """The convex stage of a CVX / SG-CVX run."""

    net: ParallelLIFNet
    solve: Any
    dictionary: Any
    rho: float
    path: list[dict[str, float]] = field(default_factory=list)
    reconstruction: Any = None
    out_layout: tuple[int, ...] = ()
    support_before_reduction: int = 0
    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None
    certificate: Any = None
    column_generation: Any = None


def fit_convex(
    params: Any,
    task: TaskData,
    config: TrainConfig,
    timer: StageTimer,
    progress: bool = True,
) -> ConvexFit:
    """Dictionary, convex solve (rho path selected on validation), reduction, reconstruction."""
    from cvxsnn.dictionary import _fmt, build_dictionary
    from cvxsnn.reconstruct import reconstruct, verify_reconstruction
    from cvxsnn.solver import (
        RHO_MAX_FLOOR,
        duality_gap,
        estimate_reduction_bytes,
        estimate_solve_bytes,
        prepare_dictionary,
        reduce_support,
        rho_max,
        solve,
    )

    device = torch.device(config.device)
    train, val = task.train, task.val
    head_weights = _head_weights(train, config)
    with timer("dictionary"):
        dic = build_dictionary(
            params,
            train.x.to(torch.float64),
            train.steps,
            beta=config.beta,
            bias_channel=True,
            device=device,
            progress=progress,
        )
        D_val = dic.transform(val.x.to(torch.float64))
    _log(
        progress,
        f"dictionary: {dic.atoms.shape[0]} rows x {dic.atoms.shape[1]} atoms "
        f"(from {dic.n_atoms_raw}: {dic.n_zero} all-zero, {dic.n_ones} all-one, "
        f"{dic.n_duplicate} duplicate dropped)",
    )
    Y, layout, hw = encode_targets(train, config.loss, head_weights)
    heads = layout
    kw = dict(
        loss=config.loss, penalty=config.penalty, heads=heads, head_weights=hw, tol=config.tol
    )
    path: list[dict[str, float]] = []
    n_rows, n_atoms = dic.atoms.shape
    lp = dict(loss=config.loss, penalty=config.penalty)
    full = estimate_solve_bytes(n_rows, n_atoms, Y.shape[1], **lp)
    quarter = estimate_solve_bytes(n_rows, n_atoms, Y.shape[1], max(1, n_atoms // 4), **lp)
    _log(
        progress,
        f"solve memory estimate: up to {_fmt(full)} beyond the dictionary with working "
        f"sets of all {n_atoms} atoms, {_fmt(quarter)} at {max(1, n_atoms // 4)}",
    )
    with timer("solve"):
        # wrapped once: its atom-major copy, row merging and Gram cache serve every solve
        # of the path, the support reduction and the certificate (one wrap per call was
        # one (P, n) copy each, and every rho recomputed the Gram entries of its atoms)
        atoms = prepare_dictionary(dic.atoms)
        if config.rho is not None or config.beta_reg is not None:
            rho = (
                config.rho if config.rho is not None else config.beta_reg / math.sqrt(config.width)
            )
            best = solve(atoms, Y, rho, **kw)
        else:
            top = rho_max(
                atoms, Y, loss=config.loss, penalty=config.penalty, heads=heads, head_weights=hw
            )
            if top <= RHO_MAX_FLOOR:
                # rho_max is rounding noise: no atom correlates with the residual of the
                # intercept-only fit, so W = 0 is optimal for every rho > 0; certify it once
                # at rho = 1 (far above the float64 resolution of the dual constraint).
                rhos = np.array([1.0])
            else:
                rhos = top * np.geomspace(1.0, config.rho_min_ratio, config.n_rhos + 1)[1:]
            best, best_acc, W0, b0, since_best = None, -1.0, None, None, 0
            for rho in rhos:
                res = solve(atoms, Y, float(rho), W0=W0, b0=b0, **kw)
                W0, b0 = res.coef, res.intercept
                acc = _accuracy_from_outputs(D_val @ res.coef + res.intercept, val, layout)
                path.append(
                    {
                        "rho": float(rho),
                        "val_acc": acc,
                        "support": len(res.support),
                        "gap": float(res.gap),
                        "rel_gap": float(res.rel_gap),
                        "converged": bool(res.converged),
                        "time_s": float(res.time_s),
                    }
                )
                _log(
                    progress,
                    f"rho={rho:.3e} val_acc={acc:.4f} support={len(res.support)} gap={res.gap:.2e}",
                )
                if acc > best_acc:  # ties keep the larger rho (sparser)
                    best, best_acc, since_best = res, acc, 0
                else:
                    since_best += 1
                    if config.path_patience is not None and since_best >= config.path_patience:
                        break
            rho = best.rho
    cg = None
    if config.method.endswith("-cg"):
        with timer("column_generation"):
            cg = _column_generation(params, dic, task, D_val, Y, best, config, kw, progress)
        params, dic, best = cg.params, cg.dictionary, cg.solve
        atoms = prepare_dictionary(dic.atoms)  # the grown dictionary
    with timer("reconstruction"):
        support_before = len(best.support)
        nonzero = np.asarray(best.coef) != 0
        widest = int(nonzero.sum(axis=0).max() if config.penalty == "l1" else nonzero.any(1).sum())
        if widest > 0:
            proof, factor = estimate_reduction_bytes(
                n_rows, widest, Y.shape[1], penalty=config.penalty
            )
            _log(
                progress,
                f"support reduction memory estimate: {_fmt(proof)} to prove the support "
                f"independent, up to {_fmt(factor)} if it must be factored",
            )
        with timer("support_reduction"):
            coef, intercept = reduce_support(
                atoms, best.coef, best.intercept, penalty=config.penalty
            )
        # the certificate of the network actually returned, recomputed after the reduction
        cert = duality_gap(
            atoms,
            Y,
            coef,
            intercept,
            rho,
            loss=config.loss,
            penalty=config.penalty,
            heads=heads,
            head_weights=hw,
        )
        net = reconstruct(
            params,
            dic,
            coef,
            intercept,
            out_layout=layout,
            head_classes=train.head_classes,
            beta=config.beta,
            bias_channel=True,
            dtype=torch.float64,
            device=device,
        )
        # Margins of continuous Gaussian witnesses are ~1e-7 over millions of membrane values,
        # far above float64 rounding; warn only where float64 itself could flip a spike.
        with timer("reconstruction_check"):
            report = verify_reconstruction(
                net,
                dic,
                train.x.to(torch.float64),
                train.steps,
                coef,
                intercept,
                margin_warn=1e-12,
                progress=progress,
                keep_outputs=True,  # the training metrics, without another forward pass
            )
        report.check()
    return ConvexFit(
        net, best, dic, float(rho), path, report, layout, support_before, coef, intercept, cert, cg
    )


def _column_generation(
    params: Any,
    dic: Any,
    task: TaskData,
    D_val: np.ndarray,
    Y: np.ndarray,
    start: Any,
    config: TrainConfig,
    kw: dict[str, Any],
    progress: bool,
) -> Any:
    """Column generation from the path's selected solve, at its rho (``*-cg`` methods).

    Each round's log gets ``val_acc`` and ``test_row_acc``: the share of (step, sample)
    rows of the validation and test splits with every head right, from that round's
    solution on the dictionary's patterns of those inputs (teacher-forced for ADDITION,
    so not its autoregressive metrics; equal to the accuracy for one supervised step).
    They are reported, never used to choose anything.
    """
    from cvxsnn.colgen import (
        MAX_EXAMINED,
        RandomSearch,
        SurrogateAscent,
        column_generation,
        estimate_search_bytes,
        pricer_candidates,
    )
    from cvxsnn.dictionary import _fmt

    train, val, test = task.train, task.val, task.test
    search = RandomSearch(proposals=config.cg_proposals, sigma=config.sigma)
    pricer = search if config.cg_pricer == "random" else SurrogateAscent(base=search)
    layout = kw["heads"]
    accs: dict[int, tuple[float, float]] = {}
    x_val, x_test = val.x.to(torch.float64), test.x.to(torch.float64)
    known: dict[str, tuple[np.ndarray, np.ndarray | None]] = {"val": (dic.provenance, D_val)}

    def patterns(d: Any, name: str, x: torch.Tensor) -> np.ndarray:
        # each round keeps the earlier atoms (same branches, same indices) and appends new
        # ones: only the new atoms' branches run on the split
        prov, D = known.get(name, (np.zeros((0, 2), dtype=np.int64), None))
        P = len(prov)
        if D is None or d.n_atoms < P or not np.array_equal(d.provenance[:P], prov):
            D = d.transform(x)
        elif d.n_atoms > P:
            D = np.hstack([D, d.transform(x, atoms=slice(P, None))])
        known[name] = (d.provenance, D)
        return D

    def on_round(rd: Any, res: Any, d: Any) -> None:
        # the appended branches on the validation and test inputs
        Dv = patterns(d, "val", x_val)
        Dt = patterns(d, "test", x_test)
        accs[rd.round] = (
            _accuracy_from_outputs(Dv @ res.coef + res.intercept, val, layout),
            _accuracy_from_outputs(Dt @ res.coef + res.intercept, test, layout),
        )

    q = pricer_candidates(pricer, dic.widths[-1])
    est = estimate_search_bytes(dic.n_rows, q)
    _log(
        progress,
        f"column-generation memory estimate: up to {_fmt(est['total'])} beyond the "
        f"dictionary: examined patterns {_fmt(est['examined'])} ({MAX_EXAMINED} kept at most), "
        f"one round's {q} candidates {_fmt(est['candidates'])}, "
        f"scoring buffer {_fmt(est['scoring'])}",
    )
    cg = column_generation(
        params,
        train.x.to(torch.float64),
        train.steps,
        Y,
        float(start.rho),
        generator=torch.Generator().manual_seed(config.seed + 2),
        pricer=pricer,
        max_rounds=int(config.cg_rounds),
        atoms_per_round=int(config.cg_atoms),
        beta=config.beta,
        bias_channel=True,
        dictionary=dic,
        W0=start.coef,
        b0=start.intercept,
        device=torch.device(config.device),
        progress=progress,
        callback=on_round,
        **kw,
    )
    none = (None, None)
    cg.log[:] = [
        {
            **r,
            "val_acc": accs.get(int(r["round"]), none)[0],
            "test_row_acc": accs.get(int(r["round"]), none)[1],
        }
        for r in cg.log
    ]
    return cg


def _head_weights(data: SequenceDataset, config: TrainConfig) -> tuple[float, ...]:
    return tuple(config.lambda_carry if name == "carry" else 1.0 for name in data.head_names)


# --------------------------------------------------------------------------- #
# Methods
# --------------------------------------------------------------------------- #
def _make_task(config: TrainConfig) -> TaskData:
    from cvxsnn.tasks import make_task

    data_dir = config.data_dir or os.environ.get("CVXSNN_DATA_DIR")
    return make_task(
        config.task,
        steps=config.T,
        n_train=config.n_train,
        n_val=config.n_val,
        n_test=config.n_test,
        seed=config.seed,
        data_dir=data_dir,
        base=config.base,
        data=config.data,
    )


def _sg_config(config: TrainConfig):
    from cvxsnn.sg import SGConfig

    kw: dict[str, Any] = {
        "seed": config.seed,
        "device": config.device,
        "lambda_carry": config.lambda_carry,
    }
    if config.epochs is not None:
        kw["epochs"] = config.epochs
    return SGConfig(**kw)


def _net_config(task: TaskData, config: TrainConfig, out_layout: tuple[int, ...]) -> NetConfig:
    return NetConfig(
        d_in=task.train.d,
        widths=(config.width,) * (config.depth - 1),
        branches=config.branches,
        out_layout=out_layout,
        head_classes=task.train.head_classes,
        beta=config.beta,
    )


def _sg_network(
    task: TaskData,
    config: TrainConfig,
    timer: StageTimer,
    progress: bool,
    continue_training: bool,
    snapshots: tuple[str | Path, float] | None = None,
) -> tuple[ParallelLIFNet, dict[str, Any]]:
    """Train SG (or load a checkpoint); for SG-SG continue it for as many more epochs.

    ``snapshots`` is (folder, seconds): each SG training keeps its state in a file of
    that folder (``sg.pt``, ``sg_continue.pt``), written at most every so many seconds,
    and resumes from it (:class:`cvxsnn.sg.SGSnapshot`).
    """
    from cvxsnn.sg import SGSnapshot, load_checkpoint, train_sg

    def snapshot(name: str) -> SGSnapshot | None:
        return None if snapshots is None else SGSnapshot(Path(snapshots[0]) / name, snapshots[1])

    sgc = _sg_config(config)
    info: dict[str, Any] = {"protocol": sgc.to_dict()}
    with timer("sg"):
        if config.sg_checkpoint:
            ck = load_checkpoint(config.sg_checkpoint, device=config.device)
            net, prior = ck.net, ck.total_epochs
            info["sg_checkpoint"] = str(config.sg_checkpoint)
        else:
            cfg = _net_config(task, config, task.train.head_classes)
            res = train_sg(task, cfg, sgc, progress=progress, snapshot=snapshot("sg.pt"))
            net, prior = res.net, res.total_epochs
            if res.resumed_s:  # training before this process, from the snapshot
                timer.seconds["sg_before_resume"] = res.resumed_s
            info.update(
                sg_selected_lr=res.selected_lr,
                sg_epochs=res.total_epochs,
                sg_best_val_acc=res.best_val_accuracy,
            )
    if continue_training:
        with timer("sg_continue"):
            more = dataclasses.replace(sgc, epochs=max(prior, 1))
            res2 = train_sg(
                task,
                None,
                more,
                init=net,
                progress=progress,
                prior_epochs=prior,
                snapshot=snapshot("sg_continue.pt"),
            )
            net = res2.net
            if res2.resumed_s:
                timer.seconds["sg_continue_before_resume"] = res2.resumed_s
            info.update(
                sgsg_selected_lr=res2.selected_lr,
                sgsg_extra_epochs=res2.best_epoch,
                sgsg_best_val_acc=res2.best_val_accuracy,
                total_epochs=res2.total_epochs,
            )
    return net, info


def train(
    config: TrainConfig,
    progress: bool = True,
    save_model: str | None = None,
    snapshot_dir: str | Path | None = None,
    snapshot_every_s: float = 120.0,
) -> RunResult:
    """Run one method on one task and return the result record (SPEC section 6).

    Parameters
    ----------
    config : TrainConfig
    progress : bool
        Progress and logs on stderr.
    save_model : str, optional
        Write the trained network (state_dict + JSON config) here.
    snapshot_dir : str or Path, optional
        Keep the state of SG training (methods ``sg``, ``sg-sg``, ``sg-cvx``,
        ``sg-cvx-cg``) in this folder, written at most every ``snapshot_every_s``
        seconds and at the end of each learning rate; a run killed during SG
        training and started again with the same folder resumes there, with the
        same record (timings aside). The folder is not deleted: once SG training
        has finished, its snapshot holds the trained network and a rerun skips
        the training. It is not part of the run's identity.
    snapshot_every_s : float
        See ``snapshot_dir``.

    Notes
    -----
    ``config.threads`` pins every thread pool the run uses: torch's, and the
    BLAS and OpenMP pools behind numpy and scipy (the solver, the Gram
    matrices, the certificate), through threadpoolctl, for the length of the
    run. Their reductions may round differently with another thread count, so
    a record depends on it, and on a machine whose cores are already busy
    (cells of a sweep side by side) an unpinned BLAS pool oversubscribes them.
    """
    snapshots = None if snapshot_dir is None else (snapshot_dir, snapshot_every_s)
    if config.threads is None:
        return _train(config, progress, save_model, snapshots)
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(config.threads)
    with threadpool_limits(limits=config.threads):
        return _train(config, progress, save_model, snapshots)


def _train(
    config: TrainConfig,
    progress: bool,
    save_model: str | None,
    snapshots: tuple[str | Path, float] | None,
) -> RunResult:
    """The run of :func:`train`, with its thread pools already set."""
    from cvxsnn.evaluate import classification_metrics, evaluate

    timer = StageTimer()
    t0 = time.perf_counter()
    with timer("task"):
        task = _make_task(config)
    _log(
        progress,
        f"task {task.name}: train {task.train.n}, val {task.val.n}, test {task.test.n}, "
        f"T = {task.train.T}",
    )
    record: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "method": config.method,
        "task": config.task,
        "L": config.depth,
        "T": task.train.T,
        "K": config.branches,
        "m": config.width,
        "n": task.train.n,
        "seed": config.seed,
        "config": config.to_dict(),
        "config_hash": config.hash(),
        "task_params": task.params,
    }
    convex = None
    if config.method in ("sg", "sg-sg"):
        net, info = _sg_network(task, config, timer, progress, config.method == "sg-sg", snapshots)
        record["sg"] = info
        record.update(loss="cross_entropy", penalty=None, rho=None)
    else:
        from cvxsnn.witnesses import perturb_witnesses, sample_witnesses, witnesses_from_network

        if config.method in ("cvx", "cvx-cg"):
            with timer("witnesses"):
                gen = torch.Generator().manual_seed(config.seed)
                params = sample_witnesses(
                    task.train.d,
                    (config.width,) * (config.depth - 1),
                    config.branches,
                    sigma=config.sigma,
                    scheme=config.witnesses,
                    bias_channel=True,
                    generator=gen,
                    device=torch.device(config.device),
                    dtype=torch.float64,
                    x=task.train.x.to(torch.float64),
                )
        else:
            sg_net, info = _sg_network(
                task, config, timer, progress, continue_training=False, snapshots=snapshots
            )
            record["sg"] = info
            with timer("witnesses"):
                params = witnesses_from_network(sg_net.to(torch.float64))
                if config.perturb_copies:
                    gen = torch.Generator().manual_seed(config.seed + 1)
                    params = perturb_witnesses(
                        params, config.perturb_scale, gen, config.perturb_copies
                    )
        convex = fit_convex(params, task, config, timer, progress)
        net = convex.net
        s, c = convex.solve, convex.certificate
        rep = convex.reconstruction
        record.update(
            loss=config.loss,
            penalty=config.penalty,
            rho=convex.rho,
            beta_reg=convex.rho * math.sqrt(config.width),
            P_raw=int(convex.dictionary.n_atoms_raw),
            P=int(convex.dictionary.atoms.shape[1]),
            dictionary_rows=int(convex.dictionary.atoms.shape[0]),
            support_size=int((convex.coef != 0).any(axis=1).sum()),
            support_before_reduction=convex.support_before_reduction,
            n_zero=int(convex.dictionary.n_zero),
            n_ones=int(convex.dictionary.n_ones),
            n_duplicate=int(convex.dictionary.n_duplicate),
            primal=float(c.primal),
            dual=float(c.dual),
            gap=float(c.gap),
            rel_gap=float(c.rel_gap),
            certified=bool(c.rel_gap <= s.tol),
            solver={
                "primal": float(s.primal),
                "dual": float(s.dual),
                "gap": float(s.gap),
                "rel_gap": float(s.rel_gap),
                "time_s": float(s.time_s),
            },
            converged=bool(s.converged),
            solver_iterations=int(s.n_iter),
            tol=float(s.tol),
            stop_rule=s.stop_rule,
            rho_path=convex.path,
            reconstruction=_report_dict(rep),
            branches_kept=int(net.config.branches),
        )
        if convex.column_generation is not None:
            cg = convex.column_generation
            record["column_generation"] = {
                **cg.summary(),
                "rounds": cg.log,
                "P_initial": int(cg.rounds[0].n_atoms),
                "pricer": config.cg_pricer,
            }
    with timer("evaluation"):
        # The reconstruction check ran the network over the training set: the training
        # metrics decode its outputs instead of running the network again (predict's labels
        # but at an exact tie, which a readout product in other rows could break otherwise).
        checked = getattr(convex.reconstruction, "outputs", None) if convex is not None else None
        metrics = {}
        for split in ("train", "val", "test"):
            if split == "train" and checked is not None and task.name != "addition":
                labels = decode_outputs(torch.from_numpy(checked), net.config.out_layout)
                metrics[split] = classification_metrics(labels, task.train)
            else:
                metrics[split] = evaluate(net, task, split)
        from cvxsnn.energy import activity

        # energy proxies of the returned network on the test inputs (one no-grad pass)
        act = activity(net, task.test.x, task.test.steps)
    record["metrics"] = metrics
    record["activity"] = {
        k: act[k]
        for k in (
            "rate",
            "neurons",
            "spikes_per_sample",
            "synops_dense_per_sample",
            "synops_nonzero_per_sample",
        )
    }
    record["test_acc"] = _headline(metrics["test"])
    record["time_s"] = {
        **{k: round(v, 4) for k, v in timer.seconds.items()},
        "total": round(time.perf_counter() - t0, 4),
    }
    record["memory"] = peak_memory_mb(config.device)
    if timer.peak_rss_mib:  # Linux: the resident high-water mark of each stage
        record["memory"]["stage_peak_rss_mib"] = {
            k: round(v, 1) for k, v in timer.peak_rss_mib.items()
        }
    record["environment"] = environment()
    if save_model:
        from cvxsnn.network import save_model as _save

        _save(
            net,
            save_model,
            extra={
                "record": to_jsonable(
                    {
                        k: record[k]
                        for k in ("method", "task", "L", "T", "K", "m", "seed", "config_hash")
                    }
                ),
                "task_params": task.params,
            },
        )
        record["model_path"] = str(save_model)
    return RunResult(to_jsonable(record), net, task, convex)


def _report_dict(report: Any) -> dict[str, Any]:
    if report is None:
        return {}
    if dataclasses.is_dataclass(report):  # the scalar fields (no deep copy of arrays)
        items = ((f.name, getattr(report, f.name)) for f in dataclasses.fields(report))
        return {k: v for k, v in items if np.isscalar(v) or v is None}
    return dict(report)


def _headline(metrics: dict[str, Any]) -> float | None:
    for key in ("acc", "joint_token_acc", "accuracy"):
        if key in metrics:
            return float(metrics[key])
    return None


# --------------------------------------------------------------------------- #
# Predict and sweep
# --------------------------------------------------------------------------- #
def predict_file(
    model: str, data: str, device: str = "cpu", output: str | None = None
) -> dict[str, Any]:
    """Run a saved model on ``X`` (n, T, d) of a .npz; accuracy too when ``y`` is present."""
    net, _extra = load_model(model, device=device)
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with np.load(path) as f:
        if "X" not in f:
            raise ValueError(
                f"{path} must hold an array 'X' of shape (n, T, d); found {sorted(f.files)}"
            )
        X = f["X"]
        y = f["y"] if "y" in f else None
    if X.ndim != 3:
        raise ValueError(f"X must have shape (n, T, d); got {X.shape}")
    x = torch.from_numpy(np.ascontiguousarray(X.transpose(1, 0, 2))).to(net.dtype)
    labels = net.predict(x, steps=[x.shape[0] - 1])[0]  # (n, H)
    out: dict[str, Any] = {"n": int(X.shape[0]), "predictions": labels.squeeze(-1).tolist()}
    if y is not None:
        y = np.asarray(y)
        truth = y[:, -1] if y.ndim == 2 else y
        out["acc"] = float((labels[:, 0].cpu().numpy() == truth).mean())
    if output:
        np.savez(output, predictions=labels.cpu().numpy())
    return out


def sweep(
    base: TrainConfig,
    param: str,
    values: list[str],
    seeds: int = 1,
    progress: bool = True,
    output: str | None = None,
) -> list[dict[str, Any]]:
    """Train ``base`` over values of one field (and seeds); one summary row per run.

    Finished runs are appended to ``output`` (JSON lines) as they end.
    """
    import json

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if param not in fields:
        raise ValueError(
            f"param must be a TrainConfig field, one of {sorted(fields)}; got {param!r}"
        )
    current = getattr(base, param)
    cast = type(current) if current is not None else (int if param == "steps" else float)
    rows = []
    for value in values:
        try:
            v = cast(value)
        except ValueError:
            raise ValueError(f"values for {param} must be {cast.__name__}; got {value!r}") from None
        for seed in range(base.seed, base.seed + seeds):
            cfg = dataclasses.replace(base, **{param: v, "seed": seed})
            _log(progress, f"sweep {param}={v} seed={seed}")
            rec = train(cfg, progress=progress).record
            row = {
                param: v,
                "seed": seed,
                "test_acc": rec.get("test_acc"),
                "gap": rec.get("gap"),
                "rel_gap": rec.get("rel_gap"),
                "P": rec.get("P"),
                "support": rec.get("support_size"),
                "time_s": rec["time_s"]["total"],
            }
            rows.append(row)
            if output:
                with open(output, "a") as fh:
                    fh.write(json.dumps(rec, sort_keys=True, default=str) + "\n")
            _log(progress, f"  -> {row}")
    return rows
