"""Free a finished sweep's disk: its Ray Tune folder and the checkpoints of its trials nobody promoted.

    python -m tuning.cleanup --sweep NAME [--tracking-uri URI] [--storage-path DIR]   # says what it would remove
    python -m tuning.cleanup --sweep NAME --delete                                   # removes it

Removed: the sweep's Ray Tune folder (trial results, the checkpoints of unfinished or failed
trials, the experiment state: after this ``--resume`` cannot continue the sweep), and the
``checkpoint/`` artifact of every trial run that is not a registered model version. Kept: every
run with its parameters, metrics, tags and figures; the sweep's report and leaderboard; the
checkpoint and MLflow model of every registered run, the champion's among them. A cleaned run
gets the tag ``checkpoint_removed`` (promotion and the report name it).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from scd_core.cli import USER_ERRORS, add_debug_flag, explained
from scd_core.config import ConfigError
from tuning.tracking import (CHECKPOINT_ARTIFACT, CHECKPOINT_REMOVED_TAG, CHILD, RAY_STORAGE_TAG, Tracking,
                             TrackingUnavailable, sweep_parent, sweep_runs, tracking_home)

@dataclass
class CleanupPlan:
    """What :func:`plan_cleanup` found: the folder and artifacts to remove, the runs kept, in bytes."""

    sweep: str
    ray_folder: Path | None  # None: already gone
    ray_bytes: int
    checkpoints: dict[str, int] = field(default_factory=dict)  # run id -> bytes of its checkpoint/
    kept: dict[str, str] = field(default_factory=dict)  # run id -> why (its registered versions)
    running: bool = False  # the sweep's run is RUNNING: a sweep in progress, or a killed driver's

    @property
    def total_bytes(self) -> int:
        return self.ray_bytes + sum(self.checkpoints.values())


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _artifact_bytes(client, run_id: str, path: str) -> int:
    total = 0
    for item in client.list_artifacts(run_id, path):
        total += _artifact_bytes(client, run_id, item.path) if item.is_dir else (item.file_size or 0)
    return total


def _check_ray_folder(folder: Path) -> None:
    """Only a Ray Tune experiment folder (or an empty one) is ever removed: a mistyped
    --storage-path must not name a folder of the user's that happens to have the sweep's name."""
    if not folder.is_dir():
        if folder.exists():
            raise ConfigError(f"{folder}: a file, not the sweep's Ray Tune folder; not removed (check --storage-path)")
        return
    if any(folder.iterdir()) and not ((folder / "tuner.pkl").exists() or any(folder.glob("experiment_state-*.json"))):
        raise ConfigError(f"{folder}: not a Ray Tune experiment folder (no tuner.pkl or experiment_state-*.json); "
                          f"not removed (check --storage-path)")


def plan_cleanup(tracking: Tracking, sweep: str, storage_path: str | Path | None = None) -> CleanupPlan:
    """What cleaning ``sweep`` would remove. Its Ray folder is the one its run recorded, else
    ``storage_path/sweep``, else the default ``ray_results/sweep``."""
    parent = sweep_parent(tracking, sweep)
    if parent is None:
        raise LookupError(f"no sweep {sweep!r} in {tracking.uri} (experiment {tracking.experiment})")
    recorded = parent.data.tags.get(RAY_STORAGE_TAG)
    folder = Path(storage_path, sweep) if storage_path else Path(recorded) if recorded else \
        tracking_home() / "ray_results" / sweep
    _check_ray_folder(folder)
    plan = CleanupPlan(sweep, folder if folder.exists() else None, _folder_bytes(folder) if folder.exists() else 0,
                       running=parent.info.status == "RUNNING")
    client = tracking.client()
    for run in sweep_runs(tracking, sweep, CHILD):
        run_id = run.info.run_id
        # search results leave the aliases out: each version is read again for them
        versions = [client.get_model_version(v.name, v.version)
                    for v in client.search_model_versions(f"run_id = '{run_id}'")]
        if versions:
            plan.kept[run_id] = ", ".join(f"{v.name} version {v.version}" + (f" ({', '.join(v.aliases)})"
                                                                            if v.aliases else "") for v in versions)
        elif any(a.path == CHECKPOINT_ARTIFACT for a in client.list_artifacts(run_id)):
            plan.checkpoints[run_id] = _artifact_bytes(client, run_id, CHECKPOINT_ARTIFACT)
    return plan


def apply_cleanup(tracking: Tracking, plan: CleanupPlan) -> None:
    """Remove what ``plan`` lists (see the module docstring)."""
    client = tracking.client()
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    for run_id in plan.checkpoints:
        run = client.get_run(run_id)
        get_artifact_repository(run.info.artifact_uri, tracking_uri=tracking.uri).delete_artifacts(CHECKPOINT_ARTIFACT)
        client.set_tag(run_id, CHECKPOINT_REMOVED_TAG, f"by python -m tuning.cleanup on {when}")
    if plan.ray_folder is not None:
        shutil.rmtree(plan.ray_folder)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def describe(plan: CleanupPlan, deleted: bool) -> str:
    lines = [f"sweep {plan.sweep}: " + ("removed" if deleted else "would remove (dry run; --delete removes it)")]
    if plan.ray_folder is not None:
        lines.append(f"  Ray Tune folder {plan.ray_folder}: {_mb(plan.ray_bytes)} "
                     f"(--resume cannot continue the sweep without it)")
    else:
        lines.append("  Ray Tune folder: already gone")
    lines.append(f"  checkpoint/ of {len(plan.checkpoints)} trial run(s) not registered: "
                 f"{_mb(sum(plan.checkpoints.values()))}")
    lines += [f"kept: the checkpoint of run {run_id} ({why})" for run_id, why in plan.kept.items()]
    lines.append("kept: every run's parameters, metrics, tags and figures, and the sweep's report")
    lines.append(f"total: {_mb(plan.total_bytes)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuning.cleanup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", required=True, help="sweep name")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the local store")
    parser.add_argument("--storage-path", help="the sweep's --storage-path (default: the one its run recorded)")
    parser.add_argument("--delete", action="store_true", help="remove it (default: only say what would go)")
    parser.add_argument("--force", action="store_true", help="clean a sweep whose run is still RUNNING "
                                                             "(a driver killed without --resume)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    def run() -> int:
        tracking = Tracking.resolve(args.tracking_uri)
        tracking.check_reachable()
        plan = plan_cleanup(tracking, args.sweep, args.storage_path)
        if plan.running and args.delete and not args.force:
            raise LookupError(f"sweep {args.sweep} is RUNNING in {tracking.uri}: still in progress, or its driver "
                              "was killed (finish it with tune_ssl.py --resume); --force cleans it anyway")
        if args.delete:
            apply_cleanup(tracking, plan)
        print(describe(plan, args.delete))
        return 0

    return explained(run, args.debug, (*USER_ERRORS, LookupError, TrackingUnavailable))


if __name__ == "__main__":
    sys.exit(main())
