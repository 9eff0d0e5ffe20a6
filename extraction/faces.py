"""Face crops for the video encoder: BlazeFace detection, FaceMesh alignment and background
removal, both from MediaPipe's legacy solutions (paper section 2.1).

Per frame:
1. BlazeFace finds faces in the whole frame. The full-range model (``model_selection=1``,
   faces up to about 5 m; the short-range 0 is tuned to faces within about 2 m) is the
   default because the paper uses BlazeFace for long-range tracking and the corpora mix
   webcam close-ups with people filmed from afar. Of several faces the largest box is kept
   (the speaker is the largest face in the corpora's interview-style clips); a face whose
   box is smaller than ``min_face_size`` pixels on its shorter side is skipped (too few
   pixels to say anything about expression), and so is a frame without a face.
2. FaceMesh (static image mode, 468 landmarks) runs on a square region around that box
   with ``region_margin`` context, so its own short-range detector sees a close-up even
   when the face is far away: each model covers the other's weakness.
3. The frame is rotated about the face so that the line between the eye centres (means
   of MediaPipe's ``FACEMESH_RIGHT_EYE`` / ``FACEMESH_LEFT_EYE`` contour landmarks,
   around corners 33-133 and 362-263) is horizontal, cropped to a square around the
   face oval (``FACEMESH_FACE_OVAL``'s 36 landmarks) with ``crop_margin`` padding,
   resized to ``crop_size`` x ``crop_size`` (224: CLIP's input), and every pixel outside
   the convex hull of the oval is set to ``fill``.
Fallback: when FaceMesh finds no face in the region the detection is still trusted: the
crop is the square around the BlazeFace box, aligned with BlazeFace's two eye keypoints,
without background removal (there is no oval to mask with).

MediaPipe graphs are per-image and not thread-safe: build one ``FacePipeline`` per worker
and ``close()`` it (or use it as a context manager). Besides ``__call__`` on a clip's frames,
``crop``, ``detect`` and ``detect_all`` work on one frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import atan2, cos, sin

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.framework.formats.detection_pb2 import Detection

from extraction.types import Faces, StageError

_face_mesh = mp.solutions.face_mesh
_RIGHT_EYE = sorted({i for edge in _face_mesh.FACEMESH_RIGHT_EYE for i in edge})  # subject's right
_LEFT_EYE = sorted({i for edge in _face_mesh.FACEMESH_LEFT_EYE for i in edge})
_FACE_OVAL = sorted({i for edge in _face_mesh.FACEMESH_FACE_OVAL for i in edge})
_KEYPOINT = mp.solutions.face_detection.FaceKeyPoint


@dataclass(frozen=True)
class FaceBox:
    """A BlazeFace detection in frame pixels: box (x, y, width, height), the subject's right
    and left eye keypoints (x, y), and the detector's score."""

    x: float
    y: float
    width: float
    height: float
    right_eye: tuple[float, float]
    left_eye: tuple[float, float]
    score: float

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2

    @property
    def roll(self) -> float:
        """Radians from the image x axis to the eye line (0 for an upright face)."""
        return _eye_angle(np.array(self.right_eye), np.array(self.left_eye))


