"""Typed configuration of an extraction run, validated at the edge (YAML + overrides).

A *source* is one manifest CSV (or a folder of videos) feeding one corpus: which column
holds the sample id, the video path, a ready-made transcript or behaviour description,
and the labels in the corpus's own columns. Column mappings are configuration, not code
(see ``configs/extract_real_text.yaml`` for the authors' published tables).
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scd_core.config import ConfigError, format_errors, deep_merge, parse_overrides
from scd_core.tasks import CORPORA, EMO_CLASSES, LABEL_RANGES, TASKS, CorpusName, ModalityName, SplitName
from scd_core.yaml_io import read_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class GroupSplit(_Strict):
    """Split one table into train/dev/test by group (e.g. whole MOSEI videos, FIv2 people).

    ``group`` is a regex whose first capture group, applied to the sample id, names the
    group; groups are assigned to splits by a seeded hash, never split across them.
    """

    group: str = r"^(.*)$"
    fractions: dict[SplitName, float] = {"train": 0.7, "dev": 0.15, "test": 0.15}
    seed: int = 0

    @field_validator("group")
    @classmethod
    def _regex(cls, v: str) -> str:
        if re.compile(v).groups < 1:
            raise ValueError(f"regex {v!r} needs one capture group naming the group")
        return v

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        if any(f < 0 for f in v.values()) or abs(sum(v.values()) - 1) > 1e-6:
            raise ValueError(f"fractions must be >= 0 and sum to 1, got {v}")
        return v


class Columns(_Strict):
    """Where a manifest keeps each field (CSV column names)."""

    sample_id: str = Field("{video_name}", description="format template over the row, e.g. 'dia{Dialogue_ID}_utt{Utterance_ID}'")
    video: str | None = Field(None, description="video path column (relative paths: to media_root)")
    transcript: str | None = Field(None, description="ready-made transcript: skips Whisper")
    description: str | None = Field(None, description="ready-made behaviour description: skips the VLM")
    labels: dict[str, str] = Field({}, description="feature-store label column -> CSV column")
    emotion: str | None = Field(None, description="single-label emotion name column (MELD), one-hot into emo_*")
    emotion_names: dict[str, str] = Field({}, description="corpus emotion name -> the paper's (joy: happiness)")

    @field_validator("sample_id")
    @classmethod
    def _sample_id(cls, v: str) -> str:
        # str.format would also follow attributes and indices ({video_name.__class__}) and
        # pad to any width ({x:>999999999}, a GB per row): only columns, widths below 1000.
        try:
            fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(v)
                      if name is not None]
        except ValueError as err:
            raise ValueError(f"sample_id template {v!r}: {err}") from None
        for name, spec, conversion in fields:
            if not name or name.isdigit() or any(c in name for c in ".[]") or conversion \
                    or re.search(r"\d{4,}|\{", spec):
                raise ValueError(f"sample_id template {v!r}: {{{name}{'!' + conversion if conversion else ''}"
                                 f"{':' + spec if spec else ''}}} must name a column, optionally with a short "
                                 f"format spec like {{Utterance_ID:0>3}}")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(LABEL_RANGES))
        if unknown:
            raise ValueError(f"unknown label columns {unknown}; known: {sorted(LABEL_RANGES)}")
        for task in TASKS.values():  # a task's label is all of its columns or none
            given = [c for c in task.label_columns if c in v]
            if given and len(given) < len(task.label_columns):
                missing = [c for c in task.label_columns if c not in v]
                raise ValueError(f"{task.name} labels need every column; missing {missing}")
        return v

    @field_validator("emotion_names")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(n for n in v.values() if n not in EMO_CLASSES)
        if bad:
            raise ValueError(f"emotion names {bad} are not among {list(EMO_CLASSES)}")
        return v


class Source(_Strict):
    """One input table (or a folder of videos) for one corpus.

    ``corpus: unlabelled`` is for clips of your own without labels: their features serve
    prediction, or extra training rows that SSL pseudo-labels (``data.train_corpora``).
    """

    corpus: CorpusName
    split: SplitName | None = Field(None, description="the split of every row; or use group_split")
    group_split: GroupSplit | None = None
    manifest: str | None = Field(None, description="CSV path (relative: to data_root)")
    videos: str | None = Field(None, description="a folder of videos instead of a manifest (no labels)")
    media_root: str | None = Field(None, description="base of relative video paths (default: the CSV's folder)")
    limit: int | None = Field(None, ge=1, description="only the first N rows (smoke runs)")
    columns: Columns = Columns()

    @model_validator(mode="after")
    def _one_input(self) -> "Source":
        if (self.manifest is None) == (self.videos is None):
            raise ValueError("give exactly one of manifest or videos")
        if (self.split is None) == (self.group_split is None):
            raise ValueError("give exactly one of split or group_split")
        if CORPORA[self.corpus].task is None and (self.columns.labels or self.columns.emotion):
            raise ValueError(f"corpus {self.corpus!r} holds clips without labels: drop columns.labels and "
                             "columns.emotion, or name the corpus whose task the labels are")
        return self


class ModelChoice(_Strict):
    """An encoder by registry name, Hugging Face id, and an optional local directory (wins).

    ``name`` may be left out: it is then the field's paper encoder (``ENCODER_DEFAULTS``), so
    ``video_encoder.local_dir=/models/clip`` alone loads CLIP from that folder.
    """

    name: str
    model_id: str | None = Field(None, description="Hugging Face repo id; default: the encoder's paper checkpoint")
    local_dir: str | None = Field(None, description="a folder holding the model (wins over model_id)")


def _old_key(values: object, old: str, message: str) -> object:
    """Refuse a key an earlier version of the config used, saying what replaces it."""
    if isinstance(values, dict) and old in values:
        raise ValueError(message)
    return values


class TranscriberChoice(_Strict):
    """The speech recogniser, always Whisper Turbo through faster-whisper (``extraction.transcribe``):
    only where its files come from."""

    model_id: str | None = Field(None, description="a CTranslate2 Whisper repo id; default: Whisper large-v3-turbo")
    local_dir: str | None = Field(None, description="a CTranslate2 Whisper folder (wins over model_id)")

    @model_validator(mode="before")
    @classmethod
    def _no_name(cls, values: object) -> object:
        return _old_key(values, "name", "transcriber.name is no longer a setting (the transcriber is always "
                                        "faster-whisper's Whisper): remove it")


class DescriberChoice(_Strict):
    """The behaviour describer: backend, VLM and prompt (paper Tables 4 and 5).

    ``vlm`` names an entry of ``extraction.describe.VLMS`` (its checkpoint is the default
    ``model_id``); ``prompt`` one of ``PROMPTS`` (``full``, ``short``, ``zhang2025``,
    ``cheng2024``, ``custom``), with ``prompt_text`` the wording for those the paper does not
    give; ``trust_remote_code`` lets vLLM run code shipped inside the checkpoint repository.
    """

    backend: Literal["transformers", "vllm"] = "transformers"
    vlm: str = "qwen2.5-vl-3b"
    model_id: str | None = None
    local_dir: str | None = None
    prompt: str = "full"
    prompt_text: str | None = None
    trust_remote_code: bool = False

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, values: object) -> object:
        return _old_key(values, "name", "describer.name was renamed describer.backend (transformers or vllm)")

    @field_validator("vlm")
    @classmethod
    def _vlm(cls, v: str) -> str:
        from extraction.describe import VLMS

        if v not in VLMS:
            raise ValueError(f"unknown VLM {v!r}; choose one of {VLMS.names()}")
        return v

    @model_validator(mode="after")
    def _prompt(self) -> "DescriberChoice":
        from extraction.describe import resolve_prompt

        try:
            resolve_prompt(self.prompt, self.prompt_text)
        except KeyError as err:
            raise ValueError(err.args[0]) from None
        return self

    def prompt_wording(self) -> str:
        from extraction.describe import resolve_prompt

        return resolve_prompt(self.prompt, self.prompt_text)


class StageResources(_Strict):
    """One stage's actor pool: actors, resources per actor, rows per batch."""

    concurrency: int = Field(1, ge=1)
    num_cpus: float = Field(0.25, gt=0, description="logical CPUs per actor; small, so that every stage fits a laptop")
    num_gpus: float = Field(0.0, ge=0)
    batch_size: int = Field(8, ge=1)


