"""Experiment configs: the shipped TOML files, validation messages, intervals."""

from __future__ import annotations

import math
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvxsnn.experiments import PAPER, experiment_names, load_experiment, t_interval
from cvxsnn.experiments.config import parse_experiment
from cvxsnn.experiments.report import metric_value
from cvxsnn.experiments.runner import cell_id, comparable, expand_cells

EXPECTED = {
    "table1",
    "table2",
    "table3",
    "table4a",
    "table4b",
    "table5a",
    "table5b",
    "table6",
    "figure1",
    "figure2",
    "figure3",
}


def _minimal(**extra):
    raw = {
        "title": "t",
        "methods": ["cvx"],
        "metrics": ["acc"],
        "base": {"task": "xor"},
        "grid": [{"label": "a", "depth": 3}],
        "presets": {p: {"seeds": 1} for p in ("quick", "standard", "paper")},
    }
    raw.update(extra)
    return raw


def test_every_table_and_figure_ships_and_loads():
    assert set(experiment_names()) == EXPECTED
    for name in EXPECTED:
        exp = load_experiment(name)
        text = (resources.files("cvxsnn.experiments") / "configs" / f"{name}.toml").read_text()
        first = text.splitlines()[0]
        assert first.startswith(f"# cvxsnn reproduce {name} ")  # the command that runs it
        for preset in ("quick", "standard", "paper"):
            assert exp.settings(preset)
        for cell in exp.grid:  # every paper key points at a stored number set
            if "paper" in cell:
                assert cell["paper"] in PAPER[name]


def test_standard_preset_sizes():
    """Standard: >= 2000 train (XOR, ADDITION; not Table 6), >= 10000 MNIST, >= 1000 test."""
    for name in EXPECTED:
        exp = load_experiment(name)
        assert exp.presets["standard"].seeds >= 3
        for s in exp.settings("standard"):
            c = s.config
            assert c.n_test >= 1000, (name, s.label)
            if c.task == "mnist-seq":
                assert c.n_train >= 10000, (name, s.label)
            elif name != "table6":
                assert c.n_train >= 2000, (name, s.label)
            if name != "table1":  # Table 1 sweeps K itself
                assert c.branches * c.width >= 2000, (name, s.label)
        assert max(s.config.branches * s.config.width for s in exp.settings("standard")) >= 2000


def test_settings_merge_order_preset_task_then_cell():
    exp = load_experiment("table2")
    by_label = {s.label: s.config for s in exp.settings("standard")}
    assert by_label["mnist-L10-T2"].n_train == 10000  # presets.standard.tasks.mnist-seq
    assert by_label["xor-L3-T6"].n_train == 2000  # presets.standard.base
    assert by_label["mnist-L10-T2"].depth == 10 and by_label["mnist-L10-T2"].T == 2  # grid cell
    t6 = {s.label: s.config for s in load_experiment("table6").settings("standard")}
    assert [c.n_train for c in t6.values()] == [512, 1024, 2048, 4096]  # the cell wins


def test_cells_expand_setting_method_seed_with_pinned_threads():
    exp = load_experiment("table3")
    cells = expand_cells(exp, "quick", seeds=3, data_dir="/somewhere")
    assert len(cells) == 1 * 4 * 3
    assert {c.method for c in cells} == {"sg", "sg-sg", "cvx", "sg-cvx"}
    assert all(c.config.threads == 1 for c in cells)
    assert len({c.cell_id for c in cells}) == len(cells)
    # data_dir is where data lives, not what is run: it does not change a cell's identity
    again = expand_cells(exp, "quick", seeds=3)
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]
    assert cell_id(cells[0].config) == cells[0].cell_id


