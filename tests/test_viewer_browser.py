"""The viewer in real headless Chromium (Debian's package) over WebRTC on loopback.

Run strictly loopback-only with `unshare -n sh -c 'ip link set lo up && exec .venv/bin/pytest -q tests/test_viewer_*.py'`
(see ../shared/notes/webrtc_testing.md); in the default namespace everything is still bound to 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from fes_live.stream import wire
from fes_live.stream.client import fetch
from fes_live.stream.view import BAND_H, draw_band
from conftest import VIDEO, Procs, need
from test_viewer_server import Viewer, free_port

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CLIP = VIDEO / "pyfeat_single_face.mp4"
NO_FACE = VIDEO / "pyfeat_no_face.mp4"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         "--allow-loopback-in-peer-connection",  # else Chromium gathers no 127.0.0.1 candidate: ICE hangs
         "--disable-features=WebRtcHideLocalIpsWithMdns",  # else candidates hide behind mDNS names
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def launch(playwright, extra: list[str] = ()):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[*FLAGS, *extra])


@pytest.fixture(scope="module")
def pw():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p


def endpoints(tmp: Path) -> dict:
    return {"preview": f"ipc://{tmp}/preview", "features": f"ipc://{tmp}/features",
            "events": f"tcp://127.0.0.1:{free_port()}", "replay": f"tcp://127.0.0.1:{free_port()}"}


def close_all(*things) -> None:
    """Close each browser, viewer or role that was started (None: never got that far), every one even when one
    of them fails to close."""
    errors = []
    for thing in things:
        try:
            if thing is not None:
                thing.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    if errors:
        raise errors[0]


def wait_for(page, js: str, what: str, timeout_s: float = 20.0):
    """page.wait_for_function with the page's probe in the failure message instead of a bare timeout."""
    try:
        return page.wait_for_function(js, timeout=timeout_s * 1000)
    except Exception:
        probe = page.evaluate("JSON.stringify(window.__probe || null)")
        raise AssertionError(f"timed out waiting for {what}; probe: {str(probe)[:1500]}") from None


def write_y4m(src: Path, dst: Path, band: bool = False) -> tuple[int, int, int]:
    """The clip as a raw I420 YUV4MPEG2 file, what Chromium's file-backed fake camera reads. With `band`, each
    frame gets the viewer's frame band (its number) appended below it, so the page can time camera -> display."""
    cap = cv2.VideoCapture(str(src))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    h, w = frames[0].shape[:2]
    with open(dst, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h + (BAND_H if band else 0)} F30:1 Ip A1:1 C420jpeg\n".encode())
        for i, img in enumerate(frames):
            if band:
                img = np.vstack([img, draw_band(w, i)])
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420).tobytes())
    return w, h, len(frames)


# Page-side timing of the camera path: the clip's own band (frame number) is read from the local camera preview
# (rVFC captureTime = when the fake camera produced it) and again from the annotated video that comes back from
# the server (rVFC expectedDisplayTime). Same page, same clock: glass-to-glass of the whole browser-camera path.
CAMERA_G2G_JS = """
(() => {
  const g = window.__g2g = {captured: {}, lat: [], selfOk: 0, echoOk: 0, echoBad: 0};
  const cv = document.createElement('canvas'), ctx = cv.getContext('2d', {willReadFrequently: true});
  const FRAC = %(band)d / (360 + %(band)d), BITS = 16, OUT_W = 640, OUT_H = 360;  // band / clip height
  function read(v, x0, yMid, w) {            // 16 blocks across [x0, x0 + w) sampled on row yMid
    cv.width = v.videoWidth; cv.height = v.videoHeight; ctx.drawImage(v, 0, 0);
    const row = ctx.getImageData(0, Math.round(yMid), cv.width, 1).data;
    let word = 0;
    for (let i = 0; i < BITS; i++) {
      const x = Math.round(x0 + (i + 0.5) * w / BITS), lum = (row[4*x] + row[4*x+1] + row[4*x+2]) / 3;
      word = (word << 1) | (lum > 127 ? 1 : 0);
    }
    const t = word >> 4, check = (t >> 8) ^ ((t >> 4) & 15) ^ (t & 15);
    return (word & 15) === check ? t : null;
  }
  const self = document.getElementById('self'), video = document.getElementById('video');
  function onSelf(now, m) {
    const h = self.videoHeight, n = read(self, 0, h * (1 - FRAC / 2), self.videoWidth);
    if (n !== null) { g.selfOk++; g.captured[n] = performance.timeOrigin + (m.captureTime || m.expectedDisplayTime); }
    self.requestVideoFrameCallback(onSelf);
  }
  function onEcho(now, m) {
    const cw = self.videoWidth, ch = self.videoHeight;
    if (cw && ch) {   // where the server letterboxed the camera picture (band included) in its 640x360 output
      const s = Math.min(OUT_W / cw, OUT_H / ch), nw = cw * s, nh = ch * s, x0 = (OUT_W - nw) / 2, y0 = (OUT_H - nh) / 2;
      const n = read(video, x0, y0 + nh * (1 - FRAC / 2), nw), shown = performance.timeOrigin + m.expectedDisplayTime;
      if (n !== null && g.captured[n] !== undefined && shown - g.captured[n] < 2000) {
        g.echoOk++; g.lat.push(shown - g.captured[n]);
      } else g.echoBad++;
    }
    video.requestVideoFrameCallback(onEcho);
  }
  self.requestVideoFrameCallback(onSelf);
  video.requestVideoFrameCallback(onEcho);
})();
""" % {"band": BAND_H}


