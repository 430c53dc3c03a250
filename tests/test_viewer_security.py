"""The viewer under hostile or broken input (issue 12, item 10), against a real `fes-live view` process on
127.0.0.1: DNS rebinding (Host), cross-site POSTs (Origin, Content-Type), offers that never connect (slots),
malformed previews, bad bodies, STUN, and non-standard JSON (NaN) on the way to the browser.

WebRTC clients here are aiortc peer connections in the test process (loopback ICE, like the viewer's
`loopback_only`); the page itself is checked in real Chromium in test_viewer_browser.py.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from fes_live.stream import wire
from fes_live.stream.pipeline_config import Endpoints
from fes_live.stream.view import ViewConfig, rtc_configuration, use_loopback_ice
from test_viewer_server import Viewer, _run_app, free_port


def endpoints(tmp: Path) -> dict:
    return {"preview": f"ipc://{tmp}/preview", "features": f"ipc://{tmp}/features",
            "events": f"tcp://127.0.0.1:{free_port()}", "replay": f"tcp://127.0.0.1:{free_port()}"}


@pytest.fixture
def viewers(tmp_path):
    """Start viewers with `start(**config)`; every one is stopped whatever happens."""
    started: list[Viewer] = []

    def start(name: str = "view", **extra) -> Viewer:
        ep = extra.pop("endpoints", None) or endpoints(tmp_path / name)
        (tmp_path / name).mkdir(exist_ok=True)
        v = Viewer(tmp_path / name, ep, **extra)
        v.ep = ep
        started.append(v)
        return v
    yield start
    for v in started:
        v.close()


def request(port: int, method: str, path: str, body: bytes | str = b"", headers: dict | None = None,
            source: str = "127.0.0.1") -> tuple[int, dict]:
    """One raw HTTP request (Host header as given), from `source` (any 127.x address is this machine).
    Returns the status and the JSON body (every answer of the viewer but the page's files is JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **(headers or {})})
        r = conn.getresponse()
        data = r.read()
        if r.getheader("Content-Type", "").startswith("application/json"):
            return r.status, strict_json(data)
        return r.status, {"bytes": len(data)}
    finally:
        conn.close()


def strict_json(text: bytes | str):
    """json.loads that refuses NaN / Infinity, as the browser's JSON.parse does."""
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name} in {str(text)[:200]}")
    return json.loads(text, parse_constant=refuse)


def wait_until(check, what: str, timeout_s: float = 30.0, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


JSON = {"Content-Type": "application/json"}


# ---------------------------------------------------------------- Host and Origin (DNS rebinding, cross-site POSTs)

def test_host_header_must_name_the_viewer_on_every_route(viewers):
    v = viewers(allowed_hosts=["viewer.example"])
    p = v.port
    routes = [("GET", "/"), ("GET", "/static/viewer.js"), ("GET", "/api/status"), ("GET", "/api/config"),
              ("POST", "/offer")]
    for host in ("evil.example", f"evil.example:{p}", f"127.0.0.1:{p + 1}", f"localhost:{p}.evil.example", "",
                 f"127.0.0.1.evil.example:{p}"):
        for method, path in routes:
            status, body = request(p, method, path, b"{}", {"Host": host, **JSON})
            assert status == 421 and "unknown Host" in body["error"], (host, path, status, body)
    for host in (f"127.0.0.1:{p}", f"localhost:{p}", f"[::1]:{p}", f"LocalHost:{p}", f"viewer.example:{p}"):
        assert [request(p, "GET", path, headers={"Host": host})[0] for _, path in routes[:4]] == [200] * 4, host
    assert v.proc.poll() is None


def test_post_needs_json_and_an_origin_that_is_the_viewer(viewers):
    v = viewers()
    p = v.port
    offer = json.dumps({"sdp": "v=0", "type": "offer"})  # reaches the handler as a bad offer: 400
    for ctype in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=x", None):
        status, body = request(p, "POST", "/offer", offer, {"Content-Type": ctype} if ctype else {})
        assert status == 415 and "application/json" in body["error"], (ctype, status, body)
    for origin in ("http://evil.example", f"http://evil.example:{p}", "null", f"http://127.0.0.1:{p + 1}",
                   f"ftp://127.0.0.1:{p}"):
        status, body = request(p, "POST", "/offer", offer, {"Origin": origin, **JSON})
        assert status == 403 and "cross-origin" in body["error"], (origin, status, body)
    for origin in (f"http://127.0.0.1:{p}", f"http://localhost:{p}", None):
        status, body = request(p, "POST", "/offer", offer,
                               {**JSON, "Content-Type": "application/json; charset=utf-8",
                                **({"Origin": origin} if origin else {})})
        assert status == 400 and body["error"].startswith("bad offer"), (origin, status, body)
    assert v.status()["peers"] == 0


def test_off_loopback_the_token_still_comes_first(tmp_path):
    cfg = ViewConfig(host="0.0.0.0", token="s3cret", endpoints=Endpoints(**endpoints(tmp_path)))

    async def requests(client):
        out = []
        for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "text/plain", "X-Fes-Token": "s3cret"},
                        {"Host": "evil.example", "X-Fes-Token": "s3cret", **JSON}):
            r = await client.post("/offer", data="{}", headers=headers)
            out.append((r.status, (await r.json())["error"][:20]))
        return out
    out = _run_app(cfg, requests)
    assert [o[0] for o in out] == [401, 415, 421], out


