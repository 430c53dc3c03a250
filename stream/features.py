"""Per-frame features of the primary face: aligned crop, geometry (blendshapes + pose-free landmarks), ROI flow.

Geometry is the 52 blendshapes followed by the 478 landmarks with the head pose removed (rotation undone with
MediaPipe's transformation matrix, then fitted onto the crop template), as `crop_xy / 224 - 0.5`, x and y
interleaved.

ROI flow follows the GIM/SpotFormer input (reference_notes §1.2, after the ABPN/USTC pipeline): dense optical flow
between consecutive aligned crops, a small patch at each of 12 landmark points (eyebrows, nose, mouth), the head's
own motion removed by subtracting the dominant-direction mean flow of a nose box, and per ROI the dominant-direction
mean flow: keep the pixels of the most populated of 4 direction bins, of those the largest `roi_keep` fraction by
magnitude, and return unit mean direction x mean magnitude. Flow is computed on a small (default 112x112) crop with
DIS "ultrafast" to stay cheap, and expressed in pixels of the 224x224 crop per frame, whatever that size is.

The reference's 12 points are 0-based iBUG-68 indices; their MediaPipe mesh equivalents:

    68-pt  mesh  ROI                 68-pt  mesh  ROI
    18     63    right_brow_outer    28     197   nose_bridge
    19     105   right_brow_mid      30     4     nose_tip
    20     66    right_brow_inner    48     61    mouth_right
    23     296   left_brow_inner     51     0     upper_lip
    24     334   left_brow_mid       54     291   mouth_left
    25     293   left_brow_outer     57     17    lower_lip

("right"/"left" are the subject's.) The nose box for head motion spans 68-pt 29-30 = mesh 5 and 4, padded by the
patch radius.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numba
import numpy as np

from fes_live.stream.face import CROP_SIZE, FaceResult, FaceState, crop_landmarks, frontal_landmarks
from fes_live.stream.sources import Frame

BLENDSHAPE_DIM = 52
LANDMARK_DIM = 478 * 2
GEOMETRY_DIM = BLENDSHAPE_DIM + LANDMARK_DIM  # 1008
WINDOW = 17  # GIM window: flows of frames t-8 .. t+8 (8 frames look-ahead)

ROI_NAMES: tuple[str, ...] = (
    "right_brow_outer", "right_brow_mid", "right_brow_inner",
    "left_brow_inner", "left_brow_mid", "left_brow_outer",
    "nose_bridge", "nose_tip",
    "mouth_right", "upper_lip", "mouth_left", "lower_lip",
)
ROI_68_INDEX = (18, 19, 20, 23, 24, 25, 28, 30, 48, 51, 54, 57)
ROI_MESH_INDEX = np.array([63, 105, 66, 296, 334, 293, 197, 4, 61, 0, 291, 17])
NOSE_BOX_MESH_INDEX = np.array([5, 4])

FEATURE_KEYS = ("geometry", "roi_flow", "face_present", "frame_index", "pts_s", "fps", "roi_names")


@dataclass(frozen=True)
class FeatureConfig:
    flow_size: int = 112        # side of the grey crop the flow is computed on (smaller = faster, coarser)
    roi_radius: int = 4         # patch half-size in flow-crop pixels (9x9 at 112 ~ 18x18 of the 224 crop)
    roi_keep: float = 0.6       # ROI: keep this top fraction of magnitudes in the dominant direction
    nose_keep: float = 0.88     # nose box (head motion): same, as in the reference
    flow_method: str = "dis"    # "dis" (DIS ultrafast) or "farneback"
    keep_crop: bool = True      # put the 224x224 crop into FrameFeatures (the FEDN backbone needs it)
    frontalize: bool = True     # geometry: undo head yaw/pitch too (off: only the 2-D similarity of the crop)

    def __post_init__(self) -> None:
        if self.flow_size < 32:
            raise ValueError(f"flow_size must be >= 32, got {self.flow_size}")
        if self.flow_method not in ("dis", "farneback"):
            raise ValueError(f"flow_method must be 'dis' or 'farneback', got {self.flow_method!r}")
        if not (0 < self.roi_keep <= 1 and 0 < self.nose_keep <= 1):
            raise ValueError("roi_keep and nose_keep must be in (0, 1]")
        if self.roi_radius < 1:
            raise ValueError("roi_radius must be >= 1")


@dataclass
class FrameFeatures:
    frame_index: int
    pts_s: float
    wall_s: float
    face_present: bool
    geometry: np.ndarray     # (1008,) float32; zeros when no face
    roi_flow: np.ndarray     # (12, 2) float32 flow of the ROI from the previous aligned frame, head motion removed
    crop: np.ndarray | None  # (224, 224, 3) uint8 BGR
    new_face: bool = False   # the primary face is not the previous frame's (first seen, after a shot cut, or
                             # another person took over): its neutral baseline starts again


@numba.njit(cache=True)
def _dominant_mean(us: np.ndarray, vs: np.ndarray, keep: float) -> tuple[float, float]:
    """Dominant-direction mean flow of a set of vectors: most populated of 4 direction bins (centred on +x, +y,
    -x, -y), its top `keep` fraction by magnitude, unit mean direction x mean magnitude."""
    n = us.shape[0]
    if n == 0:
        return 0.0, 0.0
    bins = np.empty(n, np.int64)
    counts = np.zeros(4, np.int64)
    mags = np.empty(n, np.float64)
    for i in range(n):
        mags[i] = np.sqrt(us[i] * us[i] + vs[i] * vs[i])
        ang = np.arctan2(vs[i], us[i])  # (-pi, pi]
        b = int(np.floor((ang + np.pi / 4) / (np.pi / 2))) % 4
        bins[i] = b
        counts[b] += 1
    best = 0
    for b in range(1, 4):
        if counts[b] > counts[best]:
            best = b
    sel = np.empty(counts[best], np.float64)
    k = 0
    for i in range(n):
        if bins[i] == best:
            sel[k] = mags[i]
            k += 1
    sel.sort()
    n_keep = max(1, int(np.ceil(keep * k)))
    thresh = sel[k - n_keep]
    su = 0.0
    sv = 0.0
    sm = 0.0
    m = 0
    for i in range(n):
        if bins[i] == best and mags[i] >= thresh and m < n_keep:
            if mags[i] > 1e-9:
                su += us[i] / mags[i]
                sv += vs[i] / mags[i]
            sm += mags[i]
            m += 1
    norm = np.sqrt(su * su + sv * sv)
    if norm < 1e-9:
        return 0.0, 0.0
    mean_mag = sm / m
    return su / norm * mean_mag, sv / norm * mean_mag


@numba.njit(cache=True)
def _patch(flow: np.ndarray, x0: int, y0: int, x1: int, y1: int, du: float, dv: float):
    """Flow vectors of the clipped box [x0, x1] x [y0, y1], minus (du, dv)."""
    h, w = flow.shape[0], flow.shape[1]
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, w - 1), min(y1, h - 1)
    n = max(0, x1 - x0 + 1) * max(0, y1 - y0 + 1)
    us = np.empty(n, np.float64)
    vs = np.empty(n, np.float64)
    k = 0
    for y in range(y0, y1 + 1):
        for x in range(x0, x1 + 1):
            us[k] = flow[y, x, 0] - du
            vs[k] = flow[y, x, 1] - dv
            k += 1
    return us, vs


@numba.njit(cache=True)
def roi_flow_from_field(flow: np.ndarray, centers: np.ndarray, nose_box: np.ndarray, radius: int,
                        roi_keep: float, nose_keep: float) -> np.ndarray:
    """(H, W, 2) flow -> (R, 2): head motion (dominant mean of the nose box) removed, dominant mean per ROI patch."""
    us, vs = _patch(flow, nose_box[0], nose_box[1], nose_box[2], nose_box[3], 0.0, 0.0)
    du, dv = _dominant_mean(us, vs, nose_keep)
    out = np.zeros((centers.shape[0], 2), np.float32)
    for r in range(centers.shape[0]):
        cx, cy = centers[r, 0], centers[r, 1]
        us, vs = _patch(flow, cx - radius, cy - radius, cx + radius, cy + radius, du, dv)
        u, v = _dominant_mean(us, vs, roi_keep)
        out[r, 0] = u
        out[r, 1] = v
    return out


class FeatureExtractor:
    """Turns (frame, faces) into `FrameFeatures`; keeps the previous grey flow crop of the primary track."""

    def __init__(self, cfg: FeatureConfig = FeatureConfig()):
        self.cfg = cfg
        self._prev_gray: np.ndarray | None = None
        self._prev_track: int | None = None
        self._dis = None
        if cfg.flow_method == "dis":
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    def reset(self) -> None:
        self._prev_gray, self._prev_track = None, None

    def update(self, frame: Frame, faces: FaceResult) -> FrameFeatures:
        face = faces.primary
        if face is None:
            self.reset()
            return FrameFeatures(frame.index, frame.pts_s, frame.wall_s, False,
                                 np.zeros(GEOMETRY_DIM, np.float32), np.zeros((len(ROI_NAMES), 2), np.float32), None)
        lm = crop_landmarks(face)  # (478, 2) where they are in the 224 crop: the flow ROIs
        shape = frontal_landmarks(face) if self.cfg.frontalize else lm
        geometry = np.concatenate([face.blendshapes.astype(np.float32),
                                   (shape / CROP_SIZE - 0.5).reshape(-1).astype(np.float32)])
        scale = self.cfg.flow_size / CROP_SIZE
        a = face.align.astype(np.float64) * scale
        gray = _gray(cv2.warpAffine(frame.image, a, (self.cfg.flow_size, self.cfg.flow_size), flags=cv2.INTER_LINEAR))
        roi = np.zeros((len(ROI_NAMES), 2), np.float32)
        if self._prev_gray is not None and self._prev_track == face.track_id:
            flow = self._flow(self._prev_gray, gray)
            roi = self.roi_flow(flow, lm * scale) / scale  # back to 224-crop pixels
        self._prev_gray, self._prev_track = gray, face.track_id
        return FrameFeatures(frame.index, frame.pts_s, frame.wall_s, True, geometry, roi.astype(np.float32),
                             face.crop if self.cfg.keep_crop else None, new_face=faces.state is FaceState.FOUND)

    def _flow(self, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
        if self._dis is not None:
            return self._dis.calc(prev, cur, None)
        return cv2.calcOpticalFlowFarneback(prev, cur, None, 0.5, 3, 9, 3, 5, 1.1, 0)

    def roi_flow(self, flow: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(H, W, 2) flow + (478, 2) landmarks in flow-crop pixels -> (12, 2) ROI flow in flow-crop pixels."""
        r = self.cfg.roi_radius
        centers = np.rint(landmarks[ROI_MESH_INDEX]).astype(np.int64)
        nose = landmarks[NOSE_BOX_MESH_INDEX]
        box = np.array([nose[:, 0].min() - r, nose[:, 1].min() - r, nose[:, 0].max() + r, nose[:, 1].max() + r])
        return roi_flow_from_field(np.ascontiguousarray(flow, dtype=np.float32), centers,
                                   np.rint(box).astype(np.int64), r, self.cfg.roi_keep, self.cfg.nose_keep)


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)


