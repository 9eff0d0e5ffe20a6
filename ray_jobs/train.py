"""Train one MCDM configuration with the semi-supervised cross-domain protocol.

    python ray_jobs/train.py [--features ROOT] [--config YAML] [--output DIR] [key=value ...]

Without ``--features`` it trains on the synthetic demo corpora (generated once into
``features/demo``). Prints one row per epoch and saves ``OUTPUT/best`` (the best dev
epoch) and ``OUTPUT/last`` (resumable with ``--resume``). An OUTPUT that already holds
files is never replaced silently: pass ``--resume`` to continue it or ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from scd_core.cli import USER_ERRORS, add_debug_flag, explained
from scd_core.config import ConfigError, load_config
from scd_core.progress import EpochTable
from scd_core.synthetic import ensure_store
from scd_core.data import load_training_data, resolve_device
from scd_core.trainer import NonFiniteLossError, Trainer


def refuse_to_overwrite(output: Path) -> None:
    """A second run into a used OUTPUT would replace its ``best`` and ``last``: say so instead."""
    if output.is_dir() and any(output.iterdir()):
        raise ConfigError(f"--output {output} already holds a run ({', '.join(sorted(p.name for p in output.iterdir()))});"
                          " pass --resume to continue it, --overwrite to replace it, or choose another --output")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if not (args.resume or args.overwrite):
        refuse_to_overwrite(Path(args.output))
    root = args.features or cfg.data.features or ensure_store("features/demo")
    device = resolve_device(cfg.device)
    data = load_training_data(cfg, root, device)
    print(f"training on {root} ({len(data.train)} rows from {', '.join(data.train.corpora)}) on {device}"
          + (f" with {args.threads} torch thread{'s' if args.threads > 1 else ''}" if device.type == "cpu" else ""))
    result = Trainer(cfg, data, args.output).fit(on_epoch=EpochTable(), resume=args.resume)
    print(f"\nbest dev score {result.best_score:.4f} at epoch {result.best_epoch}: {args.output}/best")
    print(f"evaluate it: python ray_jobs/evaluate.py --checkpoint {args.output}/best --features {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", help="feature-store root (default: synthetic demo corpora)")
    parser.add_argument("--config", help="experiment YAML")
    parser.add_argument("--output", default="runs/train", help="checkpoint directory (default: runs/train)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUTPUT/last")
    again.add_argument("--overwrite", action="store_true", help="replace the run already in OUTPUT")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: a batch of 32 gains little from more, and more threads "
                             "than free cores slow every step down; Ray trials also run with 1 per CPU)")
    add_debug_flag(parser)
    parser.add_argument("overrides", nargs="*", help="section.field=value, e.g. model.graph=gat optim.epochs=5")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return explained(lambda: run(args), args.debug, (*USER_ERRORS, NonFiniteLossError))
    finally:
        torch.set_num_threads(threads)  # main() may run inside another process (the tests)


if __name__ == "__main__":
    sys.exit(main())
