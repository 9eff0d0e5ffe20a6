"""``python -m scd_core.features validate|summary ROOT``: check or describe a feature store."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pyarrow.parquet as pq
from tabulate import tabulate

from scd_core.features.schema import FeatureStoreError, Manifest, split_path
from scd_core.features.store import SplitArrays, validate_store
from scd_core.tasks import CORPORA, EMO_CLASSES, TASKS


def _label_summary(arrays: SplitArrays) -> str:
    """One short description of the corpus's own labels."""
    task = CORPORA[arrays.corpus].task
    if task is None:
        return "unlabelled"
    values = np.stack([arrays.labels[c] for c in TASKS[task].label_columns], axis=1)
    values = values[~np.isnan(values).any(axis=1)]
    if len(values) == 0:
        return "no labels"
    if task == "emo":
        top = values.argmax(axis=1)
        shares = np.bincount(top, minlength=len(EMO_CLASSES)) / len(top)
        order = np.argsort(-shares)[:3]
        return "top: " + ", ".join(f"{EMO_CLASSES[i]} {shares[i]:.0%}" for i in order)
    if task == "pt":
        return f"mean {values.mean():.3f}, in [0.4, 0.7]: {((values >= 0.4) & (values <= 0.7)).mean():.0%}"
    return f"presence {values.mean():.0%}"


def _split_rows(splits: list[SplitArrays]) -> list[list]:
    rows = []
    for a in splits:
        task = CORPORA[a.corpus].task
        labelled = int((~np.isnan(a.labels[TASKS[task].label_columns[0]])).sum()) if task else 0
        missing = ", ".join(f"{m} {int((~p).sum())}" for m, p in a.present.items() if (~p).any()) or "-"
        rows.append([a.corpus, a.split, len(a), task or "-", labelled, missing, _label_summary(a)])
    return rows


HEADERS = ["corpus", "split", "rows", "task", "labelled", "missing modalities", "labels"]


def validate(root: str) -> int:
    splits, errors = validate_store(root)
    if errors:
        print(f"{root}: {len(errors)} problem(s)", file=sys.stderr)
        for line in errors:
            print(line, file=sys.stderr)
        return 1
    print(tabulate(_split_rows(splits), headers=HEADERS))
    print(f"\n{root}: valid ({sum(len(s) for s in splits)} rows in {len(splits)} splits)")
    return 0


def summary(root: str) -> int:
    """Manifest and row counts, from metadata only (fast on large stores)."""
    try:
        manifest = Manifest.read(root)
    except FeatureStoreError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"schema version {manifest.schema_version}, manifest digest {manifest.digest()}")
    if manifest.source:
        print(f"source: {manifest.source}")
    print()
    print(tabulate(
        [[m, i.dim, i.encoder, i.revision or "-", i.frames or "-", i.sampling_rate or "-"]
         for m, i in manifest.modalities.items()],
        headers=["modality", "dim", "encoder", "revision", "frames", "sampling rate"],
    ))
    print()
    rows = []
    for corpus, splits in manifest.corpora.items():
        for split, n in splits.items():
            path = split_path(root, corpus, split)
            on_disk = pq.ParquetFile(path).metadata.num_rows if path.exists() else "missing"
            rows.append([corpus, split, CORPORA[corpus].task or "-", n, on_disk])
    print(tabulate(rows, headers=["corpus", "split", "task", "rows (manifest)", "rows (file)"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scd_core.features", description=__doc__)
    parser.add_argument("command", choices=["validate", "summary"])
    parser.add_argument("root", help="feature-store root (holds manifest.json)")
    args = parser.parse_args(argv)
    return validate(args.root) if args.command == "validate" else summary(args.root)


if __name__ == "__main__":
    sys.exit(main())
