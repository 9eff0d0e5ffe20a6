"""Small test media written with PyAV (import it from tests: ``from media_fixtures import ...``).

Real media, used when ``/work/shared/data/media`` (``SHARED_MEDIA``) holds them:
- ``obama.jpg``: a 910x1137 portrait with one frontal face (``face_image``);
- ``jfk.flac``: 11.0 s of speech, 44.1 kHz stereo (``speech``).
Without them the stand-ins are scikit-image's ``data.astronaut()`` and a 440 Hz tone, so
every helper works anywhere; tests that compare against the real files skip when
``HAVE_SHARED_MEDIA`` is false.

Codecs are ones PyAV's bundled FFmpeg encodes: H.264 (libx264, yuv420p) video and AAC audio,
in whatever container the file name's extension selects (.mp4, .mkv, .m4a). The audio is
stereo with the mono signal in both channels (so decoding exercises the downmix) and keeps
the source's 44.1 kHz (so decoding to 48 kHz exercises resampling).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from skimage import data, transform

SHARED_MEDIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "media"
HAVE_SHARED_MEDIA = (SHARED_MEDIA / "obama.jpg").is_file() and (SHARED_MEDIA / "jfk.flac").is_file()
AUDIO_RATE = 44100
FRAME_SIDE = 320  # the longer side of fixture frames: small enough to encode in milliseconds


def face_image() -> np.ndarray:
    """A photo with one face: uint8 [H, W, 3] RGB (obama.jpg, else astronaut)."""
    if HAVE_SHARED_MEDIA:
        with av.open(str(SHARED_MEDIA / "obama.jpg")) as container:
            return next(container.decode(video=0)).to_ndarray(format="rgb24")
    return data.astronaut()


def fit(image: np.ndarray, side: int = FRAME_SIDE) -> np.ndarray:
    """Resize uint8 [H, W, 3] so the longer side is ``side`` and both sides are even (yuv420p)."""
    scale = side / max(image.shape[:2])
    h, w = (2 * round(n * scale / 2) for n in image.shape[:2])
    return (transform.resize(image, (h, w), anti_aliasing=True) * 255).round().astype(np.uint8)


def speech(seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 [S] at ``AUDIO_RATE``: jfk.flac's speech (channel mean), else a 440 Hz tone
    (2 s by default); cut to ``seconds``. The reference tests compare decoded audio with."""
    if HAVE_SHARED_MEDIA:
        with av.open(str(SHARED_MEDIA / "jfk.flac")) as container:
            stream = container.streams.audio[0]
            assert (stream.rate, stream.format.name, stream.channels) == (AUDIO_RATE, "s32", 2)
            # Packed int32 stereo: [1, 2n] per frame, interleaved L R L R ...
            interleaved = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
        audio = (interleaved.reshape(-1, 2).mean(axis=1) / 2.0**31).astype(np.float32)
        return (audio if seconds is None else audio[: round(seconds * AUDIO_RATE)]), AUDIO_RATE
    t = np.arange(round((seconds or 2.0) * AUDIO_RATE)) / AUDIO_RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), AUDIO_RATE


def write_video(
    path: Path, frames: list[np.ndarray] | np.ndarray, fps: int = 10, audio: np.ndarray | None = None
) -> Path:
    """Encode uint8 [T, H, W, 3] RGB frames (even H, W) as H.264, plus float32 [S] ``audio``
    (mono, at ``AUDIO_RATE``) as stereo AAC; returns ``path``."""
    with av.open(str(path), "w") as container:
        # Every stream must exist before the first packet is muxed (the header is written then).
        video = container.add_stream("libx264", rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "18"}  # near-lossless, so tests can read pixel values back
        sound = None if audio is None else _add_audio_stream(container)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            _encode_audio(container, sound, audio)
    return Path(path)


