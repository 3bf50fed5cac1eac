"""Distinct input sequences of a batch.

The LIF kernel maps each input sequence to its spikes independently of the other samples
of the batch, so a computation over many samples need run only once per distinct
sequence: :func:`distinct_samples` finds them, exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["DistinctSamples", "distinct_samples", "repeated_samples"]

#: Run on the distinct samples only when at least this share of the samples are repeats;
#: below it the copy of the distinct samples costs more memory than the saving is worth.
MIN_REPEAT_SHARE = 0.1


class DistinctSamples(NamedTuple):
    """The distinct samples of a batch: sample ``i`` equals sample ``first[inverse[i]]``."""

    first: np.ndarray
    inverse: np.ndarray

    def take(self, x: Tensor) -> Tensor:
        """The distinct samples of ``x`` (T, n, d): a (T, n_distinct, d) copy."""
        return x[:, torch.as_tensor(self.first, device=x.device)]

    def take_bytes(self, x: Tensor) -> int:
        """Bytes of :meth:`take`'s copy."""
        return len(self.first) * x[:, :1].numel() * x.element_size()


def distinct_samples(x: Tensor) -> DistinctSamples | None:
    """The distinct samples of ``x`` (T, n, d), or None when every sample is distinct.

    The spikes of a sample depend on that sample only, so the dictionary build and
    ``ParallelLIFNet.predict`` run the kernel once per distinct input sequence and copy
    the results of a repeated sample: on tasks with few distinct inputs (FIRST-LAST-XOR
    at T = 6 has 2^6) they do a fraction of the work and give the same results bit for
    bit.

    Two samples are merged only if their values are equal byte for byte over all T
    steps and d channels (so ``-0.0`` and ``0.0`` are kept apart, which only costs
    work). A float64 fingerprint of each sample (its dot product with a fixed random
    vector) groups candidates; only samples with equal fingerprints are compared.

    Returns
    -------
    DistinctSamples or None
        ``first`` (n_distinct,) int64 holds the index of each distinct sample's
        first occurrence, increasing; ``inverse`` (n,) int64 maps sample ``i`` to
        its distinct sample, ``first[inverse[i]]``.

    Only the (n,) fingerprints and the samples whose fingerprints collide leave
    ``x``'s device.
    """
    T, n, d = x.shape
    if n < 2:
        return None
    x = x.detach()
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn(T, d, generator=gen, dtype=torch.float64).to(x.device)
    finger = torch.zeros(n, dtype=torch.float64, device=x.device)
    for t in range(T):  # step by step: no copy of x
        finger += x[t].to(torch.float64) @ probe[t]
    _, f_inverse, counts = np.unique(finger.cpu().numpy(), return_inverse=True, return_counts=True)
    f_inverse = f_inverse.reshape(n)
    candidates = np.flatnonzero(counts[f_inverse] > 1)
    if candidates.size == 0:  # every fingerprint differs: every sample differs
        return None
    rows_t = x[:, torch.as_tensor(candidates, device=x.device)].permute(1, 0, 2)
    rows_t = rows_t.contiguous().cpu()
    if rows_t.dtype == torch.bfloat16:  # numpy has no bfloat16: compare the same bytes
        rows_t = rows_t.view(torch.int16)
    rows = rows_t.numpy()
    owner = np.arange(n, dtype=np.int64)  # owner[i]: the first sample equal to sample i
    seen: dict[tuple[int, bytes], int] = {}
    for j, i in enumerate(candidates.tolist()):
        owner[i] = seen.setdefault((int(f_inverse[i]), rows[j].tobytes()), i)
    first, inverse = np.unique(owner, return_inverse=True)
    if len(first) == n:
        return None
    return DistinctSamples(first.astype(np.int64), inverse.astype(np.int64).reshape(n))


def repeated_samples(x: Tensor, min_share: float = MIN_REPEAT_SHARE) -> DistinctSamples | None:
    """:func:`distinct_samples` when at least ``min_share`` of the samples are repeats, else None.

    What the dictionary build and the predictions use: they then run the kernel on
    ``take(x)`` (a copy of the distinct samples) and copy rows back with ``inverse``.
    """
    distinct = distinct_samples(x)
    if distinct is None or len(distinct.first) > (1.0 - min_share) * x.shape[1]:
        return None
    return distinct
