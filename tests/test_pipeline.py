"""End-to-end runs of the four methods through cvxsnn.pipeline.train."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch

from cvxsnn.cli import main
from cvxsnn.evaluate import evaluate
from cvxsnn.network import load_model
from cvxsnn.pipeline import TrainConfig, encode_targets, train
from cvxsnn.solver import duality_gap
from cvxsnn.tasks import make_task

RECORD_KEYS = {
    "method",
    "task",
    "L",
    "T",
    "K",
    "m",
    "n",
    "seed",
    "rho",
    "loss",
    "penalty",
    "P_raw",
    "P",
    "support_size",
    "primal",
    "dual",
    "gap",
    "rel_gap",
    "metrics",
    "time_s",
    "memory",
    "environment",
    "config_hash",
}


def test_cvx_xor_l3_t6_certified_and_accurate():
    """The paper's Table 2 setting: CVX on FIRST-LAST-XOR, L = 3, T = 6 (paper: 1.000)."""
    cfg = TrainConfig(
        task="xor",
        method="cvx",
        depth=3,
        steps=6,
        branches=16,
        width=32,
        n_train=1000,
        n_val=300,
        n_test=1000,
        seed=0,
    )
    res = train(cfg, progress=False)
    rec = res.record
    assert RECORD_KEYS <= set(rec)
    assert rec["test_acc"] >= 0.95
    assert rec["gap"] < 1e-6 and rec["certified"]
    assert rec["reconstruction"]["spikes_identical"]
    assert rec["reconstruction"]["max_abs_error"] <= 1e-9
    for stage in ("witnesses", "dictionary", "solve", "reconstruction", "evaluation"):
        assert rec["time_s"][stage] >= 0
    # the recorded gap is the certificate of the returned network, recomputed independently
    fit = res.convex
    Y, _, _ = encode_targets(res.task.train, "squared", (1.0,))
    cert = duality_gap(fit.dictionary.atoms, Y, fit.coef, fit.intercept, fit.rho)
    assert cert.gap == pytest.approx(rec["gap"], abs=1e-12)
    # the network's readout on the training data is D W + b
    x = res.task.train.x.to(torch.float64)
    out = res.net(x, res.task.train.steps)[0].detach().numpy()
    np.testing.assert_allclose(out, fit.dictionary.atoms @ fit.coef + fit.intercept, atol=1e-9)


def test_saved_model_loads_and_predicts_the_same(tmp_path):
    cfg = TrainConfig(
        task="xor", method="cvx", branches=4, width=8, n_train=300, n_val=100, n_test=200, n_rhos=4
    )
    res = train(cfg, progress=False, save_model=str(tmp_path / "m.pt"))
    net, extra = load_model(tmp_path / "m.pt")
    x = res.task.test.x.to(torch.float64)
    assert torch.equal(net(x), res.net(x))
    assert extra["record"]["method"] == "cvx"


def test_cvx_addition_multi_head_and_ood_metrics():
    cfg = TrainConfig(
        task="addition",
        base=2,
        method="cvx",
        steps=6,
        branches=8,
        width=16,
        n_train=400,
        n_val=200,
        n_test=200,
        n_rhos=5,
        seed=1,
    )
    rec = train(cfg, progress=False).record
    test = rec["metrics"]["test"]
    for key in ("sum_digit_acc", "joint_token_acc", "sequential_acc", "joint_token_chance"):
        assert key in test
    assert any(k.startswith("ood_10x/") for k in test)
    assert rec["gap"] <= 1e-6 * max(1.0, abs(rec["primal"]))
    assert test["sum_digit_acc"] > test["sum_digit_chance"]


def test_cvx_mnist_seq_small(mnist_dir):
    cfg = TrainConfig(
        task="mnist-seq",
        method="cvx",
        steps=14,
        branches=8,
        width=32,
        n_train=1000,
        n_val=300,
        n_test=500,
        data_dir=str(mnist_dir),
        n_rhos=4,
    )
    res = train(cfg, progress=False)
    rec = res.record
    assert rec["test_acc"] > 0.3  # ten classes, chance 0.1
    assert rec["rel_gap"] <= 1e-6
    # the training metrics come from the reconstruction check's outputs: the same as a
    # fresh evaluation of the returned network
    assert res.convex.reconstruction.outputs is not None
    assert rec["metrics"]["train"] == evaluate(res.net, res.task, "train")


