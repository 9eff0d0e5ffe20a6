"""Predict emotions, Big Five traits and ambivalence/hesitancy for new videos.

    python ray_jobs/predict.py --model models:/scd-mmpsr@champion videos/ --output predictions/
    python ray_jobs/predict.py --checkpoint runs/mcdm2/best clip.mp4 more.csv columns.video=path \\
        video_encoder.local_dir=/models/clip
    ray job submit --working-dir . -- python ray_jobs/predict.py --model models:/scd-mmpsr@champion \\
        /shared/videos --output /shared/predictions --tracking-uri http://HEAD:5000

Inputs are video files, folders of videos and manifest CSVs (``columns.*=`` maps the CSV's
columns as in extraction). The extraction stages are the ones the model's training store
was built with (recorded in the checkpoint); ``--config`` (an extraction YAML) and
``key=value`` overrides say where models live and what runs where (``local_dir``,
``device``, ``resources.<stage>``, ``resources.predict`` for the model stage). A run whose
extractors differ from the recorded ones stops before any work unless ``--allow-mismatch``;
so does one whose models are not on this machine (one message naming them and the command
that fetches them; ``--skip-model-check`` when only the Ray workers have them).
Writes OUTPUT/predictions.parquet and .csv (one row per video); a rerun skips videos
already predicted.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from tuning.local_ray import keep_local_ray_on_loopback, start_ray

keep_local_ray_on_loopback()  # before anything imports ray

import yaml  # noqa: E402
from tabulate import tabulate  # noqa: E402

from extraction.manifest import ManifestError  # noqa: E402
from extraction.models import ModelsMissing  # noqa: E402
from extraction.predict import (  # noqa: E402
    PREDICTIONS,
    PredictError,
    PredictionSummary,
    check_prediction_models,
    run_prediction,
)
from scd_core.cli import USER_ERRORS, add_debug_flag, explained  # noqa: E402
from scd_core.config import deep_merge, parse_overrides  # noqa: E402
from scd_core.tasks import PT_TRAITS  # noqa: E402
from scd_core.yaml_io import read_yaml  # noqa: E402


def summarize(summary: PredictionSummary, output: str) -> str:
    """A few lines for the terminal: counts, what was predicted, failures, the warning."""
    rows = summary.table.to_pylist()
    present = [c for c in summary.table.column_names if c.startswith("present_")]
    predicted = [r for r in rows if any(r[c] for c in present)]
    lines = [f"{output}: {len(rows)} videos, {len(predicted)} with predictions "
             f"({summary.predicted} run now, {summary.skipped} skipped as already predicted); "
             f"stages {' -> '.join(summary.stages)}"]
    missing = {c.removeprefix("present_"): sum(not r[c] for r in predicted) for c in present}
    if any(missing.values()):
        lines.append("predicted without: " + ", ".join(f"{m} {n}" for m, n in missing.items() if n))
    if predicted and "emotion" in summary.table.column_names:
        counts = Counter(r["emotion"] for r in predicted)
        lines.append("emotion: " + ", ".join(f"{e} {n}" for e, n in counts.most_common()))
    if predicted and "pt_openness" in summary.table.column_names:
        lines.append("traits (mean): " + ", ".join(
            f"{t} {sum(r[f'pt_{t}'] for r in predicted) / len(predicted):.2f}" for t in PT_TRAITS))
    if predicted and "ah_label" in summary.table.column_names:
        lines.append(f"ambivalence/hesitancy present: {sum(r['ah_label'] == 'presence' for r in predicted)}"
                     f"/{len(predicted)}")
    if summary.failures:
        lines.append("\nfailures:\n" + tabulate([[s, r, n] for (s, r), n in summary.failures.most_common()],
                                                headers=["stage", "reason", "videos"]))
    if summary.warning:
        lines.append(f"\nWARNING: {summary.warning}")
    lines.append(f"\ntable: {output}/{PREDICTIONS}.parquet and {output}/{PREDICTIONS}.csv")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="registered model URI, e.g. models:/scd-mmpsr@champion")
    source.add_argument("--checkpoint", help="checkpoint directory (model.safetensors + config.json)")
    parser.add_argument("inputs", nargs="+", help="video files, folders of videos, manifest CSVs; then key=value")
    parser.add_argument("--output", default="predictions", help="output folder (default: predictions)")
    parser.add_argument("--config",
                        help="extraction YAML: model locations, device, resources, columns (its sources are ignored)")
    parser.add_argument("--allow-mismatch", action="store_true",
                        help="predict even when the extractors differ from the training ones (warns in every row)")
    parser.add_argument("--tracking-uri", help="for --model: default $MLFLOW_TRACKING_URI or the local store")
    parser.add_argument("--address", help="Ray cluster (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument("--skip-model-check", action="store_true",
                        help="start even when models are missing here (the Ray workers have their own copies)")
    add_debug_flag(parser)
    args = parser.parse_intermixed_args(argv)
    errors = (*USER_ERRORS, yaml.YAMLError, PredictError, ManifestError, ModelsMissing)
    if args.model:  # only this path needs MLflow: an unknown model or alias, a store that cannot serve
        from tuning.tracking import TRACKING_ERRORS

        errors += TRACKING_ERRORS
    return explained(lambda: run(args), args.debug, errors)


def run(args: argparse.Namespace) -> int:
    inputs = [a for a in args.inputs if "=" not in a]
    overrides = [a for a in args.inputs if "=" in a]
    values = (read_yaml(args.config) or {}) if args.config else {}
    values = deep_merge(values, parse_overrides(overrides))
    checkpoint = args.checkpoint
    if args.model:  # only this path needs MLflow
        from tuning.promote import fetch_model
        from tuning.tracking import Tracking

        tracking = Tracking.resolve(args.tracking_uri)
        tracking.check_reachable()
        checkpoint = fetch_model(args.model, tracking)
    if not args.skip_model_check:
        check_prediction_models(checkpoint, inputs, args.output, values)
    start_ray(args.address)
    summary = run_prediction(checkpoint, inputs, args.output, values, args.allow_mismatch)
    print(summarize(summary, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
