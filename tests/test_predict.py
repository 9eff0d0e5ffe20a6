"""Predict on new videos end to end: the extraction stages the checkpoint records, then the model,
on real media (a face photo made into videos with real speech) beside broken files, with tiny
random models of the real classes (CLIP, CLAP, MCDM)."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import yaml
from media_fixtures import face_image, face_video, fit, noface_video, speech, truncated, write_video, zero_bytes
from cluster_fixtures import ENV, RAY, ROOT

from extraction.config import ExtractionConfig
from extraction.encoders import ENCODERS
from extraction.pipeline import modality_info
from extraction.predict import (
    PREDICTIONS,
    configured_modalities,
    extractor_differences,
    predict_config,
    setting_differences,
)
from ray_jobs import predict as predict_job
from scd_core.checkpoint import ModelSpec, build_model, load_spec, save_checkpoint
from scd_core.config import build_config
from scd_core.tasks import AH_CLASSES, EMO_CLASSES, PT_TRAITS

MODALITIES = ["video", "audio"]  # the stages that tell good and broken videos apart, at the least cost
SMALL = {"model": {"hidden_dim": 32, "out_features": 32, "num_heads": 4}}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def encoder_overrides(clip, clap) -> list[str]:
    """Where this machine keeps the models (what a researcher passes with --config or key=value)."""
    return [f"video_encoder.local_dir={clip}", f"audio_encoder.local_dir={clap}"]


@pytest.fixture(scope="module")
def checkpoint(local_ray, tmp_path_factory, tiny_clip_dir, tiny_clap_dir):
    """A tiny MCDM (random weights) whose training store was extracted with the tiny CLIP and CLAP
    and 4 frames: its checkpoint records that store's manifest entries."""
    extraction = ExtractionConfig.model_validate({
        "sources": [{"corpus": "mosei", "split": "train", "videos": "."}], "modalities": MODALITIES, "frames": 4,
        "video_encoder": {"name": "clip", "local_dir": str(tiny_clip_dir)},
        "audio_encoder": {"name": "clap", "local_dir": str(tiny_clap_dir)}})
    return tiny_checkpoint(tmp_path_factory.mktemp("champion") / "best", configured_modalities(extraction))


