"""The paper's encoder comparison (appendix A.5, Tables 7-11), registered in ``ENCODERS``.

Each name below is a config choice (``video_encoder.name=dinov2``, ...) built like the
encoders of ``extraction.encoders``: ``build_encoder(name, model_id=None, local_dir=None,
device="cpu", batch_size=...)``, the default ``model_id`` being the checkpoint of the paper's
footnote. Every encoder returns a sequence [T, D] per sample; the feature is mean || std
over T, so ``info.dim`` is 2D. D below is for the default checkpoint.

Image (video: face crops, Table 7; behaviour "by scene": whole frames, Table 11):

- ``vit``: google/vit-base-patch16-224, CLS token, D = 768;
- ``resnet50``: microsoft/resnet-50, global average pool, D = 2048;
- ``dinov2``: facebook/dinov2-large, CLS token, D = 1024;
- ``emovit_v1``: trpakov/vit-face-expression (ViT fine-tuned on FER2013), CLS, D = 768;
- ``emovit_v2``: dima806/facial_emotions_image_detection (ViT, FER2013), CLS, D = 768;
- ``emotiefflib``: EmotiEffLib's ``enet_b0_8_best_vgaf`` (ONNX engine), D = 1280; needs the
  ``emotiefflib`` and ``onnx`` packages;
- ``emoaffectnet``: EMO-AffectNet (GitHub weights and code only): resolves, cannot run.

Audio (Table 8):

- ``whisper_base``: openai/whisper-base, encoder states, D = 512;
- ``ast``: MIT/ast-finetuned-audioset-10-10-0.4593, patch states averaged over frequency, D = 768;
- ``wav2vec2``: facebook/wav2vec2-base-960h, last hidden state, D = 768;
- ``emowav2vec2``: audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim, last hidden state, D = 1024;
- ``exhubert``: amiriparian/ExHuBERT (custom Hub code): resolves, cannot run.

Text and behaviour "by text" (Tables 9 and 10), all token states at non-padding tokens:

- ``clap_text``: laion/clap-htsat-fused text tower, D = 768;
- ``clip_text``: openai/clip-vit-base-patch32 text tower (77 tokens), D = 512;
- ``bge``: BAAI/bge-large-en, D = 1024;
- ``xlm_roberta``: FacebookAI/xlm-roberta-large, D = 1024;
- ``emodistilroberta``: j-hartmann/emotion-english-distilroberta-base, D = 768;
- ``jina_v3``, ``jina_v4``: jinaai/jina-embeddings-v3 / -v4 (custom Hub code): resolve, cannot run.

(``clip``, ``clap``, ``roberta``, ``emoroberta`` and ``minilm`` are in ``extraction.encoders``, which
imports this module: use ``extraction.encoders.ENCODERS`` / ``build_encoder``.)

The encoders that cannot run raise ``ModelCodeUnavailable`` from their constructor, naming
what is missing and how to obtain it: they exist so that a config naming a paper row fails
with that explanation rather than "unknown encoder". Checkpoints with Python code inside
their Hub repository (``trust_remote_code``) are among them: this platform does not execute
downloaded code.
"""

from __future__ import annotations

import hashlib
import math
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from extraction.encoder_base import (
    ENCODERS,
    Encoder,
    ModelInfo,
    TransformerTextEncoder,
    batches,
    check_images,
    describe_model,
    load_pretrained,
)
from extraction.media import resample
from extraction.types import ModelCodeUnavailable, StageError


# --------------------------------------------------------------------------- image


