"""`fes-live detect --workers N`: N detector processes on one host behind one set of endpoints.

One detector is one GIL-bound process (its per-stream Python work, not the models, fills a core first); N of them
spread that work over the host's cores and share its GPU. Each worker is the ordinary detector (stream/detect.py)
on private ipc sockets, serving the streams whose id hashes to it (`shard`: crc32, the same on every host and run).
The front, a process of its own, is all that ingests and subscribers see:

- features: PULL (the public features endpoint) -> every message decoded and checked by `wire.decode` -> PUSH to
  the worker that owns its stream id. A worker that cannot take more (busy, or restarting) gets a backlog here of
  up to FRONT_BACKLOG messages; beyond it the front stops reading, so the ingests' own queues (and a lossless
  ingest's blocking) take over: the front drops only what fails validation.
- events: SUB connected to every worker's PUB -> PUB (the public events endpoint), forwarded by `zmq.proxy` in C.
  Each worker is a publisher of its own (publisher id `<lane>-<random>`, lane `<run_token>-w<i>`, its own journal
  `<journal stem>.w<i>.sqlite`), so sequence numbers are gapless per lane and a subscriber keeps one sequence per
  lane (stream/client.py `lane_of`).
- replay: ROUTER (the public replay endpoint). A request names its lane (meta.publisher) and goes to that
  worker's replay endpoint; the answer is checked and sent back. A request for no events without a lane is answered
  by the front itself with every lane's next seq (meta.publishers), and only once every worker answers, so
  "the detector is up" means every worker is.

`run_pool` supervises the front and the workers as `fes-live run` supervises its roles (stream/supervise.py): a
worker that dies is restarted, its journal gives it its streams' neutral baselines and track ids back, and its
streams, whose ingests kept sending to the front, join it again mid-stream. A stream's state is in the journal of
the worker that owns it: change N and the streams move (and start with a fresh baseline).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import zmq

from fes_live.stream import auth, wire
from fes_live.stream.events import PIPELINE_STREAM, REPLAY_IN_FLIGHT, REPLAY_MAX, MAX_EVENT_BYTES
from fes_live.stream.pipeline_config import DetectConfig, Endpoints, has_ipc, instance_dir

log = logging.getLogger(__name__)

FRONT = "detector-front"
FRONT_BACKLOG = 4096  # features messages held per worker that cannot take them (~18 MB); beyond, the front waits
FORWARD_PER_TURN = 1000  # features messages forwarded per loop turn before the backlogs get their turn
WORKER_ANSWER_S = 3.0  # how long the front waits for a worker's replay answer
STOP_TIMEOUT_S = 15.0


def shard(stream_id: str, n: int) -> int:
    """The worker (0..n-1) that owns `stream_id`: crc32 of its UTF-8 bytes, stable across runs, hosts and Pythons
    (Python's hash() of a str changes with every interpreter)."""
    return zlib.crc32(stream_id.encode()) % n


def lane(run_token: str, i: int) -> str:
    """Worker i's lane (the stable part of its publisher id): `<run_token>-w<i>`, or `w<i>` without a token."""
    return f"{run_token}-w{i}" if run_token else f"w{i}"


def worker_journal(journal: str, i: int) -> str:
    """Worker i's own journal next to the configured one: events.sqlite -> events.w0.sqlite ("" stays "")."""
    if not journal:
        return ""
    p = Path(journal)
    return str(p.with_name(f"{p.stem}.w{i}{p.suffix or '.sqlite'}"))


@dataclass(frozen=True)
class FrontConfig:
    """The front's sockets: the public endpoints it binds and each worker's private ones it connects to."""
    endpoints: Endpoints  # public: features (PULL), events (PUB), replay (ROUTER); curve for them
    workers: tuple[Endpoints, ...]  # each worker's features, events, replay
    lanes: tuple[str, ...]  # worker i's lane
    publisher: str  # the front's own id in its answers (`<run_token>-front`: `fes-live run` knows it is its own)
    recv_hwm: int = 1000
    subscriber_buffer_mb: float = 64.0


def worker_configs(cfg: DetectConfig, rt: str) -> tuple[FrontConfig, list[DetectConfig]]:
    """The front's config and one DetectConfig per worker: private endpoints in the folder `rt`, own journal, own
    lane (run token)."""
    from fes_live.stream.app import free_port
    eps, workers = [], []
    for i in range(cfg.workers):
        if has_ipc():
            ep = Endpoints(features=f"ipc://{rt}/w{i}-f", events=f"ipc://{rt}/w{i}-e", replay=f"ipc://{rt}/w{i}-r",
                           preview="", curve=cfg.endpoints.curve)
        else:
            ep = Endpoints(*(f"tcp://127.0.0.1:{free_port()}" for _ in range(3)), preview="",
                           curve=cfg.endpoints.curve)
        eps.append(ep)
        workers.append(worker_config(cfg, i, ep))
    return front_config(cfg, eps), workers


def worker_config(cfg: DetectConfig, i: int, ep: Endpoints) -> DetectConfig:
    """Worker i of a pool configured by `cfg`: on `ep`, with its own lane (run token) and journal."""
    return dataclasses.replace(cfg, endpoints=ep, journal=worker_journal(cfg.journal, i),
                               run_token=lane(cfg.run_token, i), workers=1,
                               aoti_build=cfg.aoti_build and i == 0)  # one compile per machine


def front_config(cfg: DetectConfig, workers: list[Endpoints]) -> FrontConfig:
    """The front of `workers` (worker i on lane i), on the public endpoints of `cfg`."""
    return FrontConfig(cfg.endpoints.resolved(), tuple(workers), tuple(lane(cfg.run_token, i) for i in range(len(workers))),
                       f"{cfg.run_token}-front" if cfg.run_token else "front", cfg.recv_hwm, cfg.subscriber_buffer_mb)


# ---------------------------------------------------------------------------------------------- the front

class Front:
    """Features routed by stream id, events merged, replay forwarded by lane (see the module's docstring)."""

    def __init__(self, cfg: FrontConfig, ctx: zmq.Context | None = None):
        self.cfg = cfg
        self.n = len(cfg.workers)
        self.ctx = ctx or zmq.Context.instance()
        ep = cfg.endpoints
        self.guard = auth.ServerAuth(self.ctx, ep.curve)
        self.guard.check(ep.features, ep.events, ep.replay)
        self.pull = wire.features_socket(self.ctx, self.guard, ep.features, cfg.recv_hwm)
        self.push = []
        for w in cfg.workers:
            s = self.ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.SNDHWM, cfg.recv_hwm)
            s.setsockopt(zmq.LINGER, 0)
            auth.apply_client(s, w.features, ep.curve)  # (workers off loopback: Ray actors on other nodes)
            s.connect(w.features)
            self.push.append(s)
        self.backlog: list[deque] = [deque() for _ in range(self.n)]
        self.bad_messages = self.bad_requests = self.forwarded = 0
        # events: SUB from every worker -> public PUB; replay: public ROUTER. Bound here, so that a port in use is
        # an error of this constructor; then each thread alone uses its sockets.
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVHWM, 100_000)
        self.sub.setsockopt(zmq.MAXMSGSIZE, wire.MAX_BYTES["event"])
        for w in cfg.workers:
            auth.apply_client(self.sub, w.events, ep.curve)
            self.sub.connect(w.events)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, max(1, int(cfg.subscriber_buffer_mb * 2**20) // MAX_EVENT_BYTES))
        self.pub.setsockopt(zmq.LINGER, 2000)
        wire.limit_receive(self.pub)  # subscriptions only
        self.guard.apply(self.pub, ep.events)
        self.pub.bind(ep.events)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.SNDHWM, REPLAY_IN_FLIGHT)
        self.router.setsockopt(zmq.RCVHWM, 64)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        wire.limit_receive(self.router)  # requests: a header, no buffers
        self.guard.apply(self.router, ep.replay)
        self.router.bind(ep.replay)
        self.control_addr = f"inproc://front-control-{id(self)}"
        self.control = self.ctx.socket(zmq.PAIR)
        self.control.bind(self.control_addr)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._events, name="events-front", daemon=True),
                        threading.Thread(target=self._replay, name="replay-front", daemon=True)]
        for t in self.threads:
            t.start()
        log.info("front: features on %s, events on %s, replay on %s, %d workers", ep.features, ep.events,
                 ep.replay, self.n)

    # ------------------------------------------------------------------ features
    def route(self, frames: list) -> None:
        """One message off the public socket: checked, then to the backlog or socket of the worker owning it."""
        try:
            msg = wire.decode(frames)
            if msg.header.kind not in ("features", "control"):
                raise wire.BadMessage(f"kind {msg.header.kind!r} does not go to the detector")
        except wire.BadMessage as e:
            self.bad_messages += 1
            if self.bad_messages <= 10 or self.bad_messages % 1000 == 0:
                log.warning("front dropped a bad message (%d so far): %s", self.bad_messages, e)
            return
        i = shard(msg.header.stream_id, self.n)
        if self.backlog[i] or not wire.send(self.push[i], frames):
            self.backlog[i].append(frames)
        self.forwarded += 1

    def _flush_backlogs(self) -> None:
        for i, q in enumerate(self.backlog):
            while q and wire.send(self.push[i], q[0]):
                q.popleft()

    def turn(self, timeout_ms: int) -> int:
        """Forward what waits (backlogs first, in order); read new messages only while no backlog is full."""
        self._flush_backlogs()
        if any(len(q) >= FRONT_BACKLOG for q in self.backlog):
            time.sleep(timeout_ms / 1000)  # a worker cannot take more: leave the rest on the socket (the ingests wait)
            return 0
        if not self.pull.poll(timeout_ms):
            return 0
        n = 0
        while n < FORWARD_PER_TURN:
            try:
                frames = wire.recv_frames(self.pull, zmq.NOBLOCK)
            except zmq.Again:
                break
            except wire.BadMessage:  # too many frames: drained already
                self.bad_messages += 1
                continue
            self.route(frames)
            n += 1
        return n

    def run(self, stop_event: threading.Event) -> int:
        try:
            while not stop_event.is_set() and all(t.is_alive() for t in self.threads):
                self.turn(50)
            deadline = time.monotonic() + 2.0  # what the ingests sent last (their `ended`) still reaches a worker
            while time.monotonic() < deadline and (self.turn(50) or any(self.backlog)):
                pass
            return 0 if all(t.is_alive() for t in self.threads) else 1
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        self._stop_events()
        for t in self.threads:
            t.join(5.0)
        self.pull.close()
        for s in self.push:
            s.close()
        self.guard.close()

    # ------------------------------------------------------------------ events
    def _events(self) -> None:
        """SUB -> PUB in C until `close` sends TERMINATE on the control socket."""
        try:
            zmq.proxy_steerable(self.sub, self.pub, None, self.control)
        except zmq.ZMQError as e:
            if not self.stop.is_set():
                log.error("front: event forwarding failed: %s", e)
        finally:
            for s in (self.sub, self.pub, self.control):
                s.close()

    def _stop_events(self) -> None:
        s = self.ctx.socket(zmq.PAIR)
        s.connect(self.control_addr)
        s.send(b"TERMINATE")
        s.close(linger=1000)

    # ------------------------------------------------------------------ replay
    def _replay(self) -> None:
        try:
            while not self.stop.is_set():
                if self.router.poll(100):
                    self._answer(self.router)
        finally:
            self.router.close()

    def _answer(self, router: zmq.Socket) -> None:
        try:
            frames = wire.recv_frames(router, zmq.NOBLOCK, max_parts=2 + wire.MAX_PARTS)
        except (zmq.Again, wire.BadMessage):
            return
        ident, rest = frames[0], frames[1:]
        envelope = []
        if rest and len(rest[0].bytes) == 0:
            envelope, rest = [b""], rest[1:]
        try:
            msg = wire.decode(rest)
            req = wire.to_replay_request(msg, REPLAY_MAX)
            lane = msg.header.meta.get("publisher", "")
            if lane:
                if lane not in self.cfg.lanes:
                    raise wire.BadMessage(f"no publisher lane {lane!r} here (lanes: {', '.join(self.cfg.lanes)})")
                reply = self._ask_worker(self.cfg.lanes.index(lane), rest)
            elif req.last is not None and req.last < req.first:  # a hello: every lane's next seq
                reply = self._hello()
            else:
                raise wire.BadMessage(f"{self.n} publishers answer here: name one (meta.publisher, a lane of "
                                      f"{', '.join(self.cfg.lanes)})")
        except wire.BadMessage as e:
            self.bad_requests += 1
            reply = self._reply({"ok": False, "error": str(e)[:200]})
        wire.send_to_peer(router, [ident, *envelope, *reply])  # not sent: the client is gone or has
                                                                # REPLAY_IN_FLIGHT unread answers

    def _reply(self, meta: dict, events: list | None = None) -> list:
        return wire.encode("replay", wire.Header("replay", PIPELINE_STREAM,
                                                 meta={"next_seq": 0, "publisher": self.cfg.publisher, **meta}),
                           {"events": events or []})

    def _ask_worker(self, i: int, request: list) -> list:
        """Worker i's answer to `request`, checked; an error answer when it does not answer (restarting)."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_BYTES["replay"])
        auth.apply_client(sock, self.cfg.workers[i].replay, self.cfg.endpoints.curve)
        sock.connect(self.cfg.workers[i].replay)
        try:
            sock.send_multipart([b"", *request], copy=False)
            if not sock.poll(int(WORKER_ANSWER_S * 1000)):
                return self._reply({"ok": False, "error": f"worker {i} ({self.cfg.lanes[i]}) is not answering "
                                                          "(restarting?): ask again"})
            frames = sock.recv_multipart(copy=False)
            frames = frames[1:] if len(frames[0].bytes) == 0 else frames
            wire.decode(frames)  # a worker's answer is checked like anyone's
            return frames
        finally:
            sock.close()

    def _hello(self) -> list:
        from fes_live.stream.client import ReplayError, hello
        seqs = {}
        for i, lane in enumerate(self.cfg.lanes):
            try:
                seqs[lane] = int(hello(self.cfg.workers[i].replay, timeout_s=1.0, ctx=self.ctx,
                                       curve=self.cfg.endpoints.curve)["next_seq"])
            except (ReplayError, wire.BadMessage):
                return self._reply({"ok": False, "error": f"worker {i} ({lane}) is not answering yet"})
        return self._reply({"ok": True, "publishers": seqs})


def run_front(cfg: FrontConfig, stop_event: threading.Event | None = None) -> int:
    """The front as a role (a supervised child of `run_pool`)."""
    return Front(cfg).run(stop_event or threading.Event())


# ---------------------------------------------------------------------------------------------- the pool

def run_pool(cfg: DetectConfig, stop_event: threading.Event) -> int:
    """The front and `cfg.workers` detector workers, supervised until `stop_event`; a worker that crashes is
    restarted (rate-limited). Workers stop before the front, so their last events still go out through it."""
    from fes_live.stream.supervise import FATAL_EXIT, Supervisor
    rt = instance_dir()
    front_cfg, worker_cfgs = worker_configs(cfg, rt)
    names = [f"detector-{i}" for i in range(cfg.workers)]
    ctx = zmq.Context.instance()
    notes = ctx.socket(zmq.PUSH)  # worker restarts are published as supervisor events, like the app's children's
    notes.setsockopt(zmq.LINGER, 1000)
    notes.setsockopt(zmq.SNDHWM, 100)
    auth.apply_client(notes, front_cfg.endpoints.features, cfg.endpoints.curve)
    notes.connect(front_cfg.endpoints.features)

    def on_change(name: str, status: str, code, restarts: int) -> None:
        wire.send(notes, wire.control_message(PIPELINE_STREAM, "restarted", child=name, note=status, exitcode=code,
                                              restarts=restarts, note_id=sup.note_id), timeout_s=1.0)

    sup = Supervisor(on_change=on_change, notes_to=names[shard(PIPELINE_STREAM, cfg.workers)])
    code = 0
    try:
        sup.start(FRONT, run_front, front_cfg)
        for name, wcfg in zip(names, worker_cfgs):
            sup.start(name, "fes_live.stream.detect:run_detector", wcfg)
        log.info("detector: %d workers behind %s / %s / %s", cfg.workers, front_cfg.endpoints.features,
                 front_cfg.endpoints.events, front_cfg.endpoints.replay)
        while not stop_event.is_set():
            sup.poll()
            failed = [c for c in sup.children.values() if c.gave_up]
            if not sup.running():
                break  # every child ended by itself (each was signalled)
            if failed:
                fatal = any(c.last_exitcode == FATAL_EXIT for c in failed)
                log.error("%s %s: stopping the detector", ", ".join(c.name for c in failed),
                          "cannot run" if fatal else "crashed too often")
                code = FATAL_EXIT if fatal else 1
                break
            stop_event.wait(0.2)
    finally:
        sup.stop(names, STOP_TIMEOUT_S)
        sup.stop([FRONT], STOP_TIMEOUT_S)
        notes.close()
        shutil.rmtree(rt, ignore_errors=True)
    return code

