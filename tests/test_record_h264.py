"""Recorded clips play in a browser: `--record` clips and `fes-synth` videos are H.264 (yuv420p, faststart), and
headless Chromium (the viewer test's browser) plays one, where it refuses OpenCV's MPEG-4 Part 2 (`mp4v`)."""
import functools
import http.server
import threading

import av
import cv2
import numpy as np
import pytest

from conftest import VIDEO, need
from fes_live.stream.record import ClipRecorder
from fes_live.stream.sources import SourceConfig, open_source
from fes_live.stream.video_writer import VideoWriter

SMILE = VIDEO / "pyfeat_single_face.mp4"


def probe(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.codec_context.name, s.codec_context.pix_fmt, sum(1 for _ in c.decode(s))


def recorded_clip(folder):
    """A clip of the smile through the real ClipRecorder: the frames of the file, one expression event."""
    need(SMILE)
    rec = ClipRecorder(folder, "cam0", 30.0, pad_s=0.2)
    with open_source(str(SMILE), SourceConfig()) as src:
        for frame in src:
            rec.add(frame)
            if frame.index == 40:
                pt = lambda f: {"frame": f, "pts_s": f / 30, "wall_s": None}
                rec.on_event({"type": "expression", "stream_id": "cam0", "data": {
                    "onset": pt(10), "apex": pt(20), "offset": pt(30), "kind": "macro"}})
    rec.close()
    (clip,) = rec.written
    return clip


def test_clips_and_synth_videos_are_h264(tmp_path):
    clip = recorded_clip(tmp_path)
    assert probe(clip) == ("h264", "yuv420p", (30 - 10 + 1) + 2 * 6)  # the expression + 0.2 s each side
    data = clip.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart
    from fes_live.train.synth_layouts import Mp4Sink  # fes-synth's native videos go through the same writer
    sink = Mp4Sink(tmp_path / "synth.mp4", 30.0, (321, 241))
    for i in range(10):
        sink.write(np.full((241, 321, 3), 20 * i, np.uint8))  # odd sizes are cropped to even
    sink.close()
    assert probe(tmp_path / "synth.mp4") == ("h264", "yuv420p", 10)
    for name in ("x.mp4", "y.mp4"):  # the same frames, the same file
        with VideoWriter(tmp_path / name, 30.0) as w:
            for i in range(20):
                w.write(np.random.default_rng(i).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    assert (tmp_path / "x.mp4").read_bytes() == (tmp_path / "y.mp4").read_bytes()
    with pytest.raises(ValueError, match="differs"):
        with VideoWriter(tmp_path / "bad.mp4", 30.0) as w:
            w.write(np.zeros((64, 64, 3), np.uint8))
            w.write(np.zeros((32, 32, 3), np.uint8))


def test_a_clip_plays_at_the_speed_it_was_filmed(tmp_path):
    """A camera that says 30 fps and gives 15 (a webcam in the dark): the clip holds the expression and 0.2 s on
    each side by the frames' timestamps, each frame at its own time, so it lasts as long as it did."""
    import time

    from fes_live.stream.sources import Frame
    rec = ClipRecorder(tmp_path, "cam0", 30.0, pad_s=0.2)
    pt = lambda f: {"frame": f, "pts_s": f / 15, "wall_s": None}  # noqa: E731
    for i in range(45):  # 3 s at 15 fps
        rec.add(Frame("cam0", i, i / 15, time.time(), time.monotonic(), np.full((64, 96, 3), 5 * i, np.uint8)))
        if i == 40:  # the expression 1.0-2.0 s
            rec.on_event({"type": "expression", "stream_id": "cam0", "data": {
                "onset": pt(15), "apex": pt(20), "offset": pt(30), "kind": "macro"}})
    rec.close()
    (clip,) = rec.written
    with av.open(str(clip)) as c:
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    assert len(times) == (30 - 15 + 1) + 2 * 3  # 0.2 s is 3 frames at 15 fps
    assert times == pytest.approx([k / 15 for k in range(len(times))], abs=1e-3)
    with pytest.raises(ValueError, match="pts_s"):
        with VideoWriter(tmp_path / "mixed.mp4", 30.0) as w:
            w.write(np.zeros((64, 64, 3), np.uint8))
            w.write(np.zeros((64, 64, 3), np.uint8), pts_s=0.1)


@pytest.mark.browser
def test_chromium_plays_a_recorded_clip(tmp_path):
    from test_viewer_browser import CHROMIUM, launch
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    clip = recorded_clip(tmp_path)
    # the control: OpenCV's mp4v, what --record wrote before, which Chromium does not play
    cap = cv2.VideoCapture(str(SMILE))
    old = cv2.VideoWriter(str(tmp_path / "mp4v.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 360))
    for _ in range(30):
        ok, img = cap.read()
        old.write(img)
    old.release()
    cap.release()
    (tmp_path / "page.html").write_text(
        "<video id=v muted playsinline></video><script>const v = document.getElementById('v');"
        "window.errorCode = null; v.onerror = () => window.errorCode = v.error && v.error.code;"
        "v.src = new URLSearchParams(location.search).get('src'); v.play().catch(() => {});</script>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            try:
                page = browser.new_page()
                page.goto(f"{base}/page.html?src=clips/{clip.name}")
                page.wait_for_function("() => window.errorCode !== null || "
                                       "(document.getElementById('v').readyState >= 2 && "
                                       "document.getElementById('v').currentTime > 0)", timeout=60_000)
                state = page.evaluate("() => { const v = document.getElementById('v'); return "
                                      "[v.readyState, v.currentTime, window.errorCode, v.videoWidth]; }")
                assert state[2] is None and state[0] >= 2 and state[1] > 0 and state[3] == 640, state
                page.goto(f"{base}/page.html?src=mp4v.mp4")
                page.wait_for_function("() => window.errorCode !== null || "
                                       "document.getElementById('v').currentTime > 0", timeout=60_000)
                assert page.evaluate("() => window.errorCode") == 4  # MEDIA_ERR_SRC_NOT_SUPPORTED
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
