"""`fes-live detect`: the detector service, one per machine, any number of streams.

Loop: drain the features socket (PULL, bound) into per-stream queues -> run every stream's queued frames through
its own `OnlineSpotter` (from the engine) -> turn the spotter's updates into events -> publish. Draining before
processing is what bounds the work: a stream whose queue overflows loses its *oldest* frames (counted in its
stats), so a slow detector drops frames instead of growing memory or latency. Garbage on the socket is counted and
dropped. The replay endpoint is served from the same loop, so it answers even while streams are busy.

What a peer can cost is bounded (docs/security.md): every message is validated by `wire.decode` and nothing it
raises escapes `handle`; a new stream id is only *pending* (a short queue, no spotter) until it has sent
`admit_frames` valid frames, and only `max_pending_streams` / `max_streams` of each exist (the rest are refused and
counted); pending streams that go quiet are forgotten, real ones are closed after `idle_stream_s`; receiving is
limited per loop turn in messages, time and frames per stream; beyond `stats_streams` streams one detector-wide
stats event carries the figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import math
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import zmq

from fes_live.models.spotting import KIND_NAMES, CancelUpdate, ExpressionUpdate, IntensityUpdate, OnsetUpdate
from fes_live.stream import auth, wire
from fes_live.stream.batching import StepBatcher
from fes_live.stream.config import from_dict, load_config, to_dict
from fes_live.stream.events import PIPELINE_STREAM, EventError, EventPublisher
from fes_live.stream.pipeline_config import ENGINE_HELP, THRESHOLD_HELP, DetectConfig

log = logging.getLogger(__name__)

TIMES_KEPT = 20_000  # frames per stream whose (pts, wall) are remembered for event timestamps
LOG_EVERY = 1000  # a counted problem is logged the first 10 times, then once per LOG_EVERY
SHUTDOWN_DRAIN_S = 5.0  # at shutdown, receive for at most this long (a flooding peer cannot hold the exit)
CLOSES_PER_TURN = 4  # idle streams flushed per housekeeping call (many at once would stall the others)
NOTES_STATE = "/notes"  # state-table key of the supervisor notes published (no stream id contains "/")
NOTES_SEEN = 256  # ids of supervisor notes remembered (the supervisor sends at most its last 64 again)
STATE_MAX_AGE_S = 600.0  # a stream joining mid-stream takes over a neutral baseline saved at most this long ago


def emotion_names(labels: dict) -> list[str]:
    """The engine's emotion label list, whatever key its manifest uses for it."""
    for key in ("emotion", "emotions"):
        value = labels.get(key)
        if isinstance(value, list):
            return [str(v) for v in value]
        if isinstance(value, dict):  # {"0": "happiness", ...} or {"happiness": 0, ...}
            if all(str(k).isdigit() for k in value):
                return [str(value[k]) for k in sorted(value, key=int)]
            return [k for k, _ in sorted(value.items(), key=lambda kv: kv[1])]
    return []


@dataclass
class StreamState:
    stream_id: str
    spotter: object  # None while the stream is pending (not yet proven real)
    queue: deque  # (FrameFeatures, face_state)
    source: str = ""
    fps: float | None = None  # as announced by its `started` message
    message: str = ""  # of its `stream started` event
    last_frame: int = -1  # newest frame index queued: indices must increase
    announced: bool = False  # it came with its ingest's `started` message (source, fps, lossless known)
    refused: bool = False  # proven real while every spotter slot was taken
    times: dict = field(default_factory=dict)  # frame -> (pts_s, wall_s)
    order: deque = field(default_factory=deque)
    intensity: list = field(default_factory=list)  # IntensityUpdates since the last intensity event
    last_intensity_s: float = 0.0
    last_seen_s: float = field(default_factory=time.monotonic)
    frames_in: int = 0
    frames_out: int = 0
    dropped_ingest: int = 0
    dropped_detector: int = 0
    interval_in: int = 0
    interval_out: int = 0
    latencies_ms: list = field(default_factory=list)
    csv: object = None
    lossless: bool = False  # its ingest blocks instead of dropping: never drop its frames (see drain)
    spot_fps: float | None = None  # the rate its spotter goes by (announced, or as its frames come: `_retimed`)
    retimes: int = 0  # times its spotter took the rate its frames come at (SpotterConfig.follow_rate)

    def remember(self, f) -> None:
        self.times[f.frame_index] = (f.pts_s, f.wall_s)
        self.order.append(f.frame_index)
        while len(self.order) > TIMES_KEPT:
            self.times.pop(self.order.popleft(), None)

    def rate(self, default: float) -> float:
        """The frame rate its spotter and its timestamps go by: the one its spotter took from the frames'
        timestamps, else as announced, else `default` (the engine's) when the source did not know it (0) or gave
        less than 1 fps."""
        if self.spot_fps:
            return self.spot_fps
        return self.fps if self.fps and self.fps >= 1.0 else default

    def point(self, frame: int, fps: float) -> dict:
        pts, wall = self.times.get(frame, (frame / fps, None))
        return {"frame": int(frame), "pts_s": float(pts), "wall_s": wall}


