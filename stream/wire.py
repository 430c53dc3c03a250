"""The one codec for every ZeroMQ endpoint of fes-live.

A message is `[topic, header, *buffers]`: the topic (UTF-8, first frame so SUB sockets can filter on it), a small
versioned JSON header, and one raw buffer per array named in the header (`{name, dtype, shape}`). Arrays are sent
with `copy=False` and received as `np.frombuffer` views of the ZeroMQ frame, so a 224x224 crop is never copied by
the codec. A buffer with dtype "json" holds UTF-8 JSON (the body of an event).

Everything a peer sends is validated here, at decode time, before any other code sees it: every header field
(type, finite, bounded), every array spec (dtype from an allow-list, at most MAX_DIMS bounded dimensions, byte
count equal to the buffer's, a per-kind size cap) and every kind's `meta` (known keys only, each type-checked and
bounded). Anything wrong raises `BadMessage` and nothing else; receivers count it, log it and keep going. JSON goes
out as standard JSON only (no NaN / Infinity), and comes in the same way (`1e400` is a BadMessage, not inf).

Payload kinds:
- `features` ingest -> detector: one frame's `FrameFeatures` (geometry, roi_flow, optional crop) + face state
  ("found" on a frame whose primary face is not the previous frame's: its `new_face`).
- `preview`  ingest -> viewer: a downscaled JPEG of the frame, the primary face's landmarks and box (preview pixels).
- `control`  ingest -> detector (stream started / ended / error) and supervisor -> detector (a child restarted).
- `event`    detector -> subscribers: one event dict (see stream/events.py and stream/event.schema.json).
- `replay`   client <-> detector's replay endpoint: a request (meta: from, to, max, and at a workers' front the
  publisher lane) and its answer (a JSON list).
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

VERSION = 1
KINDS = ("features", "preview", "control", "event", "replay")
DTYPES = ("uint8", "int32", "int64", "float32", "float64", "bool", "json")
HEADER_KEYS = {"v", "kind", "stream_id", "frame_index", "pts_s", "wall_s", "face_state", "meta", "arrays"}
FACE_STATES = ("found", "tracked", "lost", "none")
CONTROL_STATUSES = ("started", "ended", "error", "restarted")
SUPERVISOR_NOTES = ("restarted", "gave_up")

# Bounds of a legal message. JSON integers stay below 2**53 so that every consumer (JavaScript too) reads them
# exactly; times are Unix seconds (wall) or stream seconds (pts).
MAX_INT = 2**53 - 1
MAX_TOPIC_BYTES = 256
MAX_HEADER_BYTES = 16384
MAX_STREAM_ID = 128
STREAM_ID = re.compile(r"[^/\s]{1,128}")  # as in stream/event.schema.json: no '/', no whitespace
MAX_TEXT = 4096  # control messages' free text (source descriptions, error messages)
MAX_ARRAYS = 4
MAX_DIMS = 4
MAX_DIM = 1 << 26
MAX_FPS = 1000.0
MAX_PTS_S = 1e9  # ~31 years of stream time
MAX_WALL_S = 1e10  # Unix time until the year 2286
MAX_PIXELS = 1 << 16  # preview width / height, box coordinates
# Largest legal sum of buffer bytes per kind (a features message with a 224x224 crop is ~151 KB); `limit_receive`
# sets ZeroMQ's MAXMSGSIZE (a per-frame limit: a larger frame disconnects its peer) from these.
MAX_BYTES = {"features": 1 << 18, "control": 0, "preview": 1 << 22, "event": 1 << 20, "replay": 1 << 26}
MAX_PARTS = 2 + MAX_ARRAYS  # topic, header, buffers
MAX_LANES = 64  # publishers behind one replay front (detector workers)


class BadMessage(ValueError):
    """A message that is not a valid fes-live wire message; count it and drop it."""


@dataclass(frozen=True)
class Header:
    kind: str
    stream_id: str
    frame_index: int = -1
    pts_s: float = 0.0  # source timestamp of the frame
    wall_s: float = 0.0  # capture wall-clock time of the frame (time.time())
    face_state: str = "none"
    meta: dict = field(default_factory=dict)  # small kind-specific JSON (counters, box, status...)


@dataclass(frozen=True)
class Message:
    topic: str
    header: Header
    arrays: dict[str, Any]  # name -> np.ndarray (read-only view of the frame), or a JSON value for dtype "json"


def dumps(value: Any) -> bytes:
    """Standard JSON (compact, UTF-8); ValueError on NaN / Infinity instead of writing what JSON.parse rejects."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def encode(topic: str, header: Header, arrays: dict[str, Any] | None = None) -> list:
    """Frames ready for `socket.send_multipart(frames, copy=False)`."""
    specs, buffers = [], []
    for name, value in (arrays or {}).items():
        if isinstance(value, np.ndarray):
            a = np.ascontiguousarray(value)
            if a.dtype.name not in DTYPES:
                raise ValueError(f"array {name!r}: dtype {a.dtype} cannot go on the wire (allowed: {DTYPES})")
            specs.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape)})
            buffers.append(a.data if a.size else b"")
        else:
            body = dumps(value)
            specs.append({"name": name, "dtype": "json", "shape": [len(body)]})
            buffers.append(body)
    head = {"v": VERSION, "kind": header.kind, "stream_id": header.stream_id, "frame_index": int(header.frame_index),
            "pts_s": float(header.pts_s), "wall_s": float(header.wall_s), "face_state": header.face_state,
            "meta": header.meta, "arrays": specs}
    return [topic.encode(), dumps(head), *buffers]


