"""What every encoder shares: the ``ENCODERS`` registry, the ``Encoder`` base class, the
model provenance (``ModelInfo``) and the loading helpers.

``extraction.encoders`` (the paper's encoders) and ``extraction.encoder_zoo`` (the encoder
comparison of appendix A.5) both build on this module and register their classes in
``ENCODERS``; ``extraction.describe`` and ``extraction.transcribe`` use its loading helpers.
Importing it loads neither torch nor transformers.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from extraction.types import StageError
from scd_core.registry import Registry

ENCODERS: Registry[type] = Registry("encoder")

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class ModelInfo:
    """What the manifest records about a loaded model.

    revision: the commit of the Hugging Face snapshot the files were read from (what the
    loaded config's ``_commit_hash`` holds), None for a ``local_dir``; fingerprint: 16 hex
    digits of sha256 over the weight files' names and sizes and config.json's bytes; dim: the
    feature length after functionals (2D), None for models that do not produce features;
    settings: the options that change the output beyond the weights.
    """

    name: str
    model_id: str
    revision: str | None
    fingerprint: str
    dim: int | None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_source(model_id: str, local_dir: str | Path | None) -> str:
    """What to hand to ``from_pretrained``: ``local_dir`` (which must exist) or ``model_id``."""
    if local_dir is None:
        return model_id
    path = Path(local_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"local_dir {str(path)!r} for model {model_id!r} is not a directory")
    return str(path)


def model_directory(source: str) -> Path:
    """The directory the model files were read from: ``source`` itself when it is a directory,
    else the Hugging Face cache snapshot of the repo id (call after loading, so it exists)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(source, "config.json")
    if not isinstance(config, str):
        raise FileNotFoundError(f"no cached snapshot of {source!r} with a config.json")
    return Path(config).parent


def describe_model(name: str, model_id: str, source: str, dim: int | None, settings: dict[str, Any]) -> ModelInfo:
    """``ModelInfo`` for a model loaded from ``source`` (a local dir or a cached repo id)."""
    directory = model_directory(source)
    # Hub snapshots live in .../snapshots/<commit hash>/.
    revision = directory.name if directory.parent.name == "snapshots" else None
    return ModelInfo(name, model_id, revision, fingerprint(directory), dim, settings)


def fingerprint(directory: Path) -> str:
    """sha256 over the weight files' relative names and sizes, then config.json's bytes (16 hex).

    Sizes, not contents: hashing gigabytes of weights per worker start would cost more than
    the check is worth, and a re-upload with the same sizes also changes the revision.
    """
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.suffix in _WEIGHT_SUFFIXES and path.is_file():
            digest.update(f"{path.relative_to(directory).as_posix()}:{path.stat().st_size}\n".encode())
    config = directory / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    return digest.hexdigest()[:16]


def batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def load_pretrained(model_class: Any, source: str, ignore_missing: tuple[str, ...] = (), **kwargs: Any):
    """``model_class.from_pretrained(source)`` in float32, eval mode, refusing partial checkpoints.

    transformers fills parameters the checkpoint lacks with random values and only logs a
    warning; an encoder built that way yields features that look fine and mean nothing (e.g.
    a HuBERT class pointed at a block-extended custom checkpoint). So any missing parameter
    raises, except names containing one of ``ignore_missing`` (training-only parameters).
    """
    import torch

    model, loading = model_class.from_pretrained(source, dtype=torch.float32, output_loading_info=True, **kwargs)
    missing = sorted(k for k in loading["missing_keys"] if not any(part in k for part in ignore_missing))
    if missing:
        raise ValueError(
            f"{source}: the checkpoint has no weights for {len(missing)} parameters of {model_class.__name__} "
            f"(e.g. {missing[:3]}): it is not a checkpoint of that architecture"
        )
    return model.eval()


def check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [K, H, W, 3], got shape {images.shape}")
    if len(images) == 0:
        raise StageError("image", "no images")
    return images


class Encoder:
    """Common constructor arguments and ``info``; subclasses add ``encode_*``.

    modality: "image", "audio" or "text", so a pipeline config can check that an encoder
    fits the modality it is asked to encode.
    """

    name: ClassVar[str]
    modality: ClassVar[str]
    default_id: ClassVar[str]
    # "hub": model_id names a Hugging Face repository (``extraction.models`` checks and fetches
    # it); otherwise a sentence saying how the model's files are obtained.
    files_from: ClassVar[str] = "hub"
    info: ModelInfo

    @classmethod
    def bundled(cls, model_id: str | None, local_dir: str | Path | None) -> Path | None:
        """The copy of the model that an installed package ships, used when neither
        ``model_id`` nor ``local_dir`` is given; None: the model comes from ``model_id``."""
        return None

    def __init__(self, model_id: str | None, local_dir: str | Path | None, device: str, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_id = model_id or self.default_id
        self.source = resolve_source(self.model_id, local_dir)
        self.device = device
        self.batch_size = batch_size


def check_texts(texts: list[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("encode_texts takes a list of strings, got one string")
    for text in texts:
        if not text or not text.strip():
            raise StageError("text", "empty text")


class TransformerTextEncoder(Encoder):
    """Token states of a Hugging Face encoder: ``encode_texts(list[str]) -> list[float32 [L_i, D]]``.

    ``AutoTokenizer`` + ``AutoModel`` (subclasses swap the model in ``_load_model``); the last
    hidden state at the non-padding tokens (special tokens included, as in
    sentence-transformers' mean pooling). Texts longer than the tokenizer's
    ``model_max_length`` (512 for RoBERTa, 77 for CLIP) are truncated. An empty or blank text
    raises ``StageError("text", "empty text")`` for the whole call: filter them first.
    """

    modality = "text"

    def __init__(self, model_id: str | None = None, local_dir: str | Path | None = None, device: str = "cpu",
                 batch_size: int = 32) -> None:
        super().__init__(model_id, local_dir, device, batch_size)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.source)
        self.model = self._load_model().to(device).eval()
        self.max_length = min(self.tokenizer.model_max_length, 512)
        self.info = describe_model(self.name, self.model_id, self.source, 2 * self.model.config.hidden_size,
                                   {"output": "last_hidden_state", "max_length": self.max_length})

    def _load_model(self):
        from transformers import AutoModel

        # No pooler: unused, and absent from classification checkpoints such as EmoRoBERTa.
        return load_pretrained(AutoModel, self.source, add_pooling_layer=False)

    def encode_texts(self, texts: list[str]) -> list[np.ndarray]:
        import torch

        check_texts(texts)
        sequences = []
        for batch in batches(list(texts), self.batch_size):
            tokens = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**tokens).last_hidden_state
            for states, mask in zip(hidden, tokens["attention_mask"]):
                sequences.append(states[mask.bool()].float().cpu().numpy())
        return sequences
