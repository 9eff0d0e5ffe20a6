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

from tuning.leaderboard import build_leaderboard, latest_sweep
from tuning.tracking import Tracking


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.leaderboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", help="sweep name (default: the latest)")
    parser.add_argument("--by", default="mean_rank", help="mean_rank (ascending), dev_score or a metric (descending)")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the local store")
    parser.add_argument("--html", help="also write the table as HTML here")
    args = parser.parse_args(argv)
    tracking = Tracking.resolve(args.tracking_uri)
    sweep = args.sweep or latest_sweep(tracking)
    board = build_leaderboard(tracking, sweep, args.by)
    print(f"sweep {sweep} ({len(board.rows)} trials, {tracking.uri})\n")
    print(board.to_text())
    if args.html:
        Path(args.html).write_text(board.to_html())
    return 0


if __name__ == "__main__":
    sys.exit(main())