def _buffer(frame) -> memoryview:
    if isinstance(frame, zmq.Frame):
        return frame.buffer
    return memoryview(frame)


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise BadMessage(what)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadMessage(f"number {text[:20]!r} is out of range")
    return value


def _no_constant(name: str):
    raise BadMessage(f"{name} is not standard JSON")


def loads(data) -> Any:
    """Strict JSON: no NaN / Infinity, no number that overflows a float, no nesting beyond the interpreter's limit."""
    try:
        return json.loads(bytes(data), parse_float=_finite_float, parse_constant=_no_constant)
    except BadMessage:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, int too long, too deep
        raise BadMessage(f"not JSON ({type(e).__name__})") from None


# ---------------------------------------------------------------- field checks (raise BadMessage)

def check_int(value: Any, lo: int, hi: int, what: str) -> int:
    _check(type(value) is int and lo <= value <= hi, f"{what} must be an integer in [{lo}, {hi}], got {value!r:.40}")
    return value


def check_number(value: Any, lo: float, hi: float, what: str) -> float:
    _check(type(value) in (int, float) and math.isfinite(value) and lo <= value <= hi,
           f"{what} must be a finite number in [{lo:g}, {hi:g}], got {value!r:.40}")
    return float(value)


def check_text(value: Any, what: str, limit: int = MAX_TEXT) -> str:
    _check(isinstance(value, str) and len(value) <= limit, f"{what} must be a string of <= {limit} characters")
    return value


def check_stream_id(value: Any) -> str:
    _check(isinstance(value, str) and STREAM_ID.fullmatch(value) is not None,
           f"stream id {value!r:.40} must be 1-{MAX_STREAM_ID} characters without '/' or whitespace")
    return value


def _meta_keys(meta: dict, allowed: set[str], required: set[str], what: str) -> None:
    _check(set(meta) <= allowed, f"{what}: unknown meta key(s) {sorted(set(meta) - allowed)[:5]}")
    _check(required <= set(meta), f"{what}: meta lacks {sorted(required - set(meta))}")


def _features_meta(m: dict) -> None:
    _meta_keys(m, {"face_present", "dropped"}, {"face_present"}, "features")
    _check(type(m["face_present"]) is bool, "meta.face_present must be true or false")
    if "dropped" in m:
        check_int(m["dropped"], 0, MAX_INT, "meta.dropped")


def _preview_meta(m: dict) -> None:
    _meta_keys(m, {"box", "width", "height"}, {"box", "width", "height"}, "preview")
    box = m["box"]
    _check(box is None or (isinstance(box, list) and len(box) == 4), "meta.box must be null or 4 numbers")
    for v in box or ():
        check_number(v, -MAX_PIXELS, MAX_PIXELS, "meta.box")
    check_int(m["width"], 1, MAX_PIXELS, "meta.width")
    check_int(m["height"], 1, MAX_PIXELS, "meta.height")


_CONTROL_KEYS = {"started": {"source", "fps", "lossless"}, "ended": {"message", "source", "frames", "dropped"},
                 "error": {"message", "source", "frames", "dropped"},
                 "restarted": {"child", "note", "exitcode", "restarts", "note_id"}}


