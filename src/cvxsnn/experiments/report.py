"""Tables and plots of an experiment from its results file (never retrains).

For every (setting, method) the report gives, per metric, the mean over
seeds and its 95% Student-t interval, mean +- t_{0.975, n-1} * s / sqrt(n)
with s the sample standard deviation (no interval from one seed), the number
of seeds, the paper's number beside ours, and for the convex methods the
largest duality gap over seeds (absolute and relative). Records are matched
to cells by their TrainConfig, so any number of seeds in the file is used.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import textwrap
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvxsnn.experiments.config import CONVEX_METHODS, Experiment, Setting, load_experiment
from cvxsnn.experiments.runner import check_header, default_results_path, read_results
from cvxsnn.network import config_hash

__all__ = [
    "CellSummary",
    "Report",
    "metric_value",
    "plot_sweep",
    "render_markdown",
    "report",
    "summarize",
    "t_interval",
]


@dataclass(frozen=True)
class CellSummary:
    """One (setting, method, metric) of a report.

    Attributes
    ----------
    n : int
        Seeds with a value of this metric.
    mean, low, high : float or None
        Mean over seeds and the 95% Student-t interval (None below 2 seeds).
    paper : float or None
        The paper's number for this cell.
    max_gap, max_rel_gap : float or None
        Largest duality gap over seeds (convex methods).
    """

    label: str
    method: str
    metric: str
    n: int
    mean: float | None
    low: float | None
    high: float | None
    paper: float | None
    max_gap: float | None = None
    max_rel_gap: float | None = None
    all_certified: bool | None = None


@dataclass(frozen=True)
class Report:
    """A rendered report."""

    experiment: str
    preset: str
    results: str
    rows: tuple[CellSummary, ...]
    markdown: str
    n_records: int
    n_settings: int
    plot: str | None = None
    table_path: str | None = None


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of ``values``.

    Returns
    -------
    (mean, low, high)
        ``low = high = nan`` for a single value.

    Notes
    -----
    mean +- t_{(1+confidence)/2, n-1} * s / sqrt(n), s the sample standard
    deviation (``ddof = 1``).
    """
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("values must hold at least one number; got none")
    mean = math.fsum(vals) / len(vals)
    if len(vals) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(vals) - 1)) * statistics.stdev(vals)
    half /= math.sqrt(len(vals))
    return mean, mean - half, mean + half


def metric_value(record: dict[str, Any], metric: str) -> float | None:
    """A metric of a record: a test-split metric, else a record key (dotted paths allowed)."""
    test = record.get("metrics", {}).get("test", {})
    if metric in test:
        return _number(test[metric])
    obj: Any = record
    for part in metric.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return _number(obj)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _group_key(config: dict[str, Any]) -> str:
    """Identity of a (setting, method): the TrainConfig without seed, data_dir and device."""
    from cvxsnn.pipeline import identity_dict

    d = identity_dict(config)
    return config_hash({k: v for k, v in d.items() if k not in ("seed", "data_dir", "device")})