def latency_summary(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=10)
    return f"median {statistics.median(ms):.0f} ms, p90 {q[-1]:.0f} ms, max {max(ms):.0f} ms over {len(ms)} frames"


def test_browser_camera_goes_through_face_tracking_to_the_detector_socket(pw, tmp_path, face_model, capsys):
    """getUserMedia (a real face clip as the fake camera) -> aiortc -> FaceTracker + FeatureExtractor -> features
    messages on the detector's socket; the annotated stream comes back to the page."""
    need(CLIP)
    clip = tmp_path / "face.y4m"
    w, h, n = write_y4m(CLIP, clip, band=True)
    assert (w, h, n) == (640, 360, 72)
    ep = endpoints(tmp_path)
    ctx = zmq.Context()
    detector_in = ctx.socket(zmq.PULL)  # where the detector would listen: we read what the viewer sends it
    detector_in.bind(ep["features"])
    viewer = browser = None
    try:
        viewer = Viewer(tmp_path, ep)
        browser = launch(pw, [f"--use-file-for-fake-video-capture={clip}"])
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(viewer.url + "?camera=1")
        wait_for(page, "window.__probe.camera && window.__probe.iceState === 'connected'", "ICE with the camera")
        assert "face.y4m" in page.evaluate("window.__probe.camera.label")
        page.evaluate(CAMERA_G2G_JS)
        wait_for(page, "window.__probe.lastFrame && window.__probe.lastFrame.stream === 'browser-1' "
                       "&& window.__probe.lastFrame.face === 'tracked'", "the annotated camera stream", 40)

        found, messages, t_end = 0, [], time.monotonic() + 20
        while time.monotonic() < t_end and found < 30:
            if detector_in.poll(500):
                msg = wire.decode(detector_in.recv_multipart(copy=False))
                messages.append(msg.header)
                if msg.header.kind == "features":
                    feats = wire.to_features(msg)
                    found += feats.face_present and bool(np.abs(feats.geometry).sum() > 0)
        assert messages[0].kind == "control" and messages[0].meta["status"] == "started", messages[:2]
        assert {m.stream_id for m in messages} == {"browser-1"}
        assert found >= 30, f"only {found} frames with a face among {len(messages)} messages"
        cams = viewer.status()["cameras"]["browser-1"]
        assert cams.get("face_found", 0) + cams.get("face_tracked", 0) >= 30, cams

        wait_for(page, "window.__probe.latencies.length >= 40 && window.__g2g.lat.length >= 40",
                 "40 frames timed both ways", 20)
        probe = page.evaluate("({lat: window.__probe.latencies, bandOk: window.__probe.bandOk, "
                              "bandBad: window.__probe.bandBad, errors: window.__probe.errors, "
                              "g2g: {...window.__g2g, captured: null}})")
        assert not probe["errors"], probe["errors"]
        lat = probe["lat"][-60:]
        assert len(lat) >= 20 and statistics.median(lat) < 1000, probe
        g2g = probe["g2g"]["lat"][-60:]
        assert len(g2g) >= 20 and statistics.median(g2g) < 1000, probe["g2g"]
        shot = tmp_path / "viewer_camera.png"
        page.screenshot(path=str(shot))
        with capsys.disabled():
            print(f"\n[viewer] browser camera glass-to-glass (camera capture -> upload -> face tracking -> "
                  f"annotated video shown): {latency_summary(g2g)}")
            print(f"[viewer] browser camera: server receive -> face tracking -> display: {latency_summary(lat)}; "
                  f"band decoded {probe['bandOk']}/{probe['bandOk'] + probe['bandBad']}; screenshot {shot}")
    finally:
        close_all(browser, viewer)
        detector_in.close(0)
        ctx.term()


