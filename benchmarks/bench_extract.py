"""Extraction throughput on this CPU: every stage of the Ray Data pipeline with tiny random
models of the real classes (the test suite's builders), on synthetic face videos with real
speech (a face photo drifting, jfk.flac when present).

    python benchmarks/bench_extract.py [--videos 12] [--seconds 5]

Prints, per stage, the seconds per video spent inside its actors, and end to end videos/s
and seconds of wall clock per second of video. Tiny models make the model stages cheap:
the figures show the pipeline's own cost (decode, MediaPipe, Ray Data); the real models'
GPU cost is bench_extract_gpu.py's.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

from tuning.local_ray import keep_local_ray_on_loopback

keep_local_ray_on_loopback()  # before anything imports ray

import ray  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media_fixtures import face_video  # noqa: E402
from model_fixtures import (  # noqa: E402
    build_tiny_clap,
    build_tiny_clip,
    build_tiny_qwen25vl,
    build_tiny_roberta,
    build_tiny_whisper_ct2,
)

from extraction.config import ExtractionConfig  # noqa: E402
from extraction.pipeline import run_extraction  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    models = {name: build(work / name) for name, build in (
        ("clip", build_tiny_clip), ("clap", build_tiny_clap), ("roberta", build_tiny_roberta),
        ("whisper", build_tiny_whisper_ct2), ("qwen", build_tiny_qwen25vl))}
    media = work / "media"
    media.mkdir()
    manifest = work / "videos.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_name", "path"])
        for i in range(args.videos):
            face_video(media / f"v{i}.mp4", seconds=args.seconds)
            writer.writerow([f"v{i}", f"v{i}.mp4"])
    text = {"name": "emoroberta", "local_dir": str(models["roberta"])}
    cfg = ExtractionConfig.model_validate({
        "output": str(work / "store"),
        "sources": [{"corpus": "mosei", "split": "train", "manifest": str(manifest), "media_root": str(media),
                     "columns": {"video": "path"}}],
        "video_encoder": {"name": "clip", "local_dir": str(models["clip"])},
        "audio_encoder": {"name": "clap", "local_dir": str(models["clap"])},
        "text_encoder": text, "behavior_encoder": text,
        "transcriber": {"name": "whisper", "local_dir": str(models["whisper"])},
        "describer": {"name": "transformers", "local_dir": str(models["qwen"])},
    })
    ray.init(include_dashboard=False, log_to_driver=False)
    tic = time.perf_counter()
    summary = run_extraction(cfg, progress=False)
    wall = time.perf_counter() - tic
    ray.shutdown()
    n = args.videos
    print(f"\n{n} videos of {args.seconds:g} s, tiny models, this CPU:")
    for stage, seconds in sorted(summary.seconds_per_stage.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:>10}: {seconds / n:6.3f} s per video  ({n / seconds if seconds else float('inf'):6.1f} videos/s)")
    print(f"  end to end: {n / wall:.2f} videos/s, {wall / (n * args.seconds):.3f} s of wall clock per second of "
          f"video (including Ray start-up of the actors), {sum(summary.rows.values())} rows written")


if __name__ == "__main__":
    main()
