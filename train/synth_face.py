"""Source faces for `fes-synth`: one neutral frame of a real face, its MediaPipe mesh, framed like a dataset video.

A source is any photo or video the user points to. Videos give their early frames (people start neutral); photos
with several faces give the largest one. The face is scaled and placed in a fixed-size frame (640x480 like
CAS(ME)^2) so every generated video has the same geometry whatever the source resolution.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
MESH_POINTS = 468  # the face mesh without the 10 iris points (irises are hidden by the eyelids when eyes close)

# MediaPipe face-mesh ids (subject's right eye = image left in a frontal photo). Lists run corner to corner.
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
INNER_BROWS = (107, 66, 55, 65, 336, 296, 285, 295)
OUTER_BROWS = (70, 63, 46, 53, 300, 293, 276, 283)
LIPS_UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
LIP_CORNERS = (61, 291, 78, 308)
NOSE_WINGS = (98, 327, 64, 294, 129, 358, 48, 278, 102, 331, 49, 279)
CHEEKS = (50, 101, 205, 36, 118, 117, 280, 330, 425, 266, 347, 346)
CHIN = (152, 148, 176, 149, 377, 400, 378, 199, 175)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


class SourceFaceError(ValueError):
    """A face source that cannot be used: missing file, unreadable, or no face found."""


@dataclass(frozen=True)
class SourceFace:
    """A neutral face framed for synthesis: the frame and its 468 mesh points in that frame's pixels."""
    name: str              # subject name (file stem, filesystem-safe)
    path: str              # where it came from
    image: np.ndarray      # (H, W, 3) uint8 BGR, the neutral frame
    landmarks: np.ndarray  # (468, 2) float32 pixel x, y in `image`


def subject_name(path: str | Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem).strip("_") or "face"


def _landmarker(model_path: Path, num_faces: int):
    from mediapipe.tasks.python import BaseOptions, vision
    opts = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(model_path)),
                                        running_mode=vision.RunningMode.IMAGE, num_faces=num_faces,
                                        output_face_blendshapes=True)
    return vision.FaceLandmarker.create_from_options(opts)


def face_model_path(explicit: str | None = None) -> Path:
    """The Face Landmarker model via fes_live.stream.face_model (flag, $FES_FACE_MODEL, cache)."""
    from fes_live.stream.face_model import find_face_model
    return find_face_model(explicit)


class MeshDetector:
    """Face Landmarker in IMAGE mode: the largest face's landmarks (pixels) and blendshapes of a BGR image."""

    def __init__(self, model_path: Path | None = None, num_faces: int = 5):
        self._lm = _landmarker(model_path or face_model_path(), num_faces)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, float]] | None:
        """(478, 2) pixel landmarks and {blendshape: score} of the largest face, or None without a face."""
        import mediapipe as mp
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        res = self._lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        if not res.face_landmarks:
            return None
        h, w = image.shape[:2]
        faces = [np.array([(p.x * w, p.y * h) for p in lms], np.float32) for lms in res.face_landmarks]
        areas = [np.ptp(f[:, 0]) * np.ptp(f[:, 1]) for f in faces]
        best = int(np.argmax(areas))
        shapes = {c.category_name: float(c.score) for c in res.face_blendshapes[best]} if res.face_blendshapes else {}
        return faces[best], shapes

    def close(self) -> None:
        self._lm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_source_frames(path: Path, video_frames: int) -> list[np.ndarray]:
    """The image, or the first `video_frames` frames of a video (its neutral start)."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        cap = cv2.VideoCapture(str(path))
        frames = []
        while len(frames) < video_frames:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
        if not frames:
            raise SourceFaceError(f"{path}: cannot read any video frame")
        return frames
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceFaceError(f"{path}: not an image cv2 can read (and not a video: {sorted(VIDEO_SUFFIXES)})")
    return [image]


def load_source_face(path: str | Path, detector: MeshDetector, size: tuple[int, int] = (640, 480),
                     face_height: float = 0.5, video_frames: int = 15) -> SourceFace:
    """Detect the face (the largest; in a video the first detected of its first frames, the middle of the detected
    ones) and place it in a `size` (w, h) frame, face oval `face_height` of the frame height, eyes above the centre."""
    path = Path(path)
    if not path.is_file():
        raise SourceFaceError(f"face source {path} does not exist")
    frames = _read_source_frames(path, video_frames)
    found = [(f, r[0]) for f in frames if (r := detector.detect(f)) is not None]
    if not found:
        raise SourceFaceError(f"{path}: no face found by the Face Landmarker")
    image, lms = found[len(found) // 2] if len(found) > 2 else found[0]
    oval = lms[list(FACE_OVAL)]
    x0, y0 = oval.min(0)
    x1, y1 = oval.max(0)
    w, h = size
    scale = face_height * h / max(y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    M = np.array([[scale, 0, w / 2 - scale * cx], [0, scale, 0.52 * h - scale * cy]], np.float32)
    framed = cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    pts = lms[:MESH_POINTS] @ M[:, :2].T + M[:, 2]
    log.info("source face %s: %dx%d face scaled x%.2f", path, int(x1 - x0), int(y1 - y0), scale)
    return SourceFace(subject_name(path), str(path), framed, pts.astype(np.float32))


def mirrored(face: SourceFace, detector: MeshDetector) -> SourceFace:
    """The same face flipped left-right, as another subject (its mesh is detected again, not flipped)."""
    image = np.ascontiguousarray(face.image[:, ::-1])
    found = detector.detect(image)
    if found is None:
        raise SourceFaceError(f"{face.path}: no face found in the mirrored frame")
    return SourceFace(f"{face.name}_mirror", face.path, image, found[0][:MESH_POINTS].astype(np.float32))
