"""The paper's encoder zoo (appendix A.5), VLMs (Table 5) and prompts (Table 4).

Every encoder whose class is in transformers runs here as a tiny randomly initialised model
of that class, saved to a temporary directory and loaded through ``local_dir`` (nothing is
downloaded); the encoders that need code this platform cannot load are checked for the
message that says what is missing. Also: behaviour "by scene" in the pipeline's stages, the
config's validation of encoder, VLM and prompt choices, and ``search_spaces/encoders.yaml``.
"""

import ast
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from model_fixtures import reset_seed, train_bpe

from extraction.config import ExtractionConfig, load_extraction_config
from extraction.describe import (
    PROMPT,
    PROMPTS,
    SHORT_PROMPT,
    VLMS,
    Describer,
    resolve_prompt,
)
from extraction.encoders import ENCODERS, build_encoder
from extraction.pipeline import modality_infos, plan_stages
from extraction.stages import SceneFeatures, TextFeatures, from_bytes, to_bytes
from extraction.types import ModelCodeUnavailable, StageError, functionals

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "scd-mmpsr-paper.txt"
ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)

# name -> (modality, default checkpoint): the paper's footnotes 2-22 and Table 5.
PAPER_ENCODERS = {
    "clip": ("image", "openai/clip-vit-base-patch32"),
    "vit": ("image", "google/vit-base-patch16-224"),
    "resnet50": ("image", "microsoft/resnet-50"),
    "dinov2": ("image", "facebook/dinov2-large"),
    "emovit_v1": ("image", "trpakov/vit-face-expression"),
    "emovit_v2": ("image", "dima806/facial_emotions_image_detection"),
    "emoaffectnet": ("image", "https://github.com/ElenaRyumina/EMO-AffectNetModel"),
    "emotiefflib": ("image", "enet_b0_8_best_vgaf"),
    "clap": ("audio", "laion/clap-htsat-fused"),
    "whisper_base": ("audio", "openai/whisper-base"),
    "ast": ("audio", "MIT/ast-finetuned-audioset-10-10-0.4593"),
    "wav2vec2": ("audio", "facebook/wav2vec2-base-960h"),
    "emowav2vec2": ("audio", "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim"),
    "exhubert": ("audio", "amiriparian/ExHuBERT"),
    "clap_text": ("text", "laion/clap-htsat-fused"),
    "clip_text": ("text", "openai/clip-vit-base-patch32"),
    "jina_v3": ("text", "jinaai/jina-embeddings-v3"),
    "jina_v4": ("text", "jinaai/jina-embeddings-v4"),
    "bge": ("text", "BAAI/bge-large-en"),
    "roberta": ("text", "FacebookAI/roberta-large"),
    "xlm_roberta": ("text", "FacebookAI/xlm-roberta-large"),
    "emodistilroberta": ("text", "j-hartmann/emotion-english-distilroberta-base"),
    "emoroberta": ("text", "michellejieli/emotion_text_classifier"),
}
PAPER_VLMS = {"qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct", "internvl2.5-4b": "OpenGVLab/InternVL2_5-4B",
              "eagle2-2b": "nvidia/Eagle2-2B"}


def _config(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())


# --------------------------------------------------------------------------- tiny models


def _roberta_tokenizer(max_length: int):
    from transformers import RobertaTokenizer

    vocab, merges = train_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = max_length
    return tokenizer


def build_tiny_vit(path: Path) -> Path:
    """A 7-class ``ViTForImageClassification`` (the format of the EmoViT checkpoints): 32 px, 8 px patches."""
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    reset_seed()
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=48, num_labels=7)
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def build_tiny_resnet(path: Path) -> Path:
    """A ``ResNetForImageClassification`` like microsoft/resnet-50 (bottleneck blocks), two small stages."""
    from transformers import ResNetConfig, ResNetForImageClassification
    from transformers.models.convnext.image_processing_pil_convnext import (
        ConvNextImageProcessorPil,
    )

    reset_seed()
    config = ResNetConfig(embedding_size=8, hidden_sizes=[16, 24], depths=[1, 1], layer_type="bottleneck",
                          num_labels=5)
    ResNetForImageClassification(config).save_pretrained(path)
    ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(path)
    return path


