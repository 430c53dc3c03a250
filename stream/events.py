"""Events: what the detector tells the world, numbered, journaled and replayable.

Every event is a JSON object `{schema, seq, type, stream_id, wall_s, publisher, data}` described by
`stream/event.schema.json` (checked before it leaves). `seq` is gapless per publisher, so a subscriber sees at once
when it missed something; it then asks the replay endpoint (a ROUTER socket next to the PUB socket, served by its
own thread from memory and, for older events, from the journal). With a journal the numbering continues after a
restart.

The journal is one SQLite database in WAL mode (`Journal`): table `events(seq INTEGER PRIMARY KEY, time, type,
stream, json)` and table `state(stream PRIMARY KEY, time, json)` (what a stream needs to continue after a restart,
never published). Events are committed before they are sent (`EventPublisher.flush`, once per loop turn), so every
event a subscriber has seen is in the journal unless the journal itself was failing, and a crash loses nothing that
was committed. A failing journal (disk full, read-only, removed) is announced as a `stream` error event of stream
`pipeline` and retried; publishing goes on from memory meanwhile.
"""
from __future__ import annotations

import json
import logging
import math
import os
import secrets
import sqlite3
import threading
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
REPLAY_ANSWER_BYTES = 1 << 20  # an answer stops adding events past this size (it always holds at least one)
REPLAY_IN_FLIGHT = 4  # replay answers queued per client (ROUTER SNDHWM); an answer beyond it is dropped
MAX_EVENT_BYTES = 64 << 10  # an event larger than this is journaled and replayable but not sent on PUB
SUBSCRIBER_BUFFER_BYTES = 64 << 20  # per subscriber: PUB SNDHWM = this // MAX_EVENT_BYTES messages
MEMORY_BYTES = 32 << 20  # events kept in memory for replay (and as the backlog of a failing journal)
JOURNAL_RETRY_S = 2.0  # a failing journal is retried this often
JOURNAL_CHECK_S = 5.0  # retention and "is the file still there" checks


class EventError(ValueError):
    """An event that does not match the schema (a bug in the publisher, never user input)."""


class JournalError(RuntimeError):
    """The journal cannot be opened or written (the publisher reports it and goes on from memory)."""


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


# a row of the events table and of the in-memory buffer: (seq, time, type, stream, json bytes)
Row = tuple[int, float, str, str, bytes]

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, time REAL NOT NULL, type TEXT NOT NULL,
                                   stream TEXT NOT NULL, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (stream TEXT PRIMARY KEY, time REAL NOT NULL, json TEXT NOT NULL);
