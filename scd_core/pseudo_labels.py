"""Pseudo-labels of the semi-supervised branch (paper section 2.4), with options beyond the paper.

The paper, and every default here: a task's pseudo-labels on the rows that lack its label are
the model's own detached predictions from the same forward pass. EMO and AH take the argmax
where the maximum softmax exceeds tau; PT takes ``p > 0.5`` per trait where ``p > tau_pt`` or
``p < 1 - tau_pt``. Trained on its own argmax, a model minimises its entropy and confirms its
bias: on the real corpora the majority class took nearly every pseudo-label. The options
(``SSLConfig``), each a switch:

* ``teacher="ema"``: the targets come from an exponential moving average of the weights
  (:class:`EMATeacher`; Mean Teacher, Tarvainen & Valpola, NeurIPS 2017), run in eval mode on
  the full row (no modality dropout), not from the model being trained.
* ``pseudo_labels="soft"``: the target is the prediction sharpened with temperature T,
  ``q^(1/T) / sum_c q_c^(1/T)`` (MixMatch, Berthelot et al., NeurIPS 2019; for a PT trait the
  same over its two sides), still only where the confidence passes the threshold.
* ``class_balance="flexmatch"`` (EMO, AH): per-class thresholds ``tau_c = tau * M(beta_c)``,
  ``M(x) = x / (2 - x)``, ``beta_c = sigma_c / max(max_k sigma_k, n_unused)``, where sigma_c
  counts the unlabelled training rows whose latest prediction above tau was c and n_unused those
  with none yet (FlexMatch, Zhang et al., NeurIPS 2021: curriculum pseudo-labelling with its
  threshold warm-up and convex mapping). A class that already holds many pseudo-labels needs
  more confidence than a rare one.
* ``class_balance="align"`` (EMO, AH): distribution alignment (ReMixMatch, Berthelot et al.,
  ICLR 2020): ``q <- normalise(q * prior / running mean of q)`` before the threshold, where the
  prior is the labelled rows' class distribution and the running mean is over the unlabelled
  rows' predictions. A class the model over-predicts is scaled down until the pseudo-labels
  follow the labelled marginal.

Every loss is a mean over the rows (PT: trait entries) that passed; a task with none in the
batch has no loss (absent, never a zero). The diagnostics (acceptance, the class histogram of
the accepted pseudo-labels, for PT the share pushed to each side) accumulate on the device and
are read once per epoch (:meth:`PseudoLabeler.epoch_stats`).
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scd_core.config import SSLConfig
from scd_core.features import CorpusTensors
from scd_core.losses import soft_cross_entropy
from scd_core.tasks import AH_CLASSES, EMO_CLASSES, PT_TRAITS

CLASSES = {"emo": EMO_CLASSES, "ah": AH_CLASSES}
# Distribution alignment's running mean: about the last 100 batches (ReMixMatch keeps 128).
ALIGN_MOMENTUM = 0.99
_EPS = 1e-6


def sharpen(q: Tensor, temperature: float) -> Tensor:
    """``q^(1/T) / sum_c q_c^(1/T)`` over the last dimension (MixMatch's sharpening), in log space."""
    return F.softmax(torch.log(q.clamp_min(_EPS)) / temperature, dim=-1)


def label_prior(train: CorpusTensors, task: str) -> Tensor:
    """The class distribution of ``task``'s labelled training rows (EMO: mean label distribution)."""
    rows = train.label_mask[task]
    labels = train.labels[task][rows]
    if task == "emo":
        probs = labels / labels.sum(dim=1, keepdim=True).clamp_min(_EPS)
    else:
        probs = F.one_hot(labels, len(CLASSES[task])).to(torch.float32)
    prior = probs.mean(dim=0) if len(probs) else torch.full((len(CLASSES[task]),), 1.0 / len(CLASSES[task]))
    return prior.to(train.device)


class EMATeacher(nn.Module):
    """Mean Teacher: ``theta' <- d * theta' + (1 - d) * theta`` after every optimiser step.

    Holds a frozen copy of the student, always in eval mode (no dropout); buffers are copied.
    """

    def __init__(self, student: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.model = copy.deepcopy(student).eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "EMATeacher":  # the teacher never leaves eval mode
        return self

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        for teacher, param in zip(self.model.parameters(), student.parameters()):
            teacher.lerp_(param, 1.0 - self.decay)
        for teacher, buffer in zip(self.model.buffers(), student.buffers()):
            teacher.copy_(buffer)

    @torch.no_grad()
    def forward(self, features: Mapping[str, Tensor], modality_mask: Tensor) -> dict[str, Tensor]:
        return self.model(features, modality_mask)


class PseudoLabeler:
    """Pseudo-label losses of one training run, with the state its options keep on the device.

    ``train`` is the run's whole training set: FlexMatch remembers a class per row (indexed by
    the batch's row indices) and distribution alignment starts from the labelled prior.
    """

    def __init__(self, cfg: SSLConfig, tasks: Sequence[str], train: CorpusTensors) -> None:
        self.cfg = cfg
        self.tasks = list(tasks)
        self.thresholds = {"emo": cfg.tau_emo, "pt": cfg.tau_pt, "ah": cfg.tau_ah}
        classified = [t for t in self.tasks if t in CLASSES]
        device = train.device
        self.unlabelled = {t: int((~train.label_mask[t]).sum()) for t in classified}
        self.memory = ({t: torch.full((len(train),), -1, dtype=torch.long, device=device) for t in classified}
                       if cfg.class_balance == "flexmatch" else {})
        self.prior = {t: label_prior(train, t) for t in classified} if cfg.class_balance == "align" else {}
        self.running = {t: p.clone() for t, p in self.prior.items()}
        self._device = device
        self._reset_stats()

    # ------------------------------------------------------------------ losses

    def losses(self, outputs: Mapping[str, Tensor], targets_from: Mapping[str, Tensor],
               label_mask: Mapping[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
        """Per task, the pseudo-label loss of ``outputs`` (the student's, with gradients) on the
        rows without that task's label, with targets from ``targets_from`` (detached here).

        ``rows`` [B] are the batch's indices into the training set (FlexMatch's memory).
        """
        losses = {}
        for task in self.tasks:
            unlabelled = ~label_mask[task]
            student, source = outputs[task][unlabelled], targets_from[task].detach()[unlabelled]
            if task == "pt":
                loss = self._traits(student, source)
            else:
                loss = self._classes(task, student, source, rows[unlabelled])
            if loss is not None:
                losses[task] = loss
        return losses

    def _classes(self, task: str, logits: Tensor, source: Tensor, rows: Tensor) -> Tensor | None:
        q = F.softmax(source, dim=1)
        if task in self.prior:
            q = self._align(task, q)
        confidence, label = q.max(dim=1)
        keep = confidence > self._class_thresholds(task)[label]
        if task in self.memory:  # after the thresholds: this batch counts from the next step on
            confident = confidence > self.thresholds[task]
            self.memory[task][rows[confident]] = label[confident]
        stats = self._stats[task]
        stats["accepted"] += keep.sum()
        stats["candidates"] += len(keep)
        stats["classes"] += torch.bincount(label[keep], minlength=len(CLASSES[task]))
        if not bool(keep.any()):
            return None
        if self.cfg.pseudo_labels == "soft":
            return soft_cross_entropy(logits[keep], sharpen(q[keep], self.cfg.temperature))
        return F.cross_entropy(logits[keep], label[keep])

    def _traits(self, p: Tensor, source: Tensor) -> Tensor | None:
        tau = self.thresholds["pt"]
        keep = (source > tau) | (source < 1 - tau)
        high = source > 0.5
        stats = self._stats["pt"]
        stats["accepted"] += keep.sum()
        stats["candidates"] += keep.numel()
        stats["kept"] += keep.sum(dim=0)
        stats["high"] += (keep & high).sum(dim=0)
        if not bool(keep.any()):
            return None
        if self.cfg.pseudo_labels == "soft":
            target = sharpen(torch.stack([1 - source, source], dim=-1), self.cfg.temperature)[..., 1]
        else:
            target = high.to(p.dtype)
        return F.binary_cross_entropy(p[keep].clamp(_EPS, 1 - _EPS), target[keep])

    def _class_thresholds(self, task: str) -> Tensor:
        """[C] thresholds: tau for every class, or FlexMatch's tau * M(beta_c)."""
        tau = self.thresholds[task]
        classes = len(CLASSES[task])
        if task not in self.memory:
            return torch.full((classes,), tau, device=self._device)
        memory = self.memory[task]
        assigned = memory >= 0
        sigma = torch.bincount(memory[assigned], minlength=classes).to(torch.float32)
        unused = float(self.unlabelled[task]) - assigned.sum()  # unlabelled rows with no confident class yet
        beta = sigma / torch.maximum(sigma.max(), unused).clamp_min(1.0)
        return tau * beta / (2.0 - beta)

    @torch.no_grad()
    def _align(self, task: str, q: Tensor) -> Tensor:
        self.running[task].mul_(ALIGN_MOMENTUM).add_(q.mean(dim=0), alpha=1.0 - ALIGN_MOMENTUM)
        aligned = q * (self.prior[task] / self.running[task].clamp_min(_EPS))
        return aligned / aligned.sum(dim=1, keepdim=True)

    # ------------------------------------------------------------------ diagnostics

    def _reset_stats(self) -> None:
        def zeros(*shape: int) -> Tensor:
            return torch.zeros(shape, dtype=torch.long, device=self._device)

        self._stats: dict[str, dict[str, Tensor]] = {}
        for task in self.tasks:
            self._stats[task] = {"accepted": zeros(), "candidates": zeros()}
            if task == "pt":
                self._stats[task].update(kept=zeros(len(PT_TRAITS)), high=zeros(len(PT_TRAITS)))
            else:
                self._stats[task]["classes"] = zeros(len(CLASSES[task]))

    def epoch_stats(self) -> tuple[dict[str, float], dict[str, float]]:
        """(acceptance per task, pseudo-label shares) since the last call; resets the counters.

        Shares: ``<task>_<class>`` = share of the accepted EMO/AH pseudo-labels per class;
        ``pt_<trait>_high`` = share of the accepted entries of a trait pushed to 1. NaN where
        nothing was accepted.
        """
        host = {t: {k: v.cpu() for k, v in s.items()} for t, s in self._stats.items()}  # once per epoch
        self._reset_stats()
        nan = float("nan")
        acceptance, shares = {}, {}
        for task, s in host.items():
            accepted, candidates = int(s["accepted"]), int(s["candidates"])
            acceptance[task] = accepted / candidates if candidates else nan
            if task == "pt":
                for trait, kept, high in zip(PT_TRAITS, s["kept"].tolist(), s["high"].tolist()):
                    shares[f"pt_{trait}_high"] = high / kept if kept else nan
            else:
                for name, count in zip(CLASSES[task], s["classes"].tolist()):
                    shares[f"{task}_{name}"] = count / accepted if accepted else nan
        return acceptance, shares

    # ------------------------------------------------------------------ checkpoints

    def state_tensors(self) -> dict[str, Tensor]:
        """What a resumed run needs (FlexMatch memory, alignment running means), as named tensors."""
        return {**{f"memory.{t}": m for t, m in self.memory.items()},
                **{f"running.{t}": r for t, r in self.running.items()}}

    def load_state_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        for task in self.memory:
            self.memory[task].copy_(tensors[f"memory.{task}"])
        for task in self.running:
            self.running[task].copy_(tensors[f"running.{task}"])