class Detector:
    def __init__(self, cfg: DetectConfig, engine, ctx: zmq.Context | None = None):
        self.cfg = cfg
        self.engine = engine
        self.emotions = emotion_names(engine.labels if hasattr(engine, "labels") else {})
        self.fps = float(engine.manifest.get("fps", 30.0)) if hasattr(engine, "manifest") else 30.0
        ep = cfg.endpoints.resolved()
        self.ctx = ctx or zmq.Context.instance()
        self.guard = auth.ServerAuth(self.ctx, ep.curve)
        self.guard.check(ep.features, ep.events, ep.replay)  # AuthError before anything is bound
        self.pull = wire.features_socket(self.ctx, self.guard, ep.features, cfg.recv_hwm)

        def prepare(sock: zmq.Socket, role: str) -> None:  # publisher's sockets get only requests, subscriptions
            wire.limit_receive(sock)
            self.guard.apply(sock, ep.events if role == "events" else ep.replay)

        self.publisher = EventPublisher(self.ctx, ep.events, ep.replay, cfg.journal, int(cfg.replay_memory_mb * 2**20),
                                        journal_max_bytes=int(cfg.journal_max_mb * 2**20),
                                        journal_max_age_s=cfg.journal_max_age_h * 3600.0,
                                        subscriber_buffer_bytes=int(cfg.subscriber_buffer_mb * 2**20),
                                        autoflush=False, prepare=prepare, run_token=cfg.run_token)
        self.streams: dict[str, StreamState] = {}  # real streams, each with its spotter
        self.pending: dict[str, StreamState] = {}  # not yet proven real
        self.turn: dict[str, int] = {}  # frames taken per stream in this drain turn
        self.batcher = StepBatcher.for_engine(engine) if cfg.batch_streams and hasattr(engine, "gim") else None
        self.engine_build = None  # a background AOTInductor build (stream/engine_build.py), polled by run()
        self.bad_messages = 0
        self.handler_errors = 0  # exceptions other than BadMessage caught in handle()
        self.event_errors = 0  # events that could not be published (non-finite values, schema)
        self.refused = 0  # streams and notes refused by the caps
        self.evicted = 0  # pending streams forgotten after pending_idle_s
        self.note_tokens, self.note_time = 2 * cfg.notes_per_s, time.monotonic()
        self.last_stats = time.monotonic()
        self.poller = zmq.Poller()
        self.poller.register(self.pull, zmq.POLLIN)
        self.next_tracks: dict[str, int] = {}  # per stream: the next onset track id (unique across restarts)
        saved_notes = self.publisher.saved_states.pop(NOTES_STATE, (0.0, {}))[1].get("ids", [])
        self.notes_seen: deque[str] = deque([str(i) for i in saved_notes], maxlen=NOTES_SEEN)
        self.last_state_s = time.monotonic()
        self._close_loose_ends()
        log.info("detector: features on %s, %s", ep.features, getattr(engine, "backend", ""))

    # ------------------------------------------------------------------ messages in
    def handle(self, frames: list) -> None:
        """One raw message from the socket; garbage is counted and dropped, and nothing raises past here."""
        try:
            msg = wire.decode(frames)
            if msg.header.kind == "features":
                self._features(msg)
            elif msg.header.kind == "control":
                self._control(msg)
            else:
                raise wire.BadMessage(f"kind {msg.header.kind!r} does not go to the detector")
        except wire.BadMessage as e:
            self._bad(e)
        except Exception:  # a bug reached by a peer's message: count it, keep serving every other stream
            self.handler_errors += 1
            if _due(self.handler_errors):
                log.exception("message handler failed (%d so far); message dropped", self.handler_errors)

    def _bad(self, e: Exception) -> None:
        self.bad_messages += 1
        if _due(self.bad_messages):
            log.warning("dropped a bad message (%d so far): %s", self.bad_messages, e)

    def _features(self, msg: wire.Message) -> None:
        f = wire.to_features(msg)
        sid = msg.header.stream_id
        if sid == PIPELINE_STREAM:
            raise wire.BadMessage(f"stream id {sid!r} is reserved")
        s = self.streams.get(sid) or self.pending.get(sid) or self._join(sid)
        if s is None:
            return
        if f.frame_index <= s.last_frame:
            raise wire.BadMessage(f"{sid}: frame {f.frame_index} after {s.last_frame}: indices must increase")
        s.last_seen_s = time.monotonic()
        taken = self.turn[sid] = self.turn.get(sid, 0) + 1
        if taken > self.cfg.stream_msgs_per_turn and not s.lossless:  # one stream cannot take a whole drain turn
                                                                        # (a lossless one stops the drain instead)
            s.dropped_detector += 1
            return
        s.last_frame = f.frame_index
        if len(s.queue) == s.queue.maxlen:
            s.dropped_detector += 1  # deque(maxlen) drops the oldest
        s.queue.append((dataclasses.replace(f, crop=None), msg.header.face_state))  # no engine here reads crops
        s.dropped_ingest = msg.header.meta.get("dropped", s.dropped_ingest)
        s.frames_in += 1
        s.interval_in += 1
        if s.spotter is None and s.frames_in >= self.cfg.admit_frames:
            self._promote(s)

    def _control(self, msg: wire.Message) -> None:
        """Fields were checked by wire.decode; here only what they mean."""
        sid, meta = msg.header.stream_id, msg.header.meta
        status = meta["status"]
        if status == "restarted":  # from the supervisor: a child process was restarted (or given up)
            if self._published_note(meta.get("note_id")):
                return  # sent again after a detector restart, and this one was journaled before it
            if self._note_allowed():
                self._emit("supervisor", PIPELINE_STREAM,
                           {"child": meta.get("child", sid), "status": meta.get("note", "restarted"),
                            "exitcode": meta.get("exitcode"), "restarts": meta.get("restarts", 0)})
            return
        if sid == PIPELINE_STREAM:
            raise wire.BadMessage(f"stream id {sid!r} is reserved")
        if status == "started":
            message = ""
            if sid in self.streams or sid in self.pending:
                if sid in self.streams:
                    message = self._replay_note(self.streams[sid])
                self._end(sid, "ended", "restarted by its source")
            s = self._admit(sid, meta.get("source", ""), message, fps=meta.get("fps"),
                            lossless=meta.get("lossless") is True)
            if s is not None:
                s.announced = True
            if s is not None and self.cfg.admit_frames <= 0:
                self._promote(s)
        else:  # ended / error
            s = self.streams.get(sid) or self.pending.get(sid)
            if s is not None:
                s.dropped_ingest = meta.get("dropped", s.dropped_ingest)
            self._end(sid, status, meta.get("message", ""))

    # ------------------------------------------------------------------ streams
    def _admit(self, sid: str, source: str, message: str, fps=None, lossless: bool = False) -> StreamState | None:
        """A pending stream (no spotter yet), or None when too many are pending (refused, counted)."""
        if len(self.pending) >= self.cfg.max_pending_streams:
            self.refused += 1
            if _due(self.refused):
                log.warning("%s refused: %d streams pending already (%d refused so far)", sid[:40],
                            len(self.pending), self.refused)
            return None
        s = StreamState(sid, None, deque(maxlen=None if lossless else self.cfg.queue_frames), source, fps=fps,
                        message=message, lossless=lossless)
        self.pending[sid] = s
        return s

    def _join(self, sid: str) -> StreamState | None:
        """A stream whose frames come without its `started` message, which went to a detector that has since died
        (a restart): what that message said (source, fps, lossless) comes back from the stream's saved state when it
        is recent, so a restarted worker goes by the stream's own frame rate and never drops a lossless stream's
        frames."""
        saved_s, state = self.publisher.saved_states.get(sid, (0.0, {}))
        said = state.get("started") if time.time() - saved_s < STATE_MAX_AGE_S else None
        if not isinstance(said, dict):
            return self._admit(sid, "", "joined mid-stream")
        fps = said.get("fps")
        fps = float(fps) if type(fps) in (int, float) and math.isfinite(fps) and fps > 0 else None
        source = said.get("source") if isinstance(said.get("source"), str) else ""
        s = self._admit(sid, source, "joined mid-stream", fps=fps, lossless=said.get("lossless") is True)
        if s is not None:
            s.announced = True
        return s

    def _promote(self, s: StreamState) -> bool:
        """A pending stream proved real: it gets a spotter and its `stream started` event."""
        if len(self.streams) >= self.cfg.max_streams:
            if not s.refused:
                s.refused = True
                self.refused += 1
                log.warning("%s refused: %d streams running (max_streams)", s.stream_id, len(self.streams))
            return False
        del self.pending[s.stream_id]
        s.spotter = self.engine.new_spotter(fps=s.rate(self.fps))
        s.spot_fps = getattr(s.spotter, "stream_fps", None)
        self._resume(s, joined=s.message == "joined mid-stream")
        if self.cfg.record_dir:
            from fes_live.stream.record import IntensityCsv
            s.csv = IntensityCsv(self.cfg.record_dir, s.stream_id)
        self.streams[s.stream_id] = s
        data = {"status": "started", "message": s.message, "source": s.source}
        if s.fps is not None:
            data["fps"] = float(s.fps)
        self._emit("stream", s.stream_id, data)
        return True

    def _end(self, sid: str, status: str, message: str) -> None:
        """A stream's end: a pending one with frames is promoted first (a short clip is still spotted)."""
        s = self.pending.get(sid)
        if s is not None and not (s.queue and self._promote(s)):
            del self.pending[sid]
            s = None
        if sid in self.streams:
            self._close(sid, status, message)
        elif self._note_allowed():  # e.g. an ingest that could not open its source: say so, rate-limited
            self._emit("stream", sid, {"status": status, "message": message})

    def _note_allowed(self) -> bool:
        """Token bucket for events a peer can cause without running a stream (notes_per_s, burst 2x)."""
        now = time.monotonic()
        rate = self.cfg.notes_per_s
        self.note_tokens = min(2 * rate, self.note_tokens + (now - self.note_time) * rate)
        self.note_time = now
        if self.note_tokens >= 1:
            self.note_tokens -= 1
            return True
        self.refused += 1
        return False

    def _close(self, sid: str, status: str, message: str) -> None:
        """Process what is queued, flush the spotter (its last expressions), announce the end."""
        s = self.streams[sid]
        self._process(s)
        self._updates(s, s.spotter.flush())
        self._emit_intensity(s, force=True)
        self._stats(s, time.monotonic() - self.last_stats)
        if s.csv is not None:
            s.csv.close()
        self._save_state(s)
        log.info("%s: %s; %d frames in, %d scored, dropped: %d by the ingest, %d by the detector", sid, status,
                 s.frames_in, s.frames_out, s.dropped_ingest, s.dropped_detector)
        self._emit("stream", sid, {"status": status, "message": message, "source": s.source,
                                               "frames": s.frames_in})
        del self.streams[sid]

    # ------------------------------------------------------------------ frames -> events
    def _spot(self, s: StreamState, limit: int | None = None) -> list:
        """Run up to `limit` queued frames through the stream's spotter: [(frame, face_state, updates | error)]."""
        out = []
        while s.queue and (limit is None or len(out) < limit):
            f, face_state = s.queue.popleft()
            was = getattr(s.spotter, "stream_fps", None)
            try:
                out.append((f, face_state, s.spotter.push(f.frame_index, f.face_present, f.geometry, f.roi_flow,
                                                          f.new_face, self._pts(f))))
            except Exception as e:  # e.g. a frame the model rejects: drop the frame, keep the stream (counted)
                out.append((f, face_state, e))
            self._retimed(s, f, was)
        return out

    def _spot_batched(self, busy: list[StreamState], frames: int) -> list[list]:
        """`_spot` for several streams at once: their pushes of the same round share the engine calls."""
        results: list[list] = [[] for _ in busy]
        for _ in range(frames):
            live = [i for i, s in enumerate(busy) if s.queue]
            if not live:
                break
            taken = [busy[i].queue.popleft() for i in live]
            was = [getattr(busy[i].spotter, "stream_fps", None) for i in live]
            jobs = [busy[i].spotter.steps(f.frame_index, f.face_present, f.geometry, f.roi_flow, f.new_face,
                                          self._pts(f)) for i, (f, _) in zip(live, taken)]
            for i, (f, face_state), updates, rate in zip(live, taken, self.batcher.run(jobs), was):
                results[i].append((f, face_state, updates))
                self._retimed(busy[i], f, rate)
        return results

    def _pts(self, f) -> float | None:
        """The frame's timestamp for its spotter to follow the rate the frames come at (`follow_frame_rate`)."""
        return f.pts_s if self.cfg.follow_frame_rate else None

    def _retimed(self, s: StreamState, f, was: float) -> None:
        """Say when a stream's spotter took the rate its frames come at (SpotterConfig.follow_rate)."""
        now = getattr(s.spotter, "stream_fps", was)
        if now == was:
            return
        s.spot_fps = now
        s.retimes += 1
        if _due(s.retimes):  # a browser camera on a busy machine may change its rate often
            said = f"its source said {s.fps:g}" if s.fps else "its source did not say"
            log.warning("%s: frames come at %.1f fps (%s); spotted at that rate from frame %d on (was %.1f)",
                        s.stream_id, now, said, f.frame_index, was)

    def _publish(self, s: StreamState, results: list) -> None:
        """Events of spotted frames, in frame order (main thread only: it owns the PUB socket and the numbering)."""
        for f, face_state, updates in results:
            s.remember(f)
            if face_state in ("found", "lost"):
                self._emit("face", s.stream_id, {"state": face_state, "frame": f.frame_index,
                                                             "pts_s": f.pts_s, "wall_s": f.wall_s})
            if isinstance(updates, Exception):
                self.bad_messages += 1
                log.warning("%s: frame %d dropped: %s", s.stream_id, f.frame_index, updates)
                continue
            self._updates(s, updates)
            s.frames_out += 1
            s.interval_out += 1
            s.latencies_ms.append((time.time() - f.wall_s) * 1000.0)

    def _process(self, s: StreamState, limit: int | None = None) -> None:
        self._publish(s, self._spot(s, limit))

    def _updates(self, s: StreamState, updates) -> None:
        for u in updates or ():
            if isinstance(u, IntensityUpdate):
                s.intensity.append(u)
                if s.csv is not None:
                    pts, wall = s.times.get(u.frame_index, (None, None))
                    s.csv.write(u.frame_index, pts, wall, u.intensity, u.apex_probs, u.level)
            elif isinstance(u, OnsetUpdate):
                self._emit_intensity(s, force=True)  # the curve up to the onset first
                onset = s.point(u.frame_index, s.rate(self.fps))
                self._emit("expression.onset", s.stream_id, {
                    "track": int(u.track), "onset": onset, "intensity": float(u.intensity),
                    "latency_s": _latency(onset)})
            elif isinstance(u, CancelUpdate):
                self._emit("expression.cancel", s.stream_id,
                                       {"track": int(u.track), "frame": int(u.frame_index)})
            elif isinstance(u, ExpressionUpdate):
                self._emit_intensity(s, force=True)
                self._emit("expression", s.stream_id, self._expression(s, u))
        self._emit_intensity(s)

    def _expression(self, s: StreamState, u: ExpressionUpdate) -> dict:
        p = u.proposal
        onset, apex, offset = (s.point(i, s.rate(self.fps)) for i in (p.onset, p.apex, p.offset))
        names = self.emotions
        probs = {(names[i] if i < len(names) else str(i)): float(min(max(v, 0.0), 1.0))
                 for i, v in enumerate(p.emotion_probs)}
        emotion = (names[p.emotion] if 0 <= p.emotion < len(names) else str(p.emotion)) if p.emotion >= 0 else None
        return {"track": int(max(u.track, -1)), "onset": onset, "apex": apex, "offset": offset,
                "kind": KIND_NAMES[p.kind], "emotion": emotion, "emotion_probs": probs, "score": float(p.score),
                "peak_intensity": float(p.peak_intensity), "peak_level": float(p.peak_level),
                "models": [m for m in p.source.split("+") if m],
                "duration_s": max(0.0, offset["pts_s"] - onset["pts_s"] + 1.0 / s.rate(self.fps)),
                "latency_s": _latency(offset)}

    def _emit_intensity(self, s: StreamState, force: bool = False) -> None:
        if not s.intensity:
            return
        now = time.monotonic()
        if not force and now - s.last_intensity_s < 1.0 / max(self.cfg.intensity_hz, 1e-3):
            return
        s.last_intensity_s = now
        us, s.intensity = s.intensity, []
        self._emit("intensity", s.stream_id, {
            "frames": [int(u.frame_index) for u in us],
            "pts_s": [s.times.get(u.frame_index, (None,))[0] for u in us],
            "values": [float(u.intensity) for u in us],
            "apex_probs": [[float(u.apex_probs[0]), float(u.apex_probs[1])] for u in us],
            "levels": [float(u.level) for u in us]})

    # ------------------------------------------------------------------ events out
    def _emit(self, type: str, stream_id: str, data: dict) -> dict | None:
        """Publish one event; a value that is not finite becomes null (events are standard JSON), and an event
        that still cannot go out is counted and logged instead of stopping the detector."""
        try:
            return self.publisher.publish(type, stream_id, _finite(data))
        except (EventError, ValueError) as e:
            self.event_errors += 1
            if _due(self.event_errors):
                log.error("%s event of %s not published (%d so far): %s", type, stream_id, self.event_errors, e)
            return None

    # ------------------------------------------------------------------ stats and housekeeping
    def _figures(self, s: StreamState, dt: float) -> dict:
        """A stream's stats for the interval dt (and the interval's counters reset)."""
        lat = np.asarray(s.latencies_ms) if s.latencies_ms else None
        data = {"fps_in": s.interval_in / dt if dt > 0 else 0.0, "fps_out": s.interval_out / dt if dt > 0 else 0.0,
                "frames_in": s.frames_in, "frames_out": s.frames_out, "dropped_ingest": s.dropped_ingest,
                "dropped_detector": s.dropped_detector,
                "latency_ms_p50": None if lat is None else float(np.percentile(lat, 50)),
                "latency_ms_p99": None if lat is None else float(np.percentile(lat, 99)), "queue": len(s.queue)}
        if s.spot_fps is not None:
            data["spot_fps"] = float(s.spot_fps)
        s.interval_in = s.interval_out = 0
        s.latencies_ms = []
        return data

    def _stats(self, s: StreamState, dt: float) -> dict:
        data = self._figures(s, dt)
        if len(self.streams) <= self.cfg.stats_streams:
            self._emit("stats", s.stream_id, data)
        return data

    def housekeeping(self) -> None:
        now = time.monotonic()
        # never proven real: forgotten without an event. A stream its ingest announced waits as long as a running one:
        # a file ingest can take seconds from `started` to its first frames on a busy machine (model load), and
        # forgetting it would lose what `started` said (fps, lossless) when its frames come
        for sid in [k for k, s in self.pending.items()
                    if now - s.last_seen_s > (self.cfg.idle_stream_s if s.announced else self.cfg.pending_idle_s)]:
            del self.pending[sid]
            self.evicted += 1
        idle = [k for k, s in self.streams.items() if now - s.last_seen_s > self.cfg.idle_stream_s]
        for sid in idle[:CLOSES_PER_TURN]:
            self._close(sid, "error", f"no frames for {self.cfg.idle_stream_s:.0f} s")
        dt = now - self.last_stats
        if dt < self.cfg.stats_interval_s:
            return
        self.last_stats = now
        per = {sid: self._stats(s, dt) for sid, s in self.streams.items()}
        d = list(per.values())
        data = {
            "fps_in": sum(x["fps_in"] for x in d), "fps_out": sum(x["fps_out"] for x in d),
            "frames_in": sum(x["frames_in"] for x in d), "frames_out": sum(x["frames_out"] for x in d),
            "dropped_ingest": sum(x["dropped_ingest"] for x in d),
            "dropped_detector": sum(x["dropped_detector"] for x in d),
            "latency_ms_p50": max((x["latency_ms_p50"] for x in d if x["latency_ms_p50"] is not None), default=None),
            "latency_ms_p99": max((x["latency_ms_p99"] for x in d if x["latency_ms_p99"] is not None), default=None),
            "queue": sum(x["queue"] for x in d), "bad_messages": self.bad_messages,
            "streams": len(self.streams), "pending": len(self.pending), "refused": self.refused,
            "evicted": self.evicted, "errors": self.handler_errors + self.event_errors}
        if len(per) > self.cfg.stats_streams:  # instead of one event per stream: the worst few, here
            worst = sorted(per, key=lambda k: (per[k]["queue"] + per[k]["dropped_detector"],
                                               per[k]["latency_ms_p99"] or 0.0), reverse=True)
            data["per_stream"] = {k: {key: per[k][key] for key in ("fps_out", "dropped_detector", "queue",
                                                                    "latency_ms_p99")}
                                  for k in worst[:self.cfg.stats_streams]}
        self._emit("stats", PIPELINE_STREAM, data)

    # ------------------------------------------------------------------ journal, state and restarts
    def journal_turn(self) -> None:
        """Once per loop turn: journal the streams' states when due, then commit and send this turn's events."""
        now = time.monotonic()
        if now - self.last_state_s >= self.cfg.state_interval_s:
            self.last_state_s = now
            for s in self.streams.values():
                self._save_state(s)
        self.publisher.flush()

    def _save_state(self, s: StreamState) -> None:
        """What a restarted detector needs to continue stream `s` (not an event: the journal's state table)."""
        carry = getattr(s.spotter, "carry_state", None)
        if carry is None:
            return
        state = carry()
        self.next_tracks[s.stream_id] = max(self.next_tracks.get(s.stream_id, 0), int(state["next_track"]))
        if s.announced:
            state["started"] = {"source": s.source, "fps": s.fps, "lossless": s.lossless}
        self.publisher.save_state(s.stream_id, state)

    def _resume(self, s: StreamState, joined: bool) -> None:
        """A (re)opened stream continues its track ids; one that joined mid-stream (a detector restart, frames after
        a silence) also its neutral baseline, when one was saved within STATE_MAX_AGE_S."""
        resume = getattr(s.spotter, "resume", None)
        if resume is None:
            return
        saved_s, state = self.publisher.saved_states.get(s.stream_id, (0.0, {}))
        fresh = joined and time.time() - saved_s < STATE_MAX_AGE_S
        try:
            resume({**state, "next_track": max(int(state.get("next_track", 0)), self.next_tracks.get(s.stream_id, 0))},
                   baseline=fresh)
            if fresh and state.get("baseline"):
                log.info("%s: joined mid-stream; continuing with its saved neutral baseline (from frame %s)",
                         s.stream_id, state.get("last_frame"))
        except (ValueError, TypeError) as e:  # a damaged state row: start afresh rather than fail the stream
            log.warning("%s: saved state not usable (%s); starting afresh", s.stream_id, e)

    @staticmethod
    def _replay_note(s: StreamState) -> str:
        """What the `started` event of a stream restarted by its source (a crashed ingest) says about its frames."""
        carry = getattr(s.spotter, "carry_state", None)
        last = carry()["last_frame"] if carry is not None else None
        if last is None:
            return "restarted by its source"
        return (f"restarted by its source after frame {last}: its frame numbers start again, and a file source is "
                f"analysed again from its start (what it reports again gets new track ids)")

    def _published_note(self, note_id) -> bool:
        """True for a supervisor note already published; otherwise remember its id. The ids are journaled in the same
        transaction as the note's event, so a note sent again after a crash is published exactly once."""
        if not isinstance(note_id, str) or not note_id:
            return False
        if note_id in self.notes_seen:
            return True
        self.notes_seen.append(note_id)
        self.publisher.save_state(NOTES_STATE, {"ids": list(self.notes_seen)})
        return False

    def _close_loose_ends(self) -> None:
        """After a crash: cancel every onset the journal left open (its spotter died with it) and continue every
        stream's track ids after the largest one journaled."""
        journal = self.publisher.journal
        if journal is None:
            return
        open_onsets, tracks = journal.onsets()
        for sid, t in tracks.items():
            self.next_tracks[sid] = max(self.next_tracks.get(sid, 0), t + 1)
        for sid, (_, state) in self.publisher.saved_states.items():
            self.next_tracks[sid] = max(self.next_tracks.get(sid, 0), int(state.get("next_track", 0)))
        for (sid, track), frame in sorted(open_onsets.items()):
            self.publisher.publish("expression.cancel", sid, {"track": track, "frame": frame})
        if open_onsets:
            log.warning("cancelled %d onset(s) left open by the previous detector", len(open_onsets))
        self.publisher.flush()

    # ------------------------------------------------------------------ loop
    def drain(self, timeout_ms: int) -> int:
        """Receive up to max_batch_msgs messages for at most drain_budget_s (waiting at most timeout_ms for the
        first); the replay endpoint has its own thread. ZeroMQ's PULL takes turns between connected peers, and
        `handle` caps what one stream takes per turn, so one flooding sender cannot crowd the others out."""
        self.poller.poll(timeout_ms)
        self.turn.clear()
        deadline = time.monotonic() + self.cfg.drain_budget_s
        n = 0
        while (n < self.cfg.max_batch_msgs and (n % 16 or time.monotonic() < deadline)
               and not self._lossless_backlog()):
            try:
                frames = wire.recv_frames(self.pull, zmq.NOBLOCK)
            except zmq.Again:
                break
            except wire.BadMessage as e:  # too many frames: already drained off the socket
                self._bad(e)
            else:
                self.handle(frames)
            n += 1
        return n

    def _lossless_backlog(self) -> bool:
        """A lossless stream has a full backlog: leave the rest on the socket, so that its ingest blocks."""
        return any(s.lossless and len(s.queue) >= self.cfg.queue_frames for s in self.streams.values())

    def step(self, budget_s: float = 0.05) -> bool:
        """Process queued frames round-robin across streams for at most budget_s; True if frames are left.

        With several busy streams and batching on, each round takes up to batch_frames frames of every busy stream;
        frame k of all of them goes through the StepBatcher together, so each model is called once per frame
        position, not once per stream. Events are published afterwards, in frame order, from this thread.
        """
        deadline = time.monotonic() + budget_s
        while True:
            busy = [s for s in self.streams.values() if s.queue]
            if not busy:
                return False
            if self.batcher is not None and len(busy) > 1:
                for s, r in zip(busy, self._spot_batched(busy, self.cfg.batch_frames)):
                    self._publish(s, r)
            else:
                for s in busy:
                    self._process(s, limit=1)
            if time.monotonic() > deadline:
                return any(s.queue for s in self.streams.values())

    def run(self, stop_event: threading.Event) -> int:
        try:
            pending = False
            while not stop_event.is_set():
                self.drain(0 if pending else 50)
                pending = self.step()
                self.housekeeping()
                self._poll_engine_build()
                self.journal_turn()
            # shutdown: take what the ingests sent before they exited, then flush every stream
            deadline = time.monotonic() + SHUTDOWN_DRAIN_S
            while (self.drain(100) or pending) and time.monotonic() < deadline:
                pending = self.step()
            for sid in list(self.pending):  # short streams that never proved real are still spotted
                self._end(sid, "ended", "detector shut down")
            for sid in list(self.streams):
                self._close(sid, "ended", "detector shut down")
            self.housekeeping()
            self.journal_turn()
            deadline = time.monotonic() + 0.3  # late replay requests of subscribers catching up
            while time.monotonic() < deadline:
                self.drain(50)
        finally:
            self.close()
        return 0

    def _poll_engine_build(self) -> None:
        """Switch to the AOTInductor packages once the background build has written them."""
        if self.engine_build is None or self.engine_build.poll() is None:
            return
        code, self.engine_build = self.engine_build.returncode, None
        if code == 0:
            self.engine.upgrade("aoti")
        else:
            log.warning("the background AOTInductor build failed (exit %s); staying on %s", code, self.engine.backend)

    def close(self) -> None:
        self.pull.close()
        self.publisher.close()
        self.guard.close()