class HFImageEncoder(Encoder):
    """A transformers vision backbone: ``encode_images(uint8 [K, H, W, 3]) -> float32 [K, D]``.

    ``model_class`` (a transformers class name) is loaded from the checkpoint (classification
    checkpoints included: their head is dropped) and ``pooling`` picks one vector per image:
    ``"cls"`` the first token of the last hidden state (after the final layer norm),
    ``"pooler"`` the model's ``pooler_output`` flattened (ResNet: global average pool). The
    checkpoint's own image processor prepares the pixels, in its PIL implementation so that
    the pixels do not depend on torchvision being installed.
    """

    modality = "image"
    model_class: ClassVar[str]
    pooling: ClassVar[str]
    model_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(self, model_id: str | None = None, local_dir: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 32) -> None:
        super().__init__(model_id, local_dir, device, batch_size)
        import transformers
        from transformers import AutoImageProcessor

        self.processor = AutoImageProcessor.from_pretrained(self.source, backend="pil")
        self.model = load_pretrained(getattr(transformers, self.model_class), self.source, **self.model_kwargs)
        self.model = self.model.to(device)
        config = self.model.config
        dim = config.hidden_sizes[-1] if self.pooling == "pooler" and hasattr(config, "hidden_sizes") \
            else config.hidden_size
        output = "last_hidden_state[:, 0]" if self.pooling == "cls" else "pooler_output"
        self.info = describe_model(self.name, self.model_id, self.source, 2 * dim,
                                   {"output": f"{self.model_class}.{output}"})

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        import torch

        images = check_images(images)
        embeddings = []
        for batch in batches(list(images), self.batch_size):
            pixels = self.processor(images=batch, input_data_format="channels_last", return_tensors="pt")
            with torch.inference_mode():
                out = self.model(pixel_values=pixels["pixel_values"].to(self.device))
            pooled = out.last_hidden_state[:, 0] if self.pooling == "cls" else out.pooler_output.flatten(1)
            embeddings.append(pooled.float().cpu().numpy())
        return np.concatenate(embeddings)


def _image_encoder(name: str, default_id: str, model_class: str, pooling: str, doc: str,
                   **model_kwargs: Any) -> type:
    """Register an ``HFImageEncoder`` configuration under ``name``."""
    cls = type(f"{name.title().replace('_', '')}ImageEncoder", (HFImageEncoder,), {
        "__doc__": doc, "__module__": __name__, "name": name, "default_id": default_id,
        "model_class": model_class, "pooling": pooling, "model_kwargs": model_kwargs,
    })
    return ENCODERS.register(name)(cls)


# ViT classification checkpoints carry no trained pooler (ViTModel's dense + tanh): drop it.
_image_encoder("vit", "google/vit-base-patch16-224", "ViTModel", "cls",
               "Google ViT-B/16 (ImageNet-21k, fine-tuned on ImageNet), paper footnote 3.",
               add_pooling_layer=False)
_image_encoder("resnet50", "microsoft/resnet-50", "ResNetModel", "pooler",
               "ResNet-50 (ImageNet), paper footnote 4.")
_image_encoder("dinov2", "facebook/dinov2-large", "Dinov2Model", "cls",
               "DINOv2 ViT-L/14 (self-supervised), paper footnote 5.")
_image_encoder("emovit_v1", "trpakov/vit-face-expression", "ViTModel", "cls",
               "EmoViT v1: ViT fine-tuned for facial expressions on FER2013, paper footnote 6.",
               add_pooling_layer=False)
_image_encoder("emovit_v2", "dima806/facial_emotions_image_detection", "ViTModel", "cls",
               "EmoViT v2: ViT fine-tuned for facial emotions on FER2013, paper footnote 7.",
               add_pooling_layer=False)


