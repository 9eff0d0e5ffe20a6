"""The Ray Tune trial: one MCDM configuration trained by ``scd_core.trainer``.

Each epoch goes to Ray Tune (``dev_score`` and the metrics, for the searcher and ASHA,
with the trial's checkpoint directory) and to the trial's MLflow child run (the dev
metrics, score, losses, GradNorm weights, pseudo-label acceptance and class shares, learning
rate). A
retried or restored trial restarts from its last Ray checkpoint and continues the same
MLflow run. The best epoch's checkpoint is also an artifact of the run (``checkpoint/``),
which is what promotion registers. Every trial reads its own feature store (its config's
``data.features``, see :func:`trial_config`), whose hash is the run's ``manifest_hash`` tag.
A trial that trains to its end also logs the figures of its best model (``figures/``, drawn
by the sweep's ``TrialFigures`` function: ``dashboards.trial_figures.checkpoint_figures``
when the entry point wires it) and its size (``model/parameters``, ``model/size_mb``, for
the cost table). A trial that ASHA stops before its last epoch never returns from its
training loop: the sweep draws its figures afterwards (``tuning.sweep.log_missing_figures``).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ray import tune

from scd_core.checkpoint import CheckpointError
from scd_core.config import ConfigError, ExperimentConfig, build_config, with_overrides
from scd_core.data import load_training_data, resolve_device
from scd_core.evaluation import NonFiniteOutputError
from scd_core.features import CorpusTensors, FeatureStoreError
from scd_core.model import count_parameters, size_mb
from scd_core.trainer import EpochReport, NonFiniteLossError, Trainer
from tuning.spaces import VARIANT, SearchSpace, SpaceError
from tuning.tracking import Tracking, TrialRun, git_commit, package_versions


# Errors that a retry from the last checkpoint would only repeat (same config, same data, same
# seeded epoch). ``tuning.sweep.NoRetryOfPermanentFailures`` reads the flag reported with them.
PERMANENT_ERRORS = (ConfigError, SpaceError, FeatureStoreError, CheckpointError, NonFiniteLossError,
                    NonFiniteOutputError)
PERMANENT_FAILURE = "permanent_failure"


TrialFigures = Callable[[Path, Mapping[str, CorpusTensors], Sequence[Mapping], Path, str], object]
"""``(best_checkpoint, dev_splits, epoch_history, out_dir, title)``: draws a trial's figures into ``out_dir``."""


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


def epoch_metrics(report: EpochReport) -> dict[str, float]:
    """The flat metric names used in Ray Tune results and MLflow."""
    return {
        "dev_score": report.score,
        **{f"dev/{k}": v for k, v in report.metrics.items()},
        **{f"loss/{k}": v for k, v in report.losses.items()},
        **{f"weight/{k}": v for k, v in report.weights.items()},
        **{f"accept/{k}": v for k, v in report.acceptance.items()},
        **{f"pl/{k}": v for k, v in report.pseudo_labels.items()},
        "lr": report.lr,
        "epoch_seconds": report.seconds,
    }


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
                   trial.get_trial_name(), {"git_commit": git_commit(), **package_versions()})
    if VARIANT in config:  # the row label of ablation tables
        run.set_tags({"variant": config[VARIANT]})
    workdir = Path(tempfile.mkdtemp(prefix="scd-trial-"))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retry or a restored sweep: continue where the trial stopped
        with checkpoint.as_directory() as saved:
            shutil.copytree(saved, workdir, dirs_exist_ok=True)
    try:
        overrides = context.space.resolve(config, context.strategy)
        cfg = trial_config(overrides, context)
        run.log_params(cfg.to_dict())
        run.set_tags({f"override.{k}": v for k, v in overrides.items()})
        data = load_training_data(cfg, cfg.data.features, resolve_device(cfg.device))
        run.set_tags({"manifest_hash": data.manifest_digest})  # of the store this trial read
        trainer = Trainer(cfg, data, workdir)
        run.log_metrics({"model/parameters": count_parameters(trainer.model), "model/size_mb": size_mb(trainer.model)},
                        0, int(time.time() * 1000))

        drawn = []

        def log_figures() -> None:
            if context.figures is not None and (workdir / "best").exists():
                context.figures(workdir / "best", data.dev, [asdict(r) for r in trainer.history], workdir / "figures",
                                f"({trial.get_trial_name()})")
                run.log_dir(workdir / "figures", "figures")
                drawn.append(True)

        def on_epoch(report: EpochReport) -> None:
            metrics = epoch_metrics(report)
            if report.best:
                metrics.update({f"best/{k}": v for k, v in report.metrics.items()})
                metrics.update({"best/dev_score": report.score, "best/epoch": report.epoch})
                run.log_dir(workdir / "best", "checkpoint")
            run.log_metrics(metrics, report.epoch, int(time.time() * 1000))
            if report.epoch == cfg.optim.epochs - 1:  # ASHA stops a trial at its last report, before fit returns
                log_figures()
            tune.report({**metrics, "epoch": report.epoch}, checkpoint=tune.Checkpoint.from_directory(workdir))

        trainer.fit(on_epoch=on_epoch, resume=checkpoint is not None)
        if not drawn:  # stopped early by its own patience
            log_figures()
    except Exception as err:
        run.set_tags({"failure_reason": f"{type(err).__name__}: {err}"[:5000]})
        run.finish("FAILED")
        if isinstance(err, PERMANENT_ERRORS):  # the same inputs fail the same way: tell Tune not to retry
            tune.report({"dev_score": math.nan, PERMANENT_FAILURE: 1.0})
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    run.finish()
