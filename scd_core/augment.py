"""Training-time augmentation of a batch: modality dropout.

A corpus can lack a modality (MELD has no behaviour description) while every training row has
it; MCDM masks a missing modality's node, but a model that never saw the pattern in training
meets it first at test time. Modality dropout (as in ModDrop, Neverova et al., TPAMI 2016)
masks whole modalities of training rows at random, through the same masks.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
    rescued = torch.nn.functional.one_hot(scores.argmax(dim=1), mask.shape[1]).bool() & emptied[:, None]
    return kept | rescued
