"""`fes-live detect`: the detector service, one per machine, any number of streams.

Loop: drain the features socket (PULL, bound) into per-stream queues -> run every stream's queued frames through
its own `OnlineSpotter` (from the engine) -> turn the spotter's updates into events -> publish. Draining before
processing is what bounds the work: a stream whose queue overflows loses its *oldest* frames (counted in its
stats), so a slow detector drops frames instead of growing memory or latency. Garbage on the socket is counted and
dropped. The replay endpoint is served from the same loop, so it answers even while streams are busy.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import zmq

from fes_live.models.spotting import KIND_NAMES, CancelUpdate, ExpressionUpdate, IntensityUpdate, OnsetUpdate
from fes_live.stream import wire
from fes_live.stream.config import from_dict, load_config, to_dict
from fes_live.stream.events import PIPELINE_STREAM, EventPublisher
from fes_live.stream.pipeline_config import DetectConfig

log = logging.getLogger(__name__)

TIMES_KEPT = 20_000  # frames per stream whose (pts, wall) are remembered for event timestamps


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
    spotter: object
    queue: deque  # (FrameFeatures, face_state, dropped_by_ingest)
    source: str = ""
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

    def remember(self, f) -> None:
        self.times[f.frame_index] = (f.pts_s, f.wall_s)
        self.order.append(f.frame_index)
        while len(self.order) > TIMES_KEPT:
            self.times.pop(self.order.popleft(), None)

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
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, 10_000)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(ep.features)
        self.publisher = EventPublisher(self.ctx, ep.events, ep.replay, cfg.journal, cfg.replay_memory)
        if cfg.run_token:  # `fes-live run` checks that the detector answering on the replay port is its own
            self.publisher.publisher = f"{cfg.run_token}-{self.publisher.publisher}"
        self.streams: dict[str, StreamState] = {}
        self.batcher = GimBatcher(engine.gim) if cfg.batch_streams and hasattr(engine, "gim") else None
        self.bad_messages = 0
        self.last_stats = time.monotonic()
        self.poller = zmq.Poller()
        self.poller.register(self.pull, zmq.POLLIN)
        self.poller.register(self.publisher.replay, zmq.POLLIN)
        log.info("detector: features on %s, %s", ep.features, getattr(engine, "backend", ""))

    # ------------------------------------------------------------------ messages in
    def handle(self, frames: list) -> None:
        """One raw message from the socket; garbage is counted and dropped, never raised."""
        try:
            msg = wire.decode(frames)
            if msg.header.kind == "features":
                self._features(msg)
            elif msg.header.kind == "control":
                self._control(msg)
            else:
                raise wire.BadMessage(f"kind {msg.header.kind!r} does not go to the detector")
        except wire.BadMessage as e:
            self.bad_messages += 1
            if self.bad_messages <= 10 or self.bad_messages % 1000 == 0:
                log.warning("dropped a bad message (%d so far): %s", self.bad_messages, e)

    def _features(self, msg: wire.Message) -> None:
        f = wire.to_features(msg)
        sid = msg.header.stream_id
        _check_stream_id(sid)
        s = self.streams.get(sid) or self._open(sid, "", "joined mid-stream")
        s.last_seen_s = time.monotonic()
        if len(s.queue) == s.queue.maxlen:
            s.dropped_detector += 1  # deque(maxlen) drops the oldest
        s.queue.append((f, msg.header.face_state))
        s.dropped_ingest = int(msg.header.meta.get("dropped", s.dropped_ingest))
        s.frames_in += 1
        s.interval_in += 1

    def _control(self, msg: wire.Message) -> None:
        sid, meta = msg.header.stream_id, msg.header.meta
        status = meta.get("status")
        if status == "restarted":  # from the supervisor: a child process was restarted (or given up)
            self.publisher.publish("supervisor", PIPELINE_STREAM,
                                   {"child": str(meta.get("child", sid)), "status": str(meta.get("note", "restarted")),
                                    "exitcode": meta.get("exitcode"), "restarts": int(meta.get("restarts", 0))})
            return
        _check_stream_id(sid)
        if status == "started":
            if sid in self.streams:
                self._close(sid, "ended", "restarted by its source")
            self._open(sid, str(meta.get("source", "")), "", fps=meta.get("fps"))
        elif status in ("ended", "error"):
            if sid not in self.streams:
                self.publisher.publish("stream", sid, {"status": status, "message": str(meta.get("message", ""))})
                return
            self.streams[sid].dropped_ingest = int(meta.get("dropped", self.streams[sid].dropped_ingest))
            self._close(sid, status, str(meta.get("message", "")))
        else:
            raise wire.BadMessage(f"unknown control status {status!r}")

    # ------------------------------------------------------------------ streams
    def _open(self, sid: str, source: str, message: str, fps=None) -> StreamState:
        s = StreamState(sid, self.engine.new_spotter(), deque(maxlen=self.cfg.queue_frames), source)
        if self.batcher is not None:
            s.spotter.gim_fn = self.batcher.gim_fn  # direct engine call unless inside a batched round
        if self.cfg.record_dir:
            from fes_live.stream.record import IntensityCsv
            s.csv = IntensityCsv(self.cfg.record_dir, sid)
        self.streams[sid] = s
        data = {"status": "started", "message": message, "source": source}
        if fps is not None:
            data["fps"] = float(fps)
        self.publisher.publish("stream", sid, data)
        return s

    def _close(self, sid: str, status: str, message: str) -> None:
        """Process what is queued, flush the spotter (its last expressions), announce the end."""
        s = self.streams[sid]
        self._process(s)
        self._updates(s, s.spotter.flush())
        self._emit_intensity(s, force=True)
        self._stats(s, time.monotonic() - self.last_stats)
        if s.csv is not None:
            s.csv.close()
        self.publisher.publish("stream", sid, {"status": status, "message": message, "source": s.source,
                                               "frames": s.frames_in})
        del self.streams[sid]

    # ------------------------------------------------------------------ frames -> events
    def _spot(self, s: StreamState, limit: int | None = None) -> list:
        """Run up to `limit` queued frames through the stream's spotter: [(frame, face_state, updates | error)].

        Pure computation (no sockets), so the batcher may run several streams' calls side by side.
        """
        out = []
        while s.queue and (limit is None or len(out) < limit):
            f, face_state = s.queue.popleft()
            try:
                out.append((f, face_state, s.spotter.push(f.frame_index, f.face_present, f.geometry, f.roi_flow)))
            except ValueError as e:  # e.g. a frame index that does not increase: drop the frame, keep the stream
                out.append((f, face_state, e))
        return out

    def _publish(self, s: StreamState, results: list) -> None:
        """Events of spotted frames, in frame order (main thread only: it owns the PUB socket and the numbering)."""
        for f, face_state, updates in results:
            s.remember(f)
            if face_state in ("found", "lost"):
                self.publisher.publish("face", s.stream_id, {"state": face_state, "frame": f.frame_index,
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
                    s.csv.write(u.frame_index, pts, wall, u.intensity, u.apex_probs)
            elif isinstance(u, OnsetUpdate):
                self._emit_intensity(s, force=True)  # the curve up to the onset first
                onset = s.point(u.frame_index, self.fps)
                self.publisher.publish("expression.onset", s.stream_id, {
                    "track": int(u.track), "onset": onset, "intensity": float(u.intensity),
                    "latency_s": _latency(onset)})
            elif isinstance(u, CancelUpdate):
                self.publisher.publish("expression.cancel", s.stream_id,
                                       {"track": int(u.track), "frame": int(u.frame_index)})
            elif isinstance(u, ExpressionUpdate):
                self._emit_intensity(s, force=True)
                self.publisher.publish("expression", s.stream_id, self._expression(s, u))
        self._emit_intensity(s)

    def _expression(self, s: StreamState, u: ExpressionUpdate) -> dict:
        p = u.proposal
        onset, apex, offset = (s.point(i, self.fps) for i in (p.onset, p.apex, p.offset))
        names = self.emotions
        probs = {(names[i] if i < len(names) else str(i)): float(min(max(v, 0.0), 1.0))
                 for i, v in enumerate(p.emotion_probs)}
        emotion = (names[p.emotion] if 0 <= p.emotion < len(names) else str(p.emotion)) if p.emotion >= 0 else None
        return {"track": int(max(u.track, -1)), "onset": onset, "apex": apex, "offset": offset,
                "kind": KIND_NAMES[p.kind], "emotion": emotion, "emotion_probs": probs, "score": float(p.score),
                "peak_intensity": float(p.peak_intensity), "models": [m for m in p.source.split("+") if m],
                "duration_s": max(0.0, offset["pts_s"] - onset["pts_s"] + 1.0 / self.fps),
                "latency_s": _latency(offset)}

    def _emit_intensity(self, s: StreamState, force: bool = False) -> None:
        if not s.intensity:
            return
        now = time.monotonic()
        if not force and now - s.last_intensity_s < 1.0 / max(self.cfg.intensity_hz, 1e-3):
            return
        s.last_intensity_s = now
        us, s.intensity = s.intensity, []
        self.publisher.publish("intensity", s.stream_id, {
            "frames": [int(u.frame_index) for u in us],
            "pts_s": [s.times.get(u.frame_index, (None,))[0] for u in us],
            "values": [float(u.intensity) for u in us],
            "apex_probs": [[float(u.apex_probs[0]), float(u.apex_probs[1])] for u in us]})

    # ------------------------------------------------------------------ stats and housekeeping
    def _stats(self, s: StreamState, dt: float) -> dict:
        lat = np.asarray(s.latencies_ms) if s.latencies_ms else None
        data = {"fps_in": s.interval_in / dt if dt > 0 else 0.0, "fps_out": s.interval_out / dt if dt > 0 else 0.0,
                "frames_in": s.frames_in, "frames_out": s.frames_out, "dropped_ingest": s.dropped_ingest,
                "dropped_detector": s.dropped_detector,
                "latency_ms_p50": None if lat is None else float(np.percentile(lat, 50)),
                "latency_ms_p99": None if lat is None else float(np.percentile(lat, 99)), "queue": len(s.queue)}
        s.interval_in = s.interval_out = 0
        s.latencies_ms = []
        self.publisher.publish("stats", s.stream_id, data)
        return data

    def housekeeping(self) -> None:
        now = time.monotonic()
        for sid in [k for k, s in self.streams.items() if now - s.last_seen_s > self.cfg.idle_stream_s]:
            self._close(sid, "error", f"no frames for {self.cfg.idle_stream_s:.0f} s")
        dt = now - self.last_stats
        if dt < self.cfg.stats_interval_s:
            return
        self.last_stats = now
        per = [self._stats(s, dt) for s in self.streams.values()]
        self.publisher.publish("stats", PIPELINE_STREAM, {
            "fps_in": sum(d["fps_in"] for d in per), "fps_out": sum(d["fps_out"] for d in per),
            "frames_in": sum(d["frames_in"] for d in per), "frames_out": sum(d["frames_out"] for d in per),
            "dropped_ingest": sum(d["dropped_ingest"] for d in per),
            "dropped_detector": sum(d["dropped_detector"] for d in per),
            "latency_ms_p50": max((d["latency_ms_p50"] for d in per if d["latency_ms_p50"] is not None), default=None),
            "latency_ms_p99": max((d["latency_ms_p99"] for d in per if d["latency_ms_p99"] is not None), default=None),
            "queue": sum(d["queue"] for d in per), "bad_messages": self.bad_messages})

    # ------------------------------------------------------------------ loop
    def drain(self, timeout_ms: int) -> int:
        """Receive up to max_batch_msgs messages (waiting at most timeout_ms for the first); serve replay."""
        ready = dict(self.poller.poll(timeout_ms))
        if self.publisher.replay in ready:
            self.publisher.serve_replay()
        n = 0
        while n < self.cfg.max_batch_msgs:
            try:
                frames = self.pull.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self.handle(frames)
            n += 1
        return n

    def step(self, budget_s: float = 0.05) -> bool:
        """Process queued frames round-robin across streams for at most budget_s; True if frames are left.

        With several busy streams and batching on, each round runs the streams side by side so that their GIM
        calls become one engine call (GimBatcher); events are published afterwards, in order, from this thread.
        """
        deadline = time.monotonic() + budget_s
        while True:
            busy = [s for s in self.streams.values() if s.queue]
            if not busy:
                return False
            if self.batcher is not None and len(busy) > 1:
                results = self.batcher.run([lambda s=s: self._spot(s, self.cfg.batch_frames) for s in busy])
                for s, r in zip(busy, results):
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
            # shutdown: take what the ingests sent before they exited, then flush every stream
            while self.drain(100) or pending:
                pending = self.step()
            for sid in list(self.streams):
                self._close(sid, "ended", "detector shut down")
            self.housekeeping()
            deadline = time.monotonic() + 0.3  # late replay requests of subscribers catching up
            while time.monotonic() < deadline:
                self.drain(50)
        finally:
            self.close()
        return 0

    def close(self) -> None:
        self.pull.close()
        self.publisher.close()
        if self.batcher is not None:
            self.batcher.close()


class GimBatcher:
    """One engine call for the GIM windows of several streams.

    `run(jobs)` runs each job (one stream's spotter pushes) in its own thread. Every `gim_fn` call from those
    threads parks its windows here; once every job still running is parked, the windows go to the engine as one
    batch and each caller gets its slice back. Outside `run` (or from any other thread), `gim_fn` calls the engine
    directly. The spotters never notice: they just called `gim_fn`.
    """

    def __init__(self, gim, max_streams: int = 256):
        from concurrent.futures import ThreadPoolExecutor
        self.gim = gim
        self.pool = ThreadPoolExecutor(max_workers=max_streams, thread_name_prefix="gim-batch")
        self.max_streams = max_streams
        self.cv = threading.Condition()
        self.workers: set[int] = set()
        self.requests: dict[int, np.ndarray] = {}
        self.results: dict[int, object] = {}
        self.running = 0
        self.calls = 0  # engine calls made for batched rounds (for tests and stats)

    def gim_fn(self, windows: np.ndarray):
        me = threading.get_ident()
        with self.cv:
            batched = me in self.workers
        if not batched:
            return self.gim(windows)
        with self.cv:
            self.requests[me] = windows
            self.cv.notify_all()
            while me not in self.results:
                self.cv.wait()
            out = self.results.pop(me)
        if isinstance(out, BaseException):
            raise out
        return out

    def _job(self, job):
        with self.cv:
            self.workers.add(threading.get_ident())
        try:
            return job()
        finally:
            with self.cv:
                self.workers.discard(threading.get_ident())
                self.running -= 1
                self.cv.notify_all()

    def run(self, jobs: list) -> list:
        results = []
        for i in range(0, len(jobs), self.max_streams):
            results += self._round(jobs[i:i + self.max_streams])
        return results

    def _round(self, jobs: list) -> list:
        with self.cv:
            self.running = len(jobs)
        futures = [self.pool.submit(self._job, job) for job in jobs]
        while True:
            with self.cv:
                while self.running and len(self.requests) < self.running:
                    self.cv.wait()
                if not self.requests:
                    break
                batch, self.requests = self.requests, {}
            ids = list(batch)
            sizes = [len(batch[i]) for i in ids]
            try:
                intensity, apex = self.gim(np.concatenate([batch[i] for i in ids]))
                self.calls += 1
                cuts = np.cumsum(sizes)[:-1]
                outs = list(zip(np.split(np.asarray(intensity), cuts), np.split(np.asarray(apex), cuts)))
            except Exception as e:  # every waiting stream gets the error, as it would have calling alone
                outs = [e] * len(ids)
            with self.cv:
                self.results.update(zip(ids, outs))
                self.cv.notify_all()
        return [f.result() for f in futures]

    def close(self) -> None:
        self.pool.shutdown(wait=False)


def _latency(point: dict) -> float | None:
    return None if point["wall_s"] is None else time.time() - point["wall_s"]


def _check_stream_id(sid: str) -> None:
    if not sid or "/" in sid or any(c.isspace() for c in sid):
        raise wire.BadMessage(f"bad stream id {sid!r}")


def run_detector(cfg: DetectConfig, stop_event: threading.Event | None = None) -> int:
    """The role: load the engine, serve until stopped."""
    import torch

    from fes_live.stream.engine import load_engine
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    engine = load_engine(cfg.engine or None, backend=cfg.backend)
    return Detector(cfg, engine).run(stop_event or threading.Event())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="", help="engine folder (default: the bundled default engine)")
    p.add_argument("--backend", default="auto", help="auto, tensorrt, aoti, export or eager")
    p.add_argument("--features-endpoint", default=None, help="bind for ingests (default: ipc, local)")
    p.add_argument("--events-endpoint", default=None, help="event PUB bind (default tcp://127.0.0.1:5556)")
    p.add_argument("--replay-endpoint", default=None, help="replay bind (default tcp://127.0.0.1:5557)")
    p.add_argument("--journal", default="", help="append every event to this JSONL file (replay survives restarts)")
    p.add_argument("--record", default="", metavar="DIR", help="journal + per-frame intensity CSVs into DIR")
    p.add_argument("--queue-frames", type=int, default=None, help="per-stream backlog before dropping the oldest")
    p.add_argument("--config", default=None, help="JSON file with DetectConfig fields (flags override it)")


def config_from_args(args: argparse.Namespace) -> DetectConfig:
    base = load_config(DetectConfig, args.config)
    d = to_dict(base)
    for key, value in (("features", args.features_endpoint), ("events", args.events_endpoint),
                       ("replay", args.replay_endpoint)):
        if value:
            d["endpoints"][key] = value
    for key, value in (("engine", args.engine), ("journal", args.journal), ("record_dir", args.record)):
        if value:
            d[key] = value
    if args.backend != "auto":
        d["backend"] = args.backend
    if args.queue_frames:
        d["queue_frames"] = args.queue_frames
    if d["record_dir"] and not d["journal"]:
        d["journal"] = f"{d['record_dir']}/events.jsonl"
    return from_dict(DetectConfig, d)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return run_detector(cfg, stop)
