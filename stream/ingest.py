"""`fes-live ingest`: the ingest role, one process per source.

source -> FaceTracker -> FeatureExtractor -> `features` messages to the detector (PUSH, bounded queue, never
blocking: a frame that does not fit is dropped and counted, and the count travels with the next frame). The stream
is announced (`control` started / ended / error) on the same socket, so the detector sees it in order with the
frames. Previews (downscaled JPEG + landmarks + box, throttled) go to the viewer's preview endpoint.

Lossless (`--fast`, alias `--lossless`, on a file or frame folder): every frame is scored. The ingest blocks on a
full queue instead of dropping (backpressure), the `started` message says `lossless`, and the detector then never
drops that stream's frames and stops draining its socket while the stream's backlog is full. MediaPipe is given
the frames' own timestamps (PTS) instead of the capture clock, so the result is the same on every run and equals
`fes-live batch` on the same file.

`--features X.npz` replays recorded features (from `fes-live extract`) at their frame rate instead of running the
face pipeline: the benchmark's load generator, through the same socket and codec.
"""
from __future__ import annotations

import argparse
import logging
import re
import signal
import threading
import time

import cv2
import numpy as np
import zmq

from fes_live.stream import auth, wire
from fes_live.stream.config import from_dict, load_config, to_dict
from fes_live.stream.pipeline_config import IngestConfig
from fes_live.stream.record import new_run_folder
from fes_live.stream.sources import on_source_clock
from fes_live.stream.supervise import FATAL_EXIT

log = logging.getLogger(__name__)


class Sender:
    """The ingest's sockets: features + control to the detector, previews to the viewer."""

    def __init__(self, cfg: IngestConfig, ctx: zmq.Context | None = None):
        self.cfg = cfg
        ep = cfg.endpoints.resolved()
        self.ctx = ctx or zmq.Context.instance()
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.SNDHWM, cfg.send_hwm)
        self.push.setsockopt(zmq.LINGER, int(cfg.end_timeout_s * 1000))
        auth.apply_client(self.push, ep.features, ep.curve)  # AuthError when keys are needed and missing
        self.push.connect(ep.features)
        self.preview = None
        if cfg.preview:
            self.preview = self.ctx.socket(zmq.PUB)
            self.preview.setsockopt(zmq.SNDHWM, 4)
            self.preview.setsockopt(zmq.LINGER, 0)
            self.preview.connect(ep.preview)
        self.sent = 0
        self.dropped = 0
        self._last_preview = 0.0

    def features(self, stream_id: str, feats, face_state: str, wait: threading.Event | None = None) -> bool:
        """Send one frame. `wait` given (lossless): block until the detector has room or until `wait` is set."""
        msg = wire.features_message(stream_id, feats, face_state, {"dropped": self.dropped})
        ok = wire.send(self.push, msg)
        while not ok and wait is not None and not wait.is_set():
            ok = wire.send(self.push, msg, timeout_s=0.2)
        if ok:
            self.sent += 1
        else:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("%s: detector queue full, %d frame(s) dropped so far", stream_id, self.dropped)
        return ok

    def control(self, stream_id: str, status: str, **meta) -> bool:
        """Control messages wait (up to end_timeout_s) for room: they must not be dropped like frames."""
        ok = wire.send(self.push, wire.control_message(stream_id, status, **meta), timeout_s=self.cfg.end_timeout_s)
        if not ok:
            log.error("%s: could not tell the detector '%s' within %.1f s", stream_id, status, self.cfg.end_timeout_s)
        return ok

    def maybe_preview(self, frame, faces) -> None:
        """At most preview_fps JPEG previews per second, downscaled to preview_width."""
        if self.preview is None or time.monotonic() - self._last_preview < 1.0 / max(self.cfg.preview_fps, 1e-3):
            return
        self._last_preview = time.monotonic()
        self.preview_now(frame, faces)

    def preview_now(self, frame, faces) -> None:
        h, w = frame.image.shape[:2]
        s = min(1.0, self.cfg.preview_width / w)
        img = cv2.resize(frame.image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else frame.image
        ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.preview_quality])
        if not ok:
            return
        face = faces.primary if faces is not None else None
        lm = face.landmarks[:, :2] * s if face is not None else np.zeros((0, 2), np.float32)
        box = tuple(float(v) * s for v in face.box) if face is not None else None
        state = faces.state.value if faces is not None else "none"
        p = wire.Preview(frame.stream_id, frame.index, frame.pts_s, frame.wall_s, state, jpeg.reshape(-1),
                         lm.astype(np.float32), box, img.shape[1], img.shape[0])
        wire.send(self.preview, wire.preview_message(p))

    def close(self) -> None:
        self.push.close()  # lingers up to end_timeout_s so queued frames and 'ended' reach the detector
        if self.preview is not None:
            self.preview.close()


