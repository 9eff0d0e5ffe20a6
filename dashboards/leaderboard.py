"""Print a sweep's leaderboard from MLflow (and optionally write it as HTML).

    python -m dashboards.leaderboard [--sweep NAME] [--by mean_rank|dev_score|METRIC] [--html PATH]

Trials are scored by their best dev epoch; ``mean_rank`` is the paper's rank (1 = best) over
the in-domain dev metrics of the trained tasks (MELD is shown, never ranked). The same table
is stored with the sweep's parent run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scd_core.cli import USER_ERRORS, add_debug_flag, explained
from tuning.leaderboard import SORT_KEYS, build_leaderboard, find_sweep
from tuning.tracking import Tracking, TrackingUnavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.leaderboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", help="sweep name (default: the latest)")
    parser.add_argument("--by", default="mean_rank", choices=SORT_KEYS, metavar="KEY",
                        help="mean_rank (ascending), dev_score or a metric (descending)")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the local store")
    parser.add_argument("--html", help="also write the table as HTML here")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    # LookupError: no such sweep, or none at all.
    return explained(lambda: run(args), args.debug, (*USER_ERRORS, LookupError, TrackingUnavailable))


def run(args: argparse.Namespace) -> int:
    tracking = Tracking.resolve(args.tracking_uri)
    tracking.check_reachable()
    sweep = find_sweep(tracking, args.sweep)
    board = build_leaderboard(tracking, sweep, args.by)
    print(f"sweep {sweep} ({len(board.rows)} trials, {tracking.uri})\n")
    print(board.to_text())
    if args.html:
        Path(args.html).write_text(board.to_html())
    return 0


if __name__ == "__main__":
    sys.exit(main())
