"""Subscribe to fes-live events from Python: `for event in subscribe(): ...`.

The subscription takes every event off the PUB socket (filters are applied here, not by topic, so the sequence
numbers stay gapless to check). When a number is skipped (the subscriber was slow, reconnecting, or just joined
with `from_seq`), the missing events are fetched from the detector's replay endpoint and yielded first, in order.

One endpoint may carry several publishers (`fes-live detect --workers N`, stream/workers.py): sequence numbers are
gapless per *lane*, the stable part of a publisher id (`lane_of`); each lane is followed and gap-filled on its own.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

import zmq

from fes_live.stream import wire
from fes_live.stream.auth import apply_client
from fes_live.stream.events import REPLAY_MAX, replay_request
from fes_live.stream.pipeline_config import CurveConfig

log = logging.getLogger(__name__)

DEFAULT_EVENTS = "tcp://127.0.0.1:5556"
DEFAULT_REPLAY = "tcp://127.0.0.1:5557"


class ReplayError(RuntimeError):
    """The replay endpoint did not answer in time or refused the request."""


def lane_of(publisher: str) -> str:
    """The numbering a publisher id belongs to: the id without its last `-<random>` part, which a restart changes
    ("" for an id without one). A detector restarted with its journal continues its lane's numbering under a new
    id; one restarted without starts it again (and the subscriber follows)."""
    return publisher.rsplit("-", 1)[0] if "-" in publisher else ""


def fetch(replay: str, first: int, last: int | None = None, *, timeout_s: float = 3.0,
          ctx: zmq.Context | None = None, curve: CurveConfig | None = None,
          publisher: str = "") -> tuple[list[dict], int]:
    """Events first..last (None: up to the newest) from a replay endpoint, and the publisher's next seq.
    `curve`: keys when the endpoint is tcp off loopback (stream/auth.py). `publisher`: the lane, at a front of
    several workers."""
    ctx = ctx or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_BYTES["replay"])
    apply_client(sock, replay, curve or CurveConfig())
    sock.connect(replay)
    out: list[dict] = []
    try:
        while True:
            msg = _ask(sock, replay, first, last, timeout_s, publisher)
            batch, next_seq = msg.arrays["events"], int(msg.header.meta["next_seq"])
            out += batch
            end = next_seq - 1 if last is None else min(last, next_seq - 1)
            if not batch or batch[-1]["seq"] >= end:
                return out, next_seq
            first = batch[-1]["seq"] + 1
    finally:
        sock.close()


def _ask(sock: zmq.Socket, replay: str, first: int, last: int | None, timeout_s: float,
         publisher: str = "") -> wire.Message:
    """One replay request and its answer (ReplayError when there is none in time, or a refusal)."""
    deadline = time.monotonic() + timeout_s
    # a DEALER blocks a send while it has no peer (an endpoint that is down, a CURVE handshake that failed and is
    # retried): wait for room within the same timeout, never for ever
    unreachable = ReplayError(f"cannot reach replay endpoint {replay} within {timeout_s:.1f} s")
    if not sock.poll(int(timeout_s * 1000), zmq.POLLOUT):
        raise unreachable
    try:
        sock.send_multipart([b"", *replay_request(first, last, REPLAY_MAX, publisher)], flags=zmq.NOBLOCK, copy=False)
    except zmq.Again:
        raise unreachable from None
    if not sock.poll(max(0, int((deadline - time.monotonic()) * 1000))):
        raise ReplayError(f"no answer from replay endpoint {replay} within {timeout_s:.1f} s")
    frames = sock.recv_multipart(copy=False)
    msg = wire.decode(frames[1:] if len(frames[0].bytes) == 0 else frames)
    if not msg.header.meta.get("ok"):
        raise ReplayError(f"replay refused: {msg.header.meta.get('error')}")
    return msg


class Subscription:
    """Iterable of event dicts, gap-filled by replay. `missed` counts events that could not be recovered.

    `from_seq`: an int starts every lane there (a single detector has one lane); a dict {lane: seq}, as a workers'
    front answers a hello (`hello(...)["publishers"]`), starts each lane at its own."""

    def __init__(self, events: str = DEFAULT_EVENTS, replay: str = DEFAULT_REPLAY, *,
                 types: Iterable[str] = (), streams: Iterable[str] = (), from_seq: int | dict | None = None,
                 idle_timeout_s: float | None = None, ctx: zmq.Context | None = None,
                 curve: CurveConfig | None = None):
        self.events_addr, self.replay_addr = events, replay
        self.curve = curve or CurveConfig()
        self.types, self.streams = set(types), set(streams)
        self.from_seq = from_seq
        self.start_all = from_seq if isinstance(from_seq, int) else None  # where a lane first seen live starts
        self.lanes: dict[str, int] = {}  # per lane: the seq we expect next
        self.publishers: dict[str, str] = {}  # per lane: the publisher id seen last
        self.idle_timeout_s = idle_timeout_s
        self.missed = 0
        self.bad_messages = 0
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_BYTES["event"])
        apply_client(self.sock, events, self.curve)
        self.sock.connect(events)

    def _wanted(self, ev: dict) -> bool:
        return (not self.types or ev["type"] in self.types) and (not self.streams or ev["stream_id"] in self.streams)

    def _fill(self, lane: str, first: int, last: int | None) -> list[dict]:
        """Replay lane's first..last; events that the endpoint no longer has are counted in `missed`."""
        try:
            got, next_seq = fetch(self.replay_addr, first, last, ctx=self.ctx, curve=self.curve, publisher=lane)
        except (ReplayError, wire.BadMessage) as e:
            log.warning("could not replay events %s..%s%s: %s", first, last, f" of {lane}" if lane else "", e)
            got, next_seq = [], first
        want_last = (next_seq - 1) if last is None else last
        have = {e["seq"] for e in got}
        self.missed += sum(1 for s in range(first, want_last + 1) if s not in have)
        return got

    def _starts(self) -> dict[str, int]:
        """Each lane's first seq wanted, from `from_seq` (a hello tells an int which lanes there are)."""
        if isinstance(self.from_seq, dict):
            return {str(k): int(v) for k, v in self.from_seq.items()}
        try:
            meta = hello(self.replay_addr, ctx=self.ctx, curve=self.curve)
        except (ReplayError, wire.BadMessage) as e:  # (each lane is replayed when its first live event comes)
            log.warning("could not replay from %s yet: %s", self.from_seq, e)
            return {}
        lanes = meta.get("publishers") or {lane_of(meta["publisher"]): meta["next_seq"]}
        return {lane: int(self.from_seq) for lane in lanes}

    def __iter__(self) -> Iterator[dict]:
        try:
            if self.from_seq is not None:  # everything up to now comes from the replay endpoint
                for lane, first in self._starts().items():
                    self.lanes[lane] = first
                    for ev in self._fill(lane, first, None):
                        self.lanes[lane], self.publishers[lane] = ev["seq"] + 1, ev["publisher"]
                        if self._wanted(ev):
                            yield ev
                self.from_seq = None
            idle_since = time.monotonic()
            while True:
                if not self.sock.poll(200):
                    if self.idle_timeout_s is not None and time.monotonic() - idle_since > self.idle_timeout_s:
                        return
                    continue
                try:
                    ev = wire.to_event(wire.recv(self.sock))
                    seq, publisher = int(ev["seq"]), ev["publisher"]
                    if not isinstance(publisher, str):
                        raise TypeError("publisher is not a string")
                except (wire.BadMessage, KeyError, TypeError, ValueError) as e:
                    self.bad_messages += 1
                    log.warning("dropped a bad event message: %s", e)
                    continue
                lane = lane_of(publisher)
                expected = self.lanes.get(lane, self.start_all)
                if expected is not None and publisher != self.publishers.get(lane) and seq < expected:
                    log.info("publisher %s restarted without a journal; numbering starts again at %d", lane, seq)
                    expected = seq
                self.publishers[lane] = publisher
                if expected is not None and seq < expected:
                    continue  # already yielded (from a replay)
                if expected is not None and seq > expected:
                    for old in self._fill(lane, expected, seq - 1):
                        if self._wanted(old):
                            yield old
                self.lanes[lane] = seq + 1
                if self._wanted(ev):
                    idle_since = time.monotonic()
                    yield ev
        finally:
            self.close()

    def close(self) -> None:
        if not self.sock.closed:
            self.sock.close()