def run_ingest(cfg: IngestConfig, stop_event: threading.Event | None = None) -> int:
    """The role: 0 when the source ended (or we were asked to stop), 1 on a source error mid-stream (the supervisor
    restarts it), FATAL_EXIT (2) when the source cannot be opened or the face model is missing (no restart)."""
    from fes_live.stream.sources import SourceError

    stop_event = stop_event or threading.Event()
    if cfg.stream_id and not re.fullmatch(r"[^/\s]{1,128}", cfg.stream_id):
        log.error("stream id %r: use 1-128 characters without '/' or spaces", cfg.stream_id)
        return FATAL_EXIT
    try:
        sender = Sender(cfg)
    except auth.AuthError as e:
        log.error("ingest cannot start: %s", e)
        return FATAL_EXIT
    try:  # the source first: a bad one is reported before MediaPipe loads
        source = open_ingest_source(cfg)
    except SourceError as e:
        sid = cfg.stream_id or "unknown"
        log.error("%s", e)
        sender.control(sid, "error", message=str(e), source=cfg.source)
        sender.close()
        return FATAL_EXIT
    from fes_live.stream.face import FaceConfig, FaceTracker
    from fes_live.stream.features import FeatureConfig, FeatureExtractor
    from fes_live.stream.record import Recording
    sid = source.stream_id
    try:
        tracker = FaceTracker(from_dict(FaceConfig, {"face_model": cfg.face_model, "max_faces": cfg.max_faces}))
        extractor = FeatureExtractor(from_dict(FeatureConfig, {"keep_crop": cfg.send_crops}))
        recording = Recording(cfg, sid, source.fps) if cfg.record_dir or cfg.lsl else None
    except Exception as e:  # no face model, bad record folder...: say so on the stream, then fail
        log.error("%s: %s", sid, e)
        sender.control(sid, "error", message=f"{type(e).__name__}: {e}", source=cfg.source)
        source.close()
        sender.close()
        return FATAL_EXIT
    lossless = cfg.fast and not source.live

    def on_outage(what: str, message: str) -> None:  # a network source went down / came back: one event each
        if what == "down":
            sender.control(sid, "error", message=message, source=cfg.source, dropped=sender.dropped)
        else:
            sender.control(sid, "started", source=source.describe(), fps=float(source.fps or 0.0))

    source.on_outage = on_outage
    if not source.start_error:  # else the first reconnect says "error", then "started" once it answers
        sender.control(sid, "started", source=source.describe(), fps=float(source.fps or 0.0), lossless=lossless)
    log.info("%s: %s -> %s%s", sid, source.describe(), cfg.endpoints.resolved().features,
             " (lossless: every frame is scored)" if lossless else "")
    index, code, message = -1, 0, "end of source"
    try:
        for frame in source:
            if stop_event.is_set():
                message = "stopped"
                break
            if lossless:
                frame = on_source_clock(frame)
            faces = tracker.update(frame)
            feats = extractor.update(frame, faces)
            if not sender.features(sid, feats, faces.state.value, wait=stop_event if lossless else None):
                if stop_event.is_set():
                    message = "stopped"
                    break
            sender.maybe_preview(frame, faces)
            if recording is not None:
                recording.add(frame, faces)
            index = frame.index
    except SourceError as e:  # gave up reconnecting: a restart tries again, unless it never answered at all
        code, message = (FATAL_EXIT if source.start_error else 1), str(e)
        log.error("%s: %s", sid, e)
    finally:
        status = "error" if code else "ended"
        sender.control(sid, status, message=message, frame_index=max(index, -1), frames=index + 1,
                       dropped=sender.dropped)
        if recording is not None:
            recording.close()
        source.close()
        tracker.close()
        sender.close()
    log.info("%s: %s after %d frames: %d sent, %d not sent (detector queue full)%s", sid, message, index + 1,
             sender.sent, sender.dropped, "" if lossless else "; frames the detector itself dropped are in its "
             "stats events (dropped_detector)")
    return code


def open_ingest_source(cfg: IngestConfig):
    """The ingest's source: files at their own rate unless `fast`, looped if asked; network sources are retried
    at start and after drops for `reconnect_give_up_s` (0: for as long as the pipeline runs)."""
    from fes_live.stream.sources import SourceConfig, open_source
    scfg = from_dict(SourceConfig, {"realtime": not cfg.fast, "loop": cfg.loop, "retry_open": True,
                                    "give_up_after_s": cfg.reconnect_give_up_s})
    return open_source(cfg.source, scfg, cfg.stream_id or None)


