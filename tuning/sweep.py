"""A sweep: Ray Tune runs the trials, Optuna (or an exact grid / one-factor-at-a-time list)
chooses them, ASHA stops weak ones early, MLflow records everything.

``run_sweep(SweepSettings(...), SweepOutputs(...))`` is what ``ray_jobs/tune_ssl.py`` calls. With
``resume=True`` an interrupted sweep (driver killed, cluster restarted) is restored from
``storage_path/name``: finished trials are kept, unfinished ones continue from their last
checkpoint, and every trial keeps its MLflow run.

On disk a sweep keeps the Ray checkpoints of its unfinished trials only: when Ray Tune is done
with a trial, its best model and figures are in its MLflow run and its Ray checkpoints are
deleted (:class:`TrialCompletion`); ``python -m tuning.cleanup`` frees a finished sweep.

Figures and the sweep report are drawn by ``dashboards``, which sits above this package:
the entry point hands its drawing functions in (:class:`SweepOutputs`), so that tuning
never imports dashboards.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from scd_core.checkpoint import load_spec, training_history
from scd_core.config import ConfigError, load_config, with_overrides
from scd_core.data import load_eval_splits
from scd_core.features import FeatureStoreError, Manifest, validate_store
from scd_core.synthetic import ensure_store
from scd_core.tables import Table
from tuning.leaderboard import publish_leaderboard, view_path
from tuning.local_ray import start_ray
from tuning.spaces import SearchSpace, SpaceError, load_space
from tuning.tracking import (CHECKPOINT_ARTIFACT, CHILD, FIGURES_ARTIFACT, RAY_STORAGE_TAG, TrackedRun,
                             Tracking, TrialFigures, check_name, child_run, git_commit, log_figures, package_versions,
                             parent_run, sweep_parent, sweep_runs, tracking_home)
from tuning.trial import COMPLETED_MARKER, PERMANENT_FAILURE, TrialContext, run_trial

MAX_ERRORS_SHOWN = 10  # feature-store problems printed before "N more"


@dataclass
class SweepSettings:
    """A sweep's own settings, the one place their defaults live (``tune_ssl.py``'s flags read
    them from here). None means "the space's default" (``strategy``, ``num_samples``) or "the
    platform's" (``features``: the demo corpora; ``name``: space-strategy-time; ``storage_path``
    and ``tracking_uri``: the local store; ``address``: $RAY_ADDRESS or a local Ray)."""

    space: str = "quick"
    features: str | None = None
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    strategy: str | None = None
    num_samples: int | None = None  # optuna only: grid and one-factor spaces list their trials
    epochs: int | None = None
    max_concurrent: int | None = None  # None: as many as the cluster fits (trials_at_once)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    asha: bool = True
    grace_period: int = 2  # ASHA: epochs every trial runs before it can be stopped
    reduction_factor: int = 4  # ASHA: 1/reduction_factor of the trials pass each rung
    max_failures: int = 2
    name: str | None = None
    resume: bool = False
    storage_path: str | None = None
    tracking_uri: str | None = None
    seed: int = 0
    address: str | None = None
    report_top_k: int = 3  # trials evaluated on the test splits for the sweep's comparison table

    def __post_init__(self) -> None:
        for name, low in (("max_concurrent", 1), ("grace_period", 1), ("reduction_factor", 2), ("max_failures", 0),
                          ("report_top_k", 0), ("num_samples", 1), ("epochs", 1), ("seed", 0)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"--{name.replace('_', '-')}: {value} is below {low}")
        # not (x > 0) rather than x <= 0: NaN fails every comparison
        if not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0
                and math.isfinite(self.gpus_per_trial) and self.gpus_per_trial >= 0):
            raise ConfigError(f"--cpus-per-trial must be a finite number > 0 and --gpus-per-trial one >= 0 "
                              f"(got {self.cpus_per_trial}, {self.gpus_per_trial})")
        if self.name is not None:
            check_name(self.name, "--name")


def trials_at_once(settings: SweepSettings, resources: Mapping[str, float]) -> int:
    """``max_concurrent``, else as many trials as the cluster's CPUs and GPUs (Ray's
    ``cluster_resources()``) fit at ``cpus_per_trial`` and ``gpus_per_trial``: 8 per GPU at
    0.125. Raises ConfigError when not even one trial fits (Ray would wait for it forever)."""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    # The epsilon keeps 1 / 0.1 GPU at 10 trials, not 9 (float division).
    fit = math.floor(cpus / settings.cpus_per_trial + 1e-9)
    if settings.gpus_per_trial > 0:
        fit = min(fit, math.floor(gpus / settings.gpus_per_trial + 1e-9))
    if fit < 1:
        raise ConfigError(f"a trial asks for {settings.cpus_per_trial:g} CPUs and {settings.gpus_per_trial:g} GPUs "
                          f"(--cpus-per-trial, --gpus-per-trial), more than the Ray cluster has: {cpus:g} CPUs, "
                          f"{gpus:g} GPUs")
    return settings.max_concurrent or fit


SweepReport = Callable[[Tracking, str, SearchSpace, Path, int], object]
"""``(tracking, sweep, space, features, top_k)``: stores the sweep's report with its parent run."""