@pytest.mark.parametrize("penalty", ["l1", "group_l2"])
@pytest.mark.parametrize("loss", ["squared", "softmax"])
def test_losses_and_penalties_through_the_pipeline(loss, penalty):
    cfg = TrainConfig(
        task="xor",
        method="cvx",
        branches=4,
        width=8,
        n_train=300,
        n_val=100,
        n_test=100,
        n_rhos=3,
        loss=loss,
        penalty=penalty,
    )
    rec = train(cfg, progress=False).record
    assert rec["rel_gap"] <= 1e-6
    assert rec["reconstruction"]["max_abs_error"] <= 1e-9


def test_fixed_rho_and_beta_reg():
    base = dict(task="xor", method="cvx", branches=4, width=16, n_train=300, n_val=100, n_test=100)
    rec = train(TrainConfig(**base, beta_reg=0.2), progress=False).record
    assert rec["rho"] == pytest.approx(0.2 / 4.0)
    assert rec["rho_path"] == []


def test_sg_cvx_and_sg_sg_run(tmp_path):
    base = dict(
        task="xor", steps=6, branches=4, width=8, n_train=300, n_val=100, n_test=100, epochs=3
    )
    sg = train(TrainConfig(**base, method="sg"), progress=False, save_model=str(tmp_path / "sg.pt"))
    assert sg.record["penalty"] is None
    rec = train(TrainConfig(**base, method="sg-cvx", n_rhos=3), progress=False).record
    assert rec["rel_gap"] <= 1e-6 and rec["reconstruction"]["spikes_identical"]
    rec2 = train(TrainConfig(**base, method="sg-sg"), progress=False).record
    assert rec2["sg"]["total_epochs"] >= rec2["sg"]["sg_epochs"]


@pytest.mark.parametrize(("method", "fail_at"), [("sg-sg", 10), ("sg-sg", 3), ("sg-cvx", 5)])
def test_sg_training_killed_and_restarted_with_its_snapshot_folder(
    tmp_path, fail_validation, method, fail_at
):
    """SG-SG keeps two snapshots (the SG run, then its continuation); a run killed in
    either and started again with the same folder writes the uninterrupted record."""
    from cvxsnn.experiments import comparable

    base = dict(
        task="xor", steps=6, branches=4, width=8, n_train=300, n_val=100, n_test=100, epochs=2
    )
    config = TrainConfig(**base, method=method, n_rhos=3)
    plain = train(config, progress=False).record
    # 10: the continuation's epoch 1 (after 3 rates x 3 passes)
    failing = fail_validation(fail_at, KeyboardInterrupt())
    folder = tmp_path / "snap"
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False, snapshot_dir=folder, snapshot_every_s=0)
    assert (folder / "sg.pt").exists()
    failing.disarm()
    resumed = train(config, progress=False, snapshot_dir=folder, snapshot_every_s=0).record
    assert comparable(resumed) == comparable(plain)
    # the SG training done before the kill is reported with the timings (in every case
    # here the first SG run had written its snapshot; the continuation had not)
    assert resumed["time_s"]["sg_before_resume"] > 0
    assert "sg_before_resume" not in plain["time_s"]
    assert "sg_continue_before_resume" not in resumed["time_s"]
    assert (folder / "sg_continue.pt").exists() == (method == "sg-sg")


def test_cvx_cg_grows_the_dictionary_certified_and_exact():
    base = dict(
        task="xor", steps=10, depth=3, branches=2, width=8, n_train=200, n_val=100, n_test=200
    )
    cvx = train(TrainConfig(**base, method="cvx", n_rhos=4), progress=False)
    run = train(
        TrainConfig(**base, method="cvx-cg", n_rhos=4, cg_rounds=3, cg_atoms=8, cg_proposals=16),
        progress=False,
    )
    rec = run.record
    cg = rec["column_generation"]
    # the path and its selected rho are those of CVX; CG starts from its solution
    assert rec["rho"] == pytest.approx(cvx.record["rho"])
    assert cg["P_initial"] == cvx.record["P"]
    assert cg["rounds"][0]["primal"] == pytest.approx(cvx.convex.solve.primal, rel=1e-9)
    primals = [r["primal"] for r in cg["rounds"]]
    assert all(b <= a + 1e-15 for a, b in itertools.pairwise(primals))
    assert primals[-1] < primals[0] and rec["P"] > cvx.record["P"]
    assert all(r["val_acc"] is not None for r in cg["rounds"])
    # the last round's row accuracies are those of the final CG solution on the patterns of
    # a fresh transform (the rounds computed them by appending each round's new atoms)
    final = run.convex.column_generation
    for split, key in ((run.task.test, "test_row_acc"), (run.task.val, "val_acc")):
        out = final.dictionary.transform(split.x.to(torch.float64)) @ final.solve.coef
        want = float(
            ((out[:, 0] + final.solve.intercept[0] > 0) == split.targets[0, :, 0].numpy()).mean()
        )
        assert cg["rounds"][-1][key] == want
    # the returned network is certified and rebuilt exactly on the grown dictionary
    assert rec["rel_gap"] <= 1e-6 and rec["certified"]
    assert rec["reconstruction"]["spikes_identical"]
    assert rec["reconstruction"]["max_abs_error"] <= 1e-9
    # lower bounds: over the examined patterns, and (looser) over all binary patterns
    assert cg["bounds"]["lower_bound"] <= cg["examined_lower_bound"] + 1e-12
    assert cg["examined_lower_bound"] <= cg["primal"] + 1e-12


