"""Train one MCDM configuration with the semi-supervised cross-domain protocol.

    python ray_jobs/train.py [--features ROOT] [--config YAML] [--output DIR] [key=value ...]

Without ``--features`` it trains on the synthetic demo corpora (generated once into
``features/demo``). Prints one row per epoch and saves ``OUTPUT/best`` (the best dev
epoch) and ``OUTPUT/last`` (resumable with ``--resume``).
"""

from __future__ import annotations

import argparse
import sys

from scd_core.config import ConfigError, load_config
from scd_core.progress import EpochTable
from scd_core.synthetic import ensure_store
from scd_core.trainer import Trainer, load_training_data, resolve_device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", help="feature-store root (default: synthetic demo corpora)")
    parser.add_argument("--config", help="experiment YAML")
    parser.add_argument("--output", default="runs/train", help="checkpoint directory (default: runs/train)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/last")
    parser.add_argument("overrides", nargs="*", help="section.field=value, e.g. model.graph=gat optim.epochs=5")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    root = args.features or cfg.data.features or ensure_store("features/demo")
    device = resolve_device(cfg.device)
    data = load_training_data(cfg, root, device)
    print(f"training on {root} ({len(data.train)} rows from {', '.join(data.train.corpora)}) on {device}")
    result = Trainer(cfg, data, args.output).fit(on_epoch=EpochTable(), resume=args.resume)
    print(f"\nbest dev score {result.best_score:.4f} at epoch {result.best_epoch}: {args.output}/best")
    print(f"evaluate it: python ray_jobs/evaluate.py --checkpoint {args.output}/best --features {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