# "predict": the model stage that ray_jobs/predict.py appends to the extraction stages.
STAGES = ("decode", "faces", "video", "audio", "transcribe", "describe", "text", "scene", "predict")
# Which kind of encoder each modality takes; behaviour takes either (see ExtractionConfig.behavior_from).
ENCODER_MODALITIES = {"video_encoder": ("image",), "audio_encoder": ("audio",), "text_encoder": ("text",),
                      "behavior_encoder": ("text", "image")}
# The paper's encoder of each field (appendix A.5): what an encoder given without a name is.
ENCODER_DEFAULTS = {"video_encoder": "clip", "audio_encoder": "clap", "text_encoder": "emoroberta",
                    "behavior_encoder": "emoroberta"}


class ExtractionConfig(_Strict):
    """Everything one extraction run needs."""

    output: str = "features/extracted"
    data_root: str = "."
    sources: list[Source]
    modalities: list[ModalityName] = ["video", "audio", "text", "behavior"]
    frames: int = Field(30, ge=1, description="frames sampled uniformly per video (paper: 30)")
    max_frame_side: int = Field(640, ge=64, description="frames are downscaled to this longest side")
    video_encoder: ModelChoice = ModelChoice(name=ENCODER_DEFAULTS["video_encoder"])
    audio_encoder: ModelChoice = ModelChoice(name=ENCODER_DEFAULTS["audio_encoder"])
    text_encoder: ModelChoice = ModelChoice(name=ENCODER_DEFAULTS["text_encoder"])
    behavior_encoder: ModelChoice = Field(ModelChoice(name=ENCODER_DEFAULTS["behavior_encoder"]), description=(
        "a text encoder: behaviour from the VLM's description (paper Table 10); an image encoder: "
        "behaviour 'by scene', from the whole frames (Table 11)"))
    transcriber: TranscriberChoice = TranscriberChoice()
    describer: DescriberChoice = DescriberChoice()
    device: Literal["cpu", "cuda"] = "cpu"
    resources: dict[str, StageResources] = {}

    @model_validator(mode="before")
    @classmethod
    def _default_names(cls, values: object) -> object:
        """An encoder given without ``name`` (e.g. only ``local_dir``) is the field's paper encoder."""
        if isinstance(values, dict):
            for field, name in ENCODER_DEFAULTS.items():
                if isinstance(values.get(field), dict) and "name" not in values[field]:
                    values = {**values, field: {"name": name, **values[field]}}
        return values

    @model_validator(mode="after")
    def _encoders(self) -> "ExtractionConfig":
        from extraction.encoders import ENCODERS

        for field, kinds in ENCODER_MODALITIES.items():
            name = getattr(self, field).name
            if name not in ENCODERS:
                raise ValueError(f"{field}: unknown encoder {name!r}; choose one of {ENCODERS.names()}")
            if ENCODERS.get(name).modality not in kinds:
                raise ValueError(f"{field}: encoder {name!r} encodes {ENCODERS.get(name).modality}; "
                                 f"{field} takes {' or '.join(kinds)} encoders")
        return self

    @property
    def behavior_from(self) -> Literal["description", "frames"]:
        """Where behaviour features come from: the description (text encoder) or the frames (image encoder)."""
        from extraction.encoders import ENCODERS

        return "frames" if ENCODERS.get(self.behavior_encoder.name).modality == "image" else "description"

    @field_validator("resources")
    @classmethod
    def _stages(cls, v: dict[str, StageResources]) -> dict[str, StageResources]:
        unknown = sorted(set(v) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stages {unknown}; stages: {list(STAGES)}")
        return v

    def stage(self, name: str) -> StageResources:
        return self.resources.get(name, StageResources())

    def path(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else Path(self.data_root) / path


def load_extraction_config(path: str | Path, overrides: list[str] = ()) -> ExtractionConfig:
    """Read the YAML and apply ``key=value`` overrides; errors name the field."""
    try:
        values = read_yaml(path) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read extraction config {path}: {err}") from None
    try:
        return ExtractionConfig.model_validate(deep_merge(values, parse_overrides(overrides)))
    except ValidationError as err:
        raise ConfigError(f"{path}: " + format_errors(err, ExtractionConfig)) from None
