"""The quick preset of every table and figure runs end to end and gives a report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from cvxsnn.experiments import experiment_names, load_experiment, read_results, report, reproduce
from cvxsnn.experiments.config import CONVEX_METHODS


@pytest.mark.slow
@pytest.mark.parametrize("name", experiment_names())
def test_quick_preset_runs_and_reports(name, tmp_path, mnist_dir):
    exp = load_experiment(name)
    results = tmp_path / f"{name}.jsonl"
    summary = reproduce(
        name, preset="quick", results=results, data_dir=str(mnist_dir), progress=False
    )
    n_seeds = exp.presets["quick"].seeds
    n_cells = len(exp.settings("quick")) * len(exp.methods) * n_seeds
    assert summary.n_cells == summary.n_run == n_cells
    _, entries, _ = read_results(results)
    assert len(entries) == n_cells
    for e in entries:
        rec = e["record"]
        assert rec["config"]["threads"] == 1
        if rec["method"] in CONVEX_METHODS:
            assert rec["rel_gap"] <= rec["tol"]  # every convex cell is certified

    rep = report(name, preset="quick", results=results, out=tmp_path / "report")
    text = Path(rep.table_path).read_text()
    assert text == rep.markdown and "not yet run" not in text
    for s in exp.settings("quick"):
        for method in exp.methods:
            assert f"| {s.label} | {method.upper()} | {n_seeds} |" in text
    for row in rep.rows:
        assert row.n == n_seeds or row.mean is None  # None: a metric the task lacks (n/a)
        if row.mean is not None and row.metric.endswith("acc"):
            assert 0.0 <= row.mean <= 1.0
            assert row.low <= row.mean <= row.high and math.isfinite(row.high)
        if row.method in CONVEX_METHODS:
            assert row.max_gap is not None and row.max_gap >= 0
    paper_rows = [r for r in rep.rows if r.paper is not None]
    if any(
        "paper" in cell
        for cell in exp.grid
        if cell["label"] in {s.label for s in exp.settings("quick")}
    ):
        assert paper_rows and " paper |" in text
    if exp.plot is not None:
        assert rep.plot is not None and Path(rep.plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