def build_tiny_dinov2(path: Path) -> Path:
    """A ``Dinov2Model`` (the format of facebook/dinov2-large): 28 px crops, 7 px patches."""
    from transformers import Dinov2Config, Dinov2Model
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    reset_seed()
    config = Dinov2Config(image_size=28, patch_size=7, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                          mlp_ratio=2)
    Dinov2Model(config).save_pretrained(path)
    BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}).save_pretrained(path)
    return path


def build_tiny_wav2vec2(path: Path, emotion: bool) -> Path:
    """wav2vec 2.0 at 16 kHz with the real convolutional front end (320 samples per step):
    an ASR ``Wav2Vec2ForCTC`` like facebook/wav2vec2-base-960h (group norm, no attention mask),
    or with ``emotion`` a layer-norm "large-robust" regression model like audEERING's."""
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2ForSequenceClassification,
    )

    reset_seed()
    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                            vocab_size=12, num_labels=3,
                            feat_extract_norm="layer" if emotion else "group", do_stable_layer_norm=emotion)
    (Wav2Vec2ForSequenceClassification if emotion else Wav2Vec2ForCTC)(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=emotion).save_pretrained(path)
    return path


def build_tiny_whisper(path: Path) -> Path:
    """A ``WhisperForConditionalGeneration`` with whisper-base's 80 mel bins and 1500 encoder steps per 30 s."""
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    reset_seed()
    config = WhisperConfig(vocab_size=64, num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_source_positions=1500, max_target_positions=32,
                           bos_token_id=1, eos_token_id=2, pad_token_id=2, decoder_start_token_id=3)
    WhisperForConditionalGeneration(config).save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path


def build_tiny_ast(path: Path) -> Path:
    """An ``ASTForAudioClassification`` on 16 mel bins x 64 frames (0.64 s): a 1 x 5 patch grid."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    reset_seed()
    config = ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       num_mel_bins=16, max_length=64, num_labels=4)
    ASTForAudioClassification(config).save_pretrained(path)
    ASTFeatureExtractor(num_mel_bins=16, max_length=64).save_pretrained(path)
    return path


def build_tiny_clip_text(path: Path) -> Path:
    """A ``CLIPModel`` with a CLIP tokenizer (BPE trained in-process), 32 text positions."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    reset_seed()
    vocab, merges = train_bpe(["<|startoftext|>", "<|endoftext|>"])
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = 32
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_bge(path: Path) -> Path:
    """A ``BertModel`` with pooler (the format of BAAI/bge-large-en) and a WordPiece tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizer

    reset_seed()
    words = sorted({w for line in ["the person looks calm and focused while talking", "she smiles he nods"]
                    for w in line.split()})
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate([*special, *words])})
    tokenizer.model_max_length = 32
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_xlm_roberta(path: Path) -> Path:
    """An ``XLMRobertaForMaskedLM`` (the format of FacebookAI/xlm-roberta-large) + a Unigram tokenizer."""
    from transformers import (
        XLMRobertaConfig,
        XLMRobertaForMaskedLM,
        XLMRobertaTokenizer,
    )

    reset_seed()
    pieces = ["▁the", "▁person", "▁looks", "▁calm", "▁she", "▁smiles", "▁"] + list("abcdefghijklmnopqrstuvwxyz")
    tokenizer = XLMRobertaTokenizer(vocab=[("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
                                           *[(p, -1.0 - i) for i, p in enumerate(pieces)], ("<mask>", 0.0)])
    tokenizer.model_max_length = 32
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=36, pad_token_id=1, bos_token_id=0,
                              eos_token_id=2)
    XLMRobertaForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


INTERNVL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\\n'}}{% endif %}")


def build_tiny_internvl(path: Path) -> Path:
    """An ``InternVLForConditionalGeneration`` in transformers' format (a Qwen2 language model
    like InternVL2.5-4B's): 56 px frames in 14 px patches, pixel-shuffled 2x2 into 4 tokens per
    frame; a Qwen2 tokenizer with InternVL's image tokens and a ChatML template; the PIL
    GotOcr2 image processor; sampling defaults that the describer must override."""
    from transformers import (
        GenerationConfig,
        InternVLConfig,
        InternVLForConditionalGeneration,
        Qwen2Tokenizer,
    )
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
        GotOcr2ImageProcessorPil,
    )

    reset_seed()
    vocab, merges = train_bpe(INTERNVL_SPECIAL)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": INTERNVL_SPECIAL})
    tokenizer.chat_template = CHATML
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in INTERNVL_SPECIAL}
    config = InternVLConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                           image_size=[56, 56], patch_size=[14, 14]),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, bos_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        image_token_id=ids["<IMG_CONTEXT>"], downsample_ratio=0.5,
    )
    model = InternVLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                                               do_sample=True, temperature=0.7, top_k=5)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    GotOcr2ImageProcessorPil(size={"height": 56, "width": 56}, crop_to_patches=False).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``tiny(name)``: the directory of a tiny model, built on first use in this module."""
    builders = {"vit": build_tiny_vit, "resnet": build_tiny_resnet, "dinov2": build_tiny_dinov2,
                "wav2vec2": lambda p: build_tiny_wav2vec2(p, emotion=False),
                "emowav2vec2": lambda p: build_tiny_wav2vec2(p, emotion=True),
                "whisper": build_tiny_whisper, "ast": build_tiny_ast, "clip_text": build_tiny_clip_text,
                "bge": build_tiny_bge, "xlm_roberta": build_tiny_xlm_roberta, "internvl": build_tiny_internvl}
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = builders[name](tmp_path_factory.mktemp(f"tiny-{name}"))
        return built[name]

    return get