def test_config_hash_ignores_report_only_fields_but_not_settings():
    a = parse_experiment(_minimal(), "x")
    b = parse_experiment(_minimal(title="other", metrics=["acc", "P"]), "x")
    c = parse_experiment(_minimal(base={"task": "xor", "n_train": 99}), "x")
    assert a.config_hash("quick") == b.config_hash("quick")
    assert a.config_hash("quick") != c.config_hash("quick")
    assert a.config_hash("quick") != a.config_hash("standard")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_minimal(colour="red"), "unknown key 'colour' in the top level"),
        (_minimal(base={"task": "xor", "widht": 3}), "unknown key 'widht' in [base]"),
        (_minimal(base={"task": "xor", "width": "3"}), "key 'width' in [base] must be int"),
        (_minimal(base={"task": "xor", "width": 3.5}), "key 'width' in [base] must be int"),
        (_minimal(base={"task": "xor", "sigma": True}), "key 'sigma' in [base] must be float"),
        (_minimal(base={"task": "nope"}), "key 'task' in [base] must be one of"),
        (_minimal(base={"seed": 3}), "key 'seed' in [base] is set by the runner"),
        (_minimal(methods=["cvx", "adam"]), "'methods' entries must be one of"),
        (_minimal(grid=[{"depth": 3}]), "needs a 'label'"),
        (
            _minimal(grid=[{"label": "a", "paper": "zzz"}]),
            "'paper' of grid cell 'a' must be one of",
        ),
        (_minimal(grid=[{"label": "a", "depth": 1}]), "grid cell 'a' under preset 'quick': depth"),
        (_minimal(presets={"quick": {}, "standard": {}}), "missing ['paper']"),
        (
            _minimal(presets={p: {"seeds": "2"} for p in ("quick", "standard", "paper")}),
            "key 'seeds' in [presets.quick] must be of type int",
        ),
        (
            _minimal(presets={p: {"cells": ["b"]} for p in ("quick", "standard", "paper")}),
            "'cells' in [presets.quick] must name grid labels",
        ),
        (
            _minimal(
                presets={
                    p: {"tasks": {"xor": {"epoch": 1}}} for p in ("quick", "standard", "paper")
                }
            ),
            "unknown key 'epoch' in [presets.quick].tasks.xor",
        ),
        (_minimal(plot={"x": "metrics"}), "needs 'xvalues'"),
        (_minimal(plot={"x": "depthh"}), "'x' in [plot] must be"),
    ],
)
def test_bad_configs_are_rejected_naming_the_key(raw, message):
    with pytest.raises(ValueError) as err:
        parse_experiment(raw, "x", "x.toml")
    assert message in str(err.value)
    assert str(err.value).startswith("x.toml: ")


def test_unknown_experiment_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="table4a"):
        load_experiment("table9")
    bad = tmp_path / "bad.toml"
    bad.write_text("title = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_experiment(bad)


def test_t_interval_closed_form():
    # [1, 2, 3]: mean 2, s = 1, t_{0.975, 2} = 4.302652729749464
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729749464 / math.sqrt(3)
    assert mean == 2.0
    assert lo == pytest.approx(2 - half, abs=1e-10) and hi == pytest.approx(2 + half, abs=1e-10)
    m1, lo1, hi1 = t_interval([0.7])
    assert m1 == 0.7 and math.isnan(lo1) and math.isnan(hi1)
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=12))
def test_t_interval_contains_the_mean_and_matches_scipy(values):
    from scipy import stats

    mean, lo, hi = t_interval(values)
    assert lo <= mean + 1e-9 and mean <= hi + 1e-9
    sem = stats.sem(values)
    if sem > 0:
        ref = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / len(values), scale=sem)
        assert lo == pytest.approx(ref[0], rel=1e-9, abs=1e-9)
        assert hi == pytest.approx(ref[1], rel=1e-9, abs=1e-9)


def test_metric_value_and_comparable():
    rec = {
        "metrics": {"test": {"acc": 0.5, "ood_10x/joint_token_acc": 0.25}},
        "gap": 1e-9,
        "time_s": {"total": 3.0},
        "memory": {},
        "environment": {"platform": "x"},
        "solver": {"time_s": 0.1, "gap": 1e-9},
        "rho_path": [{"rho": 1.0, "time_s": 2.0}],
        "config": {"data_dir": "/a", "seed": 1},
        "config_hash": "abc",
    }
    assert metric_value(rec, "acc") == 0.5
    assert metric_value(rec, "ood_10x/joint_token_acc") == 0.25
    assert metric_value(rec, "gap") == 1e-9
    assert metric_value(rec, "solver.gap") == 1e-9
    assert metric_value(rec, "sequential_acc") is None
    c = comparable(rec)
    assert c == {
        "metrics": rec["metrics"],
        "gap": 1e-9,
        "solver": {"gap": 1e-9},
        "rho_path": [{"rho": 1.0}],
        "config": {"seed": 1},
    }
