"""Decoding (extraction.media) and face crops (extraction.faces) on small media written by
``media_fixtures``: real speech and a real face photo from /work/shared/data/media when present."""

from pathlib import Path

import numpy as np
import pytest

# The "extract" extra: without it there is nothing here to test.
pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("mediapipe")

from media_fixtures import (  # noqa: E402  (after the skips)
    HAVE_SHARED_MEDIA,
    audio_only,
    counter_video,
    face_image,
    face_video,
    fit,
    frame_number,
    noface_video,
    speech,
    streamed,
    truncated,
    zero_bytes,
)

from extraction.faces import FacePipeline  # noqa: E402
from extraction.media import decode, resample  # noqa: E402
from extraction.types import StageError  # noqa: E402


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Every test file, written once (about a second)."""
    root = tmp_path_factory.mktemp("media")
    files = {
        "face": face_video(root / "face.mp4"),  # 2 s, 10 fps, speech
        "silent": face_video(root / "silent.mkv", with_audio=False),
        "noface": noface_video(root / "noface.mp4"),
        "counter": counter_video(root / "counter.mp4", 60),  # 6 s, 10 fps
        "audio_only": audio_only(root / "speech.m4a"),
        "zero": zero_bytes(root / "zero.mp4"),
        "text": root / "notes.mp4",
    }
    files["text"].write_text("not a video, whatever the name says\n")
    files["cut_mp4"] = truncated(files["face"], root / "cut.mp4")  # index (moov) lost
    # Stops early. A long clip cut in half: a frame-threaded decoder given a broken stream
    # returns only some of the frames before the cut (1 of 16 for the 2 s clip, none at all once
    # in CI), so the clip must leave many.
    files["cut_mkv"] = truncated(counter_video(root / "counter.mkv", 60), root / "cut.mkv", 0.5)
    return files


@pytest.fixture(scope="module")
def pipeline():
    with FacePipeline() as faces:
        yield faces


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """uint8 [H, W, 3]: the face photo at the size of ``face_video``'s frames."""
    return fit(face_image())


def on_canvas(height: int, width: int, *placed: tuple[np.ndarray, int, int]) -> np.ndarray:
    """A black uint8 [height, width, 3] frame with each (image, top, left) pasted in."""
    canvas = np.zeros((height, width, 3), np.uint8)
    for image, top, left in placed:
        canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    return canvas


# ---- decode -------------------------------------------------------------------------------


