"""Sweep leaderboards from MLflow: the paper's mean rank over the eight dev metrics.

(Shown by ``python -m dashboards.leaderboard``.)

Each trial is scored by its best dev epoch (``best/<metric>`` in its run). The mean rank
(paper Table 1, Friedman-style: rank per metric over the finished trials, ties averaged,
averaged over metrics; 1 is best) is computed over the trials that finished, written to
each of their runs as ``mean_rank``, and the table is stored with the sweep's parent run
(``leaderboard/leaderboard.csv`` and ``.html``) so the MLflow UI shows it.
"""

from __future__ import annotations

import csv
import html
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tabulate import tabulate

from scd_core.evaluation import METRICS
from scd_core.metrics import mean_rank
from tuning.tracking import CHILD, PARENT, Tracking


@dataclass
class Leaderboard:
    sweep: str
    columns: list[str]
    rows: list[dict]

    def to_text(self) -> str:
        def cell(v):
            return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))
        return tabulate([[cell(r.get(c)) for c in self.columns] for r in self.rows], headers=self.columns)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    def to_html(self) -> str:
        def cell(v):
            return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else html.escape(str(v)))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in self.columns) + "</tr>"
                       for r in self.rows)
        return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(self.sweep)}</title>"
                "<style>table{border-collapse:collapse;font-family:sans-serif}"
                "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style>"
                f"<h1>Sweep {html.escape(self.sweep)}</h1><table><tr>{head}</tr>{body}</table>")


def latest_sweep(tracking: Tracking) -> str:
    client = tracking.client()
    runs = client.search_runs([tracking.experiment_id(client)], f"tags.role = '{PARENT}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise LookupError(f"no sweep in {tracking.uri} (experiment {tracking.experiment})")
    return runs[0].data.tags["sweep"]


def _children(tracking: Tracking, sweep: str):
    client = tracking.client()
    return client.search_runs([tracking.experiment_id(client)],
                              f"tags.sweep = '{sweep}' and tags.role = '{CHILD}'", max_results=10000)


def build_leaderboard(tracking: Tracking, sweep: str, by: str = "mean_rank") -> Leaderboard:
    """The sweep's trials with their varied parameters, best dev metrics and mean rank."""
    runs = _children(tracking, sweep)
    overrides = [{k.removeprefix("override."): v for k, v in r.data.tags.items() if k.startswith("override.")}
                 for r in runs]
    keys = sorted({k for o in overrides for k in o})
    varied = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    metrics = [m for m in METRICS if any(f"best/{m}" in r.data.metrics for r in runs)]
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
        scores = np.array([[np.nan if r[c] is None else r[c] for c in metrics] for r in finished], dtype=float)
        for row, rank in zip(finished, np.atleast_1d(mean_rank(scores))):
            row["mean_rank"] = float(rank)
    descending = by != "mean_rank"
    rows.sort(key=lambda r: (r.get(by) is None, -(r.get(by) or 0) if descending else (r.get(by) or 0)))
    columns = ["trial", "status", *varied, *metrics, "dev_score", "mean_rank", "run_id"]
    return Leaderboard(sweep, columns, rows)


def publish_leaderboard(tracking: Tracking, sweep: str) -> Leaderboard:
    """Write ``mean_rank`` to every finished trial's run and the table to the parent run."""
    board = build_leaderboard(tracking, sweep)
    client = tracking.client()
    now = int(time.time() * 1000)
    for row in board.rows:
        if row.get("mean_rank") is not None:
            client.log_metric(row["run_id"], "mean_rank", row["mean_rank"], timestamp=now)
    parent = client.search_runs([tracking.experiment_id(client)],
                                f"tags.sweep = '{sweep}' and tags.role = '{PARENT}'", max_results=1)
    if parent:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "leaderboard.csv").write_text(board.to_csv())
            (Path(tmp) / "leaderboard.html").write_text(board.to_html())
            client.log_artifacts(parent[0].info.run_id, tmp, "leaderboard")
    return board
