"""The one codec for every ZeroMQ endpoint of fes-live.

A message is `[topic, header, *buffers]`: the topic (UTF-8, first frame so SUB sockets can filter on it), a small
versioned JSON header, and one raw buffer per array named in the header (`{name, dtype, shape}`). Arrays are sent
with `copy=False` and received as `np.frombuffer` views of the ZeroMQ frame, so a 224x224 crop is never copied by
the codec. A buffer with dtype "json" holds UTF-8 JSON (the body of an event).

Anything that does not decode cleanly (wrong version, unknown kind, sizes that do not match, garbage) raises
`BadMessage`; receivers count it, log it and keep going.

Payload kinds:
- `features` ingest -> detector: one frame's `FrameFeatures` (geometry, roi_flow, optional crop) + face state.
- `preview`  ingest -> viewer: a downscaled JPEG of the frame, the primary face's landmarks and box (preview pixels).
- `control`  ingest -> detector (stream started / ended / error) and supervisor -> detector (a child restarted).
- `event`    detector -> subscribers: one event dict (see stream/events.py and stream/event.schema.json).
- `replay`   client <-> detector's replay endpoint: a request (meta: from, to, max) and its answer (a JSON list).
"""
from __future__ import annotations

import json
import math
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
MAX_HEADER_BYTES = 65536
MAX_STREAM_ID = 128
CONTROL_STATUSES = ("started", "ended", "error", "restarted")


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
            body = json.dumps(value, separators=(",", ":")).encode()
            specs.append({"name": name, "dtype": "json", "shape": [len(body)]})
            buffers.append(body)
    head = {"v": VERSION, "kind": header.kind, "stream_id": header.stream_id, "frame_index": int(header.frame_index),
            "pts_s": float(header.pts_s), "wall_s": float(header.wall_s), "face_state": header.face_state,
            "meta": header.meta, "arrays": specs}
    return [topic.encode(), json.dumps(head, separators=(",", ":")).encode(), *buffers]


def _buffer(frame) -> memoryview:
    if isinstance(frame, zmq.Frame):
        return frame.buffer
    return memoryview(frame)


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise BadMessage(what)


def decode(frames: list) -> Message:
    """Parse `[topic, header, *buffers]` (zmq.Frame or bytes); raises BadMessage on anything malformed."""
    _check(isinstance(frames, (list, tuple)) and len(frames) >= 2, f"expected >= 2 frames, got {len(frames)}")
    try:
        topic = bytes(_buffer(frames[0])).decode()
    except UnicodeDecodeError:
        raise BadMessage("topic is not UTF-8") from None
    raw = _buffer(frames[1])
    _check(len(raw) <= MAX_HEADER_BYTES, f"header of {len(raw)} bytes is too large")
    try:
        head = json.loads(bytes(raw))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadMessage("header is not JSON") from None
    _check(isinstance(head, dict), "header is not a JSON object")
    _check(head.get("v") == VERSION, f"wire version {head.get('v')!r}, expected {VERSION}")
    _check(set(head) == HEADER_KEYS, f"header keys {sorted(head)} != {sorted(HEADER_KEYS)}")
    _check(head["kind"] in KINDS, f"unknown kind {head['kind']!r}")
    sid = head["stream_id"]
    _check(isinstance(sid, str) and len(sid) <= MAX_STREAM_ID, "stream_id must be a string of <= 128 chars")
    _check(isinstance(head["frame_index"], int) and not isinstance(head["frame_index"], bool), "frame_index not int")
    for key in ("pts_s", "wall_s"):
        _check(isinstance(head[key], (int, float)) and math.isfinite(head[key]), f"{key} is not a finite number")
    _check(head["face_state"] in FACE_STATES, f"unknown face_state {head['face_state']!r}")
    _check(isinstance(head["meta"], dict), "meta is not an object")
    specs = head["arrays"]
    _check(isinstance(specs, list), "arrays is not a list")
    _check(len(frames) == 2 + len(specs), f"header names {len(specs)} buffers, message has {len(frames) - 2}")
    arrays: dict[str, Any] = {}
    for spec, frame in zip(specs, frames[2:]):
        _check(isinstance(spec, dict) and set(spec) == {"name", "dtype", "shape"}, f"bad array spec {spec!r}")
        name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
        _check(isinstance(name, str) and name not in arrays, f"bad or repeated array name {name!r}")
        _check(dtype in DTYPES, f"array {name!r}: dtype {dtype!r} not allowed")
        _check(isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape),
               f"array {name!r}: bad shape {shape!r}")
        buf = _buffer(frame)
        if dtype == "json":
            _check(shape == [len(buf)], f"array {name!r}: {len(buf)} bytes, header says {shape}")
            try:
                arrays[name] = json.loads(bytes(buf))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise BadMessage(f"array {name!r} is not JSON") from None
            continue
        dt = np.dtype(dtype)
        nbytes = math.prod(shape) * dt.itemsize
        _check(len(buf) == nbytes, f"array {name!r}: {len(buf)} bytes, header {dtype}{shape} needs {nbytes}")
        arrays[name] = np.frombuffer(buf, dtype=dt).reshape(shape) if nbytes else np.zeros(shape, dt)
    header = Header(kind=head["kind"], stream_id=sid, frame_index=head["frame_index"], pts_s=float(head["pts_s"]),
                    wall_s=float(head["wall_s"]), face_state=head["face_state"], meta=head["meta"])
    return Message(topic=topic, header=header, arrays=arrays)


