"""Promotion: a trial's best checkpoint becomes a registered model version with alias
``champion`` and an exported checkpoint directory (safetensors + config JSON)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow

from tuning.leaderboard import build_leaderboard
from tuning.tracking import Tracking

MODEL_NAME = "scd-mmpsr"
ALIAS = "champion"


@dataclass
class Promotion:
    model_name: str
    version: str
    run_id: str
    export_dir: Path


def choose_run(tracking: Tracking, sweep: str, by: str = "mean_rank") -> str:
    """The best finished trial of ``sweep`` (lowest mean rank, or highest ``by`` metric)."""
    board = build_leaderboard(tracking, sweep, by)
    ranked = [r for r in board.rows if r["status"] == "FINISHED" and r.get(by) is not None]
    if not ranked:
        raise LookupError(f"sweep {sweep!r} has no finished trial with {by!r}")
    return ranked[0]["run_id"]


def promote(tracking: Tracking, run_id: str, export_dir: str | Path | None = None,
            model_name: str = MODEL_NAME) -> Promotion:
    """Register ``runs:<run_id>/checkpoint`` as a new version of ``model_name`` aliased ``champion``."""
    client = tracking.client()
    run = client.get_run(run_id)
    if not any(f.path == "checkpoint" for f in client.list_artifacts(run_id)):
        raise LookupError(f"run {run_id} has no 'checkpoint' artifact (did any epoch finish?)")
    if client.search_registered_models(f"name = '{model_name}'") == []:
        client.create_registered_model(model_name, description="SCD-MMPSR MCDM checkpoints (safetensors + config)")
    tags = {k: v for k, v in run.data.tags.items() if k in ("sweep", "trial_id", "git_commit", "manifest_hash")}
    version = client.create_model_version(model_name, source=f"{run.info.artifact_uri}/checkpoint",
                                          run_id=run_id, tags=tags)
    client.set_registered_model_alias(model_name, ALIAS, version.version)
    export = Path(export_dir or f"runs/promoted/{model_name}-v{version.version}")
    export.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking.uri)
    mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version.version}", dst_path=str(export))
    return Promotion(model_name, version.version, run_id, export)


def fetch_model(uri: str, tracking: Tracking) -> Path:
    """Download a ``models:/name@alias`` (or ``models:/name/version``) checkpoint; returns its directory."""
    mlflow.set_tracking_uri(tracking.uri)
    return Path(mlflow.artifacts.download_artifacts(uri, dst_path=tempfile.mkdtemp(prefix="scd-model-")))
