"""MLflow tracking of sweeps: one parent run per sweep, one child run per trial.

Runs are found again by tags (``sweep``, ``role``, ``trial_id``), so a resumed sweep or a
retried trial continues its own run instead of creating a duplicate. The embedded
default is a SQLite store with artifacts next to it under the platform's home folder
(``tracking_home``), never in a temporary Ray directory.
"""

from __future__ import annotations

import math
import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from scd_core.config import flatten

EXPERIMENT = "scd-mmpsr"
PARENT, CHILD = "sweep", "trial"
# MLflow 3's UI opens an experiment on its GenAI overview unless it is told it holds
# model-training runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def tracking_home() -> Path:
    """Where embedded stores live: ``$SCD_HOME``, else the working directory.

    ``ray job submit --working-dir`` runs the driver inside a temporary copy of the
    project; there the home is ``~/scd-mmpsr`` unless ``SCD_HOME`` says otherwise.
    """
    if "SCD_HOME" in os.environ:
        return Path(os.environ["SCD_HOME"]).resolve()
    cwd = Path.cwd().resolve()
    return Path.home() / "scd-mmpsr" if "runtime_resources" in cwd.parts else cwd


class TrackingUnavailable(ConnectionError):
    """The MLflow tracking server does not answer; the message names its URI."""


@dataclass(frozen=True)
class Tracking:
    """Where runs go: a tracking URI, the experiment, and (local stores) the artifact root."""

    uri: str
    experiment: str = EXPERIMENT
    artifact_location: str | None = None

    @classmethod
    def resolve(cls, uri: str | None = None, experiment: str = EXPERIMENT) -> "Tracking":
        """``uri``, else $MLFLOW_TRACKING_URI, else a SQLite store in ``tracking_home()``."""
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri:
            # A SQLite store keeps its artifacts beside the database file; a server decides itself.
            db = Path(uri.removeprefix("sqlite:///")).resolve() if uri.startswith("sqlite:///") else None
            return cls(uri, experiment, str(db.parent / "mlartifacts") if db else None)
        home = tracking_home()
        home.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{home / 'mlflow.db'}", experiment, str(home / "mlartifacts"))

    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def check_reachable(self, timeout_s: float = 5.0) -> None:
        """Fail in seconds if a tracking server does not answer (MLflow's own client retries
        for minutes). Local stores (sqlite, files) need no check."""
        if not self.uri.startswith(("http://", "https://")):
            return
        try:
            urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=timeout_s).close()
        except urllib.error.HTTPError:  # it answered (an error page still means a live server)
            return
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingUnavailable(f"MLflow tracking server {self.uri} does not answer ({reason}); start it, "
                                      "or pass another --tracking-uri") from None

    def experiment_id(self, client: MlflowClient | None = None) -> str:
        client = client or self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(self.experiment, artifact_location=self.artifact_location,
                                            tags=EXPERIMENT_KIND)
        except Exception:  # created meanwhile by another process
            return client.get_experiment_by_name(self.experiment).experiment_id


def _one_run(client: MlflowClient, experiment_id: str, query: str):
    runs = client.search_runs([experiment_id], query, max_results=2)
    return runs[0] if runs else None


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in ("scd-mmpsr", "torch", "torch-geometric", "ray", "optuna", "mlflow"):
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def sweep_filter(sweep: str, role: str, extra: str = "") -> str:
    """The MLflow search filter of a sweep's runs of one ``role`` (PARENT or CHILD), and ``extra``."""
    return f"tags.sweep = '{sweep}' and tags.role = '{role}'" + (f" and {extra}" if extra else "")


def sweep_runs(tracking: Tracking, sweep: str, role: str, extra: str = "", max_results: int = 10000) -> list[Any]:
    """The sweep's runs of one ``role`` (see :func:`sweep_filter`)."""
    client = tracking.client()
    return client.search_runs([tracking.experiment_id(client)], sweep_filter(sweep, role, extra),
                              max_results=max_results)


def parent_run(tracking: Tracking, sweep: str, tags: Mapping[str, str]) -> str:
    """The sweep's parent run id, created on first use."""
    client = tracking.client()
    exp = tracking.experiment_id(client)
    found = _one_run(client, exp, sweep_filter(sweep, PARENT))
    if found is not None:  # a resumed sweep: running again (it may have been marked FAILED)
        client.update_run(found.info.run_id, status="RUNNING")
        return found.info.run_id
    if not EXPERIMENT_KIND.keys() <= client.get_experiment(exp).tags.keys():  # a store from before the tag
        for key, value in EXPERIMENT_KIND.items():
            client.set_experiment_tag(exp, key, value)
    run = client.create_run(exp, run_name=sweep, tags={"sweep": sweep, "role": PARENT, **tags})
    return run.info.run_id


def child_run(tracking: Tracking, sweep: str, trial_id: str) -> Any:
    """The trial's existing run, or None."""
    client = tracking.client()
    return _one_run(client, tracking.experiment_id(client), sweep_filter(sweep, CHILD, f"tags.trial_id = '{trial_id}'"))


class TrialRun:
    """The MLflow child run of one trial; attaches to the existing run on retry or resume."""

    def __init__(self, tracking: Tracking, sweep: str, parent_id: str, trial_id: str, name: str,
                 tags: Mapping[str, str]) -> None:
        self.client = tracking.client()
        existing = child_run(tracking, sweep, trial_id)
        if existing is not None:
            self.run_id = existing.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                tracking.experiment_id(self.client), run_name=name,
                tags={"mlflow.parentRunId": parent_id, "sweep": sweep, "role": CHILD, "trial_id": trial_id, **tags},
            )
            self.run_id = run.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        logged = self.client.get_run(self.run_id).data.params
        fresh = [Param(k, str(v)) for k, v in flatten(params).items() if k not in logged]
        for start in range(0, len(fresh), 100):  # MLflow's batch limit on params
            self.client.log_batch(self.run_id, params=fresh[start:start + 100])

    def log_metrics(self, values: Mapping[str, float], step: int, timestamp_ms: int) -> None:
        metrics = [Metric(k, float(v), timestamp_ms, step) for k, v in values.items()
                   if v is not None and math.isfinite(float(v))]
        self.client.log_batch(self.run_id, metrics=metrics)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dir(self, local_dir: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