def test_decode_samples_frames_uniformly_in_time(media):
    clip = decode(media["counter"])
    assert clip.frames.shape == (30, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.duration == pytest.approx(6.0)
    # Segment centres 0.1, 0.3, ..., 5.9 s: every other frame of the 60.
    assert [frame_number(f) for f in clip.frames] == list(range(1, 60, 2))
    np.testing.assert_allclose(clip.frame_times, np.arange(1, 60, 2) / 10, atol=1e-6)
    assert clip.audio is None


def test_decode_num_frames_sets_the_sample_count(media):
    clip = decode(media["counter"], num_frames=4)  # centres 0.75, 2.25, 3.75, 5.25 s
    assert [frame_number(f) for f in clip.frames] == [7, 22, 37, 52]
    np.testing.assert_allclose(clip.frame_times, [0.7, 2.2, 3.7, 5.2], atol=1e-6)


def test_short_video_yields_each_frame_once(media, photo):
    clip = decode(media["face"])  # 20 frames < 30 requested
    assert clip.frames.shape == (20, *photo.shape)
    np.testing.assert_allclose(clip.frame_times, np.arange(20) / 10, atol=1e-6)
    assert all(np.any(a != b) for a, b in zip(clip.frames[:-1], clip.frames[1:]))


def test_decode_audio_is_mono_at_the_requested_rate(media):
    reference = resample(speech(2)[0], 44100, 48000)
    for rate in (48000, 16000):
        clip = decode(media["face"], sample_rate=rate)
        assert clip.sample_rate == rate and clip.audio.dtype == np.float32 and clip.audio.ndim == 1
        # AAC adds up to one 1024-sample frame of padding.
        assert len(clip.audio) / rate == pytest.approx(2.0, abs=0.03)
    clip = decode(media["face"])
    n = len(reference)
    assert np.corrcoef(clip.audio[:n], reference)[0, 1] > 0.99
    # Stereo in: the channel mean keeps the level (FFmpeg's own downmix would add 41 %).
    assert clip.audio[:n].std() == pytest.approx(reference.std(), rel=0.05)


@pytest.mark.skipif(not HAVE_SHARED_MEDIA, reason="needs /work/shared/data/media/jfk.flac")
def test_decode_audio_matches_the_whole_speech_file(tmp_path):
    source, rate = speech()
    assert len(source) / rate == pytest.approx(11.0)  # jfk.flac
    clip = decode(face_video(tmp_path / "jfk.mp4", seconds=11, fps=2))
    assert clip.duration == pytest.approx(11.0)
    assert len(clip.audio) / clip.sample_rate == pytest.approx(11.0, abs=0.03)
    reference = resample(source, rate, clip.sample_rate)
    assert np.corrcoef(clip.audio[: len(reference)], reference)[0, 1] > 0.99


def test_streamed_mkv_without_a_declared_duration(media, tmp_path):
    clip = decode(streamed(media["counter"], tmp_path / "live.mkv"))
    assert clip.duration == pytest.approx(6.0)  # from the packets' timestamps
    assert [frame_number(f) for f in clip.frames] == list(range(1, 60, 2))


def test_video_without_audio(media):
    clip = decode(media["silent"])
    assert clip.audio is None and len(clip.frames) == 20 and clip.duration == pytest.approx(2.0)


def test_audio_only_file_decodes_audio_and_fails_at_faces(media, pipeline):
    clip = decode(media["audio_only"])
    assert clip.frames.shape == (0, 0, 0, 3) and clip.frame_times.shape == (0,)
    assert len(clip.audio) / clip.sample_rate == pytest.approx(2.0, abs=0.03)
    with pytest.raises(StageError) as error:
        pipeline(clip.frames)
    assert (error.value.stage, error.value.reason) == ("faces", "no video frames")


@pytest.mark.parametrize(
    "name, reason",
    [
        ("missing", "file not found"),
        ("zero", "empty file"),
        ("text", "Invalid data"),
        ("cut_mp4", "Invalid data"),
        ("cut_mkv", "truncated: video stops at"),
        ("directory", "not a regular file"),
    ],
)
def test_broken_inputs_raise_decode_errors(media, tmp_path, name, reason):
    path = {"missing": tmp_path / "missing.mp4", "directory": tmp_path}.get(name) or media[name]
    with pytest.raises(StageError) as error:
        decode(path)
    assert error.value.stage == "decode" and reason in error.value.reason


def test_resample_keeps_a_tone():
    t = np.arange(44100) / 44100
    out = resample(np.sin(2 * np.pi * 1000 * t), 44100, 16000)
    assert out.dtype == np.float32 and len(out) == 16000
    expected = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    np.testing.assert_allclose(out[100:-100], expected[100:-100], atol=0.01)  # edges: filter ramp
    assert resample(out, 16000, 16000).dtype == np.float32


# ---- faces --------------------------------------------------------------------------------


def test_faces_in_the_photo_video(media, pipeline):
    clip = decode(media["face"])
    faces = pipeline(clip.frames)
    assert faces.crops.shape[1:] == (224, 224, 3) and faces.crops.dtype == np.uint8
    assert len(faces.crops) >= 0.9 * len(clip.frames)
    assert np.all(np.diff(faces.frame_index) > 0) and faces.frame_index.dtype == np.int64
    for crop in faces.crops:
        background = np.all(crop == pipeline.fill, axis=-1)
        # The oval's hull covers most of the square; the corners are masked.
        assert 0.15 < background.mean() < 0.5
        assert background[0, 0] and background[-1, -1] and background[0, -1] and background[-1, 0]
        rows, cols = np.nonzero(~background)
        assert abs(rows.mean() - 112) < 12 and abs(cols.mean() - 112) < 12  # face centred


def test_no_face_video(media, pipeline):
    with pytest.raises(StageError) as error:
        pipeline(decode(media["noface"]).frames)
    assert (error.value.stage, error.value.reason) == ("faces", "no face in any of 10 frames")


def test_zero_frames(pipeline):
    with pytest.raises(StageError, match="no video frames"):
        pipeline(np.zeros((0, 64, 64, 3), np.uint8))


def test_largest_of_several_faces_is_kept(pipeline, photo):
    small = fit(photo, max(photo.shape) // 2)
    height, width = photo.shape[:2]
    frame = on_canvas(height, width + small.shape[1], (photo, 0, 0), (small, 0, width))
    with FacePipeline(min_face_size=0) as any_size:
        assert len(any_size.detect_all(frame)) == 2  # both faces are seen
    face = pipeline.detect(frame)
    assert face is not None and face.centre[0] < width  # the big photo's face
    assert np.corrcoef(pipeline.crop(frame).ravel(), pipeline.crop(photo).ravel())[0, 1] > 0.95


def test_tiny_face_is_skipped(photo):
    small = fit(photo, max(photo.shape) // 2)  # a face box of about 40 px, the photo's about 80
    tiny = on_canvas(*photo.shape[:2], (small, 0, 0))
    with FacePipeline(min_face_size=0) as any_size:
        assert any_size.detect(tiny) is not None  # BlazeFace does see it
    with FacePipeline(min_face_size=60) as faces:
        assert faces(np.stack([photo, tiny, photo])).frame_index.tolist() == [0, 2]


def test_crop_levels_the_eyes(pipeline, photo):
    turn = cv2.getRotationMatrix2D(pipeline.detect(photo).centre, 25, 1.0)
    tilted = cv2.warpAffine(photo, turn, photo.shape[1::-1])
    assert abs(np.degrees(pipeline.detect(tilted).roll)) > 15
    crop, upright = pipeline.crop(tilted), pipeline.crop(photo)
    # BlazeFace's eye keypoints are only good to a few degrees, so compare like with like: the
    # tilted photo's crop sits like the upright one's (unrotated, the correlation is about 0.8).
    assert abs(np.degrees(pipeline.detect(crop).roll - pipeline.detect(upright).roll)) < 5
    assert np.corrcoef(crop.ravel(), upright.ravel())[0, 1] > 0.93


def test_mesh_failure_falls_back_to_the_box_crop(photo):
    # FaceMesh's own detector never reaches a confidence of 1, so the mesh always fails.
    with FacePipeline(min_mesh_confidence=1.0) as faces:
        crop = faces.crop(photo)
    assert crop.shape == (224, 224, 3)
    assert np.all(crop == faces.fill, axis=-1).mean() < 0.01  # background kept
