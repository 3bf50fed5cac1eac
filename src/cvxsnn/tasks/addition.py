"""ADDITION in base b: add two D-digit numbers digit by digit, carrying.

Digits come least significant first. With operands a, b (digits a_t, b_t,
t = 1..D) the sequence has T = D + 1 steps::

    x_t = [a_t, b_t, c_{t-1}] / (b - 1)      t = 1..D,  c_0 = 0
    x_T = [0, 0, c_D] / (b - 1)
    s_t = (a_t + b_t + c_{t-1}) mod b,   c_t = (a_t + b_t + c_{t-1}) div b
    s_T = c_D,  c_T = 0

Targets sit at every step: head ``"sum"`` (b classes) is s_t and head
``"carry"`` (2 classes) is c_t, so s_1..s_T are the digits of a + b. The
training inputs feed the true carry (teacher forcing). Evaluation is
autoregressive (:func:`evaluate_addition`): the carry the model predicts at
step t is the carry input of step t + 1. Evaluating with the true carry fed
instead (``teacher_forced=True``) separates errors of the carry chain from
hidden states that are out of distribution at longer lengths: with
beta = 0.99 the membranes integrate the whole prefix.

Metrics, each with its chance level: sum-digit accuracy (share of correct sum
digits over all T steps; chance 1/b), joint-token accuracy (sum digit and
carry both right at a step; chance 1/(2b)) and sequential accuracy (every sum
digit of a number right; chance (1/b)^T). The paper's "token-wise" accuracy
for base 3 (0.177-0.363) lies below the 1/3 chance of sum-digit accuracy, so
it is most likely the joint-token accuracy; compare it with that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from cvxsnn.network import decode_outputs
from cvxsnn.tasks.base import SequenceDataset, TaskData, check_int, seeded_generator, seen_fraction

__all__ = [
    "AdditionTargets",
    "addition_dataset",
    "addition_inputs",
    "addition_targets",
    "digits_to_int",
    "evaluate_addition",
    "make_addition",
]

#: Seed of the test streams (in-distribution and OOD): fixed across run seeds.
TEST_SEED = 0

METRICS = ("sum_digit", "joint_token", "sequential", "carry")


class AdditionTargets(NamedTuple):
    """Per-step targets of an addition.

    Attributes
    ----------
    sums : Tensor of shape (n, T), dtype long
        s_1..s_T, the digits of a + b, least significant first.
    carries : Tensor of shape (n, T), dtype long
        c_1..c_T (c_T = 0).
    carry_in : Tensor of shape (n, T), dtype long
        The carry input of each step under teacher forcing: c_0 = 0, c_1..c_D.
    """

    sums: Tensor
    carries: Tensor
    carry_in: Tensor


def _check_digits(a_digits: Tensor, b_digits: Tensor, base: int) -> int:
    base = check_int("base", base, 2)
    for name, dig in (("a_digits", a_digits), ("b_digits", b_digits)):
        if not isinstance(dig, Tensor) or dig.dim() != 2 or dig.shape[1] < 1:
            shape = tuple(dig.shape) if isinstance(dig, Tensor) else type(dig).__name__
            raise ValueError(f"{name} must have shape (n, D) with D >= 1; got {shape}")
        if dig.is_floating_point() or dig.is_complex():
            raise ValueError(f"{name} must hold integer digits; got dtype {dig.dtype}")
        if dig.numel() and (int(dig.min()) < 0 or int(dig.max()) >= base):
            raise ValueError(
                f"{name} must hold digits in [0, {base}); "
                f"got values in [{int(dig.min())}, {int(dig.max())}]"
            )
    if a_digits.shape != b_digits.shape:
        raise ValueError(
            f"a_digits and b_digits must have the same shape (n, D); "
            f"got {tuple(a_digits.shape)} and {tuple(b_digits.shape)}"
        )
    return base


def addition_targets(a_digits: Tensor, b_digits: Tensor, base: int) -> AdditionTargets:
    """Sum digits and carries of ``a + b``, step by step.

    Parameters
    ----------
    a_digits, b_digits : Tensor of shape (n, D), integer
        Operand digits in [0, base), least significant first.
    base : int
        b >= 2.

    Returns
    -------
    AdditionTargets
        Each field of shape (n, D + 1).
    """
    base = _check_digits(a_digits, b_digits, base)
    n, D = a_digits.shape
    a, b = a_digits.long(), b_digits.long()
    sums = torch.zeros(n, D + 1, dtype=torch.long, device=a.device)
    carries = torch.zeros_like(sums)
    carry_in = torch.zeros_like(sums)
    c = torch.zeros(n, dtype=torch.long, device=a.device)
    for t in range(D):
        carry_in[:, t] = c
        total = a[:, t] + b[:, t] + c
        sums[:, t] = total % base
        c = total // base
        carries[:, t] = c
    carry_in[:, D] = c
    sums[:, D] = c
    return AdditionTargets(sums, carries, carry_in)


def digits_to_int(digits: Tensor, base: int) -> list[int]:
    """Integers from digit rows (least significant first), exact at any length.

    Parameters
    ----------
    digits : Tensor of shape (n, D), integer

    Returns
    -------
    list of int, length n
    """
    return [sum(int(v) * base**i for i, v in enumerate(row)) for row in digits.tolist()]


def _step_input(a_t: Tensor, b_t: Tensor, c_t: Tensor, base: int, dtype: torch.dtype) -> Tensor:
    """One step's input ``[a_t, b_t, c] / (b - 1)``: Tensor of shape (B, 3)."""
    return torch.stack([a_t, b_t, c_t], dim=-1).to(dtype) / (base - 1)


