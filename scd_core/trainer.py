"""Semi-supervised cross-domain training of MCDM (paper section 2.4).

One step: a mixed-corpus batch (``scd_core.batching``) -> one forward pass -> supervised
losses on each task's labelled rows and pseudo-label losses on the other rows
(``scd_core.losses``) -> one backward pass of ``sum(w * L)`` with the weights detached,
whose per-task gradients at the shared trunk also give the six GradNorm norms
(``Trainer._trunk_backward``) -> the two ``GradNorm`` branches update -> optimiser step.

Model selection uses dev splits only (``scd_core.evaluation.dev_score``). Every epoch
ends with an ``EpochReport`` handed to ``on_epoch`` (the tuning job reports it to Ray Tune
and MLflow), a resumable ``last`` checkpoint and, when the dev score improved, ``best``.
Epoch ``e`` seeds its batch order and dropout from ``(seed, e)``, so a run resumed from
``last`` continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from scd_core.augment import drop_modalities
from scd_core.batching import epoch_batches
from scd_core.checkpoint import ModelSpec, build_model, load_training_state, load_training_tensors, save_checkpoint
from scd_core.config import ExperimentConfig
from scd_core.data import TrainingData
from scd_core.evaluation import METRICS, dev_score, evaluate
from scd_core.features import CorpusTensors
from scd_core.gradnorm import GradNorm
from scd_core.losses import supervised_losses
from scd_core.model import SharedState
from scd_core.optim import build_optimizer, build_scheduler, steps_per_batch
from scd_core.pseudo_labels import EMATeacher, PseudoLabeler

BRANCHES = ("sup", "ssl")


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; the message names the epoch, step and component."""


@dataclass
class EpochReport:
    """What one epoch produced; keys of ``losses``/``weights`` are ``<branch>_<task>``;
    ``pseudo_labels`` holds the shares of the accepted pseudo-labels
    (``PseudoLabeler.epoch_stats``)."""

    epoch: int
    metrics: dict[str, float]
    score: float
    losses: dict[str, float]
    weights: dict[str, float]
    acceptance: dict[str, float]
    lr: float
    seconds: float
    best: bool = False
    pseudo_labels: dict[str, float] = field(default_factory=dict)


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    history: list[EpochReport] = field(default_factory=list)
    stopped_early: bool = False


def _detached(state: SharedState) -> SharedState:
    """The trunk's output as fresh leaves: a branch's gradient stops there (see ``_trunk_backward``)."""
    return replace(state, z=state.z.detach().requires_grad_(), c_mods=state.c_mods.detach().requires_grad_())


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


