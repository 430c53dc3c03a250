"""`fes-live [run] --source X [--source Y] [--record DIR] [--fast]`: every role locally, supervised.

Starts the detector, waits until it answers on its replay endpoint (the engine is loaded), then one ingest per
source, each a real process. A crashed child is restarted (rate-limited) and a `supervisor` event says so. The run
ends when every source has ended (files) or on Ctrl-C / SIGTERM: ingests stop first and announce the end of their
streams, then the detector drains its socket, flushes every stream's pending expressions and exits.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
import time

import zmq

from fes_live.stream import auth, wire
from fes_live.stream.client import ReplayError, Subscription, next_seq
from fes_live.stream.config import from_dict, load_config, to_dict
from fes_live.stream.detect import run_detector
from fes_live.stream.events import PIPELINE_STREAM, format_event
from fes_live.stream.ingest import run_ingest
from fes_live.stream.pipeline_config import DetectConfig, IngestConfig, RunConfig
from fes_live.stream.record import new_run_folder
from fes_live.stream.supervise import Supervisor

log = logging.getLogger(__name__)

DETECTOR = "detector"
ENGINE_LOAD_TIMEOUT_S = 120.0


def stream_ids(sources: tuple[str, ...]) -> list[str]:
    """One distinct id per source: the source's default id, numbered when two sources would share one."""
    from fes_live.stream.sources import default_stream_id
    ids: list[str] = []
    for src in sources:
        sid = default_stream_id(src)
        ids.append(sid if sid not in ids else f"{sid}-{len(ids)}")
    return ids


def role_configs(cfg: RunConfig) -> tuple[DetectConfig, dict[str, IngestConfig]]:
    ep = cfg.endpoints.resolved()
    record = new_run_folder(cfg.record_dir) if cfg.record_dir else None  # a fresh folder per run
    det = from_dict(DetectConfig, {"endpoints": to_dict(ep), "engine": cfg.engine, "backend": cfg.backend,
                                   "journal": str(record / "events.jsonl") if record else "",
                                   "record_dir": str(record) if record else ""})
    ingests = {}
    for src, sid in zip(cfg.sources, stream_ids(cfg.sources)):
        ingests[f"ingest-{sid}"] = from_dict(IngestConfig, {
            "source": src, "stream_id": sid, "endpoints": to_dict(ep), "fast": cfg.fast,
            "face_model": cfg.face_model, "record_dir": str(record) if record else "",
            "lsl": cfg.lsl, "lsl_wait_s": cfg.lsl_wait_s})
    return det, ingests


def extra_roles(args: argparse.Namespace, cfg: RunConfig) -> list[tuple[str, object, object]]:
    """Optional roles started after the detector and before the ingests: (name, role(cfg, stop_event), cfg).

    `--view` starts the browser viewer (stream/view.py), which binds the preview endpoint the ingests connect to.
    """
    roles = []
    if getattr(args, "view", False):
        from fes_live.stream.view import ViewConfig
        from fes_live.stream.view import run as run_view
        ep = cfg.endpoints.resolved()
        roles.append(("viewer", run_view, from_dict(ViewConfig, {"port": args.view_port, "endpoints": to_dict(ep),
                                                                  "engine": cfg.engine or ""})))
    return roles


# what `fes-live run` prints on its console (fes-events shows everything, intensity and stats included)
CONSOLE_TYPES = ("expression.onset", "expression", "expression.cancel", "face", "stream", "supervisor")


def print_events(sub: Subscription) -> None:
    """Print the expressions, face and stream changes of this run as the detector publishes them."""
    for ev in sub:
        print(format_event(ev), flush=True)


def wait_for_detector(sup: Supervisor, replay: str, stop: threading.Event, curve=None) -> int | None:
    """The detector's next seq once it answers a replay request (engine loaded, sockets bound); None if it died."""
    deadline = time.monotonic() + ENGINE_LOAD_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set():
        sup.poll()
        if not sup.running([DETECTOR]):
            return None
        try:
            return next_seq(replay, timeout_s=1.0, curve=curve)
        except ReplayError:
            continue
    return None


