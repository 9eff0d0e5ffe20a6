"""Videos through every stage of the Ray Data pipeline, with tiny random models of the real
classes (CLIP, CLAP, RoBERTa, CTranslate2 Whisper, Qwen2.5-VL) on real media (a face photo
made into a video with real speech), and broken inputs that must be recorded, not fatal."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from media_fixtures import face_video, noface_video, truncated, zero_bytes

from extraction.config import ExtractionConfig
from extraction.pipeline import ERRORS, run_extraction
from scd_core.features import Manifest, read_split, validate_store

EMOTIONS = ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def make_videos(folder):
    """A manifest of five videos in ``folder``, MOSEI-style labels: (manifest, media folder)."""
    media = folder / "media"
    media.mkdir()
    face_video(media / "face.mp4", seconds=2)
    face_video(media / "mute.mp4", seconds=1, with_audio=False)
    noface_video(media / "cup.mp4")
    truncated(media / "face.mp4", media / "cut.mp4", fraction=0.3)
    zero_bytes(media / "empty.mp4")
    manifest = folder / "mosei.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_name", "path", *EMOTIONS])
        for name in ("face", "mute", "cup", "cut", "empty"):
            writer.writerow([name, f"{name}.mp4", *(float(e == "Happiness") for e in EMOTIONS)])
    return manifest, media


def config(tmp_path, manifest, media, dirs, **extra) -> ExtractionConfig:
    clip, clap, roberta, whisper, qwen = dirs
    text = {"name": "emoroberta", "local_dir": str(roberta)}
    return ExtractionConfig.model_validate({
        "output": str(tmp_path / "store"),
        "sources": [{"corpus": "mosei", "split": "train", "manifest": str(manifest), "media_root": str(media),
                     "columns": {"video": "path", "labels": {f"emo_{e.lower()}": e for e in EMOTIONS}}}],
        "frames": 8,
        "video_encoder": {"name": "clip", "local_dir": str(clip)},
        "audio_encoder": {"name": "clap", "local_dir": str(clap)},
        "text_encoder": text, "behavior_encoder": text,
        "transcriber": {"local_dir": str(whisper)},
        "describer": {"backend": "transformers", "local_dir": str(qwen)},
        **extra,
    })


@pytest.fixture(scope="module")
def first_run(local_ray, tmp_path_factory, tiny_clip_dir, tiny_clap_dir, tiny_roberta_dir, tiny_whisper_ct2_dir,
              tiny_qwen25vl_dir):
    """Every stage over the five videos, run once for the module (a run costs tens of seconds
    here, mostly its actors starting): (config, summary)."""
    folder = tmp_path_factory.mktemp("extraction")
    manifest, media = make_videos(folder)
    cfg = config(folder, manifest, media, (tiny_clip_dir, tiny_clap_dir, tiny_roberta_dir, tiny_whisper_ct2_dir,
                                           tiny_qwen25vl_dir))
    return cfg, run_extraction(cfg, progress=False)


def test_every_stage_on_real_media_and_broken_inputs(first_run):
    cfg, summary = first_run
    splits, problems = validate_store(cfg.output)
    assert problems == []
    store = read_split(cfg.output, "mosei", "train")
    present = {m: dict(zip(store.sample_ids, p)) for m, p in store.present.items()}
    errors = pq.read_table(Path(cfg.output) / ERRORS).to_pylist()
    reasons = {(e["sample_id"], e["stage"]) for e in errors}

    # The face video: faces found, CLIP on the crops, CLAP on the speech, a description.
    assert present["video"]["face"] and present["audio"]["face"] and present["behavior"]["face"]
    # Random Whisper weights may say nothing; then the text is honestly missing and recorded.
    assert present["text"]["face"] or ("face", "transcribe") in reasons
    # No face: no video features, the rest still extracted.
    assert not present["video"]["cup"] and ("cup", "faces") in reasons
    assert present["behavior"]["cup"]
    # No audio stream: audio missing and recorded.
    assert not present["audio"]["mute"] and ("mute", "audio") in reasons and present["video"]["mute"]
    # Unreadable files: recorded with the decode stage, nothing written for them.
    assert ("empty", "decode") in reasons and "empty" not in present["video"]
    assert ("cut", "decode") in reasons or "cut" in present["video"]
    assert summary.failures and summary.seconds_per_stage.keys() >= {"decode", "faces", "video", "audio", "text"}

    manifest_json = Manifest.read(cfg.output)
    video = manifest_json.modalities["video"]
    assert video.frames == 8 and video.fingerprint and video.dim == store.features["video"].shape[1]
    assert manifest_json.modalities["audio"].sampling_rate == 48000
    assert np.isfinite(store.features["audio"]).all()


def test_rerun_retries_failures_and_keeps_successes(first_run, tmp_path, tiny_clip_dir, tiny_clap_dir,
                                                    tiny_roberta_dir, tiny_whisper_ct2_dir, tiny_qwen25vl_dir):
    """A rerun of a copy of the first run's folder, after its owner fixed one video."""
    first_cfg, first = first_run
    shutil.copytree(Path(first_cfg.output).parent, tmp_path, dirs_exist_ok=True)
    dirs = (tiny_clip_dir, tiny_clap_dir, tiny_roberta_dir, tiny_whisper_ct2_dir, tiny_qwen25vl_dir)
    cfg = config(tmp_path, tmp_path / "mosei.csv", tmp_path / "media", dirs)
    failed_before = {e["sample_id"] for e in pq.read_table(tmp_path / "store" / ERRORS).to_pylist()}
    assert "cup" in failed_before
    face_video(tmp_path / "media" / "cup.mp4", seconds=1)  # the no-face video is fixed by its owner
    second = run_extraction(cfg, progress=False)
    assert second.skipped == 5 - len(failed_before)  # successes are not recomputed
    store = read_split(cfg.output, "mosei", "train")
    assert dict(zip(store.sample_ids, store.present["video"]))["cup"]  # the retried sample now has a face
    assert first.rows[("mosei", "train")] <= second.rows[("mosei", "train")]
