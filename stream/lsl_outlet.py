"""`--lsl`: the stream on Lab Streaming Layer, beside the EEG, GSR or eye tracker a lab records.

Two outlets per stream (needs the optional `pylsl`, `pip install 'fes-live[lsl]'`; its wheel ships liblsl):
- `fes-live <stream> events`, type `Markers`, one string channel, irregular rate: every event of the stream except
  `intensity` and `stats`, as its JSON.
- `fes-live <stream>`, type `FacialExpression`, 54 float32 channels at the source's rate: I(t), the expression
  level (models.emotion.expression_level; NaN from a detector that sends none), then the 52 MediaPipe blendshapes
  (channel labels in the stream's description), one sample per frame, pushed once the detector has reported that
  frame's intensity.

Timestamps are on the LSL clock (`pylsl.local_clock()`) and say when the frame was captured, not when the sample
left: capture wall time (`Frame.wall_s`, and the `wall_s` of an event's frame) + the offset between the two clocks,
taken once at start. An expression marker is stamped at its onset frame, an onset marker at its onset, a face
marker at its frame; the others at the time they are sent.

Written by the ingest (it has the blendshapes) from the detector's events (stream/record.py: `Recording`).
"""
from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict

import numpy as np

from fes_live.stream.face import BLENDSHAPE_NAMES

log = logging.getLogger(__name__)

CHANNELS = ("intensity", "level", *BLENDSHAPE_NAMES)
MARKER_TYPES = ("expression.onset", "expression.cancel", "expression", "face", "stream")
PENDING_FRAMES = 1200  # frames waiting for their intensity (40 s at 30 fps); older ones are dropped


class LslError(RuntimeError):
    """pylsl is missing or an outlet cannot be created."""


class LslOutlet:
    def __init__(self, stream_id: str, fps: float, wait_s: float = 0.0):
        try:
            import pylsl
        except ImportError as e:  # the optional extra
            raise LslError(f"--lsl needs pylsl: pip install 'fes-live[lsl]' ({e})") from None
        self._lsl = pylsl
        self.stream_id = stream_id
        self.fps = float(fps) if fps and fps > 0 else 30.0
        data = pylsl.StreamInfo(f"fes-live {stream_id}", "FacialExpression", len(CHANNELS), self.fps,
                                pylsl.cf_float32, f"fes-live/{stream_id}/data")
        chans = data.desc().append_child("channels")
        for name in CHANNELS:
            ch = chans.append_child("channel")
            ch.append_child_value("label", name)
            ch.append_child_value("unit", "normalized")
        markers = pylsl.StreamInfo(f"fes-live {stream_id} events", "Markers", 1, pylsl.IRREGULAR_RATE,
                                   pylsl.cf_string, f"fes-live/{stream_id}/events")
        self.data = pylsl.StreamOutlet(data)
        self.markers = pylsl.StreamOutlet(markers)
        self.clock_offset = pylsl.local_clock() - time.time()  # wall -> LSL clock
        self.pending: OrderedDict[int, tuple[float, np.ndarray]] = OrderedDict()  # frame -> (lsl time, blendshapes)
        self.samples = self.marker_count = 0
        if wait_s > 0:
            deadline = time.monotonic() + wait_s
            for outlet in (self.data, self.markers):
                outlet.wait_for_consumers(max(0.0, deadline - time.monotonic()))
            if not (self.data.have_consumers() and self.markers.have_consumers()):
                log.warning("%s: no LSL consumer after %.1f s; sending anyway", stream_id, wait_s)
        log.info("%s: LSL outlets 'fes-live %s' (FacialExpression, %d channels @ %g Hz) and '... events' (Markers)",
                 stream_id, stream_id, len(CHANNELS), self.fps)

    def lsl_time(self, wall_s: float | None) -> float:
        return self._lsl.local_clock() if wall_s is None else float(wall_s) + self.clock_offset

    def add(self, frame, faces=None) -> None:
        face = faces.primary if faces is not None else None
        bs = face.blendshapes.astype(np.float32) if face is not None else np.zeros(len(BLENDSHAPE_NAMES), np.float32)
        self.pending[int(frame.index)] = (self.lsl_time(frame.wall_s), bs)
        while len(self.pending) > PENDING_FRAMES:
            self.pending.popitem(last=False)

    def on_event(self, ev: dict) -> None:
        t, d = ev.get("type"), ev.get("data", {})
        if t == "intensity":
            levels = d.get("levels") or [float("nan")] * len(d["frames"])
            for f, v, level in zip(d["frames"], d["values"], levels):
                got = self.pending.pop(int(f), None)
                if got is None:
                    continue
                stamp, bs = got
                self.data.push_sample([float(v), float(level), *bs.tolist()], stamp)
                self.samples += 1
            return
        if t not in MARKER_TYPES:
            return
        point = d.get("onset") if t in ("expression", "expression.onset") else d if t == "face" else None
        stamp = self.lsl_time(point.get("wall_s") if isinstance(point, dict) else None)
        self.markers.push_sample([json.dumps(ev, separators=(",", ":"))], stamp)
        self.marker_count += 1

    def close(self, linger_s: float = 1.0) -> None:
        """Destroying an outlet drops what its consumers have not yet read: give them `linger_s` to read it."""
        if self.data is None:
            return
        if self.data.have_consumers() or self.markers.have_consumers():
            time.sleep(linger_s)
        log.info("%s: LSL sent %d samples, %d markers", self.stream_id, self.samples, self.marker_count)
        self.data = self.markers = None  # the outlets go away with their last reference
