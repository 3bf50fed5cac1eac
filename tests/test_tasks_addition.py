"""ADDITION: targets equal integer addition, inputs, splits, and autoregressive evaluation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cvxsnn.network import NetConfig, ParallelLIFNet, decode_outputs
from cvxsnn.tasks.addition import (
    addition_dataset,
    addition_inputs,
    addition_targets,
    digits_to_int,
    evaluate_addition,
    make_addition,
)


@st.composite
def operands(draw):
    base = draw(st.sampled_from([2, 3, 5]))
    D = draw(st.integers(1, 50))
    n = draw(st.integers(1, 6))
    digits = st.lists(st.integers(0, base - 1), min_size=D, max_size=D)
    a = draw(st.lists(digits, min_size=n, max_size=n))
    b = draw(st.lists(digits, min_size=n, max_size=n))
    return base, torch.tensor(a), torch.tensor(b)


@settings(max_examples=60, deadline=None)
@given(operands())
def test_targets_equal_integer_addition(case) -> None:
    base, a, b = case
    tg = addition_targets(a, b, base)
    n, D = a.shape
    assert tg.sums.shape == tg.carries.shape == tg.carry_in.shape == (n, D + 1)
    total = [x + y for x, y in zip(digits_to_int(a, base), digits_to_int(b, base), strict=True)]
    assert digits_to_int(tg.sums, base) == total
    assert tg.sums.min() >= 0 and tg.sums.max() < base
    # The carry chain: c_0 = 0 is fed first, then each step's carry; the last carry is 0.
    assert torch.all(tg.carry_in[:, 0] == 0)
    assert torch.equal(tg.carry_in[:, 1:], tg.carries[:, :-1])
    assert torch.all(tg.carries[:, -1] == 0)
    assert torch.equal(tg.sums[:, -1], tg.carry_in[:, -1])
    # Each step's carry is the integer carry out of the lowest t + 1 digits.
    for t in range(D):
        low = [int(v) % base ** (t + 1) for v in digits_to_int(a[:, : t + 1], base)]
        low_b = [int(v) % base ** (t + 1) for v in digits_to_int(b[:, : t + 1], base)]
        carry = [(x + y) // base ** (t + 1) for x, y in zip(low, low_b, strict=True)]
        assert tg.carries[:, t].tolist() == carry


def test_closed_form_base_10_example() -> None:
    # 857 + 496 = 1353, digits least significant first.
    a, b = torch.tensor([[7, 5, 8]]), torch.tensor([[6, 9, 4]])
    tg = addition_targets(a, b, 10)
    assert tg.sums.tolist() == [[3, 5, 3, 1]]
    assert tg.carries.tolist() == [[1, 1, 1, 0]]
    assert tg.carry_in.tolist() == [[0, 1, 1, 1]]


@pytest.mark.parametrize("base", [2, 3, 5])
def test_dataset_inputs_and_targets(base: int) -> None:
    data = addition_dataset(base, 5, 300, torch.Generator().manual_seed(0))
    a, b = data.aux["a"], data.aux["b"]
    assert data.x.shape == (6, 300, 3) and data.steps == tuple(range(6))
    assert data.head_names == ("sum", "carry") and data.head_classes == (base, 2)
    digits = (data.x * (base - 1)).round().long()  # (T, n, 3)
    tg = addition_targets(a, b, base)
    assert torch.equal(digits[:5, :, 0], a.T) and torch.equal(digits[:5, :, 1], b.T)
    assert torch.all(digits[5, :, :2] == 0)
    assert torch.equal(digits[..., 2], tg.carry_in.T)  # teacher forcing: the true carry
    assert torch.equal(data.targets[..., 0], tg.sums.T)
    assert torch.equal(data.targets[..., 1], tg.carries.T)
    assert data.x.max() <= 1.0 and data.x.min() >= 0.0


def test_make_addition_splits_and_ood() -> None:
    task = make_addition(3, 5, n_train=200, n_val=50, n_test=100, seed=0, n_ood=40)
    other = make_addition(3, 5, n_train=200, n_val=50, n_test=100, seed=1, n_ood=40)
    assert set(task.extra) == {"ood_2x", "ood_5x", "ood_10x"}
    for key, T in (("ood_2x", 11), ("ood_5x", 26), ("ood_10x", 51)):
        assert task.extra[key].T == T and task.extra[key].n == 40
        assert torch.equal(task.extra[key].x, other.extra[key].x)
    assert task.test.T == task.train.T == 6
    assert torch.equal(task.test.x, other.test.x)
    assert not torch.equal(task.train.x, other.train.x)
    assert task.params["base"] == 3 and task.params["T"] == 6
    rows = lambda d: {tuple(r) for r in torch.cat([d.aux["a"], d.aux["b"]], 1).tolist()}  # noqa: E731
    test_rows = torch.cat([task.test.aux["a"], task.test.aux["b"]], 1).tolist()
    seen = sum(tuple(r) in rows(task.train) for r in test_rows) / 100
    assert task.params["test_seen_in_train"] == seen


def test_inputs_reject_bad_digits() -> None:
    with pytest.raises(
        ValueError, match=r"a_digits must hold digits in \[0, 3\); got values in \[0, 3\]"
    ):
        addition_targets(torch.tensor([[0, 3]]), torch.tensor([[0, 1]]), 3)
    with pytest.raises(
        ValueError, match=r"b_digits must have shape \(n, D\) with D >= 1; got \(2,\)"
    ):
        addition_targets(torch.tensor([[0, 1]]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="a_digits and b_digits must have the same shape"):
        addition_targets(torch.tensor([[0, 1]]), torch.tensor([[0, 1, 1]]), 3)
    with pytest.raises(
        ValueError, match=r"a_digits must hold integer digits; got dtype torch\.float32"
    ):
        addition_targets(torch.tensor([[0.0, 1.0]]), torch.tensor([[0, 1]]), 3)
    with pytest.raises(
        ValueError, match=r"carry_in must have shape \(n, D \+ 1\) = \(1, 3\); got \(1, 2\)"
    ):
        addition_inputs(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]), torch.zeros(1, 2), 3)
    with pytest.raises(ValueError, match="base must be >= 2; got 1"):
        make_addition(1, 5, n_train=10, n_val=0, n_test=0, seed=0)


# --------------------------------------------------------------------------- #
# Autoregressive evaluation
# --------------------------------------------------------------------------- #
class AdditionOracle:
    """Adds the digits of its input; with ``use_carry=False`` it ignores the fed carry."""

    def __init__(self, base: int, use_carry: bool = True, carry_cols: int = 2) -> None:
        self.base, self.use_carry = base, use_carry
        self.config = SimpleNamespace(out_layout=(base, carry_cols), head_classes=(base, 2))
        self.calls = 0

    def init_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        digits = (x_t * (self.base - 1)).round().long()  # (B, 3)
        total = digits[:, 0] + digits[:, 1] + (digits[:, 2] if self.use_carry else 0)
        s, c = total % self.base, total // self.base
        out_s = torch.nn.functional.one_hot(s, self.base)
        if self.config.out_layout[1] == 1:
            out_c = (2 * c - 1).unsqueeze(1)  # one sign column
        else:
            out_c = torch.nn.functional.one_hot(c, 2)
        return torch.cat([out_s, out_c], dim=1).to(x_t.dtype), state + 1


@pytest.mark.parametrize("base", [2, 3, 5])
@pytest.mark.parametrize("D", [1, 5, 10, 50])
@pytest.mark.parametrize("teacher_forced", [False, True])
def test_perfect_oracle_scores_one(base: int, D: int, teacher_forced: bool) -> None:
    data = addition_dataset(base, D, 257, torch.Generator().manual_seed(D))
    oracle = AdditionOracle(base)
    res = evaluate_addition(oracle, data, base, teacher_forced=teacher_forced, batch_size=100)
    T = D + 1
    assert oracle.calls == 3 * T  # three batches, one call per step
    assert res["sum_digit_acc"] == res["joint_token_acc"] == res["sequential_acc"] == 1.0
    assert res["carry_acc"] == 1.0
    assert res["sum_digit_chance"] == pytest.approx(1 / base)
    assert res["joint_token_chance"] == pytest.approx(1 / (2 * base))
    assert res["sequential_chance"] == pytest.approx(base ** (-T))
    assert res["n"] == 257 and res["T"] == T


def test_one_column_carry_head() -> None:
    data = addition_dataset(2, 8, 64, torch.Generator().manual_seed(0))
    res = evaluate_addition(AdditionOracle(2, carry_cols=1), data, 2)
    assert res["sequential_acc"] == 1.0


@pytest.mark.parametrize("base", [2, 3, 5])
def test_carry_blind_model(base: int) -> None:
    """A model that ignores the carry input: its scores follow from the digits alone."""
    data = addition_dataset(base, 6, 500, torch.Generator().manual_seed(1))
    tg = addition_targets(data.aux["a"], data.aux["b"], base)
    blind = AdditionOracle(base, use_carry=False)
    ar = evaluate_addition(blind, data, base)
    tf = evaluate_addition(blind, data, base, teacher_forced=True)
    pad = torch.zeros(500, 1, dtype=torch.long)
    total = torch.cat([data.aux["a"], pad], 1) + torch.cat([data.aux["b"], pad], 1)  # (n, T)
    ok_s = total % base == tg.sums
    ok_c = total // base == tg.carries
    for res in (ar, tf):
        assert res["sum_digit_acc"] == pytest.approx(ok_s.double().mean().item())
        assert res["carry_acc"] == pytest.approx(ok_c.double().mean().item())
        assert res["joint_token_acc"] == pytest.approx((ok_s & ok_c).double().mean().item())
        assert res["sequential_acc"] == pytest.approx(ok_s.all(1).double().mean().item())
    # The sum digit is right exactly where no carry comes in.
    assert torch.equal(ok_s, tg.carry_in == 0)
    assert ar["sequential_acc"] < 1.0


class CarryFlipper(AdditionOracle):
    """Right sum for the carry it is fed, but always predicts carry 1 - true."""

    def step(self, x_t, state):
        out, state = super().step(x_t, state)
        out[:, self.base :] = out[:, self.base :].flip(1)
        return out, state


def test_autoregressive_differs_from_teacher_forced() -> None:
    base = 3
    data = addition_dataset(base, 5, 400, torch.Generator().manual_seed(2))
    tg = addition_targets(data.aux["a"], data.aux["b"], base)
    model = CarryFlipper(base)
    tf = evaluate_addition(model, data, base, teacher_forced=True)
    ar = evaluate_addition(model, data, base)
    assert tf["sum_digit_acc"] == 1.0 and tf["carry_acc"] == 0.0
    assert tf["joint_token_acc"] == 0.0
    # Autoregressively it is fed its own flipped carry: simulate that chain by hand.
    a = torch.cat([data.aux["a"], torch.zeros(400, 1, dtype=torch.long)], 1)
    b = torch.cat([data.aux["b"], torch.zeros(400, 1, dtype=torch.long)], 1)
    fed = torch.zeros(400, dtype=torch.long)
    sums = []
    for t in range(6):
        total = a[:, t] + b[:, t] + fed
        sums.append(total % base)
        fed = 1 - total // base
    expected = (torch.stack(sums, 1) == tg.sums).double()
    assert ar["sum_digit_acc"] == pytest.approx(expected.mean().item())
    assert ar["sequential_acc"] == pytest.approx(expected.min(1).values.mean().item())
    assert ar["sum_digit_acc"] < 1.0


def _net(base: int, seed: int = 0) -> ParallelLIFNet:
    cfg = NetConfig(
        d_in=3, widths=(16, 16), branches=4, out_layout=(base, 2), head_classes=(base, 2)
    )
    net = ParallelLIFNet(cfg, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        net.w_in.mul_(4.0)  # enough drive for spikes
        net.w_out.normal_(generator=torch.Generator().manual_seed(seed + 1))
        net.b_out.normal_(generator=torch.Generator().manual_seed(seed + 2))
    return net


def test_lif_net_teacher_forced_matches_sequence_api() -> None:
    base = 3
    data = addition_dataset(base, 5, 120, torch.Generator().manual_seed(3), dtype=torch.float64)
    net = _net(base)
    res = evaluate_addition(net, data, base, teacher_forced=True, batch_size=50)
    pred = net.predict(data.x)  # (T, n, 2)
    ok_s = pred[..., 0] == data.targets[..., 0]
    ok_c = pred[..., 1] == data.targets[..., 1]
    assert res["sum_digit_acc"] == pytest.approx(ok_s.double().mean().item())
    assert res["joint_token_acc"] == pytest.approx((ok_s & ok_c).double().mean().item())
    assert res["sequential_acc"] == pytest.approx(ok_s.all(0).double().mean().item())
    assert res["carry_acc"] == pytest.approx(ok_c.double().mean().item())


def test_lif_net_autoregressive_matches_prefix_recomputation() -> None:
    """The step loop equals re-running the whole prefix with the carries decoded so far."""
    base, D, n = 2, 4, 60
    data = addition_dataset(base, D, n, torch.Generator().manual_seed(4), dtype=torch.float64)
    net = _net(base, seed=5)
    res = evaluate_addition(net, data, base, batch_size=16)
    a, b = data.aux["a"], data.aux["b"]
    fed = torch.zeros(n, D + 1, dtype=torch.long)
    preds = []
    for t in range(D + 1):
        x = addition_inputs(a, b, fed, base, torch.float64)[: t + 1]  # (t + 1, n, 3)
        labels = decode_outputs(net(x)[-1], net.config.out_layout)  # (n, 2)
        preds.append(labels)
        if t < D:
            fed[:, t + 1] = labels[:, 1]
    pred = torch.stack(preds)  # (T, n, 2)
    ok_s = pred[..., 0] == data.targets[..., 0]
    ok_c = pred[..., 1] == data.targets[..., 1]
    assert res["sum_digit_acc"] == pytest.approx(ok_s.double().mean().item())
    assert res["joint_token_acc"] == pytest.approx((ok_s & ok_c).double().mean().item())
    assert res["sequential_acc"] == pytest.approx(ok_s.all(0).double().mean().item())


def test_evaluation_rejects_mismatches() -> None:
    data = addition_dataset(3, 3, 10, torch.Generator().manual_seed(0))
    with pytest.raises(
        ValueError, match=r"model must have two heads \(sum, carry\) with classes \(3, 2\)"
    ):
        evaluate_addition(AdditionOracle(5), data, 3)
    with pytest.raises(
        ValueError, match=r"data must have heads \('sum', 'carry'\) with classes \(5, 2\)"
    ):
        evaluate_addition(AdditionOracle(5), data, 5)
    no_aux = type(data)(data.x, data.targets, data.steps, data.head_classes, data.head_names)
    with pytest.raises(ValueError, match=r"data\.aux must hold the operand digits 'a' and 'b'"):
        evaluate_addition(AdditionOracle(3), no_aux, 3)