# ---------------------------------------------------------------- bad bodies

def test_bad_bodies_get_a_clean_json_error_never_a_500(viewers):
    v = viewers()
    bodies = {
        "deep list": b"[" * 100_000 + b"]" * 100_000,
        "deep object": b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
        "nested 40": b'{"sdp":' + b"[" * 40 + b"]" * 40 + b', "type": "offer"}',
        "not json": b"{sdp: offer}",
        "not utf-8": b'{"sdp": "\xff\xfe", "type": "offer"}',
        "NaN": b'{"sdp": NaN, "type": "offer"}',
        "a list": b'["offer"]',
        "a string": b'"offer"',
        "sdp a number": b'{"sdp": 1, "type": "offer"}',
        "stream an object": json.dumps({"sdp": "v=0\r\nm=video 9 x\r\n", "type": "offer", "stream": {}}).encode(),
        "empty": b"",
        "garbage SDP": json.dumps({"sdp": "v=0\r\nm=video garbage\r\n", "type": "offer"}).encode(),
    }
    for name, body in bodies.items():
        status, answer = request(v.port, "POST", "/offer", body, JSON)
        assert status == 400 and answer["error"], (name, status, answer)
    status, answer = request(v.port, "POST", "/offer", b" " * (300 * 1024), JSON)
    assert status == 413 and answer["error"], (status, answer)
    status, answer = request(v.port, "GET", "/no/such/route")
    assert status == 404 and answer["error"]
    status, answer = request(v.port, "PUT", "/offer", b"{}", JSON)
    assert status == 405 and answer["error"]
    assert v.status()["peers"] == 0 and v.proc.poll() is None
    assert "Traceback" not in v.log_text()


# ---------------------------------------------------------------- WebRTC clients (aiortc, loopback ICE)

async def offer_sdp() -> str:
    """A complete offer (data channel + recvonly video) from a peer connection that is closed at once, so the
    viewer's connectivity checks go nowhere: an offer that never connects."""
    from aiortc import RTCConfiguration, RTCPeerConnection
    use_loopback_ice()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("events")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


class Client:
    """A real WebRTC viewer client: data channel 'events' (every message kept), recvonly video."""

    async def connect(self, port: int, stream: str = "", timeout_s: float = 30.0) -> "Client":
        import aiohttp
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
        use_loopback_ice()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.messages: list[str] = []
        opened = asyncio.Event()
        dc = self.pc.createDataChannel("events")
        dc.on("message", self.messages.append)
        dc.on("open", opened.set)
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", "stream": stream}
        async with aiohttp.ClientSession() as http_session:
            async with http_session.post(f"http://127.0.0.1:{port}/offer", json=body) as r:
                answer = await r.json()
                assert r.status == 200, (r.status, answer)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(opened.wait(), timeout_s)
        return self

    def parsed(self) -> list[dict]:
        return [strict_json(m) for m in self.messages]

    async def close(self) -> None:
        await self.pc.close()


# ---------------------------------------------------------------- slots

