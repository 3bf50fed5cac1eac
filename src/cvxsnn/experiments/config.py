"""Experiment configs: one TOML file per table or figure of the paper.

A config holds base settings (fields of :class:`cvxsnn.pipeline.TrainConfig`),
a grid of settings (each a labelled set of overrides), the methods to run on
every setting, the metrics to report, the paper's reference per cell (a key
into :data:`cvxsnn.experiments.paper.PAPER`) and three presets (``quick``,
``standard``, ``paper``) that set sizes and the number of seeds.

The settings of one run are, later entries winning::

    TrainConfig defaults <- [base] <- [presets.P.base] <- [presets.P.tasks.<task>]
                         <- grid cell <- method, seed

where ``<task>`` is the cell's task (sizes usually depend on the task).

File layout::

    # cvxsnn reproduce table2 --preset standard
    title = "..."
    methods = ["sg", "cvx"]
    metrics = ["acc"]            # keys of the test metrics, or record keys (gap, P, ...)

    [base]
    task = "xor"

    [[grid]]
    label = "L=3"
    paper = "L=3"                # optional
    depth = 3

    [plot]                       # optional: x is a TrainConfig field, or "metrics"
    x = "depth"

    [presets.quick]
    seeds = 2
    cells = ["L=3"]              # optional subset of the grid's labels
    [presets.quick.base]
    n_train = 64
    [presets.quick.tasks.mnist-seq]   # optional, per task
    n_train = 100

Unknown keys and values of the wrong type are rejected with a message naming
the file and the key.
"""

from __future__ import annotations

import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from cvxsnn.experiments.paper import PAPER, PaperCell
from cvxsnn.network import config_hash
from cvxsnn.pipeline import METHODS, TASKS, TrainConfig

__all__ = [
    "PRESETS",
    "Experiment",
    "PlotSpec",
    "Preset",
    "Setting",
    "experiment_names",
    "load_experiment",
]

PresetName = Literal["quick", "standard", "paper"]
PRESETS: tuple[str, ...] = get_args(PresetName)
#: TrainConfig fields that a config may not set: the runner owns them.
RUNNER_FIELDS = ("seed", "method")
CONVEX_METHODS = ("cvx", "sg-cvx", "cvx-cg", "sg-cvx-cg")

_TOP_KEYS = {
    "title": str,
    "description": str,
    "methods": list,
    "metrics": list,
    "base": dict,
    "grid": list,
    "presets": dict,
    "plot": dict,
}
_PRESET_KEYS = {"seeds": int, "base": dict, "tasks": dict, "cells": list, "description": str}
_PLOT_KEYS = {
    "x": str,
    "xlabel": str,
    "ylabel": str,
    "logx": bool,
    "metrics": list,
    "xvalues": list,
}
_TRAIN_HINTS = typing.get_type_hints(TrainConfig)


@dataclass(frozen=True)
class Setting:
    """One labelled cell of the grid, resolved for a preset.

    Attributes
    ----------
    label : str
        Unique within the experiment (``"L=3"``, ``"xor-L10-T6"``, ...).
    overrides : mapping of str to Any
        The grid cell's own TrainConfig overrides.
    config : TrainConfig
        Base, preset base and overrides applied; ``method`` and ``seed`` at
        their defaults (the runner sets them per cell).
    paper : PaperCell or None
        The paper's numbers for this setting.
    """

    label: str
    overrides: Mapping[str, Any]
    config: TrainConfig
    paper: PaperCell | None = None


