"""Promote a trial's best checkpoint to the registered model (alias ``champion``).

    python ray_jobs/promote.py --sweep NAME [--by mean_rank|dev_score] [--export DIR]
    python ray_jobs/promote.py --run-id RUN_ID
"""

from __future__ import annotations

import argparse
import sys

from mlflow.exceptions import MlflowException

from scd_core.cli import USER_ERRORS, add_debug_flag, explained
from tuning.leaderboard import SORT_KEYS, find_sweep
from tuning.promote import ALIAS, MODEL_NAME, ChampionIsBetter, choose_run, promote
from tuning.tracking import Tracking, TrackingUnavailable


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sweep", help="promote the sweep's best trial (default: the latest sweep)")
    which.add_argument("--run-id", help="promote this trial run")
    p.add_argument("--by", default="mean_rank", choices=SORT_KEYS, metavar="KEY",
                   help="mean_rank (lowest wins), dev_score or a metric (highest wins)")
    p.add_argument("--model-name", default=MODEL_NAME)
    p.add_argument("--export", help="export directory (default: runs/promoted/<name>-v<version>)")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the local store")
    p.add_argument("--replace-better-champion", action="store_true",
                   help="replace a champion that scores better on the same dev metrics (refused otherwise)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    # LookupError: no such sweep, no finished trial, no checkpoint artifact.
    return explained(lambda: run(args), args.debug,
                     (*USER_ERRORS, LookupError, ChampionIsBetter, MlflowException, TrackingUnavailable))


def run(args: argparse.Namespace) -> int:
    tracking = Tracking.resolve(args.tracking_uri)
    tracking.check_reachable()
    run_id = args.run_id or choose_run(tracking, find_sweep(tracking, args.sweep), args.by)
    done = promote(tracking, run_id, args.export, args.model_name, args.replace_better_champion)
    if done.replaced:
        print(f"WARNING: replaced a better champion as asked: {done.replaced}")
    what = "already registered as" if done.reused else "registered"
    print(f"{what} {done.model_name} version {done.version} (run {done.run_id}), now @{ALIAS}")
    print(f"exported checkpoint: {done.export_dir}")
    print(f"evaluate: python ray_jobs/evaluate.py --model models:/{done.model_name}@{ALIAS} --tracking-uri {tracking.uri}")
    print(f"predict:  python ray_jobs/predict.py --model models:/{done.model_name}@{ALIAS} --tracking-uri {tracking.uri} "
          "VIDEOS --output predictions")
    print(f"serve:    MLFLOW_TRACKING_URI={tracking.uri} mlflow models serve -m models:/{done.model_name}@{ALIAS} "
          "--env-manager local --host 127.0.0.1 --port 5001")
    return 0


if __name__ == "__main__":
    sys.exit(main())
