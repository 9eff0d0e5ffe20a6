"""Videos (or ready-made transcripts and descriptions) -> the feature store, on Ray Data.

    python ray_jobs/extract_features.py --config configs/extract_real_text.yaml [key=value ...]
    python ray_jobs/extract_features.py --config configs/extract_my_videos.yaml data_root=/my/clips
    ray job submit --working-dir . -- python ray_jobs/extract_features.py --config configs/extract_my_corpus.yaml

Before Ray starts, the models the run needs are looked for on this machine (a local_dir,
a package, the Hugging Face cache); missing ones stop the run with one message naming them
and the command that fetches them (``python -m extraction.models fetch CONFIG``).
Reruns skip samples already written and retry failed ones. Ends with rows written,
failures by stage and reason, and seconds per stage.
"""

from __future__ import annotations

import argparse
import sys
import time

from tuning.local_ray import keep_local_ray_on_loopback, start_ray

keep_local_ray_on_loopback()  # before anything imports ray

from tabulate import tabulate  # noqa: E402

from extraction.config import load_extraction_config  # noqa: E402
from extraction.manifest import ManifestError, read_sources  # noqa: E402
from extraction.models import ModelsMissing, check_models  # noqa: E402
from extraction.pipeline import ERRORS, check_output, run_extraction  # noqa: E402
from scd_core.cli import USER_ERRORS, add_debug_flag, explained  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="extraction YAML (sources, encoders, resources)")
    parser.add_argument("--address", help="Ray cluster (default: $RAY_ADDRESS or a local Ray)")
    parser.add_argument("--skip-model-check", action="store_true",
                        help="start even when models are missing here (the Ray workers have their own copies)")
    add_debug_flag(parser)
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. output=features/mine device=cuda")
    args = parser.parse_args(argv)
    return explained(lambda: run(args), args.debug, (*USER_ERRORS, ManifestError, ModelsMissing))


def run(args: argparse.Namespace) -> int:
    cfg = load_extraction_config(args.config, args.overrides)
    check_output(cfg)
    if not args.skip_model_check:
        check_models(cfg, args.config, args.overrides, read_sources(cfg))
    start_ray(args.address)
    tic = time.perf_counter()
    summary = run_extraction(cfg)
    print(f"\n{cfg.output}: {sum(summary.rows.values())} rows written in {time.perf_counter() - tic:.1f} s"
          f" ({summary.skipped} skipped as already written)")
    print(tabulate(sorted([c, s, n] for (c, s), n in summary.rows.items()), headers=["corpus", "split", "rows"]))
    if summary.failures:
        print(f"\nfailures ({cfg.output}/{ERRORS}):")
        print(tabulate([[s, r, n] for (s, r), n in summary.failures.most_common()],
                       headers=["stage", "reason", "samples"]))
    print("\nseconds per stage (summed over samples):")
    print(tabulate(sorted(summary.seconds_per_stage.items()), headers=["stage", "seconds"]))
    print(f"\nvalidate: python -m scd_core.features validate {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
