"""`fes-live view`: the browser viewer of a running pipeline, over WebRTC.

One aiohttp app serves the static page (stream/static/) and a single signalling endpoint, `POST /offer`
(the page sends a complete SDP offer, aiortc answers; no trickle ICE). Per browser peer:
- a video track fed by the ingests' preview frames (ZeroMQ SUB, bound here: ingests connect to it), letterboxed to
  a fixed size with the face box and landmarks drawn server-side, so the overlay is always in sync with the picture.
  Below each picture a thin band encodes a 12-bit frame token; the page decodes it per displayed frame and matches
  the per-frame metadata sent over the data channel, which gives glass-to-glass latency (capture -> display) from
  one shared system clock. The page clips the band off.
- a data channel "events": every detector event (ZeroMQ SUB on the events endpoint), per-frame metadata, stream
  list and selection.
- at start-up, the detector's recent events from its replay endpoint, so a viewer attached late shows the past.
- optionally the browser's own camera as a new stream: frames from `track.recv()` go through FaceTracker +
  FeatureExtractor and on to the detector as `features` messages, exactly as an ingest sends them.

Security (see docs/viewer.md, "Security and networking"): binds 127.0.0.1 by default; bound anywhere else, an
access token (printed at start) is required on every request (`?token=`, header `X-Fes-Token`, or the cookie the page
gets on its first load). Every request must name this viewer in its Host header (DNS rebinding), every POST must be
`application/json` from a matching Origin (cross-site forms). Offers that never connect lose their slot after
`connect_timeout_s`; one client address holds at most `max_peers_per_client` slots. What peers and ingests send is
validated before use and counted when bad; what goes to the browser is standard JSON (NaN/Infinity become null).
ICE: no STUN/TURN unless `ice_servers` says so (aiortc would use a public Google STUN host); aioice never offers
127.0.0.1, `loopback_only` makes it offer exactly that (tests, or a browser on this host).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import fractions
import hmac
import io
import ipaddress
import itertools
import json
import logging
import math
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fes_live.stream import wire
from fes_live.stream.config import from_dict, load_config, to_dict
from fes_live.stream.pipeline_config import Endpoints, engine_folder
from fes_live.stream.view_camera import CameraIngest

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
ICE_SCHEMES = ("stun:", "turn:", "turns:")
MAX_BODY = 256 * 1024  # an SDP offer is a few KB
MAX_JSON_DEPTH = 32  # events and offers are a few levels deep; anything deeper is refused, never recursed into
MAX_PREVIEW_MESSAGE = 8 << 20  # bytes per message part on the preview socket (a 640-px JPEG preview is ~50 KB)
MAX_EVENT_MESSAGE = 4 << 20  # and on the events socket (an event is well under 1 KB)
EVICT_IDLE_S = 2.0  # with max_streams reached, a new stream may replace one that has been quiet this long
BAND_H = 24  # frame token band below each outgoing picture, in pixels (16 blocks: 12 bits token + 4 bits check)
BAND_BITS = 16
TOKEN_MOD = 4096
VIDEO_CLOCK = 90_000
PIPELINE_STREAM = "pipeline"  # stream id of detector-wide events (stream.events.PIPELINE_STREAM)
IDLE_RESEND_S = 0.5  # with no new preview, the last picture is sent again this often (keeps the video alive)


class ViewError(RuntimeError):
    """The viewer cannot start: port taken, bad endpoint."""


@dataclass(frozen=True)
class ViewConfig:
    """The viewer role. `endpoints.preview` is bound here; `events` and (camera uploads) `features` are connected."""
    host: str = "127.0.0.1"
    port: int = 8080
    endpoints: Endpoints = Endpoints()
    token: str = ""  # "" = none on loopback, a fresh random token when bound anywhere else
    loopback_only: bool = False  # ICE host candidates: 127.0.0.1 only (browser and viewer on this machine)
    width: int = 640  # outgoing video, letterboxed (band excluded)
    height: int = 360
    max_fps: float = 30.0
    plot_seconds: float = 20.0
    history_events: int = 2000  # events kept to replay to a browser that connects late
    camera: bool = True  # accept the browser's camera as a source
    face_model: str | None = None
    max_peers: int = 16  # browsers at once (connecting ones included)
    max_peers_per_client: int = 8  # of which from one client address
    connect_timeout_s: float = 10.0  # an answered offer that is not `connected` by then is closed, its slot freed
    max_streams: int = 64  # streams tracked at once (previews and events); the rest are refused and counted
    stream_idle_s: float = 30.0  # a stream without previews or events for this long is forgotten
    allowed_hosts: tuple[str, ...] = ()  # more names for the Host header ("name" or "name:port"), e.g. a proxy's
    ice_servers: tuple[Any, ...] = ()  # STUN/TURN for both ends: "stun:host:port" or {"urls", "username", "credential"}
    engine: str = ""  # engine folder whose thresholds the plot draws ("" = the bundled default, when present)

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.width < 64 or self.height < 64 or self.width % 16 or self.height % 2:
            raise ValueError(f"width must be a multiple of 16 >= 64 and height even >= 64, got {self.width}x{self.height}")
        if self.max_fps <= 0 or self.plot_seconds <= 0:
            raise ValueError("max_fps and plot_seconds must be > 0")
        if min(self.max_peers, self.max_peers_per_client, self.max_streams) < 1:
            raise ValueError("max_peers, max_peers_per_client and max_streams must be >= 1")
        if self.connect_timeout_s <= 0 or self.stream_idle_s <= 0:
            raise ValueError("connect_timeout_s and stream_idle_s must be > 0")
        if not isinstance(self.allowed_hosts, tuple) or not all(isinstance(h, str) and h for h in self.allowed_hosts):
            raise ValueError(f"allowed_hosts must be a list of host names, got {self.allowed_hosts!r}")
        if not isinstance(self.ice_servers, tuple):
            raise ValueError(f"ice_servers must be a list, got {self.ice_servers!r}")
        ice_server_list(self.ice_servers)  # raises ValueError on a bad entry

    @property
    def needs_token(self) -> bool:
        return bool(self.token) or self.host not in LOOPBACK_HOSTS


# ---------------------------------------------------------------- ICE on loopback

def use_loopback_ice() -> None:
    """Make aioice offer a 127.0.0.1 host candidate (it skips loopback on purpose). Process-wide."""
    import aioice.ice
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]


def loopback_candidates_only(sdp: str) -> str:
    """Drop every ICE candidate line of an SDP whose address is not 127.0.0.1 (no mDNS lookups, no LAN)."""
    keep = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) < 5 or parts[4] != "127.0.0.1":
                continue
        keep.append(line)
    return "\r\n".join(keep) + "\r\n"


def ice_server_list(items) -> list[dict]:
    """`ice_servers` as the browser's RTCIceServer dicts; ValueError on anything that is not a STUN/TURN URL."""
    out = []
    for item in items:
        server = {"urls": item} if isinstance(item, str) else item
        if (not isinstance(server, dict) or not set(server) <= {"urls", "username", "credential"}
                or not isinstance(server.get("urls"), str) or not server["urls"].startswith(ICE_SCHEMES)
                or not all(isinstance(v, str) for v in server.values())):
            raise ValueError(f"ice_servers: {item!r} is not a stun:/turn: URL or {{urls, username, credential}}")
        out.append(dict(server))
    return out


