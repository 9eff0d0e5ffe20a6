"""Promotion: a trial's best checkpoint becomes an MLflow model (``tuning.mlflow_model``: a
pyfunc with a signature, the checkpoint inside) logged to the trial's run, registered as a
new version with alias ``champion``, and an exported checkpoint directory (safetensors +
config JSON).

Guards: promoting a run that is already registered moves the alias to its version (no second
version); replacing a champion that scores better on the same dev metrics (its best dev score,
over the same selection metrics) is refused unless ``replace_better=True``."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from scd_core.checkpoint import write_atomic_dir
from scd_core.config import ConfigError
from scd_core.evaluation import selection_metrics
from tuning.leaderboard import build_leaderboard
from tuning.mlflow_model import checkpoint_dir, log_mlflow_model
from tuning.tracking import CHECKPOINT_ARTIFACT, CHECKPOINT_REMOVED_TAG, Tracking, check_name

MODEL_NAME = "scd-mmpsr"
ALIAS = "champion"


class ChampionIsBetter(ValueError):
    """The current champion scores better on the same dev metrics than the run to promote."""


@dataclass
class Promotion:
    model_name: str
    version: str
    run_id: str
    export_dir: Path
    reused: bool = False  # the run was registered already: the alias moved to its version
    replaced: str | None = None  # what a deliberate replacement of a better champion replaced


def _dev_score(client, run_id: str) -> tuple[float | None, frozenset[str]]:
    """A run's best dev score and the selection metrics it was scored on."""
    metrics = client.get_run(run_id).data.metrics
    return metrics.get("best/dev_score"), frozenset(m for m in selection_metrics() if f"best/{m}" in metrics)


def _better_champion(client, model_name: str, run_id: str) -> str | None:
    """Why the current champion beats ``run_id`` on the same dev metrics, or None."""
    try:
        champion = client.get_model_version_by_alias(model_name, ALIAS)
    except MlflowException:  # no champion yet
        return None
    if champion.run_id == run_id:
        return None
    held, held_metrics = _dev_score(client, champion.run_id)
    new, new_metrics = _dev_score(client, run_id)
    if held is None or new is None or held_metrics != new_metrics or held <= new:
        return None
    return (f"the champion ({model_name} version {champion.version}, run {champion.run_id}) has dev score "
            f"{held:.4f} on the same dev metrics, above run {run_id}'s {new:.4f}")


def choose_run(tracking: Tracking, sweep: str, by: str = "mean_rank") -> str:
    """The best finished trial of ``sweep`` (lowest mean rank, or highest ``by`` metric)."""
    board = build_leaderboard(tracking, sweep, by)
    ranked = [r for r in board.rows if r["status"] == "FINISHED" and r.get(by) is not None]
    if not ranked:
        raise LookupError(f"sweep {sweep!r} has no finished trial with {by!r}")
    return ranked[0]["run_id"]


def _check_export(export: Path, checkpoint: Path | None = None) -> None:
    """The export folder may be new, empty or an earlier export (of ``checkpoint``'s files);
    anything else is the user's and is never replaced."""
    if not export.exists():
        return
    if not export.is_dir():
        raise ConfigError(f"--export {export} is a file, not a folder for the checkpoint")
    known = {"config.json", "model.safetensors"} | ({p.name for p in checkpoint.iterdir()} if checkpoint else set())
    other = sorted(p.name for p in export.iterdir() if p.name not in known)
    if other:
        raise ConfigError(f"--export {export} holds files that are not a checkpoint's ({', '.join(other[:5])}"
                          f"{', ...' if len(other) > 5 else ''}); choose a new or empty folder")


def promote(tracking: Tracking, run_id: str, export_dir: str | Path | None = None,
            model_name: str = MODEL_NAME, replace_better: bool = False) -> Promotion:
    """Log ``runs:<run_id>/checkpoint`` as an MLflow model into that run, register it as a new
    version of ``model_name`` aliased ``champion`` (or reuse the run's version), and export the
    checkpoint directory. Raises ``ChampionIsBetter`` (see the module docstring), and
    ConfigError for a bad ``model_name`` or an ``export_dir`` that holds other files."""
    check_name(model_name, "--model-name")
    export = Path(export_dir) if export_dir else None
    if export is not None:
        _check_export(export)
    client = tracking.client()
    run = client.get_run(run_id)
    if not any(f.path == CHECKPOINT_ARTIFACT for f in client.list_artifacts(run_id)):
        if CHECKPOINT_REMOVED_TAG in run.data.tags:
            raise LookupError(f"run {run_id} has no checkpoint any more: it was removed "
                              f"{run.data.tags[CHECKPOINT_REMOVED_TAG]}")
        raise LookupError(f"run {run_id} has no '{CHECKPOINT_ARTIFACT}' artifact (did its training end?)")
    if client.search_registered_models(f"name = '{model_name}'") == []:
        client.create_registered_model(model_name,
                                       description="SCD-MMPSR MCDM: pyfunc models over safetensors checkpoints")
    better = _better_champion(client, model_name, run_id)
    if better and not replace_better:
        raise ChampionIsBetter(f"not promoted: {better}; pass --replace-better-champion to replace it anyway")
    registered = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    mlflow.set_tracking_uri(tracking.uri)
    tags = {k: v for k, v in run.data.tags.items() if k in ("sweep", "trial_id", "git_commit", "manifest_hash")}
    with tempfile.TemporaryDirectory(prefix="scd-promote-") as tmp:
        checkpoint = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT, dst_path=tmp)
        if registered:  # promoted before: the same version becomes the champion again
            version = max(registered, key=lambda v: int(v.version))
        else:
            mlflow.start_run(run_id=run_id)
            try:
                logged = log_mlflow_model(checkpoint)
            finally:
                mlflow.end_run(run.info.status)  # the trial's status stays what it was
            version = mlflow.register_model(logged.model_uri, model_name, tags=tags)
        client.set_registered_model_alias(model_name, ALIAS, version.version)
        export = export or Path(f"runs/promoted/{model_name}-v{version.version}")
        _check_export(export, Path(checkpoint))
        write_atomic_dir(export, lambda folder: shutil.copytree(checkpoint, folder, dirs_exist_ok=True))
    return Promotion(model_name, version.version, run_id, export, reused=bool(registered), replaced=better)


def fetch_model(uri: str, tracking: Tracking) -> Path:
    """Download a ``models:/name@alias`` (or ``models:/name/version``); returns its checkpoint directory."""
    mlflow.set_tracking_uri(tracking.uri)
    return checkpoint_dir(mlflow.artifacts.download_artifacts(uri, dst_path=tempfile.mkdtemp(prefix="scd-model-")))