def addition_inputs(
    a_digits: Tensor,
    b_digits: Tensor,
    carry_in: Tensor,
    base: int,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Inputs of every step for given operands and fed carries.

    Parameters
    ----------
    a_digits, b_digits : Tensor of shape (n, D), integer
    carry_in : Tensor of shape (n, D + 1), integer
        The carry fed at each step (its first column is normally 0).
    base : int
    dtype : torch.dtype

    Returns
    -------
    Tensor of shape (T, n, 3), T = D + 1
        ``[a_t, b_t, carry_in_t] / (b - 1)``, with ``a_T = b_T = 0``.
    """
    base = _check_digits(a_digits, b_digits, base)
    n, D = a_digits.shape
    if tuple(carry_in.shape) != (n, D + 1):
        raise ValueError(
            f"carry_in must have shape (n, D + 1) = {(n, D + 1)}; got {tuple(carry_in.shape)}"
        )
    pad = torch.zeros(n, 1, dtype=torch.long, device=a_digits.device)
    a = torch.cat([a_digits.long(), pad], dim=1)  # (n, T)
    b = torch.cat([b_digits.long(), pad], dim=1)  # (n, T)
    return _step_input(a.T, b.T, carry_in.long().T, base, dtype)  # (T, n, 3)


def addition_dataset(
    base: int, n_digits: int, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> SequenceDataset:
    """Draw ``n`` additions of two uniform ``n_digits``-digit numbers, teacher-forced.

    Returns
    -------
    SequenceDataset
        ``x`` of shape (T, n, 3) with T = n_digits + 1, targets of shape
        (T, n, 2) at every step, heads ``("sum", "carry")`` with
        ``(base, 2)`` classes; ``aux["a"]``, ``aux["b"]`` of shape
        (n, n_digits) hold the operand digits.
    """
    base = check_int("base", base, 2)
    D = check_int("n_digits", n_digits, 1)
    n = check_int("n", n, 0)
    a = torch.randint(0, base, (n, D), generator=generator)
    b = torch.randint(0, base, (n, D), generator=generator)
    tg = addition_targets(a, b, base)
    x = addition_inputs(a, b, tg.carry_in, base, dtype)  # (T, n, 3)
    targets = torch.stack([tg.sums.T, tg.carries.T], dim=-1)  # (T, n, 2)
    return SequenceDataset(
        x=x,
        targets=targets,
        steps=tuple(range(D + 1)),
        head_classes=(base, 2),
        head_names=("sum", "carry"),
        aux={"a": a, "b": b},
    )


def make_addition(
    base: int,
    n_digits: int = 5,
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int,
    ood_factors: Sequence[int] = (2, 5, 10),
    n_ood: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> TaskData:
    """ADDITION splits: train / validation / test at ``n_digits``, OOD tests longer.

    Parameters
    ----------
    base : int
        b >= 2 (the paper uses 2, 3 and 5).
    n_digits : int
        D, digits per operand in training; T = D + 1.
    n_train, n_val, n_test : int
        Split sizes (``n_train >= 1``).
    seed : int
        Run seed: fixes the training and validation draws.
    ood_factors : sequence of int
        Each factor f adds ``extra[f"ood_{f}x"]`` with D * f digits.
    n_ood : int, optional
        Size of each OOD set; ``n_test`` when omitted.
    dtype : torch.dtype
        Floating dtype of the inputs.

    Returns
    -------
    TaskData
        The test and OOD sets come from fixed streams, identical for every seed.
    """
    base = check_int("base", base, 2)
    D = check_int("n_digits", n_digits, 1)
    n_train = check_int("n_train", n_train, 1)
    n_val = check_int("n_val", n_val, 0)
    n_test = check_int("n_test", n_test, 0)
    n_ood = n_test if n_ood is None else check_int("n_ood", n_ood, 0)
    factors = [check_int("ood_factors entry", f, 1) for f in ood_factors]
    tag = f"addition-b{base}-D{D}"
    train = addition_dataset(base, D, n_train, seeded_generator(seed, f"{tag}-train"), dtype)
    val = addition_dataset(base, D, n_val, seeded_generator(seed, f"{tag}-val"), dtype)
    test = addition_dataset(base, D, n_test, seeded_generator(TEST_SEED, f"{tag}-test"), dtype)
    extra = {
        f"ood_{f}x": addition_dataset(
            base, D * f, n_ood, seeded_generator(TEST_SEED, f"addition-b{base}-D{D * f}-ood"), dtype
        )
        for f in factors
    }
    seen = seen_fraction(_operand_rows(train), _operand_rows(test))
    return TaskData(
        name="addition",
        train=train,
        val=val,
        test=test,
        extra=extra,
        params={
            "base": base,
            "n_digits": D,
            "T": D + 1,
            "n_train": n_train,
            "n_val": n_val,
            "n_test": n_test,
            "n_ood": n_ood,
            "ood_factors": factors,
            "seed": int(seed),
            "distinct_inputs": float(base) ** (2 * D),
            "test_seen_in_train": seen,
        },
    )


def _operand_rows(data: SequenceDataset) -> Tensor:
    """Both operands of each addition as one row: (n, 2 D), uint8."""
    return torch.cat([data.aux["a"], data.aux["b"]], dim=1).to(torch.uint8)


@torch.no_grad()
def evaluate_addition(
    model: Any,
    data: SequenceDataset,
    base: int,
    teacher_forced: bool = False,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Accuracy of a model on additions, fed step by step.

    Parameters
    ----------
    model
        Anything with ``init_state(B)``, ``step(x_t, state) -> (out, state)``
        (``x_t`` of shape (B, 3), ``out`` of shape (B, C)) and
        ``config.out_layout`` with heads (sum, carry), such as
        :class:`cvxsnn.network.ParallelLIFNet`.
    data : SequenceDataset
        An addition set (``aux["a"]``, ``aux["b"]`` of shape (n, D)).
    base : int
    teacher_forced : bool
        Feed the true carry c_{t-1} at step t instead of the predicted one.
    batch_size : int, optional
        Sequences per batch. By default, for a model on the CPU with
        ``chunk_samples``, that (a cache-sized (B, K, m) step: every step of every
        layer is a few passes over it, 1.4x faster than 4,096 sequences at K = 32);
        otherwise 4,096. The results do not depend on it.

    Returns
    -------
    dict of str to float
        ``sum_digit_acc``, ``joint_token_acc``, ``sequential_acc``,
        ``carry_acc``, each with its ``*_chance``, plus ``n`` and ``T``.

    Notes
    -----
    Autoregressive (default): at step t the input is
    ``[a_t, b_t, c_hat_{t-1}] / (b - 1)`` where ``c_hat_{t-1}`` is the
    carry decoded from the model's carry head at step t - 1 (``c_hat_0 = 0``).
    """
    base = check_int("base", base, 2)
    if batch_size is None:  # cache-sized on the CPU; a GPU wants few, large launches
        chunk = getattr(model, "chunk_samples", None)
        on_cpu = torch.device(getattr(model, "device", "cpu")).type == "cpu"
        batch_size = int(chunk()) if callable(chunk) and on_cpu else 4096
    batch_size = check_int("batch_size", batch_size, 1)
    if "a" not in data.aux or "b" not in data.aux:
        raise ValueError(
            f"data.aux must hold the operand digits 'a' and 'b'; got keys {sorted(data.aux)}"
        )
    if data.head_names != ("sum", "carry") or data.head_classes != (base, 2):
        raise ValueError(
            f"data must have heads ('sum', 'carry') with classes ({base}, 2); "
            f"got {data.head_names} with {data.head_classes}"
        )
    layout = tuple(model.config.out_layout)
    head_classes = getattr(model.config, "head_classes", None)
    if len(layout) != 2 or (head_classes is not None and tuple(head_classes) != (base, 2)):
        raise ValueError(
            f"model must have two heads (sum, carry) with classes ({base}, 2); "
            f"got out_layout {layout} and head_classes {head_classes}"
        )
    a_all, b_all = data.aux["a"], data.aux["b"]
    n, D = a_all.shape
    if n == 0:
        raise ValueError("data must hold at least one sequence; got n = 0")
    tg = addition_targets(a_all, b_all, base)
    device = getattr(model, "device", data.x.device)
    dtype = getattr(model, "dtype", data.x.dtype)
    pred_sum, pred_carry = [], []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        B = stop - start
        zero = torch.zeros(B, dtype=torch.long, device=device)
        a = a_all[start:stop].to(device).long()
        b = b_all[start:stop].to(device).long()
        true_in = tg.carry_in[start:stop].to(device)
        state = model.init_state(B)
        c_in = zero
        ps, pc = [], []
        for t in range(D + 1):
            a_t, b_t = (a[:, t], b[:, t]) if t < D else (zero, zero)
            if teacher_forced:
                c_in = true_in[:, t]
            out, state = model.step(_step_input(a_t, b_t, c_in, base, dtype), state)  # (B, C)
            labels = decode_outputs(out, layout)  # (B, 2)
            ps.append(labels[:, 0])
            pc.append(labels[:, 1])
            c_in = labels[:, 1].clamp(0, 1)
        pred_sum.append(torch.stack(ps, dim=1).cpu())  # (B, T)
        pred_carry.append(torch.stack(pc, dim=1).cpu())  # (B, T)
    T = D + 1
    sum_ok = torch.cat(pred_sum) == tg.sums.cpu()  # (n, T)
    carry_ok = torch.cat(pred_carry) == tg.carries.cpu()  # (n, T)
    return {
        "sum_digit_acc": sum_ok.double().mean().item(),
        "sum_digit_chance": 1.0 / base,
        "joint_token_acc": (sum_ok & carry_ok).double().mean().item(),
        "joint_token_chance": 1.0 / (2 * base),
        "sequential_acc": sum_ok.all(dim=1).double().mean().item(),
        "sequential_chance": float(base) ** (-T),
        "carry_acc": carry_ok.double().mean().item(),
        "carry_chance": 0.5,
        "n": float(n),
        "T": float(T),
    }
