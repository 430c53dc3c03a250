"""The viewer's server side without a browser: frame band, ICE candidate filter, config, access token, bad input."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import zmq

from conftest import Procs, scaled
from test_events_wire import free_port
from fes_live.stream import wire
from fes_live.stream.config import ConfigError, from_dict
from fes_live.stream.view import (BAND_H, TOKEN_MOD, ViewConfig, build_app, draw_band, loopback_candidates_only,
                                  prepare, read_band, rtc_configuration)

REPO = Path(__file__).resolve().parents[1]


def endpoints(tmp_path: Path) -> dict:
    return {"preview": f"ipc://{tmp_path}/preview", "events": f"tcp://127.0.0.1:{free_port()}",
            "features": f"ipc://{tmp_path}/features", "replay": f"tcp://127.0.0.1:{free_port()}"}


def test_band_roundtrip_every_token_and_rejects_a_flipped_bit():
    for token in range(TOKEN_MOD):
        assert read_band(draw_band(640, token)) == token
    band = draw_band(640, 1234)
    assert band.shape == (BAND_H, 640, 3)
    band[:, 600:640] = 255 - band[:, 600:640]  # flip the last check bit
    assert read_band(band) is None
    noisy = np.clip(draw_band(640, 77).astype(int) + np.random.default_rng(0).integers(-60, 60, (BAND_H, 640, 3)),
                    0, 255).astype(np.uint8)  # codec noise well below half the range still decodes
    assert read_band(noisy) == 77


def test_loopback_filter_keeps_only_127_0_0_1_candidates():
    sdp = "\r\n".join([
        "v=0", "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
        "a=candidate:2 1 udp 2122194687 10.0.0.5 50001 typ host",
        "a=candidate:3 1 udp 2122194687 8d1c-uuid.local 50002 typ host",
        "a=candidate:4 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active", "a=mid:0"]) + "\r\n"
    out = loopback_candidates_only(sdp)
    assert "127.0.0.1 50000" in out and "127.0.0.1 9 typ host" in out
    assert "10.0.0.5" not in out and ".local" not in out and "a=mid:0" in out


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="prot"):
        from_dict(ViewConfig, {"prot": 8080})
    with pytest.raises(ConfigError, match="previw"):
        from_dict(ViewConfig, {"endpoints": {"previw": "ipc:///x"}})
    with pytest.raises(ValueError, match="port"):
        from_dict(ViewConfig, {"port": 70000})
    with pytest.raises(ValueError, match="width"):
        from_dict(ViewConfig, {"width": 100})
    for bad, match in (({"allowed_hosts": "a.example"}, "allowed_hosts"), ({"ice_servers": "stun:x"}, "ice_servers"),
                       ({"ice_servers": [{"urls": "stun:x", "secret": 1}]}, "ice_servers"),
                       ({"max_peers_per_client": 0}, "max_peers"), ({"connect_timeout_s": 0}, "connect_timeout_s")):
        with pytest.raises(ValueError, match=match):
            from_dict(ViewConfig, bad)
    assert from_dict(ViewConfig, {"max_peers": 2}).max_peers == 2  # the per-client cap needs no change with it
    turn = from_dict(ViewConfig, {"ice_servers": ["stun:a:3478", {"urls": "turn:b:3478", "username": "u",
                                                                  "credential": "c"}]})
    assert rtc_configuration(turn).iceServers[1].username == "u"
    cfg = from_dict(ViewConfig, {"endpoints": {"events": "tcp://127.0.0.1:6000"}})
    assert cfg.host == "127.0.0.1" and not cfg.needs_token and cfg.endpoints.events == "tcp://127.0.0.1:6000"
    assert prepare(ViewConfig(host="0.0.0.0")).token  # bound elsewhere: a token is made up
    assert prepare(ViewConfig(host="0.0.0.0")).token != prepare(ViewConfig(host="0.0.0.0")).token


def _run_app(cfg: ViewConfig, requests):
    """Serve build_app(cfg) on 127.0.0.1 (whatever cfg.host says) and run `requests(client)` against it."""
    from aiohttp.test_utils import TestClient, TestServer

    async def go():
        async with TestClient(TestServer(build_app(cfg), host="127.0.0.1")) as client:
            return await requests(client)
    return asyncio.run(go())


def test_token_required_on_every_request_when_not_on_loopback(tmp_path):
    cfg = prepare(from_dict(ViewConfig, {"host": "0.0.0.0", "endpoints": endpoints(tmp_path)}))
    token = cfg.token

    async def requests(client):
        out = {}
        for name, path, headers in [("none", "/", {}), ("wrong", "/?token=nope", {}),
                                    ("js_none", "/static/viewer.js", {}), ("status_none", "/api/status", {}),
                                    ("header", "/api/status", {"X-Fes-Token": token}),
                                    ("bearer", "/static/viewer.css", {"Authorization": f"Bearer {token}"})]:
            r = await client.get(path, headers=headers)
            out[name] = r.status
        r = await client.post("/offer", data=json.dumps({"sdp": "x", "type": "offer"}))
        out["offer_none"] = r.status
        r = await client.get(f"/?token={token}")
        out["query"] = r.status
        out["cookie_set"] = "fes_token" in r.cookies
        r = await client.get("/static/viewer.js")  # the page's own sub-requests carry the cookie
        out["js_cookie"] = r.status
        return out

    out = _run_app(cfg, requests)
    assert out == {"none": 401, "wrong": 401, "js_none": 401, "status_none": 401, "header": 200, "bearer": 200,
                   "offer_none": 401, "query": 200, "cookie_set": True, "js_cookie": 200}


def test_loopback_needs_no_token_and_bad_offers_get_400(tmp_path):
    cfg = prepare(from_dict(ViewConfig, {"endpoints": endpoints(tmp_path)}))

    async def requests(client):
        out = [(await client.get("/")).status, (await client.get("/static/viewer.js")).status,
               (await client.get("/static/../view.py")).status]
        for body in ["not json", json.dumps({"type": "offer"}), json.dumps({"sdp": "v=0", "type": "answer"}),
                     json.dumps({"sdp": "garbage", "type": "offer"})]:
            r = await client.post("/offer", data=body, headers={"Content-Type": "application/json"})
            out.append((r.status, (await r.text())[:80]))
        out.append((await client.get("/api/status")).status)
        return out

    out = _run_app(cfg, requests)
    assert out[:3] == [200, 200, 404]
    assert [o[0] for o in out[3:7]] == [400, 400, 400, 400], out
    assert out[7] == 200


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Poll until the viewer answers: a start imports aiortc, OpenCV and torch, slow on a busy machine (scaled)."""
    timeout_s = scaled(timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"viewer exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def test_cli_serves_with_token_and_survives_garbage_previews(tmp_path):
    """`fes-live view --token T`: 401 without it; garbage on the preview socket is counted, not fatal."""
    port, ep = free_port(), endpoints(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fes_live.stream.cli", "view", "--port", str(port), "--token", "s3cret",
         "--preview", ep["preview"], "--events", ep["events"], "--features", ep["features"]],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/", proc)
        assert _get(base + "/")[0] == 401
        assert _get(base + "/?token=s3cret")[0] == 200
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.connect(ep["preview"])
        time.sleep(0.5)  # PUB/SUB slow joiner: only for this fire-and-forget garbage
        good = wire.Preview("s", 0, 0.0, time.time(), "none", np.frombuffer(b"not a jpeg", np.uint8),
                            np.zeros((0, 2), np.float32), None, 64, 64)
        for frames in ([b"preview/x", b"{not json"], [b"preview/x"], [b"preview/x", b"\xff" * 10, b"z"],
                       wire.preview_message(good)):
            pub.send_multipart(frames)
        time.sleep(0.5)
        status = json.loads(_get(base + "/api/status", {"X-Fes-Token": "s3cret"})[1])
        assert status["counters"].get("bad_preview") == 3, status
        assert status["counters"].get("previews") == 1 and status["streams"][0]["id"] == "s"
        pub.close(linger=0)
        ctx.term()
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert f"http://127.0.0.1:{port}/?token=s3cret" in out


def test_cli_fails_fast_and_clearly_on_a_taken_port_or_a_bad_endpoint(tmp_path):
    ep = endpoints(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for extra, message in ([["--port", str(port)], f"cannot serve on 127.0.0.1:{port}"],
                               [["--port", "0", "--preview", "bogus://nowhere"], "preview endpoint 'bogus://nowhere'"]):
            args = ["--preview", ep["preview"], "--events", ep["events"], *extra]
            t0 = time.monotonic()
            out = subprocess.run([sys.executable, "-m", "fes_live.stream.cli", "view", *args], cwd=REPO, capture_output=True,
                                 text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
            assert out.returncode == 1 and message in out.stderr, out.stderr[-2000:]
            assert "Traceback" not in out.stderr and time.monotonic() - t0 < 20


class Viewer:
    """`fes-live view` as a subprocess (own process group), loopback-only ICE, on a free port; `extra`: ViewConfig
    keys. Its log is in `tmp/view.log`."""

    def __init__(self, tmp: Path, ep: dict, port: int = 0, **extra):
        tmp.mkdir(exist_ok=True)
        self.port = port or free_port()
        cfg = tmp / "view.json"
        cfg.write_text(json.dumps({"port": self.port, "loopback_only": True, "endpoints": ep, **extra}))
        self.log_path = tmp / "view.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "fes_live.stream.cli", "view", "--config", str(cfg)],
                                     cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
        self.url = f"http://127.0.0.1:{self.port}/"
        try:
            wait_http(self.url, self.proc)
        except BaseException:
            self.close()
            raise

    def status(self) -> dict:
        return json.loads(_get(self.url + "api/status")[1])

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def close(self) -> None:
        Procs.kill_group(self.proc, grace_s=10.0)  # its process group: nothing it started outlives it
        self.log.close()


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL (its whole process group when it has its own) if it does not end in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, 9) if os.getpgid(proc.pid) == proc.pid else proc.kill()
            except ProcessLookupError:
                pass
            proc.wait(5)


def test_the_plot_draws_only_the_levels_the_detector_acts_on(tmp_path):
    """GIM's curve is plotted with the onset line where the curve announces onsets and the proposal line where its
    proposals can become events; for the bundled engines FEDN decides both, so the curve has no lines."""
    from fes_live.stream.view import plot_thresholds

    def engine(spotter: dict, models=("gim", "fedn")) -> str:
        folder = tmp_path / f"e{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"models": {m: {} for m in models}, "spotter": spotter}))
        return str(folder)

    off = {"proposals": {"score_threshold": [10.0, 10.0]}}
    assert [t["label"] for t in plot_thresholds(engine({}))] == ["onset", "proposal"]
    assert plot_thresholds(engine({"onset_threshold": 0.6}))[0] == {"value": 0.6, "label": "onset"}
    assert plot_thresholds(engine(off)) == []
    assert [t["label"] for t in plot_thresholds(engine({**off, "onsets": "gim"}))] == ["onset"]
    assert [t["label"] for t in plot_thresholds(engine(off, models=("gim",)))] == ["onset"]   # GIM only
    assert plot_thresholds("") == [] and plot_thresholds("lab") == []                        # the bundled ones
    assert plot_thresholds(engine({"onsets": "sometimes"})) == []                             # a bad manifest
    assert plot_thresholds(str(tmp_path / "missing")) == []
