"""Supervised losses of the semi-supervised protocol (paper section 2.4); the pseudo-label
losses are in ``scd_core.pseudo_labels``.

Model outputs (``scd_core.model``): ``emo`` and ``ah`` are logits [B, C]; ``pt`` is a score
in [0, 1] per trait [B, 5] (Eq. 13). Every loss is a mean over the rows it is computed on; a
task with no labelled row in the batch is absent from the returned dict, never a zero.
"""

from __future__ import annotations

from typing import Literal, Mapping

import torch.nn.functional as F
from torch import Tensor

EmoTarget = Literal["distribution", "argmax"]
_EPS = 1e-6


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """CE with a soft target: mean_b( -sum_c q_bc log softmax(z_b)_c ), q = target / sum(target)."""
    q = target / target.sum(dim=1, keepdim=True).clamp_min(_EPS)
    return -(q * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def supervised_losses(
    outputs: Mapping[str, Tensor],
    labels: Mapping[str, Tensor],
    label_mask: Mapping[str, Tensor],
    emo_target: EmoTarget = "distribution",
) -> dict[str, Tensor]:
    """Per task, on its labelled rows: EMO CE (soft target), PT MAE, AH CE.

    ``emo_target="distribution"`` follows the paper/DESIGN.md (CE against the normalised
    label distribution); ``"argmax"`` follows the authors' public code (CE on the argmax
    of the 7-class distribution).
    """
    losses = {}
    for task, out in outputs.items():
        rows = label_mask[task]
        if not bool(rows.any()):
            continue
        pred, target = out[rows], labels[task][rows]
        if task == "emo":
            losses[task] = (
                soft_cross_entropy(pred, target) if emo_target == "distribution"
                else F.cross_entropy(pred, target.argmax(dim=1))
            )
        elif task == "pt":
            losses[task] = (pred - target).abs().mean()
        else:
            losses[task] = F.cross_entropy(pred, target)
    return losses