def flow_windows(roi_flow: np.ndarray, centers: np.ndarray, radius: int = 8) -> np.ndarray:
    """(T, R, 2) ROI flow + frame indices -> (N, 2*radius+1, R, 2) windows t-radius..t+radius, zeros beyond the ends."""
    roi_flow = np.asarray(roi_flow)
    centers = np.asarray(centers, dtype=np.int64).reshape(-1)
    if roi_flow.ndim != 3:
        raise ValueError(f"roi_flow must be (T, R, 2), got shape {roi_flow.shape}")
    t = len(roi_flow)
    if len(centers) and (centers.min() < 0 or centers.max() >= t):
        raise ValueError(f"window centres must lie in [0, {t - 1}], got {centers.min()}..{centers.max()}")
    padded = np.zeros((t + 2 * radius, *roi_flow.shape[1:]), roi_flow.dtype)
    padded[radius:radius + t] = roi_flow
    offsets = np.arange(2 * radius + 1)
    return padded[centers[:, None] + offsets[None, :]]  # (N, 2r+1, R, 2)


def save_features(path: str | Path, feats: list[FrameFeatures], fps: float, crops: bool = False,
                  extra: dict | None = None) -> None:
    """Write the `fes-live extract` .npz layout (docs/contracts.md); `extra`: more named arrays."""
    n = len(feats)
    out = dict(
        geometry=np.stack([f.geometry for f in feats]) if n else np.zeros((0, GEOMETRY_DIM), np.float32),
        roi_flow=np.stack([f.roi_flow for f in feats]) if n else np.zeros((0, len(ROI_NAMES), 2), np.float32),
        face_present=np.array([f.face_present for f in feats], dtype=bool),
        new_face=np.array([f.new_face for f in feats], dtype=bool),
        frame_index=np.array([f.frame_index for f in feats], dtype=np.int64),
        pts_s=np.array([f.pts_s for f in feats], dtype=np.float64),
        fps=np.float64(fps),
        roi_names=np.array(ROI_NAMES),
    )
    out.update(extra or {})
    if crops:
        blank = np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8)
        out["crops"] = (np.stack([f.crop if f.crop is not None else blank for f in feats]) if n
                        else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file handle: np.savez would append .npz to a name without it
        np.savez(fh, **out)


def load_features(path: str | Path) -> dict:
    """Read a `fes-live extract` file back: arrays as written, `fps` a float, `roi_names` a tuple of str."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no features file {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a features .npz ({e})") from None
    missing = [k for k in FEATURE_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    data["fps"] = float(data["fps"])
    if "new_face" not in data:  # written before shot cuts were marked: a face track ends only without a face
        data["new_face"] = np.zeros(len(data["frame_index"]), bool)
    data["roi_names"] = tuple(str(s) for s in data["roi_names"])
    t = len(data["frame_index"])
    if data["geometry"].shape != (t, GEOMETRY_DIM) or data["roi_flow"].shape[0] != t:
        raise ValueError(f"{path}: inconsistent shapes geometry {data['geometry'].shape}, "
                         f"roi_flow {data['roi_flow'].shape}, {t} frames")
    return data