def _add_audio_stream(container: av.container.OutputContainer) -> av.audio.stream.AudioStream:
    """A stereo AAC stream at ``AUDIO_RATE``."""
    return container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")


def _encode_audio(
    container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, audio: np.ndarray
) -> None:
    """Encode mono float32 [S] ``audio`` into both channels of ``stream`` and flush it.

    Identical channels make the right downmix (their mean) give ``audio`` back at its level.
    """
    both = np.stack([audio, audio]).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(both, format="fltp", layout="stereo")
    frame.sample_rate, frame.pts = AUDIO_RATE, 0
    container.mux(stream.encode(frame))  # PyAV re-chunks into the encoder's 1024-sample frames
    container.mux(stream.encode())


def face_video(
    path: Path, seconds: float = 2, fps: int = 10, with_audio: bool = True, image: np.ndarray | None = None
) -> Path:
    """A ``seconds`` x ``fps`` video of ``image`` (default ``face_image()``), resized by ``fit``,
    drifting by up to 4 px so that every frame differs; with audio, the first ``seconds`` of
    ``speech()``. Returns ``path``.
    """
    still = fit(face_image() if image is None else image)
    padded = np.pad(still, ((4, 4), (4, 4), (0, 0)), mode="edge")
    h, w = still.shape[:2]
    frames = []
    for i in range(round(seconds * fps)):
        dy, dx = (round(4 + 4 * np.sin(i / 3 + phase)) for phase in (0.0, 1.5))
        frames.append(padded[dy : dy + h, dx : dx + w])
    return write_video(path, frames, fps, speech(seconds)[0] if with_audio else None)


def noface_video(path: Path, seconds: float = 1, fps: int = 10) -> Path:
    """A silent video of scikit-image's ``data.coffee()`` (a cup of coffee: no face)."""
    return write_video(path, [fit(data.coffee())] * round(seconds * fps), fps)


def counter_video(path: Path, num_frames: int, fps: int = 10) -> Path:
    """A silent 64x48 grey video whose frame ``i`` has the level ``4 * i`` (num_frames <= 64).

    ``frame_number(rgb)`` reads the index back, so sampling tests can check which frames came out.
    """
    assert num_frames <= 64
    return write_video(path, [np.full((48, 64, 3), 4 * i, np.uint8) for i in range(num_frames)], fps)


def frame_number(rgb: np.ndarray) -> int:
    """The index that ``counter_video`` painted into a decoded frame uint8 [H, W, 3]."""
    return round(float(rgb.mean()) / 4)


def streamed(src: Path, dst: Path) -> Path:
    """Remux ``src``'s video into Matroska ``dst`` (.mkv/.webm) through a pipe, as a live capture
    or a browser's MediaRecorder writes it: no duration anywhere in the header."""

    class Pipe:
        """A write-only, unseekable file: the muxer cannot go back to fill in the duration."""

        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, chunk: bytes) -> int:
            self.data += chunk
            return len(chunk)

        def seekable(self) -> bool:
            return False

    pipe = Pipe()
    with av.open(str(src)) as source, av.open(pipe, "w", format="matroska") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:  # the demuxer's final empty packet carries nothing
                packet.stream = stream
                target.mux(packet)
    Path(dst).write_bytes(pipe.data)
    return Path(dst)


def audio_only(path: Path, seconds: float = 2) -> Path:
    """An AAC file (use a .m4a or .mka name) with the first ``seconds`` of ``speech()`` and no video."""
    with av.open(str(path), "w") as container:
        _encode_audio(container, _add_audio_stream(container), speech(seconds)[0])
    return Path(path)


def truncated(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst`` (a download cut short)."""
    data_bytes = Path(src).read_bytes()
    Path(dst).write_bytes(data_bytes[: int(len(data_bytes) * fraction)])
    return Path(dst)


def zero_bytes(path: Path) -> Path:
    """An empty file at ``path``."""
    Path(path).write_bytes(b"")
    return Path(path)

