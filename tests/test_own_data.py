"""Data of your own: the example configs, the `unlabelled` corpus (features for prediction, or
extra rows that SSL pseudo-labels), an encoder given by its folder alone, and the renamed
describer/transcriber keys."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from media_fixtures import face_video

from extraction.config import ENCODER_DEFAULTS, load_extraction_config
from extraction.manifest import read_sources
from extraction.stages import VideoFeatures
from scd_core.config import ConfigError, load_config
from scd_core.features import FeatureStoreWriter, Manifest, validate_store
from scd_core.data import load_training_data
from scd_core.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def test_folder_of_own_videos_is_the_unlabelled_corpus(tmp_path):
    for name in ("a.mp4", "b.MOV", "c.webm"):
        (tmp_path / name).write_bytes(b"")
    cfg = load_extraction_config(CONFIGS / "extract_my_videos.yaml", [f"data_root={tmp_path}"])
    rows = read_sources(cfg)
    assert sorted(r["sample_id"] for r in rows) == ["a", "b", "c"]
    assert {r["corpus"] for r in rows} == {"unlabelled"} and {r["split"] for r in rows} == {"train"}
    assert all(r["labels"] == {} and r["video"] for r in rows)


def test_labelled_csv_of_your_own(tmp_path):
    (tmp_path / "my_corpus.csv").write_text(
        "clip,file,O,C,E,A,S,text\n"
        's01_q1,videos/s01_q1.mp4,0.61,0.55,0.40,0.70,0.52,"I think it went well."\n'
        "s01_q2,videos/s01_q2.mp4,0.6,0.5,0.4,0.7,0.5,Not sure.\n"
        "s02_q1,videos/s02_q1.mp4,0.3,0.2,0.9,0.1,0.8,Yes!\n")
    cfg = load_extraction_config(CONFIGS / "extract_my_corpus.yaml", [f"data_root={tmp_path}"])
    rows = {r["sample_id"]: r for r in read_sources(cfg)}
    assert rows["s01_q1"]["labels"] == {"pt_openness": 0.61, "pt_conscientiousness": 0.55, "pt_extraversion": 0.40,
                                        "pt_agreeableness": 0.70, "pt_non_neuroticism": 0.52}
    assert rows["s01_q1"]["video"] == str(tmp_path / "videos" / "s01_q1.mp4")
    assert rows["s01_q1"]["transcript"] == "I think it went well."
    assert rows["s01_q1"]["split"] == rows["s01_q2"]["split"]  # one speaker, one split


def test_the_unlabelled_corpus_takes_no_labels(tmp_path):
    with pytest.raises(ConfigError, match=r"sources\.0.*corpus 'unlabelled' holds clips without labels"):
        load_extraction_config(CONFIGS / "extract_my_videos.yaml", ["sources=[{corpus: unlabelled, split: test, "
                                                                     "manifest: x.csv, columns: {emotion: e}}]"])


def test_unlabelled_rows_join_ssl_training_and_are_never_scored(demo_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(demo_store, store)
    manifest = Manifest.read(store)
    writer = FeatureStoreWriter(store, manifest.modalities)
    rng = np.random.default_rng(0)
    features = {m: rng.standard_normal((40, info.dim)) for m, info in manifest.modalities.items()}
    writer.write_split("unlabelled", "train", [f"clip{i}" for i in range(40)], features, labels={})  # no dev split
    assert validate_store(store)[1] == []
    summary = subprocess.run([sys.executable, "-m", "scd_core.features", "summary", str(store)],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert summary.returncode == 0 and any(line.split()[:4] == ["unlabelled", "train", "-", "40"]
                                           for line in summary.stdout.splitlines()), summary.stdout

    small = ["model.hidden_dim=32", "model.out_features=32", "optim.epochs=1", "optim.early_stopping_patience=0"]
    plain = load_training_data(load_config(None, small), store, torch.device("cpu"))
    cfg = load_config(None, [*small, "data.train_corpora=[mosei, fiv2, bah, unlabelled]"])
    data = load_training_data(cfg, store, torch.device("cpu"))
    assert len(data.train) == len(plain.train) + 40 and "unlabelled" in data.train.corpora
    own = data.train.corpus_index == data.train.corpora.index("unlabelled")
    assert not any(data.train.label_mask[t][own].any() for t in ("emo", "pt", "ah"))
    assert "unlabelled" not in data.dev
    report = Trainer(cfg, data).fit().history[0]
    ssl = {k: v for k, v in report.losses.items() if k.startswith("ssl_")}
    assert ssl and all(np.isfinite(v) for v in ssl.values()), report.losses
    assert not any(name.startswith("unlabelled") for name in report.metrics)


def test_the_unlabelled_corpus_cannot_be_scored():
    with pytest.raises(ConfigError, match="zero_shot_corpora.*no labels to score"):
        load_config(None, ["data.zero_shot_corpora=[meld, unlabelled]"])


def test_an_encoder_given_by_its_folder_alone(tiny_clip_dir, tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    cfg = load_extraction_config(CONFIGS / "extract_my_videos.yaml",
                                 [f"data_root={tmp_path}", f"video_encoder.local_dir={tiny_clip_dir}",
                                  "behavior_encoder.model_id=my/roberta"])
    assert (cfg.video_encoder.name, cfg.video_encoder.local_dir) == (ENCODER_DEFAULTS["video_encoder"],
                                                                     str(tiny_clip_dir))
    assert (cfg.behavior_encoder.name, cfg.behavior_encoder.model_id) == ("emoroberta", "my/roberta")
    stage = VideoFeatures(cfg)  # the tiny CLIP loads from the folder
    assert stage.encoder.info.name == "clip" and stage.encoder.source == str(tiny_clip_dir)
    named = load_extraction_config(CONFIGS / "extract_my_videos.yaml",
                                   [f"data_root={tmp_path}", "video_encoder={name: dinov2, local_dir: /m}"])
    assert named.video_encoder.name == "dinov2"


@pytest.mark.parametrize("override,message", [
    ("describer.name=vllm", r"describer: .*describer\.name was renamed describer\.backend"),
    ("transcriber.name=whisper", r"transcriber: .*transcriber\.name is no longer a setting"),
])
def test_old_keys_say_what_replaced_them(override, message):
    with pytest.raises(ConfigError, match=message):
        load_extraction_config(CONFIGS / "extract_my_videos.yaml", [override])
    assert load_extraction_config(CONFIGS / "extract_my_videos.yaml", ["describer.backend=vllm"]
                                  ).describer.backend == "vllm"


def test_every_shipped_config_and_search_space_uses_todays_keys():
    for path in [*CONFIGS.glob("*.yaml"), ROOT / "search_spaces" / "encoders.yaml", ROOT / "README.md"]:
        text = path.read_text()
        assert "describer.name" not in text and "transcriber.name" not in text, path
        if path.parent == CONFIGS and path.name.startswith("extract_"):
            assert load_extraction_config(path, ["data_root=."]).sources, path


@pytest.mark.slow
def test_the_example_config_extracts_a_folder_of_videos_end_to_end(tmp_path, tiny_clip_dir, tiny_clap_dir,
                                                                  tiny_roberta_dir, tiny_whisper_ct2_dir,
                                                                  tiny_qwen25vl_dir):
    """The README's command on a folder of clips, every model given as a local folder: the check
    passes, every stage runs, and the clips land in the unlabelled corpus of a valid store."""
    clips = tmp_path / "clips"
    clips.mkdir()
    face_video(clips / "interview.mp4", seconds=2)
    models = {"video_encoder": tiny_clip_dir, "audio_encoder": tiny_clap_dir, "text_encoder": tiny_roberta_dir,
              "behavior_encoder": tiny_roberta_dir, "transcriber": tiny_whisper_ct2_dir,
              "describer": tiny_qwen25vl_dir}
    job = subprocess.run(
        [sys.executable, "ray_jobs/extract_features.py", "--config", str(CONFIGS / "extract_my_videos.yaml"),
         f"data_root={clips}", f"output={tmp_path / 'store'}", "frames=4",
         *(f"{field}.local_dir={path}" for field, path in models.items())],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
        timeout=600)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    splits, problems = validate_store(tmp_path / "store")
    (store,) = splits
    assert problems == [] and (store.corpus, len(store)) == ("unlabelled", 1) and store.split == "train"
    assert store.present["video"].all() and store.present["audio"].all() and store.present["behavior"].all()
    assert all(np.isnan(values).all() for values in store.labels.values())