@dataclass(frozen=True)
class Preset:
    """Sizes and seeds of one preset."""

    name: str
    seeds: int
    base: Mapping[str, Any] = field(default_factory=dict)
    cells: tuple[str, ...] | None = None
    description: str = ""
    tasks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PlotSpec:
    """What a sweep's plot shows.

    ``x`` is a TrainConfig field that varies across the grid (one line per
    method and metric), or ``"metrics"``: one point per metric of
    ``metrics`` at the positions ``xvalues`` (one line per method and setting).
    """

    x: str
    xlabel: str | None = None
    ylabel: str | None = None
    logx: bool = False
    metrics: tuple[str, ...] | None = None
    xvalues: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment config (one table or figure)."""

    name: str
    title: str
    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    base: Mapping[str, Any]
    grid: tuple[Mapping[str, Any], ...]
    presets: Mapping[str, Preset]
    plot: PlotSpec | None = None
    description: str = ""
    source: str = ""

    def preset(self, name: str) -> Preset:
        """The preset called ``name``; ValueError listing the valid ones otherwise."""
        if name not in self.presets:
            raise ValueError(f"preset must be one of {list(self.presets)}; got {name!r}")
        return self.presets[name]

    def settings(self, preset: str) -> tuple[Setting, ...]:
        """The grid's settings under ``preset`` (its ``cells`` subset, in grid order)."""
        p = self.preset(preset)
        out = []
        for cell in self.grid:
            label = cell["label"]
            if p.cells is not None and label not in p.cells:
                continue
            overrides = {k: v for k, v in cell.items() if k not in ("label", "paper")}
            values = {**self.base, **p.base}
            task = overrides.get("task", values.get("task", TrainConfig.task))
            values.update(p.tasks.get(task, {}))
            values.update(overrides)
            try:
                config = TrainConfig(**values)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"{self.source}: grid cell {label!r} under preset {preset!r}: {err}"
                ) from None
            paper = PAPER[self.name][cell["paper"]] if "paper" in cell else None
            out.append(Setting(label, overrides, config, paper))
        return tuple(out)

    def config_hash(self, preset: str) -> str:
        """Hash of what determines the runs of ``preset``: settings and methods.

        Titles, metrics, plots and paper numbers only shape the report, so
        changing them keeps finished results valid; a changed setting,
        method or preset size does not.
        """
        blob = {
            "experiment": self.name,
            "preset": preset,
            "methods": list(self.methods),
            "settings": [[s.label, _identity_dict(s.config)] for s in self.settings(preset)],
        }
        return config_hash(blob)


def _identity_dict(config: TrainConfig) -> dict[str, Any]:
    """A TrainConfig as a dict without where the data lives (not a setting)."""
    d = config.identity()
    d.pop("data_dir")
    return d


# --------------------------------------------------------------------------- #
# Loading and validation
# --------------------------------------------------------------------------- #
def _configs_dir() -> Any:
    return resources.files("cvxsnn.experiments") / "configs"


def experiment_names() -> list[str]:
    """Names of the experiment configs shipped with the package."""
    return sorted(
        p.name[: -len(".toml")] for p in _configs_dir().iterdir() if p.name.endswith(".toml")
    )


def load_experiment(name: str | Path) -> Experiment:
    """Load and validate an experiment config.

    Parameters
    ----------
    name : str or Path
        A shipped config's name (``"table2"``, see :func:`experiment_names`)
        or the path of a TOML file (its stem is the experiment's name).

    Raises
    ------
    ValueError
        Unknown experiment, unknown key, value of the wrong type, or a
        setting TrainConfig rejects; the message names the file and the key.
    """
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"experiment config not found: {path}")
        text, source, stem = path.read_text(), str(path), path.stem
    else:
        names = experiment_names()
        if str(name) not in names:
            raise ValueError(f"experiment must be one of {names} or a .toml file; got {name!r}")
        entry = _configs_dir() / f"{name}.toml"
        text, source, stem = entry.read_text(), f"{name}.toml", str(name)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{source}: not valid TOML: {err}") from None
    return parse_experiment(raw, stem, source)


