"""Modality masks beyond the data's own: training-time modality dropout, and a split seen
without some modalities (what model selection checks when a target corpus lacks them).

A corpus can lack a modality (MELD has no behaviour description) while every training row has
it; MCDM masks a missing modality's node, but a model that never saw the pattern in training
meets it first at test time. Modality dropout (as in ModDrop, Neverova et al., TPAMI 2016)
masks whole modalities of training rows at random, through the same masks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import Tensor

from scd_core.features import CorpusTensors


def drop_modalities(mask: Tensor, p: float) -> Tensor:
    """Mask each present modality of a row with probability ``p``, never all of a row's.

    Args:
        mask: ``[B, M]`` bool, True where the modality is present.
        p: drop probability per present modality, in [0, 1).
    Returns:
        ``[B, M]`` bool, a subset of ``mask`` with at least one modality per row that had one.
        Draws from torch's global generator (seeded per epoch by the trainer).
    """
    if p <= 0.0:
        return mask
    kept = mask & (torch.rand(mask.shape, device=mask.device) >= p)
    emptied = mask.any(dim=1) & ~kept.any(dim=1)
    # A row that lost every modality keeps one of its present ones, chosen uniformly.
    scores = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, -1.0)
    # A comparison, not F.one_hot, which checks its input on the host (a device synchronisation).
    chosen = scores.argmax(dim=1, keepdim=True) == torch.arange(mask.shape[1], device=mask.device)
    rescued = chosen & emptied[:, None]
    return kept | rescued


def without_modalities(data: CorpusTensors, modalities: Sequence[str]) -> CorpusTensors:
    """``data`` with ``modalities`` masked (and zeroed) on every row; rows left with none are dropped."""
    drop = torch.tensor([m in modalities for m in data.modalities], device=data.device)
    mask = data.modality_mask & ~drop
    features = {m: torch.zeros_like(f) if m in modalities else f for m, f in data.features.items()}
    masked = replace(data, modality_mask=mask, features=features)
    keep = mask.any(dim=1)
    return masked if bool(keep.all()) else masked.index(torch.nonzero(keep).squeeze(1))