DEFAULT_ENGINE = REPO / "stream" / "engines" / "default"


class Role:
    """One `fes-live <role>` subprocess (its own process group) with its log in the test's tmp dir."""

    def __init__(self, tmp: Path, name: str, args: list[str]):
        self.name, self.log = name, open(tmp / f"{name}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "fes_live.stream.cli", name.split("-")[0], *args], cwd=REPO,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})

    def close(self) -> None:
        Procs.kill_group(self.proc, grace_s=15.0)
        self.log.close()


def test_live_pipeline_in_the_browser(pw, tmp_path, face_model, capsys):
    """Real detector + viewer + ingest processes on pyfeat_single_face.mp4 (and pyfeat_no_face.mp4 as a second
    stream): the video plays with the face drawn, the user switches streams ("no face" on the second), the
    detector's expression events for the smile appear on the timeline exactly as published (provisional onsets,
    cancelled or turned final), the plot fills, "stream ended" shows; glass-to-glass latency (ingest capture ->
    browser display) is measured per frame and printed."""
    need(CLIP), need(NO_FACE)
    engine = Path(os.environ.get("FES_ENGINE", DEFAULT_ENGINE))
    if not (engine / "manifest.json").is_file():
        pytest.skip(f"no engine at {engine} (the models issue ships stream/engines/default)")
    ep = endpoints(tmp_path)
    roles: list[Role] = []
    viewer = browser = None
    try:
        roles.append(Role(tmp_path, "detect", ["--engine", str(engine), "--features-endpoint", ep["features"],
                                               "--events-endpoint", ep["events"], "--replay-endpoint", ep["replay"]]))
        viewer = Viewer(tmp_path, ep, engine=str(engine))
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(viewer.url)
        wait_for(page, "window.__probe.iceState === 'connected' && window.__probe.dcState === 'open'", "ICE + DC")
        wait_for(page, "document.getElementById('video').videoWidth > 0", "the video (placeholder) to play")
        deadline = time.monotonic() + 60  # the detector loads its engine; its periodic stats reach the viewer
        while not any(k.startswith("event:") for k in viewer.status()["counters"]):
            assert time.monotonic() < deadline, f"no event from the detector: {(tmp_path / 'detect.log').read_text()[-2000:]}"
            assert roles[0].proc.poll() is None, (tmp_path / "detect.log").read_text()[-3000:]
            time.sleep(0.2)
        for sid, clip in (("pyfeat", CLIP), ("noface", NO_FACE)):  # two sources at once: per-stream selection
            roles.append(Role(tmp_path, f"ingest-{sid}", ["--source", str(clip), "--stream-id", sid,
                                                          "--features-endpoint", ep["features"],
                                                          "--preview-endpoint", ep["preview"]]))
        wait_for(page, "window.__probe.streams.includes('pyfeat') && window.__probe.streams.includes('noface')",
                 "both streams", 60)
        page.select_option("#stream", "noface")
        wait_for(page, "window.__probe.lastFrame && window.__probe.lastFrame.stream === 'noface' "
                       "&& document.getElementById('banner').textContent === 'no face'", "the no-face stream", 20)
        t0 = page.evaluate("document.getElementById('video').currentTime")
        time.sleep(1.0)
        assert page.evaluate("document.getElementById('video').currentTime") - t0 > 0.5
        page.select_option("#stream", "pyfeat")
        wait_for(page, "window.__probe.lastFrame && window.__probe.lastFrame.stream === 'pyfeat' "
                       "&& window.__probe.lastFrame.face !== 'none'", "the pyfeat stream with its face", 20)
        wait_for(page, "document.getElementById('banner').textContent === 'stream ended'", "'stream ended'", 60)
        # what the detector really said about pyfeat (its replay endpoint), against what the timeline shows
        truth = [e for e in fetch(ep["replay"], 0)[0] if e["stream_id"] == "pyfeat" and e["type"].startswith("expr")]
        assert truth, "the detector published no expression event for the smile"
        finals = [e["data"] for e in truth if e["type"] == "expression"]
        onsets = {e["data"]["track"] for e in truth if e["type"] == "expression.onset"}
        cancelled = {e["data"]["track"] for e in truth if e["type"] == "expression.cancel"}
        n_items = len(onsets | {f["track"] for f in finals if f["track"] >= 0}) + sum(f["track"] < 0 for f in finals)
        wait_for(page, f"window.__probe.timeline === {n_items}", f"{n_items} timeline entries", 10)
        probe = page.evaluate("({...window.__probe, latencies: window.__probe.latencies})")
        items = probe["timelineItems"]
        assert sorted((i["kind"], i["emotion"]) for i in items if i["final"]) == \
            sorted((f["kind"], f["emotion"]) for f in finals), (items, finals)
        assert {i["track"] for i in items if i["cancelled"]} == cancelled, (items, cancelled)
        assert probe["promoted"] == len(onsets & {f["track"] for f in finals}), (probe["promoted"], truth)
        shot = tmp_path / "viewer_screenshot.png"
        page.screenshot(path=str(shot))
        assert not probe["errors"], probe["errors"]
        assert probe["byType"]["event"] > 5 and probe["plotDraws"] > 5 and probe["plotPoints"] >= 30, probe
        assert probe["levelPoints"] >= 30, probe  # the expression level is drawn as well
        assert probe["thresholds"] == [], probe["thresholds"]  # FEDN decides: no line on GIM's curve
        assert probe["byType"].get("frame", 0) > 20
        assert re.search(r"spotted at\s+30\.0 fps", page.inner_text("#stats")), page.inner_text("#stats")
        # a viewer attached later gets the recent past from the detector's replay endpoint
        late = Viewer(tmp_path / "late", {**ep, "preview": f"ipc://{tmp_path}/preview-late"})
        try:
            page2 = browser.new_page()
            page2.goto(late.url)
            page2.select_option("#stream", "pyfeat")  # known from the replayed events alone
            wait_for(page2, f"window.__probe.timeline === {n_items} && window.__probe.plotPoints >= 30",
                     "the replayed timeline and plot", 20)
        finally:
            late.close()
        lat = probe["latencies"]
        assert len(lat) >= 10 and statistics.median(lat) < 500, lat
        with capsys.disabled():
            print(f"\n[viewer] glass-to-glass, ingest capture -> browser display: {latency_summary(lat)}")
            print(f"[viewer] events {probe['eventTypes']}, onsets turned final: {probe['promoted']}; "
                  f"timeline: {probe['timelineText']!r}; screenshot {shot}")
    finally:
        close_all(browser, *reversed(roles), viewer)


def test_page_says_reconnecting_and_comes_back_when_the_viewer_restarts(pw, tmp_path):
    """The viewer process stops (SIGTERM) and starts again on the same port: the page shows 'reconnecting…',
    then reconnects by itself and the video plays again."""
    ep = endpoints(tmp_path)
    viewer = browser = None
    try:
        viewer = Viewer(tmp_path, ep)
        browser = launch(pw)
        page = browser.new_page()
        page.goto(viewer.url)
        wait_for(page, "window.__probe.iceState === 'connected' && window.__probe.frames > 3", "first connection")
        assert page.evaluate("document.getElementById('banner').textContent") == "waiting for a stream"
        viewer.close()
        wait_for(page, "document.getElementById('banner').textContent.startsWith('reconnecting')", "'reconnecting'", 10)
        frames = page.evaluate("window.__probe.frames")
        port, viewer = viewer.port, None
        viewer = Viewer(tmp_path, ep, port=port)
        wait_for(page, f"window.__probe.connects >= 2 && window.__probe.connState === 'connected' "
                       f"&& window.__probe.frames > {frames + 3}", "the reconnection", 30)
        assert page.evaluate("document.getElementById('conn').textContent") == "live"
    finally:
        close_all(browser, viewer)


def test_browser_camera_stream_reaches_the_detector_and_its_events_come_back(pw, tmp_path, face_model):
    """The browser camera as a pipeline stream end to end: the real detector announces `browser-1`, and its
    intensity curve for that stream comes back to the page's plot."""
    need(CLIP)
    engine = Path(os.environ.get("FES_ENGINE", DEFAULT_ENGINE))
    if not (engine / "manifest.json").is_file():
        pytest.skip(f"no engine at {engine} (the models issue ships stream/engines/default)")
    clip = tmp_path / "face.y4m"
    write_y4m(CLIP, clip)
    ep = endpoints(tmp_path)
    detector = viewer = browser = None
    try:
        detector = Role(tmp_path, "detect", ["--engine", str(engine), "--features-endpoint", ep["features"],
                                             "--events-endpoint", ep["events"], "--replay-endpoint", ep["replay"]])
        viewer = Viewer(tmp_path, ep, engine=str(engine))
        browser = launch(pw, [f"--use-file-for-fake-video-capture={clip}"])
        deadline = time.monotonic() + 60  # the detector loads its engine; its periodic stats reach the viewer
        while not any(k.startswith("event:") for k in viewer.status()["counters"]):
            assert time.monotonic() < deadline and detector.proc.poll() is None, \
                (tmp_path / "detect.log").read_text()[-3000:]
            time.sleep(0.2)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(viewer.url + "?camera=1")
        wait_for(page, "window.__probe.iceState === 'connected'", "ICE with the camera")
        wait_for(page, "window.__probe.eventTypes.stream >= 1 && window.__probe.eventTypes.intensity >= 5 "
                       "&& window.__probe.plotPoints >= 20", "the detector's events for browser-1", 60)
        streams = page.evaluate("window.__probe.streams")
        assert streams == ["browser-1"], streams
        time.sleep(1)  # more of the curve on the plot, for the screenshot
        page.screenshot(path=str(tmp_path / "viewer_browser_camera.png"))
        assert not page.evaluate("window.__probe.errors")
    finally:
        close_all(browser, viewer, detector)


def test_page_uses_no_stun_by_default_parses_every_message_and_gets_a_slot_after_a_dead_offer(pw, tmp_path):
    """The page's RTCPeerConnection has no ICE servers unless the viewer configures some (`ice_servers`, via
    api/config); events with NaN / Infinity from a buggy detector reach it as null, without a JSON.parse error;
    with the only slot held by an offer that never connects, the page is refused (503), retries by itself, and is
    served once the viewer's connect deadline has freed the slot."""
    import asyncio
    import concurrent.futures
    from test_viewer_security import nonstandard_event_message, offer_sdp, request
    ep = endpoints(tmp_path)
    ctx = zmq.Context()
    events = ctx.socket(zmq.PUB)  # the detector's event PUB, as far as the viewer can tell
    events.setsockopt(zmq.LINGER, 0)
    events.bind(ep["events"])
    viewer = configured = browser = None
    try:
        viewer = Viewer(tmp_path, ep, max_peers=1, max_peers_per_client=1, connect_timeout_s=3.0)
        configured = Viewer(tmp_path / "stun", endpoints(tmp_path / "stun"), ice_servers=["stun:127.0.0.1:9"])
        browser = launch(pw)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # playwright's loop runs in this thread
            sdp = json.dumps({"sdp": pool.submit(asyncio.run, offer_sdp()).result(), "type": "offer"})
        assert request(viewer.port, "POST", "/offer", sdp, {"Content-Type": "application/json"})[0] == 200
        page = browser.new_page()
        page.goto(viewer.url)
        wait_for(page, "window.__probe.iceState === 'connected' && window.__probe.dcState === 'open'",
                 "the page to be served after the dead offer's deadline", 40)
        probe = page.evaluate("window.__probe")
        assert probe["iceServers"] == [], probe["iceServers"]
        assert any("viewer full" in e for e in probe["errors"]), probe["errors"]  # the 503 it was given first
        assert viewer.status()["counters"]["connect_timeouts"] == 1
        errors_before = len(probe["errors"])
        for i in range(100):  # until the page has them (PUB/SUB joins late)
            for etype, data, encode in (
                    ("stream", {"status": "started", "fps": float("nan")}, nonstandard_event_message),  # refused
                    ("stream", {"status": "started", "fps": 30.0}, wire.event_message),
                    ("stats", {"fps_in": 1e308, "fps_out": 1.0, "queue": 0}, wire.event_message)):
                events.send_multipart(encode({"v": 1, "type": etype, "stream_id": "s1", "seq": i,
                                              "publisher": "p", "wall_s": time.time(), "data": data}))
            if page.evaluate("window.__probe.eventTypes.stream >= 1 && window.__probe.eventTypes.stats >= 1"):
                break
            time.sleep(0.1)
        wait_for(page, "window.__probe.eventTypes.stream >= 1 && window.__probe.eventTypes.stats >= 1", "the events", 5)
        assert page.evaluate("window.__probe.errors.length") == errors_before, page.evaluate("window.__probe.errors")
        page2 = browser.new_page()
        page2.goto(configured.url)
        wait_for(page2, "window.__probe.iceServers !== null", "the page's peer connection")
        servers = page2.evaluate("window.__probe.iceServers")
        assert [s["urls"] for s in servers] in ([["stun:127.0.0.1:9"]], ["stun:127.0.0.1:9"]), servers
    finally:
        close_all(browser, viewer, configured)
        events.close()
        ctx.term()