"""


def journal_path(path: str | Path) -> Path:
    """The SQLite file for a configured journal path: `X.jsonl` (the old format's name) means `X.sqlite`."""
    p = Path(path)
    return p.with_suffix(".sqlite") if p.suffix == ".jsonl" else p


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


class Journal:
    """The SQLite (WAL) event journal of one publisher: append in transactions, retain by size or age, seek by seq.

    Opening a JSONL journal of an earlier version migrates it: its complete lines go into the database (a torn last
    line is skipped) and the old file is renamed `*.migrated`. Not thread-safe: one writer thread; readers open
    their own connection (`reader`).
    """

    def __init__(self, path: str | Path, max_bytes: int = 0, max_age_s: float = 0.0):
        self.configured = Path(path)
        self.path = journal_path(path)
        self.max_bytes, self.max_age_s = int(max_bytes), float(max_age_s)
        moved = []
        try:
            for p in {self.configured, self.path}:  # an old JSONL journal (by name or content): move it aside
                if p.is_file() and p.stat().st_size and not _is_sqlite(p):
                    aside = p.with_name(p.name + ".migrated")
                    os.replace(p, aside)
                    moved.append(aside)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new file
            mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(f"{self.path}: SQLite refused WAL mode ({mode})")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash loses no commit
            self.db.executescript(_SCHEMA_SQL)
            self.inode = os.stat(self.path).st_ino
            for aside in moved:  # (after the tables exist; the import is one transaction)
                n = self._import_jsonl(aside)
                log.warning("migrated %d events of the JSONL journal %s into %s (old file kept as %s)",
                            n, aside.with_suffix(""), self.path, aside)
            self.last_seq = self._max_seq()
        except (sqlite3.Error, OSError) as e:
            if hasattr(self, "db"):
                self.db.close()
            raise JournalError(f"cannot open journal {self.path}: {e}") from e

    def _max_seq(self) -> int:
        row = self.db.execute("SELECT max(seq) FROM events").fetchone()
        return -1 if row[0] is None else int(row[0])

    def _import_jsonl(self, path: Path) -> int:
        rows = []
        with open(path, "rb") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                    rows.append((int(ev["seq"]), float(ev["wall_s"]), str(ev["type"]), str(ev["stream_id"]),
                                 json.dumps(ev, separators=(",", ":"))))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn or garbled line
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)", rows)
        return len(rows)

    def append(self, rows: list[Row], states: dict[str, dict] | None = None) -> None:
        """Commit `rows` (and stream states) in one transaction; JournalError (nothing committed) on failure."""
        if not rows and not states:
            return
        try:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?)",
                                [(s, t, ty, st, b.decode()) for s, t, ty, st, b in rows])
            now = time.time()
            self.db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?, ?)",
                                [(k, now, json.dumps(v, separators=(",", ":"))) for k, v in (states or {}).items()])
            self.db.execute("COMMIT")
        except (sqlite3.Error, OSError) as e:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise JournalError(f"cannot write journal {self.path}: {e}") from e
        if rows:
            self.last_seq = max(self.last_seq, rows[-1][0])

    def states(self) -> dict[str, tuple[float, dict]]:
        """Every stream's saved state: {stream: (time saved, state)}."""
        return {k: (t, json.loads(v)) for k, t, v in self.db.execute("SELECT stream, time, json FROM state")}

    def onsets(self) -> tuple[dict[tuple[str, int], int], dict[str, int]]:
        """({(stream, track): onset frame} of onsets with no final or cancel yet, {stream: largest track id})."""
        open_, tracks = {}, {}
        q = ("SELECT stream, type, json_extract(json, '$.data.track'), json_extract(json, '$.data.onset.frame') "
             "FROM events WHERE type IN ('expression.onset', 'expression.cancel', 'expression') ORDER BY seq")
        for stream, type, track, frame in self.db.execute(q):
            if not isinstance(track, int) or track < 0:
                continue
            tracks[stream] = max(tracks.get(stream, -1), track)
            if type == "expression.onset":
                open_[(stream, track)] = int(frame or 0)
            else:
                open_.pop((stream, track), None)
        return open_, tracks

    def check(self) -> None:
        """Retention (delete the oldest rows beyond max_bytes / max_age_s, give the pages back) and a check that
        the file is still the one we write (a removed file or folder would swallow every later write)."""
        try:
            if os.stat(self.path).st_ino != self.inode:
                raise JournalError(f"journal {self.path} was replaced by another file")
        except FileNotFoundError:
            raise JournalError(f"journal {self.path} was removed") from None
        try:
            deleted = 0
            if self.max_age_s > 0:
                row = self.db.execute("SELECT seq FROM events WHERE time >= ? ORDER BY seq LIMIT 1",
                                      (time.time() - self.max_age_s,)).fetchone()
                cut = self.last_seq if row is None else int(row[0])  # the newest row always stays (numbering)
                deleted += self.db.execute("DELETE FROM events WHERE seq < ?", (cut,)).rowcount
            if self.max_bytes > 0:
                page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
                used = (self.db.execute("PRAGMA page_count").fetchone()[0]
                        - self.db.execute("PRAGMA freelist_count").fetchone()[0]) * page_size
                if used > self.max_bytes:
                    n = self.db.execute("SELECT count(*) FROM events").fetchone()[0]
                    k = min(n - 1, math.ceil(n * (1.0 - 0.8 * self.max_bytes / used)))
                    row = self.db.execute("SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?", (k,)).fetchone()
                    if row is not None:
                        deleted += self.db.execute("DELETE FROM events WHERE seq < ?", (int(row[0]),)).rowcount
            if deleted:
                self.db.execute("PRAGMA incremental_vacuum")
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                log.info("journal retention: %d old events deleted", deleted)
        except (sqlite3.Error, OSError) as e:
            raise JournalError(f"journal {self.path}: retention failed: {e}") from e

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error:
            pass


