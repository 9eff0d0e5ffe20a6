"""Decode a video file into uniformly sampled RGB frames and mono audio (paper section 2.1).

One pass over the file with PyAV: video and audio packets are demuxed together and decoded
once; only the sampled video frames are converted to RGB and kept, so memory is bounded by
``num_frames`` frames plus the audio track whatever the video's length. (For very long
videos seeking to each sample time would decode less; the corpora's clips are short.)

Sampling: the video's duration D is cut into ``num_frames`` equal segments and the frame on
screen at each segment's centre, ``(i + 0.5) * D / num_frames``, is taken. A video with fewer
frames than that (a 2 s clip at 10 fps has 20) yields each of its frames once, so
``Clip.frames`` may hold fewer than ``num_frames`` frames; it never holds duplicates.

Audio-only files decode (their audio is still worth features): ``Clip.frames`` is then an
empty [0, 0, 0, 3] array, and the faces stage reports "no video frames" for them.

Every failure is a ``StageError("decode", reason)``; no PyAV exception escapes.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import av
import numpy as np
from scipy.signal import resample_poly

from extraction.types import Clip, StageError

# A primary stream that stops before this fraction of its declared duration was cut short
# (an interrupted download or copy). The slack absorbs rounding of declared durations.
MIN_DECODED_FRACTION = 0.8


def decode(path: str | Path, num_frames: int = 30, sample_rate: int = 48000) -> Clip:
    """Decode ``path`` into a ``Clip``: <= ``num_frames`` uniformly sampled frames, mono audio.

    frames: uint8 [T, H, W, 3] RGB, T <= num_frames (see the module docstring);
    frame_times: float64 [T] seconds from the start of the video stream;
    audio: float32 [S] mono (channel mean) at ``sample_rate``, or None without an audio stream.
    Raises ``StageError("decode", reason)`` for a missing, empty, corrupt or truncated file,
    or one with neither a video nor an audio stream, or with no decodable video frame.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    path = Path(path)
    _check_file(path)
    try:
        with av.open(str(path)) as container:
            return _decode_container(container, path, num_frames, sample_rate)
    except av.FFmpegError as error:
        raise StageError("decode", f"cannot decode {path.name}: {error}") from error


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono float [S] audio from ``from_rate`` to ``to_rate`` Hz -> float32 [S'].

    Polyphase filtering (``scipy.signal.resample_poly``) with the ratio reduced by its gcd;
    S' = ceil(S * to_rate / from_rate).
    """
    if from_rate == to_rate:
        return np.asarray(audio, dtype=np.float32)
    common = gcd(from_rate, to_rate)
    return resample_poly(audio, to_rate // common, from_rate // common).astype(np.float32)


def _check_file(path: Path) -> None:
    """Fail early with a clearer reason than FFmpeg's for a missing or empty file."""
    if not path.exists():
        raise StageError("decode", f"file not found: {path}")
    if not path.is_file():
        raise StageError("decode", f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise StageError("decode", f"empty file (0 bytes): {path.name}")


def _decode_container(
    container: av.container.InputContainer, path: Path, num_frames: int, sample_rate: int
) -> Clip:
    """The single demux/decode pass behind ``decode``."""
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    if video is None and audio is None:
        raise StageError("decode", "no video or audio stream")
    primary = video if video is not None else audio
    duration = _duration(container, primary, path)

    sampler = _FrameSampler(video, duration, num_frames) if video is not None else None
    mixer = _AudioMixer(sample_rate) if audio is not None else None
    for packet in container.demux([s for s in (video, audio) if s is not None]):
        for frame in packet.decode():  # an empty packet at the end flushes its decoder
            if packet.stream.type == "video":
                sampler.add(frame)
            else:
                mixer.add(frame)

    samples = mixer.result() if mixer is not None else None
    if sampler is None:
        frames, times, decoded = np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0), len(samples) / sample_rate
    else:
        (frames, times), decoded = sampler.result(), sampler.decoded_until
    if decoded < MIN_DECODED_FRACTION * duration:
        raise StageError("decode", f"truncated: {primary.type} stops at {decoded:.2f} s of {duration:.2f} s")
    return Clip(frames=frames, frame_times=times, audio=samples, sample_rate=sample_rate, duration=duration)


def _duration(container: av.container.InputContainer, stream: av.stream.Stream, path: Path) -> float:
    """Seconds: the stream's declared duration, else the container's (Matroska declares only
    the latter), else the span of the stream's packets (a streamed WebM/MKV, as a browser's
    MediaRecorder writes it, declares none)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return _packet_span(path, stream.index)


def _packet_span(path: Path, index: int) -> float:
    """Seconds from the first packet's start to the last one's end in stream ``index``, read by
    demuxing alone (no decoding) in a container of its own, as not every format can seek."""
    first = end = time_base = None
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams[index]):
            if packet.pts is None:
                continue
            stop = packet.pts + (packet.duration or 0)
            first = packet.pts if first is None else min(first, packet.pts)
            end = stop if end is None else max(end, stop)
            time_base = packet.time_base
    if first is None:
        raise StageError("decode", "unknown duration: no declared duration and no timestamps")
    return float((end - first) * time_base)


class _FrameSampler:
    """Keeps, from a stream of decoded video frames, those on screen at the sample times."""

    def __init__(self, stream: av.video.stream.VideoStream, duration: float, num_frames: int) -> None:
        self._targets = (np.arange(num_frames) + 0.5) * duration / num_frames
        self._next = 0  # index of the first target not yet served
        self._start = stream.start_time  # pts; None until known from the first frame
        self._fps = float(stream.average_rate or stream.guessed_rate or 25)
        self._previous: tuple[av.VideoFrame, float, int] | None = None  # frame, time, index
        self._count = 0
        self._kept_index = -1
        self._frames: list[np.ndarray] = []
        self._times: list[float] = []
        self.decoded_until = 0.0  # end (s) of the last decoded frame

    def add(self, frame: av.VideoFrame) -> None:
        """Serve every target that ``frame`` starts after with the previous frame."""
        time = self._time(frame)
        while self._next < len(self._targets) and time > self._targets[self._next]:
            self._keep(*(self._previous or (frame, time, self._count)))
            self._next += 1
        self._previous = (frame, time, self._count)
        self._count += 1
        self.decoded_until = time + 1 / self._fps

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """frames uint8 [T, H, W, 3] and times float64 [T]; the last frame serves the rest."""
        if self._previous is None:
            raise StageError("decode", "no decodable video frame")
        if self._next < len(self._targets):
            self._keep(*self._previous)
        return np.stack(self._frames), np.asarray(self._times)

    def _keep(self, frame: av.VideoFrame, time: float, index: int) -> None:
        # Consecutive targets on one frame (a video with fewer frames than targets) keep it once.
        if index != self._kept_index:
            self._frames.append(frame.to_ndarray(format="rgb24"))
            self._times.append(time)
            self._kept_index = index

    def _time(self, frame: av.VideoFrame) -> float:
        """Seconds since the stream's start; frames without a pts are placed by their index."""
        if frame.pts is None or frame.time_base is None:
            return self._count / self._fps
        if self._start is None:
            self._start = frame.pts
        return float((frame.pts - self._start) * frame.time_base)


class _AudioMixer:
    """Resamples decoded audio frames to float32 at one rate and averages their channels.

    The channel mean rather than FFmpeg's own mono downmix, which sums stereo at -3 dB
    ((L + R) / sqrt 2) and so leaves [-1, 1] on loud correlated channels.
    """

    def __init__(self, sample_rate: int) -> None:
        # Planar float at the target rate, the source's channel layout kept.
        self._resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        self._chunks: list[np.ndarray] = []

    def add(self, frame: av.AudioFrame) -> None:
        self._chunks.extend(f.to_ndarray().mean(axis=0) for f in self._resampler.resample(frame))

    def result(self) -> np.ndarray:
        """float32 [S] mono; flushes the resampler's delay line first."""
        self._chunks.extend(f.to_ndarray().mean(axis=0) for f in self._resampler.resample(None))
        if not self._chunks:
            return np.zeros(0, np.float32)
        return np.concatenate(self._chunks).astype(np.float32)
