"""Speech -> text with Whisper Turbo through faster-whisper (CTranslate2), paper section 2.1.

Default model: ``mobiuslabsgmbh/faster-whisper-large-v3-turbo``, the CTranslate2 conversion
of ``openai/whisper-large-v3-turbo`` that faster-whisper itself resolves the names "turbo"
and "large-v3-turbo" to (``faster_whisper.utils._MODELS``), so it is the checkpoint a
faster-whisper user gets for "Whisper Turbo". Any CTranslate2 Whisper directory works as
``local_dir`` (e.g. one made by ``ct2-transformers-converter``).

Voice activity detection (``vad_filter=True``, the default) needs no download: the Silero VAD
model ships inside faster-whisper (``faster_whisper/assets/silero_vad_v6.onnx``, run with
onnxruntime, a faster-whisper dependency). It keeps Whisper from inventing text over long
non-speech stretches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from extraction.encoder_base import ModelInfo, describe_model, resolve_source
from extraction.media import resample
from extraction.types import StageError

WHISPER_RATE = 16000
# RMS below 1e-3 (-60 dBFS) is digital silence or a muted track: nothing to transcribe, and
# Whisper would hallucinate. Quiet real speech sits around -40 dBFS (RMS 0.01) and above.
SILENCE_RMS = 1e-3


class Transcriber:
    """``transcribe(float32 [S] mono, rate=16000) -> str`` (segments joined, stripped).

    Raises ``StageError("transcribe", "silence")`` for empty audio or RMS < ``silence_rms``,
    and ``StageError("transcribe", "empty transcript")`` when Whisper (after VAD) returns no
    text. language=None detects the language per clip; compute_type as in CTranslate2
    ("default" keeps the checkpoint's type, "int8" quantises on CPU, "float16" on GPU).
    Decoding otherwise uses faster-whisper's defaults (temperature fallback 0.0 ... 1.0,
    conditioning on previous text).
    """

    default_id = "mobiuslabsgmbh/faster-whisper-large-v3-turbo"

    def __init__(self, model_id: str | None = None, local_dir: str | Path | None = None, device: str = "cpu",
                 compute_type: str = "default", language: str | None = None, beam_size: int = 5,
                 vad_filter: bool = True, silence_rms: float = SILENCE_RMS) -> None:
        from faster_whisper import WhisperModel

        self.model_id = model_id or self.default_id
        source = resolve_source(self.model_id, local_dir)
        self.model = WhisperModel(source, device=device, compute_type=compute_type)
        self.language = language
        self.beam_size = beam_size
        self.vad_filter = vad_filter
        self.silence_rms = silence_rms
        self.info: ModelInfo = describe_model("whisper", self.model_id, source, None, {
            "compute_type": compute_type, "language": language, "beam_size": beam_size, "vad_filter": vad_filter,
        })

    def transcribe(self, audio: np.ndarray, rate: int = WHISPER_RATE) -> str:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected mono audio [S], got shape {audio.shape}")
        audio = resample(audio, rate, WHISPER_RATE)
        if audio.size == 0 or float(np.sqrt(np.mean(np.square(audio)))) < self.silence_rms:
            raise StageError("transcribe", "silence")
        segments, _ = self.model.transcribe(audio, language=self.language, beam_size=self.beam_size,
                                            vad_filter=self.vad_filter)
        # ``segments`` is a generator: decoding happens while it is consumed.
        text = "".join(segment.text for segment in segments).strip()
        if not text:
            raise StageError("transcribe", "empty transcript")
        return text