def _control_meta(m: dict) -> None:
    status = m.get("status")
    _check(status in CONTROL_STATUSES, f"control status {status!r:.40} not in {CONTROL_STATUSES}")
    _meta_keys(m, {"status"} | _CONTROL_KEYS[status], {"status"}, f"control {status}")
    for key in ("source", "message"):
        if key in m:
            check_text(m[key], f"meta.{key}")
    if "fps" in m:  # 0: the source does not know its frame rate
        check_number(m["fps"], 0.0, MAX_FPS, "meta.fps")
    for key in ("frames", "dropped"):
        if key in m:
            check_int(m[key], 0, MAX_INT, f"meta.{key}")
    if "lossless" in m:  # a file ingest that blocks instead of dropping (stream/ingest.py)
        _check(type(m["lossless"]) is bool, "meta.lossless must be true or false")
    if "note_id" in m:  # the supervisor's id of a note, sent again after a detector restart (stream/supervise.py)
        check_text(m["note_id"], "meta.note_id", 64)
    if status == "restarted":
        check_stream_id(m.get("child", "?"))
        _check(m.get("note", "restarted") in SUPERVISOR_NOTES, f"meta.note must be one of {SUPERVISOR_NOTES}")
        if m.get("exitcode") is not None:
            check_int(m["exitcode"], -255, 255, "meta.exitcode")
        check_int(m.get("restarts", 0), 0, 1_000_000, "meta.restarts")


def _event_meta(m: dict) -> None:
    _check(not m, "event: meta must be empty")


def _replay_meta(m: dict) -> None:
    if "ok" in m:  # an answer
        _meta_keys(m, {"ok", "error", "next_seq", "publisher", "publishers"}, {"ok", "next_seq", "publisher"},
                   "replay answer")
        _check(type(m["ok"]) is bool, "meta.ok must be true or false")
        check_int(m["next_seq"], 0, MAX_INT, "meta.next_seq")
        check_text(m["publisher"], "meta.publisher", 64)
        if "error" in m:
            check_text(m["error"], "meta.error")
        if "publishers" in m:  # a front of several detector workers (stream/workers.py): {lane: next seq}
            lanes = m["publishers"]
            _check(isinstance(lanes, dict) and len(lanes) <= MAX_LANES, f"meta.publishers: <= {MAX_LANES} lanes")
            for lane, seq in lanes.items():
                check_text(lane, "meta.publishers lane", 64)
                check_int(seq, 0, MAX_INT, "meta.publishers seq")
        return
    _meta_keys(m, {"from", "to", "max", "publisher"}, {"from"}, "replay request")
    if "publisher" in m:  # whose events, at a front of several publishers: a lane (stream/client.py: lane_of)
        check_text(m["publisher"], "meta.publisher", 64)
    check_int(m["from"], 0, MAX_INT, "meta.from")
    if m.get("to") is not None:
        check_int(m["to"], -1, MAX_INT, "meta.to")
    if "max" in m:
        check_int(m["max"], 0, MAX_INT, "meta.max")


_META = {"features": _features_meta, "preview": _preview_meta, "control": _control_meta, "event": _event_meta,
         "replay": _replay_meta}


def _array(spec: Any, frame, arrays: dict, budget: list[int]) -> tuple[str, Any]:
    _check(isinstance(spec, dict) and set(spec) == {"name", "dtype", "shape"}, f"bad array spec {spec!r:.80}")
    name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
    _check(isinstance(name, str) and 0 < len(name) <= 64 and name not in arrays,
           f"bad or repeated array name {name!r:.80}")
    _check(isinstance(dtype, str) and dtype in DTYPES, f"array {name!r}: dtype {dtype!r:.40} not allowed")
    _check(isinstance(shape, list) and len(shape) <= MAX_DIMS
           and all(type(n) is int and 0 <= n <= MAX_DIM for n in shape),
           f"array {name!r}: shape {shape!r:.80} is not a list of <= {MAX_DIMS} sizes in [0, {MAX_DIM}]")
    buf = _buffer(frame)
    budget[0] -= len(buf)
    _check(budget[0] >= 0, f"array {name!r}: the message's buffers are larger than its kind allows")
    if dtype == "json":
        _check(shape == [len(buf)], f"array {name!r}: {len(buf)} bytes, header says {shape}")
        return name, loads(buf)
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize  # exact (Python ints); each size is bounded, so this is cheap
    _check(len(buf) == nbytes, f"array {name!r}: {len(buf)} bytes, header {dtype}{shape} needs {nbytes}")
    return name, np.frombuffer(buf, dtype=dt).reshape(shape) if nbytes else np.zeros(shape, dt)