def journal_reader(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to a journal (for the replay thread and for tools)."""
    db = sqlite3.connect(f"file:{journal_path(path)}?mode=ro", uri=True, check_same_thread=False)
    db.execute("PRAGMA query_only=1")
    return db


def read_rows(db: sqlite3.Connection, first: int, last: int, limit: int = REPLAY_MAX,
              max_bytes: int = REPLAY_ANSWER_BYTES) -> list[bytes]:
    """The JSON of journaled events first <= seq <= last, by primary key, at most `limit` / about `max_bytes`."""
    out, size = [], 0
    for (body,) in db.execute("SELECT json FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
                              (int(first), int(last), int(limit))):
        b = body.encode()
        if out and size + len(b) > max_bytes:
            break
        out.append(b)
        size += len(b)
    return out


def read_journal(path: str | Path, first: int = 0, last: int | None = None) -> list[dict]:
    """Every journaled event first..last as dicts (tests, tools; the replay endpoint pages through the same)."""
    db = journal_reader(path)
    try:
        q = "SELECT json FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq"
        return [json.loads(b) for (b,) in db.execute(q, (int(first), (1 << 62) if last is None else int(last)))]
    finally:
        db.close()


def journal_events(path: str | Path) -> list[dict]:
    """`read_journal`, or [] while the journal does not exist yet (for polling it)."""
    return read_journal(path) if journal_path(path).is_file() else []


class ReplayBuffer:
    """The most recent events as JSON bytes, bounded in bytes; shared by the publishing and the replay thread."""

    def __init__(self, max_bytes: int = MEMORY_BYTES):
        self.max_bytes = int(max_bytes)
        self.rows: deque[Row] = deque()
        self.nbytes = 0
        self.lock = threading.Lock()
        self.next_seq = 0  # sent events are < this (set by the publisher after sending)

    def extend(self, rows: list[Row]) -> None:
        with self.lock:
            for row in rows:
                self.rows.append(row)
                self.nbytes += len(row[4]) + 100  # + the row's own overhead, roughly
            while self.rows and self.nbytes > self.max_bytes:
                self.nbytes -= len(self.rows.popleft()[4]) + 100

    @property
    def first_seq(self) -> int | None:
        with self.lock:
            return self.rows[0][0] if self.rows else None

    def since(self, first: int) -> tuple[int | None, list[Row]]:
        """(first seq held, rows with seq >= first)."""
        with self.lock:
            if not self.rows:
                return None, []
            start = self.rows[0][0]
            return start, [self.rows[i] for i in range(max(0, first - start), len(self.rows))]

    def slice(self, first: int, last: int, limit: int, max_bytes: int) -> tuple[bool, list[bytes]]:
        """(True, bodies of first..last) when memory reaches back to `first`, else (False, [])."""
        with self.lock:
            if not self.rows or first < self.rows[0][0]:
                return False, []
            out, size, i = [], 0, first - self.rows[0][0]
            while i < len(self.rows) and len(out) < limit and self.rows[i][0] <= last:
                b = self.rows[i][4]
                if out and size + len(b) > max_bytes:
                    break
                out.append(b)
                size += len(b)
                i += 1
            return True, out

    def __iter__(self):
        """The events held, as dicts (for tests and tools)."""
        with self.lock:
            bodies = [r[4] for r in self.rows]
        return iter([json.loads(b) for b in bodies])

    def __len__(self) -> int:
        return len(self.rows)


def parse_replay_request(frames: list) -> wire.ReplayRequest:
    """The events a replay request asks for; BadMessage (only) for anything that is not a valid request."""
    return wire.to_replay_request(wire.decode(frames), REPLAY_MAX)


def _json_message(topic: str, header: wire.Header, name: str, body: bytes) -> list:
    """The frames `wire.encode(topic, header, {name: json.loads(body)})` would make, from JSON already encoded
    (the events as journaled), so that an answer of 1000 events is never parsed and re-serialised."""
    topic_frame, head = wire.encode(topic, header)
    spec = json.loads(head)
    spec["arrays"] = [{"name": name, "dtype": "json", "shape": [len(body)]}]
    return [topic_frame, json.dumps(spec, separators=(",", ":")).encode(), body]


class ReplayServer:
    """The replay endpoint, served by its own thread (with its own read-only journal connection), so a request for
    old events never stalls the frame loop. Each client may have REPLAY_IN_FLIGHT answers queued; what a client
    does not read beyond that is dropped (counted in `dropped`), so a stuck client costs a bounded amount."""

    def __init__(self, ctx: zmq.Context, addr: str, memory: ReplayBuffer, publisher: str, prepare=None):
        self.memory, self.publisher = memory, publisher
        self.journal_path: Path | None = None  # set by the publisher while its journal works
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, REPLAY_IN_FLIGHT)
        self.sock.setsockopt(zmq.RCVHWM, 64)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full client raises Again instead of a silent drop
        if prepare is not None:
            prepare(self.sock, "replay")
        self.sock.bind(addr)
        self.bad_requests = self.dropped = self.served = 0
        self._db: sqlite3.Connection | None = None
        self._db_path: Path | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="replay", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.sock.poll(100):
                    self.serve()
        finally:
            self.sock.close()
            if self._db is not None:
                self._db.close()

    def _journal_rows(self, first: int, last: int, limit: int) -> list[bytes]:
        path = self.journal_path
        if path is None:
            return []
        try:
            if self._db is None or self._db_path != path:
                if self._db is not None:
                    self._db.close()
                self._db, self._db_path = journal_reader(path), path
            return read_rows(self._db, first, last, limit)
        except sqlite3.Error as e:
            log.warning("replay from the journal failed (memory only): %s", e)
            if self._db is not None:
                self._db.close()
            self._db = None
            return []

    def events_between(self, first: int, last: int, limit: int = REPLAY_MAX) -> list[bytes]:
        """JSON of published events first..last (at most `limit`, about REPLAY_ANSWER_BYTES): memory, else journal."""
        last = min(last, self.memory.next_seq - 1)
        if first > last:
            return []
        ok, bodies = self.memory.slice(first, last, limit, REPLAY_ANSWER_BYTES)
        if ok:
            return bodies
        bodies = self._journal_rows(first, last, limit)
        if not bodies:  # no journal: what memory still has
            start = self.memory.first_seq
            if start is not None and start <= last:
                return self.memory.slice(start, last, limit, REPLAY_ANSWER_BYTES)[1]
        return bodies

    def serve(self) -> int:
        """Answer every pending request without blocking; returns how many were answered."""
        served = 0
        while True:
            try:  # identity, optional empty delimiter, then the message
                frames = wire.recv_frames(self.sock, zmq.NOBLOCK, max_parts=2 + wire.MAX_PARTS)
            except zmq.Again:
                return served
            except wire.BadMessage as e:  # too many frames: drained, but the identity is not trusted for an answer
                self._bad(e)
                continue
            ident, rest = frames[0], frames[1:]
            envelope = []
            if rest and len(rest[0].bytes) == 0:  # REQ/DEALER-with-delimiter framing
                envelope, rest = [b""], rest[1:]
            next_seq = self.memory.next_seq
            try:
                req = parse_replay_request(rest)
                last = next_seq - 1 if req.last is None else min(req.last, next_seq - 1)
                body = b"[" + b",".join(self.events_between(max(0, req.first), last, req.limit)) + b"]"
                meta = {"ok": True, "next_seq": next_seq, "publisher": self.publisher}
            except wire.BadMessage as e:
                self._bad(e)
                body, meta = b"[]", {"ok": False, "error": str(e)[:200], "next_seq": next_seq,
                                     "publisher": self.publisher}
            reply = _json_message("replay", wire.Header("replay", PIPELINE_STREAM, meta=meta), "events", body)
            sent = wire.send_to_peer(self.sock, [ident, *envelope, *reply])
            if sent == "full":  # this client has REPLAY_IN_FLIGHT unread answers: it gets no more
                self.dropped += 1
            elif sent == "gone":
                log.debug("replay answer not sent: the client has gone")
            served += 1
            self.served += 1

    def _bad(self, e: Exception) -> None:
        self.bad_requests += 1
        if self.bad_requests <= 10 or self.bad_requests % 1000 == 0:
            log.warning("bad replay request (%d so far): %s", self.bad_requests, e)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5.0)


class EventPublisher:
    """PUB socket + replay endpoint (own thread) + journal + in-memory buffer. One per detector process.

    `publish` numbers and checks an event; `flush` journals every event published since the last flush in one
    transaction and only then sends them (with `autoflush`, the default, `publish` flushes at once; the detector
    flushes once per loop turn). Memory: the replay buffer holds `memory_bytes`; each subscriber that does not read
    costs at most `subscriber_buffer_bytes` (PUB SNDHWM = that // MAX_EVENT_BYTES messages, larger events go out by
    replay only); each replay client at most REPLAY_IN_FLIGHT answers of about REPLAY_ANSWER_BYTES.
    """

    def __init__(self, ctx: zmq.Context, events_addr: str, replay_addr: str, journal: str = "",
                 memory_bytes: int = MEMORY_BYTES, *, journal_max_bytes: int = 0, journal_max_age_s: float = 0.0,
                 subscriber_buffer_bytes: int = SUBSCRIBER_BUFFER_BYTES, autoflush: bool = True, prepare=None,
                 run_token: str = ""):
        """`prepare(socket, "events" | "replay")`, when given, sets options (limits, CURVE) before each bind;
        `run_token` prefixes the publisher id (`fes-live run` checks that the detector answering is its own)."""
        self.publisher = f"{run_token}-{secrets.token_hex(4)}" if run_token else secrets.token_hex(4)
        self.autoflush = autoflush
        self.memory = ReplayBuffer(memory_bytes)
        self.pending: list[tuple[Row, list]] = []  # published, not yet journaled and sent: (row, wire frames)
        self.states: dict[str, dict] = {}  # stream states to commit with the next flush
        self.journal_file = journal
        self._journal_limits = (journal_max_bytes, journal_max_age_s)
        self.journal: Journal | None = None
        self.journal_error: str | None = None  # the current failure, None while the journal works
        self._retry_at = self._check_at = 0.0
        self.unjournaled = 0  # events that left memory before a failing journal could take them (this failure)
        self.oversized = 0  # events too large for PUB (replay only)
        self.saved_states: dict[str, tuple[float, dict]] = {}
        if journal:
            self._open_journal()
            if self.journal is not None:
                self.saved_states = self.journal.states()
        self.seq = self.journal.last_seq + 1 if self.journal else 0
        self.memory.next_seq = self.seq
        self.pub = ctx.socket(zmq.PUB)
        self.pub_hwm = max(1, int(subscriber_buffer_bytes) // MAX_EVENT_BYTES)
        self.pub.setsockopt(zmq.SNDHWM, self.pub_hwm)
        self.pub.setsockopt(zmq.LINGER, 2000)
        if prepare is not None:
            prepare(self.pub, "events")
        self.pub.bind(events_addr)
        self.replay_server = ReplayServer(ctx, replay_addr, self.memory, self.publisher, prepare)
        self.replay_server.journal_path = self.journal.path if self.journal else None
        if self.journal_error is not None:  # the journal could not be opened: say so in the first event
            self._announce("error", f"journal: {self.journal_error}; events are not journaled until it works")
            self.flush()
        log.info("events on %s, replay on %s, journal %s, first seq %d", events_addr, replay_addr,
                 (self.journal.path if self.journal else journal) or "(memory only)", self.seq)

    @property
    def bad_requests(self) -> int:
        return self.replay_server.bad_requests

    # ------------------------------------------------------------------ journal
    def _open_journal(self) -> None:
        try:
            self.journal = Journal(self.journal_file, *self._journal_limits)
            self._check_at = time.monotonic() + JOURNAL_CHECK_S
        except JournalError as e:
            self._journal_failed(e)

    def _journal_failed(self, e: Exception) -> None:
        if self.journal is not None:
            self.journal.close()
        self.journal = None
        self._retry_at = time.monotonic() + JOURNAL_RETRY_S
        if self.journal_error is None:
            self.journal_error = str(e)
            log.error("%s; events go on from memory (replay covers the last %d MB), retrying every %.0f s",
                      e, self.memory.max_bytes >> 20, JOURNAL_RETRY_S)
            if hasattr(self, "pub"):  # (not while still constructing: the event follows with the first flush)
                self._announce("error", f"journal: {e}; events are not journaled until it works again")

    def _announce(self, status: str, message: str) -> None:
        self.publish("stream", PIPELINE_STREAM, {"status": status, "message": message}, _flush=False)

    def _journal_write(self, rows: list[Row]) -> None:
        """Commit `rows` and the pending stream states; after a failure first the backlog memory still holds."""
        if not self.journal_file:
            self.states = {}
            return
        now = time.monotonic()
        if self.journal is None:
            if now < self._retry_at:
                return
            self._open_journal()
            if self.journal is None:
                return
        try:
            if now >= self._check_at:
                self._check_at = now + JOURNAL_CHECK_S
                self.journal.check()
            want = self.journal.last_seq + 1
            if rows and rows[0][0] > want:  # events published while the journal failed
                _, held = self.memory.since(want)
                backlog = [r for r in held if r[0] < rows[0][0]]
                self.unjournaled += (backlog[0][0] if backlog else rows[0][0]) - want
                rows = backlog + rows
            self.journal.append(rows, self.states)
            self.states = {}
        except JournalError as e:
            self._journal_failed(e)
            return
        self.replay_server.journal_path = self.journal.path
        if self.journal_error is not None:
            lost = f" ({self.unjournaled} events are missing from it)" if self.unjournaled else " (nothing lost)"
            log.warning("journal %s works again%s", self.journal.path, lost)
            self.journal_error, self.unjournaled = None, 0
            self._announce("started", f"journal: writing {self.journal.path} again{lost}")

    def save_state(self, stream: str, state: dict) -> None:
        """Keep a stream's state (JSON-able) for a restarted detector; committed with the next flush."""
        self.states[stream] = state
        self.saved_states[stream] = (time.time(), state)

    # ------------------------------------------------------------------ events
    def publish(self, type: str, stream_id: str, data: dict[str, Any], _flush: bool = True) -> dict:
        """Number and check one event; it is journaled and sent with the next `flush`. Returns it."""
        event = {"schema": SCHEMA_VERSION, "seq": self.seq, "type": type, "stream_id": stream_id,
                 "wall_s": time.time(), "publisher": self.publisher, "data": data}
        validate(event)
        self.seq += 1
        frames = wire.event_message(event)
        row = (event["seq"], event["wall_s"], type, stream_id, frames[-1])
        self.memory.extend([row])  # (replay serves it only once it is sent: memory.next_seq)
        self.pending.append((row, frames))
        if self.autoflush and _flush:
            self.flush()
        return event

    def flush(self) -> None:
        """Journal what was published since the last flush (one transaction), then send it on PUB."""
        while self.pending:
            batch, self.pending = self.pending, []
            rows = [row for row, _ in batch]
            self._journal_write(rows)  # (may add an event about the journal to self.pending)
            for row, frames in batch:
                if len(row[4]) > MAX_EVENT_BYTES:  # keeps a stuck subscriber's cost bounded; replay has it
                    self.oversized += 1
                else:
                    try:
                        self.pub.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                    except zmq.Again:  # a PUB socket drops for slow subscribers itself; replay covers them
                        pass
                self.memory.next_seq = row[0] + 1
        if self.states:
            self._journal_write([])

    def events_between(self, first: int, last: int, limit: int = REPLAY_MAX) -> list[dict]:
        """Published events with first <= seq <= last (at most `limit`), from memory or the journal."""
        return json.loads(b"[" + b",".join(self.replay_server.events_between(first, last, limit)) + b"]")

    def close(self) -> None:
        self.flush()
        self.replay_server.close()
        self.pub.close()
        if self.journal:
            self.journal.close()


def replay_request(first: int, last: int | None = None, limit: int = REPLAY_MAX, publisher: str = "") -> list:
    """Frames of a replay request for events first..last (None: up to the newest); `publisher`: the lane asked for
    at a front of several detector workers (stream/workers.py), ignored by a single detector."""
    meta = {"from": int(first), "to": None if last is None else int(last), "max": int(limit)}
    if publisher:
        meta["publisher"] = publisher
    return wire.encode("replay", wire.Header("replay", PIPELINE_STREAM, meta=meta))


def format_event(ev: dict) -> str:
    """One human-readable line for `fes-events` and the examples."""
    d, head = ev["data"], f"#{ev['seq']:<6} {time.strftime('%H:%M:%S', time.localtime(ev['wall_s']))} " \
                          f"{ev['stream_id']:<12} {ev['type']:<17}"
    t = ev["type"]
    if t == "expression":
        emo = d["emotion"] or "-"
        level = f" level {d['peak_level']:.2f}" if "peak_level" in d else ""
        return (f"{head} track {d['track']} {d['kind']} {emo} frames {d['onset']['frame']}-{d['apex']['frame']}-{d['offset']['frame']}"
                f" ({d['onset']['pts_s']:.2f}-{d['offset']['pts_s']:.2f} s) score {d['score']:.2f}"
                f" peak {d['peak_intensity']:.2f}{level} [{'+'.join(d['models'])}]")
    if t == "expression.onset":
        return f"{head} track {d['track']} at frame {d['onset']['frame']} ({d['onset']['pts_s']:.2f} s) " \
               f"intensity {d['intensity']:.2f}"
    if t == "expression.cancel":
        return f"{head} track {d['track']}"
    if t == "intensity":
        level = f" level max {max(d['levels']):.2f}" if d.get("levels") else ""
        return f"{head} frames {d['frames'][0]}-{d['frames'][-1]} max {max(d['values']):.2f}{level}"
    if t == "face":
        return f"{head} {d['state']} at frame {d['frame']}"
    if t == "stream":
        return f"{head} {d['status']} {d.get('source', '')} {d['message']}".rstrip()
    if t == "stats":
        lat = "-" if d["latency_ms_p50"] is None else f"{d['latency_ms_p50']:.0f}/{d['latency_ms_p99']:.0f} ms"
        spotted = f" spotted at {d['spot_fps']:.1f} fps" if "spot_fps" in d else ""
        return (f"{head} in {d['fps_in']:.1f} fps out {d['fps_out']:.1f} fps{spotted} latency p50/p99 {lat} "
                f"drops {d['dropped_ingest']}+{d['dropped_detector']} queue {d['queue']}")
    if t == "supervisor":
        return f"{head} {d['child']} {d['status']} (exit {d['exitcode']}, restarts {d['restarts']})"
    return f"{head} {json.dumps(d)}"