# --------------------------------------------------------------------------- names and ids


def test_every_paper_encoder_resolves_with_the_footnote_checkpoint():
    for name, (modality, default_id) in PAPER_ENCODERS.items():
        cls = ENCODERS.get(name)
        assert (cls.modality, cls.default_id) == (modality, default_id), name
    for name, model_id in PAPER_VLMS.items():
        assert VLMS.get(name).default_id == model_id
    if not PAPER.is_file():
        pytest.skip("paper text not available")
    paper = PAPER.read_text()
    hub_ids = [i for _, i in PAPER_ENCODERS.values() if i != "enet_b0_8_best_vgaf"]
    assert [i for i in hub_ids if i not in paper] == []


# --------------------------------------------------------------------------- image


IMAGE_CASES = [("vit", "vit", "hidden_size"), ("emovit_v1", "vit", "hidden_size"), ("emovit_v2", "vit", "hidden_size"),
               ("resnet50", "resnet", "hidden_sizes"), ("dinov2", "dinov2", "hidden_size")]


@pytest.mark.parametrize("name,model,dim_key", IMAGE_CASES)
def test_image_encoders(tiny, name, model, dim_key):
    directory = tiny(model)
    dim = _config(directory)[dim_key]
    dim = dim[-1] if isinstance(dim, list) else dim
    encoder = build_encoder(name, local_dir=directory, batch_size=2)
    images = RNG.integers(0, 256, (5, 40, 30, 3), dtype=np.uint8)
    embeddings = encoder.encode_images(images)
    assert embeddings.shape == (5, dim) and embeddings.dtype == np.float32 and np.isfinite(embeddings).all()
    # Batching does not change a crop's embedding.
    np.testing.assert_allclose(encoder.encode_images(images[:1])[0], embeddings[0], rtol=1e-4, atol=1e-5)
    assert encoder.info.dim == 2 * dim == functionals(embeddings).shape[0]
    assert encoder.info.model_id == ENCODERS.get(name).default_id and len(encoder.info.fingerprint) == 16
    with pytest.raises(StageError, match="no images"):
        encoder.encode_images(np.zeros((0, 40, 30, 3), np.uint8))