def test_sg_cvx_cg_runs_with_random_search():
    rec = train(
        TrainConfig(
            task="xor",
            steps=6,
            branches=2,
            width=8,
            n_train=200,
            n_val=100,
            n_test=100,
            epochs=2,
            method="sg-cvx-cg",
            n_rhos=3,
            cg_rounds=2,
            cg_atoms=4,
            cg_pricer="random",
            cg_proposals=8,
        ),
        progress=False,
    ).record
    assert rec["sg"]["sg_epochs"] >= 1
    assert rec["column_generation"]["pricer"] == "random"
    assert rec["rel_gap"] <= 1e-6 and rec["reconstruction"]["spikes_identical"]


def test_new_fields_at_default_keep_earlier_run_hashes():
    """Hashes of runs recorded before column generation existed stay valid."""
    from cvxsnn.network import config_hash
    from cvxsnn.pipeline import LATE_FIELDS

    cfg = TrainConfig(task="xor", method="cvx", branches=64)
    before = {k: v for k, v in cfg.to_dict().items() if k not in LATE_FIELDS}
    assert cfg.hash() == config_hash(before)
    assert TrainConfig(method="cvx-cg", cg_rounds=3).hash() != TrainConfig(method="cvx-cg").hash()


def test_cli_train_custom_and_predict(tmp_path, capsys):
    task = make_task("xor", steps=5, n_train=300, n_val=10, n_test=10, seed=3)
    X = task.train.x.permute(1, 0, 2).numpy()
    y = task.train.targets[0, :, 0].numpy()
    np.savez(tmp_path / "d.npz", X=X, y=y)
    code = main(
        [
            "train",
            "--task",
            "custom",
            "--data",
            str(tmp_path / "d.npz"),
            "--method",
            "cvx",
            "-K",
            "4",
            "-m",
            "8",
            "--n-rhos",
            "3",
            "-q",
            "--save-model",
            str(tmp_path / "m.pt"),
            "-o",
            str(tmp_path / "r.json"),
        ]
    )
    assert code == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec == json.loads((tmp_path / "r.json").read_text())
    code = main(["predict", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "d.npz")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 300 and 0.0 <= out["acc"] <= 1.0


def test_bad_run_inputs():
    with pytest.raises(ValueError, match="rho must be a finite number > 0"):
        TrainConfig(rho=0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        TrainConfig(method="adam")
    with pytest.raises(ValueError, match="cg_pricer must be one of"):
        TrainConfig(cg_pricer="exhaustive")
    with pytest.raises(ValueError, match="cg_rounds must be >= 0"):
        TrainConfig(cg_rounds=-1)
    with pytest.raises(ValueError, match="steps"):
        train(TrainConfig(steps=0), progress=False)


def test_threads_pin_torch_and_the_blas_pools(monkeypatch):
    """threads=1 holds torch and numpy/scipy's BLAS and OpenMP pools at one thread for the
    run (a record depends on them) and gives the BLAS pools back afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import cvxsnn.pipeline as pipeline

    def blas_pools():
        return {
            i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"
        }

    seen = []
    real = pipeline._make_task

    def spy(config):
        seen.append(
            ({i["filepath"]: i["num_threads"] for i in threadpool_info()}, torch.get_num_threads())
        )
        return real(config)

    monkeypatch.setattr(pipeline, "_make_task", spy)
    config = TrainConfig(task="xor", steps=4, branches=2, width=4, n_train=64, n_val=16, n_test=16)
    before = torch.get_num_threads()
    with threadpool_limits(limits=2):  # pools as a 2-core machine starts them
        pools = blas_pools()
        rec1 = train(dataclasses.replace(config, threads=1), progress=False).record
        assert blas_pools() == pools  # torch's own setting stays, as torch.set_num_threads
        train(config, progress=False)  # threads=None: pools left as they are
    torch.set_num_threads(before)
    (pinned, torch1), (free, _) = seen
    assert pinned and set(pinned.values()) == {1} and torch1 == 1
    assert {k: v for k, v in free.items() if k in pools} == pools  # threads=None: untouched
    assert rec1["config"]["threads"] == 1
