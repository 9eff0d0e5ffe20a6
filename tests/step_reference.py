"""The training step as it was before the sync-free rewrite (commit 576d066), written plainly:
boolean indexing, one full backward pass per component for the GradNorm norms, GradNorm on
Python floats. The oracle of ``tests/test_step_equivalence.py``; never used by the library.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from scd_core.augment import drop_modalities
from scd_core.gradnorm import gradient_norms
from scd_core.losses import soft_cross_entropy
from scd_core.optim import build_optimizer
from scd_core.pseudo_labels import ALIGN_MOMENTUM, CLASSES, label_prior, sharpen
from scd_core.tasks import PT_TRAITS

_EPS = 1e-6


class FloatGradNorm:
    """GradNorm's update of paper Eq. 16-19 on Python floats (the pre-rewrite ``GradNorm.update``)."""

    def __init__(self, names, alpha, lr, budget, w_floor):
        self.names, self.alpha, self.lr, self.budget, self.w_floor = list(names), alpha, lr, budget, w_floor
        self.weights = {n: budget / len(names) for n in names}
        self.initial = {n: None for n in names}

    def update(self, losses: dict[str, float], norms: dict[str, float]) -> None:
        present = []
        for n in self.names:
            if n not in losses:
                continue
            loss, norm = losses[n], norms[n]
            if not (math.isfinite(loss) and math.isfinite(norm) and loss >= 0):
                continue
            if self.initial[n] is None and loss > 0:
                self.initial[n] = loss
            if self.initial[n] is not None:
                present.append(n)
        if not present:
            return
        w = self.weights
        ratio = {t: losses[t] / self.initial[t] for t in present}
        mean_ratio = sum(ratio.values()) / len(present)
        g = {t: w[t] * norms[t] for t in present}
        g_bar = sum(g.values()) / len(present)
        stepped = {}
        for t in present:
            r = ratio[t] / mean_ratio if mean_ratio > 0 else 1.0
            diff = g[t] - g_bar * r ** self.alpha
            stepped[t] = max(self.w_floor, w[t] - self.lr * float((diff > 0) - (diff < 0)) * norms[t])
        mass = self.budget - sum(w[n] for n in self.names if n not in stepped)
        total = sum(stepped.values())
        for t in present:
            w[t] = mass * stepped[t] / total


