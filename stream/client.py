"""Subscribe to fes-live events from Python: `for event in subscribe(): ...`.

The subscription takes every event off the PUB socket (filters are applied here, not by topic, so the sequence
numbers stay gapless to check). When a number is skipped (the subscriber was slow, reconnecting, or just joined
with `from_seq`), the missing events are fetched from the detector's replay endpoint and yielded first, in order.
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


def fetch(replay: str, first: int, last: int | None = None, *, timeout_s: float = 3.0,
          ctx: zmq.Context | None = None, curve: CurveConfig | None = None) -> tuple[list[dict], int]:
    """Events first..last (None: up to the newest) from a replay endpoint, and the publisher's next seq.
    `curve`: keys when the endpoint is tcp off loopback (stream/auth.py)."""
    ctx = ctx or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_BYTES["replay"])
    apply_client(sock, replay, curve or CurveConfig())
    sock.connect(replay)
    out: list[dict] = []
    try:
        while True:
            msg = _ask(sock, replay, first, last, timeout_s)
            batch, next_seq = msg.arrays["events"], int(msg.header.meta["next_seq"])
            out += batch
            end = next_seq - 1 if last is None else min(last, next_seq - 1)
            if not batch or batch[-1]["seq"] >= end:
                return out, next_seq
            first = batch[-1]["seq"] + 1
    finally:
        sock.close()


def _ask(sock: zmq.Socket, replay: str, first: int, last: int | None, timeout_s: float) -> wire.Message:
    """One replay request and its answer (ReplayError when there is none in time, or a refusal)."""
    sock.send_multipart([b"", *replay_request(first, last, REPLAY_MAX)], copy=False)
    if not sock.poll(int(timeout_s * 1000)):
        raise ReplayError(f"no answer from replay endpoint {replay} within {timeout_s:.1f} s")
    frames = sock.recv_multipart(copy=False)
    msg = wire.decode(frames[1:] if len(frames[0].bytes) == 0 else frames)
    if not msg.header.meta.get("ok"):
        raise ReplayError(f"replay refused: {msg.header.meta.get('error')}")
    return msg


class Subscription:
    """Iterable of event dicts, gap-filled by replay. `missed` counts events that could not be recovered."""

    def __init__(self, events: str = DEFAULT_EVENTS, replay: str = DEFAULT_REPLAY, *,
                 types: Iterable[str] = (), streams: Iterable[str] = (), from_seq: int | None = None,
                 idle_timeout_s: float | None = None, ctx: zmq.Context | None = None,
                 curve: CurveConfig | None = None):
        self.events_addr, self.replay_addr = events, replay
        self.curve = curve or CurveConfig()
        self.types, self.streams = set(types), set(streams)
        self.next_seq = from_seq  # the seq we expect next; None until the first event
        self.publisher: str | None = None
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
        self._caught_up = from_seq is None

    def _wanted(self, ev: dict) -> bool:
        return (not self.types or ev["type"] in self.types) and (not self.streams or ev["stream_id"] in self.streams)

    def _fill(self, first: int, last: int | None) -> list[dict]:
        """Replay first..last; events that the endpoint no longer has are counted in `missed`."""
        try:
            got, next_seq = fetch(self.replay_addr, first, last, ctx=self.ctx, curve=self.curve)
        except (ReplayError, wire.BadMessage) as e:
            log.warning("could not replay events %s..%s: %s", first, last, e)
            got, next_seq = [], first
        want_last = (next_seq - 1) if last is None else last
        have = {e["seq"] for e in got}
        self.missed += sum(1 for s in range(first, want_last + 1) if s not in have)
        return got

    def __iter__(self) -> Iterator[dict]:
        try:
            if not self._caught_up:  # from_seq given: everything up to now comes from the replay endpoint
                for ev in self._fill(self.next_seq, None):
                    self.next_seq = ev["seq"] + 1
                    self.publisher = ev["publisher"]
                    if self._wanted(ev):
                        yield ev
                self._caught_up = True
            idle_since = time.monotonic()
            while True:
                if not self.sock.poll(200):
                    if self.idle_timeout_s is not None and time.monotonic() - idle_since > self.idle_timeout_s:
                        return
                    continue
                try:
                    ev = wire.to_event(wire.recv(self.sock))
                    seq = int(ev["seq"])
                except (wire.BadMessage, KeyError, TypeError, ValueError) as e:
                    self.bad_messages += 1
                    log.warning("dropped a bad event message: %s", e)
                    continue
                if self.next_seq is not None and ev.get("publisher") != self.publisher and seq < self.next_seq:
                    log.info("publisher restarted without a journal; numbering starts again at %d", seq)
                    self.next_seq = seq
                self.publisher = ev.get("publisher")
                if self.next_seq is not None and seq < self.next_seq:
                    continue  # already yielded (from a replay)
                if self.next_seq is not None and seq > self.next_seq:
                    for old in self._fill(self.next_seq, seq - 1):
                        if self._wanted(old):
                            yield old
                self.next_seq = seq + 1
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
    """The replay endpoint's answer to a request for no events: {"next_seq", "publisher"} of the detector there."""
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
              streams: Iterable[str] = (), from_seq: int | None = None, idle_timeout_s: float | None = None,
              ctx: zmq.Context | None = None, curve: CurveConfig | None = None) -> Subscription:
    """Events from a running fes-live, in sequence order, gaps filled by replay.

    types / streams: keep only these event types / stream ids (empty: all). from_seq: start with the journal from
    this sequence number (e.g. the last one a previous run saw + 1); None: from the first live event.
    idle_timeout_s: stop when no wanted event arrived for this long (None: run until the caller stops iterating).
    curve: CurveZMQ client keys (needed for tcp endpoints off loopback, see stream/auth.py).
    """
    return Subscription(events, replay, types=types, streams=streams, from_seq=from_seq,
                        idle_timeout_s=idle_timeout_s, ctx=ctx, curve=curve)
