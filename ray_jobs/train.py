"""Train one MCDM configuration with the semi-supervised cross-domain protocol.

    python ray_jobs/train.py [--features ROOT] [--config YAML] [--output DIR] [--tracking-uri URI | --no-tracking]
                             [key=value ...]

Without ``--features`` it trains on the synthetic demo corpora (generated once into
``features/demo``). Prints one row per epoch and saves ``OUTPUT/best`` (the best dev
epoch) and ``OUTPUT/last`` (resumable with ``--resume``). An OUTPUT that already holds
files is never replaced silently: pass ``--resume`` to continue it or ``--overwrite``.

Every training is an MLflow run (role ``train``, named after OUTPUT) with what a sweep's trial
logs, through the same functions (``tuning.tracking``): the config as params, each epoch's
metrics, the store's hash and the device as tags, and at the end the best checkpoint
(``checkpoint/``, promotable with ``promote.py --run-id``) and the trial figures
(``figures/``). ``--resume`` continues the same run (its id is kept in ``OUTPUT/mlflow_run.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from dashboards.trial_figures import checkpoint_figures
from scd_core.cli import USER_ERRORS, add_debug_flag, explained, int_at_least
from scd_core.config import ConfigError, load_config
from scd_core.data import load_training_data, resolve_device
from scd_core.progress import EpochTable
from scd_core.synthetic import ensure_store
from scd_core.trainer import EpochReport, NonFiniteLossError, Trainer
from tuning.tracking import (TrackedRun, Tracking, TrackingUnavailable, git_commit, log_epoch, log_outputs,
                             package_versions, training_tags)

RUN_FILE = "mlflow_run.json"  # in OUTPUT: the training's MLflow run, continued by --resume


def refuse_to_overwrite(output: Path) -> None:
    """A second run into a used OUTPUT would replace its ``best`` and ``last``: say so instead."""
    if output.is_dir() and any(output.iterdir()):
        raise ConfigError(f"--output {output} already holds a run ({', '.join(sorted(p.name for p in output.iterdir()))});"
                          " pass --resume to continue it, --overwrite to replace it, or choose another --output")


def tracked_run(tracking: Tracking, output: Path, resume: bool, tags: dict[str, str]) -> TrackedRun:
    """The training's MLflow run: with ``--resume`` the one OUTPUT recorded (same tracking store),
    else a new one, recorded in OUTPUT."""
    record = output / RUN_FILE
    previous = json.loads(record.read_text()) if resume and record.exists() else {}
    same_store = previous.get("tracking_uri") == tracking.uri
    run = TrackedRun.training(tracking, f"train-{output.resolve().name}", tags,
                              previous.get("run_id") if same_store else None)
    output.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"tracking_uri": tracking.uri, "run_id": run.run_id}, indent=1) + "\n")
    return run


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file, not a folder for the run's checkpoints")
    if not (args.resume or args.overwrite):
        refuse_to_overwrite(output)
    tracking = None if args.no_tracking else Tracking.resolve(args.tracking_uri)
    if tracking is not None:
        tracking.check_reachable()  # before any work: a dead server is one line, not a lost training
    root = args.features or cfg.data.features or ensure_store("features/demo")
    device = resolve_device(cfg.device)
    data = load_training_data(cfg, root, device)
    print(f"training on {root} ({len(data.train)} rows from {', '.join(data.train.corpora)}) on {device}"
          + (f" with {args.threads} torch thread{'s' if args.threads > 1 else ''}" if device.type == "cpu" else ""))
    trainer = Trainer(cfg, data, output)
    if args.resume and not (output / "last" / "state.json").exists():
        print(f"nothing to resume in {output} (no last/state.json): a new run starts")
    table = EpochTable()
    if tracking is None:
        result = trainer.fit(on_epoch=table, resume=args.resume)
    else:
        tracked = tracked_run(tracking, output, args.resume, {
            "git_commit": git_commit(), **package_versions(), **training_tags(data, device),
            "features": str(Path(root).resolve()), "output": str(output.resolve())})
        try:
            tracked.log_params(cfg.to_dict())
            tracked.log_model_size(trainer.model)

            def on_epoch(report: EpochReport) -> None:
                table(report)
                log_epoch(tracked, report)

            result = trainer.fit(on_epoch=on_epoch, resume=args.resume)
            log_outputs(tracked, output / "best", checkpoint_figures, data.dev, [asdict(r) for r in trainer.history],
                        f"({output.name})")
        except BaseException as err:  # the run says why it stopped (Ctrl-C: KILLED; --resume continues it)
            tracked.fail(err, "FAILED" if isinstance(err, Exception) else "KILLED")
            raise
        tracked.finish()
    print(f"\nbest dev score {result.best_score:.4f} at epoch {result.best_epoch}: {output}/best")
    if tracking is not None:
        print(f"tracked as MLflow run {tracked.run_id} in {tracking.uri} (metrics, figures/, checkpoint/)")
        print(f"promote it:  python ray_jobs/promote.py --run-id {tracked.run_id} --tracking-uri {tracking.uri}")
    print(f"evaluate it: python ray_jobs/evaluate.py --checkpoint {output}/best --features {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", help="feature-store root (default: synthetic demo corpora)")
    parser.add_argument("--config", help="experiment YAML")
    parser.add_argument("--output", default="runs/train", help="checkpoint directory (default: runs/train)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUTPUT/last")
    again.add_argument("--overwrite", action="store_true", help="replace the run already in OUTPUT")
    parser.add_argument("--threads", type=int_at_least(1), default=1,
                        help="torch CPU threads (default 1: a batch of 32 gains little from more, and more threads "
                             "than free cores slow every step down; Ray trials also run with 1 per CPU)")
    tracked = parser.add_mutually_exclusive_group()
    tracked.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the local "
                                                "store, ./mlflow.db)")
    tracked.add_argument("--no-tracking", action="store_true", help="do not record the training in MLflow")
    add_debug_flag(parser)
    parser.add_argument("overrides", nargs="*", help="section.field=value, e.g. model.graph=gat optim.epochs=5")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return explained(lambda: run(args), args.debug, (*USER_ERRORS, NonFiniteLossError, TrackingUnavailable))
    finally:
        torch.set_num_threads(threads)  # main() may run inside another process (the tests)


if __name__ == "__main__":
    sys.exit(main())
