"""Supervised and pseudo-label losses of the semi-supervised protocol (paper section 2.4).

Model outputs (``scd_core.model``): ``emo`` and ``ah`` are logits [B, C]; ``pt`` is a score
in [0, 1] per trait [B, 5] (Eq. 13). Every loss is a mean over the rows (or, for PT
pseudo-labels, the trait entries) it is computed on; a component with no row in the batch
is absent from the returned dict, never a zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

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


@dataclass(frozen=True)
class PseudoLabelStats:
    """How many candidates (rows, or trait entries for PT) passed the confidence threshold."""

    accepted: int
    candidates: int

    @property
    def rate(self) -> float:
        return self.accepted / self.candidates if self.candidates else float("nan")


def pseudo_label_losses(
    outputs: Mapping[str, Tensor],
    label_mask: Mapping[str, Tensor],
    thresholds: Mapping[str, float],
    tasks: Sequence[str] | None = None,
) -> tuple[dict[str, Tensor], dict[str, PseudoLabelStats]]:
    """Pseudo-label losses from the same forward pass, on rows without the task's label.

    Targets are detached predictions:
      * EMO, AH: argmax of softmax where max softmax > tau; CE on the logits.
      * PT: p binarised at 0.5, kept per trait where p > tau_pt or p < 1 - tau_pt;
        BCE between p and the binary target over the kept entries.
    ``tasks`` limits which tasks get pseudo-labels (default: every task in ``outputs``).
    """
    losses, stats = {}, {}
    for task in tasks if tasks is not None else outputs:
        out = outputs[task]
        rows = ~label_mask[task]
        pred = out[rows]
        tau = thresholds[task]
        if task == "pt":
            p = pred.detach()
            keep = (p > tau) | (p < 1 - tau)
            stats[task] = PseudoLabelStats(int(keep.sum()), keep.numel())
            if bool(keep.any()):
                target = (p > 0.5).to(pred.dtype)
                losses[task] = F.binary_cross_entropy(pred[keep].clamp(_EPS, 1 - _EPS), target[keep])
        else:
            confidence, target = F.softmax(pred.detach(), dim=1).max(dim=1)
            keep = confidence > tau
            stats[task] = PseudoLabelStats(int(keep.sum()), int(rows.sum()))
            if bool(keep.any()):
                losses[task] = F.cross_entropy(pred[keep], target[keep])
    return losses, stats
