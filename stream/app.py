"""`fes-live [run] --source X [--source Y] [--record DIR] [--fast]`: every role locally, supervised.

First, in a second or two, what a user can get wrong: every source is opened (and a file's first frame decoded),
every tcp port is checked to be free; either is a one-line error and exit code 2 before anything slow starts.
Then the detector; once it answers on its replay endpoint with this run's token (the engine is loaded, and it is
ours, not another instance's), the viewer (`--view`, waited for so a short clip is not over before it binds),
then one ingest per source, each a real process. Each run keeps its ipc sockets in a folder of its own. A crashed
child is restarted (rate-limited) and a `supervisor` event says so. The run ends when every source has ended
(files) or on Ctrl-C / SIGTERM: ingests stop first and announce the end of their streams, then the detector drains
its socket, flushes every stream's pending expressions and exits.
"""
from __future__ import annotations

import argparse
import logging
import random
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import zmq

from fes_live.stream import auth, wire
from fes_live.stream.client import ReplayError, Subscription, hello
from fes_live.stream.config import ConfigError, from_dict, load_config, to_dict
from fes_live.stream.events import PIPELINE_STREAM, format_event
from fes_live.stream.pipeline_config import (ENGINE_HELP, THRESHOLD_HELP, DetectConfig, IngestConfig, RunConfig,
                                             instance_dir)
from fes_live.stream.record import new_run_folder
from fes_live.stream.supervise import Supervisor

log = logging.getLogger(__name__)

DETECTOR = "detector"
ENGINE_LOAD_TIMEOUT_S = 120.0
VIEWER_START_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 2.5  # network sources: how long the start-up check waits for an answer


class UserError(RuntimeError):
    """Something the user can fix (a bad source, a port in use): one line, exit code 2, no traceback."""


def stream_ids(sources: tuple[str, ...]) -> list[str]:
    """One distinct id per source: the source's default id, numbered when two sources would share one."""
    from fes_live.stream.sources import default_stream_id
    ids: list[str] = []
    for src in sources:
        sid = default_stream_id(src)
        ids.append(sid if sid not in ids else f"{sid}-{len(ids)}")
    return ids


def role_configs(cfg: RunConfig, rt: str | None = None, run_token: str = ""
                 ) -> tuple[DetectConfig, dict[str, IngestConfig]]:
    """The roles' configs; ipc endpoints left empty go to the folder `rt` (this run's own)."""
    ep = cfg.endpoints.resolved(rt, (free_port(), free_port()))  # where there is no ipc://: free tcp ports
    record = new_run_folder(cfg.record_dir) if cfg.record_dir else None  # a fresh folder per run
    det = from_dict(DetectConfig, {"endpoints": to_dict(ep), "engine": cfg.engine, "backend": cfg.backend,
                                   "fedn_threshold": cfg.fedn_threshold,
                                   "journal": str(record / "events.sqlite") if record else "",
                                   "record_dir": str(record) if record else "", "run_token": run_token,
                                   "workers": cfg.workers})
    ingests = {}
    for src, sid in zip(cfg.sources, stream_ids(cfg.sources)):
        ingests[f"ingest-{sid}"] = from_dict(IngestConfig, {
            "source": src, "stream_id": sid, "endpoints": to_dict(ep), "fast": cfg.fast,
            "face_model": cfg.face_model, "record_dir": str(record) if record else "",
            "lsl": cfg.lsl, "lsl_wait_s": cfg.lsl_wait_s,
            "max_faces": cfg.max_faces, "loop": cfg.loop, "reconnect_give_up_s": cfg.reconnect_give_up_s})
    return det, ingests


def extra_roles(args: argparse.Namespace, cfg: RunConfig, det: DetectConfig) -> list[tuple[str, object, object, int]]:
    """Optional roles started after the detector and before the ingests: (name, role(cfg, stop_event), cfg, port).

    `--view` starts the browser viewer (stream/view.py), which binds the preview endpoint the ingests connect to;
    the ingests start once its port answers.
    """
    roles = []
    if getattr(args, "view", False):
        from fes_live.stream.view import ViewConfig
        from fes_live.stream.view import run as run_view
        roles.append(("viewer", run_view, from_dict(ViewConfig, {"port": args.view_port,
                                                                  "endpoints": to_dict(det.endpoints),
                                                                  "engine": cfg.engine or ""}), args.view_port))
    return roles


def probe_sources(cfg: RunConfig) -> None:
    """Open every source once (a file's first frame decoded): a bad one is a UserError within seconds. A network
    source that does not answer is only reported here: the ingest retries it (`reconnect_give_up_s`)."""
    from fes_live.stream.sources import NETWORK_SCHEMES, SourceError, probe_source
    for src in cfg.sources:
        try:
            probe_source(src, PROBE_TIMEOUT_S)
        except SourceError as e:
            if not src.lower().startswith(NETWORK_SCHEMES):
                raise UserError(str(e)) from None
            limit = f"for {cfg.reconnect_give_up_s:g} s" if cfg.reconnect_give_up_s else "until it answers"
            log.error("%s; will keep trying %s (--give-up-after S to limit)", e, limit)