def test_a_checkpoint_without_some_weights_is_refused(tiny, tmp_path):
    # A config that asks for a block the weights lack (as a block-extended checkpoint would):
    # transformers would fill it with random values and only log a warning.
    shutil.copytree(tiny("vit"), tmp_path / "vit")
    config = _config(tmp_path / "vit")
    (tmp_path / "vit" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))
    with pytest.raises(ValueError, match=r"no weights for \d+ parameters of ViTModel \(e\.g\. \['[\w.]*layers?\.1\."):
        build_encoder("vit", local_dir=tmp_path / "vit")


# --------------------------------------------------------------------------- audio


def test_wav2vec2_family_steps_and_windows(tiny, monkeypatch):
    for name in ("wav2vec2", "emowav2vec2"):
        directory = tiny(name)
        encoder = build_encoder(name, local_dir=directory, batch_size=2)
        hidden = _config(directory)["hidden_size"]
        wave = RNG.normal(0, 0.1, 32000).astype(np.float32)  # 2 s at 16 kHz: 99 steps of 20 ms
        sequence = encoder.encode_audio(wave, 16000)
        assert sequence.shape == (99, hidden) and encoder.info.dim == 2 * hidden
        # 44.1 kHz input is resampled first.
        assert encoder.encode_audio(RNG.normal(0, 0.1, 88200).astype(np.float32), 44100).shape == (99, hidden)
        with pytest.raises(StageError, match="audio too short"):
            encoder.encode_audio(np.zeros(100, np.float32), 16000)

    # Long audio is cut into windows: 0.5 s windows over 1.6 s = 3 full (24 steps each) and 0.1 s (4 steps).
    monkeypatch.setattr(encoder, "window", 8000)
    wave = RNG.normal(0, 0.1, 25600).astype(np.float32)
    sequence = encoder.encode_audio(wave, 16000)
    assert len(sequence) == 3 * 24 + 4
    encoder.batch_size = 1  # no window is ever padded: the batch size does not matter
    np.testing.assert_allclose(encoder.encode_audio(wave, 16000), sequence, rtol=1e-4, atol=1e-5)


def test_whisper_encoder_keeps_the_steps_of_real_audio(tiny):
    directory = tiny("whisper")
    encoder = build_encoder("whisper_base", local_dir=directory, batch_size=2)
    d_model = _config(directory)["d_model"]
    assert encoder.info.settings["window_s"] == 30 and encoder.info.dim == 2 * d_model
    # 3 s of audio is zero-padded to Whisper's 30 s; only the 150 steps covering the audio stay.
    sequence = encoder.encode_audio(RNG.normal(0, 0.1, 48000).astype(np.float32), 16000)
    assert sequence.shape == (150, d_model) and np.isfinite(sequence).all()
    with pytest.raises(StageError, match="empty audio"):
        encoder.encode_audio(np.zeros(0, np.float32), 16000)


