"""Reproduction of the paper's tables and figures: configs, resumable sweeps, reports.

``cvxsnn reproduce TABLE`` runs every (setting x method x seed) cell of an
experiment config into a resumable JSON-lines results file;
``cvxsnn report TABLE`` turns that file into a Markdown table (mean and 95%
Student-t interval over seeds beside the paper's number) and a plot.
"""

from __future__ import annotations

from cvxsnn.experiments.config import (
    PRESETS,
    Experiment,
    PlotSpec,
    Preset,
    Setting,
    experiment_names,
    load_experiment,
)
from cvxsnn.experiments.paper import PAPER, PaperCell
from cvxsnn.experiments.report import Report, report, t_interval
from cvxsnn.experiments.runner import (
    Cell,
    CellError,
    CellStatus,
    ReproduceSummary,
    comparable,
    expand_cells,
    read_results,
    reproduce,
    sweep_status,
)

__all__ = [
    "PAPER",
    "PRESETS",
    "Cell",
    "CellError",
    "CellStatus",
    "Experiment",
    "PaperCell",
    "PlotSpec",
    "Preset",
    "Report",
    "ReproduceSummary",
    "Setting",
    "comparable",
    "expand_cells",
    "experiment_names",
    "load_experiment",
    "read_results",
    "report",
    "reproduce",
    "sweep_status",
    "t_interval",
]
