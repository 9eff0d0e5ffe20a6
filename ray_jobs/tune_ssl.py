"""Hyperparameter search for SCD-MMPSR: Ray Tune + Optuna + ASHA, every trial an MLflow run.

    python ray_jobs/tune_ssl.py                                   # quick demo, local Ray, local MLflow store
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python ray_jobs/tune_ssl.py --space search_spaces/table16_ssl.yaml --features /shared/features \\
        --storage-path /shared/ray_results --tracking-uri http://127.0.0.1:5000

Without RAY_ADDRESS/--address a local Ray starts, even beside a cluster that ``ray start`` runs
on this machine; under ``ray job submit`` the job joins the cluster. It prints which Ray it runs
on (address, nodes, CPUs, GPUs). ``--resume --name NAME`` continues an interrupted sweep.
"""

from __future__ import annotations

import argparse
import sys

from tuning.local_ray import keep_local_ray_on_loopback

keep_local_ray_on_loopback()  # before anything imports ray

from dashboards.sweep_outputs import SWEEP_OUTPUTS  # noqa: E402
from scd_core.cli import USER_ERRORS, add_debug_flag, explained  # noqa: E402
from tuning.spaces import STRATEGIES, SpaceError  # noqa: E402
from tuning.sweep import SweepSettings, run_sweep  # noqa: E402
from tuning.tracking import TrackingUnavailable  # noqa: E402


def mlflow_ui(uri: str, view: str) -> str:
    """How to open the sweep's view: a tracking server serves the UI itself; a local store needs ``mlflow ui``."""
    if uri.startswith(("http://", "https://")):
        return f"MLflow UI:   {uri.rstrip('/')}/{view}"
    return (f"MLflow UI:   mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000\n"
            f"             then open http://127.0.0.1:5000/{view}")


def build_parser() -> argparse.ArgumentParser:
    d = SweepSettings()  # the flags' defaults live there
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default=d.space, help="search space: a YAML path or the name of one in search_spaces/")
    p.add_argument("--features", help="feature-store root every node can read (default: synthetic demo corpora)")
    p.add_argument("--config", help="experiment YAML the space's values apply on top of")
    p.add_argument("--strategy", choices=STRATEGIES, help="default: the space's")
    p.add_argument("--num-samples", type=int, help="optuna trials (default: the space's; grid and oat spaces "
                                                   "list their own trials)")
    p.add_argument("--epochs", type=int, help="epochs per trial (wins over the space)")
    p.add_argument("--max-concurrent", type=int, default=d.max_concurrent,
                   help="trials at once (default: as many as the cluster's CPUs and GPUs fit per trial)")
    p.add_argument("--cpus-per-trial", type=float, default=d.cpus_per_trial)
    p.add_argument("--gpus-per-trial", type=float, default=d.gpus_per_trial,
                   help="0.125: 8 trials share each GPU")
    p.add_argument("--no-asha", action="store_true", help="run every trial to the end")
    p.add_argument("--grace-period", type=int, default=d.grace_period,
                   help="ASHA: epochs every trial runs before it can be stopped")
    p.add_argument("--reduction-factor", type=int, default=d.reduction_factor,
                   help="ASHA: 1 in this many trials goes on at each rung")
    p.add_argument("--max-failures", type=int, default=d.max_failures, help="retries of a failing trial")
    p.add_argument("--name", help="sweep name (needed with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the sweep --name")
    p.add_argument("--storage-path", help="where trial checkpoints live; every node must reach it")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or a local store)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--report-top-k", type=int, default=d.report_top_k,
                   help="trials compared on the test splits in the report")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray, never a "
                                      "cluster that `ray start` left running here)")
    add_debug_flag(p)
    p.add_argument("overrides", nargs="*", help="section.field=value applied to every trial")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.resume and not args.name:
        p.error("--resume needs --name")
    return explained(lambda: run(args), args.debug, (*USER_ERRORS, SpaceError, TrackingUnavailable))


def sweep_settings(args: argparse.Namespace) -> SweepSettings:
    return SweepSettings(
        space=args.space, features=args.features, config=args.config, overrides=args.overrides,
        strategy=args.strategy, num_samples=args.num_samples, epochs=args.epochs,
        max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        asha=not args.no_asha, grace_period=args.grace_period, reduction_factor=args.reduction_factor,
        max_failures=args.max_failures, name=args.name, resume=args.resume,
        storage_path=args.storage_path, tracking_uri=args.tracking_uri, seed=args.seed, address=args.address,
        report_top_k=args.report_top_k,
    )


def run(args: argparse.Namespace) -> int:
    result = run_sweep(sweep_settings(args), SWEEP_OUTPUTS)
    print(f"\nsweep {result.name}: {result.num_trials} trials, {result.num_errors} failed\n")
    print(result.leaderboard.to_text())
    uri = result.tracking.uri
    print(f"\nleaderboard: python -m dashboards.leaderboard --sweep {result.name} --tracking-uri {uri}")
    print(f"report:      python -m dashboards.report --sweep {result.name} --tracking-uri {uri}  "
          "(also in the MLflow UI: the sweep run's artifacts, report/)")
    print(mlflow_ui(uri, result.view))
    if result.every_trial_failed:
        print(f"every trial failed: see each trial run's failure_reason tag ({uri})", file=sys.stderr)
        return 1
    print(f"promote:     python ray_jobs/promote.py --sweep {result.name} --tracking-uri {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