@dataclass(frozen=True)
class SweepOutputs:
    """What a sweep draws beside its numbers (``dashboards.SWEEP_OUTPUTS`` draws everything).

    ``trial_figures`` draws a trial's figures from its best checkpoint (in the trial's worker,
    so it must pickle: a module-level function); ``report`` writes the sweep's report.
    None draws nothing: the metrics, checkpoints and leaderboard are the same either way.
    """

    trial_figures: TrialFigures | None = None
    report: SweepReport | None = None


class MlflowStatusCallback(tune.Callback):
    """Closes each trial's MLflow run when Ray Tune is done with it.

    A trial stopped early by ASHA never returns from its training loop, so its run is
    closed here, from the driver, with the reason.
    """

    def __init__(self, tracking: Tracking, sweep: str) -> None:
        self.tracking, self.sweep = tracking, sweep

    def _close(self, trial, status: str, reason: str | None = None) -> None:
        run = child_run(self.tracking, self.sweep, trial.trial_id)
        if run is None:
            return
        client = self.tracking.client()
        if reason and "failure_reason" not in run.data.tags:  # the trial's own reason is the fuller one
            client.set_tag(run.info.run_id, "failure_reason", reason[:5000])
        if run.info.status not in ("FINISHED", "FAILED") or status == "FAILED":
            client.set_terminated(run.info.run_id, status)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._close(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        error = getattr(trial, "error_file", None)
        reason = Path(error).read_text() if error and Path(error).exists() else "trial raised (see Ray logs)"
        self._close(trial, "FAILED", reason.strip().splitlines()[-1] if reason.strip() else reason)


class NoRetryOfPermanentFailures(tune.Callback):
    """A trial that fails in a way a retry would only repeat (``tuning.trial.PERMANENT_ERRORS``)
    reports a flag before it raises; this sets the trial's retry budget to zero on seeing it."""

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if result.get(PERMANENT_FAILURE):
            trial.max_failures = 0


@dataclass
class SweepResult:
    name: str
    parent_run_id: str
    leaderboard: Table
    tracking: Tracking
    experiment_path: Path
    num_errors: int
    view: str  # the leaderboard's path in the MLflow UI (after the server's address)
    num_trials: int = 0

    @property
    def every_trial_failed(self) -> bool:
        return self.num_trials > 0 and self.num_errors == self.num_trials


def complete_trial(tracking: Tracking, sweep: str, trial_id: str, trial_dir: Path, draw: TrialFigures | None) -> None:
    """What a trial leaves once Ray Tune is done with it: its run's best model and figures, its Ray
    checkpoints gone.

    A trial that ASHA stopped before its last epoch never returned from its training loop, so
    could not log them: they are logged here from its last checkpoint's ``best``, on the trial's
    own feature store. Then the trial's Ray checkpoints (``last`` with the optimiser state, and
    ``best``) are emptied: nothing resumes a trial Tune is done with, and promotion reads the
    run's ``checkpoint/``. The last one keeps only ``COMPLETED_MARKER`` (Ray Tune refuses to
    restore a trial whose recorded checkpoint folder is gone, which a resume from an experiment
    state saved just before this would ask of it). A failed trial's run may have no checkpoint
    (it never ended); its ``error.txt`` stays in its folder.
    """
    run = child_run(tracking, sweep, trial_id)
    if run is None:
        return
    client = tracking.client()
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    saved = sorted(trial_dir.glob("checkpoint_*"))  # Ray keeps one (CheckpointConfig(num_to_keep=1))
    best = saved[-1] / "best" if saved else None
    if run.info.status != "FAILED" and best is not None and best.exists():
        tracked = TrackedRun(client, run.info.run_id)
        if CHECKPOINT_ARTIFACT not in logged:
            tracked.log_dir(best, CHECKPOINT_ARTIFACT)
        if draw is not None and FIGURES_ARTIFACT not in logged:
            config = load_spec(best).config
            dev = load_eval_splits(config, config.data.features, "dev", torch.device("cpu"))
            log_figures(tracked, best, draw, dev, training_history(saved[-1] / "last"), f"({run.info.run_name})")
    # A trial resumed by a later driver runs in a new folder; the one before keeps the checkpoint it resumed from.
    earlier = [c for c in trial_dir.parent.glob(f"*_{trial_id}_*/checkpoint_*") if c.parent != trial_dir]
    for folder in saved[:-1] + earlier:
        shutil.rmtree(folder, ignore_errors=True)
    if saved and not (saved[-1] / COMPLETED_MARKER).exists():
        for item in saved[-1].iterdir():
            shutil.rmtree(item) if item.is_dir() else item.unlink()
        (saved[-1] / COMPLETED_MARKER).write_text(json.dumps({
            "run_id": run.info.run_id, "why": "the trial is complete: its best model is its run's checkpoint/"}))


class TrialCompletion(tune.Callback):
    """Runs :func:`complete_trial` for each trial as Ray Tune finishes with it, so that a sweep's
    disk holds the checkpoints of its running trials only."""

    def __init__(self, tracking: Tracking, sweep: str, draw: TrialFigures | None) -> None:
        self.tracking, self.sweep, self.draw = tracking, sweep, draw

    def _complete(self, trial) -> None:
        if trial.path is not None:  # None: a trial that never started has no folder
            complete_trial(self.tracking, self.sweep, trial.trial_id, Path(trial.path), self.draw)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._complete(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._complete(trial)


def validate_store_once(features: Path) -> Manifest:
    """Check the whole feature store before any trial: a broken store fails the sweep once, here,
    instead of every trial and every retry of it."""
    _, errors = validate_store(features)
    if errors:
        more = f"\n({len(errors) - MAX_ERRORS_SHOWN} more; see python -m scd_core.features validate {features})" \
            if len(errors) > MAX_ERRORS_SHOWN else ""
        raise FeatureStoreError("\n".join(errors[:MAX_ERRORS_SHOWN]) + more)
    return Manifest.read(features)


def mark_interrupted(tracking: Tracking, sweep: str, parent_id: str, reason: str) -> None:
    """The sweep run FAILED and its unfinished trial runs KILLED, with the reason (``--resume``
    reopens them)."""
    client = tracking.client()
    for run in sweep_runs(tracking, sweep, CHILD, "attributes.status = 'RUNNING'"):
        client.set_tag(run.info.run_id, "failure_reason", f"sweep interrupted: {reason}")
        client.set_terminated(run.info.run_id, "KILLED")
    client.set_tag(parent_id, "failure_reason", reason)
    client.set_terminated(parent_id, "FAILED")


@contextmanager
def runs_marked_failed_on_error(tracking: Tracking, sweep: str, parent_id: str) -> Iterator[None]:
    """Whatever stops the sweep (the storage path, Ray, SIGTERM, Ctrl-C), its runs say so, and why."""
    try:
        yield
    except BaseException as err:
        mark_interrupted(tracking, sweep, parent_id, f"{type(err).__name__}: {err}"[:5000])
        raise


def run_sweep(settings: SweepSettings, outputs: SweepOutputs = SweepOutputs()) -> SweepResult:
    # Everything a user can get wrong is checked here, before Ray starts and before any MLflow run.
    space: SearchSpace = load_space(settings.space)
    strategy = settings.strategy or space.strategy
    if settings.num_samples is not None and strategy != "optuna":
        raise SpaceError(f"{space.source}: --num-samples applies to optuna sweeps only; this {strategy} sweep runs "
                         f"its {space.num_trials(strategy)} listed trials (for a smoke run: --epochs 1, or "
                         f"--strategy optuna --num-samples {settings.num_samples})")
    num_trials = space.num_trials(strategy, settings.num_samples)
    base = load_config(settings.config, settings.overrides)
    home = tracking_home()
    features = Path(settings.features or base.data.features or ensure_store(home / "features" / "demo")).resolve()
    manifest = validate_store_once(features)
    name = settings.name or f"{space.name}-{strategy}-{time.strftime('%Y%m%d-%H%M%S')}"
    tracking = Tracking.resolve(settings.tracking_uri)
    tracking.check_reachable()
    storage = Path(settings.storage_path or home / "ray_results").resolve()
    try:
        storage.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"--storage-path {storage}: cannot create the folder for trial checkpoints: {err}") from None
    if settings.resume and not tune.Tuner.can_restore(str(storage / name)):
        raise FileNotFoundError(f"nothing to resume at {storage / name} (check --name and --storage-path)")
    if not settings.resume and sweep_parent(tracking, name) is not None:
        # Running it again would add a second sweep's trials to its runs and its Ray Tune folder.
        raise ConfigError(f"sweep {name!r} already exists in {tracking.uri}: pass --resume to continue it, or "
                          f"choose another --name")

    parent_id = parent_run(tracking, name, {
        "space": space.name, "strategy": strategy, "git_commit": git_commit(),
        "manifest_hash": manifest.digest(), "features": str(features), **package_versions(),
        RAY_STORAGE_TAG: str(storage / name),  # what tuning.cleanup removes
    })
    with runs_marked_failed_on_error(tracking, name, parent_id):
        cluster = start_ray(settings.address, log_to_driver=True)
        tracking.client().set_tag(parent_id, "ray_cluster", cluster.removeprefix("Ray: "))
        at_once = trials_at_once(settings, ray.cluster_resources())  # also refuses a trial no node can hold
        if settings.resume:  # Tuner.restore follows the sweep's own spec, its limit included
            started_with = tracking.client().get_run(parent_id).data.tags.get("trials_at_once", "?")
            print(f"Tune: resuming; the sweep keeps the limit it started with (trials at once: {started_with}); "
                  f"--max-concurrent does not change a restored sweep", flush=True)
        else:
            print(f"Tune: up to {at_once} trial{'s' if at_once != 1 else ''} at once, each with "
                  f"{settings.cpus_per_trial:g} CPU and {settings.gpus_per_trial:g} GPU", flush=True)
            tracking.client().set_tag(parent_id, "trials_at_once", str(at_once))

        # Settings applied after the space's values, so the command line wins (e.g. --epochs).
        cli = {"optim.epochs": settings.epochs} if settings.epochs is not None else {}
        # A trial reads its config's data.features: the space's where it varies the store, else this one.
        base = with_overrides(base, {"data.features": str(features)})
        context = TrialContext(space, strategy, base.to_dict(), os.getcwd(), tracking, name, parent_id, cli,
                               outputs.trial_figures)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, context=context),
            {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
        )
        experiment_path = storage / name
        if settings.resume:
            tuner = tune.Tuner.restore(str(experiment_path), trainable)
        else:
            epochs = settings.epochs or space.fixed.get("optim.epochs", base.optim.epochs)  # ASHA's horizon
            tuner = tune.Tuner(
                trainable,
                param_space=space.param_space(strategy),
                tune_config=tune.TuneConfig(
                    metric="dev_score",
                    mode="max",
                    search_alg=OptunaSearch(seed=settings.seed, points_to_evaluate=space.points_to_evaluate() or None)
                    if strategy == "optuna" else None,
                    scheduler=ASHAScheduler(max_t=epochs, grace_period=min(settings.grace_period, epochs),
                                            reduction_factor=settings.reduction_factor)
                    if settings.asha else None,
                    num_samples=num_trials if strategy == "optuna" else 1,  # a grid search repeats its grid
                    max_concurrent_trials=at_once,
                    reuse_actors=True,  # a new trial skips process start-up and imports (seconds each)
                ),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=str(storage),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                    callbacks=[MlflowStatusCallback(tracking, name), NoRetryOfPermanentFailures(),
                               TrialCompletion(tracking, name, outputs.trial_figures)],
                    verbose=1,
                ),
            )
        results = tuner.fit()
        for done in results:  # trials finished before a killed driver could complete them
            complete_trial(tracking, name, str(done.metrics.get("trial_id")), Path(done.path), outputs.trial_figures)
        board = publish_leaderboard(tracking, name)
        if outputs.report is not None:
            outputs.report(tracking, name, space, features, settings.report_top_k)

    result = SweepResult(name, parent_id, board, tracking, experiment_path, len(results.errors),
                         view_path(tracking.experiment_id(), name), len(results))
    if result.every_trial_failed:
        tracking.client().set_tag(parent_id, "failure_reason", f"all {result.num_trials} trials failed")
    tracking.client().set_terminated(parent_id, "FAILED" if result.every_trial_failed else "FINISHED")
    return result


__all__ = ["MlflowStatusCallback", "NoRetryOfPermanentFailures", "SweepOutputs", "SweepReport", "SweepResult",
           "SweepSettings", "TrialCompletion", "complete_trial", "run_sweep", "trials_at_once"]