def parse_experiment(raw: Mapping[str, Any], name: str, source: str = "<config>") -> Experiment:
    """Validate a parsed TOML document into an :class:`Experiment` (see :func:`load_experiment`)."""
    _check_keys(raw, _TOP_KEYS, source, "the top level")
    for key in ("title", "methods", "metrics", "grid", "presets"):
        if key not in raw:
            raise ValueError(f"{source}: missing required key {key!r} at the top level")
    methods = _str_list(raw["methods"], source, "methods")
    for m in methods:
        if m not in METHODS:
            raise ValueError(
                f"{source}: 'methods' entries must be one of {list(METHODS)}; got {m!r}"
            )
    if len(set(methods)) != len(methods):
        raise ValueError(f"{source}: 'methods' has duplicates: {methods}")
    metrics = _str_list(raw["metrics"], source, "metrics")
    base = _train_overrides(raw.get("base", {}), source, "[base]")
    grid = []
    labels: set[str] = set()
    if not raw["grid"]:
        raise ValueError(f"{source}: 'grid' must hold at least one [[grid]] cell")
    for i, cell in enumerate(raw["grid"]):
        where = f"[[grid]] cell {i + 1}"
        if not isinstance(cell, dict):
            raise ValueError(f"{source}: {where} must be a table; got {type(cell).__name__}")
        label = cell.get("label")
        if not isinstance(label, str) or not label:
            raise ValueError(
                f"{source}: {where} needs a 'label' (a non-empty string); got {label!r}"
            )
        if label in labels:
            raise ValueError(f"{source}: grid label {label!r} appears twice")
        labels.add(label)
        paper = cell.get("paper")
        if paper is not None:
            if not isinstance(paper, str):
                raise ValueError(f"{source}: 'paper' of grid cell {label!r} must be a string")
            valid = sorted(PAPER.get(name, {}))
            if paper not in valid:
                raise ValueError(
                    f"{source}: 'paper' of grid cell {label!r} must be one of {valid} "
                    f"(keys of PAPER[{name!r}]); got {paper!r}"
                )
        rest = {k: v for k, v in cell.items() if k not in ("label", "paper")}
        grid.append(
            {
                "label": label,
                **({"paper": paper} if paper else {}),
                **_train_overrides(rest, source, f"grid cell {label!r}"),
            }
        )
    presets = _parse_presets(raw["presets"], labels, source)
    plot = _parse_plot(raw["plot"], metrics, source) if "plot" in raw else None
    exp = Experiment(
        name=name,
        title=raw["title"],
        methods=tuple(methods),
        metrics=tuple(metrics),
        base=base,
        grid=tuple(grid),
        presets=presets,
        plot=plot,
        description=raw.get("description", ""),
        source=source,
    )
    for p in PRESETS:
        exp.settings(p)  # every preset must give valid TrainConfigs
    return exp


def _parse_presets(raw: Any, labels: set[str], source: str) -> dict[str, Preset]:
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: 'presets' must be a table; got {type(raw).__name__}")
    _check_keys(raw, dict.fromkeys(PRESETS, dict), source, "[presets]")
    missing = [p for p in PRESETS if p not in raw]
    if missing:
        raise ValueError(f"{source}: [presets] must define {list(PRESETS)}; missing {missing}")
    out = {}
    for name in PRESETS:
        p = raw[name]
        where = f"[presets.{name}]"
        _check_keys(p, _PRESET_KEYS, source, where)
        seeds = p.get("seeds", 3)
        if seeds < 1:
            raise ValueError(f"{source}: 'seeds' in {where} must be >= 1; got {seeds}")
        cells = None
        if "cells" in p:
            cells = tuple(_str_list(p["cells"], source, f"cells in {where}"))
            unknown = [c for c in cells if c not in labels]
            if unknown or not cells:
                raise ValueError(
                    f"{source}: 'cells' in {where} must name grid labels {sorted(labels)}; "
                    f"got {list(cells)}"
                )
        tasks = {}
        for task, over in p.get("tasks", {}).items():
            if task not in TASKS:
                raise ValueError(
                    f"{source}: unknown key {task!r} in {where}.tasks; valid keys are {list(TASKS)}"
                )
            tasks[task] = _train_overrides(over, source, f"{where}.tasks.{task}")
            if "task" in tasks[task]:
                raise ValueError(f"{source}: key 'task' in {where}.tasks.{task} is not allowed")
        out[name] = Preset(
            name,
            seeds,
            _train_overrides(p.get("base", {}), source, where + ".base"),
            cells,
            p.get("description", ""),
            tasks,
        )
    return out


