"""Tiny randomly initialised models of the real classes, saved to disk for ``local_dir`` loading.

Its session fixtures (``tiny_clip_dir``, ...) reach every test through ``pytest_plugins`` in
``tests/conftest.py``: each model is built once per test session, in a few seconds at most.
Or call the ``build_*`` functions directly. Every builder writes exactly what the matching loader in ``extraction``
reads, in the format of the real Hugging Face checkpoint, and nothing is downloaded.

Tokenizers are trained in-process with the ``tokenizers`` library on a few sentences
(``RobertaTokenizer(vocab_file=..., merges_file=...)`` silently yields an empty tokenizer, so
the vocabulary and merges are passed as objects).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Enough text for a byte-level BPE with a few hundred merges; the content does not matter.
_CORPUS = [
    "the person looks calm and focused while talking to the camera",
    "she smiles, raises her eyebrows and nods slowly",
    "he seems hesitant: his gaze drifts away and his hands fidget",
    "and so my fellow americans ask not what your country can do for you",
    "ask what you can do for your country",
    "neutral anger disgust fear happiness sadness surprise",
    "openness conscientiousness extraversion agreeableness neuroticism",
]

QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def train_bpe(special: list[str], vocab_size: int = 400) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE trained on ``_CORPUS``: (vocab, merges), special tokens first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    merges = [tuple(pair) for pair in json.loads(tok.to_str())["model"]["merges"]]
    return tok.get_vocab(), merges


def reset_seed() -> None:
    import torch

    torch.manual_seed(0)


def build_tiny_clip(path: Path) -> Path:
    """A ``CLIPModel`` (32x32 images, 8x8 patches, projection 24) + its image processor."""
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    reset_seed()
    config = CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=2,
                         pad_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=24,
    )
    CLIPModel(config).save_pretrained(path)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def build_tiny_clap(path: Path) -> Path:
    """A fused ``ClapModel`` like ``laion/clap-htsat-fused``, shrunk: 16 mel bins, 64x64 HTSAT
    input, two Swin stages (hidden 8 -> 16), 2 s windows at 48 kHz; + ``ClapProcessor``.

    The audio encoder's last hidden state is [B, 16, 2, 16]: 16 time steps per 2 s window.
    """
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    reset_seed()
    config = ClapConfig(
        text_config=dict(vocab_size=400, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=34),
        audio_config=dict(num_mel_bins=16, spec_size=64, window_size=4, depths=[1, 1],
                          num_attention_heads=[1, 2], patch_embeds_hidden_size=8, hidden_size=16,
                          enable_fusion=True, fusion_type="aff_2d", num_hidden_layers=2),
        projection_dim=16,
    )
    ClapModel(config).save_pretrained(path)
    extractor = ClapFeatureExtractor(feature_size=16, sampling_rate=48000, hop_length=480, max_length_s=2,
                                     fft_window_size=1024, truncation="fusion", padding="repeatpad")
    vocab, merges = train_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(path)
    return path


def build_tiny_roberta(path: Path) -> Path:
    """A 7-class ``RobertaForSequenceClassification`` (the format of EmoRoBERTa) + tokenizer."""
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizer

    reset_seed()
    vocab, merges = train_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, max_position_embeddings=66, num_labels=7,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    RobertaForSequenceClassification(config).save_pretrained(path)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(path)
    return path


def build_tiny_qwen25vl(path: Path) -> Path:
    """A ``Qwen2_5_VLForConditionalGeneration`` (text: 2 layers x 64, vision: 2 blocks x 32, the
    real 14-pixel patches, 2x2 merge and 2-frame temporal patches), a Qwen2 tokenizer with the
    ChatML and vision special tokens, the PIL Qwen2-VL image processor (frames of at most 56x56
    pixels: 4 tokens each) and the real checkpoint's sampling defaults in generation_config.json.

    No processor object: ``Qwen2_5_VLProcessor`` cannot even be constructed without
    torchvision in transformers 5.24 (see ``extraction.describe``).
    """
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    reset_seed()
    vocab, merges = train_bpe(QWEN_SPECIAL)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1], window_size=56, tokens_per_second=2),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    # The real checkpoint ships sampling defaults; the describer must override them with greedy.
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        do_sample=True, temperature=0.1, top_p=0.001, top_k=1, repetition_penalty=1.05,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56).save_pretrained(path)
    return path


# Whisper's multilingual id layout (the 99 languages of whisper-large-v2 and older).
WHISPER_EOT = 50257
WHISPER_LANGUAGES = 99
WHISPER_NO_TIMESTAMPS = 50363


def build_tiny_whisper_ct2(path: Path) -> Path:
    """A tiny multilingual ``WhisperForConditionalGeneration`` (``path/hf``) converted to
    CTranslate2 (``path/ct2``, returned: loadable by ``faster_whisper.WhisperModel``).

    The BPE vocabulary is trained in-process and padded to Whisper's id layout: fillers (among
    them the empty token "", without which CTranslate2 treats the model as English-only) up to
    end-of-text 50257, then <|startoftranscript|>, 99 language tokens, the task tokens and
    <|notimestamps|> at 50363; the converter appends the 1501 timestamp tokens.
    """
    from ctranslate2.converters import TransformersConverter
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    reset_seed()
    vocab, merges = train_bpe([])
    fillers = [""] + [f"<|filler{i}|>" for i in range(WHISPER_EOT - len(vocab) - 1)]
    vocab.update({token: len(vocab) + i for i, token in enumerate(fillers)})
    languages = [f"<|{code}|>" for code in list(LANGUAGES)[:WHISPER_LANGUAGES]]
    specials = ["<|endoftext|>", "<|startoftranscript|>", *languages, "<|translate|>", "<|transcribe|>",
                "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == WHISPER_EOT
    assert tokenizer.convert_tokens_to_ids("<|notimestamps|>") == WHISPER_NO_TIMESTAMPS

    config = WhisperConfig(
        vocab_size=WHISPER_NO_TIMESTAMPS + 1 + 1501, num_mel_bins=80, d_model=32, encoder_layers=1,
        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_source_positions=1500, max_target_positions=448,
        bos_token_id=WHISPER_EOT, eos_token_id=WHISPER_EOT, pad_token_id=WHISPER_EOT,
        decoder_start_token_id=WHISPER_EOT + 1, suppress_tokens=[], begin_suppress_tokens=[220, WHISPER_EOT],
    )
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=WHISPER_EOT + 1, eos_token_id=WHISPER_EOT, pad_token_id=WHISPER_EOT,
        suppress_tokens=[], begin_suppress_tokens=[220, WHISPER_EOT], is_multilingual=True,
        lang_to_id={token: tokenizer.convert_tokens_to_ids(token) for token in languages},
        task_to_id={task: tokenizer.convert_tokens_to_ids(f"<|{task}|>") for task in ("translate", "transcribe")},
        no_timestamps_token_id=WHISPER_NO_TIMESTAMPS,
    )
    hf = path / "hf"
    model.save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(hf)
    # The Python form of `ct2-transformers-converter --copy_files tokenizer.json preprocessor_config.json`.
    TransformersConverter(str(hf), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(str(path / "ct2"))
    return path / "ct2"


# Session fixtures (registered for every test module by tests/conftest.py's pytest_plugins).


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clap(tmp_path_factory.mktemp("tiny-clap"))


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="session")
def tiny_qwen25vl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny-qwen25vl"))


@pytest.fixture(scope="session")
def tiny_whisper_ct2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper_ct2(tmp_path_factory.mktemp("tiny-whisper"))
