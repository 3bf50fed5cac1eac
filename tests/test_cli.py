"""Command-line interface: help, bad arguments, a full train/predict round trip."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cvxsnn.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "predict", "sweep"):
        assert cmd in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--task", "nope"], "argument --task: invalid choice: 'nope'"),
        (["train", "--method", "adam"], "argument --method: invalid choice: 'adam'"),
        (["train", "--steps", "0"], "--steps must be >= 1; got 0"),
        (["train", "--width", "x"], "--width must be an integer; got 'x'"),
        (["train", "--rho", "-1"], "--rho must be a finite number > 0; got -1"),
        (["train", "--depth", "1"], "depth (L) must be >= 2"),
        (["train", "--task", "custom"], "data must name a FILE.npz when task is 'custom'"),
        (["train", "--cg-atoms", "0"], "--cg-atoms must be >= 1; got 0"),
        (["train", "--cg-pricer", "x"], "argument --cg-pricer: invalid choice: 'x'"),
        (
            ["train", "--snapshot-every", "-1"],
            "--snapshot-every must be a finite number >= 0; got -1",
        ),
        (["reproduce", "table1", "--snapshot-every", "x"], "--snapshot-every must be a number"),
    ],
)
def test_bad_arguments_give_one_line(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


def test_missing_mnist_dir_is_clear(tmp_path, capsys):
    code = main(["train", "--task", "mnist-seq", "--data-dir", str(tmp_path / "none"), "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err


def test_console_script_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "cvxsnn.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "train" in out.stdout


def test_train_with_a_snapshot_folder_resumes(tmp_path, capsys, monkeypatch):
    """cvxsnn train --snapshot-dir: the finished SG grid is kept there; a rerun with the
    same folder trains nothing and prints the same record (timings aside)."""
    import json

    from cvxsnn.experiments import comparable

    argv = [
        "train", "--task", "xor", "--method", "sg", "--branches", "2", "--width", "8",
        "--n-train", "128", "--n-val", "32", "--n-test", "64", "--epochs", "2", "-q",
        "--snapshot-dir", str(tmp_path / "state"), "--snapshot-every", "0",
    ]  # fmt: skip
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert (tmp_path / "state" / "sg.pt").exists()
    import cvxsnn.sg as sg

    def no_training(*args, **kwargs):
        raise AssertionError("the finished snapshot should be read, not retrained")

    monkeypatch.setattr(sg, "evaluate_sg", no_training)
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert comparable(second) == comparable(first)