# ---------------------------------------------------------------- sockets

def send(sock: zmq.Socket, frames: list, *, timeout_s: float = 0.0) -> bool:
    """Send without blocking (or waiting at most `timeout_s`); False when the peer's queue is full."""
    if timeout_s > 0 and not sock.poll(int(timeout_s * 1000), zmq.POLLOUT):
        return False
    try:
        sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        return True
    except zmq.Again:
        return False


def recv(sock: zmq.Socket) -> Message:
    """Receive and decode one message (blocking per the socket's RCVTIMEO); BadMessage on garbage."""
    return decode(sock.recv_multipart(copy=False))


def recv_nowait(sock: zmq.Socket) -> Message:
    """Receive and decode one message if one is waiting; zmq.Again otherwise."""
    return decode(sock.recv_multipart(flags=zmq.NOBLOCK, copy=False))


# ---------------------------------------------------------------- payloads

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


def to_features(msg: Message):
    """The `FrameFeatures` of a `features` message, with every shape checked (BadMessage otherwise)."""
    from fes_live.stream.features import GEOMETRY_DIM, ROI_NAMES, FrameFeatures
    _check(msg.header.kind == "features", f"expected a features message, got {msg.header.kind!r}")
    a = msg.arrays
    _check(set(a) in ({"geometry", "roi_flow"}, {"geometry", "roi_flow", "crop"}), f"arrays {sorted(a)}")
    _check(a["geometry"].dtype == np.float32 and a["geometry"].shape == (GEOMETRY_DIM,), "geometry shape/dtype")
    _check(a["roi_flow"].dtype == np.float32 and a["roi_flow"].shape == (len(ROI_NAMES), 2), "roi_flow shape/dtype")
    crop = a.get("crop")
    _check(crop is None or (crop.dtype == np.uint8 and crop.shape == (224, 224, 3)), "crop shape/dtype")
    h = msg.header
    return FrameFeatures(frame_index=h.frame_index, pts_s=h.pts_s, wall_s=h.wall_s,
                         face_present=bool(h.meta.get("face_present", False)),
                         geometry=a["geometry"], roi_flow=a["roi_flow"], crop=crop)


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
    _check(msg.header.kind == "preview", f"expected a preview message, got {msg.header.kind!r}")
    a, m = msg.arrays, msg.header.meta
    _check(set(a) == {"jpeg", "landmarks"}, f"arrays {sorted(a)}")
    _check(a["jpeg"].dtype == np.uint8 and a["jpeg"].ndim == 1, "jpeg must be 1-D uint8")
    lm = a["landmarks"]
    _check(lm.dtype == np.float32 and lm.ndim == 2 and lm.shape[1] == 2, "landmarks must be (N, 2) float32")
    box = m.get("box")
    _check_preview_geometry(box, m.get("width"), m.get("height"), lm)
    h = msg.header
    return Preview(h.stream_id, h.frame_index, h.pts_s, h.wall_s, h.face_state, a["jpeg"], lm,
                   tuple(float(v) for v in box) if box else None, m["width"], m["height"])


MAX_PREVIEW_SIDE = 4096  # pixels; previews are downscaled (ingest preview_width)
MAX_PREVIEW_COORD = 65536.0  # |box| and |landmarks| in preview pixels (a face may reach past the frame, not this far)


def _check_preview_geometry(box, width, height, landmarks: np.ndarray) -> None:
    """The viewer draws these: box null or 4 finite numbers, sizes 1..MAX_PREVIEW_SIDE, landmarks finite."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and abs(v) <= MAX_PREVIEW_COORD
    _check(box is None or (isinstance(box, list) and len(box) == 4 and all(map(number, box))),
           f"box must be null or 4 finite numbers, got {str(box)[:80]}")
    for name, v in (("width", width), ("height", height)):
        _check(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_PREVIEW_SIDE,
               f"{name} must be an int in 1..{MAX_PREVIEW_SIDE}, got {str(v)[:40]}")
    finite = bool(np.isfinite(landmarks).all())
    _check(finite and (not landmarks.size or float(np.abs(landmarks).max()) <= MAX_PREVIEW_COORD),
           "landmarks must be finite preview coordinates")


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
