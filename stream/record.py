"""`--record DIR`: what a run leaves behind, in a fresh folder per run, `DIR/<YYYYmmdd-HHMMSS>-<id>/` (a
second run never appends to or overwrites the first; `new_run_folder`).

- `events.sqlite`: the detector's journal (every event, see stream/events.py).
- `intensity_<stream>.csv`: the intensity curve of every frame (`IntensityCsv`, written by the detector).
- `table_<stream>.csv`: the per-frame table (stream/table.py, docs/table.md), written by the ingest.
- `clips/<stream>_<onset>-<offset>_<kind>.mp4`: an H.264 clip around each final expression (`ClipRecorder`).

The table and the clips are written by the ingest, the only role that has the pictures and the face; it follows
its stream's events (`EventTap`: intensity, expressions, the stream's end) and feeds them to each of its
`Recording`'s parts (clips, table and, with `--lsl`, the Lab Streaming Layer outlet of stream/lsl_outlet.py). Clips
come from the last seconds of frames kept as JPEGs (a few MB instead of hundreds).
"""
from __future__ import annotations

import csv
import logging
import secrets
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
EPS_S = 1e-6  # timestamps compared with this slack (i / 30 - 0.2 against (i - 6) / 30)


def new_run_folder(base: str | Path) -> Path:
    """Create and return `base/<YYYYmmdd-HHMMSS>-<4 hex>/`, a folder no earlier run has used."""
    for _ in range(100):
        path = Path(base) / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        log.info("recording into %s", path)
        return path
    raise OSError(f"could not create a fresh run folder in {base}")


def free_path(path: Path) -> Path:
    """`path`, or `name-2.ext`, `name-3.ext`...: the first that does not exist. A restarted ingest of the same run
    starts its frames at 0 again; its table and clips go next to the first ones instead of over them."""
    k = 1
    out = path
    while out.exists():
        k += 1
        out = path.with_name(f"{path.stem}-{k}{path.suffix}")
    return out


class IntensityCsv:
    """frame, pts_s, wall_s, intensity, apex_macro, apex_micro, level per frame of one stream."""

    def __init__(self, folder: str | Path, stream_id: str):
        path = Path(folder) / f"intensity_{stream_id}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        new = not path.is_file() or path.stat().st_size == 0
        self._f = open(path, "a", newline="")  # a restarted stream goes on in the same file
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(["frame", "pts_s", "wall_s", "intensity", "apex_macro", "apex_micro", "level"])

    def write(self, frame: int, pts_s: float | None, wall_s: float | None, intensity: float,
              apex: tuple[float, float], level: float) -> None:
        fmt = lambda v: "" if v is None else f"{v:.6f}"
        self._w.writerow([frame, fmt(pts_s), fmt(wall_s), f"{intensity:.6f}", f"{apex[0]:.6f}", f"{apex[1]:.6f}",
                          f"{level:.6f}"])

    def close(self) -> None:
        self._f.close()


class EventTap:
    """A SUB on one stream's `expression`, `expression.onset`, `expression.cancel`, `intensity`, `face` and `stream`
    events; `poll()` returns what arrived (bad messages are logged and skipped), `ended` turns True with the
    stream's end."""

    TYPES = ("expression", "expression.onset", "expression.cancel", "intensity", "face", "stream")

    def __init__(self, endpoint: str, stream_id: str, ctx: zmq.Context | None = None, curve=None):
        self.stream_id = stream_id
        self.sub = (ctx or zmq.Context.instance()).socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 100_000)
        for t in self.TYPES:
            self.sub.setsockopt(zmq.SUBSCRIBE, f"{t}/{stream_id}".encode())
        self.ended = False
        if curve is not None:
            from fes_live.stream.auth import apply_client
            apply_client(self.sub, endpoint, curve)
        self.sub.connect(endpoint)

    def poll(self, timeout_ms: int = 0) -> list[dict]:
        out = []
        if timeout_ms and not self.sub.poll(timeout_ms):
            return out
        while True:
            try:
                msg = wire.recv_nowait(self.sub)
            except zmq.Again:
                return out
            except wire.BadMessage as e:
                log.warning("event tap: bad event message: %s", e)
                continue
            ev = wire.to_event(msg)
            if ev.get("stream_id") != self.stream_id:  # topics are prefixes: cam1 also takes cam10
                continue
            if ev.get("type") == "stream" and ev["data"].get("status") in ("ended", "error"):
                self.ended = True
            out.append(ev)

    def until_end(self, wait_s: float) -> list[dict]:
        """What arrives until the stream's end is announced (at most wait_s)."""
        out, deadline = [], time.monotonic() + wait_s
        while not self.ended and time.monotonic() < deadline:
            out += self.poll(100)
        return out + self.poll()

    def close(self) -> None:
        self.sub.close()