def _parse_plot(raw: Any, metrics: list[str], source: str) -> PlotSpec:
    _check_keys(raw, _PLOT_KEYS, source, "[plot]")
    if "x" not in raw:
        raise ValueError(f"{source}: [plot] needs 'x' (a TrainConfig field or \"metrics\")")
    x = raw["x"]
    if x != "metrics" and x not in _TRAIN_HINTS:
        raise ValueError(
            f"{source}: 'x' in [plot] must be \"metrics\" or a TrainConfig field; got {x!r}"
        )
    plot_metrics = tuple(_str_list(raw.get("metrics", metrics), source, "metrics in [plot]"))
    unknown = [m for m in plot_metrics if m not in metrics]
    if unknown:
        raise ValueError(f"{source}: 'metrics' in [plot] must be among {metrics}; got {unknown}")
    xvalues = None
    if "xvalues" in raw:
        xv = raw["xvalues"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in xv):
            raise ValueError(f"{source}: 'xvalues' in [plot] must be a list of numbers; got {xv}")
        xvalues = tuple(float(v) for v in xv)
    if x == "metrics" and (xvalues is None or len(xvalues) != len(plot_metrics)):
        raise ValueError(
            f"{source}: with x = \"metrics\", [plot] needs 'xvalues' with one number per plotted "
            f"metric ({len(plot_metrics)}); got {raw.get('xvalues')}"
        )
    return PlotSpec(
        x, raw.get("xlabel"), raw.get("ylabel"), raw.get("logx", False), plot_metrics, xvalues
    )


def _check_keys(raw: Mapping[str, Any], valid: Mapping[str, type], source: str, where: str) -> None:
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: {where} must be a table; got {type(raw).__name__}")
    for key, value in raw.items():
        if key not in valid:
            raise ValueError(
                f"{source}: unknown key {key!r} in {where}; valid keys are {sorted(valid)}"
            )
        expected = valid[key]
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if not ok:
            raise ValueError(
                f"{source}: key {key!r} in {where} must be of type {expected.__name__}; "
                f"got {type(value).__name__} {value!r}"
            )


def _str_list(value: Any, source: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{source}: {key!r} must be a list of strings; got {value!r}")
    if not value:
        raise ValueError(f"{source}: {key!r} must not be empty")
    return list(value)


def _train_overrides(raw: Any, source: str, where: str) -> dict[str, Any]:
    """Check that ``raw`` holds TrainConfig fields with values of their types."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: {where} must be a table; got {type(raw).__name__}")
    out = {}
    for key, value in raw.items():
        if key in RUNNER_FIELDS:
            raise ValueError(
                f"{source}: key {key!r} in {where} is set by the runner (methods, --seeds), "
                "not by a config"
            )
        if key not in _TRAIN_HINTS:
            raise ValueError(
                f"{source}: unknown key {key!r} in {where}; valid keys are TrainConfig fields "
                f"{sorted(k for k in _TRAIN_HINTS if k not in RUNNER_FIELDS)}"
            )
        if not _matches(value, _TRAIN_HINTS[key]):
            raise ValueError(
                f"{source}: key {key!r} in {where} must be {_describe(_TRAIN_HINTS[key])}; "
                f"got {type(value).__name__} {value!r}"
            )
        out[key] = (
            float(value) if _is_float_field(_TRAIN_HINTS[key]) and isinstance(value, int) else value
        )
    return out


def _args(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _is_float_field(tp: Any) -> bool:
    return float in _args(tp)


def _matches(value: Any, tp: Any) -> bool:
    for t in _args(tp):
        if t is type(None):
            continue  # TOML has no null: optional fields are left out instead
        if typing.get_origin(t) is Literal:
            if value in typing.get_args(t) and isinstance(value, str):
                return True
        elif t is bool:
            if isinstance(value, bool):
                return True
        elif t is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif t is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return True
        elif isinstance(t, type) and isinstance(value, t):
            return True
    return False


def _describe(tp: Any) -> str:
    names = []
    for t in _args(tp):
        if t is type(None):
            continue
        if typing.get_origin(t) is Literal:
            names.append(f"one of {list(typing.get_args(t))}")
        else:
            names.append(getattr(t, "__name__", str(t)))
    return " or ".join(names)