def run(cfg: RunConfig, args: argparse.Namespace | None = None, stop: threading.Event | None = None) -> int:
    stop = stop or threading.Event()
    det_cfg, ingest_cfgs = role_configs(cfg)
    ep = det_cfg.endpoints
    ctx = zmq.Context.instance()
    notes = ctx.socket(zmq.PUSH)  # supervisor notes go to the detector, which publishes them as events
    notes.setsockopt(zmq.LINGER, 1000)
    notes.setsockopt(zmq.SNDHWM, 100)
    try:
        auth.apply_client(notes, ep.features, ep.curve)
    except auth.AuthError as e:
        notes.close()
        log.error("cannot start: %s", e)
        return 2
    notes.connect(ep.features)

    def on_change(name: str, status: str, code, restarts: int) -> None:
        wire.send(notes, wire.control_message(PIPELINE_STREAM, "restarted", child=name, note=status,
                                              exitcode=code, restarts=restarts, note_id=sup.note_id), timeout_s=1.0)

    sup = Supervisor(cfg.max_restarts, cfg.restart_window_s, on_change)
    console, printer = None, None
    sup.start(DETECTOR, run_detector, det_cfg)
    code = 0
    try:
        first_seq = wait_for_detector(sup, ep.replay, stop, ep.curve)
        if first_seq is None:
            log.error("the detector did not come up (see its log above)")
            return 0 if stop.is_set() else 1
        if cfg.console:  # from the detector's first seq of this run: replay fills in what came before the join
            console = Subscription(ep.events, ep.replay, types=CONSOLE_TYPES, from_seq=first_seq, curve=ep.curve)
            printer = threading.Thread(target=print_events, args=(console,), daemon=True)
            printer.start()
        extras = extra_roles(args, cfg) if args is not None else []
        for name, target, role_cfg in extras:
            sup.start(name, target, role_cfg)
        for name, icfg in ingest_cfgs.items():
            sup.start(name, run_ingest, icfg)
        log.info("running %d stream(s); events on %s (fes-events to watch)", len(ingest_cfgs), ep.events)
        while not stop.is_set():
            sup.poll()
            if not sup.running(list(ingest_cfgs)):
                log.info("every source has ended")
                break
            if sup.children[DETECTOR].gave_up:
                code = 1
                break
            stop.wait(0.2)
    finally:
        sup.stop(list(ingest_cfgs), cfg.shutdown_timeout_s)
        sup.stop([c.name for c in sup.children.values() if c.name not in ingest_cfgs and c.name != DETECTOR],
                 cfg.shutdown_timeout_s)
        sup.stop([DETECTOR], cfg.shutdown_timeout_s)
        notes.close()
        if printer is not None:  # the detector has flushed and exited: print the rest, stop when quiet
            console.idle_timeout_s = 0.5
            printer.join(5.0)
    failed = [c.name for c in sup.children.values() if c.gave_up]
    if failed:
        log.error("given up (could not run, or crashed too often): %s", ", ".join(failed))
    return code or (1 if failed else 0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", action="append", default=[],
                   help="webcam index, rtsp:// or http(s):// URL, video file or image folder (repeatable)")
    p.add_argument("--record", default="", metavar="DIR",
                   help="write events.jsonl, per-frame intensity CSVs and a clip around each expression to DIR")
    p.add_argument("--lsl", action="store_true", help="Lab Streaming Layer outlets: events, I(t) + blendshapes")
    p.add_argument("--lsl-wait", type=float, default=0.0, metavar="S",
                   help="with --lsl: wait up to S seconds for an LSL consumer before the sources start")
    p.add_argument("--quiet", action="store_true", help="do not print events on the console (logs only)")
    p.add_argument("--fast", "--lossless", dest="fast", action="store_true",
                   help="files: as fast as possible and lossless (every frame scored, the same result every run)")
    p.add_argument("--engine", default="", help="engine folder (default: the bundled default engine)")
    p.add_argument("--backend", default="auto", help="auto, tensorrt, aoti, export or eager")
    p.add_argument("--face-model", default=None, help="MediaPipe face_landmarker .task file")
    p.add_argument("--events-endpoint", default=None, help="event PUB (default tcp://127.0.0.1:5556)")
    p.add_argument("--replay-endpoint", default=None, help="replay endpoint (default tcp://127.0.0.1:5557)")
    p.add_argument("--features-endpoint", default=None, help="ingest -> detector (default: ipc, local)")
    p.add_argument("--preview-endpoint", default=None, help="ingest -> viewer previews (default: ipc, local)")
    p.add_argument("--view", action="store_true", help="also serve the browser viewer (http://127.0.0.1:8080)")
    p.add_argument("--view-port", type=int, default=8080, help="port of the viewer (with --view)")
    p.add_argument("--config", default=None, help="JSON file with RunConfig fields (flags override it)")
    auth.add_flags(p)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    d = to_dict(load_config(RunConfig, args.config))
    if args.source:
        d["sources"] = args.source
    for key, value in (("features", args.features_endpoint), ("events", args.events_endpoint),
                       ("replay", args.replay_endpoint), ("preview", args.preview_endpoint)):
        if value:
            d["endpoints"][key] = value
    for key, value in (("record_dir", args.record), ("engine", args.engine), ("face_model", args.face_model)):
        if value:
            d[key] = value
    if args.fast:
        d["fast"] = True
    if args.lsl:
        d["lsl"], d["lsl_wait_s"] = True, args.lsl_wait
    if args.quiet:
        d["console"] = False
    if args.backend != "auto":
        d["backend"] = args.backend
    d["endpoints"] = auth.endpoints_with_flags(d["endpoints"], args)
    return from_dict(RunConfig, d)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %d: shutting down (pending events are flushed)", signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    return run(cfg, args, stop)