@pytest.mark.slow
def test_offers_that_never_connect_lose_their_slot_and_one_client_cannot_take_them_all(viewers):
    timeout_s = 2.0
    v = viewers(max_peers=4, max_peers_per_client=2, connect_timeout_s=timeout_s)
    sdp = json.dumps({"sdp": asyncio.run(offer_sdp()), "type": "offer"})

    def offer(source: str) -> tuple[int, dict]:
        return request(v.port, "POST", "/offer", sdp, JSON, source=source)

    t0 = time.monotonic()
    assert [offer("127.0.0.1")[0] for _ in range(2)] == [200, 200]
    status, body = offer("127.0.0.1")
    assert status == 503 and "too many viewers from 127.0.0.1" in body["error"], body
    assert [offer("127.0.0.2")[0] for _ in range(2)] == [200, 200]
    status, body = offer("127.0.0.3")
    assert status == 503 and "viewer full" in body["error"], body
    s = v.status()
    assert s["peers"] == 4 and s["slots"]["connecting"] == 4, s
    wait_until(lambda: v.status()["peers"] == 0, "the never-connecting offers to be closed")
    assert time.monotonic() - t0 >= timeout_s * 0.9
    s = v.status()
    assert s["counters"]["connect_timeouts"] == 4 and s["counters"]["refused_full"] == 1, s

    async def real_client():  # a real viewer gets a slot again, connects, and keeps it past the deadline
        c = await Client().connect(v.port)
        try:
            await asyncio.sleep(timeout_s + 1.0)
            hello = [m for m in c.parsed() if m["t"] == "hello"]
            return hello, c.pc.connectionState, v.status()
        finally:
            await c.close()
    hello, state, s = asyncio.run(real_client())
    assert hello and state == "connected", (hello, state)
    assert s["peers"] == 1 and s["peer_list"][0]["connected"] and s["counters"]["connect_timeouts"] == 4, s


# ---------------------------------------------------------------- malformed previews

def preview_frames(sid: str, **change) -> list:
    """A well-formed preview message of stream `sid` (a real 64x48 JPEG), with header meta fields replaced."""
    ok, jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))
    p = wire.Preview(sid, 0, 0.0, time.time(), "found", jpeg.reshape(-1), np.full((478, 2), 10.0, np.float32),
                     (4.0, 4.0, 40.0, 40.0), 64, 48)
    frames = wire.preview_message(p)
    if change:
        head = json.loads(frames[1])
        for key, value in change.items():
            if key == "landmarks":
                frames[3] = np.asarray(value, np.float32).tobytes()
                head["arrays"][1]["shape"] = list(np.asarray(value).shape)
            else:
                head["meta"][key] = value
        frames[1] = json.dumps(head).encode()  # json.dumps writes NaN / Infinity as a buggy sender would
    return frames


def test_malformed_previews_are_counted_and_never_stop_the_preview_pump(viewers):
    v = viewers()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    try:
        pub.connect(v.ep["preview"])

        def seen(sid: str) -> bool:
            return any(s["id"] == sid for s in v.status()["streams"])
        # PUB/SUB joins late: repeat a good preview until the viewer has it, then the exact sequence below
        wait_until(lambda: pub.send_multipart(preview_frames("warmup")) or seen("warmup"), "the first preview")
        nan, inf = float("nan"), float("inf")
        bad = [preview_frames("b", box=["a", "b", "c", "d"]), preview_frames("b", box=[nan, 1, 2, 3]),
               preview_frames("b", box=[inf, 1, 2, 3]), preview_frames("b", box=[1, 2, 3]),
               preview_frames("b", box={"x": 1}), preview_frames("b", box=[True, False, 1, 2]),
               preview_frames("b", box=[1e300, 0, 1, 1]), preview_frames("b", box="1,2,3,4"),
               preview_frames("b", width="64"), preview_frames("b", width=0), preview_frames("b", height=-48),
               preview_frames("b", width=10**9), preview_frames("b", height=True), preview_frames("b", width=nan),
               preview_frames("b", landmarks=np.full((478, 2), nan)),
               preview_frames("b", landmarks=np.full((478, 2), 1e30)),
               preview_frames("b", landmarks=np.zeros((478, 3))),
               [b"preview/b", json.dumps({"v": 1}).encode()[:-1] + b',"meta":' + b"[" * 30_000 + b"]" * 30_000 + b"}"],
               [b"preview/b", b"\xff\xfe"], [b"preview/b"]]
        for frames in bad:
            pub.send_multipart(frames)
        pub.send_multipart(preview_frames("after"))
        wait_until(lambda: seen("after"), "the good preview sent after the malformed ones")
        s = v.status()
        assert s["counters"]["bad_preview"] == len(bad), s["counters"]
        assert not seen("b") and v.proc.poll() is None
        # an oversized message disconnects its sender unread (MAXMSGSIZE); the PUB reconnects by itself
        big = preview_frames("big")
        pub.send_multipart([big[0], big[1], np.zeros(9 << 20, np.uint8).tobytes(), big[3]])
        wait_until(lambda: pub.send_multipart(preview_frames("after-big")) or seen("after-big"), "a preview after it")
        assert not seen("big") and v.status()["counters"]["bad_preview"] == len(bad)
        assert "Traceback" not in v.log_text()
    finally:
        pub.close()
        ctx.term()


