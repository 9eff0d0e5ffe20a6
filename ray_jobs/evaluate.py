"""Evaluate a checkpoint on the test splits, with bootstrap 95% intervals.

    python ray_jobs/evaluate.py --checkpoint runs/train/best [--features ROOT] [--split test]
    python ray_jobs/evaluate.py --model models:/scd-mmpsr@champion [--tracking-uri URI]

Reports every training corpus's metrics and the zero-shot emotion metrics on MELD
(MF1, WF1, UAR over 7 classes). Without ``--features`` it uses the store the checkpoint's
config names, else the synthetic demo corpora.
"""

from __future__ import annotations

import argparse
import sys

from tabulate import tabulate

from scd_core.checkpoint import load_model
from scd_core.cli import USER_ERRORS, add_debug_flag, explained, int_at_least
from scd_core.evaluation import NonFiniteOutputError, interval_report
from scd_core.synthetic import ensure_store
from scd_core.data import load_eval_splits, resolve_device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint directory (model.safetensors + config.json)")
    source.add_argument("--model", help="registered model URI, e.g. models:/scd-mmpsr@champion")
    parser.add_argument("--tracking-uri", help="for --model: default $MLFLOW_TRACKING_URI or the local store")
    parser.add_argument("--features", help="feature-store root")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--n-resamples", type=int_at_least(1), default=1000)
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    return explained(lambda: run(args), args.debug, (*USER_ERRORS, NonFiniteOutputError, *_tracking_errors(args)))


def _tracking_errors(args: argparse.Namespace) -> tuple[type[BaseException], ...]:
    """With ``--model``, MLflow's errors (unknown model or alias, dead server) are the user's too."""
    if not args.model:  # only this path needs MLflow
        return ()
    from tuning.tracking import TRACKING_ERRORS

    return TRACKING_ERRORS


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    checkpoint = args.checkpoint
    if args.model:
        from tuning.promote import fetch_model
        from tuning.tracking import Tracking

        tracking = Tracking.resolve(args.tracking_uri)
        tracking.check_reachable()
        checkpoint = fetch_model(args.model, tracking)
    model, spec = load_model(checkpoint, device)
    root = args.features or spec.config.data.features or ensure_store("features/demo")
    splits = load_eval_splits(spec.config, root, args.split, device, spec.modality_dims)
    rows = interval_report(model, splits, args.n_resamples, args.seed)
    print(f"{args.model or checkpoint} on {root} ({args.split}; 95% percentile bootstrap, {args.n_resamples} resamples)\n")
    print(tabulate(
        [[r["corpus"], r["metric"], f"{100 * r['value']:.2f}", f"[{100 * r['low']:.2f}, {100 * r['high']:.2f}]", r["n"]]
         for r in rows],
        headers=["corpus", "metric", "value %", "95% CI", "n"],
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