def tcp_port(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a tcp:// endpoint we bind, None for ipc:// and others."""
    if not endpoint.startswith("tcp://"):
        return None
    u = urlsplit(endpoint)
    return (u.hostname or "127.0.0.1", u.port or 0)


def check_ports_free(endpoints: list[str]) -> None:
    """A port another program (or another fes-live) holds is a UserError now, not a detector crash later."""
    for ep in endpoints:
        hp = tcp_port(ep)
        if hp is None or hp[1] == 0:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds: TIME_WAIT is no conflict
            try:
                s.bind(("" if hp[0] in ("*", "0.0.0.0") else hp[0], hp[1]))
            except OSError as e:
                raise UserError(f"{ep}: cannot bind ({e.strerror}); is another fes-live running? "
                                "(--port auto picks free ports)") from None


_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def _ephemeral_low() -> int:
    """Where the OS starts picking ports for outgoing connections (Linux; 32768 where it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port nothing listens on now, and never one this process was given before.

    Probed at random below the OS's ephemeral range: a port from there (what bind(0) gives) can be taken before we
    bind it by any process's outgoing connection, a ZeroMQ socket reconnecting to it included (seen in tests as
    'Address already in use'). Two probes in a row never give the same port (`--port auto` probes the events and
    replay ports, both bound only later). Where the OS's ephemeral range starts at 20000 or lower, bind(0) it is."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(20000, low) if low > 20000 else 0
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
                port = s.getsockname()[1]
        except OSError:
            continue
        with _HANDED_OUT_LOCK:
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    raise OSError("no free TCP port on 127.0.0.1")


def wait_for_child(sup: Supervisor, name: str, timeout_s: float, stop: threading.Event, ready: Callable):
    """Poll `ready()` until it gives a value (not None) while the child `name` runs; None when the child died, the
    time ran out or we were asked to stop."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        sup.poll()
        if not sup.running([name]):
            return None
        got = ready()
        if got is not None:
            return got
        stop.wait(0.2)
    return None


def wait_for_port(sup: Supervisor, name: str, port: int, stop: threading.Event) -> bool:
    """Until 127.0.0.1:port accepts a connection (the child `name` is serving); False if it died or timed out."""
    def accepts():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return None
    return bool(wait_for_child(sup, name, VIEWER_START_TIMEOUT_S, stop, accepts))


# what `fes-live run` prints on its console (fes-events shows everything, intensity and stats included)
CONSOLE_TYPES = ("expression.onset", "expression", "expression.cancel", "face", "stream", "supervisor")


def print_events(sub: Subscription) -> None:
    """Print the expressions, face and stream changes of this run as the detector publishes them."""
    for ev in sub:
        print(format_event(ev), flush=True)


def wait_for_detector(sup: Supervisor, replay: str, stop: threading.Event, token: str = "",
                      curve=None) -> int | dict | None:
    """Our detector's next seq once it answers a replay request (engine loaded, sockets bound) with this run's
    `token` (any, when none is given), {lane: next seq} from a front of workers; None if it died or timed out. An
    answer without the token is another process on our port."""
    def ours():
        try:
            meta = hello(replay, timeout_s=1.0, curve=curve)
        except ReplayError:
            return None
        if not token or str(meta.get("publisher", "")).startswith(f"{token}-"):
            return meta.get("publishers") or int(meta["next_seq"])
        log.warning("%s answers for another detector (publisher %s): waiting for ours", replay, meta.get("publisher"))
        return None
    return wait_for_child(sup, DETECTOR, ENGINE_LOAD_TIMEOUT_S, stop, ours)


def run(cfg: RunConfig, args: argparse.Namespace | None = None, stop: threading.Event | None = None) -> int:
    """Check, start and supervise every role; 0 when every source ended, 1 on a failure, 2 on a user error."""
    stop = stop or threading.Event()
    rt = instance_dir()
    try:
        return _run(cfg, args, stop, rt)
    except UserError as e:
        log.error("%s", e)
        return 2
    finally:
        shutil.rmtree(rt, ignore_errors=True)


def _run(cfg: RunConfig, args: argparse.Namespace | None, stop: threading.Event, rt: str) -> int:
    token = secrets.token_hex(4)
    det_cfg, ingest_cfgs = role_configs(cfg, rt, token)
    ep = det_cfg.endpoints
    extras = extra_roles(args, cfg, det_cfg) if args is not None else []
    check_ports_free([ep.events, ep.replay] + [f"tcp://127.0.0.1:{port}" for *_, port in extras])
    probe_sources(cfg)
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
    sup.start(DETECTOR, "fes_live.stream.detect:run_detector", det_cfg)
    code = 0
    try:
        first_seq = wait_for_detector(sup, ep.replay, stop, token, ep.curve)
        if first_seq is None:
            if not sup.children[DETECTOR].gave_up:  # else it said why, and the supervisor that it gave up
                log.error("the detector did not come up within %.0f s", ENGINE_LOAD_TIMEOUT_S)
            return 0 if stop.is_set() else 1
        if cfg.console:  # from the detector's first seq of this run: replay fills in what came before the join
            console = Subscription(ep.events, ep.replay, types=CONSOLE_TYPES, from_seq=first_seq, curve=ep.curve)
            printer = threading.Thread(target=print_events, args=(console,), daemon=True)
            printer.start()
        for name, target, role_cfg, port in extras:
            sup.start(name, target, role_cfg)
            if not wait_for_port(sup, name, port, stop):
                log.error("%s did not come up on port %d", name, port)
                return 0 if stop.is_set() else 1
        for name, icfg in ingest_cfgs.items():
            sup.start(name, "fes_live.stream.ingest:run_ingest", icfg)
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
                   help="write the journal (events.sqlite), per-frame CSVs and a clip around each expression "
                        "to a new run folder in DIR")
    p.add_argument("--lsl", action="store_true", help="Lab Streaming Layer outlets: events, I(t) + blendshapes")
    p.add_argument("--lsl-wait", type=float, default=0.0, metavar="S",
                   help="with --lsl: wait up to S seconds for an LSL consumer before the sources start")
    p.add_argument("--quiet", action="store_true", help="do not print events on the console (logs only)")
    p.add_argument("--fast", "--lossless", dest="fast", action="store_true",
                   help="files: as fast as possible and lossless (every frame scored, the same result every run)")
    p.add_argument("--loop", action="store_true", help="files and folders: play again from the start (until Ctrl-C)")
    p.add_argument("--max-faces", type=int, default=None, help="faces tracked per source (default 1)")
    p.add_argument("--give-up-after", type=float, default=None, metavar="S",
                   help="network sources: stop reconnecting after S seconds without a frame (default: never)")
    p.add_argument("--engine", default="", help=ENGINE_HELP)
    p.add_argument("--backend", default="auto", help="auto, tensorrt, aoti, export or eager")
    p.add_argument("--fedn-threshold", type=float, default=None, metavar="T", help=THRESHOLD_HELP)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="N detector worker processes, streams assigned by a hash of their id (fes-live detect)")
    p.add_argument("--face-model", default=None, help="MediaPipe face_landmarker .task file")
    p.add_argument("--port", default=None, metavar="N|auto",
                   help="events on tcp://127.0.0.1:N, replay on N+1 (default 5556); auto: free ports, printed")
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
    if args.port is not None:
        if args.port == "auto":
            events, replay = free_port(), free_port()
        elif args.port.isdigit() and 0 < int(args.port) < 65535:
            events, replay = int(args.port), int(args.port) + 1
        else:
            raise ConfigError(f"--port {args.port}: give a port number or 'auto'")
        d["endpoints"]["events"], d["endpoints"]["replay"] = f"tcp://127.0.0.1:{events}", f"tcp://127.0.0.1:{replay}"
    for key, value in (("features", args.features_endpoint), ("events", args.events_endpoint),
                       ("replay", args.replay_endpoint), ("preview", args.preview_endpoint)):
        if value:
            d["endpoints"][key] = value
    for key, value in (("record_dir", args.record), ("engine", args.engine), ("face_model", args.face_model)):
        if value:
            d[key] = value
    for key, value in (("fast", args.fast), ("loop", args.loop)):
        if value:
            d[key] = True
    if args.lsl:
        d["lsl"], d["lsl_wait_s"] = True, args.lsl_wait
    if args.workers is not None:
        d["workers"] = args.workers
    if args.fedn_threshold is not None:
        d["fedn_threshold"] = args.fedn_threshold
    if args.max_faces is not None:
        d["max_faces"] = args.max_faces
    if args.give_up_after is not None:
        d["reconnect_give_up_s"] = args.give_up_after
    if args.quiet:
        d["console"] = False
    if args.backend != "auto":
        d["backend"] = args.backend
    d["endpoints"] = auth.endpoints_with_flags(d["endpoints"], args)
    return from_dict(RunConfig, d)


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)  # a ConfigError is one line from stream/cli.py
    if args.port == "auto":
        print(f"events on {cfg.endpoints.events}, replay on {cfg.endpoints.replay}", flush=True)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %d: shutting down (pending events are flushed)", signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    return run(cfg, args, stop)
