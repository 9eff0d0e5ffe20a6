"""A sweep's report: the paper's tables and the sweep-level figures, from MLflow.

    python -m dashboards.report [--sweep NAME] [--out DIR] [--top-k 3] [--tracking-uri URI]

``publish_report`` (called at the end of every sweep) stores under the parent run's
``report/`` artifacts, each table as CSV + Markdown + HTML:

* ``ablation``: one row per trial (its variant name or the values it varied), the dev
  metrics of its best epoch and the mean rank over the selection metrics (paper Table 1
  layout; MELD and the metrics reported beside the paper's are shown, never ranked);
* ``comparison``: the ``top_k`` trials by mean rank evaluated on the test splits, every
  metric with its percentile-bootstrap 95% interval, beside the trivial baselines (paper
  Table 2 layout);
* ``cost``: parameters, MB and seconds per epoch of every trial (paper Table 17);
* ``param_importance.png`` and ``parallel_coordinates.png``: an Optuna study rebuilt from
  the finished trials (any strategy: grid and OAT sweeps too), so that Optuna's fANOVA
  importance and its plots describe the sweep.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import matplotlib
import optuna
import torch
import yaml
from mlflow.entities import Run

from scd_core.tables import Table
from scd_core.baselines import trivial_baselines
from scd_core.checkpoint import load_model
from scd_core.cli import USER_ERRORS, add_debug_flag, explained, int_at_least
from dashboards.figures import parallel_coordinates_figure
from scd_core.evaluation import REPORTED_METRICS, TASK_METRICS, interval_report, selection_metrics
from scd_core.features import Manifest
from scd_core.data import load_eval_splits
from tuning.leaderboard import build_leaderboard, find_sweep, varied_parameters
from tuning.spaces import VARIANT, SearchSpace, SpaceError
from tuning.tracking import CHECKPOINT_ARTIFACT, CHILD, Tracking, TrackingUnavailable, sweep_parent, sweep_runs

SPACE_ARTIFACT = "space.yaml"


def _short(tag: str) -> str:
    """A parameter value as a row label shows it: floats to 4 significant digits."""
    try:
        value = yaml.safe_load(tag)
    except yaml.YAMLError:  # not a number, whatever it is
        return tag
    return f"{value:.4g}" if isinstance(value, float) else tag


def trial_label(run: Run, varied: list[str]) -> str:
    """How a trial is named in tables: its variant, else the values it varied (rounded), else its name."""
    tags = run.data.tags
    if "variant" in tags:
        return tags["variant"]
    values = [f"{k.rsplit('.', 1)[-1]}={_short(tags[f'override.{k}'])}" for k in varied if f"override.{k}" in tags]
    return ", ".join(values) or tags.get("mlflow.runName", run.info.run_id[:8])


def ablation_table(board: Table) -> Table:
    """Paper Table 1 layout: trials by mean rank, their dev metrics (best epoch)."""
    varied = varied_parameters(board)
    metrics = [m for m in REPORTED_METRICS if m in board.columns]
    ranked = [m for m in selection_metrics() if m in metrics]
    rows = [{"trial": r.get("label", r["trial"]), **{k: r.get(k) for k in varied}, **{m: r.get(m) for m in metrics},
             "mean_rank": r.get("mean_rank")} for r in board.rows if r.get("mean_rank") is not None]
    return Table(f"Ablations: {board.title}", ["trial", *varied, *metrics, "mean_rank"], rows,
                 [f"Dev metrics of each trial's best epoch; mean rank (1 = best) as the paper's Table 1, over "
                  f"{', '.join(ranked)} (in-domain, trained tasks; MELD is reported, never ranked). mosei_mmf1 is "
                  "the paper's (macro F1 over present/absent), mosei_mf1_present the F1 of 'present' alone; "
                  "fiv2_mccc is per trait, fiv2_mccc_pooled pools the traits as the authors' code (the paper's "
                  "tables) does."])


def cost_table(tracking: Tracking, runs: list[Run], labels: dict[str, str]) -> Table:
    """Paper Table 17: parameters, size and mean seconds per training epoch of every trial."""
    client = tracking.client()
    rows = []
    for run in runs:
        m = run.data.metrics
        seconds = [x.value for x in client.get_metric_history(run.info.run_id, "epoch_seconds")]
        rows.append({
            "trial": labels[run.info.run_id],
            "graph": run.data.params.get("model.graph"),
            "attention": run.data.params.get("model.attention"),
            "parameters": int(m["model/parameters"]) if "model/parameters" in m else None,
            "size_mb": m.get("model/size_mb"),
            "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
            "epochs": len(seconds),
            "device": run.data.tags.get("device", run.data.params.get("device")),  # the one used, not "auto"
        })
    rows.sort(key=lambda r: r["parameters"] or 0)
    return Table("Computational cost (paper Table 17)", list(rows[0]) if rows else ["trial"], rows,
                 ["Seconds per epoch are the mean over the epochs each trial ran, on the machine that ran it, "
                  "while other trials shared it."], digits=3)


def _interval_cell(row: dict[str, Any]) -> str:
    return f"{row['value']:.3f} [{row['low']:.3f}, {row['high']:.3f}]" if math.isfinite(row["value"]) else "n/a"


def comparison_table(tracking: Tracking, board: Table, features: str | Path, top_k: int, n_resamples: int = 1000,
                     seed: int = 0) -> Table:
    """Paper Table 2 layout: the best ``top_k`` trials on the test splits, with 95% intervals.

    Each trial's best checkpoint (the ``checkpoint`` artifact of its run) is evaluated on the
    test split of every corpus it predicts (MELD zero-shot included), from the feature store
    it trained on (its config's ``data.features``, else ``features``); the trivial baselines
    are fitted on the training splits of ``features`` (the sweep's store).
    """
    client = tracking.client()
    ranked = sorted((r for r in board.rows if r.get("mean_rank") is not None), key=lambda r: r["mean_rank"])
    rows, modalities, gone = [], None, []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in ranked[:top_k]:
            if not any(a.path == CHECKPOINT_ARTIFACT for a in client.list_artifacts(entry["run_id"])):
                gone.append(entry.get("label", entry["trial"]))  # removed by python -m tuning.cleanup
                continue
            path = client.download_artifacts(entry["run_id"], CHECKPOINT_ARTIFACT, tmp)
            model, spec = load_model(path)
            modalities = spec.config.data.modalities
            store = spec.config.data.features or features
            splits = load_eval_splits(spec.config, store, "test", torch.device("cpu"), spec.modality_dims)
            cells = {f"{r['corpus']}_{r['metric']}": _interval_cell(r)
                     for r in interval_report(model, splits, n_resamples, seed)}
            rows.append({"model": entry.get("label", entry["trial"]), "mean_rank (dev)": entry["mean_rank"], **cells})
    corpora = Manifest.read(Path(features)).corpora
    base, _ = trivial_baselines(features, modalities or [], {c: "test" for c in corpora if "test" in corpora[c]},
                                n_resamples, seed) if modalities else ({}, {})
    if base:
        rows.append({"model": "majority class / mean trait", **{k: _interval_cell(v) for k, v in base.items()}})
    present = [m for m in REPORTED_METRICS if any(m in r for r in rows)]
    return Table("Test-set comparison with bootstrap 95% intervals (paper Table 2 layout)",
                 ["model", "mean_rank (dev)", *present], rows,
                 [f"Test splits of each trial's own feature store (baselines: {features}); percentile bootstrap "
                  f"over rows, {n_resamples} resamples, seed {seed}."]
                 + ([f"Not evaluated, their checkpoint was removed (python -m tuning.cleanup): {', '.join(gone)}."]
                    if gone else []))


def study_from_runs(runs: list[Run], space: SearchSpace) -> optuna.Study:
    """An Optuna study holding every finished trial: its values of the space's dimensions
    (from the trial's ``override.*`` / ``variant`` tags) and its best dev score."""
    D = optuna.distributions
    distributions: dict[str, D.BaseDistribution] = {}
    tag_of: dict[str, str] = {}
    for name, p in space.parameters.items():
        if p.values:
            distributions[name] = D.CategoricalDistribution([_choice(v) for v in p.values])
        elif p.distribution == "randint":
            distributions[name] = D.IntDistribution(int(p.low), int(p.high) - 1)
        else:
            distributions[name] = D.FloatDistribution(p.low, p.high, log=p.distribution == "loguniform")
        tag_of[name] = f"override.{p.targets[0]}"
    variants = sorted({r.data.tags[VARIANT] for r in runs if VARIANT in r.data.tags})
    if variants:
        distributions[VARIANT] = D.CategoricalDistribution(variants)
        tag_of[VARIANT] = VARIANT
    study = optuna.create_study(direction="maximize", study_name=space.name)
    for run in runs:
        score = run.data.metrics.get("best/dev_score")
        if run.info.status != "FINISHED" or score is None or not math.isfinite(score):
            continue
        params = {}
        for name, dist in distributions.items():
            if tag_of[name] not in run.data.tags:
                continue
            tag = run.data.tags[tag_of[name]]
            value = tag if name == VARIANT else yaml.safe_load(tag)
            if isinstance(dist, D.CategoricalDistribution):
                value = _choice(value)
                if value in dist.choices:
                    params[name] = value
            elif isinstance(value, (int, float)) and dist.low <= value <= dist.high:
                params[name] = value
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params}, value=score))
    return study


