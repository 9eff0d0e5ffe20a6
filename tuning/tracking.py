"""MLflow tracking of sweeps (one parent run per sweep, one child run per trial) and of single
trainings (``ray_jobs/train.py``: one run each, role ``train``).

Runs are found again by tags (``sweep``, ``role``, ``trial_id``), so a resumed sweep or a
retried trial continues its own run instead of creating a duplicate. A trial and a training
log the same things through the same functions (:func:`log_epoch`, :func:`training_tags`,
:meth:`TrackedRun.log_model_size`, :func:`log_outputs`). The embedded
default is a SQLite store with artifacts next to it under the platform's home folder
(``tracking_home``), never in a temporary Ray directory.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from scd_core.config import ConfigError, flatten
from scd_core.features import CorpusTensors
from scd_core.model import count_parameters, size_mb

if TYPE_CHECKING:
    from scd_core.data import TrainingData
    from scd_core.trainer import EpochReport

EXPERIMENT = "scd-mmpsr"
PARENT, CHILD, TRAIN = "sweep", "trial", "train"  # the ``role`` tag of each kind of run
CHECKPOINT_ARTIFACT, FIGURES_ARTIFACT = "checkpoint", "figures"  # a run's best model and its figures
RAY_STORAGE_TAG = "ray_storage"  # the sweep run's tag naming its Ray Tune folder (tuning.cleanup removes it)
CHECKPOINT_REMOVED_TAG = "checkpoint_removed"  # on a run whose checkpoint/ tuning.cleanup removed (says when)
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
    """The MLflow tracking store cannot serve (a server that does not answer, a file that is
    not a database); the message names its URI."""


# What a command that reads a registered model (models:/...) reports as the user's error: an
# unknown model or alias, a store that cannot serve.
TRACKING_ERRORS: tuple[type[BaseException], ...] = (MlflowException, TrackingUnavailable)
SQLITE_HEADER = b"SQLite format 3\x00"
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql", "databricks")  # MLflow's other stores: left to MLflow


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
        """Fail in seconds, naming the URI, if the store cannot serve: a tracking server that does
        not answer (MLflow's own client retries for minutes), a SQLite path that is not a
        database or cannot be created, a URI of no kind MLflow keeps runs in. Nothing is created."""
        scheme = self.uri.split("://", 1)[0] if "://" in self.uri else ""
        if scheme in ("http", "https"):
            self._check_server(timeout_s)
        elif scheme == "sqlite":
            self._check_sqlite(Path(self.uri.removeprefix("sqlite:///")))
        elif scheme not in DATABASE_SCHEMES:
            raise TrackingUnavailable(f"tracking URI {self.uri!r}: use sqlite:///PATH (a local store) or "
                                      f"http(s)://HOST:PORT (a tracking server)")

    def _check_server(self, timeout_s: float) -> None:
        try:
            urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=timeout_s).close()
        except urllib.error.HTTPError:  # it answered (an error page still means a live server)
            return
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingUnavailable(f"MLflow tracking server {self.uri} does not answer ({reason}); start it, "
                                      "or pass another --tracking-uri") from None

    def _check_sqlite(self, db: Path) -> None:
        if db.exists():
            try:
                with open(db, "rb") as handle:
                    header = handle.read(len(SQLITE_HEADER))
            except OSError as err:
                raise TrackingUnavailable(f"tracking store {self.uri}: cannot read {db}: {err}") from None
            if header and header != SQLITE_HEADER:  # an empty file is what sqlite creates first
                raise TrackingUnavailable(f"tracking store {self.uri}: {db} is not an SQLite database")
            return
        folder = next(p for p in db.absolute().parents if p.exists())
        if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
            raise TrackingUnavailable(f"tracking store {self.uri}: cannot create {db} ({folder} is not a writable "
                                      f"folder)")

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


# Names the platform writes into folder paths (a sweep's, under --storage-path, which
# tuning.cleanup removes) and into MLflow search filters (sweeps, registered models): one path
# component, no quotes.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(value: str, what: str) -> str:
    """``value`` if it is a valid sweep or model name, else ConfigError naming ``what`` (e.g. ``--name``)."""
    if not NAME.fullmatch(value):
        raise ConfigError(f"{what} {value!r}: use letters, digits, '.', '_' and '-', starting with a letter or "
                          f"digit, at most 100 characters")
    return value


def sweep_filter(sweep: str, role: str, extra: str = "") -> str:
    """The MLflow search filter of a sweep's runs of one ``role`` (PARENT or CHILD), and ``extra``."""
    check_name(sweep, "sweep name")
    return f"tags.sweep = '{sweep}' and tags.role = '{role}'" + (f" and {extra}" if extra else "")


def sweep_runs(tracking: Tracking, sweep: str, role: str, extra: str = "") -> list[Any]:
    """The sweep's runs of one ``role`` (see :func:`sweep_filter`), at most 10,000."""
    client = tracking.client()
    return client.search_runs([tracking.experiment_id(client)], sweep_filter(sweep, role, extra), max_results=10000)


def sweep_parent(tracking: Tracking, sweep: str) -> Any:
    """The sweep's parent run (its tags and status), or None when the store holds no such sweep."""
    client = tracking.client()
    return _one_run(client, tracking.experiment_id(client), sweep_filter(sweep, PARENT))


def parent_run(tracking: Tracking, sweep: str, tags: Mapping[str, str]) -> str:
    """The sweep's parent run id, created on first use."""
    client = tracking.client()
    exp = tracking.experiment_id(client)
    found = sweep_parent(tracking, sweep)
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


def device_name(device: torch.device) -> str:
    """The device a run trained on, as tables show it: ``cpu`` or ``cuda (NVIDIA H200)``."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def training_tags(data: "TrainingData", device: torch.device) -> dict[str, str]:
    """What a run trained on: the feature store's manifest hash and the device."""
    return {"manifest_hash": data.manifest_digest, "device": device_name(device)}


def epoch_metrics(report: "EpochReport") -> dict[str, float]:
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


def log_epoch(run: "TrackedRun", report: "EpochReport") -> dict[str, float]:
    """One epoch into ``run`` (and, on a best epoch, ``best/*``: what leaderboards and promotion
    read); returns the metrics logged."""
    metrics = epoch_metrics(report)
    if report.best:
        metrics.update({f"best/{k}": v for k, v in report.metrics.items()})
        metrics.update({"best/dev_score": report.score, "best/epoch": report.epoch})
    run.log_metrics(metrics, report.epoch, int(time.time() * 1000))
    return metrics


TrialFigures = Callable[[Path, Mapping[str, CorpusTensors], Sequence[Mapping], Path, str], object]
"""``(best_checkpoint, dev_splits, epoch_history, out_dir, title)``: draws a trial's figures into ``out_dir``."""


def log_outputs(run: "TrackedRun", best: Path, draw: TrialFigures | None, dev: Mapping[str, CorpusTensors],
                history: Sequence[Mapping], title: str) -> None:
    """A finished training's best model (``checkpoint/``: what promotion registers) and its
    figures (``figures/``, drawn by ``draw`` when given) into ``run``, once."""
    run.log_dir(best, CHECKPOINT_ARTIFACT)
    if draw is not None:
        log_figures(run, best, draw, dev, history, title)


def log_figures(run: "TrackedRun", best: Path, draw: TrialFigures, dev: Mapping[str, CorpusTensors],
                history: Sequence[Mapping], title: str) -> None:
    """The figures ``draw`` makes of the model in ``best``, into ``run``'s ``figures/``."""
    with tempfile.TemporaryDirectory(prefix="scd-figures-") as tmp:
        draw(best, dev, history, Path(tmp), title)
        run.log_dir(Path(tmp), FIGURES_ARTIFACT)


class TrackedRun:
    """An MLflow run that a training logs into."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    @classmethod
    def training(cls, tracking: Tracking, name: str, tags: Mapping[str, str],
                 run_id: str | None = None) -> "TrackedRun":
        """A ``train.py`` run (role ``train``): a new one, or ``run_id`` running again (``--resume``)."""
        client = tracking.client()
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
            return cls(client, run_id)
        run = client.create_run(tracking.experiment_id(client), run_name=name, tags={"role": TRAIN, **tags})
        return cls(client, run.info.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        logged = self.client.get_run(self.run_id).data.params
        fresh = [Param(k, str(v)) for k, v in flatten(params).items() if k not in logged]
        for start in range(0, len(fresh), 100):  # MLflow's batch limit on params
            self.client.log_batch(self.run_id, params=fresh[start:start + 100])

    def log_metrics(self, values: Mapping[str, float], step: int, timestamp_ms: int) -> None:
        metrics = [Metric(k, float(v), timestamp_ms, step) for k, v in values.items()
                   if v is not None and math.isfinite(float(v))]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_model_size(self, model: torch.nn.Module) -> None:
        """Parameters and MB (the cost table's columns)."""
        self.log_metrics({"model/parameters": count_parameters(model), "model/size_mb": size_mb(model)},
                         0, int(time.time() * 1000))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dir(self, local_dir: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)

    def fail(self, err: BaseException, status: str = "FAILED") -> None:
        """End the run with ``status``, its ``failure_reason`` tag saying why."""
        self.set_tags({"failure_reason": f"{type(err).__name__}: {err}"[:5000]})
        self.finish(status)


class TrialRun(TrackedRun):
    """The MLflow child run of one trial; attaches to the existing run on retry or resume."""

    def __init__(self, tracking: Tracking, sweep: str, parent_id: str, trial_id: str, name: str,
                 tags: Mapping[str, str]) -> None:
        client = tracking.client()
        existing = child_run(tracking, sweep, trial_id)
        if existing is not None:
            run_id = existing.info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            run = client.create_run(
                tracking.experiment_id(client), run_name=name,
                tags={"mlflow.parentRunId": parent_id, "sweep": sweep, "role": CHILD, "trial_id": trial_id, **tags},
            )
            run_id = run.info.run_id
        super().__init__(client, run_id)
