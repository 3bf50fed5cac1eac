"""scikit-learn estimators over the convex path, and the readout fit they share.

:class:`ConvexSNNClassifier` and :class:`ConvexSNNRegressor` draw witnesses,
build the spike dictionary of their last hidden layer on the training
sequences, solve the convex program to a certified duality gap, reduce the
support and rebuild a real K'-parallel LIF network (``network_``) that makes
every prediction. :func:`convex_readout` is the same fit for witnesses given
by the caller (e.g. the hidden layers of an snnTorch model, see
:mod:`cvxsnn.interop.snntorch`).

Input layout
------------
A row of ``X`` is one sequence. ``X`` is either 3-D of shape ``(n, T, d)``, or
2-D of shape ``(n, T * d)`` holding each row's steps one after the other
(``X[i, t * d:(t + 1) * d]`` is step t), with ``n_steps=T`` telling the
estimator how to cut it. With ``n_steps=None`` a 2-D ``X`` is one step
(``T = 1``, ``d = n_features``), which is what scikit-learn's generic tools
and checks pass. Values are input currents: any finite real numbers, not
only spikes. The label (or target) belongs to the last step of each row.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from cvxsnn.dictionary import SpikeDictionary, build_dictionary
from cvxsnn.network import HiddenParams, NetConfig, ParallelLIFNet, decode_outputs
from cvxsnn.reconstruct import ReconstructionReport, reconstruct, verify_reconstruction
from cvxsnn.solver import (
    RHO_MAX_FLOOR,
    Certificate,
    SolveResult,
    duality_gap,
    reduce_support,
    rho_max,
    solve,
)
from cvxsnn.solver.losses import make_loss
from cvxsnn.witnesses import check_hidden_params, sample_witnesses

__all__ = [
    "EXPECTED_FAILED_CHECKS",
    "ConvexSNNClassifier",
    "ConvexSNNRegressor",
    "ReadoutFit",
    "convex_readout",
    "encode_labels",
]

LossName = Literal["squared", "logistic", "softmax"]
PenaltyName = Literal["l1", "group_l2"]
#: Settings of the automatic rho selection (``rho=None``).
N_RHOS = 8
RHO_MIN_RATIO = 1e-3
VALIDATION_FRACTION = 0.2
PATH_PATIENCE = 3
#: Fewer samples than this: no validation split; rho = SMALL_N_RHO_RATIO * rho_max.
MIN_SAMPLES_FOR_SPLIT = 10
SMALL_N_RHO_RATIO = 1e-2

#: scikit-learn estimator checks that the estimators do not pass, with the reason.
#: Pass it as ``check_estimator(est, expected_failed_checks=EXPECTED_FAILED_CHECKS)``.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


# --------------------------------------------------------------------------- #
# The readout fit shared by the estimators and the snnTorch interoperation
# --------------------------------------------------------------------------- #
@dataclass(frozen=True, eq=False)
class ReadoutFit:
    """A certified convex readout on fixed witnesses, and the network it gives.

    Attributes
    ----------
    net : ParallelLIFNet
        The reconstructed network (float64); its output at the supervised
        steps is ``D W + b`` on the training data.
    coef : ndarray of shape (P, C)
        Readout weights over the atoms after support reduction.
    intercept : ndarray of shape (C,)
    rho : float
        The regularization strength used for the returned solution.
    solve : SolveResult or None
        The solver's result (before support reduction); None when the
        dictionary was empty.
    certificate : Certificate or None
        Duality gap of ``(coef, intercept)``, recomputed after reduction.
    dictionary : SpikeDictionary or None
        None when every last-layer neuron was silent or always spiking.
    reconstruction : ReconstructionReport or None
        Check of ``net`` against the dictionary on the training data.
    out_layout, head_classes : tuple of int
        Readout layout of ``net``.
    path : tuple of dict
        One entry per rho tried by the automatic selection (``rho``,
        ``val_score``, ``support``, ``gap``); empty for a fixed rho.
    tol : float
    """

    net: ParallelLIFNet
    coef: np.ndarray
    intercept: np.ndarray
    rho: float
    solve: SolveResult | None
    certificate: Certificate | None
    dictionary: SpikeDictionary | None
    reconstruction: ReconstructionReport | None
    out_layout: tuple[int, ...]
    head_classes: tuple[int, ...]
    path: tuple[dict[str, float], ...] = field(default=())
    tol: float = 1e-6

    @property
    def gap(self) -> float:
        """Absolute duality gap of the returned solution (0 when nothing was solved)."""
        return 0.0 if self.certificate is None else float(self.certificate.gap)

    @property
    def rel_gap(self) -> float:
        return 0.0 if self.certificate is None else float(self.certificate.rel_gap)

    @property
    def certified(self) -> bool:
        """Whether ``rel_gap <= tol``: the readout is globally optimal for these witnesses."""
        return self.rel_gap <= self.tol

    @property
    def support(self) -> np.ndarray:
        """Atoms with a nonzero coefficient row, shape (s,)."""
        return np.flatnonzero(np.any(self.coef != 0, axis=1))

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: rho, support size, P, gap, rel_gap, certified, branches kept."""
        return {
            "rho": float(self.rho),
            "P": 0 if self.dictionary is None else int(self.dictionary.n_atoms),
            "support_size": int(self.support.size),
            "gap": self.gap,
            "rel_gap": self.rel_gap,
            "tol": float(self.tol),
            "certified": bool(self.certified),
            "branches_kept": int(self.net.config.branches),
            "n_iter": 0 if self.solve is None else int(self.solve.n_iter),
        }


