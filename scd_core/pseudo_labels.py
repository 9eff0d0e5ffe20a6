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
from scd_core.losses import Component, masked_mean, soft_cross_entropy
from scd_core.tasks import AH_CLASSES, EMO_CLASSES, PT_TRAITS

CLASSES = {"emo": EMO_CLASSES, "ah": AH_CLASSES}
# Distribution alignment's running mean: about the last 100 batches (ReMixMatch keeps 128).
ALIGN_MOMENTUM = 0.99
_EPS = 1e-6


def sharpen(q: Tensor, temperature: float | Tensor) -> Tensor:
    """``q^(1/T) / sum_c q_c^(1/T)`` over the last dimension (MixMatch's sharpening), in log space."""
    return F.softmax(torch.log(q.clamp_min(_EPS)) / temperature, dim=-1)


def _one_hot(label: Tensor, classes: int) -> Tensor:
    """[B] -> [B, C] bool; a comparison, since ``F.one_hot`` checks its input on the host."""
    return label[:, None] == torch.arange(classes, device=label.device)


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
        # One multi-tensor kernel instead of one per parameter (kernel launches bound a GPU step).
        torch._foreach_lerp_(list(self.model.parameters()), list(student.parameters()), 1.0 - self.decay)
        for teacher, buffer in zip(self.model.buffers(), student.buffers()):
            teacher.copy_(buffer)

    @torch.no_grad()
    def forward(self, features: Mapping[str, Tensor], modality_mask: Tensor) -> dict[str, Tensor]:
        # Training rows only, checked when loaded: no host-side check inside a training step.
        return self.model(features, modality_mask, validate=False)


