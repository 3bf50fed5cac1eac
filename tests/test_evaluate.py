"""The task registry and evaluation on every kind of task."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cvxsnn.evaluate import evaluate, evaluate_all, evaluate_classification, get_split
from cvxsnn.network import NetConfig, ParallelLIFNet
from cvxsnn.tasks import TASKS, make_task
from cvxsnn.tasks.base import SequenceDataset

MNIST_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


# --------------------------------------------------------------------------- #
# make_task
# --------------------------------------------------------------------------- #
SIZES = {"n_train": 40, "n_val": 10, "n_test": 20, "seed": 0}


def test_registry_names() -> None:
    assert TASKS == ("xor", "addition", "mnist-seq", "custom")
    with pytest.raises(
        ValueError, match="unknown task 'parity'; valid tasks are xor, addition, mnist-seq, custom"
    ):
        make_task("parity", steps=6, **SIZES)


@pytest.mark.parametrize("name", ["xor", "addition", "mnist-seq"])
@pytest.mark.parametrize("steps", [0, -2])
def test_steps_below_one_raise(name: str, steps: int) -> None:
    with pytest.raises(ValueError, match=f"steps must be >= 1; got {steps}"):
        make_task(name, steps=steps, data_dir=MNIST_DIR, **SIZES)


def test_task_specific_checks() -> None:
    with pytest.raises(ValueError, match="steps must be >= 2 for task 'xor'"):
        make_task("xor", steps=1, **SIZES)
    with pytest.raises(ValueError, match=r"steps must be >= 2 for task 'addition' \(T = D \+ 1"):
        make_task("addition", steps=1, **SIZES)
    with pytest.raises(ValueError, match="data_dir is required for task 'mnist-seq'"):
        make_task("mnist-seq", steps=28, **SIZES)
    with pytest.raises(ValueError, match="data is required for task 'custom'"):
        make_task("custom", steps=None, **SIZES)
    with pytest.raises(ValueError, match=r"task 'xor' takes no argument\(s\) \['base_digits'\]"):
        make_task("xor", steps=6, base_digits=3, **SIZES)
    with pytest.raises(ValueError, match="steps must be an integer >= 1 for task 'xor'; got None"):
        make_task("xor", steps=None, **SIZES)


def test_make_task_builds_each_task(tmp_path: Path) -> None:
    xor = make_task("xor", steps=8, distractors=2, **SIZES)
    assert xor.name == "xor" and xor.train.x.shape == (8, 40, 4)
    add = make_task("addition", steps=6, base=5, ood_factors=(2,), **SIZES)
    assert add.train.T == 6 and add.params["n_digits"] == 5 and add.params["base"] == 5
    assert set(add.extra) == {"ood_2x"} and add.extra["ood_2x"].T == 11
    arrays = {"X": np.zeros((30, 3, 2)), "y": np.arange(30) % 2}
    custom = make_task("custom", steps=3, data=arrays, **SIZES)
    assert custom.train.T == 3 and custom.train.n == 21  # 10% val, 20% test by default
    with pytest.raises(ValueError, match="steps must equal the custom data's T = 3"):
        make_task("custom", steps=4, data=arrays, **SIZES)
    if (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        mn = make_task("mnist-seq", steps=14, data_dir=MNIST_DIR, dtype=torch.float64, **SIZES)
        assert mn.train.x.shape == (14, 40, 56) and mn.train.x.dtype == torch.float64


# --------------------------------------------------------------------------- #
# evaluate
# --------------------------------------------------------------------------- #
class XorOracle:
    """Reads x_1 and x_T from the one-hot channels; optionally flips every answer."""

    def __init__(self, flip: bool = False) -> None:
        self.flip = flip
        self.config = SimpleNamespace(head_classes=(2,), out_layout=(2,))
        self.batches: list[int] = []

    def predict(self, x: torch.Tensor, steps) -> torch.Tensor:
        self.batches.append(x.shape[1])
        bits = x[..., :2].argmax(-1)  # (T, B)
        label = bits[0] ^ bits[-1] ^ int(self.flip)
        return label.reshape(1, -1, 1).expand(len(steps), -1, -1)


def test_classification_oracle_and_batching() -> None:
    task = make_task("xor", steps=6, n_train=101, n_val=10, n_test=50, seed=0)
    oracle = XorOracle()
    res = evaluate(oracle, task, "train", batch_size=40)
    assert oracle.batches == [40, 40, 21]
    assert res == {"n": 101.0, "acc": 1.0, "chance": 0.5, "majority": 51 / 101}
    assert evaluate(XorOracle(flip=True), task, "test")["acc"] == 0.0


def _net(d: int, head_classes: tuple[int, ...]) -> ParallelLIFNet:
    cfg = NetConfig(
        d_in=d, widths=(12,), branches=3, out_layout=head_classes, head_classes=head_classes
    )
    net = ParallelLIFNet(cfg, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.w_in.mul_(5.0)
        net.w_out.normal_(generator=torch.Generator().manual_seed(1))
    return net


def test_lif_net_accuracy_matches_direct_computation() -> None:
    task = make_task("xor", steps=6, n_train=300, n_val=0, n_test=100, seed=1, dtype=torch.float64)
    net = _net(2, (2,))
    res = evaluate(net, task, "train", batch_size=64)
    pred = net.predict(task.train.x, task.train.steps)  # (1, n, 1)
    assert res["acc"] == pytest.approx((pred == task.train.targets).double().mean().item())
    assert res == evaluate(net, task, "train", batch_size=1000)
    assert set(evaluate_all(net, task)) == {"train", "test"}  # empty val skipped
    assert evaluate(net, task, "val") == {"n": 0.0}


def test_several_heads_and_per_step_targets() -> None:
    g = torch.Generator().manual_seed(0)
    data = SequenceDataset(
        x=torch.rand(4, 30, 2, generator=g, dtype=torch.float64),
        targets=torch.stack(
            [torch.randint(0, 3, (4, 30), generator=g), torch.randint(0, 2, (4, 30), generator=g)],
            -1,
        ),
        steps=(0, 1, 2, 3),
        head_classes=(3, 2),
        head_names=("digit", "flag"),
    )
    net = _net(2, (3, 2))
    res = evaluate_classification(net, data, batch_size=7)
    pred = net.predict(data.x, data.steps)  # (4, 30, 2)
    ok = pred == data.targets
    assert res["acc_digit"] == pytest.approx(ok[..., 0].double().mean().item())
    assert res["acc_flag"] == pytest.approx(ok[..., 1].double().mean().item())
    assert res["acc"] == pytest.approx(ok.all(-1).double().mean().item())
    assert res["chance_digit"] == pytest.approx(1 / 3) and res["chance_flag"] == 0.5
    counts = torch.bincount(data.targets[..., 0].reshape(-1), minlength=3)
    assert res["majority_digit"] == pytest.approx((counts.max() / 120).item())


class AdditionOracle:
    def __init__(self, base: int) -> None:
        self.base = base
        self.config = SimpleNamespace(out_layout=(base, 2), head_classes=(base, 2))

    def init_state(self, batch: int) -> None:
        return None

    def step(self, x_t: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        total = (x_t * (self.base - 1)).round().long().sum(1)
        s = torch.nn.functional.one_hot(total % self.base, self.base)
        c = torch.nn.functional.one_hot(total // self.base, 2)
        return torch.cat([s, c], 1).to(x_t.dtype), state


@pytest.mark.parametrize("base", [2, 3, 5])
def test_addition_dispatch_reports_id_ood_autoregressive_and_teacher_forced(base: int) -> None:
    task = make_task("addition", steps=6, base=base, n_train=20, n_val=5, n_test=30, seed=0)
    res = evaluate(AdditionOracle(base), task, "test", batch_size=16)
    metrics = ("sum_digit", "joint_token", "sequential")
    for prefix in ("", "ood_2x/", "ood_5x/", "ood_10x/"):
        for mode in ("", "tf_"):
            for m in metrics:
                assert res[f"{prefix}{mode}{m}_acc"] == 1.0
            assert res[f"{prefix}{mode}sum_digit_chance"] == pytest.approx(1 / base)
            assert res[f"{prefix}{mode}joint_token_chance"] == pytest.approx(1 / (2 * base))
    assert res["sequential_chance"] == pytest.approx(base**-6)
    assert res["ood_10x/sequential_chance"] == pytest.approx(float(base) ** -51)
    assert res["ood_10x/T"] == 51
    assert res["acc"] == res["joint_token_acc"]
    val = evaluate(AdditionOracle(base), task, "val")
    assert not any("/" in key for key in val) and val["n"] == 5
    assert evaluate(AdditionOracle(base), task, "ood_5x")["T"] == 26


def test_bad_split_and_mismatched_model() -> None:
    task = make_task("xor", steps=6, **SIZES)
    with pytest.raises(
        ValueError,
        match=r"unknown split 'dev' of task 'xor'; valid splits are \['train', 'val', 'test'\]",
    ):
        evaluate(XorOracle(), task, "dev")
    with pytest.raises(
        ValueError, match=r"model heads must match the data's: data has head_classes \(2,\)"
    ):
        evaluate(_net(2, (3,)), task, "test")
    assert get_split(task, "val") is task.val


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_evaluation_matches_cpu() -> None:
    task = make_task("addition", steps=6, base=3, n_train=20, n_val=5, n_test=64, seed=0)
    cfg = NetConfig(d_in=3, widths=(16,), branches=2, out_layout=(3, 2), head_classes=(3, 2))
    cpu = ParallelLIFNet(cfg, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gpu = ParallelLIFNet(cfg, device="cuda", dtype=torch.float64)
    gpu.load_state_dict(cpu.state_dict())
    assert evaluate(gpu, task, "test") == evaluate(cpu, task, "test")
    xor = make_task("xor", steps=6, **SIZES)
    net = _net(2, (2,))
    net_gpu = _net(2, (2,)).to("cuda")
    assert evaluate(net_gpu, xor, "test") == evaluate(net, xor, "test")


def test_addition_results_do_not_depend_on_the_batch(monkeypatch) -> None:
    """The default (cache-sized) batch of the step-by-step addition evaluation gives what
    any other batch gives, OOD sets included."""
    task = make_task("addition", steps=4, n_train=40, n_val=0, n_test=30, seed=2, base=3)
    cfg = NetConfig(d_in=3, widths=(6, 5), branches=4, out_layout=(3, 2), head_classes=(3, 2))
    net = ParallelLIFNet(cfg, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        net.w_in.mul_(4.0)
        net.w_out.normal_(generator=torch.Generator().manual_seed(4))
    ref = evaluate(net, task, "test", batch_size=4096)
    asked = []
    monkeypatch.setattr(net, "chunk_samples", lambda: asked.append(1) or 7)
    assert evaluate(net, task, "test") == ref  # batches of 7
    assert asked  # the default batch is the model's chunk
    assert evaluate(net, task, "test", batch_size=13) == ref
    assert 0 < ref["acc"] < 1
