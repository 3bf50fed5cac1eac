"""Resumable sweeps: results file, interruption and resume, executors, refusal of other configs."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cvxsnn.cli import main
from cvxsnn.experiments import (
    comparable,
    load_experiment,
    read_results,
    report,
    reproduce,
    sweep_status,
)
from cvxsnn.experiments import runner as runner_mod
from cvxsnn.experiments.runner import CellError
from cvxsnn.sg import SGSnapshot

TINY = """# cvxsnn reproduce {path} --preset quick
title = "tiny sweep"
methods = ["sg", "cvx"]
metrics = ["acc"]

[base]
task = "xor"
steps = 6
n_train = {n_train}
n_val = 24
n_test = 48
branches = 2
width = 6
epochs = 1
n_rhos = 2

[[grid]]
label = "L=2"
depth = 2

[[grid]]
label = "L=3"
depth = 3

[plot]
x = "depth"

[presets.quick]
seeds = 2
[presets.standard]
seeds = 3
[presets.paper]
seeds = 5
"""


def _tiny(tmp_path: Path, n_train: int = 48, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY.format(path=path, n_train=n_train))
    return path


def _records(path: Path) -> dict[str, dict]:
    header, entries, _ = read_results(path)
    assert header is not None
    ids = [e["cell_id"] for e in entries]
    assert len(ids) == len(set(ids)), "a cell was written twice"
    return {e["cell_id"]: comparable(e["record"]) for e in entries}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """An uninterrupted sequential run of the tiny sweep (8 cells)."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = _tiny(tmp)
    out = tmp / "ref.jsonl"
    summary = reproduce(cfg, results=out, progress=False)
    assert (summary.n_cells, summary.n_run, summary.n_already_done) == (8, 8, 0)
    return cfg, _records(out)


def test_rerun_runs_nothing_and_header_holds_the_hash(reference, tmp_path):
    cfg, ref = reference
    out = tmp_path / "r.jsonl"
    reproduce(cfg, results=out, progress=False)
    first = out.read_bytes()
    again = reproduce(cfg, results=out, progress=False)
    assert (again.n_run, again.n_already_done) == (0, 8)
    assert out.read_bytes() == first
    header = json.loads(first.splitlines()[0])
    assert header["config_hash"] == load_experiment(cfg).config_hash("quick")
    # same seed + same config -> identical records apart from timings and host fields
    assert _records(out) == ref


