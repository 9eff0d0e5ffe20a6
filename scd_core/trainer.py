"""Semi-supervised cross-domain training of MCDM (paper section 2.4).

One step: a mixed-corpus batch (``scd_core.batching``) -> one forward pass -> supervised
losses on each task's labelled rows and pseudo-label losses on the other rows
(``scd_core.losses``) -> one backward pass of ``sum(w * L)`` with the weights detached,
whose per-task gradients at the shared trunk also give the six GradNorm norms
(``Trainer._trunk_backward``) -> the two ``GradNorm`` branches update -> optimiser step.
That step keeps every shape fixed (masks are weights, not indices) and reads nothing back to
the host: losses, GradNorm state and pseudo-label statistics stay on the device and are read
once per epoch, so on CUDA the step is captured whole as one graph (``cuda_graph``,
``scd_core.static_step``), its elementwise stages (losses, pseudo-labels, GradNorm updates,
the epoch's sums: about 265 tiny ops and their backward) compiled into a few fused kernels
(``fuse_elementwise``).

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
from scd_core.checkpoint import (ModelSpec, build_model, check_fits, load_spec, load_training_state,
                                 load_training_tensors, save_checkpoint)
from scd_core.config import ConfigError, ExperimentConfig, flatten
from scd_core.data import TrainingData
from scd_core.evaluation import METRICS, dev_score, evaluate
from scd_core.features import CorpusTensors
from scd_core.gradnorm import GradNorm
from scd_core.losses import Component, logit_offsets, masked_supervised_losses
from scd_core.model import SharedState
from scd_core.optim import build_optimizer, build_scheduler, steps_per_batch
from scd_core.pseudo_labels import CLASSES, EMATeacher, PseudoLabeler, label_prior
from scd_core.static_step import Fused, StaticStep

BRANCHES = ("sup", "ssl")
# What a resumed run may change: how long it trains and where, not what its state is made of.
RESUMABLE = frozenset({"optim.epochs", "optim.early_stopping_patience", "data.features", "device", "cuda_graph",
                       "fuse_elementwise"})


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


@dataclass
class StepLosses:
    """One step's losses on the device: ``values`` [K] float in ``names`` order (components
    ``<branch>_<task>``, then ``total``); ``present`` [K] bool, False where the batch had no row
    for the component (its value is then 0). Overwritten by the next step of a captured run."""

    names: tuple[str, ...]
    values: Tensor
    present: Tensor

    def host(self) -> dict[str, float]:
        """The present components and the total as floats (one device synchronisation)."""
        return {n: v for n, v, p in zip(self.names, self.values.tolist(), self.present.tolist()) if p}


class _EpochSums:
    """Running sums of an epoch's losses and its first non-finite step, kept on the device
    (updated in place, so a captured step keeps writing to them) and read once per epoch."""

    def __init__(self, names: tuple[str, ...], device: torch.device) -> None:
        self.names = names
        k = len(names)
        self.sums = torch.zeros(k, device=device)
        self.counts = torch.zeros(k, dtype=torch.long, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_values = torch.zeros(k, device=device)
        self.bad_present = torch.zeros(k, dtype=torch.bool, device=device)

    def reset(self) -> None:
        for t in (self.sums, self.counts, self.step, self.bad_values, self.bad_present):
            t.zero_()
        self.bad_step.fill_(-1)

    def add(self, values: Tensor, present: Tensor) -> None:
        """Add one step's losses [K] (``names`` order, detached) where ``present`` [K] bool."""
        first_bad = (present & ~torch.isfinite(values)).any() & (self.bad_step < 0)
        self.bad_step.copy_(torch.where(first_bad, self.step, self.bad_step))
        self.bad_values.copy_(torch.where(first_bad, values, self.bad_values))
        self.bad_present.copy_(torch.where(first_bad, present, self.bad_present))
        self.sums.add_(torch.where(present, values, 0.0))
        self.counts.add_(present)
        self.step.add_(1)

    def read(self, epoch: int) -> dict[str, float]:
        """Mean loss per component that was present at least once; raises on a non-finite loss."""
        bad_step = int(self.bad_step)
        if bad_step >= 0:
            found = {n: v for n, v, p in zip(self.names, self.bad_values.tolist(), self.bad_present.tolist())
                     if p and n != "total"}
            raise NonFiniteLossError(f"epoch {epoch} step {bad_step}: non-finite loss in {found}")
        return {n: s / c for n, s, c in zip(self.names, self.sums.tolist(), self.counts.tolist()) if c}