def encode_labels(
    labels: np.ndarray, n_classes: int, loss: LossName
) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Targets of the convex program for integer class labels.

    Parameters
    ----------
    labels : ndarray of shape (N,), int
        Classes in ``[0, n_classes)``.
    n_classes : int
        C classes, >= 2.
    loss : {"squared", "logistic", "softmax"}

    Returns
    -------
    Y : ndarray of shape (N, C'), float64
        squared: one column of +-1 (binary) or one-hot columns; logistic:
        one {0, 1} column (binary) or C one-vs-rest {0, 1} columns;
        softmax: C one-hot columns (2 for a binary problem).
    heads : tuple of int
        Column counts of the solver's loss heads.
    out_layout, head_classes : tuple of int
        Readout layout of the rebuilt network (one head).
    """
    if loss not in ("squared", "logistic", "softmax"):
        raise ValueError(f"loss must be one of ['squared', 'logistic', 'softmax']; got {loss!r}")
    labels = np.asarray(labels, dtype=np.int64)
    onehot = np.eye(n_classes)[labels]
    if n_classes == 2 and loss == "squared":
        return (2.0 * labels - 1.0)[:, None], (1,), (1,), (2,)
    if n_classes == 2 and loss == "logistic":
        return labels[:, None].astype(np.float64), (1,), (1,), (2,)
    if loss == "logistic":
        return onehot, (1,) * n_classes, (n_classes,), (n_classes,)
    return onehot, (n_classes,), (n_classes,), (n_classes,)


def _is_empty_dictionary_error(err: ValueError) -> bool:
    return str(err).startswith("the spike dictionary is empty")


def _silent_network(
    d_in: int,
    n_hidden: int,
    out_layout: tuple[int, ...],
    head_classes: tuple[int, ...],
    beta: float,
    intercept: np.ndarray,
    device: torch.device | str | None,
) -> ParallelLIFNet:
    """One branch of silent neurons (zero weights, threshold 1): outputs the intercept."""
    config = NetConfig(
        d_in=d_in,
        widths=(1,) * n_hidden,
        branches=1,
        out_layout=out_layout,
        head_classes=head_classes,
        beta=beta,
    )
    net = ParallelLIFNet(config, device=device, dtype=torch.float64, init=False)  # zero weights
    with torch.no_grad():
        net.b_out.copy_(torch.as_tensor(intercept, dtype=torch.float64))
    return net.requires_grad_(False)


def convex_readout(
    params: HiddenParams,
    x: torch.Tensor | np.ndarray,
    Y: np.ndarray,
    *,
    steps: tuple[int, ...] | None = None,
    beta: float = 0.99,
    loss: LossName = "squared",
    penalty: PenaltyName = "l1",
    heads: tuple[int, ...] | None = None,
    out_layout: tuple[int, ...] | None = None,
    head_classes: tuple[int, ...] | None = None,
    rho: float | None = None,
    tol: float = 1e-6,
    labels: np.ndarray | None = None,
    random_state: int | np.random.RandomState | None = None,
    device: torch.device | str | None = None,
) -> ReadoutFit:
    """Certified convex readout on fixed witnesses: dictionary, solve, reduce, rebuild.

    Parameters
    ----------
    params : HiddenParams
        Witnesses of K branches (thresholds and weights kept as given).
    x : Tensor of shape (T, n, d)
        Training sequences, time-major.
    Y : ndarray of shape (S * n, C)
        Targets of the convex program in the dictionary's step-major row
        layout (see :func:`encode_labels` for class labels).
    steps : tuple of int, optional
        Supervised steps (default: the last step only).
    beta : float
        Leak of the network the witnesses belong to.
    loss, penalty, heads
        The convex program (see :func:`cvxsnn.solver.solve`).
    out_layout, head_classes : tuple of int, optional
        Readout layout of the rebuilt network; default one head of C
        columns (``(1,)``/``(2,)`` when C = 1).
    rho : float, optional
        Fixed rho. None selects it (see Notes).
    tol : float
        Relative duality-gap tolerance of the solve.
    labels : ndarray of shape (S * n,), optional
        Class of each row; when given, the automatic selection scores
        validation accuracy, else validation mean squared error of Y.
    random_state : int, RandomState or None
        Seeds the validation split of the automatic selection.
    device : torch.device or str, optional
        Where the forward passes run and the network lives.

    Returns
    -------
    ReadoutFit

    Notes
    -----
    Automatic rho (``rho=None``): with n >= 10 samples, 20% of the samples
    (stratified by ``labels`` when possible) are held out; ``8`` values of
    rho from ``rho_max`` (where W = 0 is optimal) down to ``1e-3 rho_max``
    (geometric) are solved on the other rows with warm starts, stopping
    after 3 values without a better validation score; the best value
    (ties: the larger, sparser one) is then solved again on all rows, and
    that solve is the one certified and rebuilt. With fewer than 10
    samples rho = ``1e-2 rho_max``. When every last-layer neuron is silent
    or always spiking on the data (empty dictionary), the readout is the
    constant optimal intercept and the network one silent branch.
    """
    _, d_eff, widths = check_hidden_params(params)
    x = torch.as_tensor(x, dtype=torch.float64)
    T, n, d = x.shape
    steps = (T - 1,) if steps is None else tuple(int(s) for s in steps)
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    if Y.shape[0] != len(steps) * n:
        raise ValueError(
            f"Y must have S * n = {len(steps) * n} rows (step-major); got {Y.shape[0]}"
        )
    C = Y.shape[1]
    if out_layout is None:
        out_layout = (C,)
        head_classes = (2,) if C == 1 else (C,)
    heads = heads if heads is not None else ((1,) * C if loss == "logistic" else (C,))
    kw = dict(loss=loss, penalty=penalty, heads=heads, tol=tol)
    try:
        dic = build_dictionary(
            params, x, steps, beta=beta, bias_channel=d_eff == d + 1, device=device
        )
    except ValueError as err:
        if not _is_empty_dictionary_error(err):
            raise
        lo = make_loss(loss, C, heads, None)
        b = lo.optimal_intercept(np.zeros_like(Y), Y)
        net = _silent_network(
            d, len(widths), tuple(out_layout), tuple(head_classes), beta, b, device
        )
        return ReadoutFit(
            net,
            np.zeros((0, C)),
            b,
            float("nan"),
            None,
            None,
            None,
            None,
            tuple(out_layout),
            tuple(head_classes),
            (),
            tol,
        )
    D = dic.atoms
    top = rho_max(D, Y, loss=loss, penalty=penalty, heads=heads)
    path: list[dict[str, float]] = []
    if rho is None:
        rho, path = _select_rho(
            D, Y, top, n, len(steps), labels, random_state, tuple(out_layout), kw
        )
    res = solve(D, Y, float(rho), **kw)
    coef, intercept = reduce_support(D, res.coef, res.intercept, penalty=penalty)
    cert = duality_gap(D, Y, coef, intercept, float(rho), loss=loss, penalty=penalty, heads=heads)
    net = reconstruct(
        params,
        dic,
        coef,
        intercept,
        out_layout=tuple(out_layout),
        head_classes=tuple(head_classes),
        beta=beta,
        bias_channel=dic.bias_channel,
        dtype=torch.float64,
        device=device,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # margins are reported, not warned about, here
        report = verify_reconstruction(net, dic, x, steps, coef, intercept).check()
    net.requires_grad_(False)
    return ReadoutFit(
        net,
        coef,
        intercept,
        float(rho),
        res,
        cert,
        dic,
        report,
        tuple(out_layout),
        tuple(head_classes),
        tuple(path),
        tol,
    )


def _select_rho(
    D: np.ndarray,
    Y: np.ndarray,
    top: float,
    n: int,
    S: int,
    labels: np.ndarray | None,
    random_state: Any,
    out_layout: tuple[int, ...],
    kw: dict[str, Any],
) -> tuple[float, list[dict[str, float]]]:
    if not top > RHO_MAX_FLOOR:  # W = 0 is optimal for every rho (up to rounding)
        return 1.0, []
    if n < MIN_SAMPLES_FOR_SPLIT:
        return SMALL_N_RHO_RATIO * top, []
    rng = check_random_state(random_state)
    sample_labels = None if labels is None else np.asarray(labels).reshape(S, n)[-1]
    idx = np.arange(n)
    try:
        tr, va = train_test_split(
            idx, test_size=VALIDATION_FRACTION, random_state=rng, stratify=sample_labels
        )
    except ValueError:  # a class too small to stratify
        tr, va = train_test_split(idx, test_size=VALIDATION_FRACTION, random_state=rng)
    rows_tr = (np.arange(S)[:, None] * n + np.sort(tr)[None]).reshape(-1)
    rows_va = (np.arange(S)[:, None] * n + np.sort(va)[None]).reshape(-1)
    Dtr, Ytr, Dva = D[rows_tr], Y[rows_tr], D[rows_va]
    try:
        top_tr = rho_max(Dtr, Ytr, loss=kw["loss"], penalty=kw["penalty"], heads=kw["heads"])
    except ValueError:  # e.g. a class absent from the training part under logistic loss
        return SMALL_N_RHO_RATIO * top, []
    if not top_tr > RHO_MAX_FLOOR:
        return SMALL_N_RHO_RATIO * top, []
    path: list[dict[str, float]] = []
    best, best_score, since, W0, b0 = None, -np.inf, 0, None, None
    for r in top_tr * np.geomspace(1.0, RHO_MIN_RATIO, N_RHOS + 1)[1:]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # path solves are not returned; the refit warns
            res = solve(Dtr, Ytr, float(r), W0=W0, b0=b0, **kw)
        W0, b0 = res.coef, res.intercept
        out = Dva @ res.coef + res.intercept  # (rows_va, C)
        if labels is not None:
            pred = decode_outputs(torch.from_numpy(out), out_layout)[:, 0].numpy()
            score = float((pred == np.asarray(labels)[rows_va]).mean())
        else:
            score = -float(np.mean((out - Y[rows_va]) ** 2))
        path.append(
            {
                "rho": float(r),
                "val_score": score,
                "support": int(res.support.size),
                "gap": float(res.gap),
            }
        )
        if score > best_score:
            best, best_score, since = float(r), score, 0
        else:
            since += 1
            if since >= PATH_PATIENCE:
                break
    return float(best), path


# --------------------------------------------------------------------------- #
# Estimators
# --------------------------------------------------------------------------- #
class _ConvexSNNBase(BaseEstimator):
    """Shared parameters, validation, input reshaping and fitting."""

    _parameter_constraints: ClassVar[dict] = {
        "n_steps": [Interval(Integral, 1, None, closed="left"), None],
        "depth": [Interval(Integral, 2, None, closed="left")],
        "branches": [Interval(Integral, 1, None, closed="left")],
        "width": [Interval(Integral, 1, None, closed="left")],
        "beta": [Interval(Real, 0, 1, closed="both")],
        "rho": [Interval(Real, 0, None, closed="neither"), None],
        "loss": [StrOptions({"squared", "logistic", "softmax"})],
        "penalty": [StrOptions({"l1", "group_l2"})],
        "witnesses": [StrOptions({"gaussian", "calibrated"})],
        "sigma": [Interval(Real, 0, None, closed="neither")],
        "tol": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
        "device": [str, torch.device],
    }

    def __init__(
        self,
        n_steps: int | None = None,
        depth: int = 3,
        branches: int = 16,
        width: int = 32,
        beta: float = 0.99,
        rho: float | None = None,
        loss: LossName = "squared",
        penalty: PenaltyName = "l1",
        witnesses: Literal["gaussian", "calibrated"] = "gaussian",
        sigma: float = 1.0,
        tol: float = 1e-6,
        random_state: int | np.random.RandomState | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.n_steps = n_steps
        self.depth = depth
        self.branches = branches
        self.width = width
        self.beta = beta
        self.rho = rho
        self.loss = loss
        self.penalty = penalty
        self.witnesses = witnesses
        self.sigma = sigma
        self.tol = tol
        self.random_state = random_state
        self.device = device

    # ------------------------------------------------------------------ input
    def _flatten(self, X: Any) -> tuple[Any, tuple[int, int] | None]:
        ndim = getattr(X, "ndim", None)
        if ndim is None and isinstance(X, list | tuple):
            ndim = np.asarray(X).ndim
        if sp.issparse(X) or ndim != 3:
            return X, None
        arr = np.asarray(X)
        n, T, d = arr.shape
        return arr.reshape(n, T * d), (T, d)

    def _validate_fit_input(self, X: Any, y: Any, multi_output: bool = False):
        X, shape3 = self._flatten(X)
        X, y = validate_data(
            self,
            X,
            y,
            dtype=np.float64,
            multi_output=multi_output,
            y_numeric=not isinstance(self, ClassifierMixin),
        )
        n_feat = X.shape[1]
        if shape3 is not None:
            T, d = shape3
            if self.n_steps is not None and self.n_steps != T:
                raise ValueError(
                    f"n_steps must match the T of X of shape (n, T, d) = {(X.shape[0], T, d)}; "
                    f"got n_steps={self.n_steps}"
                )
        else:
            T = 1 if self.n_steps is None else int(self.n_steps)
            if n_feat % T:
                raise ValueError(
                    f"X of shape (n, T * d) must have a multiple of n_steps = {T} columns; "
                    f"got {n_feat}"
                )
            d = n_feat // T
        self.n_steps_, self.n_inputs_ = int(T), int(d)
        return self._sequences(X), y

    def _validate_predict_input(self, X: Any) -> torch.Tensor:
        check_is_fitted(self, "network_")
        X, shape3 = self._flatten(X)
        if shape3 is not None and shape3 != (self.n_steps_, self.n_inputs_):
            raise ValueError(
                f"X of shape (n, T, d) must have (T, d) = {(self.n_steps_, self.n_inputs_)} as "
                f"in fit; got {shape3}"
            )
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._sequences(X)

    def _sequences(self, X: np.ndarray) -> torch.Tensor:
        """(n, T * d) rows -> time-major float64 tensor (T, n, d)."""
        n = X.shape[0]
        arr = np.array(X, dtype=np.float64, order="C").reshape(n, self.n_steps_, self.n_inputs_)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(1, 0, 2)))

    # ------------------------------------------------------------------ fit
    def _fit_sequences(
        self,
        x: torch.Tensor,
        Y: np.ndarray,
        heads: tuple[int, ...],
        out_layout: tuple[int, ...],
        head_classes: tuple[int, ...],
        labels: np.ndarray | None,
    ) -> None:
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        gen = torch.Generator().manual_seed(seed)
        T, _, d = x.shape
        device = torch.device(self.device)
        params = sample_witnesses(
            d,
            (self.width,) * (self.depth - 1),
            self.branches,
            sigma=float(self.sigma),
            scheme=self.witnesses,
            generator=gen,
            device=device,
            dtype=torch.float64,
            x=x if self.witnesses == "calibrated" else None,
            beta=float(self.beta),
            steps=(T - 1,),
        )
        fit = convex_readout(
            params,
            x.to(device),
            Y,
            steps=(T - 1,),
            beta=float(self.beta),
            loss=self.loss,
            penalty=self.penalty,
            heads=heads,
            out_layout=out_layout,
            head_classes=head_classes,
            rho=self.rho,
            tol=float(self.tol),
            labels=labels,
            random_state=rng,
            device=device,
        )
        self.fit_ = fit
        self.network_ = fit.net
        self.coef_ = fit.coef
        self.intercept_ = fit.intercept
        self.support_ = fit.support
        self.dual_gap_ = fit.gap
        self.rel_gap_ = fit.rel_gap
        self.certified_ = fit.certified
        self.n_iter_ = 0 if fit.solve is None else int(fit.solve.n_iter)
        self.rho_ = fit.rho
        self.rho_path_ = list(fit.path)
        self.n_atoms_ = int(fit.coef.shape[0])

    def _outputs(self, X: Any) -> np.ndarray:
        """Readout of ``network_`` at the last step, shape (n, C)."""
        x = self._validate_predict_input(X)
        net = self.network_
        with torch.no_grad():
            out = net(x.to(device=net.device, dtype=net.dtype), steps=[x.shape[0] - 1])[0]
        return out.cpu().numpy().astype(np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class ConvexSNNClassifier(ClassifierMixin, _ConvexSNNBase):
    """LIF spiking-network classifier whose readout is certified globally optimal.

    Witness hidden layers (K branches of ``depth - 1`` LIF layers of
    ``width`` neurons) are drawn at random; the spikes of the last hidden
    layer at the last step of each sequence form a binary dictionary; the
    convex program of the readout is solved to a duality gap
    ``<= tol * max(1, |primal|)``, its support reduced, and a real LIF
    network is rebuilt from it. Predictions run that network.

    Parameters
    ----------
    n_steps : int, optional
        T. Needed to cut a 2-D ``X`` of shape (n, T * d) into steps; with
        None a 2-D ``X`` is a single step and a 3-D ``X`` (n, T, d) gives T.
    depth : int
        L = hidden LIF layers + readout, >= 2.
    branches : int
        K, parallel branches of witnesses.
    width : int
        m, neurons per hidden layer.
    beta : float
        LIF leak in [0, 1].
    rho : float, optional
        Regularization strength. None (default) selects it on a held-out 20%
        of the training rows along a path of 8 values from rho_max down to
        1e-3 rho_max, then refits on all rows (see :func:`convex_readout`).
    loss : {"squared", "logistic", "softmax"}
        ``squared`` (the paper's): +-1 target for two classes, one-hot for
        more; no ``predict_proba``. ``logistic``: one column for two classes,
        one-vs-rest columns for more; ``predict_proba`` from sigmoids
        (normalized over classes). ``softmax``: cross-entropy over one-hot
        columns; ``predict_proba`` from the softmax.
    penalty : {"l1", "group_l2"}
    witnesses : {"gaussian", "calibrated"}
        Witness scheme (see :func:`cvxsnn.witnesses.sample_witnesses`).
    sigma : float
        Standard deviation of Gaussian witness weights.
    tol : float
        Relative duality-gap tolerance, in (0, 1).
    random_state : int, RandomState or None
        Seeds the witnesses and the validation split.
    device : str or torch.device
        Where the dictionary is built and the network runs.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (P, C)
        Readout coefficients over the P dictionary atoms (C = 1 for two
        classes under the squared or logistic loss, else n_classes); the
        atoms are spike columns, not input features.
    intercept_ : ndarray of shape (C,)
    support_ : ndarray of int
        Atoms with a nonzero coefficient row (after support reduction).
    dual_gap_ : float
        Absolute duality gap of ``(coef_, intercept_)``; ``rel_gap_`` relative.
    certified_ : bool
        ``rel_gap_ <= tol``.
    n_iter_ : int
        Outer iterations of the final solve.
    rho_ : float
        rho used; ``rho_path_`` lists the automatic selection.
    network_ : ParallelLIFNet
        The rebuilt spiking network (an ``nn.Module``, float64).
    fit_ : ReadoutFit
        Everything the fit computed (dictionary, certificate, reconstruction
        report).
    n_features_in_ : int
        Columns of the 2-D view of X (T * d); ``n_steps_`` and ``n_inputs_``
        are T and d.

    Notes
    -----
    scikit-learn's ``check_estimator`` passes with default parameters
    except the checks listed in :data:`EXPECTED_FAILED_CHECKS` (empty at
    the time of writing: every check passes).
    """

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> ConvexSNNClassifier:
        """Fit on sequences ``X`` (n, T, d) or (n, T * d) and labels ``y`` (n,); returns self."""
        x, y = self._validate_fit_input(X, y)
        check_classification_targets(y)
        y = column_or_1d(y, warn=True)
        enc = LabelEncoder().fit(y)
        self.classes_ = enc.classes_
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data; "
                f"got 1 class: {self.classes_[0]!r}"
            )
        labels = enc.transform(y)
        Y, heads, layout, head_classes = encode_labels(labels, n_classes, self.loss)
        self._fit_sequences(x, Y, heads, layout, head_classes, labels)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Readout values: shape (n,) for two classes (positive: ``classes_[1]``), else (n, C)."""
        out = self._outputs(X)
        if len(self.classes_) == 2:
            return out[:, 0] if out.shape[1] == 1 else out[:, 1] - out[:, 0]
        return out

    def predict(self, X: Any) -> np.ndarray:
        """Class of each sequence at its last step."""
        scores = self.decision_function(X)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[idx]

    def _has_proba(self) -> bool:
        return self.loss in ("logistic", "softmax")

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n, n_classes) (``logistic`` / ``softmax`` loss only)."""
        out = self._outputs(X)
        if self.loss == "softmax":
            z = out - out.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        p = 1.0 / (1.0 + np.exp(-out))
        if out.shape[1] == 1:
            return np.hstack([1.0 - p, p])
        return p / p.sum(axis=1, keepdims=True)

    @available_if(_has_proba)
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


class ConvexSNNRegressor(RegressorMixin, _ConvexSNNBase):
    """LIF spiking-network regressor with a certified globally optimal readout.

    Same parameters and fitted attributes as :class:`ConvexSNNClassifier`
    (``loss`` must be ``"squared"``; no ``classes_``). ``y`` of shape (n,)
    or (n, C): the value of each sequence at its last step.
    """

    _parameter_constraints: ClassVar[dict] = {
        **_ConvexSNNBase._parameter_constraints,
        "loss": [StrOptions({"squared"})],
    }

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> ConvexSNNRegressor:
        """Fit on sequences ``X`` (n, T, d) or (n, T * d) and targets ``y`` (n,) or (n, C)."""
        x, y = self._validate_fit_input(X, y, multi_output=True)
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1
        Y = y[:, None] if y.ndim == 1 else y
        if Y.shape[1] == 0:
            raise ValueError(f"y must have at least one column; got shape {y.shape}")
        C = Y.shape[1]
        layout, head_classes = ((1,), (2,)) if C == 1 else ((C,), (C,))
        self._fit_sequences(x, Y, (C,), layout, head_classes, None)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Readout at the last step: shape (n,) or (n, C) as ``y`` in fit."""
        out = self._outputs(X)
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
