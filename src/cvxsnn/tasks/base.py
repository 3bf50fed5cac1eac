"""Typed datasets shared by every task."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["SequenceDataset", "TaskData", "check_int", "seeded_generator", "seen_fraction"]


@dataclass(frozen=True)
class SequenceDataset:
    """Sequences with targets at some of their steps.

    Attributes
    ----------
    x : Tensor of shape (T, n, d)
        Inputs, time-major, floating point.
    targets : Tensor of shape (S, n, H), dtype long
        Class of every head at each supervised step.
    steps : tuple of int
        The S supervised steps (0-based indices into T), increasing.
    head_classes : tuple of int
        Number of classes of each of the H heads.
    head_names : tuple of str
        A name per head (e.g. ``("label",)`` or ``("sum", "carry")``).
    aux : dict of str to Tensor
        Task-specific extras (e.g. the operands of an addition, for
        autoregressive evaluation). First dimension n.
    """

    x: Tensor
    targets: Tensor
    steps: tuple[int, ...]
    head_classes: tuple[int, ...]
    head_names: tuple[str, ...]
    aux: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        x, y = self.x, self.targets
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        object.__setattr__(self, "head_classes", tuple(int(c) for c in self.head_classes))
        object.__setattr__(self, "head_names", tuple(self.head_names))
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[0] < 1:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (T, n, d) with T >= 1; got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point; got {x.dtype}")
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or infinite values")
        T, n, _ = x.shape
        H = len(self.head_classes)
        if H < 1 or len(self.head_names) != H:
            raise ValueError(
                f"head_classes and head_names must be non-empty and of equal length; "
                f"got {self.head_classes} and {self.head_names}"
            )
        S = len(self.steps)
        if (
            S < 1
            or list(self.steps) != sorted(set(self.steps))
            or self.steps[0] < 0
            or self.steps[-1] >= T
        ):
            raise ValueError(f"steps must be increasing indices in [0, {T}); got {self.steps}")
        if not isinstance(y, Tensor) or tuple(y.shape) != (S, n, H):
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"targets must have shape (S, n, H) = {(S, n, H)}; got {shape}")
        if y.dtype != torch.long:
            raise ValueError(f"targets must have dtype torch.long; got {y.dtype}")
        for h, c in enumerate(self.head_classes):
            if c < 2:
                raise ValueError(f"head {self.head_names[h]!r} needs >= 2 classes; got {c}")
            yh = y[..., h]
            if yh.numel() and (int(yh.min()) < 0 or int(yh.max()) >= c):
                raise ValueError(
                    f"targets of head {self.head_names[h]!r} must lie in [0, {c}); "
                    f"got values in [{int(yh.min())}, {int(yh.max())}]"
                )
        for key, value in self.aux.items():
            if value.shape[0] != n:
                raise ValueError(
                    f"aux[{key!r}] must have first dimension n = {n}; got {value.shape[0]}"
                )

    @property
    def T(self) -> int:
        return self.x.shape[0]

    @property
    def n(self) -> int:
        return self.x.shape[1]

    @property
    def d(self) -> int:
        return self.x.shape[2]

    def subset(self, index: Tensor) -> SequenceDataset:
        """The sequences at ``index`` (a 1-D long tensor or boolean mask over n)."""
        return SequenceDataset(
            self.x[:, index],
            self.targets[:, index],
            self.steps,
            self.head_classes,
            self.head_names,
            {k: v[index] for k, v in self.aux.items()},
        )

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> SequenceDataset:
        """Copy with inputs moved to ``device`` and cast to ``dtype``."""
        return SequenceDataset(
            self.x.to(device=device, dtype=dtype),
            self.targets.to(device=device),
            self.steps,
            self.head_classes,
            self.head_names,
            {k: v.to(device=device) for k, v in self.aux.items()},
        )


@dataclass(frozen=True)
class TaskData:
    """A task's splits.

    Attributes
    ----------
    name : str
        Task name (``xor``, ``addition``, ``mnist-seq``, ``custom``).
    train, val, test : SequenceDataset
        Disjoint splits. The test split does not depend on the run's seed.
    extra : dict of str to SequenceDataset
        Further evaluation sets (e.g. out-of-distribution lengths).
    params : dict
        The generator's settings (JSON-serialisable), recorded with results.
    """

    name: str
    train: SequenceDataset
    val: SequenceDataset
    test: SequenceDataset
    extra: dict[str, SequenceDataset] = field(default_factory=dict)
    params: dict = field(default_factory=dict)


def seeded_generator(seed: int, stream: str) -> torch.Generator:
    """A CPU generator for one named random stream of a seed.

    Streams of one seed (``"xor-train"``, ``"xor-test"``, ...) are independent
    of each other, and a stream does not depend on how much another one drew.

    Parameters
    ----------
    seed : int
    stream : str
        Name of the stream.
    """
    digest = hashlib.sha256(f"{stream}:{int(seed)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def seen_fraction(train_rows: Tensor, test_rows: Tensor) -> float:
    """Share of the rows of ``test_rows`` that occur exactly among ``train_rows``.

    Parameters
    ----------
    train_rows : Tensor of shape (n_train, F)
    test_rows : Tensor of shape (n_test, F)

    Returns
    -------
    float
        In [0, 1]; 0.0 when ``test_rows`` is empty.
    """
    if test_rows.shape[0] == 0:
        return 0.0
    seen = {r.tobytes() for r in train_rows.contiguous().cpu().numpy()}
    hits = sum(r.tobytes() in seen for r in test_rows.contiguous().cpu().numpy())
    return hits / test_rows.shape[0]


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as an int after checking ``minimum <= value <= maximum``.

    Raises
    ------
    ValueError
        Naming ``name``, the allowed range and the value that came.
    """
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    v = value.__index__()
    if v < minimum or (maximum is not None and v > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be >= {minimum}{upper}; got {v}")
    return v
