"""Sweep leaderboards from MLflow: the paper's mean rank over the selection metrics.

(Shown by ``python -m dashboards.leaderboard``.)

Each trial is scored by its best dev epoch (``best/<metric>`` in its run). The table shows
every reported metric (``scd_core.evaluation.REPORTED_METRICS``); the mean rank (paper
Table 1, Friedman-style: rank per metric over the finished trials, ties averaged, averaged
over metrics; 1 is best) ranks only on the selection metrics the sweep's trials have
(``scd_core.evaluation.selection_metrics``: in-domain dev metrics of the trained tasks, so
MELD never moves a rank). It is computed over the trials that finished, written to
each of their runs as ``mean_rank``, and the table is stored with the sweep's parent run
(``leaderboard/leaderboard.csv``, ``.md`` and ``.html``). The MLflow UI also gets a shared
view of the sweep (:func:`leaderboard_view`): its trial runs sorted by mean rank, with
``mean_rank``, the best dev score and the varied parameters as columns.
"""

from __future__ import annotations

import json
import re
import tempfile
import time

import numpy as np

from scd_core.config import ConfigError
from scd_core.tables import Table
from scd_core.evaluation import REPORTED_METRICS, selection_metrics
from scd_core.metrics import mean_rank
from tuning.tracking import CHILD, PARENT, Tracking, sweep_filter, sweep_parent, sweep_runs


SORT_KEYS = ("mean_rank", "dev_score", *REPORTED_METRICS)  # what a leaderboard can be sorted --by


def _recent_sweeps(tracking: Tracking, count: int) -> list[str]:
    client = tracking.client()
    runs = client.search_runs([tracking.experiment_id(client)], f"tags.role = '{PARENT}'",
                              order_by=["attributes.start_time DESC"], max_results=count)
    return [r.data.tags["sweep"] for r in runs]


def latest_sweep(tracking: Tracking) -> str:
    found = _recent_sweeps(tracking, 1)
    if not found:
        raise LookupError(f"no sweep in {tracking.uri} (experiment {tracking.experiment})")
    return found[0]


def find_sweep(tracking: Tracking, sweep: str | None) -> str:
    """``sweep`` if the store holds it (None: the latest sweep), else LookupError naming the
    store's most recent sweeps."""
    if sweep is None:
        return latest_sweep(tracking)
    if sweep_parent(tracking, sweep) is None:
        recent = _recent_sweeps(tracking, 10)
        raise LookupError(f"no sweep {sweep!r} in {tracking.uri} (experiment {tracking.experiment}); "
                          + (f"its latest: {', '.join(recent)}" if recent else "it holds no sweep"))
    return sweep


def build_leaderboard(tracking: Tracking, sweep: str, by: str = "mean_rank") -> Table:
    """The sweep's trials with their varied parameters, best dev metrics and mean rank.

    A trial missing a ranked metric that others have (e.g. it did not train that task)
    ranks last on it. ``by``: one of SORT_KEYS (ConfigError otherwise).
    """
    if by not in SORT_KEYS:
        raise ConfigError(f"--by {by!r}: sort by {', '.join(SORT_KEYS)}")
    runs = sweep_runs(tracking, sweep, CHILD)
    overrides = [{k.removeprefix("override."): v for k, v in r.data.tags.items() if k.startswith("override.")}
                 for r in runs]
    keys = sorted({k for o in overrides for k in o})
    varied = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    metrics = [m for m in REPORTED_METRICS if any(f"best/{m}" in r.data.metrics for r in runs)]
    ranked = [m for m in selection_metrics() if m in metrics]
    rows = []
    for run, params in zip(runs, overrides):
        m = run.data.metrics
        rows.append({
            "trial": run.data.tags.get("mlflow.runName", run.info.run_id[:8]),
            "status": run.info.status,
            **{k: params.get(k) for k in varied},
            **{name: m.get(f"best/{name}") for name in metrics},
            "dev_score": m.get("best/dev_score"),
            "run_id": run.info.run_id,
        })
    finished = [r for r in rows if r["status"] == "FINISHED" and r["dev_score"] is not None]
    if finished:
        scores = np.array([[np.nan if r[c] is None else r[c] for c in ranked] for r in finished], dtype=float)
        for row, rank in zip(finished, np.atleast_1d(mean_rank(scores))):
            row["mean_rank"] = float(rank)
    descending = by != "mean_rank"
    rows.sort(key=lambda r: (r.get(by) is None, -(r.get(by) or 0) if descending else (r.get(by) or 0)))
    columns = ["trial", "status", *varied, *metrics, "dev_score", "mean_rank", "run_id"]
    return Table(f"Sweep {sweep}", columns, rows)


def varied_parameters(board: Table) -> list[str]:
    """The leaderboard's columns that are parameters the sweep varied (config keys)."""
    return [c for c in board.columns if c not in ("trial", "status", "dev_score", "mean_rank", "run_id", *REPORTED_METRICS)]


def view_key(sweep: str) -> str:
    """The sweep's shared-view key in the MLflow UI (``?viewStateShareKey=...``)."""
    return "sweep-" + re.sub(r"[^A-Za-z0-9_.-]", "-", sweep)


def view_path(experiment_id: str, sweep: str) -> str:
    """Where the UI shows the sweep's leaderboard view, relative to the server's address."""
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={view_key(sweep)}"


def leaderboard_view(tracking: Tracking, sweep: str, board: Table) -> str:
    """Store the MLflow UI view of the leaderboard as an experiment tag; returns its URL path.

    The tag is the UI's own "shared view" (``mlflow.sharedViewState.<key>``, a JSON run-table
    state), so any MLflow server over this store shows it at the returned path.
    """
    varied = varied_parameters(board)
    state = {
        "searchFilter": sweep_filter(sweep, CHILD),
        "orderByKey": "metrics.`mean_rank`",
        "orderByAsc": True,
        # The run table only renders the columns in view: the metrics stay one click
        # away ("Columns") so that the rank and the score are always visible.
        "selectedColumns": ["metrics.`mean_rank`", "metrics.`best/dev_score`", *(f"params.`{k}`" for k in varied)],
    }
    client = tracking.client()
    experiment_id = tracking.experiment_id(client)
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{view_key(sweep)}", json.dumps(state))
    return view_path(experiment_id, sweep)


def publish_leaderboard(tracking: Tracking, sweep: str) -> Table:
    """Write ``mean_rank`` to every finished trial's run, the table to the parent run, and
    the leaderboard view to the MLflow UI."""
    board = build_leaderboard(tracking, sweep)
    leaderboard_view(tracking, sweep, board)
    client = tracking.client()
    now = int(time.time() * 1000)
    for row in board.rows:
        if row.get("mean_rank") is not None:
            client.log_metric(row["run_id"], "mean_rank", row["mean_rank"], timestamp=now)
    parent = sweep_parent(tracking, sweep)
    if parent is not None:
        with tempfile.TemporaryDirectory() as tmp:
            board.write(tmp, "leaderboard")
            client.log_artifacts(parent.info.run_id, tmp, "leaderboard")
    return board