class ClipRecorder:
    """Ring of recent frames (JPEG) + the stream's `expression` events -> one H.264 mp4 per expression.

    Clips go by the frames' timestamps, not by the stream's announced rate: a webcam that says 30 fps and gives 15,
    or a phone video whose rate changes, still plays at the speed it was filmed, padded by `pad_s` seconds."""

    def __init__(self, folder: str | Path, stream_id: str, fps: float, pad_s: float = 1.0):
        self.folder = Path(folder) / "clips"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stream_id = stream_id
        self.fps = fps if fps and fps > 0 else 30.0
        self.pad_s = max(0.0, pad_s)
        # (pts_s, jpeg), as many as RING_SECONDS take at the announced rate (a bound on memory)
        self.ring: deque[tuple[float, np.ndarray]] = deque(maxlen=max(1, round(RING_SECONDS * self.fps)))
        self.pending: list[dict] = []
        self.written: list[Path] = []
        self.last_pts: float | None = None

    def add(self, frame, faces=None) -> None:
        img = frame.image
        if img.shape[1] > CLIP_WIDTH:
            s = CLIP_WIDTH / img.shape[1]
            img = cv2.resize(img, (CLIP_WIDTH, round(img.shape[0] * s) // 2 * 2), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            self.ring.append((frame.pts_s, jpeg))
        self.last_pts = frame.pts_s
        self._write_due(frame.pts_s)

    def on_event(self, ev: dict) -> None:
        if ev.get("type") == "expression":
            self.pending.append(ev)
            if self.last_pts is not None:
                self._write_due(self.last_pts)

    def _write_due(self, last_pts: float | None) -> None:
        """Write the clips whose padded end the stream has reached (None: every one, with the frames there are)."""
        keep = []
        for ev in self.pending:
            if last_pts is None or last_pts >= ev["data"]["offset"]["pts_s"] + self.pad_s - EPS_S:
                self._write(ev)
            else:
                keep.append(ev)
        self.pending = keep

    def _write(self, ev: dict) -> None:
        from fes_live.stream.video_writer import VideoWriter

        d = ev["data"]
        first, last = d["onset"]["pts_s"] - self.pad_s - EPS_S, d["offset"]["pts_s"] + self.pad_s + EPS_S
        frames = [(t, j) for t, j in self.ring if first <= t <= last]
        if not frames:
            log.warning("clip for %s frames %d-%d: frames no longer in memory", self.stream_id,
                        d["onset"]["frame"], d["offset"]["frame"])
            return
        path = free_path(self.folder / f"{self.stream_id}_{d['onset']['frame']}-{d['offset']['frame']}_{d['kind']}.mp4")
        # ultrafast: 1.0 ms a 640x360 frame against 3.5 at veryfast, for files ~1.7x larger; back-to-back
        # expressions share their padded frames, so a recording encodes more frames than the stream has
        with VideoWriter(path, self.fps, preset="ultrafast") as writer:
            for pts, jpeg in frames:
                writer.write(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), pts_s=pts)
        self.written.append(path)
        log.info("clip %s (%d frames)", path, len(frames))

    def close(self) -> None:
        """Write every pending clip with the frames there are."""
        self._write_due(None)


class Recording:
    """What the ingest keeps of its stream: clips and the per-frame table (`record_dir`), the LSL outlet (`lsl`).

    `add(frame, faces)` per frame, `close()` at the end: it waits (up to wait_s) for the detector's last events
    of the stream, then finishes every part.
    """

    def __init__(self, cfg, stream_id: str, fps: float, ctx: zmq.Context | None = None):
        from fes_live.stream.table import FrameTable

        self.stream_id = stream_id
        self.parts: list = []
        self.clips = self.table = self.lsl = None
        if cfg.record_dir:
            self.clips = ClipRecorder(cfg.record_dir, stream_id, fps, cfg.clip_pad_s)
            self.table = FrameTable(free_path(Path(cfg.record_dir) / f"table_{stream_id}.csv"), fps)
            self.parts += [self.clips, self.table]
        if getattr(cfg, "lsl", False):
            from fes_live.stream.lsl_outlet import LslOutlet
            self.lsl = LslOutlet(stream_id, fps, wait_s=getattr(cfg, "lsl_wait_s", 0.0))
            self.parts.append(self.lsl)
        self.tap = EventTap(cfg.endpoints.resolved().events, stream_id, ctx, cfg.endpoints.curve)
        self.frames = 0

    def add(self, frame, faces=None) -> None:
        if self.clips is not None:
            self.clips.add(frame)
        if self.table is not None:
            self.table.add(frame.index, frame.pts_s, faces)
        if self.lsl is not None:
            self.lsl.add(frame, faces)
        self.frames += 1
        self._dispatch(self.tap.poll())

    def _dispatch(self, events: list[dict]) -> None:
        for ev in events:
            for part in self.parts:
                part.on_event(ev)

    def close(self, wait_s: float = 5.0) -> None:
        try:
            self._dispatch(self.tap.until_end(wait_s))
        finally:
            self.tap.close()
            for part in self.parts:
                part.close()
        if self.table is not None:
            if self.table.no_face:
                log.warning("%s: no face found in %d frames (table %s)", self.stream_id, self.frames, self.table.path)
            else:
                log.info("%s: table %s (%d rows, face on %d)", self.stream_id, self.table.path, self.table.rows,
                         self.table.face_frames)