def test_injected_failure_keeps_finished_cells_and_resume_matches(reference, tmp_path, monkeypatch):
    cfg, ref = reference
    out = tmp_path / "r.jsonl"
    real = runner_mod.run_cell
    calls = {"n": 0}

    def flaky(config, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("injected failure")
        return real(config, *args)

    monkeypatch.setattr(runner_mod, "run_cell", flaky)
    with pytest.raises(CellError, match="injected failure") as err:
        reproduce(cfg, results=out, progress=False)
    assert "3 finished cells are saved" in str(err.value)
    assert len(_records(out)) == 3
    monkeypatch.setattr(runner_mod, "run_cell", real)
    resumed = reproduce(cfg, results=out, progress=False)
    assert (resumed.n_already_done, resumed.n_run) == (3, 5)
    assert _records(out) == ref


def test_cell_killed_in_sg_training_resumes_from_its_snapshot(
    reference, tmp_path, fail_validation, capsys
):
    """A failure in the middle of an SG cell's grid leaves its snapshot; the rerun trains
    only what was left of that cell and writes the uninterrupted run's records."""
    cfg, ref = reference
    out = tmp_path / "r.jsonl"
    snaps = tmp_path / "r.jsonl.snapshots"
    # the first SG cell: 2 of its 3 learning rates' validations
    failing = fail_validation(4, RuntimeError("killed"))
    with pytest.raises(CellError, match="killed"):
        reproduce(cfg, results=out, progress=False, snapshot_every_s=0)
    assert len(_records(out)) == 0
    (cell_dir,) = snaps.iterdir()
    state = torch.load(cell_dir / "sg.pt", weights_only=True)
    assert len(state["finished"]) == 1  # the first learning rate (epoch 0 and 1) is kept

    failing.disarm()  # no more failures; count the validation passes of the rerun
    resumed = reproduce(cfg, results=out, progress=True, snapshot_every_s=0)
    # where it resumes: the second rate's epoch 0 (its epoch 1 was killed)
    assert re.search(
        rf"sg / seed 0 resumes from its snapshot \(lr 2/3 epoch 0/1, best val \d\.\d{{3}}\) "
        rf"in {re.escape(str(cell_dir))}",
        capsys.readouterr().err,
    )
    assert resumed.n_run == 8
    assert _records(out) == ref
    assert not snaps.exists()  # every cell's snapshots are deleted once it is saved
    # SG cells: 4 of 3 learning rates x (epoch 0 + 1 epoch); the resumed one skips 2
    assert failing.calls == 4 * 6 - 2

    # --no-snapshots keeps nothing
    fail_validation(4, RuntimeError("killed"))
    with pytest.raises(CellError, match="killed"):
        reproduce(cfg, results=tmp_path / "n.jsonl", progress=False, snapshots=False)
    assert not (tmp_path / "n.jsonl.snapshots").exists()
    with pytest.raises(ValueError, match="snapshot_every_s"):
        reproduce(cfg, results=tmp_path / "n.jsonl", progress=False, snapshot_every_s=-1)


def test_cell_progress_line(tmp_path):
    def write(stem, updated, **kw):
        info = dict(lr_index=1, n_lrs=3, lr=3e-3, epoch=41, max_epochs=200, val_accuracy=0.9)
        info.update(best_val_accuracy=0.91, best_epoch=30, grid_best_val_accuracy=0.9184)
        info.update(elapsed_s=5.0, done=False, updated=updated)
        info.update(kw)
        SGSnapshot(tmp_path / f"{stem}.pt").write_progress(info)

    assert runner_mod.cell_progress(tmp_path) is None
    write("sg", 100.0)
    assert runner_mod.cell_progress(tmp_path) == "lr 2/3 epoch 41/200, best val 0.918"
    assert runner_mod.cell_progress(tmp_path, since=101.0) is None  # an earlier sweep's
    write("sg", 100.0, done=True, lr_index=2)
    assert runner_mod.cell_progress(tmp_path) == "3 learning rates done, best val 0.918"
    write("sg_continue", 200.0, epoch=7)  # SG-SG: the continued run, once it writes
    assert runner_mod.cell_progress(tmp_path) == "continued lr 2/3 epoch 7/200, best val 0.918"
    (tmp_path / "sg_continue.progress.json").write_text("{trunc")
    assert runner_mod.cell_progress(tmp_path) == "3 learning rates done, best val 0.918"


def test_resume_point_is_read_from_the_snapshot_not_the_progress_file(tmp_path, monkeypatch):
    """After a kill the progress file (rewritten every epoch) can be ahead of the snapshot
    (written every snapshot_every_s): the resume line reads the snapshot, and the status
    shows both when they differ."""
    from cvxsnn.sg import SNAPSHOT_KIND

    def snapshot(finished, current):
        hist = [dict(best_val_accuracy=a, epochs_run=200, best_epoch=e) for a, e in finished]
        state = dict(kind=SNAPSHOT_KIND, finished=hist, current=current, elapsed_s=9.0)
        torch.save(state, tmp_path / "sg.pt")

    def progress(**kw):
        info = dict(lr_index=0, n_lrs=3, lr=1e-3, epoch=150, max_epochs=200, val_accuracy=0.88)
        info.update(best_val_accuracy=0.887, best_epoch=146, grid_best_val_accuracy=0.887)
        info.update(elapsed_s=10.0, done=False, updated=time.time())
        info.update(kw)
        SGSnapshot(tmp_path / "sg.pt").write_progress(info)

    # killed at epoch 150 of the first rate; the last snapshot was written after epoch 146
    snapshot([], dict(lr_index=0, epoch=146, best=(0.886, 0.3, 140)))
    progress()
    assert runner_mod.cell_progress(tmp_path) == "lr 1/3 epoch 150/200, best val 0.887"
    resumes = "lr 1/3 epoch 146/200, best val 0.886"
    assert runner_mod.cell_progress(tmp_path, saved=True) == resumes
    assert runner_mod._status_detail(tmp_path) == (
        f"lr 1/3 epoch 150/200, best val 0.887, 10 s trained; resumes from its snapshot at "
        f"{resumes}"
    )
    # a snapshot written when a rate ended is the next rate's epoch 0: nothing is lost
    snapshot([(0.887, 146)], None)
    progress(lr_index=1, epoch=0, best_val_accuracy=0.1, best_epoch=0)
    assert runner_mod.cell_progress(tmp_path, saved=True) == "lr 2/3 epoch 0/200, best val 0.887"
    assert runner_mod._status_detail(tmp_path) == "lr 2/3 epoch 0/200, best val 0.887, 10 s trained"
    progress(lr_index=1, epoch=3, best_val_accuracy=0.5, best_epoch=3)
    assert runner_mod._status_detail(tmp_path).endswith(
        "; resumes from its snapshot at lr 2/3 epoch 0/200, best val 0.887"
    )
    # ... and after the last rate, the whole grid
    snapshot([(0.887, 146), (0.85, 120), (0.86, 99)], None)
    progress(lr_index=2, epoch=129, done=True)
    assert runner_mod.cell_progress(tmp_path, saved=True) == "3 learning rates done, best val 0.887"
    assert runner_mod._status_detail(tmp_path) == (
        "3 learning rates done, best val 0.887, 10 s trained"
    )
    # without a progress file both read the snapshot, which lacks the grid's size
    (tmp_path / "sg.progress.json").unlink()
    snapshot([], dict(lr_index=0, epoch=146, best=(0.886, 0.3, 140)))
    loads = []
    real = runner_mod.snapshot_progress
    monkeypatch.setattr(runner_mod, "snapshot_progress", lambda p: loads.append(p) or real(p))
    assert runner_mod._status_detail(tmp_path) == (
        "lr 1 epoch 146, best val 0.886, 9 s trained (snapshot)"
    )
    assert loads.count(tmp_path / "sg.pt") == 1  # one load answers both questions
    (tmp_path / "sg.pt").write_bytes(b"not a snapshot")
    assert runner_mod._status_detail(tmp_path) == "unreadable snapshot"


def test_sweep_shows_where_its_running_sg_cells_are(reference, tmp_path, monkeypatch, capsys):
    """The progress bar names each running SG cell's learning rate, epoch and best
    validation accuracy, read from its progress file while it trains."""
    import cvxsnn.sg as sg

    cfg, ref = reference
    real = sg.evaluate_sg

    def slow(*args, **kwargs):  # every validation pass takes 50 ms: the watcher looks often
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(sg, "evaluate_sg", slow)
    monkeypatch.setattr(runner_mod, "PROGRESS_POLL_S", 0.005)
    out = tmp_path / "sg.jsonl"
    reproduce(cfg, results=out, progress=True, methods=["sg"], settings=["L=2"])
    err = capsys.readouterr().err
    shown = set(
        re.findall(r"L=2 sg seed (\d): lr ([123])/3 epoch ([01])/1, best val \d\.\d{3}", err)
    )
    assert {seed for seed, _, _ in shown} == {"0", "1"}
    assert {lr for _, lr, _ in shown} >= {"1", "2", "3"}
    done = _records(out)
    assert len(done) == 2 and done == {c: ref[c] for c in done}


def test_status_lists_done_in_progress_and_to_run_cells(
    reference, tmp_path, fail_validation, capsys
):
    cfg, ref = reference
    out = tmp_path / "r.jsonl"
    assert {c.state for c in sweep_status(cfg, results=out)} == {"to run"}  # no file yet
    reproduce(cfg, results=out, progress=False, methods=["cvx"])
    fail_validation(4, RuntimeError("killed"))  # the first SG cell, second rate's epoch 1
    with pytest.raises(CellError, match="killed"):
        reproduce(cfg, results=out, progress=False, snapshot_every_s=0)
    before = out.read_bytes(), sorted(p.name for p in tmp_path.rglob("*"))

    status = {(c.label, c.method, c.seed): c for c in sweep_status(cfg, results=out)}
    assert len(status) == 8
    assert {k for k, c in status.items() if c.state == "done"} == {
        (lb, "cvx", seed) for lb in ("L=2", "L=3") for seed in (0, 1)
    }
    assert [k for k, c in status.items() if c.state == "in progress"] == [("L=2", "sg", 0)]
    records = {e["cell_id"]: e for e in read_results(out)[1]}
    assert {c: comparable(e["record"]) for c, e in records.items()} == {c: ref[c] for c in records}
    for c in status.values():
        if c.state == "done":
            assert c.detail.startswith(f"test acc {records[c.cell_id]['record']['test_acc']:.3f}, ")
    running = status[("L=2", "sg", 0)]
    assert re.fullmatch(r"lr 2/3 epoch 0/1, best val \d\.\d{3}, \d+ s trained", running.detail)
    # a snapshot without its progress file (written by an older cvxsnn) is read itself;
    # it was last written when the first rate ended
    snap_dir = tmp_path / "r.jsonl.snapshots" / running.cell_id
    (snap_dir / "sg.progress.json").unlink()
    (again,) = [c for c in sweep_status(cfg, results=out) if c.cell_id == running.cell_id]
    assert re.fullmatch(
        r"lr 1 epoch 1, best val \d\.\d{3}, \d+ s trained \(snapshot\)", again.detail
    )

    assert main(["reproduce", str(cfg), "--results", str(out), "--status"]) == 0
    printed = capsys.readouterr().out
    assert "4 done, 1 in progress, 3 to run of 8 cells" in printed
    assert re.search(r"L=2\s+sg\s+0\s+in progress\s+lr 1 epoch 1", printed)
    # nothing was run or written
    assert (out.read_bytes(), sorted(p.name for p in tmp_path.rglob("*"))) == (
        before[0],
        [n for n in before[1] if n != "sg.progress.json"],
    )
    with pytest.raises(ValueError, match="config hash"):
        sweep_status(_tiny(tmp_path, n_train=60, name="other"), results=out)


def test_identical_cells_of_another_table_are_copied_not_rerun(reference, tmp_path, monkeypatch):
    """A second experiment sharing the L=3 cells copies them from the first's results."""
    cfg, ref = reference
    first = tmp_path / "first.jsonl"
    reproduce(cfg, results=first, progress=False)
    other = tmp_path / "other.toml"
    text = cfg.read_text().replace('title = "tiny sweep"', 'title = "another table"')
    other.write_text(text.replace('label = "L=2"\ndepth = 2', 'label = "L=4"\ndepth = 4'))
    real = runner_mod.run_cell
    ran: list[int] = []

    def counting(config, *args):
        ran.append(config["depth"])
        return real(config, *args)

    monkeypatch.setattr(runner_mod, "run_cell", counting)
    out = tmp_path / "other.jsonl"
    summary = reproduce(other, results=out, progress=False, reuse=[tmp_path])
    assert (summary.n_cells, summary.n_reused, summary.n_run) == (8, 4, 4)
    assert sorted(set(ran)) == [4]  # only the new setting was trained
    _, entries, _ = read_results(out)
    copied = [e for e in entries if "reused_from" in e["host"]]
    assert {e["label"] for e in copied} == {"L=3"}
    assert all(e["host"]["reused_from"] == str(first) for e in copied)
    for e in copied:
        assert comparable(e["record"]) == ref[e["cell_id"]]
    again = reproduce(other, results=out, progress=False, reuse=[tmp_path])
    assert (again.n_already_done, again.n_reused, again.n_run) == (8, 0, 0)
    with pytest.raises(ValueError, match="neither a results file nor a folder"):
        reproduce(other, results=tmp_path / "x.jsonl", progress=False, reuse=[tmp_path / "no"])


def test_a_methods_subset_runs_first_and_the_rest_resumes(reference, tmp_path, capsys):
    """--methods cvx runs the convex half; a later full run adds only the SG cells, and
    the file then equals an uninterrupted run's."""
    cfg, ref = reference
    out = tmp_path / "r.jsonl"
    part = reproduce(cfg, results=out, progress=False, methods=["cvx"])
    assert (part.n_cells, part.n_run) == (4, 4)
    _, entries, _ = read_results(out)
    assert {e["method"] for e in entries} == {"cvx"}
    rest = reproduce(cfg, results=out, progress=False)
    assert (rest.n_cells, rest.n_already_done, rest.n_run) == (8, 4, 4)
    assert _records(out) == ref
    for bad in (["svm"], []):
        with pytest.raises(ValueError, match="methods must be a non-empty subset"):
            reproduce(cfg, results=out, progress=False, methods=bad)
    assert main(["reproduce", str(cfg), "--results", str(out), "--methods", "sg", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["n_already_done"] == 4


def test_a_table_split_by_settings_and_gathered_equals_an_uninterrupted_run(
    reference, tmp_path, capsys
):
    """Two machines each run one setting (its own results file); --reuse gathers them."""
    cfg, ref = reference
    a, b, whole = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "whole.jsonl"
    part = reproduce(cfg, results=a, progress=False, settings=["L=2"])
    assert (part.n_cells, part.n_run) == (4, 4)
    assert main(["reproduce", str(cfg), "--results", str(b), "--settings", "L=3", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["n_run"] == 4
    _, entries, _ = read_results(b)
    assert {e["label"] for e in entries} == {"L=3"}
    both = reproduce(cfg, results=whole, progress=False, reuse=[a, b])
    assert (both.n_reused, both.n_run) == (8, 0)
    assert _records(whole) == ref
    one = reproduce(
        cfg, results=tmp_path / "c.jsonl", progress=False, settings=["L=3"], methods=["sg"]
    )
    assert one.n_cells == 2
    for bad in (["L=9"], []):
        with pytest.raises(ValueError, match=r"settings must be a non-empty subset of .*L=2"):
            reproduce(cfg, results=tmp_path / "d.jsonl", progress=False, settings=bad)


def test_truncated_last_line_is_dropped_on_resume(reference, tmp_path):
    cfg, ref = reference
    out = tmp_path / "r.jsonl"
    reproduce(cfg, results=out, progress=False, seeds=1)  # 4 of the 8 cells
    lines = out.read_bytes().splitlines(keepends=True)
    assert len(lines) == 5
    # a kill during the write of the last cell: half a line, no newline
    out.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    _, entries, good = read_results(out)
    assert len(entries) == 3 and good < out.stat().st_size
    resumed = reproduce(cfg, results=out, progress=False)
    assert (resumed.n_already_done, resumed.n_run) == (3, 5)
    assert _records(out) == ref
    # a damaged line in the middle is an error, not silently skipped
    text = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join([text[0], b"{oops\n", *text[1:]]))
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_results(out)


def test_results_of_another_config_are_refused(reference, tmp_path, capsys):
    cfg, _ = reference
    out = tmp_path / "r.jsonl"
    reproduce(cfg, results=out, progress=False, seeds=1)
    (tmp_path / "other").mkdir()
    other = _tiny(tmp_path / "other", n_train=40)  # same name, another setting
    old = load_experiment(cfg).config_hash("quick")
    new = load_experiment(other).config_hash("quick")
    assert old != new
    before = out.read_bytes()
    with pytest.raises(ValueError) as err:
        reproduce(other, results=out, progress=False)
    msg = str(err.value)
    assert f"results file {out} was written under config hash {old}" in msg
    assert f"now has config hash {new}; refusing to mix them" in msg
    assert out.read_bytes() == before  # nothing mixed in
    with pytest.raises(ValueError, match="refusing to mix"):
        report(other, results=out)
    # the CLI gives the same message and exit status 2; so does another preset
    assert main(["reproduce", str(cfg), "--preset", "standard", "--results", str(out), "-q"]) == 2
    assert "refusing to mix them" in capsys.readouterr().err


def test_report_from_records_only(reference, tmp_path, capsys):
    cfg, _ = reference
    out = tmp_path / "r.jsonl"
    reproduce(cfg, results=out, progress=False, seeds=1)
    rep = report(cfg, results=out, out=tmp_path / "rep")
    assert rep.n_records == 4
    assert all(r.n == 1 for r in rep.rows)
    assert "| L=3 | CVX | 1 |" in rep.markdown and "(1 seed)" in rep.markdown
    assert Path(rep.plot).stat().st_size > 0
    assert Path(rep.table_path).read_text() == rep.markdown
    assert main(["report", str(cfg), "--results", str(out)]) == 0
    assert capsys.readouterr().out == rep.markdown
    # records written before the column-generation fields existed are still found
    from cvxsnn.pipeline import LATE_FIELDS

    lines = out.read_text().splitlines()
    old = [lines[0]]
    for line in lines[1:]:
        e = json.loads(line)
        for name in LATE_FIELDS:
            e["record"]["config"].pop(name)
        old.append(json.dumps(e))
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text("\n".join(old) + "\n")
    assert report(cfg, results=legacy, out=None).markdown == rep.markdown.replace(
        str(out), str(legacy)
    )


@pytest.mark.slow
def test_process_pool_gives_the_same_records(reference, tmp_path):
    """Pinned threads: the executor does not change a record."""
    cfg, ref = reference
    pool = tmp_path / "pool.jsonl"
    reproduce(cfg, results=pool, workers=2, progress=False)
    assert _records(pool) == ref


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_interrupted_process_pool_stops_its_running_cells(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM sent to the sweep's process alone (a scheduler, ``kill PID``) stops
    the worker processes at once instead of waiting hours for their cells to end."""
    import signal
    from types import SimpleNamespace

    import _sleepy_cell

    monkeypatch.setattr(runner_mod, "run_cell", _sleepy_cell.run_cell)
    cells = [
        SimpleNamespace(config=SimpleNamespace(to_dict=dict), cell_id=f"c{i}") for i in range(3)
    ]
    snaps = runner_mod._Snapshots(tmp_path)
    stream = runner_mod._iter_local(cells, 2, runner_mod._Stop(), snaps)

    def pids() -> list[int]:
        return [int(p.read_text()) for p in tmp_path.glob("*/pid")]

    interrupted = []

    def arm(signum, frame):  # interrupt once both workers run a cell (look every 0.2 s)
        if len(pids()) == 2 or time.monotonic() > deadline:
            interrupted.append(time.monotonic())
            raise KeyboardInterrupt
        signal.setitimer(signal.ITIMER_REAL, 0.2)

    deadline = time.monotonic() + 60
    previous = signal.signal(signal.SIGALRM, arm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            next(stream)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # without the fix the pool waited for its running cells (120 s) before raising
    assert time.monotonic() - interrupted[0] < 30
    running = pids()
    assert len(running) == 2  # the third cell never started
    end = time.monotonic() + 10
    while any(_alive(p) for p in running) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any(_alive(p) for p in running), "a worker outlived the interrupt"


def test_dask_local_cluster_gives_the_same_records(reference, tmp_path):
    cfg, ref = reference
    dask = tmp_path / "dask.jsonl"
    reproduce(cfg, results=dask, executor="dask", workers=1, progress=False, dask_processes=False)
    assert _records(dask) == ref


@pytest.mark.slow
def test_killed_cli_sweep_resumes_to_the_same_records(reference, tmp_path):
    """SIGKILL a CLI sweep after a few cells, rerun it: each cell once, as uninterrupted."""
    cfg, ref = reference
    out = tmp_path / "r.jsonl"
    n_cells = 2 * 2 * 6  # settings x methods x seeds: enough cells that the kill lands mid-sweep
    cmd = [
        sys.executable,
        "-m",
        "cvxsnn.cli",
        "reproduce",
        str(cfg),
        "--seeds",
        "6",
        "--results",
        str(out),
        "-q",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 1 + 2:  # header + 2 cells
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the sweep ended before it was killed: {proc.stderr.read()!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    n_done = len(_records(out))
    assert 2 <= n_done < n_cells
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["n_already_done"] == n_done and summary["n_run"] == n_cells - n_done
    resumed = _records(out)  # asserts that no cell was written twice
    assert len(resumed) == n_cells
    assert {k: resumed[k] for k in ref} == ref  # seeds 0, 1 as in the uninterrupted run
