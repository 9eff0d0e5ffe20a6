"""The Ray Tune trial: one MCDM configuration trained by ``scd_core.trainer``.

Each epoch goes to Ray Tune (``dev_score`` and the metrics, for the searcher and ASHA,
with the trial's checkpoint directory: ``last``, resumable, and ``best``) and to the trial's
MLflow child run (the dev metrics, score, losses, GradNorm weights, pseudo-label acceptance and
class shares, learning rate: :func:`tuning.tracking.log_epoch`, which ``ray_jobs/train.py``
uses too). A retried or restored trial restarts from its last Ray checkpoint and continues the
same MLflow run. Every trial reads its own feature store (its config's ``data.features``, see
:func:`trial_config`), whose hash is the run's ``manifest_hash`` tag.

When a trial ends, its best model goes to its run once (:func:`log_outputs`): the best
epoch's checkpoint (``checkpoint/``, weights and config only, what promotion registers) and
its figures (``figures/``, drawn by the sweep's ``TrialFigures`` function:
``dashboards.trial_figures.checkpoint_figures`` when the entry point wires it). A trial that
ASHA stops before its last epoch never returns from its training loop: the sweep's driver
logs them from the trial's last Ray checkpoint (``tuning.sweep.TrialCompletion``), then
deletes that trial's Ray checkpoints, which nothing needs any more.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from ray import tune

from scd_core.checkpoint import CheckpointError
from scd_core.config import ConfigError, ExperimentConfig, build_config, with_overrides
from scd_core.data import load_training_data, resolve_device
from scd_core.evaluation import NonFiniteOutputError
from scd_core.features import FeatureStoreError
from scd_core.trainer import EpochReport, NonFiniteLossError, Trainer
from tuning.spaces import VARIANT, SearchSpace, SpaceError
from tuning.tracking import (Tracking, TrialFigures, TrialRun, git_commit, log_epoch, log_outputs, package_versions,
                             training_tags)


# Errors that a retry from the last checkpoint would only repeat (same config, same data, same
# seeded epoch). ``tuning.sweep.NoRetryOfPermanentFailures`` reads the flag reported with them.
PERMANENT_ERRORS = (ConfigError, SpaceError, FeatureStoreError, CheckpointError, NonFiniteLossError,
                    NonFiniteOutputError)
PERMANENT_FAILURE = "permanent_failure"
# What a completed trial's last Ray checkpoint holds once the driver has emptied it: Ray Tune still
# finds the folder it recorded (it refuses to restore a trial whose checkpoint folder is gone).
COMPLETED_MARKER = "completed_trial.json"


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (passed with ``tune.with_parameters``)."""

    space: SearchSpace
    strategy: str
    base_config: dict[str, Any]  # its data.features is the sweep's store
    driver_dir: str  # the sweep driver's working directory: a relative data.features is relative to it
    tracking: Tracking
    sweep: str
    parent_run_id: str
    final_overrides: dict[str, Any]  # command-line settings that win over the space (e.g. epochs)
    figures: TrialFigures | None = None  # None: the trial logs no figures


def trial_run_name(trial_name: str, config: Mapping[str, Any], context: TrialContext) -> str:
    """The MLflow run name: the variant where it names one trial (one-factor-at-a-time sweeps, grids
    of variants alone), so that the UI lists ``baseline``, ``ssl.lambda=0.2``...; else Ray's name."""
    if VARIANT not in config:
        return trial_name
    if context.strategy == "oat" or (context.strategy == "grid" and not context.space.parameters):
        return str(config[VARIANT])
    return f"{config[VARIANT]} ({trial_name})"


def trial_config(overrides: Mapping[str, Any], context: TrialContext) -> ExperimentConfig:
    """The trial's config: the sweep's base, the space's values, then the command line's.

    Its ``data.features`` is its own store: the space's value where the space sets one (the
    encoder comparisons vary it), else the sweep's; made absolute against the driver's
    working directory, so training, its checkpoint, figures and evaluation all read it.
    """
    cfg = with_overrides(build_config(context.base_config), {**overrides, **context.final_overrides})
    return with_overrides(cfg, {"data.features": str(Path(context.driver_dir, cfg.data.features).resolve())})


def run_trial(config: Mapping[str, Any], context: TrialContext) -> None:
    """Ray Tune function trainable (``config`` holds this trial's sampled values)."""
    trial = tune.get_context()
    # The run exists before anything can fail, so that every failure is recorded on it.
    run = TrialRun(context.tracking, context.sweep, context.parent_run_id, trial.get_trial_id(),
                   trial_run_name(trial.get_trial_name(), config, context), {"git_commit": git_commit(),
                                                                             **package_versions()})
    if VARIANT in config:  # the row label of ablation tables
        run.set_tags({"variant": config[VARIANT]})
    checkpoint = tune.get_checkpoint()
    workdir = Path(tempfile.mkdtemp(prefix="scd-trial-"))
    if checkpoint is not None:  # a retry or a restored sweep: continue where the trial stopped
        with checkpoint.as_directory() as saved:
            shutil.copytree(saved, workdir, dirs_exist_ok=True)
    if (workdir / COMPLETED_MARKER).exists():
        # The driver emptied this checkpoint once the trial was complete (tuning.sweep.complete_trial);
        # a sweep resumed from a state saved just before runs the trial again: it is done.
        shutil.rmtree(workdir, ignore_errors=True)
        run.finish()
        return
    try:
        overrides = context.space.resolve(config, context.strategy)
        cfg = trial_config(overrides, context)
        run.log_params(cfg.to_dict())
        run.set_tags({f"override.{k}": v for k, v in overrides.items()})
        device = resolve_device(cfg.device)
        data = load_training_data(cfg, cfg.data.features, device)
        run.set_tags(training_tags(data, device))  # the store this trial read, the device it ran on
        trainer = Trainer(cfg, data, workdir)
        run.log_model_size(trainer.model)
        logged = []

        def outputs() -> None:
            if (workdir / "best").exists():
                log_outputs(run, workdir / "best", context.figures, data.dev, [asdict(r) for r in trainer.history],
                            f"({trial.get_trial_name()})")
                logged.append(True)

        def on_epoch(report: EpochReport) -> None:
            metrics = log_epoch(run, report)
            if report.epoch == cfg.optim.epochs - 1:  # ASHA stops a trial at its last report, before fit returns
                outputs()
            tune.report({**metrics, "epoch": report.epoch}, checkpoint=tune.Checkpoint.from_directory(workdir))

        trainer.fit(on_epoch=on_epoch, resume=checkpoint is not None)
        if not logged:  # stopped early by its own patience
            outputs()
    except Exception as err:
        run.fail(err)
        if isinstance(err, PERMANENT_ERRORS):  # the same inputs fail the same way: tell Tune not to retry
            tune.report({"dev_score": math.nan, PERMANENT_FAILURE: 1.0})
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    run.finish()
