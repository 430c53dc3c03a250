"""Streams of any frame rate brought to the models' rate, so that a window always spans the time it was trained on.

Stream frame i covers the model-time span [i / r, (i + 1) / r) (r = stream fps / model fps, in model frames); model
frame j covers [j, j + 1). A model frame goes out as soon as the stream frame that covers its end is in, so no
look-ahead and no latency beyond that frame. Each stream frame's share of a model frame is the fraction of its span
inside it: a faster stream's frames are averaged (geometry) and summed (ROI flow, which is motion over one stream
frame) with those shares; a slower stream's geometry is interpolated between the two frames around the model
frame's end (each placed at the end of its span) and its flow split by the same shares, so the motion over any
stretch of time is the same at every rate. With r a whole number (60, 210 fps) or its inverse (15, 10 fps) the
shares are 1 or 1 / u and nothing is interpolated across frames of a group: k frames make one, or one makes u.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-6  # model-frame units; far below a frame at any index a stream reaches


def resampling_ratio(fps: float, model_fps: float, tolerance: float = 0.05) -> float:
    """Stream frames per model frame, or 1.0 where the stream is within `tolerance` of the models' rate (29.97,
    28.99 fps: a window then spans at most 5 % more or less time) or no model rate is known."""
    if model_fps <= 0 or fps <= 0:
        return 1.0
    r = fps / model_fps
    return 1.0 if abs(r - 1.0) <= tolerance else r


@dataclass
class _Frame:
    index: int
    face: bool
    geometry: np.ndarray
    flow: np.ndarray
    new_face: bool


class Resampler:
    """Stream frames in (`push`), model frames out: (model index, face present, geometry, roi_flow, new_face).
    Frame gaps stay gaps: a model frame no stream frame reaches is never made."""

    def __init__(self, ratio: float):
        if not ratio > 0:
            raise ValueError(f"resampling ratio must be > 0, got {ratio}")
        self.r = float(ratio)
        self.reset()

    def reset(self) -> None:
        self._frames: list[_Frame] = []  # stream frames that may still reach a model frame not yet made
        self._next = 0                   # the first model frame not yet made (or skipped)

    # ------------------------------------------------------------------------------------- stream -> model

    def start(self, i: int) -> float:
        return i / self.r

    def end(self, i: int) -> float:
        return (i + 1) / self.r

    def push(self, i: int, face: bool, geometry: np.ndarray, flow: np.ndarray, new_face: bool) -> list[tuple]:
        """Stream frame `i` in (indices increase; the caller checks); the model frames it completes out."""
        self._frames.append(_Frame(i, face, geometry.copy(), flow.copy(), new_face))  # the caller may reuse buffers
        self._skip_gap()
        return self._emit(until=self.end(i))

    def flush(self) -> list[tuple]:
        """The model frames the last stream frames reach in part (a stream's end)."""
        if not self._frames:
            return []
        out = self._emit(until=math.ceil(self.end(self._frames[-1].index) - EPS))
        self.reset()
        return out

    def _emit(self, until: float) -> list[tuple]:
        out = []
        while self._next + 1 <= until + EPS:
            j = self._next
            parts = [(f, w) for f in self._frames if (w := self._share(f.index, j)) > EPS]
            if parts:
                out.append(self._make(j, parts))
            self._next += 1
            self._skip_gap()
        # keep the frames a later model frame still needs, and the newest one (a slower stream interpolates from it)
        self._frames = [f for f in self._frames[:-1] if self.end(f.index) > self._next + EPS] + self._frames[-1:]
        return out

    def _skip_gap(self) -> None:
        """Past the model frames no kept stream frame reaches (dropped frames), at once."""
        if not any(self._share(f.index, self._next) > EPS for f in self._frames):
            ahead = [math.floor(self.start(f.index) + EPS) for f in self._frames if self.start(f.index) > self._next]
            if ahead:
                self._next = max(self._next, min(ahead))

    def _share(self, i: int, j: int) -> float:
        """The fraction of stream frame i's span inside model frame j."""
        inside = min(self.end(i), j + 1) - max(self.start(i), j)
        return max(0.0, inside) * self.r

    def _make(self, j: int, parts: list[tuple[_Frame, float]]) -> tuple:
        """Model frame j of the stream frames that reach it (with their shares). A new face starting inside it makes
        it that face's frame, of that face's stream frames only."""
        starts = [n for n, (f, _) in enumerate(parts) if f.new_face]
        new_from = starts[-1] if starts else 0
        new_face = bool(starts) and self.start(parts[new_from][0].index) >= j - EPS  # not the next model frame's
        face = 2 * sum(w for f, w in parts if f.face) >= sum(w for _, w in parts) - EPS
        own = [(f, w) for f, w in parts[new_from:] if f.face]
        flow = sum((w * f.flow for f, w in own), np.zeros_like(parts[0][0].flow)).astype(np.float32)
        if self.r < 1:  # slower: the geometry at the model frame's end, on the line between the frames around it
            geometry = self._interpolated(j, parts[-1][0])
        else:
            rows = own or parts[new_from:]
            geometry = (sum(w * f.geometry for f, w in rows) / sum(w for _, w in rows)).astype(np.float32)
        return j, face, geometry, flow, face and new_face

    def _interpolated(self, j: int, f: _Frame) -> np.ndarray:
        """The geometry at model time j + 1: from the frame before `f` (when it is the stream frame just before and
        both show the same face) towards `f`, each at its span's end; `f`'s own where there is no such frame."""
        before = next((b for b in self._frames if b.index == f.index - 1), None)
        if before is None or not (before.face and f.face) or f.new_face:
            return f.geometry
        at = min(1.0, max(0.0, (j + 1 - self.end(before.index)) * self.r))
        return (before.geometry + at * (f.geometry - before.geometry)).astype(np.float32)

    # ------------------------------------------------------------------------------------- model -> stream

    def first_stream_frame(self, j: int) -> int:
        """The first stream frame model frame j reaches (an event's onset, an update's frame)."""
        return math.floor(j * self.r + EPS)

    def last_stream_frame(self, j: int) -> int:
        """The last stream frame model frame j reaches (an event's offset)."""
        return max(self.first_stream_frame(j), math.ceil((j + 1) * self.r - EPS) - 1)

    def middle_stream_frame(self, j: int) -> int:
        """The stream frame at model frame j's middle (an apex)."""
        return math.floor((j + 0.5) * self.r + EPS)

    def last_of_its_stream_frame(self, j: int) -> bool:
        """Whether j is the last model frame of its first stream frame (a slower stream keeps one intensity value
        a stream frame)."""
        return self.first_stream_frame(j + 1) > self.first_stream_frame(j)