def _choice(value: Any) -> Any:
    """Optuna's categorical choices are scalars: lists (e.g. modality sets) become strings."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


OBJECTIVE = "best dev score"  # what every trial is scored by (its best epoch's dev_score)


def objective_definition(runs: list[Run]) -> str:
    """What the sweep's score averages, named by the metrics the trials have."""
    groups = [[m for m in TASK_METRICS[task] if any(f"best/{m}" in r.data.metrics for r in runs)]
              for task in TASK_METRICS]
    return f"{OBJECTIVE} = mean over tasks of " + ", ".join(f"({' + '.join(g)}) / {len(g)}" for g in groups if g)


def sweep_figures(study: optuna.Study, definition: str = "") -> tuple[dict[str, Any], list[str]]:
    """Parameter importance (Optuna's fANOVA plot) and the parallel coordinates of the trials
    (:func:`dashboards.figures.parallel_coordinates_figure`); returns (file -> figure, why any is
    missing). Optuna draws on pyplot figures: :func:`write_report` saves and closes them."""
    from optuna.visualization import matplotlib as ovm

    figures, missing = {}, []
    complete = [t for t in study.trials if t.params]
    varied = sorted({k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1})
    if len(complete) < 2 or not varied:
        return {}, [f"no sweep figures: {len(complete)} finished trial(s), {len(varied)} varied parameter(s)"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            with matplotlib.rc_context():  # Optuna switches pyplot to its ggplot style: not beyond this plot
                ax = ovm.plot_param_importances(study, params=varied, target_name=OBJECTIVE)
            ax.figure.set_size_inches(10, 5)
            ax.figure.tight_layout()  # Optuna's layout clips long parameter names
            figures["param_importance.png"] = ax.figure
        except (ValueError, RuntimeError) as err:  # e.g. fANOVA on too few distinct trials
            missing.append(f"no param_importance.png: {err}")
    log = {name for t in complete for name, dist in t.distributions.items()
           if isinstance(dist, optuna.distributions.FloatDistribution) and dist.log}
    figures["parallel_coordinates.png"] = parallel_coordinates_figure(
        [t.params for t in complete], [t.value for t in complete], varied, OBJECTIVE, sorted(log),
        f"{study.study_name}: {len(complete)} trials", definition)
    return figures, missing


def build_report(tracking: Tracking, sweep: str, space: SearchSpace, features: str | Path, top_k: int = 3,
                 n_resamples: int = 1000) -> tuple[dict[str, Table], dict[str, Any], list[str]]:
    """(name -> table, file -> figure, notes) for the sweep."""
    board = build_leaderboard(tracking, sweep)
    runs = sweep_runs(tracking, sweep, CHILD)
    varied = varied_parameters(board)
    labels = {r.info.run_id: trial_label(r, varied) for r in runs}
    for row in board.rows:
        row["label"] = labels.get(row["run_id"], row["trial"])
    tables = {"leaderboard": board, "ablation": ablation_table(board), "cost": cost_table(tracking, runs, labels)}
    if top_k > 0 and any(r.get("mean_rank") is not None for r in board.rows):
        tables["comparison"] = comparison_table(tracking, board, features, top_k, n_resamples)
    figures, notes = sweep_figures(study_from_runs(runs, space), objective_definition(runs))
    return tables, figures, notes


def write_report(tables: dict[str, Table], figures: dict[str, Any], notes: list[str], out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.write(out, name)
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110)
    if figures:
        import matplotlib.pyplot as plt

        plt.close("all")
    summary = "\n".join([*(t.to_markdown() for t in tables.values()), *(f"- {n}" for n in notes)])
    (out / "report.md").write_text(summary + "\n")
    return out


def publish_report(tracking: Tracking, sweep: str, space: SearchSpace, features: str | Path, top_k: int = 3) -> None:
    """Build the report and store it with the sweep's parent run (``report/``)."""
    parent = sweep_parent(tracking, sweep)
    if parent is None:
        raise LookupError(f"no parent run for sweep {sweep!r} in {tracking.uri}")
    client = tracking.client()
    tables, figures, notes = build_report(tracking, sweep, space, features, top_k)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / SPACE_ARTIFACT).write_text(yaml.safe_dump(space.to_dict(), sort_keys=False))
        write_report(tables, figures, notes, Path(tmp) / "report")
        client.log_artifacts(parent.info.run_id, tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", help="sweep name (default: the latest)")
    parser.add_argument("--out", default="reports", help="folder for the tables and figures (default: ./reports/SWEEP)")
    parser.add_argument("--top-k", type=int_at_least(0), default=3, help="trials in the test-set comparison")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the local store")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    # LookupError: no such sweep, or none at all.
    return explained(lambda: run(args), args.debug, (*USER_ERRORS, LookupError, SpaceError, TrackingUnavailable))


def run(args: argparse.Namespace) -> int:
    tracking = Tracking.resolve(args.tracking_uri)
    tracking.check_reachable()
    sweep = find_sweep(tracking, args.sweep)
    parent = sweep_parent(tracking, sweep)
    client = tracking.client()
    with tempfile.TemporaryDirectory() as tmp:
        space = SearchSpace.from_dict(yaml.safe_load(Path(client.download_artifacts(
            parent.info.run_id, SPACE_ARTIFACT, tmp)).read_text()), f"{sweep}/{SPACE_ARTIFACT}")
    tables, figures, notes = build_report(tracking, sweep, space, parent.data.tags["features"], args.top_k)
    out = write_report(tables, figures, notes, Path(args.out) / sweep)
    print((out / "report.md").read_text())
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
