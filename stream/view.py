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

Security: binds 127.0.0.1 by default; bound anywhere else, an access token (printed at start) is required on every
request (`?token=`, header `X-Fes-Token`, or the cookie the page gets on its first load).
ICE: aioice never offers 127.0.0.1; `loopback_only` makes it offer exactly that (tests, or a browser on this host).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import fractions
import hmac
import itertools
import json
import logging
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
from fes_live.stream.pipeline_config import Endpoints
from fes_live.stream.view_camera import CameraIngest

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
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
    max_peers: int = 16
    engine: str = ""  # engine folder whose thresholds the plot draws ("" = the bundled default, when present)

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.width < 64 or self.height < 64 or self.width % 16 or self.height % 2:
            raise ValueError(f"width must be a multiple of 16 >= 64 and height even >= 64, got {self.width}x{self.height}")
        if self.max_fps <= 0 or self.plot_seconds <= 0:
            raise ValueError("max_fps and plot_seconds must be > 0")

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


# ---------------------------------------------------------------- plot thresholds

def plot_thresholds(engine: str = "") -> list[dict]:
    """The intensity levels the detector acts on, from the engine's manifest (its `spotter` section, else the
    SpotterConfig defaults): the onset threshold and the lowest proposal threshold. [] without an engine."""
    folder = Path(engine) if engine else Path(__file__).with_name("engines") / "default"
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        spotter = manifest.get("spotter", {}) if isinstance(manifest, dict) else {}
    except (OSError, ValueError) as e:
        log.info("no engine thresholds to plot (%s)", e)
        return []
    onset, low = spotter.get("onset_threshold"), spotter.get("proposals", {}).get("thresholds")
    if onset is None or low is None:
        from fes_live.models.online import SpotterConfig  # the defaults the detector uses (imports torch: only here)
        onset = SpotterConfig.onset_threshold if onset is None else onset
        low = SpotterConfig().proposals.thresholds if low is None else low
    return [{"value": float(onset), "label": "onset"}, {"value": float(min(low)), "label": "proposal"}]


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
    last_seen: float = 0.0
    source: str = "ingest"  # ingest | browser
    stats: dict = field(default_factory=dict)


class Hub:
    """Per-stream latest preview + status, the recent events, and the peers to tell about changes."""

    def __init__(self, cfg: ViewConfig):
        self.cfg = cfg
        self.streams: dict[str, StreamView] = {}
        self.changed = asyncio.Condition()
        self.history: collections.deque[dict] = collections.deque(maxlen=cfg.history_events)
        self.peers: set[Peer] = set()
        self.counters = collections.Counter()
        self.thresholds: list[dict] = []

    def stream(self, sid: str) -> StreamView:
        s = self.streams.get(sid)
        if s is None:
            s = self.streams[sid] = StreamView(sid)
            self.broadcast({"t": "streams", "streams": self.summary()})
        return s

    def summary(self) -> list[dict]:
        return [{"id": s.stream_id, "status": s.status, "face": s.face_state, "source": s.source,
                 "previews": s.previews} for s in self.streams.values()]

    async def put_preview(self, p: wire.Preview, image: np.ndarray | None = None, source: str = "ingest") -> None:
        s = self.stream(p.stream_id)
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
        sid = str(event.get("stream_id", ""))
        etype = str(event.get("type", ""))
        self.counters[f"event:{etype}"] += 1
        if sid == PIPELINE_STREAM:  # detector-wide stats and supervisor notes: shown, but not a stream to watch
            if etype != "stats":
                self.history.append(event)
            self.broadcast({"t": "event", "e": event})
            return
        s = self.stream(sid)
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
        text = json.dumps(msg, separators=(",", ":"))
        for peer in list(self.peers):
            peer.send_text(text)

    def image_of(self, s: StreamView) -> np.ndarray | None:
        """The stream's latest preview picture (JPEG decoded once, shared by every peer)."""
        if s.image is None and s.preview is not None:
            s.image = cv2.imdecode(np.asarray(s.preview.jpeg), cv2.IMREAD_COLOR)
            if s.image is None:
                self.counters["bad_jpeg"] += 1
                s.preview = None
        return s.image


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
            picture = render(cfg, image, p, text)
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

    def __init__(self, hub: Hub, pc):
        self.hub, self.pc = hub, pc
        self.id = next(Peer.ids)
        self.dc = None
        self.selected = ""  # the stream the user picked ("" = the first live one)
        self.showing = ""  # the stream the video track shows now
        self.camera: CameraIngest | None = None

    def send(self, msg: dict) -> None:
        self.send_text(json.dumps(msg, separators=(",", ":")))

    def send_text(self, text: str) -> None:
        dc = self.dc
        if dc is not None and dc.readyState == "open":
            try:
                dc.send(text)
            except Exception as e:  # a closing transport; the close handler cleans up
                log.debug("peer %d: send failed: %s", self.id, e)

    def current_stream(self) -> StreamView | None:
        streams = self.hub.streams
        if self.selected in streams:
            return streams[self.selected]
        live = [s for s in streams.values() if s.status == "live" and s.preview is not None]
        return live[0] if live else None

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
            msg = json.loads(text)
        except (TypeError, ValueError):
            self.hub.counters["bad_dc_message"] += 1
            return
        if isinstance(msg, dict) and msg.get("t") == "select" and isinstance(msg.get("stream"), str):
            self.select(msg["stream"])
        elif isinstance(msg, dict) and msg.get("t") == "report":  # the page's own numbers, logged for operators
            log.debug("peer %d reports %s", self.id, json.dumps(msg.get("probe", {}))[:500])
        else:
            self.hub.counters["bad_dc_message"] += 1

    def select(self, sid: str) -> None:
        self.selected = sid
        self.send({"t": "selected", "stream": sid})

    async def close(self) -> None:
        if self not in self.hub.peers:
            return  # already closed (pc.close() fires the state change that called us again)
        self.hub.peers.discard(self)
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
    previews.setsockopt(zmq.LINGER, 0)
    previews.setsockopt(zmq.SUBSCRIBE, b"preview/")
    events = ctx.socket(zmq.SUB)
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