def _latency(point: dict) -> float | None:
    return None if point["wall_s"] is None else time.time() - point["wall_s"]


def _due(count: int) -> bool:
    """Log a counted problem the first 10 times, then once per LOG_EVERY."""
    return count <= 10 or count % LOG_EVERY == 0


def _finite(value):
    """The same JSON value with every NaN / infinity replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def run_detector(cfg: DetectConfig, stop_event: threading.Event | None = None) -> int:
    """The role: load the engine, serve until stopped (with `cfg.workers` > 1: a pool of detector workers behind
    one front, stream/workers.py)."""
    if not 1 <= cfg.workers <= wire.MAX_LANES:
        from fes_live.stream.config import ConfigError
        raise ConfigError(f"workers is {cfg.workers}: give 1 to {wire.MAX_LANES}")
    from fes_live.stream.supervise import FATAL_EXIT
    try:
        auth.ServerAuth(None, cfg.endpoints.curve).check(cfg.endpoints.features, cfg.endpoints.events,
                                                         cfg.endpoints.replay)  # before the engine loads
    except auth.AuthError as e:
        log.error("detector cannot start: %s", e)
        return FATAL_EXIT
    if cfg.workers > 1:
        from fes_live.stream.workers import run_pool
        return run_pool(cfg, stop_event or threading.Event())
    import torch

    from fes_live.stream.engine import load_engine
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    engine = load_engine(cfg.engine or None, backend=cfg.backend, fedn_threshold=cfg.fedn_threshold or None)
    detector = Detector(cfg, engine)
    if (cfg.aoti_build and os.environ.get("FES_AOTI_BUILD", "1") != "0" and cfg.backend == "auto"
            and engine.device == "cpu" and not engine.backend.startswith("aoti")):
        from fes_live.stream.engine_build import start_background_build
        detector.engine_build = start_background_build(engine.folder)
    # Everything loaded so far (torch, the engine, libraries) lives as long as the process: frozen, it is left out
    # of every later full garbage collection, which otherwise stalled the loop 0.17-0.2 s at 32 streams
    gc.collect()
    gc.freeze()
    return detector.run(stop_event or threading.Event())



def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="", help=ENGINE_HELP)
    p.add_argument("--backend", default="auto", help="auto, tensorrt, aoti, export or eager")
    p.add_argument("--fedn-threshold", type=float, default=None, metavar="T", help=THRESHOLD_HELP)
    p.add_argument("--features-endpoint", default=None, help="bind for ingests (default: ipc, local)")
    p.add_argument("--events-endpoint", default=None, help="event PUB bind (default tcp://127.0.0.1:5556)")
    p.add_argument("--replay-endpoint", default=None, help="replay bind (default tcp://127.0.0.1:5557)")
    p.add_argument("--journal", default="", help="journal every event in this SQLite file (replay and numbering "
                   "survive restarts; an old .jsonl journal is migrated to .sqlite)")
    p.add_argument("--record", default="", metavar="DIR", help="journal + per-frame intensity CSVs into DIR")
    p.add_argument("--queue-frames", type=int, default=None, help="per-stream backlog before dropping the oldest")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="N detector processes behind these endpoints, streams assigned by a hash of their id")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the workers as Ray actors on this cluster (pip install fes-live[ray]; docs/fleet.md)")
    p.add_argument("--config", default=None, help="JSON file with DetectConfig fields (flags override it)")
    auth.add_flags(p)


def config_from_args(args: argparse.Namespace) -> DetectConfig:
    base = load_config(DetectConfig, args.config)
    d = to_dict(base)
    for key, value in (("features", args.features_endpoint), ("events", args.events_endpoint),
                       ("replay", args.replay_endpoint)):
        if value:
            d["endpoints"][key] = value
    if args.record:  # a fresh run folder, never an earlier run's
        from fes_live.stream.record import new_run_folder
        args.record = str(new_run_folder(args.record))
    for key, value in (("engine", args.engine), ("journal", args.journal), ("record_dir", args.record)):
        if value:
            d[key] = value
    d["endpoints"] = auth.endpoints_with_flags(d["endpoints"], args)
    if args.backend != "auto":
        d["backend"] = args.backend
    if args.queue_frames:
        d["queue_frames"] = args.queue_frames
    if args.fedn_threshold is not None:
        d["fedn_threshold"] = args.fedn_threshold
    if args.workers is not None:
        d["workers"] = args.workers
    if d["record_dir"] and not d["journal"]:
        d["journal"] = f"{d['record_dir']}/events.sqlite"
    return from_dict(DetectConfig, d)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.ray:
        from fes_live.stream.ray_roles import run_ray_pool
        return run_ray_pool(cfg, args.ray, stop)
    return run_detector(cfg, stop)