class ReferenceStep:
    """A copy of ``trainer``'s model, optimiser and semi-supervised state, stepped the old way."""

    def __init__(self, trainer):
        cfg = trainer.cfg
        self.cfg, self.tasks = cfg, list(trainer.tasks)
        self.model = copy.deepcopy(trainer.model)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        ssl = cfg.ssl
        self.gradnorm = {"sup": FloatGradNorm(self.tasks, ssl.alpha_s, ssl.eta_s, float(len(self.tasks)), ssl.w_floor),
                         "ssl": FloatGradNorm(self.tasks, ssl.alpha_ss, ssl.eta_ss, len(self.tasks) * ssl.lambda_,
                                              ssl.w_floor) if ssl.lambda_ > 0 else None}
        self.pseudo = ssl.enabled and ssl.lambda_ > 0
        self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False) if self.pseudo and ssl.teacher == "ema" else None
        train = trainer.data.train
        classified = [t for t in self.tasks if t in CLASSES]
        self.unlabelled = {t: int((~train.label_mask[t]).sum()) for t in classified}
        self.memory = ({t: torch.full((len(train),), -1, dtype=torch.long) for t in classified}
                       if ssl.class_balance == "flexmatch" else {})
        self.prior = {t: label_prior(train, t) for t in classified} if ssl.class_balance == "align" else {}
        self.running = {t: p.clone() for t, p in self.prior.items()}
        tau = ssl.logit_adjustment
        self.offsets = {t: tau * torch.log(label_prior(train, t).clamp_min(_EPS)) for t in classified} if tau else {}
        self.counts = {t: {"accepted": 0, "candidates": 0} for t in self.tasks}

    def weights(self, branch):
        gn = self.gradnorm[branch]
        if gn is None:
            return {t: 0.0 for t in self.tasks}
        return dict(gn.weights) if self.cfg.ssl.gradnorm else {t: 1.0 for t in self.tasks}

    def _supervised(self, out, batch):
        losses = {}
        for t in self.tasks:
            rows = batch.label_mask[t]
            if not rows.any():
                continue
            pred, target = out[t][rows], batch.labels[t][rows]
            if t in self.offsets:
                pred = pred + self.offsets[t]
            if t == "emo":
                losses[t] = (soft_cross_entropy(pred, target) if self.cfg.ssl.emo_target == "distribution"
                             else F.cross_entropy(pred, target.argmax(dim=1)))
            elif t == "pt":
                losses[t] = (pred - target).abs().mean()
            else:
                losses[t] = F.cross_entropy(pred, target)
        return losses

    def _thresholds(self, t):
        tau = getattr(self.cfg.ssl, f"tau_{t}")
        classes = len(CLASSES[t])
        if t not in self.memory:
            return torch.full((classes,), tau)
        memory = self.memory[t]
        sigma = torch.bincount(memory[memory >= 0], minlength=classes).float()
        unused = float(self.unlabelled[t]) - (memory >= 0).sum()
        beta = sigma / torch.maximum(sigma.max(), unused).clamp_min(1.0)
        return tau * beta / (2.0 - beta)

    def _pseudo(self, out, source, batch, rows):
        ssl, losses = self.cfg.ssl, {}
        for t in self.tasks:
            u = ~batch.label_mask[t]
            student, src = out[t][u], source[t].detach()[u]
            counts = self.counts[t]
            if t == "pt":
                keep = (src > ssl.tau_pt) | (src < 1 - ssl.tau_pt)
                counts["accepted"] += int(keep.sum())
                counts["candidates"] += keep.numel()
                counts["kept"] = counts.get("kept", 0) + keep.sum(dim=0)
                counts["high"] = counts.get("high", 0) + (keep & (src > 0.5)).sum(dim=0)
                if not keep.any():
                    continue
                target = (sharpen(torch.stack([1 - src, src], -1), ssl.temperature)[..., 1] if ssl.pseudo_labels == "soft"
                          else (src > 0.5).float())
                losses[t] = F.binary_cross_entropy(student[keep].clamp(_EPS, 1 - _EPS), target[keep])
                continue
            q = F.softmax(src, dim=1)
            if t in self.prior:
                self.running[t].mul_(ALIGN_MOMENTUM).add_(q.mean(dim=0), alpha=1 - ALIGN_MOMENTUM)
                q = q * (self.prior[t] / self.running[t].clamp_min(_EPS))
                q = q / q.sum(dim=1, keepdim=True)
            confidence, label = q.max(dim=1)
            keep = confidence > self._thresholds(t)[label]
            if t in self.memory:
                confident = confidence > getattr(ssl, f"tau_{t}")
                self.memory[t][rows[u][confident]] = label[confident]
            counts["accepted"] += int(keep.sum())
            counts["candidates"] += len(keep)
            counts["classes"] = counts.get("classes", 0) + torch.bincount(label[keep], minlength=len(CLASSES[t]))
            if not keep.any():
                continue
            losses[t] = (soft_cross_entropy(student[keep], sharpen(q[keep], ssl.temperature))
                         if ssl.pseudo_labels == "soft" else F.cross_entropy(student[keep], label[keep]))
        return losses

    def step(self, batch, rows, epoch=0) -> dict[str, float]:
        """One optimisation step; returns the present components' losses and ``total``."""
        cfg, model = self.cfg, self.model
        model.train()
        mask = batch.modality_mask
        if cfg.data.modality_dropout > 0:
            mask = drop_modalities(mask, cfg.data.modality_dropout)
        out = model(batch.features, mask)
        components = {"sup": self._supervised(out, batch)}
        if self.pseudo and epoch >= cfg.ssl.warmup_epochs:
            source = out if self.teacher is None else self.teacher(batch.features, batch.modality_mask)
            components["ssl"] = self._pseudo(out, source, batch, rows)
        flat = {f"{b}_{t}": v for b, losses in components.items() for t, v in losses.items()}
        weights = {b: self.weights(b) for b in components}
        total = sum(weights[b][t] * v for b, losses in components.items() for t, v in losses.items())
        norms = gradient_norms(flat, model.shared_parameters()) if cfg.ssl.gradnorm else None
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        values = {n: v.item() for n, v in flat.items()}
        if norms is not None:
            for b, gn in self.gradnorm.items():
                present = {t: values[f"{b}_{t}"] for t in self.tasks if f"{b}_{t}" in values}
                if gn is not None and present:
                    gn.update(present, {t: norms[f"{b}_{t}"] for t in present})
        self.optimizer.step()
        if self.teacher is not None:
            with torch.no_grad():
                for p_t, p in zip(self.teacher.parameters(), model.parameters()):
                    p_t.lerp_(p, 1 - cfg.ssl.ema_decay)
        return {**values, "total": total.item()}

    def acceptance(self) -> dict[str, float]:
        return {t: c["accepted"] / c["candidates"] if c["candidates"] else math.nan for t, c in self.counts.items()}

    def shares(self) -> dict[str, float]:
        shares = {}
        for t, c in self.counts.items():
            if t == "pt":
                for trait, kept, high in zip(PT_TRAITS, c["kept"].tolist(), c["high"].tolist()):
                    shares[f"pt_{trait}_high"] = high / kept if kept else math.nan
            else:
                for name, n in zip(CLASSES[t], c["classes"].tolist()):
                    shares[f"{t}_{name}"] = n / c["accepted"] if c["accepted"] else math.nan
        return shares