class Trainer:
    """Trains one configuration; ``fit`` runs (or resumes) the epochs."""

    def __init__(self, cfg: ExperimentConfig, data: TrainingData, output_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        self.data = data
        self.device = data.train.device
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.tasks = list(cfg.data.tasks)
        self.spec = ModelSpec(cfg, data.modality_dims, self.tasks, data.store_modalities)
        # float32 weights, gradients and up to two optimiser moments each, and one batch of features
        check_fits(self.spec, self.device, 16, batch_rows=cfg.optim.batch_size)
        torch.manual_seed(cfg.seed)
        self.model = build_model(self.spec).to(self.device)
        self.shared = self.model.shared_parameters()
        ssl = cfg.ssl
        self.gradnorm = {
            "sup": GradNorm(self.tasks, ssl.alpha_s, ssl.eta_s, budget=float(len(self.tasks)), w_floor=ssl.w_floor,
                            device=self.device),
            "ssl": GradNorm(self.tasks, ssl.alpha_ss, ssl.eta_ss, budget=len(self.tasks) * ssl.lambda_,
                            w_floor=ssl.w_floor, device=self.device) if ssl.lambda_ > 0 else None,
        }
        # Without GradNorm the paper's baseline runs fix every coefficient at 1.0 (0 for a branch it lacks).
        self._fixed_weights = {b: torch.full((len(self.tasks),), 0.0 if gn is None else 1.0, device=self.device)
                               for b, gn in self.gradnorm.items()}
        self.loss_names = (*(f"{b}_{t}" for b in BRANCHES for t in self.tasks), "total")
        self._sums = _EpochSums(self.loss_names, self.device)
        if cfg.cuda_graph == "on" and self.device.type != "cuda":
            raise ConfigError(f"cuda_graph=on needs a CUDA device; this run's device is {self.device}")
        self.cuda_graph = cfg.cuda_graph == "on" or (cfg.cuda_graph == "auto" and self.device.type == "cuda")
        fuse = cfg.fuse_elementwise == "on" or (cfg.fuse_elementwise == "auto" and self.device.type == "cuda")
        self._losses = Fused(self._losses_step, enabled=fuse)
        self._record = Fused(self._record_step, enabled=fuse)
        self._static: tuple[bool, StaticStep] | None = None  # (ssl_active, its step)
        self._logit_offsets = (logit_offsets({t: label_prior(data.train, t) for t in self.tasks if t in CLASSES},
                                             ssl.logit_adjustment) if ssl.logit_adjustment > 0 else None)
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
        """The branch's current weights on the host (a device synchronisation: per epoch)."""
        gn = self.gradnorm[branch]
        if gn is not None and self.cfg.ssl.gradnorm:
            return gn.weights
        return dict(zip(self.tasks, self._fixed_weights[branch].tolist()))

    def _weight_tensor(self, branch: str) -> Tensor:
        """[T] float32 weights of ``branch`` on the device."""
        gn = self.gradnorm[branch]
        if gn is None or not self.cfg.ssl.gradnorm:
            return self._fixed_weights[branch]
        return gn.weight_tensor.to(torch.float32)

    def _ssl_active(self, epoch: int) -> bool:
        return self.pseudo_labeler is not None and epoch >= self.cfg.ssl.warmup_epochs

    def train_step(self, batch: CorpusTensors | None, rows: Tensor, epoch: int, step: int) -> StepLosses:
        """One optimisation step on training rows ``rows`` [B]; returns its losses on the device.

        ``batch`` holds the rows' tensors, or None to gather them here (a captured step always
        gathers them itself, inside the graph). The total loss of a step uses the weights that
        the previous step's GradNorm update left (as in Chen et al. 2018, Algorithm 1); this
        step's norms update them after. Nothing is read back to the host.
        """
        ssl_active = self._ssl_active(epoch)
        if self.cuda_graph:
            static = self.static_step(ssl_active, capture=True)
            losses = static(rows)
            self.cuda_graph = static.capture  # a failed capture warned once: eager from now on
        else:
            batch = self.data.train.index(rows, with_ids=False) if batch is None else batch
            # On the CPU reading a flag costs nothing: skip the trunk passes of absent components.
            losses = self._device_step(batch, rows, None, ssl_active, fixed_work=self.device.type != "cpu")
        self.optimizer.step()
        if self.teacher is not None:
            self.teacher.update(self.model)
        if steps_per_batch(self.scheduler):
            self.scheduler.step()
        return losses

    def static_step(self, ssl_active: bool, capture: bool) -> StaticStep[StepLosses]:
        """The step on static buffers of ``optim.batch_size`` rows (``scd_core.static_step``)."""
        if self._static is None or self._static[0] != ssl_active:
            # One at a time: a capture points every parameter's .grad at its own graph's memory.
            def step(rows: Tensor, valid: Tensor) -> StepLosses:
                return self._device_step(self.data.train.index(rows, with_ids=False), rows, valid, ssl_active,
                                         fixed_work=True)

            self._static = (ssl_active, StaticStep(step, self.cfg.optim.batch_size, self.device, capture))
        return self._static[1]

    def _device_step(self, batch: CorpusTensors, rows: Tensor, valid: Tensor | None, ssl_active: bool,
                     fixed_work: bool = True) -> StepLosses:
        """Gradients in ``.grad``, the GradNorm update and the epoch's sums, all on the device;
        ``fixed_work=False`` lets the GradNorm passes read presence flags (see ``_trunk_backward``)."""
        components, total, norms = self._gradients(batch, rows, valid, ssl_active, fixed_work)
        detached = {b: {t: c._replace(loss=c.loss.detach()) for t, c in parts.items()} for b, parts in components.items()}
        return StepLosses(self.loss_names, *self._record(detached, total.detach(), norms))

    def _losses_step(self, outputs: dict[str, Tensor], labels: dict[str, Tensor], label_mask: dict[str, Tensor],
                     targets: dict[str, Tensor] | None, rows: Tensor, valid: Tensor | None,
                     ) -> dict[str, dict[str, Component]]:
        """The step's loss components: supervised, and pseudo-label ones from ``targets`` (with
        the pseudo-label state's updates). About 120 tiny ops and their backward, which
        ``fuse_elementwise`` compiles into a few kernels."""
        components = {"sup": masked_supervised_losses(outputs, labels, label_mask, self.cfg.ssl.emo_target, valid,
                                                         self._logit_offsets)}
        if targets is not None:
            components["ssl"] = self.pseudo_labeler.masked_losses(outputs, targets, label_mask, rows, valid)
        return components

    def _record_step(self, components: dict[str, dict[str, Component]], total: Tensor,
                     norms: dict[str, Tensor] | None) -> tuple[Tensor, Tensor]:
        """The step's updates of the running state from its detached losses: GradNorm's weights
        (when ``norms``) and the epoch's sums. Returns the step's losses (``loss_names`` order)
        and their presence flags. About 140 tiny elementwise ops, which ``fuse_elementwise``
        compiles into a few kernels."""
        if norms is not None:
            for branch, gn in self.gradnorm.items():
                if gn is not None and branch in components:
                    parts = [components[branch][t] for t in self.tasks]
                    gn.update_tensors(torch.stack([c.loss for c in parts]),
                                      torch.stack([norms[f"{branch}_{t}"] for t in self.tasks]),
                                      torch.stack([c.present for c in parts]))
        absent = Component(total.new_zeros(()), torch.zeros((), dtype=torch.bool, device=self.device))
        parts = [components.get(b, {}).get(t, absent) for b in BRANCHES for t in self.tasks]
        values = torch.stack([*(c.loss for c in parts), total])
        present = torch.stack([*(c.present for c in parts), torch.ones_like(absent.present)])
        self._sums.add(values, present)
        return values, present

    def backward(self, batch: CorpusTensors, rows: Tensor, epoch: int = 0, step: int = 0):
        """Forward, losses and gradients of ``sum(w * L)`` in every parameter's ``.grad``, read
        on the host (for tests and notebooks; the training step is ``train_step``).

        ``rows`` [B] are the batch's indices into the training set. In training mode the
        batch's modalities are dropped at ``data.modality_dropout`` first. Returns the
        detached losses of the present components (``<branch>_<task>``) and ``total``, and
        their unweighted gradient norms w.r.t. the shared parameters (None without GradNorm).
        """
        components, total, norms = self._gradients(batch, rows, None, self._ssl_active(epoch), fixed_work=False)
        flat = {f"{b}_{t}": c for b, parts in components.items() for t, c in parts.items()}
        present = [n for n, c in flat.items() if bool(c.present)]
        losses = {**{n: flat[n].loss.detach() for n in present}, "total": total.detach()}
        return losses, None if norms is None else {n: float(norms[n]) for n in present}

    def _gradients(self, batch: CorpusTensors, rows: Tensor, valid: Tensor | None, ssl_active: bool,
                   fixed_work: bool):
        """Forward, every component (fixed shapes, presence flags) and the gradients of the total.

        Returns ``({branch: {task: Component}}, total, norms)``, norms being the unweighted
        GradNorm norms by ``<branch>_<task>`` as 0-d tensors (None without GradNorm).
        """
        model, gradnorm = self.model, self.cfg.ssl.gradnorm
        modality_mask = batch.modality_mask
        if model.training:
            modality_mask = drop_modalities(modality_mask, self.cfg.data.modality_dropout)
        # Training rows were checked when loaded, and dropout keeps a modality per row.
        state = model.encode(batch.features, modality_mask, validate=False)
        branch_inputs = {t: _detached(state) if gradnorm else state for t in self.tasks}
        outputs = {t: model.decode(branch_inputs[t], t) for t in self.tasks}
        targets = None
        if ssl_active:
            # The teacher sees the whole row: its targets do not depend on the student's dropped modalities.
            targets = outputs if self.teacher is None else self.teacher(batch.features, batch.modality_mask)
        components = self._losses(outputs, batch.labels, batch.label_mask, targets, rows, valid)
        weights = {b: self._weight_tensor(b) for b in components}
        # An absent component's loss is 0 with a zero gradient: it adds nothing, as if left out.
        # One product of the stacked components (a kernel or two, not one per component).
        weight = torch.cat([weights[b] for b in components])  # [branches * T]
        loss = torch.stack([losses[t].loss for losses in components.values() for t in self.tasks])
        total = (weight * loss).sum()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()  # task branches only, when GradNorm cut them from the trunk
        norms = (self._trunk_backward(state, branch_inputs, components, weights, batch.label_mask, fixed_work)
                 if gradnorm else None)
        return components, total, norms

    def _trunk_backward(self, state, branch_inputs, components, weights, label_mask,
                        fixed_work: bool) -> dict[str, Tensor]:
        """Shared-parameter gradients of the total loss, and the six GradNorm norms, in one
        backward pass through the trunk alone, batched over the components.

        The naive way takes one backward pass through the whole model per component
        (six) plus one for the total: on the CPU that costs about 2x a plain step. Here each
        task branch read its own detached copy of the trunk's output (``z``, ``c_mods``), so
        the one backward pass of the total filled, per task t, the gradient
        ``w_sup_t dL_sup_t + w_ssl_t dL_ssl_t`` arriving at the trunk. Samples do not
        interact in MCDM (graph and attention run within a sample), so that gradient splits
        by rows: rows labelled for t carry only the supervised component, the other rows
        only the pseudo-label one. Dividing by the weight gives each component's own
        gradient at the trunk; a backward pass of it through the trunk gives
        dL_c/d theta_shared, its norm, and (weighted and summed) the total's gradient. The K
        components' passes run as one (``is_grads_batched``: the K trunk gradients stacked
        [K, ...]), K times fewer kernel launches than a pass each.
        With ``fixed_work`` every component is in the batch, an absent one with a zero gradient
        (no host read: what a CUDA graph captures); else an absent one is left out (norm 0),
        which reads its presence flag on the host.
        """
        keys, rows, used_weights, leaves = [], [], [], []
        norms = {}
        for branch, losses in components.items():
            for i, task in enumerate(losses):
                key = f"{branch}_{task}"
                if not fixed_work and not bool(losses[task].present):
                    norms[key] = state.z.new_zeros(())
                    continue
                keys.append(key)
                rows.append(label_mask[task] if branch == "sup" else ~label_mask[task])
                used_weights.append(weights[branch][i])
                leaves.append(branch_inputs[task])
        outputs, batched = [], []
        if keys:
            w = torch.stack(used_weights)  # [K]
            scale = torch.stack(rows).to(state.z.dtype) / w[:, None]  # [K, B]: a component's rows, unweighted
            for tensor, arrived in ((state.z, [leaf.z.grad for leaf in leaves]),
                                    (state.c_mods, [leaf.c_mods.grad for leaf in leaves])):
                if any(a is not None for a in arrived):
                    outputs.append(tensor)
                    stacked = torch.stack([torch.zeros_like(tensor) if a is None else a for a in arrived])
                    batched.append(stacked * scale[:, :, None, None])
        if not outputs:
            for param in self.shared:
                param.grad = None
            return norms
        grads = torch.autograd.grad(outputs, self.shared, batched, allow_unused=True, is_grads_batched=True)
        for param, g in zip(self.shared, grads):
            # The total's gradient: one product per parameter reading its K slices once (a
            # multi-tensor weighted sum reads and writes them 2K times: slower on the CPU).
            param.grad = None if g is None else (w @ g.flatten(1)).view_as(param)
        # The P x K norms as one multi-tensor kernel (a launch or two, not P).
        per_slice = torch.stack(torch._foreach_norm([s for g in grads if g is not None for s in g.unbind(0)]))
        component_norms = torch.linalg.vector_norm(per_slice.view(-1, len(keys)), dim=0)  # [K]
        for k, key in enumerate(keys):
            norms[key] = component_norms[k]
        return norms

    # --------------------------------------------------------------- epochs

    def train_epoch(self, epoch: int) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """One pass over the training rows; returns mean losses, pseudo-label acceptance and shares.

        The steps read nothing back; the losses, the first non-finite step (an error naming
        it) and the pseudo-label statistics are read once, at the end.
        """
        self.model.train()
        if epoch == self.cfg.ssl.rebalance_epoch and self.gradnorm["ssl"] is not None:
            self.gradnorm["ssl"].reset_weights()
        seed = _epoch_seed(self.cfg.seed, epoch)
        torch.manual_seed(seed)  # dropout stream of this epoch
        generator = torch.Generator().manual_seed(seed)
        batches = epoch_batches(self.data.train.corpus_index.cpu(), self.cfg.optim.batch_size, generator,
                                self.corpus_weights).to(self.device)
        self._sums.reset()
        for step, idx in enumerate(batches):
            self.train_step(None, idx, epoch, step)
        mean_losses = self._sums.read(epoch)
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
        """Load a ``last`` checkpoint; returns the next epoch to run. ConfigError, naming each
        change, when this run's config or feature sizes differ from the checkpoint's in what
        shapes its state (the model, optimiser, schedule, data and SSL fields)."""
        self._check_resumable(load_spec(path), Path(path))
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

    def _check_resumable(self, saved: ModelSpec, path: Path) -> None:
        before, now = flatten(saved.config.to_dict()), flatten(self.cfg.to_dict())
        changed = [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(before.keys() | now.keys())
                   if k not in RESUMABLE and before.get(k) != now.get(k)]
        changed += [f"{m} feature size: {saved.modality_dims.get(m)} -> {d}" for m, d in self.spec.modality_dims.items()
                    if saved.modality_dims.get(m) != d]
        if changed:
            raise ConfigError(f"{path}: a run resumes with the config it was trained with; changed: "
                              f"{'; '.join(changed)} (only {', '.join(sorted(RESUMABLE))} may change)")


__all__ = ["EpochReport", "FitResult", "METRICS", "NonFiniteLossError", "Trainer"]
