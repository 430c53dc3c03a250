"""Events: what the detector tells the world, numbered, journaled and replayable.

Every event is a JSON object `{schema, seq, type, stream_id, wall_s, publisher, data}` described by
`stream/event.schema.json` (checked before it leaves). `seq` is gapless per publisher, so a subscriber sees at once
when it missed something; it then asks the replay endpoint (a ROUTER socket next to the PUB socket, served from
memory and, for older events, from the JSONL journal). With a journal the numbering continues after a restart.
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from collections import deque
from functools import lru_cache
from pathlib import Path
from typing import Any

import zmq

from fes_live.stream import wire

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("event.schema.json")
EVENT_TYPES = ("expression.onset", "expression.cancel", "expression", "intensity", "face", "stream", "stats",
               "supervisor")
PIPELINE_STREAM = "pipeline"  # stream_id of events about the whole pipeline (supervisor, detector-wide stats)
REPLAY_MAX = 1000  # events per replay answer; clients ask again for more


class EventError(ValueError):
    """An event that does not match the schema (a bug in the publisher, never user input)."""


@lru_cache(maxsize=1)
def _validator():
    import jsonschema
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(event: dict) -> None:
    """Raise EventError naming the first problem when `event` does not match stream/event.schema.json."""
    err = next(iter(_validator().iter_errors(event)), None)
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(top)"
        raise EventError(f"event {event.get('type')!r} seq {event.get('seq')}: {where}: {err.message}")


class Journal:
    """Append-only JSONL file of every published event, one line each, flushed per line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.next_seq = self._last_seq() + 1
        self._f = open(self.path, "a", encoding="utf-8")

    def _last_seq(self) -> int:
        """Sequence number of the last complete line (-1 for a new file); a torn last line is ignored."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return -1
        with open(self.path, "rb") as f:
            f.seek(max(0, self.path.stat().st_size - 65536))
            lines = f.read().splitlines()
        for line in reversed(lines):
            try:
                return int(json.loads(line)["seq"])
            except (ValueError, KeyError, TypeError):
                continue
        return -1

    def append(self, event: dict) -> None:
        self._f.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._f.flush()

    def read(self, first: int, last: int, limit: int) -> list[dict]:
        """Events with first <= seq <= last from the file (for what memory no longer holds)."""
        out = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if first <= ev.get("seq", -1) <= last:
                    out.append(ev)
                    if len(out) >= limit:
                        break
        return out

    def close(self) -> None:
        self._f.close()


class EventPublisher:
    """PUB socket + replay ROUTER + journal. One per detector process; `seq` is this object's counter."""

    def __init__(self, ctx: zmq.Context, events_addr: str, replay_addr: str, journal: str = "",
                 memory: int = 100_000, prepare=None):
        """`prepare(socket, "events" | "replay")`, when given, sets options (limits, CURVE) before each bind."""
        self.publisher = secrets.token_hex(4)
        self.journal = Journal(journal) if journal else None
        self.seq = self.journal.next_seq if self.journal else 0
        self.memory: deque[dict] = deque(maxlen=memory)
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        self.pub.setsockopt(zmq.LINGER, 2000)
        self.replay = ctx.socket(zmq.ROUTER)
        self.replay.setsockopt(zmq.LINGER, 0)
        if prepare is not None:
            prepare(self.pub, "events")
            prepare(self.replay, "replay")
        self.pub.bind(events_addr)
        self.replay.bind(replay_addr)
        self.bad_requests = 0
        log.info("events on %s, replay on %s, journal %s, first seq %d", events_addr, replay_addr,
                 journal or "(memory only)", self.seq)

    def publish(self, type: str, stream_id: str, data: dict[str, Any]) -> dict:
        """Number, check, journal and send one event; returns it."""
        event = {"schema": SCHEMA_VERSION, "seq": self.seq, "type": type, "stream_id": stream_id,
                 "wall_s": time.time(), "publisher": self.publisher, "data": data}
        validate(event)
        self.seq += 1
        self.memory.append(event)
        if self.journal:
            self.journal.append(event)
        try:
            self.pub.send_multipart(wire.event_message(event), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:  # a PUB socket drops for slow subscribers itself; replay covers them
            pass
        return event

    def events_between(self, first: int, last: int, limit: int = REPLAY_MAX) -> list[dict]:
        """Published events with first <= seq <= last (at most `limit`), from memory or the journal."""
        last = min(last, self.seq - 1)
        if first > last:
            return []
        if self.memory and first >= self.memory[0]["seq"]:
            start = first - self.memory[0]["seq"]
            return [self.memory[i] for i in range(start, min(len(self.memory), start + (last - first) + 1, start + limit))]
        if self.journal:
            return self.journal.read(first, last, limit)
        return [e for e in self.memory if first <= e["seq"] <= last][:limit]

    def serve_replay(self, limit: int = 32) -> int:
        """Answer up to `limit` pending replay requests without blocking (a flood of requests must not hold the
        caller's loop; the rest wait for the next call); returns how many were served."""
        served = 0
        while served < limit:
            try:  # identity, optional empty delimiter, then the message
                frames = wire.recv_frames(self.replay, zmq.NOBLOCK, max_parts=2 + wire.MAX_PARTS)
            except zmq.Again:
                return served
            except wire.BadMessage as e:  # too many frames: drained, but the identity is not trusted for an answer
                self.bad_requests += 1
                served += 1
                if self.bad_requests <= 10 or self.bad_requests % 1000 == 0:
                    log.warning("bad replay request (%d so far): %s", self.bad_requests, e)
                continue
            ident, rest = frames[0], frames[1:]
            envelope = []
            if rest and len(rest[0].bytes) == 0:  # REQ/DEALER-with-delimiter framing
                envelope, rest = [b""], rest[1:]
            try:
                req = parse_replay_request(rest)
                last = self.seq - 1 if req.last is None else req.last
                events = self.events_between(req.first, last, req.limit)
                meta = {"ok": True, "next_seq": self.seq, "publisher": self.publisher}
            except wire.BadMessage as e:
                self.bad_requests += 1
                if self.bad_requests <= 10 or self.bad_requests % 1000 == 0:
                    log.warning("bad replay request (%d so far): %s", self.bad_requests, e)
                events, meta = [], {"ok": False, "error": str(e)[:200], "next_seq": self.seq,
                                    "publisher": self.publisher}
            reply = wire.encode("replay", wire.Header("replay", PIPELINE_STREAM, meta=meta), {"events": events})
            self.replay.send_multipart([ident, *envelope, *reply], copy=False)
            served += 1
        return served

    def close(self) -> None:
        self.pub.close()
        self.replay.close()
        if self.journal:
            self.journal.close()


def parse_replay_request(frames: list) -> wire.ReplayRequest:
    """The events a replay request asks for; BadMessage (only) for anything that is not a valid request."""
    return wire.to_replay_request(wire.decode(frames), REPLAY_MAX)


def replay_request(first: int, last: int | None = None, limit: int = REPLAY_MAX) -> list:
    """Frames of a replay request for events first..last (None: up to the newest)."""
    meta = {"from": int(first), "to": None if last is None else int(last), "max": int(limit)}
    return wire.encode("replay", wire.Header("replay", PIPELINE_STREAM, meta=meta))


def format_event(ev: dict) -> str:
    """One human-readable line for `fes-events` and the examples."""
    d, head = ev["data"], f"#{ev['seq']:<6} {time.strftime('%H:%M:%S', time.localtime(ev['wall_s']))} " \
                          f"{ev['stream_id']:<12} {ev['type']:<17}"
    t = ev["type"]
    if t == "expression":
        emo = d["emotion"] or "-"
        return (f"{head} track {d['track']} {d['kind']} {emo} frames {d['onset']['frame']}-{d['apex']['frame']}-{d['offset']['frame']}"
                f" ({d['onset']['pts_s']:.2f}-{d['offset']['pts_s']:.2f} s) score {d['score']:.2f}"
                f" peak {d['peak_intensity']:.2f} [{'+'.join(d['models'])}]")
    if t == "expression.onset":
        return f"{head} track {d['track']} at frame {d['onset']['frame']} ({d['onset']['pts_s']:.2f} s) " \
               f"intensity {d['intensity']:.2f}"
    if t == "expression.cancel":
        return f"{head} track {d['track']}"
    if t == "intensity":
        return f"{head} frames {d['frames'][0]}-{d['frames'][-1]} max {max(d['values']):.2f}"
    if t == "face":
        return f"{head} {d['state']} at frame {d['frame']}"
    if t == "stream":
        return f"{head} {d['status']} {d.get('source', '')} {d['message']}".rstrip()
    if t == "stats":
        lat = "-" if d["latency_ms_p50"] is None else f"{d['latency_ms_p50']:.0f}/{d['latency_ms_p99']:.0f} ms"
        return (f"{head} in {d['fps_in']:.1f} fps out {d['fps_out']:.1f} fps latency p50/p99 {lat} "
                f"drops {d['dropped_ingest']}+{d['dropped_detector']} queue {d['queue']}")
    if t == "supervisor":
        return f"{head} {d['child']} {d['status']} (exit {d['exitcode']}, restarts {d['restarts']})"
    return f"{head} {json.dumps(d)}"