class Trainer:
    """Trains one configuration; ``fit`` runs (or resumes) the epochs."""

    def __init__(self, cfg: ExperimentConfig, data: TrainingData, output_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        self.data = data
        self.device = data.train.device
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.tasks = list(cfg.data.tasks)
        self.spec = ModelSpec(cfg, data.modality_dims, self.tasks, data.store_modalities)
        torch.manual_seed(cfg.seed)
        self.model = build_model(self.spec).to(self.device)
        self.shared = self.model.shared_parameters()
        ssl = cfg.ssl
        self.gradnorm = {
            "sup": GradNorm(self.tasks, ssl.alpha_s, ssl.eta_s, budget=float(len(self.tasks)), w_floor=ssl.w_floor),
            "ssl": GradNorm(self.tasks, ssl.alpha_ss, ssl.eta_ss, budget=len(self.tasks) * ssl.lambda_,
                            w_floor=ssl.w_floor) if ssl.lambda_ > 0 else None,
        }
        uses_ssl = ssl.enabled and self.gradnorm["ssl"] is not None
        self.pseudo_labeler = PseudoLabeler(ssl, self.tasks, data.train) if uses_ssl else None
        self.teacher = EMATeacher(self.model, ssl.ema_decay) if uses_ssl and ssl.teacher == "ema" else None
        corpora = data.train.corpora
        weights = cfg.data.corpus_weights
        self.corpus_weights = None if weights is None else {i: weights.get(c, 0.0) for i, c in enumerate(corpora)}
        self.steps_per_epoch = math.ceil(len(data.train) / cfg.optim.batch_size)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.steps_per_epoch)
        self.history: list[EpochReport] = []
        self.best_score = -math.inf
        self.best_epoch = -1
        self.epochs_since_best = 0

    # --------------------------------------------------------------- one step

    def _weights(self, branch: str) -> dict[str, float]:
        gn = self.gradnorm[branch]
        if gn is None:
            return {t: 0.0 for t in self.tasks}
        # Without GradNorm the paper's baseline runs fix every coefficient at 1.0.
        return dict(gn.weights) if self.cfg.ssl.gradnorm else {t: 1.0 for t in self.tasks}

    def train_step(self, batch: CorpusTensors, rows: Tensor, epoch: int, step: int) -> dict[str, Tensor]:
        """One optimisation step on training rows ``rows``; returns the detached component losses.

        The total loss of a step uses the weights that the previous step's GradNorm update
        left (as in Chen et al. 2018, Algorithm 1); this step's norms update them after.
        """
        losses, norms = self.backward(batch, rows, epoch, step)
        if norms is not None:
            values = dict(zip(norms, torch.stack([losses[name] for name in norms]).tolist()))  # one sync
            for branch, gn in self.gradnorm.items():
                present = [t for t in self.tasks if f"{branch}_{t}" in norms]
                if gn is not None and present:
                    gn.update({t: values[f"{branch}_{t}"] for t in present}, {t: norms[f"{branch}_{t}"] for t in present})
        self.optimizer.step()
        if self.teacher is not None:
            self.teacher.update(self.model)
        if steps_per_batch(self.scheduler):
            self.scheduler.step()
        return losses

    def backward(self, batch: CorpusTensors, rows: Tensor, epoch: int = 0, step: int = 0):
        """Forward, losses and gradients of ``sum(w * L)`` in every parameter's ``.grad``.

        ``rows`` [B] are the batch's indices into the training set. In training mode the
        batch's modalities are dropped at ``data.modality_dropout`` first. Returns the
        detached losses (``<branch>_<task>`` and ``total``) and the unweighted gradient norms
        w.r.t. the shared parameters (None without GradNorm).
        """
        model, gradnorm, ssl = self.model, self.cfg.ssl.gradnorm, self.cfg.ssl
        modality_mask = batch.modality_mask
        if model.training:
            modality_mask = drop_modalities(modality_mask, self.cfg.data.modality_dropout)
        state = model.encode(batch.features, modality_mask)
        branch_inputs = {t: _detached(state) if gradnorm else state for t in self.tasks}
        outputs = {t: model.decode(branch_inputs[t], t) for t in self.tasks}
        components = {"sup": supervised_losses(outputs, batch.labels, batch.label_mask, ssl.emo_target)}
        if self.pseudo_labeler is not None and epoch >= ssl.warmup_epochs:
            # The teacher sees the whole row: its targets do not depend on the student's dropped modalities.
            targets = outputs if self.teacher is None else self.teacher(batch.features, batch.modality_mask)
            components["ssl"] = self.pseudo_labeler.losses(outputs, targets, batch.label_mask, rows)
        flat = {f"{b}_{t}": loss for b, losses in components.items() for t, loss in losses.items()}
        if not flat:
            raise RuntimeError(f"epoch {epoch} step {step}: the batch produced no loss at all")
        values = torch.stack([v.detach() for v in flat.values()])
        if not bool(torch.isfinite(values).all()):
            found = dict(zip(flat, values.tolist()))
            raise NonFiniteLossError(f"epoch {epoch} step {step}: non-finite loss in {found}")
        weights = {b: self._weights(b) for b in components}
        total = sum(weights[b][t] * loss for b, losses in components.items() for t, loss in losses.items())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()  # task branches only, when GradNorm cut them from the trunk
        norms = self._trunk_backward(state, branch_inputs, components, weights, batch.label_mask) if gradnorm else None
        return {**dict(zip(flat, values)), "total": total.detach()}, norms

    def _trunk_backward(self, state, branch_inputs, components, weights, label_mask) -> dict[str, float]:
        """Shared-parameter gradients of the total loss, and the six GradNorm norms, in six
        backward passes through the trunk alone.

        The naive way takes one backward pass through the whole model per component
        (six) plus one for the total: on the CPU that costs about 2x a plain step. Here each
        task branch read its own detached copy of the trunk's output (``z``, ``c_mods``), so
        the one backward pass of the total filled, per task t, the gradient
        ``w_sup_t dL_sup_t + w_ssl_t dL_ssl_t`` arriving at the trunk. Samples do not
        interact in MCDM (graph and attention run within a sample), so that gradient splits
        by rows: rows labelled for t carry only the supervised component, the other rows
        only the pseudo-label one. Dividing by the weight gives each component's own
        gradient at the trunk; one backward pass of it through the trunk gives
        dL_c/d theta_shared, its norm, and (weighted and summed) the total's gradient.
        """
        shared = self.shared
        total_grads: list[Tensor | None] = [None] * len(shared)
        norms = {}
        for branch, losses in components.items():
            for task in losses:
                rows = label_mask[task] if branch == "sup" else ~label_mask[task]
                scale = rows.to(state.z.dtype)[:, None, None] / weights[branch][task]
                leaf = branch_inputs[task]
                outputs, grad_outputs = [], []
                for tensor, arrived in ((state.z, leaf.z.grad), (state.c_mods, leaf.c_mods.grad)):
                    if arrived is not None:
                        outputs.append(tensor)
                        grad_outputs.append(arrived * scale)
                grads = torch.autograd.grad(outputs, shared, grad_outputs, retain_graph=True, allow_unused=True)
                present = [g for g in grads if g is not None]
                norms[f"{branch}_{task}"] = (
                    torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present]))
                    if present else state.z.new_zeros(())
                )
                weight = weights[branch][task]
                for i, g in enumerate(grads):
                    if g is not None:  # g is a fresh tensor from autograd.grad: safe to scale in place
                        total_grads[i] = g.mul_(weight) if total_grads[i] is None else total_grads[i].add_(g, alpha=weight)
        for param, grad in zip(shared, total_grads):
            param.grad = grad
        return dict(zip(norms, torch.stack(list(norms.values())).tolist()))  # one device sync

    # --------------------------------------------------------------- epochs

    def train_epoch(self, epoch: int) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """One pass over the training rows; returns mean losses, pseudo-label acceptance and shares."""
        self.model.train()
        if epoch == self.cfg.ssl.rebalance_epoch and self.gradnorm["ssl"] is not None:
            self.gradnorm["ssl"].reset_weights()
        seed = _epoch_seed(self.cfg.seed, epoch)
        torch.manual_seed(seed)  # dropout stream of this epoch
        generator = torch.Generator().manual_seed(seed)
        batches = epoch_batches(self.data.train.corpus_index.cpu(), self.cfg.optim.batch_size, generator,
                                self.corpus_weights).to(self.device)
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        for step, idx in enumerate(batches):
            losses = self.train_step(self.data.train.index(idx, with_ids=False), idx, epoch, step)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value
                counts[name] = counts.get(name, 0) + 1
        mean_losses = {name: float(total) / counts[name] for name, total in sums.items()}
        if self.pseudo_labeler is None:
            return mean_losses, {t: math.nan for t in self.tasks}, {}
        acceptance, shares = self.pseudo_labeler.epoch_stats()
        return mean_losses, acceptance, shares

    def fit(
        self,
        epochs: int | None = None,
        on_epoch: Callable[[EpochReport], None] | None = None,
        resume: bool = False,
    ) -> FitResult:
        """Train until ``epochs`` (default ``optim.epochs``) or early stopping.

        With ``resume`` and an ``output_dir/last`` checkpoint, continue from it.
        """
        epochs = epochs or self.cfg.optim.epochs
        start = 0
        if resume and self.output_dir is not None and (self.output_dir / "last" / "state.json").exists():
            start = self.restore(self.output_dir / "last")
        patience = self.cfg.optim.early_stopping_patience
        stopped = False
        for epoch in range(start, epochs):
            if patience and self.epochs_since_best >= patience:
                stopped = True
                break
            tic = time.perf_counter()
            losses, acceptance, shares = self.train_epoch(epoch)
            metrics = evaluate(self.model, self.data.dev)
            score = dev_score(metrics, self.tasks)
            if self.data.dev_without:  # a model that must hold up where the target lacks a modality
                without = evaluate(self.model, self.data.dev_without)
                score = (score + dev_score(without, self.tasks)) / 2
                metrics.update({f"without/{k}": v for k, v in without.items()})
            if self.scheduler is not None and not steps_per_batch(self.scheduler):
                self.scheduler.step(score)
            improved = score > self.best_score
            if improved:
                self.best_score, self.best_epoch, self.epochs_since_best = score, epoch, 0
            else:
                self.epochs_since_best += 1
            report = EpochReport(
                epoch=epoch,
                metrics=metrics,
                score=score,
                losses=losses,
                weights={f"{b}_{t}": w for b in BRANCHES for t, w in self._weights(b).items()},
                acceptance=acceptance,
                lr=self.optimizer.param_groups[0]["lr"],
                seconds=time.perf_counter() - tic,
                best=improved,
                pseudo_labels=shares,
            )
            self.history.append(report)
            self.save(improved)
            if on_epoch is not None:
                on_epoch(report)
        return FitResult(self.best_epoch, self.best_score, list(self.history), stopped)

    # --------------------------------------------------------------- checkpoints

    def save(self, improved: bool) -> None:
        if self.output_dir is None:
            return
        if improved:
            save_checkpoint(self.output_dir / "best", self.model, self.spec)
        state = {
            "epoch": self.history[-1].epoch if self.history else -1,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "epochs_since_best": self.epochs_since_best,
            "gradnorm": {b: None if gn is None else gn.state_dict() for b, gn in self.gradnorm.items()},
            "history": [asdict(r) for r in self.history],
        }
        save_checkpoint(self.output_dir / "last", self.model, self.spec, self.optimizer, self.scheduler, state,
                        self._training_tensors())

    def _training_tensors(self) -> dict[str, Tensor]:
        tensors = {} if self.pseudo_labeler is None else dict(self.pseudo_labeler.state_tensors())
        if self.teacher is not None:
            tensors.update({f"teacher.{k}": v for k, v in self.teacher.model.state_dict().items()})
        return tensors

    def restore(self, path: str | Path) -> int:
        """Load a ``last`` checkpoint; returns the next epoch to run."""
        state = load_training_state(path, self.model, self.optimizer, self.scheduler)
        tensors = load_training_tensors(path, self.device)
        if self.pseudo_labeler is not None:
            self.pseudo_labeler.load_state_tensors(tensors)
        if self.teacher is not None:
            self.teacher.model.load_state_dict({k.removeprefix("teacher."): v for k, v in tensors.items()
                                                if k.startswith("teacher.")})
        for branch, gn_state in state["gradnorm"].items():
            if self.gradnorm[branch] is not None and gn_state is not None:
                self.gradnorm[branch].load_state_dict(gn_state)
        self.best_score = state["best_score"]
        self.best_epoch = state["best_epoch"]
        self.epochs_since_best = state["epochs_since_best"]
        self.history = [EpochReport(**r) for r in state["history"]]
        return state["epoch"] + 1


__all__ = ["EpochReport", "FitResult", "METRICS", "NonFiniteLossError", "Trainer"]
