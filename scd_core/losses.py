"""Supervised losses of the semi-supervised protocol (paper section 2.4); the pseudo-label
losses are in ``scd_core.pseudo_labels``.

Model outputs (``scd_core.model``): ``emo`` and ``ah`` are logits [B, C]; ``pt`` is a score
in [0, 1] per trait [B, 5] (Eq. 13). Every loss is a mean over the rows it is computed on; a
task with no labelled row in the batch is absent, never a zero.

The training step uses the fixed-shape form (:func:`masked_supervised_losses`): every task's
loss is computed over the whole batch with its rows selected by a mask, and returned with a
``present`` flag on the device, so that no shape depends on the data and nothing is read back
to the host (a CUDA graph can capture it). :func:`supervised_losses` is the same on the host:
only the present tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

EmoTarget = Literal["distribution", "argmax"]
_EPS = 1e-6


class Component(NamedTuple):
    """One loss component on the device: ``loss`` 0-d (0 when absent), ``present`` 0-d bool."""

    loss: Tensor
    present: Tensor


def soft_cross_entropy(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """CE with a soft target: -sum_c q_bc log softmax(z_b)_c, q = target / sum(target);
    its mean over the rows, or per row [B] with ``reduction="none"``."""
    q = target / target.sum(dim=1, keepdim=True).clamp_min(_EPS)
    per_row = -(q * F.log_softmax(logits, dim=1)).sum(dim=1)
    return per_row if reduction == "none" else per_row.mean()


def masked_mean(values: Tensor, mask: Tensor) -> Component:
    """Mean of ``values`` where ``mask`` (same shape, bool) holds, with fixed shapes.

    Values outside the mask never reach the mean (``where``, not a product, so a non-finite
    value there cannot either); no selected entry gives loss 0 and ``present`` False.
    """
    count = mask.sum()
    total = torch.where(mask, values, 0.0).sum()
    return Component(total / count.clamp_min(1), count > 0)


def logit_offsets(priors: Mapping[str, Tensor], tau: float) -> dict[str, Tensor]:
    """``{task: tau * log(prior)}`` [C] per classified task, the prior floored at 1e-6 (a class
    absent from training gets a large finite offset, not -inf)."""
    return {task: tau * torch.log(prior.clamp_min(_EPS)) for task, prior in priors.items()}


def masked_supervised_losses(
    outputs: Mapping[str, Tensor],
    labels: Mapping[str, Tensor],
    label_mask: Mapping[str, Tensor],
    emo_target: EmoTarget = "distribution",
    valid: Tensor | None = None,
    logit_offsets: Mapping[str, Tensor] | None = None,
) -> dict[str, Component]:
    """Per task, on its labelled rows: EMO CE (soft target), PT MAE, AH CE; every task present
    in the dict, its ``present`` flag on the device.

    ``valid`` [B] bool: False marks padding rows (a static-size batch), which count nowhere.
    ``emo_target="distribution"`` follows the paper/DESIGN.md (CE against the normalised
    label distribution); ``"argmax"`` follows the authors' public code (CE on the argmax
    of the 7-class distribution).
    ``logit_offsets`` {task: [C]}: the logit-adjusted loss of Menon et al. (ICLR 2021), the
    CE of ``softmax(z + o)`` with ``o = tau * log(prior)`` (:func:`logit_offsets`). Training
    ``z + o`` to fit the labels leaves ``z`` fitting them with the class prior divided out, so
    the model's own logits (all that inference and pseudo-labels see) favour no class for being
    frequent in training.
    """
    losses = {}
    for task, out in outputs.items():
        rows = label_mask[task] if valid is None else label_mask[task] & valid
        target = labels[task]  # zeros on unlabelled rows (CorpusTensors): finite everywhere
        if logit_offsets is not None and task in logit_offsets:
            out = out + logit_offsets[task]
        if task == "emo":
            per_row = (soft_cross_entropy(out, target, reduction="none") if emo_target == "distribution"
                       else F.cross_entropy(out, target.argmax(dim=1), reduction="none"))
            losses[task] = masked_mean(per_row, rows)
        elif task == "pt":
            losses[task] = masked_mean((out - target).abs(), rows[:, None].expand_as(out))
        else:
            losses[task] = masked_mean(F.cross_entropy(out, target, reduction="none"), rows)
    return losses


def supervised_losses(
    outputs: Mapping[str, Tensor],
    labels: Mapping[str, Tensor],
    label_mask: Mapping[str, Tensor],
    emo_target: EmoTarget = "distribution",
    logit_offsets: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """:func:`masked_supervised_losses` of the present tasks only (reads the flags on the host)."""
    masked = masked_supervised_losses(outputs, labels, label_mask, emo_target, logit_offsets=logit_offsets)
    return {t: c.loss for t, c in masked.items() if bool(c.present)}


__all__ = ["Component", "EmoTarget", "logit_offsets", "masked_mean", "masked_supervised_losses", "soft_cross_entropy",
           "supervised_losses"]