@ENCODERS.register("emotiefflib")
class EmotiEffLibEncoder(Encoder):
    """EmotiEffLib (Savchenko, 2023; paper footnote 9) face features through its ONNX engine:
    ``encode_images(uint8 RGB [K, H, W, 3]) -> float32 [K, D]``.

    ``model_id`` is one of the library's model names (default ``enet_b0_8_best_vgaf``, the
    library's own default, EfficientNet-B0, D = 1280); the features are what its
    ``extract_features`` returns (the input of the emotion classifier), with its own
    preprocessing. The library reads ``<model_id>.onnx`` from its cache ``~/.emotiefflib``
    and fills it from its GitHub repository on first use, so ``local_dir`` is not supported:
    copy the file into that cache instead. The ONNX engine runs on the CPU.
    """

    name = "emotiefflib"
    modality = "image"
    default_id = "enet_b0_8_best_vgaf"
    files_from = "EmotiEffLib downloads <model_id>.onnx into ~/.emotiefflib on first use"

    def __init__(self, model_id: str | None = None, local_dir: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 32) -> None:
        if local_dir is not None:
            raise ValueError("emotiefflib loads its models by name from its cache ~/.emotiefflib; "
                             "copy <model_id>.onnx there instead of passing local_dir")
        super().__init__(model_id, None, device, batch_size)
        try:
            import onnx  # noqa: F401  (the ONNX engine edits the graph with it)
            from emotiefflib.facial_analysis import EmotiEffLibRecognizer
            from emotiefflib.utils import get_model_path_onnx
        except ImportError as error:
            raise ModelCodeUnavailable(
                f"encoder 'emotiefflib' needs the packages emotiefflib and onnx ({error}): "
                "pip install emotiefflib onnx (emotiefflib depends on opencv-python, which shares the cv2 "
                "module with mediapipe's opencv-contrib-python: install it in a separate environment if "
                "the two clash); models come from https://github.com/sb-ai-lab/EmotiEffLib on first use"
            ) from error
        self.recognizer = EmotiEffLibRecognizer(engine="onnx", model_name=self.model_id)
        path = Path(get_model_path_onnx(self.model_id))
        digest = hashlib.sha256(f"{path.name}:{path.stat().st_size}\n".encode()).hexdigest()[:16]
        self.info = ModelInfo(self.name, self.model_id, f"emotiefflib=={version('emotiefflib')}", digest,
                              2 * int(self.recognizer.classifier_weights.shape[1]),
                              {"output": "extract_features", "engine": "onnx"})

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images)
        return np.concatenate([np.asarray(self.recognizer.extract_features(list(batch)), dtype=np.float32)
                               for batch in batches(list(images), self.batch_size)])


# --------------------------------------------------------------------------- audio


class WindowedAudioEncoder(Encoder):
    """``encode_audio(float32 [S], rate) -> float32 [T, D]`` over consecutive windows.

    The wave is resampled to the model's rate and cut into windows of ``self.window``
    samples; each window's sequence is computed (``_encode_windows``) and the sequences are
    concatenated in time. Windows of equal length share a batch and the shorter last one goes
    alone, so no window is ever padded for the sake of its batch-mates and the features do
    not depend on ``batch_size``.
    """

    modality = "audio"
    rate: int
    window: int

    def encode_audio(self, wave: np.ndarray, rate: int) -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"expected mono audio [S], got shape {wave.shape}")
        if wave.size == 0:
            raise StageError("audio", "empty audio")
        wave = resample(wave, rate, self.rate)
        windows = [wave[i : i + self.window] for i in range(0, len(wave), self.window)]
        groups = batches(windows[:-1], self.batch_size) + [windows[-1:]]
        steps = [sequence for group in groups if group for sequence in self._encode_windows(group)]
        steps = [s for s in steps if len(s)]
        if not steps:
            raise StageError("audio", "audio too short")
        return np.concatenate(steps)

    def _encode_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """Equal-length windows -> one float32 [T_i, D] per window (T_i may be 0)."""
        raise NotImplementedError

    def _real_steps(self, sequence: np.ndarray, samples: int) -> np.ndarray:
        """The leading steps of a fixed-length window's sequence that cover real audio, not padding."""
        return sequence[: math.ceil(len(sequence) * samples / self.window)]


