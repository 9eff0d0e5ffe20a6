"""Tasks, corpora, modalities and label columns: the conventions every part shares.

See DESIGN.md "Tasks and labels". Column names here are the feature-store contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TaskName = Literal["emo", "pt", "ah"]
ModalityName = Literal["video", "audio", "text", "behavior"]
CorpusName = Literal["mosei", "fiv2", "bah", "meld", "unlabelled"]
SplitName = Literal["train", "dev", "test"]

EMO_CLASSES = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
PT_TRAITS = ("openness", "conscientiousness", "extraversion", "agreeableness", "non_neuroticism")
AH_CLASSES = ("absence", "presence")


@dataclass(frozen=True)
class TaskSpec:
    """One recognition task.

    ``label_columns`` are the feature-store columns that hold its labels;
    ``num_outputs`` is the size of the model's head (C_t in the paper).
    """

    name: TaskName
    num_outputs: int
    label_columns: tuple[str, ...]
    kind: Literal["multilabel_distribution", "regression", "single_label"]


TASKS: dict[str, TaskSpec] = {
    "emo": TaskSpec("emo", 7, tuple(f"emo_{c}" for c in EMO_CLASSES), "multilabel_distribution"),
    "pt": TaskSpec("pt", 5, tuple(f"pt_{t}" for t in PT_TRAITS), "regression"),
    "ah": TaskSpec("ah", 2, ("ah",), "single_label"),
}
TASK_NAMES: tuple[TaskName, ...] = ("emo", "pt", "ah")

LABEL_COLUMNS: tuple[str, ...] = tuple(c for t in TASK_NAMES for c in TASKS[t].label_columns)

# Inclusive label ranges. EMO holds MOSEI intensities (0-3) or a normalised distribution.
LABEL_RANGES: dict[str, tuple[float, float]] = {
    **{c: (0.0, 3.0) for c in TASKS["emo"].label_columns},
    **{c: (0.0, 1.0) for c in TASKS["pt"].label_columns},
    "ah": (0, 1),
}


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus labels exactly one task, or none (``task`` None: clips of your own, whose rows
    are predicted, or pseudo-labelled by SSL as extra training rows, never scored);
    ``trains`` is False for test-only corpora (MELD)."""

    name: CorpusName
    task: TaskName | None
    trains: bool
    emo_single_label: bool = False  # MELD: one emotion per sample, evaluated with MF1/WF1/UAR


CORPORA: dict[str, CorpusSpec] = {
    "mosei": CorpusSpec("mosei", "emo", trains=True),
    "fiv2": CorpusSpec("fiv2", "pt", trains=True),
    "bah": CorpusSpec("bah", "ah", trains=True),
    "meld": CorpusSpec("meld", "emo", trains=False, emo_single_label=True),
    "unlabelled": CorpusSpec("unlabelled", None, trains=True),
}

MODALITIES: tuple[ModalityName, ...] = ("video", "audio", "text", "behavior")
# The paper's feature sizes: mean || std of CLIP (512), CLAP (768), EmoRoBERTa (768), EmoRoBERTa (768).
PAPER_FEATURE_DIMS: dict[str, int] = {"video": 1024, "audio": 1536, "text": 1536, "behavior": 1536}


def feature_column(modality: str) -> str:
    return f"f_{modality}"
