"""The Ray Data stages: each a callable class, built once per actor, mapping a batch of rows.

Rows carry only plain columns (str, float, bytes), so any stage can run on any node.
Arrays travel as ``.npy`` bytes. A per-sample failure appends ``[stage, reason]`` to the
row's ``errors`` (a JSON list) and leaves its outputs empty; the row goes on, so other
modalities of the same sample are still extracted where that is honest.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any, Callable

import numpy as np

from extraction.config import ExtractionConfig, ModelChoice
from extraction.types import StageError, functionals

Batch = dict[str, np.ndarray]


def to_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _fail(batch: Batch, i: int, stage: str, reason: str) -> None:
    errors = json.loads(batch["errors"][i])
    errors.append([stage, reason])
    batch["errors"][i] = json.dumps(errors)


def _text(batch: Batch, field: str, i: int) -> str | None:
    """A text cell: its string, "" when given but empty, None when the source has none and
    no stage made one (nothing to encode, nothing wrong)."""
    value = batch[field][i]
    return value if value or batch[f"has_{field}"][i] else None


def _failed(batch: Batch, i: int, stage: str) -> bool:
    return any(s == stage for s, _ in json.loads(batch["errors"][i]))


class _Stage:
    """Runs ``process`` per row, times it (column ``t_<name>``) and turns StageError into a record.

    Feature stages also stamp each row with their encoder's ``ModelInfo`` (``info_<modality>``,
    JSON), so the manifest records what really ran, without loading any model in the driver.
    """

    name = ""
    outputs: tuple[str, ...] = ()
    infos: dict[str, str] = {}

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["sample_id"])
        # Ray hands out read-only arrays: writable object columns for everything a stage may fill in.
        for column in ("errors", "transcript", "description", *self.outputs):
            if column in batch:
                batch[column] = np.asarray(batch[column], dtype=object).copy()
            elif column in self.outputs:
                batch[column] = np.array([b""] * n, dtype=object)
        tic = time.perf_counter()
        self.process_batch(batch, n)
        batch[f"t_{self.name}"] = np.full(n, (time.perf_counter() - tic) / max(n, 1))
        for modality, info in self.infos.items():
            batch[f"info_{modality}"] = np.array([info] * n, dtype=object)
        return batch

    def process_batch(self, batch: Batch, n: int) -> None:
        for i in range(n):
            try:
                self.process(batch, i)
            except StageError as err:
                _fail(batch, i, err.stage, err.reason)

    def process(self, batch: Batch, i: int) -> None:
        raise NotImplementedError


class Decode(_Stage):
    """PyAV: sampled frames (downscaled) and the mono audio track at 48 kHz (CLAP's rate)."""

    name, outputs = "decode", ("frames", "audio")
    SAMPLE_RATE = 48000

    def __init__(self, cfg: ExtractionConfig) -> None:
        from extraction import media

        self.media, self.frames, self.max_side = media, cfg.frames, cfg.max_frame_side

    def process(self, batch: Batch, i: int) -> None:
        if not batch["video"][i]:
            return
        clip = self.media.decode(batch["video"][i], num_frames=self.frames, sample_rate=self.SAMPLE_RATE)
        frames = _downscale(clip.frames, self.max_side)
        batch["frames"][i] = to_bytes(frames)
        if clip.audio is not None:
            batch["audio"][i] = to_bytes(clip.audio.astype(np.float32))


def _downscale(frames: np.ndarray, max_side: int) -> np.ndarray:
    """Frames [T, H, W, 3] with the longest side at most ``max_side`` (keeps rows light)."""
    if len(frames) == 0 or max(frames.shape[1:3]) <= max_side:
        return frames
    from PIL import Image

    scale = max_side / max(frames.shape[1:3])
    size = (max(1, round(frames.shape[2] * scale)), max(1, round(frames.shape[1] * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


class Faces(_Stage):
    """MediaPipe detection, alignment and background removal -> face crops."""

    name, outputs = "faces", ("crops",)

    def __init__(self, cfg: ExtractionConfig) -> None:
        from extraction.faces import FacePipeline

        self.pipeline = FacePipeline()

    def process(self, batch: Batch, i: int) -> None:
        if batch["frames"][i]:
            batch["crops"][i] = to_bytes(self.pipeline(from_bytes(batch["frames"][i])).crops)


def _encoder(choice: ModelChoice, cfg: ExtractionConfig):
    from extraction.encoders import build_encoder

    return build_encoder(choice.name, model_id=choice.model_id, local_dir=choice.local_dir, device=cfg.device)


class VideoFeatures(_Stage):
    """Image encoder (CLIP) on the face crops -> mean || std over crops."""

    name, outputs = "video", ("f_video",)

    def __init__(self, cfg: ExtractionConfig) -> None:
        self.encoder = _encoder(cfg.video_encoder, cfg)
        self.infos = {"video": json.dumps(self.encoder.info.to_dict())}

    def process(self, batch: Batch, i: int) -> None:
        if batch["crops"][i]:
            batch["f_video"][i] = to_bytes(functionals(self.encoder.encode_images(from_bytes(batch["crops"][i]))))


class AudioFeatures(_Stage):
    """Audio encoder (CLAP) on the 48 kHz track -> mean || std over its sequence."""

    name, outputs = "audio", ("f_audio",)

    def __init__(self, cfg: ExtractionConfig) -> None:
        self.encoder = _encoder(cfg.audio_encoder, cfg)
        self.infos = {"audio": json.dumps(self.encoder.info.to_dict())}

    def process(self, batch: Batch, i: int) -> None:
        if not batch["video"][i] or _failed(batch, i, "decode"):
            return
        if not batch["audio"][i]:
            raise StageError("audio", "no audio stream")
        sequence = self.encoder.encode_audio(from_bytes(batch["audio"][i]), Decode.SAMPLE_RATE)
        batch["f_audio"][i] = to_bytes(functionals(sequence))


class Transcribe(_Stage):
    """Whisper (faster-whisper) where no transcript was given."""

    name, outputs = "transcribe", ()

    def __init__(self, cfg: ExtractionConfig) -> None:
        from extraction.transcribe import Transcriber

        self.model = Transcriber(model_id=cfg.transcriber.model_id, local_dir=cfg.transcriber.local_dir,
                                 device=cfg.device)

    def process(self, batch: Batch, i: int) -> None:
        if _text(batch, "transcript", i) or not batch["audio"][i]:
            return
        batch["transcript"][i] = self.model.transcribe(from_bytes(batch["audio"][i]), rate=Decode.SAMPLE_RATE)


class Describe(_Stage):
    """The VLM's behaviour description where none was given, batched over rows."""

    name, outputs = "describe", ()

    def __init__(self, cfg: ExtractionConfig) -> None:
        from extraction.describe import Describer

        choice = cfg.describer
        self.model = Describer(backend=choice.backend, vlm=choice.vlm, model_id=choice.model_id,
                               local_dir=choice.local_dir, prompt=choice.prompt_wording(),
                               trust_remote_code=choice.trust_remote_code, device=cfg.device)

    def process_batch(self, batch: Batch, n: int) -> None:
        todo = [i for i in range(n) if not _text(batch, "description", i) and batch["frames"][i]]
        if not todo:
            return
        # One result per clip: a StageError in place of a description that failed.
        for i, result in zip(todo, self.model.describe_batch([from_bytes(batch["frames"][i]) for i in todo])):
            if isinstance(result, StageError):
                _fail(batch, i, result.stage, result.reason)
            else:
                batch["description"][i] = result


class TextFeatures(_Stage):
    """Text encoders on the transcript (text) and the behaviour description (behavior, unless
    behaviour comes from the frames: ``SceneFeatures``)."""

    name, outputs = "text", ("f_text", "f_behavior")

    def __init__(self, cfg: ExtractionConfig) -> None:
        self.targets: list[tuple[str, str, Any]] = []
        loaded: dict[str, Any] = {}
        wanted = {"text"} | ({"behavior"} if cfg.behavior_from == "description" else set())
        for modality, field, choice in (("text", "transcript", cfg.text_encoder),
                                        ("behavior", "description", cfg.behavior_encoder)):
            if modality in cfg.modalities and modality in wanted:
                key = choice.model_dump_json()
                loaded.setdefault(key, _encoder(choice, cfg))  # one model when both use the same
                self.targets.append((modality, field, loaded[key]))
        self.infos = {modality: json.dumps(encoder.info.to_dict()) for modality, _, encoder in self.targets}

    def process_batch(self, batch: Batch, n: int) -> None:
        for modality, field, encoder in self.targets:
            texts = [_text(batch, field, i) for i in range(n)]
            rows = [i for i in range(n) if texts[i] and texts[i].strip()]
            # None: nothing to encode and nothing went wrong (e.g. MELD has no descriptions).
            empty = [i for i in range(n) if texts[i] is not None and i not in rows and not _given_up(batch, i, modality)]
            for i in empty:
                _fail(batch, i, modality, f"empty {field}")
            if rows:
                for i, sequence in zip(rows, encoder.encode_texts([texts[i] for i in rows])):
                    batch[f"f_{modality}"][i] = to_bytes(functionals(sequence))


class SceneFeatures(_Stage):
    """Behaviour "by scene" (paper Table 11): the behaviour encoder, an image encoder, on the
    whole sampled frames [T, H, W, 3] -> mean || std over frames, no VLM involved."""

    name, outputs = "scene", ("f_behavior",)

    def __init__(self, cfg: ExtractionConfig) -> None:
        self.encoder = _encoder(cfg.behavior_encoder, cfg)
        self.infos = {"behavior": json.dumps(self.encoder.info.to_dict())}

    def process(self, batch: Batch, i: int) -> None:
        if batch["frames"][i]:
            batch["f_behavior"][i] = to_bytes(functionals(self.encoder.encode_images(from_bytes(batch["frames"][i]))))


def _given_up(batch: Batch, i: int, modality: str) -> bool:
    """Whether an upstream stage already explains why this modality has no input text."""
    upstream = {"text": ("decode", "transcribe"), "behavior": ("decode", "describe")}[modality]
    return any(_failed(batch, i, stage) for stage in upstream)


STAGE_CLASSES: dict[str, Callable[..., _Stage]] = {
    "decode": Decode, "faces": Faces, "video": VideoFeatures, "audio": AudioFeatures,
    "transcribe": Transcribe, "describe": Describe, "text": TextFeatures, "scene": SceneFeatures,
}