def replay_features(cfg: IngestConfig, path: str, fps: float = 0.0, stop_event: threading.Event | None = None,
                    loops: int = 1) -> dict:
    """Send recorded features at `fps` (0: the file's) as a live ingest would; capture time = send time."""
    from fes_live.stream.features import FrameFeatures, load_features

    stop_event = stop_event or threading.Event()
    data = load_features(path)
    fps = fps or float(data["fps"]) or 30.0
    sid = cfg.stream_id or "replay"
    sender = Sender(cfg)
    sender.control(sid, "started", source=f"features:{path}", fps=fps)
    t0, n, T = time.monotonic(), 0, len(data["frame_index"])
    present, new_face = data["face_present"], data["new_face"]
    try:
        for loop in range(loops):
            for t in range(T):
                if stop_event.is_set():
                    break
                wait = t0 + n / fps - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                state = ("found" if new_face[t] else "tracked") if present[t] else "none"
                f = FrameFeatures(n, n / fps, time.time(), bool(present[t]), data["geometry"][t],
                                  data["roi_flow"][t], None, new_face=bool(new_face[t] and present[t]))
                sender.features(sid, f, state)
                n += 1
    finally:
        sender.control(sid, "ended", message="end of features", frame_index=n - 1, frames=n, dropped=sender.dropped)
        sender.close()
    return {"stream_id": sid, "frames": n, "dropped": sender.dropped, "seconds": time.monotonic() - t0}


def _replay_role(cfg_and_path, stop_event) -> int:
    cfg, path, fps, loops = cfg_and_path
    replay_features(cfg, path, fps, stop_event, loops)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=None, help="webcam index, rtsp:// or http(s):// URL, video file or folder")
    p.add_argument("--features", default=None, metavar="NPZ",
                   help="instead of --source: replay features written by `fes-live extract` (load testing)")
    p.add_argument("--stream-id", default="", help="id of this stream (default: derived from the source)")
    p.add_argument("--features-endpoint", default=None, help="detector's features endpoint (default: ipc, local)")
    p.add_argument("--preview-endpoint", default=None, help="viewer's preview endpoint (default: ipc, local)")
    p.add_argument("--no-preview", action="store_true", help="do not publish preview frames")
    p.add_argument("--fast", "--lossless", dest="fast", action="store_true",
                   help="files: as fast as possible and lossless (every frame scored, the same result every run)")
    p.add_argument("--crops", action="store_true", help="send 224x224 face crops (image-backbone engines)")
    p.add_argument("--face-model", default=None, help="MediaPipe face_landmarker .task file")
    p.add_argument("--max-faces", type=int, default=1, help="faces tracked in the source (default 1)")
    p.add_argument("--record", default="", metavar="DIR",
                   help="write the per-frame table and a clip around each expression to a new run folder in DIR")
    p.add_argument("--lsl", action="store_true", help="Lab Streaming Layer outlets: events, I(t) + blendshapes")
    p.add_argument("--lsl-wait", type=float, default=0.0, metavar="S",
                   help="with --lsl: wait up to S seconds for an LSL consumer before the source starts")
    p.add_argument("--events-endpoint", default=None, help="detector's event endpoint (for --record clips)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="instead of --features-endpoint: the detector actor owning this stream on this Ray cluster")
    p.add_argument("--config", default=None, help="JSON file with IngestConfig fields (flags override it)")
    auth.add_flags(p)


def config_from_args(args: argparse.Namespace) -> IngestConfig:
    base = load_config(IngestConfig, args.config)
    ep = to_dict(base.endpoints)
    for key, value in (("features", args.features_endpoint), ("preview", args.preview_endpoint),
                       ("events", args.events_endpoint)):
        if value:
            ep[key] = value
    over = {"endpoints": auth.endpoints_with_flags(ep, args), "stream_id": args.stream_id or base.stream_id, "max_faces": args.max_faces}
    if args.source is not None:
        over["source"] = args.source
    for key, flag in (("fast", args.fast), ("send_crops", args.crops)):
        if flag:
            over[key] = True
    if args.no_preview:
        over["preview"] = False
    if args.face_model:
        over["face_model"] = args.face_model
    if args.record:
        over["record_dir"] = str(new_run_folder(args.record))
    if args.lsl:
        over["lsl"], over["lsl_wait_s"] = True, args.lsl_wait
    if args.ray:  # send to the detector actor that owns this stream, found by name (stream/ray_roles.py)
        from fes_live.stream.ray_roles import features_endpoint
        from fes_live.stream.sources import default_stream_id
        over["stream_id"] = over["stream_id"] or ("replay" if args.features else
                                                  default_stream_id(over.get("source", base.source)))
        over["endpoints"]["features"] = features_endpoint(args.ray, over["stream_id"])
        log.info("%s: sending to its detector actor at %s", over["stream_id"], over["endpoints"]["features"])
    return from_dict(IngestConfig, {**to_dict(base), **over})


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.features:
        try:
            stats = replay_features(cfg, args.features, stop_event=stop)
        except auth.AuthError as e:
            log.error("ingest cannot start: %s", e)
            return FATAL_EXIT
        log.info("replayed %s", stats)
        return 0
    if args.source is None and args.config is None:
        log.error("give --source (or --features)")
        return 2
    return run_ingest(cfg, stop)