def test_preview_stream_ids_are_bounded_and_forgotten_when_quiet(viewers):
    v = viewers(max_streams=8, stream_idle_s=2.0)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    try:
        pub.connect(v.ep["preview"])
        wait_until(lambda: pub.send_multipart(preview_frames("warmup")) or v.status()["streams"], "the first preview")
        frames = preview_frames("x")
        before = v.status()["counters"]["previews"]
        for i in range(3000):  # a flood of stream ids, in bursts (a PUB drops what its peer cannot take)
            head = json.loads(frames[1])
            head["stream_id"] = f"flood-{i}"
            pub.send_multipart([f"preview/flood-{i}".encode(), json.dumps(head).encode(), *frames[2:]])
            if i % 50 == 49:
                time.sleep(0.01)
                assert len(v.status()["streams"]) <= 8 if i % 500 == 499 else True
        counters = wait_until(lambda: (c := v.status()["counters"])["previews"] >= before + 100 and c, "the flood", 60)
        t0 = time.monotonic()
        s = v.status()
        assert time.monotonic() - t0 < 5.0  # generous: O(max_streams), not O(ids seen)
        assert len(s["streams"]) <= 8, s["streams"]
        assert counters.get("streams_refused", 0) + counters.get("streams_forgotten", 0) >= 90, counters
        # quiet streams are forgotten; a real stream afterwards gets its place
        wait_until(lambda: not v.status()["streams"], "the flood's stream ids to be forgotten")
        wait_until(lambda: pub.send_multipart(preview_frames("real")) or
                   [x["id"] for x in v.status()["streams"]] == ["real"], "the real stream")
        assert v.proc.poll() is None
    finally:
        pub.close()
        ctx.term()


# ---------------------------------------------------------------- standard JSON to the browser

def nonstandard_event_message(event: dict) -> list:
    """What a buggy (or old) detector would send: an event message whose JSON body holds NaN / Infinity. The codec
    refuses to write that (and to read it), so it is built here by hand."""
    frames = wire.event_message({**event, "data": {}})
    body = json.dumps(event).encode()  # allow_nan: NaN, Infinity
    head = json.loads(frames[1])
    head["arrays"][0]["shape"] = [len(body)]
    return [frames[0], json.dumps(head).encode(), body]


