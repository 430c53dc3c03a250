"""The per-frame table: one CSV row per frame of a stream, the layout OpenFace and py-feat users expect.

Face columns come from the ingest's `FaceTracker` (the primary face), the intensity and apex columns from the
detector's `intensity` events and the expression columns from its `expression` events, so `--record`, `fes-live
batch` and `fes-live extract --csv` write the same table (columns: docs/table.md). A row waits in memory until the
detector has scored `horizon_s` beyond its frame (it has long reported any expression containing it by then), or
until MAX_HELD rows wait (a detector that fell silent), so memory is bounded on a stream of any length; `close()`
writes the rest. The face part of a held row is kept as one CSV string (~9 kB).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fes_live.stream.face import BLENDSHAPE_NAMES, N_LANDMARKS

POSE_COLUMNS = ("yaw_deg", "pitch_deg", "roll_deg", "tx", "ty", "tz")
INTENSITY_COLUMNS = ("intensity", "apex_macro", "apex_micro", "level")
EXPRESSION_COLUMNS = ("expression_track", "expression_onset", "expression_offset", "expression_kind",
                      "expression_emotion")
FACE_COLUMNS = ("frame", "timestamp_s", "face_id", "face_present", "face_state")
LANDMARK_COLUMNS = tuple(f"x_{i}" for i in range(N_LANDMARKS)) + tuple(f"y_{i}" for i in range(N_LANDMARKS))
COLUMNS: tuple[str, ...] = (FACE_COLUMNS + POSE_COLUMNS + LANDMARK_COLUMNS + BLENDSHAPE_NAMES + INTENSITY_COLUMNS
                            + EXPRESSION_COLUMNS)
HORIZON_S = 20.0  # = the clip recorder's ring: an expression is final well within it
MAX_HELD = 12_000  # rows held at most (a lossless ingest runs up to ~10 000 frames ahead of the detector)


def head_pose(matrix: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """MediaPipe's facial transformation matrix -> (yaw, pitch, roll) degrees and (tx, ty, tz) translation.

    The matrix maps MediaPipe's canonical face model (centimetres) into camera space (right-handed: x right, y up,
    z towards the viewer). With any scale removed, R = Rz(roll) @ Ry(yaw) @ Rx(pitch): pitch about x, yaw about y,
    roll about z; all zero for a frontal, upright face. tx, ty, tz: the model's origin in camera space (cm).
    """
    m = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
    r = m[:3, :3]
    det = np.linalg.det(r)
    if np.isfinite(det) and det > 1e-12:
        r = r / np.cbrt(det)
    pitch = math.degrees(math.atan2(r[2, 1], r[2, 2]))
    yaw = math.degrees(math.atan2(-r[2, 0], math.hypot(r[2, 1], r[2, 2])))
    roll = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    return yaw, pitch, roll, float(m[0, 3]), float(m[1, 3]), float(m[2, 3])


def _cell(text: str) -> str:
    """A CSV field (quoted when it must be)."""
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n\r') else text


def face_cells(frame_index: int, pts_s: float, faces) -> list[str]:
    """The face part of a row (FACE, POSE, LANDMARK and blendshape columns) from a `FaceResult`."""
    face = faces.primary if faces is not None else None
    state = faces.state.value if faces is not None else "none"
    head = [str(int(frame_index)), f"{pts_s:.6f}"]
    if face is None:
        return head + ["", "0", state] + [""] * (len(POSE_COLUMNS) + len(LANDMARK_COLUMNS) + len(BLENDSHAPE_NAMES))
    pose = [f"{v:.3f}" for v in head_pose(face.pose)]
    lm = face.landmarks[:, :2].astype(np.float64)
    xy = [f"{v:.2f}" for v in lm[:, 0]] + [f"{v:.2f}" for v in lm[:, 1]]
    bs = [f"{v:.6f}" for v in face.blendshapes.astype(np.float64)]
    return head + [str(int(face.track_id)), "1", state] + pose + xy + bs


@dataclass
class _Expression:
    track: int
    onset: int
    offset: int
    kind: str
    emotion: str | None
    score: float


class FrameTable:
    """Rows of one stream in frame order: `add(frame_index, pts_s, faces)` per frame, `on_event(ev)` for the
    stream's detector events (in any order relative to the frames), `close()` at the end."""

    def __init__(self, path: str | Path, fps: float, horizon_s: float = HORIZON_S):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.horizon = max(1, round(horizon_s * (fps if fps and fps > 0 else 30.0)))
        self._f = open(self.path, "x", newline="")  # never append to or overwrite an earlier table
        self._f.write(",".join(COLUMNS) + "\n")
        self._rows: deque[tuple[int, str]] = deque()
        self._scored = -1  # newest frame the detector has reported an intensity for
        self._intensity: dict[int, tuple[float | None, ...]] = {}
        self._expressions: list[_Expression] = []
        self.rows = 0
        self.face_frames = 0

    def add(self, frame_index: int, pts_s: float, faces) -> None:
        cells = face_cells(frame_index, pts_s, faces)
        self.face_frames += cells[3] == "1"
        self._rows.append((int(frame_index), ",".join(cells)))
        self._write_due()

    def _write_due(self) -> None:
        while self._rows and (self._rows[0][0] <= self._scored - self.horizon or len(self._rows) > MAX_HELD):
            self._write(*self._rows.popleft())

    def on_event(self, ev: dict) -> None:
        d = ev.get("data", {})
        if ev.get("type") == "intensity":
            levels = d.get("levels") or [None] * len(d["frames"])  # absent in journals from before it existed
            for f, v, a, level in zip(d["frames"], d["values"], d["apex_probs"], levels):
                self._intensity[int(f)] = (float(v), float(a[0]), float(a[1]), level)
                self._scored = max(self._scored, int(f))
            self._write_due()
        elif ev.get("type") == "expression":
            self._expressions.append(_Expression(int(d["track"]), int(d["onset"]["frame"]),
                                                 int(d["offset"]["frame"]), d["kind"], d["emotion"],
                                                 float(d["score"])))

    def _write(self, frame: int, face: str) -> None:
        i = self._intensity.pop(frame, None)
        cells = [""] * len(INTENSITY_COLUMNS) if i is None else ["" if v is None else f"{v:.6f}" for v in i]
        hits = [e for e in self._expressions if e.onset <= frame <= e.offset]
        if hits:  # overlapping expressions (a micro inside a macro): the best-scored one
            e = max(hits, key=lambda e: (e.score, -e.onset))
            cells += [str(e.track), str(e.onset), str(e.offset), e.kind, _cell(e.emotion or "")]
        else:
            cells += [""] * len(EXPRESSION_COLUMNS)
        self._f.write(face + "," + ",".join(cells) + "\n")
        self.rows += 1
        self._expressions = [e for e in self._expressions if e.offset >= frame]
        if len(self._intensity) > 4 * self.horizon:  # values of frames already written (never were rows)
            self._intensity = {f: v for f, v in self._intensity.items() if f > frame}

    def close(self) -> int:
        """Write every row still held; returns the number of rows."""
        if self._f.closed:
            return self.rows
        while self._rows:
            self._write(*self._rows.popleft())
        self._f.close()
        return self.rows

    @property
    def no_face(self) -> bool:
        return self.face_frames == 0
