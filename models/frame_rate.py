"""Streams of any frame rate brought to the models' rate, so that a window always spans the time it was trained on.

Stream frame i covers the model-time span [i / r, (i + 1) / r) (r = stream fps / model fps, in model frames); model
frame j covers [j, j + 1). A model frame goes out as soon as the stream frame that covers its end is in, so no
look-ahead and no latency beyond that frame. Each stream frame's share of a model frame is the fraction of its span
inside it: a faster stream's frames are averaged (geometry) and summed (ROI flow, which is motion over one stream
frame) with those shares; a slower stream's geometry is interpolated between the two frames around the model
frame's end (each placed at the end of its span) and its flow split by the same shares, so the motion over any
stretch of time is the same at every rate. With r a whole number (60, 210 fps) or its inverse (15, 10 fps) the
shares are 1 or 1 / u and nothing is interpolated across frames of a group: k frames make one, or one makes u.

A stream's rate may change on the way (`retime`: a webcam that slows down in the dark, a source that announced a
rate its frames do not come at): from a given stream frame on, its frames take the new span, from where the last one
ended, so model time runs on without a jump. `RateMeter` measures the rate the frames actually come at.
"""
from __future__ import annotations

import math
from collections import deque
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


@dataclass(frozen=True)
class _Rate:
    first: int    # the first stream frame at this rate
    at: float     # the model time its span starts at
    r: float      # stream frames a model frame


MAX_RATES = 64  # rate changes remembered for mapping model frames back; older ones are long past any open event


class Resampler:
    """Stream frames in (`push`), model frames out: (model index, face present, geometry, roi_flow, new_face).
    Frame gaps stay gaps: a model frame no stream frame reaches is never made."""

    def __init__(self, ratio: float):
        if not ratio > 0:
            raise ValueError(f"resampling ratio must be > 0, got {ratio}")
        self.r0 = float(ratio)
        self.reset()

    def reset(self) -> None:
        self._rates: list[_Rate] = [_Rate(0, 0.0, self.r0)]
        self._frames: list[_Frame] = []  # stream frames that may still reach a model frame not yet made
        self._next = 0                   # the first model frame not yet made (or skipped)

    def retime(self, ratio: float, first: int) -> None:
        """Stream frames from `first` on (no frame from there is pushed yet) come at `ratio`: frame `first`'s span
        starts where frame first - 1's ended."""
        if not ratio > 0:
            raise ValueError(f"resampling ratio must be > 0, got {ratio}")
        at = self.end(first - 1) if first > 0 else 0.0
        self._rates = [x for x in self._rates if x.first < first][-(MAX_RATES - 1):] + [_Rate(first, at, float(ratio))]

    # ------------------------------------------------------------------------------------- stream -> model

    def _rate_of_frame(self, i: int) -> _Rate:
        rates = self._rates
        if len(rates) == 1 or rates[-1].first <= i:  # nearly always: one rate, or the newest frames
            return rates[-1]
        return next((x for x in reversed(rates) if x.first <= i), rates[0])

    def start(self, i: int) -> float:
        x = self._rate_of_frame(i)
        return x.at + (i - x.first) / x.r

    def end(self, i: int) -> float:
        x = self._rate_of_frame(i)
        return x.at + (i + 1 - x.first) / x.r

    def push(self, i: int, face: bool, geometry: np.ndarray, flow: np.ndarray, new_face: bool) -> list[tuple]:
        """Stream frame `i` in (indices increase; the caller checks); the model frames it completes out."""
        self._frames.append(_Frame(i, face, geometry.copy(), flow.copy(), new_face))  # the caller may reuse buffers
        self._skip_gap()
        return self._emit(until=self.end(i))

    def flush(self) -> list[tuple]:
        """The model frames the last stream frames reach in part (a stream's end: model frames still map back to
        stream frames; `reset` before another stream)."""
        if not self._frames:
            return []
        out = self._emit(until=math.ceil(self.end(self._frames[-1].index) - EPS))
        self._frames = []
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
        start, end = self.start(i), self.end(i)
        return max(0.0, min(end, j + 1) - max(start, j)) / (end - start)

    def _make(self, j: int, parts: list[tuple[_Frame, float]]) -> tuple:
        """Model frame j of the stream frames that reach it (with their shares). A new face starting inside it makes
        it that face's frame, of that face's stream frames only."""
        starts = [n for n, (f, _) in enumerate(parts) if f.new_face]
        new_from = starts[-1] if starts else 0
        new_face = bool(starts) and self.start(parts[new_from][0].index) >= j - EPS  # not the next model frame's
        face = 2 * sum(w for f, w in parts if f.face) >= sum(w for _, w in parts) - EPS
        own = [(f, w) for f, w in parts[new_from:] if f.face]
        flow = sum((w * f.flow for f, w in own), np.zeros_like(parts[0][0].flow)).astype(np.float32)
        if self._rate_of_frame(parts[-1][0].index).r < 1:  # slower: the geometry at the model frame's end, on the
            geometry = self._interpolated(j, parts[-1][0])  # line between the frames around it
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
        at = min(1.0, max(0.0, (j + 1 - self.end(before.index)) / (self.end(f.index) - self.end(before.index))))
        return (before.geometry + at * (f.geometry - before.geometry)).astype(np.float32)

    # ------------------------------------------------------------------------------------- model -> stream

    def _rate_at(self, t: float) -> _Rate:
        rates = self._rates
        if len(rates) == 1 or rates[-1].at <= t + EPS:
            return rates[-1]
        return next((x for x in reversed(rates) if x.at <= t + EPS), rates[0])

    def first_stream_frame(self, j: int) -> int:
        """The first stream frame model frame j reaches (an event's onset, an update's frame)."""
        x = self._rate_at(j)
        return x.first + math.floor((j - x.at) * x.r + EPS)

    def last_stream_frame(self, j: int) -> int:
        """The last stream frame model frame j reaches (an event's offset)."""
        x = next((x for x in reversed(self._rates) if x.at < j + 1 - EPS), self._rates[0])
        return max(self.first_stream_frame(j), x.first + math.ceil((j + 1 - x.at) * x.r - EPS) - 1)

    def middle_stream_frame(self, j: int) -> int:
        """The stream frame at model frame j's middle (an apex)."""
        x = self._rate_at(j + 0.5)
        return x.first + math.floor((j + 0.5 - x.at) * x.r + EPS)

    def last_of_its_stream_frame(self, j: int) -> bool:
        """Whether j is the last model frame of its first stream frame (a slower stream keeps one intensity value
        a stream frame)."""
        return self.first_stream_frame(j + 1) > self.first_stream_frame(j)