def decode(frames: list) -> Message:
    """Parse `[topic, header, *buffers]` (zmq.Frame or bytes); raises BadMessage (only) on anything malformed."""
    _check(isinstance(frames, (list, tuple)) and 2 <= len(frames) <= MAX_PARTS,
           f"expected 2-{MAX_PARTS} frames, got {len(frames) if isinstance(frames, (list, tuple)) else '?'}")
    raw_topic = _buffer(frames[0])
    _check(len(raw_topic) <= MAX_TOPIC_BYTES, f"topic of {len(raw_topic)} bytes is too long")
    try:
        topic = bytes(raw_topic).decode()
    except UnicodeDecodeError:
        raise BadMessage("topic is not UTF-8") from None
    raw = _buffer(frames[1])
    _check(len(raw) <= MAX_HEADER_BYTES, f"header of {len(raw)} bytes is too large")
    try:
        head = loads(raw)
    except BadMessage as e:
        raise BadMessage(f"header is not JSON: {e}") from None
    _check(isinstance(head, dict), "header is not a JSON object")
    _check(type(head.get("v")) is int and head["v"] == VERSION,
           f"wire version {head.get('v')!r:.20}, expected {VERSION}")
    _check(set(head) == HEADER_KEYS, f"header keys {sorted(head)[:12]} != {sorted(HEADER_KEYS)}")
    kind = head["kind"]
    _check(isinstance(kind, str) and kind in KINDS, f"unknown kind {kind!r:.40}")
    sid = check_stream_id(head["stream_id"])
    check_int(head["frame_index"], -1, MAX_INT, "frame_index")
    check_number(head["pts_s"], -MAX_PTS_S, MAX_PTS_S, "pts_s")
    check_number(head["wall_s"], 0.0, MAX_WALL_S, "wall_s")
    _check(isinstance(head["face_state"], str) and head["face_state"] in FACE_STATES,
           f"unknown face_state {head['face_state']!r:.40}")
    _check(isinstance(head["meta"], dict), "meta is not an object")
    _META[kind](head["meta"])
    specs = head["arrays"]
    _check(isinstance(specs, list) and len(specs) <= MAX_ARRAYS, f"arrays is not a list of <= {MAX_ARRAYS} specs")
    _check(len(frames) == 2 + len(specs), f"header names {len(specs)} buffers, message has {len(frames) - 2}")
    arrays: dict[str, Any] = {}
    budget = [MAX_BYTES[kind]]
    for spec, frame in zip(specs, frames[2:]):
        name, value = _array(spec, frame, arrays, budget)
        arrays[name] = value
    header = Header(kind=kind, stream_id=sid, frame_index=head["frame_index"], pts_s=float(head["pts_s"]),
                    wall_s=float(head["wall_s"]), face_state=head["face_state"], meta=head["meta"])
    return Message(topic=topic, header=header, arrays=arrays)


# ---------------------------------------------------------------- sockets

def limit_receive(sock: zmq.Socket, *kinds: str) -> None:
    """Set MAXMSGSIZE from the largest legal frame of `kinds` (call before bind / connect): a peer sending a larger
    frame is disconnected by ZeroMQ before any of it is buffered here."""
    largest = max([MAX_BYTES[k] for k in kinds] + [MAX_HEADER_BYTES])  # no kinds: requests, subscriptions
    sock.setsockopt(zmq.MAXMSGSIZE, largest)


def features_socket(ctx: zmq.Context, guard, endpoint: str, recv_hwm: int) -> zmq.Socket:
    """The bound PULL socket ingests send to (of a detector, or of the front of several, stream/workers.py);
    `guard` is the owner's auth.ServerAuth."""
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, recv_hwm)
    pull.setsockopt(zmq.LINGER, 0)
    limit_receive(pull, "features", "control")
    guard.apply(pull, endpoint)
    pull.bind(endpoint)
    return pull