async def pump_previews(hub: Hub, sock) -> None:
    """Newest preview per stream wins."""
    while True:
        p = await receive(hub, sock, wire.to_preview, "preview")
        hub.counters["previews"] += 1
        await hub.put_preview(p)


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
        if event.get("seq", 0) < skip.get(event.get("publisher"), -1):
            continue
        hub.put_event(event)


# ---------------------------------------------------------------- HTTP

def _token_of(request) -> str:
    auth = request.headers.get("Authorization", "")
    return (request.query.get("token") or request.headers.get("X-Fes-Token")
            or (auth[7:] if auth.startswith("Bearer ") else "") or request.cookies.get("fes_token", ""))


def build_app(cfg: ViewConfig):
    """The aiohttp app: page, static files, /offer, /api/status. Starts and stops the ZeroMQ pumps with itself."""
    import zmq.asyncio
    from aiohttp import web
    from aiortc import RTCPeerConnection, RTCSessionDescription

    ViewTrack = _make_track_class()
    token = cfg.token

    @web.middleware
    async def require_token(request, handler):
        if cfg.needs_token and not hmac.compare_digest(_token_of(request).encode(), token.encode()):
            return web.json_response({"error": "access token required (?token=... or X-Fes-Token header)"},
                                     status=401)
        response = await handler(request)
        if cfg.needs_token and request.path == "/":
            response.set_cookie("fes_token", token, httponly=True, samesite="Strict")
        return response

    app = web.Application(middlewares=[require_token], client_max_size=256 * 1024)
    state: dict[str, Any] = {}  # the Hub and the ZeroMQ pump tasks, made on startup (they need the running loop)

    async def index(request):
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def static(request):
        name = request.match_info["name"]
        if name not in ("viewer.js", "viewer.css"):
            raise web.HTTPNotFound()
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})

    async def offer(request):
        hub: Hub = state["hub"]
        try:
            params = await request.json()
            desc = RTCSessionDescription(sdp=str(params["sdp"]), type=str(params["type"]))
            if desc.type != "offer":
                raise ValueError(f"type must be 'offer', got {desc.type!r}")
            if "\nm=" not in desc.sdp:
                raise ValueError("the SDP has no media section")
        except (ValueError, KeyError, TypeError) as e:
            return web.json_response({"error": f"bad offer: {e}"}, status=400)
        if len(hub.peers) >= cfg.max_peers:
            return web.json_response({"error": f"too many viewers ({cfg.max_peers})"}, status=503)
        if cfg.loopback_only:
            desc = RTCSessionDescription(sdp=loopback_candidates_only(desc.sdp), type=desc.type)
        pc = RTCPeerConnection()
        peer = Peer(hub, pc)
        peer.selected = str(params.get("stream") or "")
        hub.peers.add(peer)

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
            return web.json_response({"error": f"cannot answer this offer: {type(e).__name__}: {e}"}, status=400)
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                                  "peer": peer.id})

    async def status(request):
        hub: Hub = state["hub"]
        return web.json_response({
            "streams": hub.summary(), "peers": len(hub.peers), "counters": dict(hub.counters),
            "cameras": {p.camera.stream_id: p.camera.report() for p in hub.peers if p.camera is not None}})

    async def on_startup(app):
        hub = state["hub"] = Hub(cfg)
        hub.thresholds = await asyncio.get_running_loop().run_in_executor(None, plot_thresholds, cfg.engine)
        ep = cfg.endpoints.resolved()
        ctx = state["zmq"] = zmq.asyncio.Context()
        previews, events = state["sockets"] = open_sockets(ctx, ep)
        state["pumps"] = [asyncio.ensure_future(pump_previews(hub, previews)),
                          asyncio.ensure_future(pump_events(hub, events, ep.replay))]

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