class RateMeter:
    """The rate a stream's frames come at, from their timestamps: the median interval over the last `seconds`, each
    taken per frame-index step (frames dropped on the way are no slow frames), so that a burst of buffered frames or
    a stall does not move it. None until `min_intervals` of them span half of `seconds`, and for a rate outside
    `fps_range` (timestamps a peer or a broken driver made up: 10^6 fps would make a model frame of 33 000 frames)."""

    def __init__(self, seconds: float = 3.0, min_intervals: int = 20, max_interval_s: float = 1.0,
                 every_s: float = 0.25, fps_range: tuple[float, float] = (1.0, 1000.0)):
        self.seconds, self.min_intervals, self.max_interval_s = seconds, min_intervals, max_interval_s
        self.fps_range = fps_range
        self.every_s = every_s  # the median is taken again at most this often (stream time): cheap per frame
        self._last: tuple[int, float] | None = None
        self._steps: deque[tuple[float, float]] = deque()  # (pts, seconds a frame) of each interval, oldest first
        self._answer: tuple[float, float | None] | None = None  # (pts it was taken at, fps)

    def clear(self) -> None:
        self._steps.clear()
        self._answer = None

    def add(self, index: int, pts_s: float) -> None:
        if not math.isfinite(pts_s):
            return
        if self._last is not None:
            frames, seconds = index - self._last[0], pts_s - self._last[1]
            if seconds < 0:  # the clock went back (a source restarted): measure afresh
                self.clear()
            elif frames > 0 and 0 < seconds <= self.max_interval_s:  # not an outage, nor a repeated stamp
                self._steps.append((pts_s, seconds / frames))
        self._last = (index, pts_s)
        while self._steps and self._steps[0][0] < pts_s - self.seconds:
            self._steps.popleft()

    def fps(self) -> float | None:
        if not self._steps:
            return None
        now = self._steps[-1][0]
        if self._answer is None or not 0 <= now - self._answer[0] < self.every_s:
            fps = None
            if len(self._steps) >= self.min_intervals and now - self._steps[0][0] >= self.seconds / 2:
                fps = 1.0 / float(np.median([step for _, step in self._steps]))
            self._answer = (now, fps if fps is not None and self.fps_range[0] <= fps <= self.fps_range[1] else None)
        return self._answer[1]