def recv_frames(sock: zmq.Socket, flags: int = 0, max_parts: int = MAX_PARTS) -> list:
    """One multipart message, frame by frame: more than `max_parts` frames are drained and raise BadMessage (a
    peer cannot make us hold a message of a million parts). zmq.Again when NOBLOCK and nothing waits."""
    frames = [sock.recv(flags, copy=False)]
    more, n = frames[0].more, 1
    while more:
        part = sock.recv(copy=False)
        more, n = part.more, n + 1
        if n <= max_parts:
            frames.append(part)
    _check(n <= max_parts, f"message of {n} frames (at most {max_parts})")
    return frames


def send(sock: zmq.Socket, frames: list, *, timeout_s: float = 0.0) -> bool:
    """Send without blocking (or waiting at most `timeout_s`); False when the peer's queue is full."""
    if timeout_s > 0 and not sock.poll(int(timeout_s * 1000), zmq.POLLOUT):
        return False
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        return True
    except zmq.Again:
        return False


def send_to_peer(sock: zmq.Socket, frames: list) -> str:
    """A ROUTER_MANDATORY answer without blocking -> "sent", "full" (the peer has SNDHWM unread answers) or "gone".
    ZeroMQ learns that a peer has read its answers from commands it processes lazily, so a full pipe is asked again
    once those are processed: without that, a client that had read every answer was now and then refused one."""
    for attempt in range(2):
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            return "sent"
        except zmq.Again:
            if attempt == 0:
                sock.getsockopt(zmq.EVENTS)  # processes the socket's pending commands (the pipe's credit)
        except zmq.ZMQError:  # EHOSTUNREACH: the peer has gone
            return "gone"
    return "full"


def recv(sock: zmq.Socket) -> Message:
    """Receive and decode one message (blocking per the socket's RCVTIMEO); BadMessage on garbage."""
    return decode(recv_frames(sock))


def recv_nowait(sock: zmq.Socket) -> Message:
    """Receive and decode one message if one is waiting; zmq.Again otherwise."""
    return decode(recv_frames(sock, zmq.NOBLOCK))


# ---------------------------------------------------------------- payloads

MAX_FEATURE_VALUE = 1e6  # blendshapes are in [0, 1], aligned landmarks and flows in crop pixels


def features_message(stream_id: str, features, face_state: str = "none", meta: dict | None = None) -> list:
    """Frames of one `stream.features.FrameFeatures`; crops travel only when the features carry one."""
    arrays = {"geometry": np.asarray(features.geometry, np.float32),
              "roi_flow": np.asarray(features.roi_flow, np.float32)}
    if features.crop is not None:
        arrays["crop"] = np.asarray(features.crop, np.uint8)
    m = {"face_present": bool(features.face_present), **(meta or {})}
    head = Header("features", stream_id, int(features.frame_index), float(features.pts_s), float(features.wall_s),
                  face_state, m)
    return encode(f"features/{stream_id}", head, arrays)


def _finite_array(a: np.ndarray, what: str) -> None:
    _check(bool(np.isfinite(a).all()) and float(np.abs(a).max(initial=0.0)) <= MAX_FEATURE_VALUE,
           f"{what} holds NaN, inf or values beyond {MAX_FEATURE_VALUE:g}")


def to_features(msg: Message):
    """The `FrameFeatures` of a `features` message, with every shape and value checked (BadMessage otherwise)."""
    from fes_live.stream.features import GEOMETRY_DIM, ROI_NAMES, FrameFeatures
    _check(msg.header.kind == "features", f"expected a features message, got {msg.header.kind!r}")
    a = msg.arrays
    _check(set(a) in ({"geometry", "roi_flow"}, {"geometry", "roi_flow", "crop"}), f"arrays {sorted(a)}")
    _check(isinstance(a["geometry"], np.ndarray) and a["geometry"].dtype == np.float32
           and a["geometry"].shape == (GEOMETRY_DIM,), "geometry shape/dtype")
    _check(isinstance(a["roi_flow"], np.ndarray) and a["roi_flow"].dtype == np.float32
           and a["roi_flow"].shape == (len(ROI_NAMES), 2), "roi_flow shape/dtype")
    crop = a.get("crop")
    _check(crop is None or (isinstance(crop, np.ndarray) and crop.dtype == np.uint8 and crop.shape == (224, 224, 3)),
           "crop shape/dtype")
    _finite_array(a["geometry"], "geometry")
    _finite_array(a["roi_flow"], "roi_flow")
    h = msg.header
    _check(h.frame_index >= 0, f"a features message needs frame_index >= 0, got {h.frame_index}")
    present = h.meta["face_present"]
    return FrameFeatures(frame_index=h.frame_index, pts_s=h.pts_s, wall_s=h.wall_s, face_present=present,
                         geometry=a["geometry"], roi_flow=a["roi_flow"], crop=crop,
                         new_face=present and h.face_state == "found")  # FOUND: a primary face not the last one