def test_ast_time_sequence(tiny):
    directory = tiny("ast")
    encoder = build_encoder("ast", local_dir=directory, batch_size=2)
    hidden = _config(directory)["hidden_size"]
    assert encoder.grid == (1, 5) and encoder.window == 64 * 160
    # 2.5 windows: two full ones (5 steps each) and half a window (3 of its 5 steps).
    wave = RNG.normal(0, 0.1, int(2.5 * encoder.window)).astype(np.float32)
    sequence = encoder.encode_audio(wave, 16000)
    assert sequence.shape == (13, hidden) and encoder.info.dim == 2 * hidden
    encoder.batch_size = 1
    np.testing.assert_allclose(encoder.encode_audio(wave, 16000), sequence, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- text


TEXT_CASES = [("clap_text", "clap", lambda c: c["text_config"]["hidden_size"]),
              ("clip_text", "clip_text", lambda c: c["text_config"]["hidden_size"]),
              ("bge", "bge", lambda c: c["hidden_size"]),
              ("xlm_roberta", "xlm_roberta", lambda c: c["hidden_size"]),
              ("emodistilroberta", "roberta", lambda c: c["hidden_size"])]


@pytest.mark.parametrize("name,model,hidden", TEXT_CASES)
def test_text_encoders(tiny, tiny_clap_dir, tiny_roberta_dir, name, model, hidden):
    directory = {"clap": tiny_clap_dir, "roberta": tiny_roberta_dir}.get(model) or tiny(model)
    encoder = build_encoder(name, local_dir=directory, batch_size=2)
    dim = hidden(_config(directory))
    texts = ["the person looks calm", "she smiles and the person looks focused while talking", "he nods"]
    sequences = encoder.encode_texts(texts)
    lengths = [len(encoder.tokenizer(t, truncation=True, max_length=encoder.max_length)["input_ids"]) for t in texts]
    assert [s.shape for s in sequences] == [(n, dim) for n in lengths]
    # Padding never leaks in: a text alone gives the same states as inside a padded batch.
    np.testing.assert_allclose(encoder.encode_texts(texts[:1])[0], sequences[0], rtol=1e-4, atol=1e-5)
    assert encoder.info.dim == 2 * dim
    with pytest.raises(StageError, match="empty text"):
        encoder.encode_texts(["  "])


# --------------------------------------------------------------------------- not runnable here


@pytest.mark.parametrize("name,needs", [
    ("emoaffectnet", "github.com/ElenaRyumina/EMO-AffectNetModel"),
    ("exhubert", "trust_remote_code"),
    ("jina_v3", "trust_remote_code"),
    ("jina_v4", "trust_remote_code"),
])
def test_encoders_needing_outside_code_say_what_and_how(name, needs):
    with pytest.raises(ModelCodeUnavailable) as error:
        build_encoder(name)
    message = str(error.value)
    assert f"encoder {name!r}" in message and needs in message and "To use it:" in message
    assert ENCODERS.get(name).default_id in message


def test_emotiefflib_names_its_packages():
    try:
        import emotiefflib  # noqa: F401
        import onnx  # noqa: F401
    except ImportError:
        with pytest.raises(ModelCodeUnavailable, match=r"pip install emotiefflib onnx"):
            build_encoder("emotiefflib")
    else:
        pytest.skip("emotiefflib is installed")
    with pytest.raises(ValueError, match="~/.emotiefflib"):
        build_encoder("emotiefflib", local_dir="/tmp")


# --------------------------------------------------------------------------- VLMs and prompts


def test_internvl_transformers_backend_generates(tiny, monkeypatch):
    describer = Describer(vlm="internvl2.5-4b", local_dir=tiny("internvl"), batch_size=2, prompt=SHORT_PROMPT)
    backend = describer._backend
    assert backend.tokens_per_frame == 4
    seen, new_tokens = [], []
    generate = backend.model.generate

    def recording_generate(**inputs):
        seen.append(inputs)
        output = generate(**inputs)
        new_tokens.append(output[:, inputs["input_ids"].shape[1] :].tolist())
        return output

    monkeypatch.setattr(backend.model, "generate", recording_generate)
    clips = [RNG.integers(0, 256, (10, 48, 64, 3), dtype=np.uint8), np.zeros((0, 48, 64, 3), np.uint8),
             RNG.integers(0, 256, (3, 60, 40, 3), dtype=np.uint8)]
    results = describer.describe_batch(clips)
    # One batch of the two clips with frames: 8 (sampled) and 3 frames of 4 image tokens each.
    (inputs,) = seen
    assert 0 < len(new_tokens[0][0]) <= 75
    image_tokens = (inputs["input_ids"] == backend.model.config.image_token_id).sum(dim=1).tolist()
    assert image_tokens == [8 * 4, 3 * 4] and inputs["pixel_values"].shape == (11, 3, 56, 56)
    assert isinstance(results[1], StageError) and results[1].reason == "no frames"
    for result in (results[0], results[2]):
        assert (isinstance(result, str) and result == result.strip() and result) or (
            isinstance(result, StageError) and result.reason == "empty description")
    # Greedy despite the checkpoint's sampling defaults: the same clip, the same tokens alone.
    assert [str(r) for r in describer.describe_batch(clips[:1])] == [str(results[0])]
    assert new_tokens[1][0] == new_tokens[0][0][: len(new_tokens[1][0])]
    assert describer.info.name == "internvl2.5-4b" and describer.info.model_id == "OpenGVLab/InternVL2_5-4B"


def test_vlms_without_a_transformers_backend_say_why(tmp_path):
    with pytest.raises(ModelCodeUnavailable, match="no transformers backend.*eagle_chat.*vllm backend"):
        Describer(vlm="eagle2-2b", local_dir=tmp_path)
    # The original InternVL2.5 repository format (its own model code) is recognised before any weight loads.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "internvl_chat"}))
    with pytest.raises(ModelCodeUnavailable, match="'internvl_chat'.*convert_internvl_weights_to_hf"):
        Describer(vlm="internvl2.5-4b", local_dir=tmp_path)
    with pytest.raises(KeyError, match=r"unknown VLM 'llava'; choose one of \['eagle2-2b', 'internvl2.5-4b', "):
        Describer(vlm="llava", local_dir=tmp_path)
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install -e \.\[gpu\]"):
            Describer(vlm="eagle2-2b", backend="vllm", local_dir=tmp_path)


def test_prompts_of_table_4():
    assert resolve_prompt("full") == PROMPT and resolve_prompt("short") == SHORT_PROMPT
    if PAPER.is_file():
        paper = PAPER.read_text()
        assert all(PROMPTS.get(n).text in paper for n in ("full", "short"))
    # The paper cites the two emotion-only prompts without their wording: it must be given.
    for name in ("zhang2025", "cheng2024", "custom"):
        with pytest.raises(ValueError, match=f"prompt '{name}' .* give it as prompt_text"):
            resolve_prompt(name)
        assert resolve_prompt(name, "Describe the emotion.") == "Describe the emotion."
    with pytest.raises(ValueError, match="has the paper's wording"):
        resolve_prompt("full", "something else")
    with pytest.raises(KeyError, match=r"unknown prompt 'long'; choose one of \['cheng2024', 'custom', 'full', "):
        resolve_prompt("long")


# --------------------------------------------------------------------------- config and pipeline


def _cfg(**values) -> ExtractionConfig:
    return ExtractionConfig.model_validate({"sources": [{"corpus": "mosei", "split": "train", "videos": "v"}],
                                            **values})


def test_config_validates_encoders_vlm_and_prompt(tmp_path):
    path = tmp_path / "extract.yaml"
    path.write_text("sources: [{corpus: mosei, split: train, videos: v}]\n")
    cfg = load_extraction_config(path, ["describer.prompt=short", "describer.vlm=internvl2.5-4b",
                                        "video_encoder.name=dinov2", "audio_encoder.name=emowav2vec2"])
    assert cfg.describer.prompt_wording() == SHORT_PROMPT and cfg.describer.vlm == "internvl2.5-4b"
    assert cfg.behavior_from == "description"
    assert load_extraction_config(path, ["describer.prompt=cheng2024", "describer.prompt_text=Which emotion?"]
                                  ).describer.prompt_wording() == "Which emotion?"
    bad = {
        "describer.prompt=long": "unknown prompt 'long'; choose one of",
        "describer.prompt=zhang2025": "give it as prompt_text",
        "describer.vlm=llava": "unknown VLM 'llava'",
        "video_encoder.name=clap": "video_encoder: encoder 'clap' encodes audio; video_encoder takes image encoders",
        "text_encoder.name=vit": "text_encoder: encoder 'vit' encodes image",
        "audio_encoder.name=wav2vec": "audio_encoder: unknown encoder 'wav2vec'; choose one of",
    }
    for override, message in bad.items():
        with pytest.raises(Exception, match=re.escape(message)):
            load_extraction_config(path, [override])


def test_behaviour_by_scene_plans_and_runs_the_scene_stage(tiny, tiny_roberta_dir):
    rows = [{"video": "a.mp4", "has_transcript": False, "has_description": False}]
    by_text = _cfg(behavior_encoder={"name": "clip_text"})
    assert plan_stages(by_text, rows) == ["decode", "faces", "video", "audio", "transcribe", "describe", "text"]
    scene = _cfg(behavior_encoder={"name": "vit", "local_dir": str(tiny("vit"))},
                 text_encoder={"name": "emoroberta", "local_dir": str(tiny_roberta_dir)})
    assert scene.behavior_from == "frames"
    assert plan_stages(scene, rows) == ["decode", "faces", "video", "audio", "transcribe", "text", "scene"]
    assert plan_stages(scene.model_copy(update={"modalities": ["behavior"]}), rows) == ["decode", "scene"]

    # The text stage leaves behaviour alone; the scene stage encodes the whole frames.
    assert [m for m, _, _ in TextFeatures(scene).targets] == ["text"]
    frames = RNG.integers(0, 256, (4, 36, 48, 3), dtype=np.uint8)
    batch = {"sample_id": np.array(["a", "b"], dtype=object), "errors": np.array(["[]", "[]"], dtype=object),
             "frames": np.array([to_bytes(frames), b""], dtype=object)}
    stage = SceneFeatures(scene)
    out = stage(batch)
    expected = functionals(stage.encoder.encode_images(frames))
    np.testing.assert_allclose(from_bytes(out["f_behavior"][0]), expected, rtol=1e-5)
    assert out["f_behavior"][1] == b"" and json.loads(out["info_behavior"][0])["name"] == "vit"


def test_manifest_says_where_behaviour_came_from():
    import pyarrow as pa

    info = {"name": "vit", "model_id": "google/vit-base-patch16-224", "revision": None, "fingerprint": "f" * 16,
            "dim": 48, "settings": {"output": "ViTModel.last_hidden_state[:, 0]"}}
    tables = {("mosei", "train"): pa.table({"info_behavior": [json.dumps(info)]})}
    scene = _cfg(modalities=["behavior"], frames=20, behavior_encoder={"name": "vit"})
    behaviour = modality_infos(scene, tables)["behavior"]
    assert behaviour.frames == 20 and behaviour.settings["source"] == "frames" and "describer" not in behaviour.settings
    by_text = _cfg(modalities=["behavior"], describer={"prompt": "short", "vlm": "internvl2.5-4b"})
    behaviour = modality_infos(by_text, tables)["behavior"]
    assert behaviour.frames is None and behaviour.settings["source"] == "description"
    describer = behaviour.settings["describer"]
    assert describer["prompt"] == "short" and describer["vlm"] == "internvl2.5-4b"


def test_encoders_space_loads_and_names_one_store_per_table_row():
    from tuning.spaces import load_space

    space = load_space(ROOT / "search_spaces" / "encoders.yaml")
    stores = [overrides.get("data.features", space.fixed["data.features"]) for overrides in space.variants.values()]
    assert len(stores) == len(set(stores)) == space.num_trials() and space.variants["base"] == {}
    assert all(set(overrides) <= {"data.features"} for overrides in space.variants.values())
    trial = space.resolve({"variant": "scene_dinov2"})
    assert trial["data.features"] == "features/encoders/scene_dinov2" and trial["model.graph"] == "gat"
    # Every store's extraction command is written next to it and names registered choices.
    text = (ROOT / "search_spaces" / "encoders.yaml").read_text()
    for name in re.findall(r"(?:video|audio|text|behavior)_encoder\.name=(\w+)", text):
        assert name in ENCODERS, name
    for name in re.findall(r"describer\.vlm=([\w.-]+)", text):
        assert name in VLMS, name


def test_the_encoder_modules_import_one_way():
    """encoders -> encoder_zoo -> encoder_base, never back; describe and transcribe need only the
    base (no cycle that works by import order, and no zoo loaded for one exception)."""
    imports = {}
    for name in ("encoder_base", "encoder_zoo", "encoders", "describe", "transcribe"):
        tree = ast.parse((ROOT / "extraction" / f"{name}.py").read_text())
        found = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        found |= {f"{node.module}.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                  and node.module == "extraction" for a in node.names}
        imports[name] = {m.removeprefix("extraction.") for m in found if m.startswith("extraction.")}
    assert imports["encoder_base"] <= {"types"}
    assert "encoders" not in imports["encoder_zoo"] and "encoder_base" in imports["encoder_zoo"]
    assert {"encoder_zoo", "encoder_base"} <= imports["encoders"]
    for name in ("describe", "transcribe"):
        assert not imports[name] & {"encoders", "encoder_zoo"}, name
