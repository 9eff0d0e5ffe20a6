"""Evaluate a checkpoint on the test splits, with bootstrap 95% intervals.

    python ray_jobs/evaluate.py --checkpoint runs/train/best [--features ROOT] [--split test]

Reports every training corpus's metrics and the zero-shot emotion metrics on MELD
(MF1, WF1, UAR over 7 classes). Without ``--features`` it uses the store the checkpoint's
config names, else the synthetic demo corpora.
"""

from __future__ import annotations

import argparse
import sys

from tabulate import tabulate

from scd_core.checkpoint import load_model
from scd_core.evaluation import interval_report
from scd_core.synthetic import ensure_store
from scd_core.trainer import load_eval_splits, resolve_device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (model.safetensors + config.json)")
    parser.add_argument("--features", help="feature-store root")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--n-resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    model, spec = load_model(args.checkpoint, device)
    root = args.features or spec.config.data.features or ensure_store("features/demo")
    splits = load_eval_splits(spec.config, root, args.split, device)
    rows = interval_report(model, splits, args.n_resamples, args.seed)
    print(f"{args.checkpoint} on {root} ({args.split}; 95% percentile bootstrap, {args.n_resamples} resamples)\n")
    print(tabulate(
        [[r["corpus"], r["metric"], f"{100 * r['value']:.2f}", f"[{100 * r['low']:.2f}, {100 * r['high']:.2f}]", r["n"]]
         for r in rows],
        headers=["corpus", "metric", "value %", "95% CI", "n"],
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