def tiny_checkpoint(path, store):
    """A small MCDM with random weights over the modalities of ``store`` (the manifest entries
    extraction wrote), saved with them at ``path``."""
    cfg = build_config({**SMALL, "data": {"modalities": list(store)}})
    spec = ModelSpec(cfg, {m: info.dim for m, info in store.items()}, ["emo", "pt", "ah"], store)
    save_checkpoint(path, build_model(spec), spec)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A folder of good and bad videos (and a file that is no video)."""
    folder = tmp_path_factory.mktemp("videos")
    face_video(folder / "face.mp4", seconds=2)
    face_video(folder / "mute.mp4", seconds=1, with_audio=False)
    frames = [fit(face_image())] * 10
    write_video(folder / "silence.mp4", frames, audio=np.zeros(len(speech(1)[0]), np.float32))
    noface_video(folder / "cup.mp4")
    truncated(folder / "face.mp4", folder / "cut.mp4", fraction=0.3)
    zero_bytes(folder / "empty.mp4")
    (folder / "notes.txt").write_text("not a video")
    return folder


def test_predict_a_folder_with_broken_videos_then_rerun(checkpoint, videos, tmp_path, tiny_clip_dir, tiny_clap_dir,
                                                         capsys):
    output = tmp_path / "out"
    argv = ["--checkpoint", str(checkpoint), str(videos), "--output", str(output),
            *encoder_overrides(tiny_clip_dir, tiny_clap_dir)]
    assert predict_job.main(argv) == 0
    printed = capsys.readouterr().out
    table = pq.read_table(output / f"{PREDICTIONS}.parquet").to_pylist()
    rows = {r["sample_id"]: r for r in table}
    assert sorted(rows) == ["cup", "cut", "empty", "face", "mute", "silence"]  # notes.txt is no video
    assert list(table[0]) == ["sample_id", "video", *[f"emo_{c}" for c in EMO_CLASSES], "emotion",
                              *[f"pt_{t}" for t in PT_TRAITS], "ah_presence", "ah_label",
                              *[f"present_{m}" for m in MODALITIES], "errors", "warning"]
    assert (output / f"{PREDICTIONS}.csv").read_text().count("\n") == 7

    predicted = [r for r in table if r["present_video"] or r["present_audio"]]
    for r in predicted:
        probs = [r[f"emo_{c}"] for c in EMO_CLASSES]
        assert all(0 <= p <= 1 for p in probs) and abs(sum(probs) - 1) < 1e-5
        assert r["emotion"] == EMO_CLASSES[int(np.argmax(probs))]
        assert all(0 <= r[f"pt_{t}"] <= 1 for t in PT_TRAITS)
        assert 0 <= r["ah_presence"] <= 1 and r["ah_label"] == AH_CLASSES[int(r["ah_presence"] >= 0.5)]
        assert r["warning"] == ""
    # A good video: every modality, no error. Silence is still audio.
    assert rows["face"]["errors"] == "" and rows["face"]["present_video"] and rows["face"]["present_audio"]
    assert rows["silence"]["present_audio"] and rows["silence"]["present_video"]
    # No audio stream: predicted from the video it has, with the reason.
    assert rows["mute"]["present_video"] and not rows["mute"]["present_audio"] and rows["mute"]["emotion"]
    assert "audio: no audio stream" in rows["mute"]["errors"]
    # No face and no audio, or unreadable: an error row naming each stage, no prediction.
    assert rows["cup"]["errors"].startswith("faces:") and "audio: no audio stream" in rows["cup"]["errors"]
    empty = rows["empty"]
    assert empty["errors"].startswith("decode:")
    for r in (rows["cup"], empty):
        assert r["errors"].endswith("predict: no modality could be extracted")
        assert r["emotion"] == "" and np.isnan(r["emo_neutral"]) and np.isnan(r["pt_openness"])
    assert rows["cut"]["errors"].startswith("decode:") or rows["cut"]["present_video"]
    assert "videos predicted" in printed and "failures:" in printed and "emotion:" in printed

    clean = {s for s, r in rows.items() if not r["errors"]}
    assert predict_job.main(argv) == 0  # a rerun skips what was predicted without errors
    assert f"{len(clean)} skipped as already predicted" in capsys.readouterr().out
    again = {r["sample_id"]: r for r in pq.read_table(output / f"{PREDICTIONS}.parquet").to_pylist()}
    assert again.keys() == rows.keys() and all(again[s] == rows[s] for s in clean)


def test_mismatched_extractors_are_refused_before_any_work(checkpoint, videos, tmp_path, tiny_clip_dir,
                                                           tiny_clap_dir, capsys):
    recorded = load_spec(checkpoint).store_modalities
    store = {m: replace(recorded[m], fingerprint="0123456789abcdef") for m in ("audio",)}  # other CLAP weights
    other = tiny_checkpoint(tmp_path / "other", store)
    output = tmp_path / "out"
    argv = ["--checkpoint", str(other), str(videos / "face.mp4"), str(videos / "empty.mp4"), "--output", str(output),
            *encoder_overrides(tiny_clip_dir, tiny_clap_dir)]
    assert predict_job.main([*argv, "audio_encoder.name=emowav2vec2"]) == 2  # configured otherwise
    assert "audio_encoder.name: trained with 'clap', here 'emowav2vec2'" in capsys.readouterr().err
    assert predict_job.main(argv) == 2  # the weights available here are not the ones trained on
    assert "audio.fingerprint: trained with '0123456789abcdef'" in capsys.readouterr().err
    assert not output.exists()  # stopped before any work

    assert predict_job.main([*argv, "--allow-mismatch"]) == 0  # overridden: predicted, the warning in every row
    table = pq.read_table(output / f"{PREDICTIONS}.parquet").to_pylist()
    assert [r["sample_id"] for r in table] == ["face", "empty"]
    assert all("audio.fingerprint" in r["warning"] for r in table)
    assert "WARNING: extractors differ" in capsys.readouterr().out


def test_checkpoint_without_recorded_extractors_needs_a_config(checkpoint, videos, tmp_path, capsys):
    spec = load_spec(checkpoint)
    old = tmp_path / "old"
    save_checkpoint(old, build_model(spec), replace(spec, store_modalities=None))
    raw = json.loads((old / "config.json").read_text())
    del raw["store_modalities"]  # as written before checkpoints carried it
    (old / "config.json").write_text(json.dumps(raw))
    assert load_spec(old).store_modalities is None
    assert predict_job.main(["--checkpoint", str(old), str(videos), "--output", str(tmp_path / "out")]) == 2
    assert "give the extraction config" in capsys.readouterr().err


def test_the_recorded_vlm_prompt_and_transcriber_are_rebuilt_and_compared(tmp_path):
    """Behaviour from the VLM's description: the checkpoint's entries rebuild the describer and
    transcriber (not the extracting machine's model folders); a changed prompt is named."""
    extracted = ExtractionConfig.model_validate({
        "sources": [{"corpus": "mosei", "split": "train", "videos": "."}], "modalities": ["text", "behavior"],
        "transcriber": {"local_dir": "/elsewhere/whisper"},
        "describer": {"vlm": "internvl2.5-4b", "prompt": "short", "local_dir": "/elsewhere/internvl"}})
    roberta = {"name": "emoroberta", "model_id": "michellejieli/emotion_text_classifier", "revision": "abc",
               "fingerprint": "f" * 16, "dim": 64, "settings": {"max_length": 64}}
    store = {m: modality_info(extracted, m, roberta) for m in ("text", "behavior")}
    cfg = build_config({**SMALL, "data": {"modalities": ["text", "behavior"]}})
    spec = ModelSpec(cfg, {"text": 64, "behavior": 64}, ["emo", "pt", "ah"], store)
    cfg = predict_config(spec, [str(tmp_path)], tmp_path / "out", {"describer": {"local_dir": "/here/internvl"}})
    assert (cfg.describer.vlm, cfg.describer.prompt, cfg.describer.local_dir) == ("internvl2.5-4b", "short",
                                                                                  "/here/internvl")
    assert cfg.transcriber.local_dir is None and cfg.text_encoder.name == "emoroberta" and cfg.modalities == [
        "text", "behavior"]
    assert setting_differences(spec, cfg) == []
    changed = predict_config(spec, [str(tmp_path)], tmp_path / "out", {"describer": {"prompt": "full"}})
    assert setting_differences(spec, changed) == ["describer.prompt: trained with 'short', here 'full'"]


def test_models_missing_here_are_named_before_any_work(checkpoint, videos, tmp_path):
    """The checkpoint's CLIP and CLAP on a fresh machine without network: one message naming
    both, with the command that fetches them by repository; Ray never starts."""
    env = {**ENV, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "empty_hf"), "HF_HUB_OFFLINE": "1"}
    job = subprocess.run([sys.executable, "ray_jobs/predict.py", "--checkpoint", str(checkpoint), str(videos),
                          "--output", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert job.returncode == 2, job.stderr[-2000:]
    repos = [ENCODERS.get("clip").default_id, ENCODERS.get("clap").default_id]
    assert f"\nerror: predicting with {checkpoint}: 2 of the models" in job.stderr, job.stderr
    named = {line.split()[0]: line.split()[1] for line in job.stderr.splitlines() if line.startswith("  ")}
    assert {k: named[k] for k in ("video_encoder", "audio_encoder")} == dict(zip(("video_encoder", "audio_encoder"),
                                                                               repos)), job.stderr
    assert f"  python -m extraction.models fetch --repo {repos[0]} --repo {repos[1]}\n" in job.stderr
    assert "Traceback" not in job.stderr and "Started a local Ray instance" not in job.stdout + job.stderr
    assert not (tmp_path / "out").exists()


def test_a_store_written_with_the_old_describer_and_transcriber_keys_is_read_under_the_new_ones(tmp_path):
    """Stores written before describer.name became describer.backend (and transcriber.name was
    dropped) record the old keys: they rebuild and compare like new ones."""
    extracted = ExtractionConfig.model_validate({
        "sources": [{"corpus": "mosei", "split": "train", "videos": "."}], "modalities": ["text", "behavior"],
        "describer": {"backend": "vllm", "prompt": "short"}})
    roberta = {"name": "emoroberta", "model_id": "michellejieli/emotion_text_classifier", "revision": "abc",
               "fingerprint": "f" * 16, "dim": 64, "settings": {"max_length": 64}}
    today = {m: modality_info(extracted, m, roberta) for m in ("text", "behavior")}
    old = {}
    for m, info in today.items():
        settings = dict(info.settings)
        if "transcriber" in settings:
            settings["transcriber"] = {"name": "whisper", **settings["transcriber"]}
        if "describer" in settings:
            describer = dict(settings["describer"])
            settings["describer"] = {"name": describer.pop("backend"), **describer}
        old[m] = replace(info, settings=settings)
    assert old["behavior"].settings["describer"]["name"] == "vllm" and "name" in old["text"].settings["transcriber"]
    cfg = build_config({**SMALL, "data": {"modalities": ["text", "behavior"]}})
    spec = ModelSpec(cfg, {"text": 64, "behavior": 64}, ["emo", "pt", "ah"], old)
    rebuilt = predict_config(spec, [str(tmp_path)], tmp_path / "out")
    assert (rebuilt.describer.backend, rebuilt.describer.prompt) == ("vllm", "short")
    assert setting_differences(spec, rebuilt) == []
    assert extractor_differences(spec, today) == ([], [])


def test_predict_under_ray_job_submit(checkpoint, videos, tmp_path, tiny_clip_dir, tiny_clap_dir, head):
    """The same command on the loopback cluster, on a manifest CSV mapped as in extraction
    (``head`` stops this module's local Ray: keep this test last)."""
    _, dashboard = head
    manifest = tmp_path / "clips.csv"
    manifest.write_text(f"clip,file\ninterview_1,{videos / 'face.mp4'}\ninterview_2,{videos / 'empty.mp4'}\n")
    config = tmp_path / "here.yaml"  # the CSV's columns, where this machine keeps the models, small actors
    config.write_text(yaml.safe_dump({
        "columns": {"sample_id": "{clip}", "video": "file"},
        "video_encoder": {"local_dir": str(tiny_clip_dir)}, "audio_encoder": {"local_dir": str(tiny_clap_dir)},
        "resources": {s: {"num_cpus": 0.1} for s in ("decode", "faces", "video", "audio", "predict")}}))
    job = subprocess.run(
        [RAY, "job", "submit", "--address", dashboard, "--working-dir", str(ROOT), "--",
         "python", "ray_jobs/predict.py", "--checkpoint", str(checkpoint), str(manifest),
         "--output", str(tmp_path / "out"), "--config", str(config)],
        env={**ENV, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout and "2 videos, 1 with predictions" in job.stdout, job.stdout[-3000:]
    rows = {r["sample_id"]: r for r in pq.read_table(tmp_path / "out" / f"{PREDICTIONS}.parquet").to_pylist()}
    assert rows["interview_1"]["errors"] == "" and rows["interview_1"]["emotion"] in EMO_CLASSES
    assert rows["interview_2"]["errors"].startswith("decode:")