def test_nan_and_infinity_never_reach_the_browser(viewers, tmp_path):
    """A buggy detector publishes `fps: NaN`, Infinity in stats and `wall_s` = 1e308 (finite, but x1000 overflows),
    in events and previews: the codec refuses all of them, so only its sound events and previews reach the page,
    every data-channel message is standard JSON, live and replayed to a later browser."""
    ep = endpoints(tmp_path / "nan")
    ctx = zmq.Context()
    events = ctx.socket(zmq.PUB)  # where the detector's event PUB would be: the viewer connects to it
    events.setsockopt(zmq.LINGER, 0)
    events.bind(ep["events"])
    preview = ctx.socket(zmq.PUB)
    preview.setsockopt(zmq.LINGER, 0)
    v = viewers("nan", endpoints=ep)
    nan, inf = float("nan"), float("inf")
    seq = iter(range(1, 10**6))

    def publish(etype: str, data: dict, sid: str = "s1", wall_s: float | None = None, encode=wire.event_message):
        wall_s = time.time() if wall_s is None else wall_s
        events.send_multipart(encode({"v": 1, "type": etype, "stream_id": sid, "seq": next(seq),
                                      "publisher": "p", "wall_s": wall_s, "data": data}))
    try:
        preview.connect(ep["preview"])

        async def scenario():
            c = await Client().connect(v.port)
            try:
                for _ in range(150):  # until the viewer has them (PUB/SUB joins late), at most ~15 s
                    publish("stream", {"status": "started", "fps": nan, "source": "x"},
                            encode=nonstandard_event_message)
                    publish("stats", {"fps_in": inf, "fps_out": -inf, "latency_ms_p50": nan, "queue": 0},
                            encode=nonstandard_event_message)
                    publish("stream", {"status": "started", "fps": 25.0, "source": "x"}, wall_s=1e308)
                    publish("stream", {"status": "started", "fps": 30.0, "source": "x"})
                    publish("stats", {"fps_in": 1e308, "fps_out": 2.0, "latency_ms_p50": None, "queue": 0})
                    frames = preview_frames("s1")
                    head = json.loads(frames[1])
                    head["wall_s"] = 1e308  # finite, but its milliseconds are not
                    preview.send_multipart([frames[0], json.dumps(head).encode(), *frames[2:]])
                    preview.send_multipart(preview_frames("s1"))
                    await asyncio.sleep(0.1)
                    got = c.parsed()  # strict: fails on any NaN / Infinity
                    types = {m["e"]["type"] for m in got if m["t"] == "event"}
                    if {"stream", "stats"} <= types and any(m["t"] == "frame" and m["s"] == "s1" for m in got):
                        break
                later = await Client().connect(v.port)  # the stream event again, from the viewer's history
                await asyncio.sleep(1.0)
                await later.close()
                return c.parsed(), later.parsed()
            finally:
                await c.close()
        live, replayed = asyncio.run(scenario())
        stream = next(m["e"] for m in live if m["t"] == "event" and m["e"]["type"] == "stream")
        assert all(m["e"]["data"].get("fps") == 30.0 for m in live if m["t"] == "event" and m["e"]["type"] == "stream")
        assert stream["data"] == {"status": "started", "fps": 30.0, "source": "x"} and stream["wall_s"] < 1e10
        stats = [m["e"]["data"] for m in live if m["t"] == "event" and m["e"]["type"] == "stats"]
        assert stats and all(d["fps_out"] == 2.0 and d["queue"] == 0 for d in stats)  # never the Infinity ones
        assert any(m["t"] == "frame" and m["s"] == "s1" for m in live)
        again = [m["e"] for m in replayed if m["t"] == "event" and m.get("replay")]
        assert any(e["type"] == "stream" and e["data"]["fps"] == 30.0 for e in again), replayed[:5]
        strict_json(json.dumps(v.status()))  # /api/status as well (request() parses strictly)
        request(v.port, "GET", "/api/status")
    finally:
        events.close()
        preview.close()
        ctx.term()


# ---------------------------------------------------------------- STUN

class StunServer:
    """A STUN server on 127.0.0.1 that answers binding requests and records who asked."""

    def __init__(self):
        from aioice import stun
        self.stun, self.requests = stun, []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
                req = self.stun.parse_message(data)
            except (OSError, ValueError):
                continue
            self.requests.append(addr)
            res = self.stun.Message(message_method=req.message_method, message_class=self.stun.Class.RESPONSE,
                                    transaction_id=req.transaction_id)
            res.attributes["XOR-MAPPED-ADDRESS"] = addr
            self.sock.sendto(bytes(res), addr)

    def close(self):
        self.stopping.set()
        self.thread.join(2)
        self.sock.close()


def test_the_server_asks_no_stun_server_unless_configured(viewers):
    from aiortc import RTCIceGatherer
    # what aioice is handed by the viewer's RTCConfiguration: nothing (aiortc's own default is Google's STUN host)
    assert RTCIceGatherer()._connection.stun_server == ("stun.l.google.com", 19302)
    default = rtc_configuration(ViewConfig())
    assert default.iceServers == [] and RTCIceGatherer(default.iceServers)._connection.stun_server is None
    with pytest.raises(ValueError, match="ice_servers"):
        ViewConfig(ice_servers=("http://example.org",))

    stun = StunServer()
    try:  # positive control: a configured STUN server is really asked, by the viewer and (via api/config) the page
        url = f"stun:127.0.0.1:{stun.port}"
        plain, configured = viewers("plain"), viewers("stun", ice_servers=[url])
        assert request(plain.port, "GET", "/api/config") == (200, {"iceServers": []})
        assert request(configured.port, "GET", "/api/config") == (200, {"iceServers": [{"urls": url}]})
        sdp = json.dumps({"sdp": asyncio.run(offer_sdp()), "type": "offer"})
        assert request(plain.port, "POST", "/offer", sdp, JSON)[0] == 200
        assert plain.status()["peer_list"][0]["ice_servers"] == []
        time.sleep(1.0)
        assert stun.requests == []
        status, answer = request(configured.port, "POST", "/offer", sdp, JSON)
        assert status == 200 and " typ srflx" in answer["sdp"], answer
        assert stun.requests, "the configured STUN server was never asked"
    finally:
        stun.close()