def summarize(
    experiment: Experiment,
    preset: str,
    entries: Iterable[dict[str, Any]],
    confidence: float = 0.95,
) -> list[CellSummary]:
    """Summaries of every (setting, method, metric) from results-file entries."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        groups[_group_key(e["record"]["config"])].append(e["record"])
    rows = []
    for setting in experiment.settings(preset):
        for method in experiment.methods:
            records = groups.get(_group_key(_cell_config(setting, method)), [])
            gaps = [r["gap"] for r in records if _number(r.get("gap")) is not None]
            rel = [r["rel_gap"] for r in records if _number(r.get("rel_gap")) is not None]
            convex = method in CONVEX_METHODS and gaps
            for metric in experiment.metrics:
                vals = [v for r in records if (v := metric_value(r, metric)) is not None]
                mean = low = high = None
                if vals:
                    mean, low, high = t_interval(vals, confidence)
                    low, high = (None, None) if math.isnan(low) else (low, high)
                paper = setting.paper.value(metric, method) if setting.paper else None
                rows.append(
                    CellSummary(
                        setting.label,
                        method,
                        metric,
                        len(vals),
                        mean,
                        low,
                        high,
                        paper,
                        max(gaps) if convex else None,
                        max(rel) if convex and rel else None,
                        all(bool(r.get("certified")) for r in records) if convex else None,
                    )
                )
    return rows


def _cell_config(setting: Setting, method: str) -> dict[str, Any]:
    cfg = dataclasses.replace(setting.config, method=method)
    d = cfg.to_dict()
    if d["threads"] is None:
        d["threads"] = 1  # as the runner pins it
    return d


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "—"
    if v != 0 and (abs(v) < 10 ** (-digits) or abs(v) >= 1e4):
        return f"{v:.2e}"
    if float(v).is_integer() and abs(v) >= 10:
        return f"{int(v)}"
    return f"{v:.{digits}f}"


def _fmt_cell(row: CellSummary, n_records: int) -> str:
    if row.mean is None:
        return "not yet run" if n_records == 0 else "n/a"
    if row.low is None:
        return f"{_fmt(row.mean)} (1 seed)"
    return f"{_fmt(row.mean)} [{_fmt(row.low)}, {_fmt(row.high)}]"


def render_markdown(
    experiment: Experiment, preset: str, rows: Sequence[CellSummary], source: str = ""
) -> str:
    """A Markdown table: one line per (setting, method), per metric ours and the paper's."""
    metrics = experiment.metrics
    by_cell: dict[tuple[str, str], dict[str, CellSummary]] = defaultdict(dict)
    for r in rows:
        by_cell[(r.label, r.method)][r.metric] = r
    convex = any(m in CONVEX_METHODS for m in experiment.methods)
    with_paper = {r.metric for r in rows if r.paper is not None}
    head = ["setting", "method", "seeds"]
    for m in metrics:
        head += [f"{m} (mean, 95% CI)"] + ([f"{m} paper"] if m in with_paper else [])
    if convex:
        head += ["max gap", "max rel. gap"]
    lines = [f"## {experiment.title}", ""]
    if experiment.description:
        lines += [experiment.description.strip(), ""]
    lines += [f"Preset `{preset}`" + (f", results `{source}`" if source else "") + ".", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (label, method), cells in by_cell.items():
        n = max(c.n for c in cells.values())
        row = [label, method.upper(), str(n)]
        for m in metrics:
            c = cells[m]
            row += [_fmt_cell(c, n)] + ([_fmt(c.paper)] if m in with_paper else [])
        if convex:
            first = next(iter(cells.values()))
            gap = _fmt(first.max_gap, 2) if method in CONVEX_METHODS else ""
            rel = _fmt(first.max_rel_gap, 2) if method in CONVEX_METHODS else ""
            row += [gap, rel]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Intervals: 95% Student-t over seeds; paper numbers are single runs."]
    return "\n".join(lines) + "\n"


def plot_sweep(
    experiment: Experiment, preset: str, rows: Sequence[CellSummary], path: str | Path
) -> Path | None:
    """Plot a sweep to a PNG (matplotlib, Agg backend); None when nothing is plottable."""
    spec = experiment.plot
    if spec is None:
        return None
    try:
        import matplotlib
    except ImportError:
        warnings.warn(
            "no plot written: plots need matplotlib (pip install cvxsnn[plot])", stacklevel=2
        )
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = {s.label: s for s in experiment.settings(preset)}
    index = {(r.label, r.method, r.metric): r for r in rows}
    metrics = spec.metrics or experiment.metrics
    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    drawn = 0

    def draw(xs: list[float], cells: list[CellSummary | None], name: str) -> int:
        pts = [
            (x, c) for x, c in zip(xs, cells, strict=True) if c is not None and c.mean is not None
        ]
        if not pts:
            return 0
        x = [p[0] for p in pts]
        y = [p[1].mean for p in pts]
        lo = [p[1].mean - p[1].low if p[1].low is not None else 0.0 for p in pts]
        hi = [p[1].high - p[1].mean if p[1].high is not None else 0.0 for p in pts]
        line = ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=name)
        paper = [(xx, p[1].paper) for xx, p in zip(x, pts, strict=True) if p[1].paper is not None]
        if paper:  # the paper's single runs, in the colour of the same method
            ax.scatter(
                [p[0] for p in paper],
                [p[1] for p in paper],
                marker="x",
                s=60,
                color=line.lines[0].get_color(),
                zorder=3,
                label=f"{name} (paper)",
            )
        return 1

    if spec.x == "metrics":
        xs = list(spec.xvalues or ())
        for label in settings:
            for method in experiment.methods:
                cells = [index.get((label, method, m)) for m in metrics]
                name = method.upper() if len(settings) == 1 else f"{label} {method.upper()}"
                drawn += draw(xs, cells, name)
    else:
        order = sorted(settings, key=lambda lb: _as_float(getattr(settings[lb].config, spec.x)))
        xs = [_as_float(getattr(settings[lb].config, spec.x)) for lb in order]
        for method in experiment.methods:
            for m in metrics:
                cells = [index.get((lb, method, m)) for lb in order]
                name = method.upper() if len(metrics) == 1 else f"{method.upper()} {m}"
                drawn += draw(xs, cells, name)
    if not drawn:
        plt.close(fig)
        return None
    if spec.logx:
        ax.set_xscale("log")
    ax.set_xlabel(spec.xlabel or spec.x)
    ax.set_ylabel(spec.ylabel or (metrics[0] if len(metrics) == 1 else "test metric"))
    # wrapped: the long titles of the figure configs ran off the canvas
    ax.set_title(textwrap.fill(f"{experiment.title} ({preset})", 90), fontsize=9)
    ax.grid(alpha=0.3)
    # outside the axes: inside, it covered the points of the curves at the top
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _as_float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def report(
    experiment: str | Path | Experiment,
    preset: str = "quick",
    results: str | Path | None = None,
    out: str | Path | None = None,
    plot: bool = True,
) -> Report:
    """Read an experiment's results file and build its table (and plot).

    Parameters
    ----------
    experiment : str, Path or Experiment
    preset : {"quick", "standard", "paper"}
    results : str or Path, optional
        ``results/<name>-<preset>.jsonl`` by default. A file written under
        another config hash is refused.
    out : str or Path, optional
        Folder for ``<name>-<preset>.md`` and ``<name>-<preset>.png``;
        nothing is written when omitted.
    plot : bool
        Draw the sweep's plot (when ``out`` is given and the config has one).
    """
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    exp.preset(preset)
    path = Path(results) if results is not None else default_results_path(exp.name, preset)
    if not path.is_file():
        raise FileNotFoundError(
            f"results file not found: {path}; run `cvxsnn reproduce {exp.name} --preset {preset}`"
        )
    header, entries, _ = read_results(path)
    if header is None:
        raise ValueError(f"results file {path} has no header line")
    check_header(header, path, exp, preset)
    rows = summarize(exp, preset, entries)
    md = render_markdown(exp, preset, rows, str(path))
    plot_path = table_path = None
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        table_path = out / f"{exp.name}-{preset}.md"
        table_path.write_text(md)
        if plot:
            p = plot_sweep(exp, preset, rows, out / f"{exp.name}-{preset}.png")
            plot_path = str(p) if p is not None else None
        table_path = str(table_path)
    return Report(
        exp.name,
        preset,
        str(path),
        tuple(rows),
        md,
        len(entries),
        len(exp.settings(preset)),
        plot_path,
        table_path,
    )