class SpeechSSLEncoder(WindowedAudioEncoder):
    """wav2vec 2.0 / HuBERT family: the last hidden state [T, D], 50 steps per second.

    The raw 16 kHz wave goes through the checkpoint's ``Wav2Vec2FeatureExtractor`` (with
    per-window normalisation where the checkpoint asks for it), in windows of at most
    ``window_s`` (30) seconds to bound the attention's memory. A trailing piece shorter than
    the convolutional front end's receptive field (25 ms) yields no step and is dropped.
    """

    model_class: ClassVar[str]
    window_s: ClassVar[float] = 30.0

    def __init__(self, model_id: str | None = None, local_dir: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 4) -> None:
        super().__init__(model_id, local_dir, device, batch_size)
        import transformers
        from transformers import AutoFeatureExtractor

        self.extractor = AutoFeatureExtractor.from_pretrained(self.source)
        # masked_spec_embed is SpecAugment's training-time mask vector, unused at inference.
        self.model = load_pretrained(getattr(transformers, self.model_class), self.source,
                                     ignore_missing=("masked_spec_embed",)).to(device)
        self.rate = self.extractor.sampling_rate
        self.window = int(self.window_s * self.rate)
        config = self.model.config
        self.info = describe_model(self.name, self.model_id, self.source, 2 * config.hidden_size, {
            "output": f"{self.model_class}.last_hidden_state", "sample_rate": self.rate, "window_s": self.window_s,
        })

    def _frames(self, samples: int) -> int:
        for kernel, stride in zip(self.model.config.conv_kernel, self.model.config.conv_stride):
            samples = (samples - kernel) // stride + 1 if samples >= kernel else 0
        return samples

    def _encode_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        if self._frames(len(windows[0])) == 0:
            return []
        inputs = self.extractor(windows, sampling_rate=self.rate, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(input_values=inputs["input_values"].to(self.device)).last_hidden_state
        return list(hidden.float().cpu().numpy())


@ENCODERS.register("wav2vec2")
class Wav2Vec2Encoder(SpeechSSLEncoder):
    """wav2vec 2.0 base fine-tuned for ASR on LibriSpeech 960 h (paper footnote 13)."""

    name = "wav2vec2"
    default_id = "facebook/wav2vec2-base-960h"
    model_class = "Wav2Vec2Model"


@ENCODERS.register("emowav2vec2")
class EmoWav2Vec2Encoder(SpeechSSLEncoder):
    """audEERING's wav2vec 2.0 large-robust (12 layers) fine-tuned on MSP-Podcast for arousal,
    dominance and valence (paper footnote 14): the states of its last transformer layer, which
    the checkpoint's regression head pools."""

    name = "emowav2vec2"
    default_id = "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim"
    model_class = "Wav2Vec2Model"


@ENCODERS.register("whisper_base")
class WhisperAudioEncoder(WindowedAudioEncoder):
    """Whisper's encoder (paper footnote 11): ``WhisperModel.encoder`` states [T, D], 50 per second.

    Whisper always encodes 30 s of log-mel frames (shorter audio is zero-padded by its
    feature extractor), so each 30 s window keeps only its leading steps that cover real
    audio; the mean half of the functionals is then the encoder's mean-pooled state.
    """

    name = "whisper_base"
    default_id = "openai/whisper-base"

    def __init__(self, model_id: str | None = None, local_dir: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 4) -> None:
        super().__init__(model_id, local_dir, device, batch_size)
        from transformers import WhisperFeatureExtractor, WhisperModel

        self.extractor = WhisperFeatureExtractor.from_pretrained(self.source)
        self.model = load_pretrained(WhisperModel, self.source).encoder.to(device)
        self.rate = self.extractor.sampling_rate
        self.window = self.extractor.n_samples
        self.info = describe_model(self.name, self.model_id, self.source, 2 * self.model.config.d_model, {
            "output": "WhisperModel.encoder.last_hidden_state", "sample_rate": self.rate,
            "window_s": self.window / self.rate,
        })

    def _encode_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        inputs = self.extractor(windows, sampling_rate=self.rate, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(input_features=inputs["input_features"].to(self.device)).last_hidden_state
        return [self._real_steps(h, len(w)) for h, w in zip(hidden.float().cpu().numpy(), windows)]


@ENCODERS.register("ast")
class ASTAudioEncoder(WindowedAudioEncoder):
    """Audio Spectrogram Transformer fine-tuned on AudioSet (paper footnote 12): [T', D].

    AST embeds a fixed ``max_length`` of 10 ms fbank frames (1024: 10.24 s per window) as a
    grid of F' x T' overlapping patches plus two summary tokens. The patch states are
    reshaped to [F', T', D] (the patch embedding is a convolution over [frequency, time],
    flattened frequency-major) and averaged over F', giving a time sequence in order, of
    which a window keeps the steps covering real audio. Without torchaudio installed, the
    feature extractor computes the Kaldi fbank in numpy (close to, not bit-identical with,
    torchaudio's).
    """

    name = "ast"
    default_id = "MIT/ast-finetuned-audioset-10-10-0.4593"

    def __init__(self, model_id: str | None = None, local_dir: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 4) -> None:
        super().__init__(model_id, local_dir, device, batch_size)
        from transformers import ASTFeatureExtractor, ASTModel

        self.extractor = ASTFeatureExtractor.from_pretrained(self.source)
        self.model = load_pretrained(ASTModel, self.source).to(device)
        self.rate = self.extractor.sampling_rate
        self.window = self.extractor.max_length * self.rate // 100  # frames of 10 ms
        self.grid = self.model.embeddings.get_shape(self.model.config)  # (F', T')
        self.info = describe_model(self.name, self.model_id, self.source, 2 * self.model.config.hidden_size, {
            "output": "ASTModel.last_hidden_state patches, mean over frequency", "sample_rate": self.rate,
            "window_s": self.window / self.rate,
        })

    def _encode_windows(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        inputs = self.extractor(windows, sampling_rate=self.rate, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(input_values=inputs["input_values"].to(self.device)).last_hidden_state
        patches = hidden[:, -self.grid[0] * self.grid[1] :].reshape(len(windows), *self.grid, -1)
        sequences = patches.mean(dim=1).float().cpu().numpy()  # [B, T', D]
        return [self._real_steps(s, len(w)) for s, w in zip(sequences, windows)]


# --------------------------------------------------------------------------- text


class TextTowerEncoder(TransformerTextEncoder):
    """The text tower of a contrastive pair (CLAP, CLIP): the text transformer's token states,
    before the projection into the joint space.

    ``tower_class`` is a transformers class that reads the text half of the joint checkpoint
    without loading the audio or image tower; ``tower_attr`` the submodule that is the text
    transformer (None: the class itself).
    """

    tower_class: ClassVar[str]
    tower_attr: ClassVar[str | None] = None

    def _load_model(self):
        import transformers

        model = load_pretrained(getattr(transformers, self.tower_class), self.source)
        return getattr(model, self.tower_attr) if self.tower_attr else model


@ENCODERS.register("clap_text")
class ClapTextEncoder(TextTowerEncoder):
    """CLAP's RoBERTa text tower (laion/clap-htsat-fused, paper footnote 10)."""

    name = "clap_text"
    default_id = "laion/clap-htsat-fused"
    # ClapTextModel alone names its parameters without the checkpoint's "text_model." prefix.
    tower_class = "ClapTextModelWithProjection"
    tower_attr = "text_model"


@ENCODERS.register("clip_text")
class ClipTextEncoder(TextTowerEncoder):
    """CLIP's text transformer (openai/clip-vit-base-patch32, footnote 2); 77 tokens at most."""

    name = "clip_text"
    default_id = "openai/clip-vit-base-patch32"
    # Not ...WithProjection: CLIP checkpoints keep projection_dim at the top level only, so
    # the text config alone would build a projection of the wrong size.
    tower_class = "CLIPTextModel"


@ENCODERS.register("bge")
class BgeTextEncoder(TransformerTextEncoder):
    """BGE large (English), a BERT dense retriever (paper footnote 18)."""

    name = "bge"
    default_id = "BAAI/bge-large-en"


@ENCODERS.register("xlm_roberta")
class XlmRobertaTextEncoder(TransformerTextEncoder):
    """XLM-RoBERTa large, multilingual (paper footnote 20)."""

    name = "xlm_roberta"
    default_id = "FacebookAI/xlm-roberta-large"


@ENCODERS.register("emodistilroberta")
class EmoDistilRobertaTextEncoder(TransformerTextEncoder):
    """DistilRoBERTa fine-tuned for 7-class emotion (j-hartmann, paper footnote 21)."""

    name = "emodistilroberta"
    default_id = "j-hartmann/emotion-english-distilroberta-base"


# --------------------------------------------------------------------------- not runnable here


class UnavailableEncoder(Encoder):
    """A paper encoder whose code this platform cannot load: the constructor raises
    ``ModelCodeUnavailable`` with ``missing`` (what) and ``remedy`` (how to obtain it)."""

    missing: ClassVar[str]
    remedy: ClassVar[str]
    files_from = "nowhere on this platform: the encoder cannot run here (its error says how to add it)"

    def __init__(self, model_id: str | None = None, local_dir: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 1) -> None:
        raise ModelCodeUnavailable(
            f"encoder {self.name!r} ({model_id or self.default_id}) cannot run here: {self.missing} "
            f"To use it: {self.remedy}"
        )


def _remote_code_remedy(model_id: str, alternatives: str) -> str:
    return (f"review the code in the Hub repository {model_id}, then wrap "
            f"AutoModel.from_pretrained({model_id!r}, trust_remote_code=True) in an encoder registered in "
            f"extraction.encoder_zoo; or choose {alternatives}")


def _unavailable(name: str, modality: str, default_id: str, missing: str, remedy: str) -> type:
    cls = type(f"{name.title().replace('_', '')}Unavailable", (UnavailableEncoder,), {
        "__doc__": f"{missing} {remedy}", "__module__": __name__, "name": name, "modality": modality,
        "default_id": default_id, "missing": missing, "remedy": remedy,
    })
    return ENCODERS.register(name)(cls)


_unavailable(
    "emoaffectnet", "image", "https://github.com/ElenaRyumina/EMO-AffectNetModel",
    "EMO-AffectNet (Ryumina et al., 2022; paper footnote 8) has no Hugging Face checkpoint or PyPI package: "
    "it is a VGGFace2 ResNet-50 fine-tuned on AffectNet, published as Keras and PyTorch weights "
    "(FER_static_ResNet50_AffectNet.pt) whose model code lives in its GitHub repository, outside transformers.",
    "install the code and weights from https://github.com/ElenaRyumina/EMO-AffectNetModel and register an "
    "encoder wrapping them in extraction.encoder_zoo; or choose another video encoder (emotiefflib, clip, dinov2).",
)
_unavailable(
    "exhubert", "audio", "amiriparian/ExHuBERT",
    "ExHuBERT (paper footnote 15) is a HuBERT-large extended with extra transformer blocks that are defined by "
    "Python code inside its Hub repository (trust_remote_code=True), which this platform does not execute; "
    "transformers' HubertModel cannot hold those blocks.",
    _remote_code_remedy("amiriparian/ExHuBERT", "emowav2vec2")
    + " (its feature extractor is facebook/hubert-base-ls960's).",
)
_unavailable(
    "jina_v3", "text", "jinaai/jina-embeddings-v3",
    "jina-embeddings-v3 (paper footnote 16) is an XLM-RoBERTa with task LoRA adapters whose model code lives in "
    "the Hub repositories jinaai/jina-embeddings-v3 and jinaai/xlm-roberta-flash-implementation "
    "(trust_remote_code=True), which this platform does not execute.",
    _remote_code_remedy("jinaai/jina-embeddings-v3", "xlm_roberta, bge or emoroberta") + ".",
)
_unavailable(
    "jina_v4", "text", "jinaai/jina-embeddings-v4",
    "jina-embeddings-v4 (paper footnote 17) is built on Qwen2.5-VL-3B with LoRA adapters; its model code lives "
    "in its Hub repository (trust_remote_code=True, needs peft), which this platform does not execute.",
    _remote_code_remedy("jinaai/jina-embeddings-v4", "xlm_roberta, bge or emoroberta") + ".",
)

