"""Mixed-corpus batches: every batch draws from every training corpus.

An epoch is one pass over the union of the training corpora: ceil(N / B) batches, each
with a fixed number of rows per corpus (proportional to corpus size by default, at least
one). A corpus whose share runs out before the epoch ends is reshuffled and reused (the
small ones, e.g. BAH). All indices for an epoch are made at once on the training device.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor


def rows_per_corpus(sizes: Sequence[int], batch_size: int, weights: Sequence[float] | None = None) -> list[int]:
    """Split ``batch_size`` over corpora by largest remainder, at least one row each.

    >>> rows_per_corpus([16327, 6000, 616], 32)
    [23, 8, 1]
    """
    if batch_size < len(sizes):
        raise ValueError(f"batch size {batch_size} cannot hold one row of each of {len(sizes)} corpora")
    w = torch.tensor(weights if weights is not None else sizes, dtype=torch.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"corpus weights must be >= 0 with a positive sum, got {w.tolist()}")
    raw = batch_size * w / w.sum()
    counts = raw.floor().long().clamp_min(1)
    remainder = raw - counts  # negative where the minimum of one row already rounded up
    while counts.sum() < batch_size:
        i = int(torch.argmax(remainder))
        counts[i] += 1
        remainder[i] = -1
    while counts.sum() > batch_size:  # the minimum of one row overshot: take from the largest
        counts[int(torch.argmax(counts))] -= 1
    return counts.tolist()


def epoch_batches(
    corpus_index: Tensor,
    batch_size: int,
    generator: torch.Generator,
    weights: Mapping[int, float] | None = None,
) -> Tensor:
    """Row indices for one epoch, shape [num_batches, batch_size].

    Args:
        corpus_index: int64 [N], which corpus each training row belongs to (0..K-1).
        generator: CPU generator; seeding it per epoch makes epochs reproducible on resume.
        weights: optional sampling proportion per corpus index.
    """
    num_corpora = int(corpus_index.max()) + 1
    members = [torch.nonzero(corpus_index == k).squeeze(1) for k in range(num_corpora)]
    sizes = [len(m) for m in members]
    if min(sizes) == 0:
        raise ValueError(f"every training corpus needs rows; sizes {sizes}")
    counts = rows_per_corpus(sizes, batch_size, None if weights is None else [weights[k] for k in range(num_corpora)])
    num_batches = math.ceil(len(corpus_index) / batch_size)
    columns = []
    for rows, count in zip(members, counts):
        needed = num_batches * count
        perms = [torch.randperm(len(rows), generator=generator) for _ in range(math.ceil(needed / len(rows)))]
        order = torch.cat(perms)[:needed].to(rows.device)
        columns.append(rows[order].view(num_batches, count))
    return torch.cat(columns, dim=1)
