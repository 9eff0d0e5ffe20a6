"""What the extraction stages hand each other.

A stage that cannot process one sample raises ``StageError(stage, reason)``: the pipeline
records it in the errors table and goes on with the other samples (and with the other
modalities of the same sample where that is honest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class StageError(Exception):
    """A per-sample failure, never fatal to the run: ``stage`` and a short ``reason``."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


class ModelCodeUnavailable(RuntimeError):
    """A registered model needs code this platform cannot load; the message says how to get it."""


@dataclass
class Clip:
    """A decoded video.

    frames: uint8 [T, H, W, 3] RGB, T <= the requested count, sampled uniformly in time;
    frame_times: float [T] seconds; audio: float32 [S] mono at ``sample_rate``, or None
    when the file has no audio stream; duration: seconds.
    """

    frames: np.ndarray
    frame_times: np.ndarray
    audio: np.ndarray | None
    sample_rate: int
    duration: float


@dataclass
class Faces:
    """Aligned face crops with the background removed.

    crops: uint8 [K, S, S, 3] RGB (K <= T frames had a usable face); frame_index: int [K].
    """

    crops: np.ndarray
    frame_index: np.ndarray


def functionals(sequence: np.ndarray) -> np.ndarray:
    """mean || std over time of an encoder's sequence [T, D] -> [2D] float32 (population std).

    The statistical functionals of paper section 2.3; a single step has std 0.
    """
    seq = np.asarray(sequence, dtype=np.float64)
    if seq.ndim != 2 or len(seq) == 0:
        raise ValueError(f"expected a non-empty [T, D] sequence, got shape {seq.shape}")
    return np.concatenate([seq.mean(axis=0), seq.std(axis=0)]).astype(np.float32)
