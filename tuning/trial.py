"""The Ray Tune trial: one MCDM configuration trained by ``scd_core.trainer``.

Each epoch goes to Ray Tune (``dev_score`` and the metrics, for the searcher and ASHA,
with the trial's checkpoint directory) and to the trial's MLflow child run (the eight dev
metrics, score, losses, GradNorm weights, pseudo-label acceptance, learning rate). A
retried or restored trial restarts from its last Ray checkpoint and continues the same
MLflow run. The best epoch's checkpoint is also an artifact of the run (``checkpoint/``),
which is what promotion registers.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ray import tune

from scd_core.config import build_config, with_overrides
from scd_core.trainer import EpochReport, Trainer, load_training_data, resolve_device
from tuning.spaces import SearchSpace
from tuning.tracking import Tracking, TrialRun, git_commit, package_versions


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (passed with ``tune.with_parameters``)."""

    space: SearchSpace
    strategy: str
    base_config: dict[str, Any]
    features: str
    manifest_digest: str
    tracking: Tracking
    sweep: str
    parent_run_id: str
    final_overrides: dict[str, Any]  # command-line settings that win over the space (e.g. epochs)


def epoch_metrics(report: EpochReport) -> dict[str, float]:
    """The flat metric names used in Ray Tune results and MLflow."""
    return {
        "dev_score": report.score,
        **{f"dev/{k}": v for k, v in report.metrics.items()},
        **{f"loss/{k}": v for k, v in report.losses.items()},
        **{f"weight/{k}": v for k, v in report.weights.items()},
        **{f"accept/{k}": v for k, v in report.acceptance.items()},
        "lr": report.lr,
        "epoch_seconds": report.seconds,
    }


def run_trial(config: Mapping[str, Any], context: TrialContext) -> None:
    """Ray Tune function trainable (``config`` holds this trial's sampled values)."""
    trial = tune.get_context()
    overrides = context.space.resolve(config, context.strategy)
    cfg = with_overrides(build_config(context.base_config), {**overrides, **context.final_overrides})
    run = TrialRun(context.tracking, context.sweep, context.parent_run_id, trial.get_trial_id(),
                   trial.get_trial_name(), {"git_commit": git_commit(), "manifest_hash": context.manifest_digest,
                                            **package_versions()})
    run.log_params(cfg.to_dict())
    run.set_tags({f"override.{k}": v for k, v in overrides.items()})
    workdir = Path(tempfile.mkdtemp(prefix="scd-trial-"))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retry or a restored sweep: continue where the trial stopped
        with checkpoint.as_directory() as saved:
            shutil.copytree(saved, workdir, dirs_exist_ok=True)
    try:
        data = load_training_data(cfg, context.features, resolve_device(cfg.device))
        trainer = Trainer(cfg, data, workdir)

        def on_epoch(report: EpochReport) -> None:
            metrics = epoch_metrics(report)
            if report.best:
                metrics.update({f"best/{k}": v for k, v in report.metrics.items()})
                metrics.update({"best/dev_score": report.score, "best/epoch": report.epoch})
                run.log_dir(workdir / "best", "checkpoint")
            run.log_metrics(metrics, report.epoch, int(time.time() * 1000))
            tune.report({**metrics, "epoch": report.epoch}, checkpoint=tune.Checkpoint.from_directory(workdir))

        trainer.fit(on_epoch=on_epoch, resume=checkpoint is not None)
    except Exception as err:
        run.set_tags({"failure_reason": f"{type(err).__name__}: {err}"[:5000]})
        run.finish("FAILED")
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    run.finish()
