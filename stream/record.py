"""`--record DIR`: what a run leaves behind.

- `DIR/events.sqlite`: the detector's journal (every event, see stream/events.py).
- `DIR/intensity_<stream>.csv`: the intensity curve of every frame (`IntensityCsv`, written by the detector).
- `DIR/clips/<stream>_<onset>-<offset>_<kind>.mp4`: a short clip around each final expression (`ClipRecorder`,
  written by the ingest, which is the only role that has the pictures). The ingest keeps the last seconds of
  frames as JPEGs (a few MB instead of hundreds) and listens for its stream's `expression` events.
"""
from __future__ import annotations

import csv
import logging
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import zmq

from fes_live.stream import wire

log = logging.getLogger(__name__)

RING_SECONDS = 20.0  # frames kept for clips: the longest expression + both pads must fit
CLIP_WIDTH = 640


class IntensityCsv:
    """frame, pts_s, wall_s, intensity, apex_macro, apex_micro per frame of one stream."""

    def __init__(self, folder: str | Path, stream_id: str):
        path = Path(folder) / f"intensity_{stream_id}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        new = not path.is_file() or path.stat().st_size == 0
        self._f = open(path, "a", newline="")  # a restarted stream goes on in the same file
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(["frame", "pts_s", "wall_s", "intensity", "apex_macro", "apex_micro"])

    def write(self, frame: int, pts_s: float | None, wall_s: float | None, intensity: float,
              apex: tuple[float, float]) -> None:
        fmt = lambda v: "" if v is None else f"{v:.6f}"
        self._w.writerow([frame, fmt(pts_s), fmt(wall_s), f"{intensity:.6f}", f"{apex[0]:.6f}", f"{apex[1]:.6f}"])

    def close(self) -> None:
        self._f.close()


class ClipRecorder:
    """Ring of recent frames + a SUB on this stream's `expression` events -> one mp4 (mp4v) per expression."""

    def __init__(self, cfg, stream_id: str, fps: float, ctx: zmq.Context | None = None):
        self.folder = Path(cfg.record_dir) / "clips"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stream_id = stream_id
        self.fps = fps if fps and fps > 0 else 30.0
        self.pad = max(0, round(cfg.clip_pad_s * self.fps))
        self.ring: deque[tuple[int, np.ndarray]] = deque(maxlen=max(1, round(RING_SECONDS * self.fps)))
        self.pending: list[dict] = []
        self.written: list[Path] = []
        self.sub = (ctx or zmq.Context.instance()).socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, f"expression/{stream_id}".encode())
        self.sub.setsockopt(zmq.SUBSCRIBE, f"stream/{stream_id}".encode())
        self.ended = False
        from fes_live.stream.auth import apply_client
        apply_client(self.sub, cfg.endpoints.events, cfg.endpoints.curve)
        self.sub.connect(cfg.endpoints.resolved().events)

    def add(self, frame) -> None:
        img = frame.image
        if img.shape[1] > CLIP_WIDTH:
            s = CLIP_WIDTH / img.shape[1]
            img = cv2.resize(img, (CLIP_WIDTH, round(img.shape[0] * s) // 2 * 2), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            self.ring.append((frame.index, jpeg))
        self._poll_events()
        self._write_due(frame.index)

    def _poll_events(self) -> None:
        while True:
            try:
                msg = wire.recv_nowait(self.sub)
            except zmq.Again:
                return
            except wire.BadMessage as e:
                log.warning("clip recorder: bad event message: %s", e)
                continue
            ev = wire.to_event(msg)
            if ev.get("stream_id") != self.stream_id:
                continue
            if ev.get("type") == "expression":
                self.pending.append(ev)
            elif ev.get("type") == "stream" and ev["data"].get("status") in ("ended", "error"):
                self.ended = True

    def _write_due(self, last_index: int | None) -> None:
        keep = []
        for ev in self.pending:
            if last_index is None or last_index >= ev["data"]["offset"]["frame"] + self.pad:
                self._write(ev)
            else:
                keep.append(ev)
        self.pending = keep

    def _write(self, ev: dict) -> None:
        d = ev["data"]
        first, last = d["onset"]["frame"] - self.pad, d["offset"]["frame"] + self.pad
        frames = [(i, j) for i, j in self.ring if first <= i <= last]
        if not frames:
            log.warning("clip for %s frames %d-%d: frames no longer in memory", self.stream_id, first, last)
            return
        path = self.folder / f"{self.stream_id}_{d['onset']['frame']}-{d['offset']['frame']}_{d['kind']}.mp4"
        writer = None
        for _, jpeg in frames:
            img = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
            if writer is None:
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                         (img.shape[1], img.shape[0]))
            writer.write(img)
        writer.release()
        self.written.append(path)
        log.info("clip %s (%d frames)", path, len(frames))

    def close(self, wait_s: float = 5.0) -> None:
        """At the end of the stream: wait (up to wait_s) for the detector's last events, then write pending clips."""
        deadline = time.monotonic() + wait_s
        while not self.ended and time.monotonic() < deadline:
            if self.sub.poll(100):
                self._poll_events()
        self._write_due(None)
        self.sub.close()