class FacePipeline:
    """Frames -> aligned, background-free face crops (``Faces``); see the module docstring.

    crop_size: side of the square crops in pixels.
    min_face_size: faces whose detection box is shorter than this (pixels) are skipped.
    model_selection: BlazeFace model, 1 full-range (default) or 0 short-range.
    min_detection_confidence: BlazeFace score threshold.
    min_mesh_confidence: threshold of FaceMesh's own detector on the face region.
    region_margin: context around the box given to FaceMesh, as a fraction of the box side on
        each side (0.5 gives FaceMesh a region twice the box's size).
    crop_margin: padding around the face oval (or the box, in the fallback) in the crop, as a
        fraction of its side on each side.
    fill: the grey level (0-255) that replaces the background.
    """

    def __init__(
        self,
        crop_size: int = 224,
        min_face_size: int = 32,
        model_selection: int = 1,
        min_detection_confidence: float = 0.5,
        min_mesh_confidence: float = 0.5,
        region_margin: float = 0.5,
        crop_margin: float = 0.05,
        fill: int = 0,
    ) -> None:
        self.crop_size = crop_size
        self.min_face_size = min_face_size
        self.region_margin = region_margin
        self.crop_margin = crop_margin
        self.fill = fill
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=min_detection_confidence
        )
        self._mesh = _face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, min_detection_confidence=min_mesh_confidence
        )

    def __call__(self, frames: np.ndarray) -> Faces:
        """uint8 [T, H, W, 3] RGB -> ``Faces`` with crops [K, S, S, 3] of the K frames with a face.

        Raises ``StageError("faces", ...)`` when T is 0 or no frame has a usable face.
        """
        if len(frames) == 0:
            raise StageError("faces", "no video frames")
        crops, kept = [], []
        for index, frame in enumerate(frames):
            crop = self.crop(frame)
            if crop is not None:
                crops.append(crop)
                kept.append(index)
        if not crops:
            raise StageError("faces", f"no face in any of {len(frames)} frames")
        return Faces(crops=np.stack(crops), frame_index=np.asarray(kept, dtype=np.int64))

    def crop(self, frame: np.ndarray) -> np.ndarray | None:
        """uint8 [H, W, 3] RGB -> the face crop uint8 [S, S, 3], or None without a usable face."""
        frame = np.ascontiguousarray(frame)
        face = self.detect(frame)
        if face is None:
            return None
        landmarks = self._landmarks(frame, face)
        if landmarks is None:
            return self._box_crop(frame, face)
        return self._mesh_crop(frame, landmarks)

    def detect(self, frame: np.ndarray) -> FaceBox | None:
        """The largest face of ``detect_all(frame)``, or None."""
        return max(self.detect_all(frame), key=lambda f: f.width * f.height, default=None)

    def detect_all(self, frame: np.ndarray) -> list[FaceBox]:
        """BlazeFace's faces in uint8 [H, W, 3] RGB, those below ``min_face_size`` left out."""
        result = self._detector.process(np.ascontiguousarray(frame))
        height, width = frame.shape[:2]
        faces = [_face_box(d, width, height) for d in result.detections or []]
        return [f for f in faces if min(f.width, f.height) >= self.min_face_size]

    def close(self) -> None:
        """Release both MediaPipe graphs."""
        self._detector.close()
        self._mesh.close()

    def __enter__(self) -> FacePipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _landmarks(self, frame: np.ndarray, face: FaceBox) -> np.ndarray | None:
        """FaceMesh on the region around ``face`` -> float [468, 2] frame pixels, or None."""
        height, width = frame.shape[:2]
        half = max(face.width, face.height) * (0.5 + self.region_margin)
        cx, cy = face.centre
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(width, int(cx + half) + 1), min(height, int(cy + half) + 1)
        region = np.ascontiguousarray(frame[y0:y1, x0:x1])
        result = self._mesh.process(region)
        if not result.multi_face_landmarks:
            return None
        points = result.multi_face_landmarks[0].landmark
        relative = np.array([(p.x, p.y) for p in points])  # fractions of the region
        return relative * (x1 - x0, y1 - y0) + (x0, y0)

    def _mesh_crop(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Aligned square around the face oval, background outside the oval's hull filled."""
        angle = _eye_angle(landmarks[_RIGHT_EYE].mean(axis=0), landmarks[_LEFT_EYE].mean(axis=0))
        oval = landmarks[_FACE_OVAL]
        # The oval's bounding box once the eye line is level fixes the square's centre and side.
        level = oval @ _rotation(-angle).T
        low, high = level.min(axis=0), level.max(axis=0)
        centre = _rotation(angle) @ ((low + high) / 2)
        side = (high - low).max() * (1 + 2 * self.crop_margin)
        crop, to_crop = self._aligned_square(frame, centre, angle, side)
        hull = cv2.convexHull(np.round(_apply(to_crop, oval)).astype(np.int32))
        mask = np.zeros(crop.shape[:2], np.uint8)
        cv2.fillConvexPoly(mask, hull, 1)
        crop[mask == 0] = self.fill
        return crop

    def _box_crop(self, frame: np.ndarray, face: FaceBox) -> np.ndarray:
        """The fallback: aligned square around the detection box, background kept."""
        side = max(face.width, face.height) * (1 + 2 * self.crop_margin)
        return self._aligned_square(frame, np.array(face.centre), face.roll, side)[0]

    def _aligned_square(
        self, frame: np.ndarray, centre: np.ndarray, angle: float, side: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cut the square (``side`` px, centred on ``centre``, rotated by ``angle`` radians) out of
        ``frame`` and level it: -> uint8 [S, S, 3] crop and the affine [2, 3] frame -> crop map.

        The warp keeps the frame's resolution and a separate area-averaging resize scales it,
        because warpAffine alone would alias when shrinking a large face. Pixels outside the
        frame get ``fill``.
        """
        native = max(1, round(side))
        to_native = _square_map(centre, angle, side, native)
        square = cv2.warpAffine(
            frame, to_native, (native, native), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(self.fill,) * 3,
        )
        size = self.crop_size
        interpolation = cv2.INTER_AREA if native > size else cv2.INTER_LINEAR
        crop = cv2.resize(square, (size, size), interpolation=interpolation)
        return crop, to_native * (size / native)


def _face_box(detection: Detection, width: int, height: int) -> FaceBox:
    """A MediaPipe detection (relative coordinates) -> ``FaceBox`` in pixels."""
    box = detection.location_data.relative_bounding_box
    keypoints = detection.location_data.relative_keypoints

    def pixel(keypoint: _KEYPOINT) -> tuple[float, float]:
        point = keypoints[keypoint]
        return point.x * width, point.y * height

    return FaceBox(
        x=box.xmin * width, y=box.ymin * height, width=box.width * width, height=box.height * height,
        right_eye=pixel(_KEYPOINT.RIGHT_EYE), left_eye=pixel(_KEYPOINT.LEFT_EYE),
        score=detection.score[0],
    )


def _eye_angle(right_eye: np.ndarray, left_eye: np.ndarray) -> float:
    """Radians from the image x axis to the subject's right -> left eye line (y points down)."""
    dx, dy = left_eye - right_eye
    return atan2(dy, dx)


def _rotation(angle: float) -> np.ndarray:
    """The [2, 2] matrix rotating points by ``angle`` radians (image coordinates)."""
    return np.array([[cos(angle), -sin(angle)], [sin(angle), cos(angle)]])


def _square_map(centre: np.ndarray, angle: float, side: float, size: int) -> np.ndarray:
    """Affine [2, 3] map from frame pixels to a size x size square: the square of ``side`` px
    around ``centre``, rotated by ``angle``, lands upright with its centre at size / 2."""
    scale = size / side
    linear = scale * _rotation(-angle)
    return np.hstack([linear, (size / 2 - linear @ centre)[:, None]])


def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """An affine [2, 3] map applied to points [N, 2]."""
    return points @ affine[:, :2].T + affine[:, 2]