@dataclass(frozen=True)
class Preview:
    """One preview frame for the viewer; landmarks and box are in preview pixels."""
    stream_id: str
    frame_index: int
    pts_s: float
    wall_s: float
    face_state: str
    jpeg: np.ndarray  # (n,) uint8 JPEG bytes
    landmarks: np.ndarray  # (478, 2) float32, or (0, 2) without a face
    box: tuple[float, float, float, float] | None
    width: int
    height: int


def preview_message(p: Preview) -> list:
    meta = {"box": list(p.box) if p.box is not None else None, "width": p.width, "height": p.height}
    head = Header("preview", p.stream_id, p.frame_index, p.pts_s, p.wall_s, p.face_state, meta)
    return encode(f"preview/{p.stream_id}", head,
                  {"jpeg": np.asarray(p.jpeg, np.uint8), "landmarks": np.asarray(p.landmarks, np.float32)})


def to_preview(msg: Message) -> Preview:
    """The `Preview` of a `preview` message (meta already checked by `decode`: box, width, height)."""
    _check(msg.header.kind == "preview", f"expected a preview message, got {msg.header.kind!r}")
    a, m = msg.arrays, msg.header.meta
    _check(set(a) == {"jpeg", "landmarks"}, f"arrays {sorted(a)}")
    _check(isinstance(a["jpeg"], np.ndarray) and a["jpeg"].dtype == np.uint8 and a["jpeg"].ndim == 1,
           "jpeg must be 1-D uint8")
    lm = a["landmarks"]
    _check(isinstance(lm, np.ndarray) and lm.dtype == np.float32 and lm.ndim == 2 and lm.shape[1] == 2
           and lm.shape[0] <= 1024, "landmarks must be (N <= 1024, 2) float32")
    _check(bool(np.isfinite(lm).all()) and (not lm.size or float(np.abs(lm).max()) <= MAX_PIXELS),
           "landmarks must be finite preview coordinates")
    h = msg.header
    box = m["box"]
    return Preview(h.stream_id, h.frame_index, h.pts_s, h.wall_s, h.face_state, a["jpeg"], lm,
                   tuple(float(v) for v in box) if box else None, m["width"], m["height"])


def control_message(stream_id: str, status: str, **meta: Any) -> list:
    """Stream `started` / `ended` / `error` (from an ingest) or a child `restarted` (from the supervisor)."""
    if status not in CONTROL_STATUSES:
        raise ValueError(f"control status {status!r} not in {CONTROL_STATUSES}")
    head = Header("control", stream_id, int(meta.pop("frame_index", -1)), 0.0, time.time(), "none",
                  {"status": status, **meta})
    return encode(f"control/{stream_id}", head)


def event_message(event: dict) -> list:
    """Frames of one event dict: topic `<type>/<stream_id>`, the JSON body as the last frame."""
    head = Header("event", event["stream_id"], -1, 0.0, float(event.get("wall_s", 0.0)), "none", {})
    return encode(f"{event['type']}/{event['stream_id']}", head, {"event": event})


def to_event(msg: Message) -> dict:
    _check(msg.header.kind == "event", f"expected an event message, got {msg.header.kind!r}")
    _check(set(msg.arrays) == {"event"} and isinstance(msg.arrays["event"], dict), "event body missing")
    return msg.arrays["event"]


@dataclass(frozen=True)
class ReplayRequest:
    first: int
    last: int | None  # None: up to the newest
    limit: int


def to_replay_request(msg: Message, max_events: int) -> ReplayRequest:
    """The range a `replay` request asks for (fields checked by `decode`); `limit` clamped to [1, max_events]."""
    _check(msg.header.kind == "replay" and "from" in msg.header.meta,
           f"expected a replay request, got {msg.header.kind!r}")
    m = msg.header.meta
    return ReplayRequest(m["from"], m.get("to"), max(1, min(m.get("max", max_events), max_events)))