def rtc_configuration(cfg: ViewConfig):
    """The server's RTCConfiguration: exactly the configured servers, none by default. (aiortc's own default,
    `RTCConfiguration()`, is a public Google STUN host: a local viewer must not talk to it.)"""
    from aiortc import RTCConfiguration, RTCIceServer
    return RTCConfiguration(iceServers=[RTCIceServer(**s) for s in ice_server_list(cfg.ice_servers)])


# ---------------------------------------------------------------- what may reach the viewer, what leaves it

def _split_host(value: str, default_port: int) -> tuple[str, int] | None:
    """("name", port) of a Host header or an Origin's host part; None when it does not parse."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6]:port
        name, sep, rest = value.partition("]")
        name += "]"
        if not sep or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = value.partition(":")
    if not name or (port and not port.isdigit()):
        return None
    return name, int(port) if port else default_port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


def host_allowed(cfg: ViewConfig, value: str, port: int, default_port: int = 80) -> bool:
    """Does a Host header (or an Origin's host) name this viewer? Loopback names and the bound address on the
    served port, any IP literal on it when bound to a wildcard address, and the configured `allowed_hosts`.
    A DNS-rebinding page (`evil.example` resolving to 127.0.0.1) sends its own name and is refused."""
    parsed = _split_host(value, default_port)
    if parsed is None:
        return False
    name, got_port = parsed
    for allowed in cfg.allowed_hosts:  # "name" (any port) or "name:port"
        a_name, a_port = _split_host(allowed, -1) or ("", -1)
        if name == a_name and a_port in (-1, got_port):
            return True
    if got_port != port:
        return False
    bound = f"[{cfg.host}]" if ":" in cfg.host else cfg.host.lower()
    ours = {"127.0.0.1", "localhost", "[::1]", bound}
    return name in ours or (cfg.host in WILDCARD_HOSTS and _is_ip(name))


def origin_allowed(cfg: ViewConfig, origin: str, port: int) -> bool:
    """A state-changing request's Origin must be this viewer's own page (http(s)://<allowed host>)."""
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https") or "/" in rest:
        return False
    return host_allowed(cfg, rest, port, 443 if scheme == "https" else 80)


def finite(value: Any, depth: int = 0) -> Any:
    """`value` as standard JSON: NaN and +-Infinity become null (the browser's JSON.parse rejects them).
    ValueError for structures deeper than MAX_JSON_DEPTH (never recursed into further)."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v, depth + 1) for v in value]
    return value


def to_json(value: Any) -> str:
    """Standard, compact JSON, whatever `value` holds (non-finite numbers as null)."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(finite(value), separators=(",", ":"), allow_nan=False)


def parse_json(body: bytes) -> Any:
    """A request body as JSON: UTF-8, standard JSON only (no NaN), nested at most MAX_JSON_DEPTH. ValueError else."""
    def no_constant(name: str):
        raise ValueError(f"{name} is not standard JSON")
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=no_constant)  # UnicodeDecodeError is a ValueError
    except RecursionError:  # json's C scanner stops at the interpreter's recursion limit, cleanly
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    finite(value)  # the depth check
    return value


# ---------------------------------------------------------------- plot thresholds

def plot_thresholds(engine: str = "") -> list[dict]:
    """The intensity levels the detector acts on, from the engine's manifest (its `spotter` section over the
    SpotterConfig defaults): the onset threshold where GIM's curve announces onsets, the lowest proposal threshold
    where GIM's proposals can become events. [] without an engine, and for the bundled engines, where FEDN decides
    both and the curve is shown for what it is."""
    from fes_live.models.online import SpotterConfig, fedn_announces, gim_proposes  # imports torch: only here
    from fes_live.stream.config import from_dict
    folder = engine_folder(engine)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        cfg = from_dict(SpotterConfig, manifest.get("spotter", {}), where=f"{folder / 'manifest.json'} spotter")
        has_fedn = "fedn" in manifest.get("models", {})
    except (OSError, ValueError, AttributeError, TypeError) as e:  # ValueError: ConfigError too
        log.info("no engine thresholds to plot (%s)", e)
        return []
    lines = [] if fedn_announces(cfg, has_fedn) else [{"value": float(cfg.onset_threshold), "label": "onset"}]
    if gim_proposes(cfg):
        lines.append({"value": float(min(cfg.proposals.thresholds)), "label": "proposal"})
    return lines


# ---------------------------------------------------------------- frame band (token per outgoing frame)

def band_bits(token: int) -> list[int]:
    """16 bits, most significant first: 12 bits of token, then the XOR of its three nibbles (a cheap check)."""
    token %= TOKEN_MOD
    check = (token >> 8) ^ ((token >> 4) & 15) ^ (token & 15)
    word = (token << 4) | check
    return [(word >> (BAND_BITS - 1 - i)) & 1 for i in range(BAND_BITS)]


def draw_band(width: int, token: int) -> np.ndarray:
    """(BAND_H, width, 3) black/white blocks that the page reads back from the decoded video."""
    band = np.zeros((BAND_H, width, 3), np.uint8)
    step = width // BAND_BITS
    for i, bit in enumerate(band_bits(token)):
        if bit:
            band[:, i * step:(i + 1) * step] = 255
    return band


def read_band(band: np.ndarray) -> int | None:
    """Inverse of draw_band on a (decoded) picture band; None when the check bits disagree."""
    step = band.shape[1] // BAND_BITS
    row = band[BAND_H // 2].mean(axis=-1) if band.ndim == 3 else band[BAND_H // 2]
    bits = [int(row[i * step + step // 2] > 127) for i in range(BAND_BITS)]
    word = int("".join(map(str, bits)), 2)
    token = word >> 4
    return token if band_bits(token) == bits else None


# ---------------------------------------------------------------- what the viewer knows about each stream

@dataclass
class StreamView:
    stream_id: str
    status: str = "live"  # live | ended | error
    face_state: str = "none"
    preview: wire.Preview | None = None
    image: np.ndarray | None = None  # decoded preview (lazily, once for all peers)
    version: int = 0
    previews: int = 0
    last_seen: float = 0.0  # wall clock of the last preview
    last_active: float = 0.0  # monotonic time of the last preview or event (Hub.sweep)
    source: str = "ingest"  # ingest | browser
    stats: dict = field(default_factory=dict)


class Hub:
    """Per-stream latest preview + status, the recent events, and the peers to tell about changes.

    At most `max_streams` streams, kept in order of last activity: a quiet one is forgotten after `stream_idle_s`
    (`sweep`), and a new stream beyond the cap replaces the quietest if that one has been quiet for EVICT_IDLE_S,
    else it is refused and counted, so a flood of stream ids costs bounded memory and O(max_streams) per request."""

    def __init__(self, cfg: ViewConfig):
        self.cfg = cfg
        self.streams: collections.OrderedDict[str, StreamView] = collections.OrderedDict()  # least recent first
        self.changed = asyncio.Condition()
        self.history: collections.deque[dict] = collections.deque(maxlen=cfg.history_events)
        self.peers: set[Peer] = set()
        self.counters = collections.Counter()
        self.thresholds: list[dict] = []

    def stream(self, sid: str) -> StreamView | None:
        """The stream's record, made if new and there is room (None: refused, counted); marks it active."""
        s = self.streams.get(sid)
        now = time.monotonic()
        if s is None:
            if len(self.streams) >= self.cfg.max_streams:
                quietest = next(iter(self.streams.values()))
                if now - quietest.last_active < EVICT_IDLE_S:
                    self.counters["streams_refused"] += 1
                    return None
                self.forget(quietest.stream_id)
            s = self.streams[sid] = StreamView(sid)
            self.broadcast({"t": "streams", "streams": self.summary()})
        s.last_active = now
        self.streams.move_to_end(sid)
        return s

    def forget(self, sid: str) -> None:
        self.streams.pop(sid, None)
        self.counters["streams_forgotten"] += 1

    def sweep(self) -> None:
        """Forget the streams that have been quiet for `stream_idle_s` (the least recent come first)."""
        limit = time.monotonic() - self.cfg.stream_idle_s
        gone = 0
        while self.streams and next(iter(self.streams.values())).last_active < limit:
            self.forget(next(iter(self.streams)))
            gone += 1
        if gone:
            self.broadcast({"t": "streams", "streams": self.summary()})

    def summary(self) -> list[dict]:
        return [{"id": s.stream_id, "status": s.status, "face": s.face_state, "source": s.source,
                 "previews": s.previews} for s in self.streams.values()]

    async def put_preview(self, p: wire.Preview, image: np.ndarray | None = None, source: str = "ingest") -> None:
        s = self.stream(p.stream_id)
        if s is None:
            return
        s.preview, s.image, s.face_state, s.source = p, image, p.face_state, source
        s.version += 1
        s.previews += 1
        s.last_seen = time.time()
        if s.status != "live":
            s.status = "live"
            self.broadcast({"t": "streams", "streams": self.summary()})
        async with self.changed:
            self.changed.notify_all()

    def put_event(self, event: dict) -> None:
        """One detector event, made standard JSON (NaN -> null) once here, for the browsers and the history."""
        try:
            event = finite(event)
        except ValueError as e:
            self.counters["bad_event"] += 1
            log.warning("dropped an event: %s", e)
            return
        sid = str(event.get("stream_id", ""))
        etype = str(event.get("type", ""))
        self.counters[f"event:{etype}"] += 1
        if sid == PIPELINE_STREAM:  # detector-wide stats and supervisor notes: shown, but not a stream to watch
            if etype != "stats":
                self.history.append(event)
            self.broadcast({"t": "event", "e": event})
            return
        s = self.stream(sid)
        if s is None:
            return
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        if etype == "stream":
            status = str(data.get("status", ""))
            if status in ("ended", "error"):
                s.status = status
                self.broadcast({"t": "streams", "streams": self.summary()})
            elif status == "started":
                s.status = "live"
        elif etype == "stats":
            s.stats = event
        if etype != "stats":  # stats only matter live; the rest is replayed to late browsers
            self.history.append(event)
        self.broadcast({"t": "event", "e": event})

    def broadcast(self, msg: dict) -> None:
        text = to_json(msg)
        for peer in list(self.peers):
            peer.send_text(text)

    def image_of(self, s: StreamView) -> np.ndarray | None:
        """The stream's latest preview picture (JPEG decoded once, shared by every peer)."""
        if s.image is None and s.preview is not None:
            p = s.preview
            if jpeg_size(p.jpeg) == (p.width, p.height):  # read from the header: no decompression bomb
                s.image = cv2.imdecode(np.asarray(p.jpeg), cv2.IMREAD_COLOR)
            if s.image is None or s.image.shape[:2] != (p.height, p.width):
                self.counters["bad_jpeg"] += 1
                s.preview, s.image = None, None
        return s.image


def jpeg_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a JPEG's header, without decoding it; None when it is not a JPEG."""
    from PIL import Image, UnidentifiedImageError  # Pillow (a matplotlib dependency): header only, lazily
    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            return im.size if im.format == "JPEG" else None
    except (UnidentifiedImageError, OSError, ValueError):
        return None


# ---------------------------------------------------------------- outgoing video

def render(cfg: ViewConfig, image: np.ndarray | None, p: wire.Preview | None, text: str) -> np.ndarray:
    """Letterbox the preview into cfg.width x cfg.height and draw the face box and landmarks on it."""
    canvas = np.full((cfg.height, cfg.width, 3), 24, np.uint8)
    if image is not None:
        h, w = image.shape[:2]
        scale = min(cfg.width / w, cfg.height / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        x0, y0 = (cfg.width - nw) // 2, (cfg.height - nh) // 2
        canvas[y0:y0 + nh, x0:x0 + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        if p is not None:
            sx, sy = nw / max(p.width, 1), nh / max(p.height, 1)
            if len(p.landmarks):
                pts = np.asarray(p.landmarks, np.float32) * (sx, sy) + (x0, y0)
                for x, y in pts.astype(np.int32):
                    canvas[max(y, 0):y + 1, max(x, 0):x + 1] = (80, 220, 255)
            if p.box is not None:
                bx0, by0, bx1, by1 = p.box
                cv2.rectangle(canvas, (int(bx0 * sx + x0), int(by0 * sy + y0)), (int(bx1 * sx + x0), int(by1 * sy + y0)),
                              (80, 200, 80), 2)
    if text:
        cv2.putText(canvas, text, (16, cfg.height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (200, 200, 200), 2)
    return canvas


def _make_track_class():
    from aiortc import VideoStreamTrack
    from av import VideoFrame

    class ViewTrack(VideoStreamTrack):
        """The selected stream's previews, drawn and banded; a new frame per preview, the last one again when idle."""

        def __init__(self, peer: Peer):
            super().__init__()
            self.peer = peer
            self.t0 = time.monotonic()
            self.last_sent = 0.0
            self.seen: tuple[str, int] = ("", -1)
            self.tokens = itertools.count()

        async def recv(self):
            hub, cfg = self.peer.hub, self.peer.hub.cfg
            wait = max(0.0, self.last_sent + 1.0 / cfg.max_fps - time.monotonic())
            if wait:
                await asyncio.sleep(wait)
            s = self._current()
            if s is None or (s.stream_id, s.version) == self.seen:
                async with hub.changed:
                    try:
                        await asyncio.wait_for(hub.changed.wait_for(self._has_new), IDLE_RESEND_S)
                    except asyncio.TimeoutError:
                        pass
                s = self._current()
            image = hub.image_of(s) if s is not None else None
            p = s.preview if s is not None and image is not None else None
            text = "" if image is not None else ("waiting for a stream" if s is None else f"{s.stream_id}: no picture yet")
            try:
                picture = render(cfg, image, p, text)
            except (cv2.error, ValueError, OverflowError) as e:  # a preview wire.to_preview let through: say so
                hub.counters["render_errors"] += 1
                log.warning("cannot draw a preview of %s: %s", s.stream_id if s else "?", e)
                picture = render(cfg, None, None, "bad preview")
            token = next(self.tokens) % TOKEN_MOD
            frame = VideoFrame.from_ndarray(np.vstack([picture, draw_band(cfg.width, token)]), format="bgr24")
            frame.pts = int((time.monotonic() - self.t0) * VIDEO_CLOCK)
            frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            self.last_sent = time.monotonic()
            if s is not None and s.stream_id != self.peer.showing:  # auto-selection changed: tell the page
                self.peer.showing = s.stream_id
                self.peer.send({"t": "showing", "stream": s.stream_id})
            fresh = s is not None and (s.stream_id, s.version) != self.seen
            if s is not None:
                self.seen = (s.stream_id, s.version)
            # c: capture time of a new picture (none for a repeat, whose capture was long ago); x: sent now
            self.peer.send({"t": "frame", "k": token, "s": s.stream_id if s else "",
                            "i": p.frame_index if p else -1, "c": round(p.wall_s * 1000, 1) if p and fresh else None,
                            "x": round(time.time() * 1000, 1), "f": p.face_state if p else "none"})
            return frame

        def _current(self) -> StreamView | None:
            return self.peer.current_stream()

        def _has_new(self) -> bool:
            s = self._current()
            return s is not None and (s.stream_id, s.version) != self.seen

    return ViewTrack


# ---------------------------------------------------------------- one browser

class Peer:
    """One browser connection: its RTCPeerConnection, data channel, stream selection and optional camera stream."""

    ids = itertools.count(1)

    def __init__(self, hub: Hub, pc, remote: str = "", ice_servers: list[dict] | None = None):
        self.hub, self.pc, self.remote = hub, pc, remote  # remote: the client address (per-client slot cap)
        self.ice_servers = ice_servers or []  # what the peer connection was configured with (/api/status)
        self.id = next(Peer.ids)
        self.connected = False
        self.deadline: asyncio.Task | None = None
        self.dc = None
        self.selected = ""  # the stream the user picked ("" = the first live one)
        self.showing = ""  # the stream the video track shows now
        self.camera: CameraIngest | None = None

    def send(self, msg: dict) -> None:
        self.send_text(to_json(msg))

    def send_text(self, text: str) -> None:
        dc = self.dc
        if dc is not None and dc.readyState == "open":
            try:
                dc.send(text)
            except Exception as e:  # a closing transport; the close handler cleans up
                log.debug("peer %d: send failed: %s", self.id, e)

    def current_stream(self) -> StreamView | None:
        """The user's pick, else the stream shown so far while it is live, else the first live one."""
        streams = self.hub.streams
        if self.selected in streams:
            return streams[self.selected]
        shown = streams.get(self.showing)
        if shown is not None and shown.status == "live" and shown.preview is not None:
            return shown
        return next((s for s in streams.values() if s.status == "live" and s.preview is not None), None)

    def on_open(self) -> None:
        cfg = self.hub.cfg
        self.send({"t": "hello", "peer": self.id, "width": cfg.width, "height": cfg.height, "band": BAND_H,
                   "bits": BAND_BITS, "plot_seconds": cfg.plot_seconds, "camera": cfg.camera,
                   "thresholds": self.hub.thresholds,
                   "server_ms": time.time() * 1000, "streams": self.hub.summary()})
        for event in list(self.hub.history):
            self.send({"t": "event", "e": event, "replay": True})
        for s in self.hub.streams.values():
            if s.stats:
                self.send({"t": "event", "e": s.stats, "replay": True})
        if self.camera is not None:
            self.select(self.camera.stream_id)

    def on_message(self, text: Any) -> None:
        try:
            msg = parse_json(text.encode() if isinstance(text, str) else text)
        except (TypeError, ValueError):
            self.hub.counters["bad_dc_message"] += 1
            return
        if (isinstance(msg, dict) and msg.get("t") == "select" and isinstance(msg.get("stream"), str)
                and len(msg["stream"]) <= wire.MAX_STREAM_ID):
            self.select(msg["stream"])
        elif isinstance(msg, dict) and msg.get("t") == "report":  # the page's own numbers, logged for operators
            log.debug("peer %d reports %s", self.id, to_json(msg.get("probe", {}))[:500])
        else:
            self.hub.counters["bad_dc_message"] += 1

    def select(self, sid: str) -> None:
        self.selected = sid
        self.send({"t": "selected", "stream": sid})

    async def expire(self, timeout_s: float) -> None:
        """Close the peer (and free its slot) unless it reached `connected` within `timeout_s`."""
        await asyncio.sleep(timeout_s)
        if not self.connected and self in self.hub.peers:
            self.hub.counters["connect_timeouts"] += 1
            log.info("peer %d (%s): not connected after %.1f s, closed", self.id, self.remote, timeout_s)
            await self.close()

    def on_connection_state(self, state: str) -> None:
        if state == "connected" and not self.connected:
            self.connected = True
            self.hub.counters["connected"] += 1

    async def close(self) -> None:
        if self not in self.hub.peers:
            return  # already closed (pc.close() fires the state change that called us again)
        self.hub.peers.discard(self)
        if self.deadline is not None and self.deadline is not asyncio.current_task():
            self.deadline.cancel()
        if self.camera is not None:
            await self.camera.stop()
        await self.pc.close()


# ---------------------------------------------------------------- ZeroMQ side

def open_sockets(ctx, ep: Endpoints) -> tuple:
    """The preview SUB (bound: every ingest connects to it) and the events SUB (connected to the detector).
    Opened at startup, so a bad endpoint is an error at once, not a dead background task."""
    import zmq
    previews = ctx.socket(zmq.SUB)
    previews.setsockopt(zmq.RCVHWM, 64)
    previews.setsockopt(zmq.MAXMSGSIZE, MAX_PREVIEW_MESSAGE)  # a larger one disconnects its sender, unread
    previews.setsockopt(zmq.LINGER, 0)
    previews.setsockopt(zmq.SUBSCRIBE, b"preview/")
    events = ctx.socket(zmq.SUB)
    events.setsockopt(zmq.MAXMSGSIZE, MAX_EVENT_MESSAGE)
    events.setsockopt(zmq.LINGER, 0)
    events.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        previews.bind(ep.preview)
        from fes_live.stream.auth import apply_client
        apply_client(events, ep.events, ep.curve)
        events.connect(ep.events)
    except zmq.ZMQError as e:
        previews.close()
        events.close()
        raise ViewError(f"preview endpoint {ep.preview!r} / events endpoint {ep.events!r}: {e}") from None
    log.info("previews: SUB bound on %s; events: SUB connected to %s", ep.preview, ep.events)
    return previews, events


async def receive(hub: Hub, sock, convert, kind: str):
    """The next well-formed message of `kind` (preview or event); garbage is counted, logged and dropped."""
    while True:
        frames = await sock.recv_multipart(copy=False)
        try:
            return convert(wire.decode(frames))
        except wire.BadMessage as e:
            hub.counters[f"bad_{kind}"] += 1
            log.warning("dropped a bad %s message: %s", kind, e)
        except Exception as e:  # anything else the codec let through: counted the same, and the pump goes on
            hub.counters[f"bad_{kind}"] += 1
            log.warning("dropped a bad %s message (%s: %s)", kind, type(e).__name__, str(e)[:200])


async def pump_previews(hub: Hub, sock) -> None:
    """Newest preview per stream wins. Nothing a sender puts on the socket ends this loop."""
    while True:
        p = await receive(hub, sock, wire.to_preview, "preview")
        hub.counters["previews"] += 1
        try:
            await hub.put_preview(p)
        except Exception:
            hub.counters["preview_errors"] += 1
            log.exception("preview of %r not stored", p.stream_id)


async def sweep_streams(hub: Hub) -> None:
    while True:
        await asyncio.sleep(min(1.0, hub.cfg.stream_idle_s / 4))
        hub.sweep()


def recent_events(replay: str, limit: int, timeout_s: float = 1.0, curve=None) -> tuple[list[dict], int]:
    """The detector's last `limit` events from its replay endpoint, and its next sequence number."""
    from fes_live.stream.client import fetch, next_seq
    upcoming = next_seq(replay, timeout_s=timeout_s, curve=curve)
    if upcoming == 0:
        return [], 0
    return fetch(replay, max(0, upcoming - limit), upcoming - 1, timeout_s=timeout_s, curve=curve)


async def pump_events(hub: Hub, sock, replay: str) -> None:
    """Every detector event goes to every browser. First the recent past from the replay endpoint (the SUB socket
    is already connected and queues what comes meanwhile), so a viewer attached to a running pipeline shows its
    timeline; live events that the replay already had are skipped."""
    from fes_live.stream.client import ReplayError
    skip: dict[str, int] = {}  # publisher -> first sequence number not in the replay
    try:
        events, next_seq = await asyncio.get_running_loop().run_in_executor(
            None, recent_events, replay, hub.cfg.history_events, 1.0, hub.cfg.endpoints.curve)
        for event in events:
            hub.put_event(event)
        if events:
            skip[events[-1]["publisher"]] = next_seq
        log.info("history: %d recent event(s) from %s", len(events), replay)
    except (ReplayError, wire.BadMessage, KeyError, TypeError, ValueError) as e:
        log.info("no history from %s (%s); live events only", replay, e)
    while True:
        event = await receive(hub, sock, wire.to_event, "event")
        seq = event.get("seq", 0)
        if isinstance(seq, (int, float)) and seq < skip.get(str(event.get("publisher")), -1):
            continue
        try:
            hub.put_event(event)
        except Exception:
            hub.counters["event_errors"] += 1
            log.exception("event not forwarded")


# ---------------------------------------------------------------- HTTP

def _token_of(request) -> str:
    auth = request.headers.get("Authorization", "")
    return (request.query.get("token") or request.headers.get("X-Fes-Token")
            or (auth[7:] if auth.startswith("Bearer ") else "") or request.cookies.get("fes_token", ""))


def _served_port(request) -> int:
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    return sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else -1


def build_app(cfg: ViewConfig):
    """The aiohttp app: page, static files, /offer, /api/status, /api/config. Starts and stops the ZeroMQ pumps
    with itself. Every request passes, in order: errors as JSON, the Host check, the token, the POST checks."""
    import zmq.asyncio
    from aiohttp import web
    from aiortc import RTCPeerConnection, RTCSessionDescription

    ViewTrack = _make_track_class()
    token = cfg.token
    ice_servers = ice_server_list(cfg.ice_servers)

    def error(status: int, message: str, **headers) -> web.Response:
        return web.json_response({"error": message}, status=status, headers=headers or None, dumps=to_json)

    @web.middleware
    async def errors_as_json(request, handler):
        """Every error is a JSON object with a clear message; nothing leaks a traceback."""
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return error(e.status, e.reason)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            return error(500, "internal error (see the viewer's log)")

    @web.middleware
    async def check_host(request, handler):
        """DNS rebinding: the Host must name this viewer, on every route, loopback included."""
        if not host_allowed(cfg, request.headers.get("Host", ""), _served_port(request)):
            return error(421, f"unknown Host {request.headers.get('Host', '')!r}: open the viewer by the address "
                              f"it prints, or add the name to allowed_hosts")
        return await handler(request)

    @web.middleware
    async def check_post(request, handler):
        """Cross-site requests: a POST must be JSON (a form or a `text/plain` fetch is not, and those are the only
        ones another site can send without asking) and its Origin, when the browser sends one, this viewer's page."""
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin is not None and not origin_allowed(cfg, origin, _served_port(request)):
                return error(403, f"cross-origin request from {origin!r} refused")
            if request.content_type != "application/json":
                return error(415, f"Content-Type must be application/json, got {request.content_type!r}")
        return await handler(request)

    @web.middleware
    async def require_token(request, handler):
        if cfg.needs_token and not hmac.compare_digest(_token_of(request).encode(), token.encode()):
            return error(401, "access token required (?token=... or X-Fes-Token header)")
        response = await handler(request)
        if cfg.needs_token and request.path == "/":
            response.set_cookie("fes_token", token, httponly=True, samesite="Strict")
        return response

    app = web.Application(middlewares=[errors_as_json, check_host, require_token, check_post], client_max_size=MAX_BODY)
    state: dict[str, Any] = {}  # the Hub and the ZeroMQ pump tasks, made on startup (they need the running loop)

    async def index(request):
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def static(request):
        name = request.match_info["name"]
        if name not in ("viewer.js", "viewer.css"):
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})

    async def page_config(request):
        """What the page needs before it makes its RTCPeerConnection: the ICE servers (none by default)."""
        return web.json_response({"iceServers": ice_servers}, dumps=to_json,
                                 headers={"Cache-Control": "no-store"})

    async def offer(request):
        hub: Hub = state["hub"]
        try:
            params = parse_json(await request.read())
            if not isinstance(params, dict):
                raise ValueError("the body must be a JSON object {sdp, type[, stream]}")
            sdp, kind, stream = params.get("sdp"), params.get("type"), params.get("stream", "")
            if not isinstance(sdp, str) or not isinstance(kind, str) or not isinstance(stream, (str, type(None))) \
                    or len(stream or "") > wire.MAX_STREAM_ID:
                raise ValueError("sdp and type must be strings (stream: a stream id, if given)")
            if kind != "offer":
                raise ValueError(f"type must be 'offer', got {kind!r}")
            if "\nm=" not in sdp:
                raise ValueError("the SDP has no media section")
            desc = RTCSessionDescription(sdp=sdp, type=kind)
        except ValueError as e:
            return error(400, f"bad offer: {e}")
        remote = request.remote or "?"
        retry = {"Retry-After": str(math.ceil(cfg.connect_timeout_s))}
        if len(hub.peers) >= cfg.max_peers:
            hub.counters["refused_full"] += 1
            return error(503, f"viewer full: {len(hub.peers)} of {cfg.max_peers} viewers; try again later", **retry)
        if sum(p.remote == remote for p in hub.peers) >= cfg.max_peers_per_client:
            hub.counters["refused_per_client"] += 1
            return error(503, f"too many viewers from {remote} ({cfg.max_peers_per_client}); close one", **retry)
        if cfg.loopback_only:
            desc = RTCSessionDescription(sdp=loopback_candidates_only(desc.sdp), type=desc.type)
        pc = RTCPeerConnection(configuration=rtc_configuration(cfg))
        peer = Peer(hub, pc, remote, ice_servers)
        peer.selected = stream or ""
        hub.peers.add(peer)  # no await since the checks above: the slot is taken at once
        peer.deadline = asyncio.ensure_future(peer.expire(cfg.connect_timeout_s))

        @pc.on("datachannel")
        def on_datachannel(channel):
            peer.dc = channel
            channel.on("message", peer.on_message)
            if channel.readyState == "open":
                peer.on_open()
            else:
                channel.on("open", peer.on_open)

        @pc.on("track")
        def on_track(track):
            if track.kind != "video" or peer.camera is not None:
                return
            if not cfg.camera:
                hub.broadcast({"t": "error", "error": "this viewer does not accept camera streams (--no-camera)"})
                return
            sid = f"browser-{peer.id}"
            peer.camera = CameraIngest(hub, track, sid, asyncio.get_running_loop())
            peer.select(sid)
            log.info("peer %d: camera stream %s started", peer.id, sid)

        @pc.on("connectionstatechange")
        async def on_state():
            log.info("peer %d: connection %s", peer.id, pc.connectionState)
            peer.on_connection_state(pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await peer.close()

        try:
            await pc.setRemoteDescription(desc)
            for t in pc.getTransceivers():
                if t.kind == "video":
                    pc.addTrack(ViewTrack(peer))  # binds to the page's recvonly / sendrecv video transceiver
                    break
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:  # an SDP aiortc cannot use
            await peer.close()
            return error(400, f"cannot answer this offer: {type(e).__name__}: {e}")
        if peer not in hub.peers:  # closed while answering (its deadline passed)
            return error(503, "the offer expired before it was answered; try again")
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                                  "peer": peer.id}, dumps=to_json)

    async def status(request):
        hub: Hub = state["hub"]
        return web.json_response({
            "streams": hub.summary(), "peers": len(hub.peers), "counters": dict(hub.counters),
            "slots": {"max": cfg.max_peers, "per_client": cfg.max_peers_per_client,
                      "connecting": sum(not p.connected for p in hub.peers),
                      "connect_timeout_s": cfg.connect_timeout_s},
            "peer_list": [{"id": p.id, "remote": p.remote, "connected": p.connected,
                           "state": p.pc.connectionState, "ice_servers": p.ice_servers} for p in hub.peers],
            "cameras": {p.camera.stream_id: p.camera.report() for p in hub.peers if p.camera is not None}},
            dumps=to_json)

    async def on_startup(app):
        hub = state["hub"] = Hub(cfg)
        hub.thresholds = await asyncio.get_running_loop().run_in_executor(None, plot_thresholds, cfg.engine)
        ep = cfg.endpoints.resolved()
        ctx = state["zmq"] = zmq.asyncio.Context()
        previews, events = state["sockets"] = open_sockets(ctx, ep)
        state["pumps"] = [asyncio.ensure_future(pump_previews(hub, previews)),
                          asyncio.ensure_future(pump_events(hub, events, ep.replay)),
                          asyncio.ensure_future(sweep_streams(hub))]

    async def on_shutdown(app):
        for task in state["pumps"]:
            task.cancel()
        await asyncio.gather(*state["pumps"], return_exceptions=True)
        await asyncio.gather(*(p.close() for p in list(state["hub"].peers)), return_exceptions=True)
        for sock in state["sockets"]:
            sock.close()
        state["zmq"].term()

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_post("/offer", offer)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/config", page_config)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


# ---------------------------------------------------------------- process entry points

def prepare(cfg: ViewConfig) -> ViewConfig:
    """Fill in the token when one is needed; apply the loopback ICE setting."""
    if cfg.needs_token and not cfg.token:
        cfg = replace(cfg, token=secrets.token_urlsafe(16))
    if cfg.loopback_only:
        use_loopback_ice()
    return cfg


def page_url(cfg: ViewConfig, port: int | None = None) -> str:
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    url = f"http://{host}:{port or cfg.port}/"
    return url + (f"?token={cfg.token}" if cfg.needs_token else "")


async def serve(cfg: ViewConfig, stop: asyncio.Event | None = None, ready=None) -> None:
    """Serve until `stop` is set (or forever). `ready(url)` is called once the port answers."""
    from aiohttp import web
    cfg = prepare(cfg)
    runner = web.AppRunner(build_app(cfg), handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, cfg.host, cfg.port).start()
    except OSError as e:
        await runner.cleanup()
        raise ViewError(f"cannot serve on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
    port = runner.addresses[0][1] if runner.addresses else cfg.port
    url = page_url(cfg, port)
    print(f"fes-live view: open {url}", flush=True)
    if ready is not None:
        ready(url)
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()


def run(cfg: ViewConfig, stop_event=None) -> int:
    """The role as a process (the supervisor's entry point): serve until `stop_event` (a multiprocessing or
    threading Event) is set, or SIGTERM / Ctrl-C; peers are closed cleanly so browsers see it at once."""
    async def _main() -> None:
        stop = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        if stop_event is not None:
            async def watch() -> None:
                while not stop_event.is_set():
                    await asyncio.sleep(0.2)
                stop.set()
            asyncio.ensure_future(watch())
        await serve(cfg, stop)

    try:
        asyncio.run(_main())
    except (ViewError, OSError) as e:  # port in use, bad endpoint: one clear line, no traceback
        log.error("fes-live view cannot start: %s", e)
        return 1
    return 0


# ---------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON file with ViewConfig keys (command-line options override it)")
    parser.add_argument("--host", help="address to serve on (default 127.0.0.1; anything else needs the token)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8080; 0 = any free port)")
    parser.add_argument("--preview", help="preview endpoint to bind (default ipc://<runtime dir>/preview)")
    parser.add_argument("--events", help="detector events endpoint (default tcp://127.0.0.1:5556)")
    parser.add_argument("--replay", help="detector replay endpoint, for the recent past (default tcp://127.0.0.1:5557)")
    parser.add_argument("--features", help="detector features endpoint, for browser cameras")
    parser.add_argument("--token", help="access token (default: random when --host is not loopback)")
    parser.add_argument("--loopback-only", action="store_true", default=None,
                        help="offer only 127.0.0.1 ICE candidates (browser on this machine, no LAN)")
    parser.add_argument("--no-camera", dest="camera", action="store_false", default=None,
                        help="refuse browser cameras as sources")
    parser.add_argument("--face-model", help="MediaPipe face_landmarker .task for browser cameras")
    parser.add_argument("--engine", help="engine folder whose thresholds the plot draws (default: bundled)")


def config_from_args(args: argparse.Namespace) -> ViewConfig:
    data = to_dict(load_config(ViewConfig, args.config)) if args.config else {}
    for key in ("host", "port", "token", "loopback_only", "camera", "face_model", "engine"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    for key in ("preview", "events", "replay", "features"):
        if getattr(args, key, None):
            data.setdefault("endpoints", {})[key] = getattr(args, key)
    return from_dict(ViewConfig, data)


def main(args: argparse.Namespace) -> int:
    return run(config_from_args(args))