def next_seq(replay: str, *, timeout_s: float = 3.0, ctx: zmq.Context | None = None,
             curve: CurveConfig | None = None) -> int:
    """The publisher's next sequence number (asks for no events); ReplayError when the endpoint does not answer,
    which is also how callers wait for a detector to come up."""
    return int(hello(replay, timeout_s=timeout_s, ctx=ctx, curve=curve)["next_seq"])


def hello(replay: str, *, timeout_s: float = 3.0, ctx: zmq.Context | None = None,
          curve: CurveConfig | None = None) -> dict:
    """The replay endpoint's answer to a request for no events: {"next_seq", "publisher"} of the detector there
    (a workers' front adds "publishers": {lane: next seq} of every worker)."""
    sock = (ctx or zmq.Context.instance()).socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_BYTES["replay"])
    apply_client(sock, replay, curve or CurveConfig())
    sock.connect(replay)
    try:
        return dict(_ask(sock, replay, 0, -1, timeout_s).header.meta)
    finally:
        sock.close()


def subscribe(events: str = DEFAULT_EVENTS, replay: str = DEFAULT_REPLAY, *, types: Iterable[str] = (),
              streams: Iterable[str] = (), from_seq: int | dict | None = None, idle_timeout_s: float | None = None,
              ctx: zmq.Context | None = None, curve: CurveConfig | None = None) -> Subscription:
    """Events from a running fes-live, in sequence order, gaps filled by replay.

    types / streams: keep only these event types / stream ids (empty: all). from_seq: start with the journal from
    this sequence number (e.g. the last one a previous run saw + 1; with several publishers an int starts each, a
    {lane: seq} dict each at its own); None: from the first live event.
    idle_timeout_s: stop when no wanted event arrived for this long (None: run until the caller stops iterating).
    curve: CurveZMQ client keys (needed for tcp endpoints off loopback, see stream/auth.py).
    """
    return Subscription(events, replay, types=types, streams=streams, from_seq=from_seq,
                        idle_timeout_s=idle_timeout_s, ctx=ctx, curve=curve)