class PseudoLabeler:
    """Pseudo-label losses of one training run, with the state its options keep on the device.

    ``train`` is the run's whole training set: FlexMatch remembers a class per row (indexed by
    the batch's row indices) and distribution alignment starts from the labelled prior.
    Every step runs with fixed shapes and without reading anything back to the host
    (:meth:`masked_losses`); the state and the diagnostics are updated in place, so a
    captured CUDA graph keeps writing to the same tensors.
    """

    def __init__(self, cfg: SSLConfig, tasks: Sequence[str], train: CorpusTensors) -> None:
        self.cfg = cfg
        self.tasks = list(tasks)
        classified = [t for t in self.tasks if t in CLASSES]
        device = train.device
        # Tensors, not floats: compiled losses (the trainer's ``fuse_elementwise``) are then one
        # graph whatever a trial's values, not one per trial.
        self.thresholds = {t: torch.tensor(tau, device=device)
                           for t, tau in (("emo", cfg.tau_emo), ("pt", cfg.tau_pt), ("ah", cfg.tau_ah))}
        self.temperature = torch.tensor(cfg.temperature, device=device)
        self.unlabelled = {t: int((~train.label_mask[t]).sum()) for t in classified}
        # One slot past the rows: the rows that write nothing in a step write there (fixed shapes).
        self._memory = ({t: torch.full((len(train) + 1,), -1, dtype=torch.long, device=device) for t in classified}
                        if cfg.class_balance == "flexmatch" else {})
        self.memory = {t: m[:-1] for t, m in self._memory.items()}
        self.prior = {t: label_prior(train, t) for t in classified} if cfg.class_balance == "align" else {}
        self.running = {t: p.clone() for t, p in self.prior.items()}
        self._device = device
        self._stats = self._zero_stats()

    # ------------------------------------------------------------------ losses

    def losses(self, outputs: Mapping[str, Tensor], targets_from: Mapping[str, Tensor],
               label_mask: Mapping[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
        """:meth:`masked_losses` of the tasks that accepted a pseudo-label (reads the flags on the host)."""
        masked = self.masked_losses(outputs, targets_from, label_mask, rows)
        return {t: c.loss for t, c in masked.items() if bool(c.present)}

    def masked_losses(self, outputs: Mapping[str, Tensor], targets_from: Mapping[str, Tensor],
                      label_mask: Mapping[str, Tensor], rows: Tensor,
                      valid: Tensor | None = None) -> dict[str, Component]:
        """Per task, the pseudo-label loss of ``outputs`` (the student's, with gradients) on the
        rows without that task's label, with targets from ``targets_from`` (detached here);
        every task in the dict, with its ``present`` flag on the device.

        ``rows`` [B] are the batch's indices into the training set (FlexMatch's memory);
        ``valid`` [B] bool marks the real rows of a padded batch (None: all).
        """
        losses = {}
        for task in self.tasks:
            unlabelled = ~label_mask[task] if valid is None else ~label_mask[task] & valid
            source = targets_from[task].detach()
            if task == "pt":
                losses[task] = self._traits(outputs[task], source, unlabelled)
            else:
                losses[task] = self._classes(task, outputs[task], source, rows, unlabelled)
        return losses

    def _classes(self, task: str, logits: Tensor, source: Tensor, rows: Tensor, unlabelled: Tensor) -> Component:
        q = F.softmax(source, dim=1)
        if task in self.prior:
            q = self._align(task, q, unlabelled)
        confidence, label = q.max(dim=1)
        keep = unlabelled & (confidence > self._class_thresholds(task)[label])
        if task in self._memory:  # after the thresholds: this batch counts from the next step on
            memory = self._memory[task]
            confident = unlabelled & (confidence > self.thresholds[task])
            memory.scatter_(0, torch.where(confident, rows, len(memory) - 1), label)
        stats = self._stats[task]
        stats["accepted"] += keep.sum()
        stats["candidates"] += unlabelled.sum()
        stats["classes"] += (_one_hot(label, len(CLASSES[task])) & keep[:, None]).sum(dim=0)
        if self.cfg.pseudo_labels == "soft":
            return masked_mean(soft_cross_entropy(logits, sharpen(q, self.temperature), reduction="none"), keep)
        return masked_mean(F.cross_entropy(logits, label, reduction="none"), keep)

    def _traits(self, p: Tensor, source: Tensor, unlabelled: Tensor) -> Component:
        tau = self.thresholds["pt"]
        keep = ((source > tau) | (source < 1 - tau)) & unlabelled[:, None]  # [B, 5]
        high = source > 0.5
        stats = self._stats["pt"]
        stats["accepted"] += keep.sum()
        stats["candidates"] += unlabelled.sum() * source.size(1)
        stats["kept"] += keep.sum(dim=0)
        stats["high"] += (keep & high).sum(dim=0)
        if self.cfg.pseudo_labels == "soft":
            target = sharpen(torch.stack([1 - source, source], dim=-1), self.temperature)[..., 1]
        else:
            target = high.to(p.dtype)
        # F.binary_cross_entropy's formula without its range check, which a NaN row (a diverged
        # model, caught per epoch) fails: an error on the CPU, a device-side assert on CUDA.
        p = p.clamp(_EPS, 1 - _EPS)
        bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p))
        return masked_mean(bce, keep)

    def _class_thresholds(self, task: str) -> Tensor:
        """[C] thresholds: tau for every class, or FlexMatch's tau * M(beta_c)."""
        tau = self.thresholds[task]
        classes = len(CLASSES[task])
        if task not in self.memory:
            return tau.expand(classes)
        memory = self.memory[task]
        # Counts per class, with "no class yet" (-1) in an extra first bin: fixed shapes, no bincount.
        sigma = torch.zeros(classes + 1, device=self._device).scatter_add_(
            0, memory + 1, torch.ones(len(memory), device=self._device))[1:]
        unused = float(self.unlabelled[task]) - (memory >= 0).sum()  # unlabelled rows with no confident class yet
        beta = sigma / torch.maximum(sigma.max(), unused).clamp_min(1.0)
        return tau * beta / (2.0 - beta)

    @torch.no_grad()
    def _align(self, task: str, q: Tensor, unlabelled: Tensor) -> Tensor:
        weight = unlabelled.to(q.dtype)[:, None]
        count = weight.sum()
        mean = (q * weight).sum(dim=0) / count.clamp_min(1.0)  # over the unlabelled rows
        running = self.running[task]
        running.copy_(torch.where(count > 0, running * ALIGN_MOMENTUM + (1.0 - ALIGN_MOMENTUM) * mean, running))
        aligned = q * (self.prior[task] / running.clamp_min(_EPS))
        return aligned / aligned.sum(dim=1, keepdim=True)

    # ------------------------------------------------------------------ diagnostics

    def _zero_stats(self) -> dict[str, dict[str, Tensor]]:
        def zeros(*shape: int) -> Tensor:
            return torch.zeros(shape, dtype=torch.long, device=self._device)

        stats: dict[str, dict[str, Tensor]] = {}
        for task in self.tasks:
            stats[task] = {"accepted": zeros(), "candidates": zeros()}
            if task == "pt":
                stats[task].update(kept=zeros(len(PT_TRAITS)), high=zeros(len(PT_TRAITS)))
            else:
                stats[task]["classes"] = zeros(len(CLASSES[task]))
        return stats

    def epoch_stats(self) -> tuple[dict[str, float], dict[str, float]]:
        """(acceptance per task, pseudo-label shares) since the last call; resets the counters.

        Shares: ``<task>_<class>`` = share of the accepted EMO/AH pseudo-labels per class;
        ``pt_<trait>_high`` = share of the accepted entries of a trait pushed to 1. NaN where
        nothing was accepted.
        """
        host = {t: {k: v.tolist() for k, v in s.items()} for t, s in self._stats.items()}  # once per epoch
        for counters in self._stats.values():
            for counter in counters.values():
                counter.zero_()  # in place: a captured step keeps adding to these tensors
        nan = float("nan")
        acceptance, shares = {}, {}
        for task, s in host.items():
            accepted, candidates = s["accepted"], s["candidates"]
            acceptance[task] = accepted / candidates if candidates else nan
            if task == "pt":
                for trait, kept, high in zip(PT_TRAITS, s["kept"], s["high"]):
                    shares[f"pt_{trait}_high"] = high / kept if kept else nan
            else:
                for name, count in zip(CLASSES[task], s["classes"]):
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
