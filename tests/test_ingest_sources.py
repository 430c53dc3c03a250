"""Sources on real files, a real folder of frames and a real RTSP server (GStreamer) that is killed mid-stream."""
from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATA, VIDEO, have_rtsp_server, need, need_tool, start_rtsp_server
from fes_live.stream.app import free_port
from fes_live.stream.config import ConfigError, from_dict
from fes_live.stream.sources import FolderSource, SourceConfig, SourceError, open_source

def test_file_source_frames_and_clocks():
    clip = need(VIDEO / "pyfeat_single_face.mp4")
    with open_source(str(clip)) as src:
        frames = list(src)
    assert src.fps == pytest.approx(30.0)
    assert len(frames) == 72
    assert [f.index for f in frames] == list(range(72))
    assert frames[0].image.shape == (360, 640, 3) and frames[0].image.dtype == np.uint8
    pts = np.array([f.pts_s for f in frames])
    assert pts[0] == pytest.approx(0.0) and np.allclose(np.diff(pts), 1 / 30, atol=1e-3)
    mono = np.array([f.mono_s for f in frames])
    assert np.all(np.diff(mono) >= 0)
    assert abs(frames[-1].wall_s - time.time()) < 60
    assert frames[0].stream_id == "pyfeat_single_face"


def test_vfr_file_keeps_real_timestamps():
    clip = need(VIDEO / "pyfeat_face_noface.mov")
    with open_source(str(clip)) as src:
        pts = np.array([f.pts_s for f in src])
    assert len(pts) == 169
    assert np.all(np.diff(pts) > 0)
    # VFR: 169 frames over ~6.4 s, i.e. not the nominal 30 fps the container claims for its first frames
    assert pts[-1] == pytest.approx(6.36, abs=0.05)
    assert np.diff(pts).max() > 1.2 * np.diff(pts).min()


def test_loop_keeps_index_and_pts_increasing():
    clip = need(VIDEO / "pyfeat_single_face.mp4")
    with open_source(str(clip), SourceConfig(loop=True)) as src:
        frames = [f for _, f in zip(range(160), src)]
    assert [f.index for f in frames] == list(range(160))
    pts = np.array([f.pts_s for f in frames])
    assert np.all(np.diff(pts) > 0)
    assert pts[-1] == pytest.approx(159 / 30, abs=0.1)


def test_realtime_paces_at_the_file_rate():
    """Never ahead of the file's clock, and no slower than decoding forces: the time spent decoding is measured and
    allowed for, so a loaded machine (CI's xdist workers) cannot fail it by decoding slowly."""
    clip = need(VIDEO / "pyfeat_single_face.mp4")
    with open_source(str(clip), SourceConfig(realtime=True)) as src:
        decoding = [0.0]
        read = src._read

        def timed_read():
            t = time.monotonic()
            try:
                return read()
            finally:
                decoding[0] += time.monotonic() - t

        src._read = timed_read
        delivered = []
        for _, f in zip(range(16), src):
            delivered.append((time.monotonic(), f))
    (t0, first), (t_last, last) = delivered[0], delivered[-1]
    for t, f in delivered[1:]:
        assert t - t0 >= (f.pts_s - first.pts_s) - 0.002  # never ahead of the file's own clock
    elapsed = t_last - t0
    assert 15 / 30 - 0.002 <= elapsed <= 15 / 30 + decoding[0] + 0.15  # 15 frame intervals at 30 fps
    assert last.mono_s - first.mono_s == pytest.approx(0.5, abs=0.1)


def test_folder_of_unpadded_gapped_numbers(tmp_path):
    """CAS(ME)^3 style: 1.jpg .. 10.jpg with a gap; sorted by number, PTS follows the numbers."""
    img = cv2.imread(str(need(DATA / "images" / "pyfeat_single_face.jpg")))
    numbers = [3, 1, 2, 10, 9, 14, 15]
    for n in numbers:
        marked = img.copy()
        marked[:8, :8] = n  # so we can tell which file came back
        cv2.imwrite(str(tmp_path / f"{n}.png"), marked)
    (tmp_path / "notes.txt").write_text("ignored")
    with open_source(str(tmp_path), SourceConfig(folder_fps=30.0)) as src:
        assert isinstance(src, FolderSource) and len(src) == len(numbers)
        frames = list(src)
    assert [int(f.image[0, 0, 0]) for f in frames] == sorted(numbers)
    assert [f.index for f in frames] == list(range(len(numbers)))
    assert [round(f.pts_s * 30) for f in frames] == [n - 1 for n in sorted(numbers)]


def test_folder_with_prefixed_names(tmp_path):
    img = np.full((32, 32, 3), 7, np.uint8)
    for n in (1, 2, 11):
        cv2.imwrite(str(tmp_path / f"img{n:d}.jpg"), img)
    with open_source(str(tmp_path)) as src:
        assert [p.name for p in src.paths] == ["img1.jpg", "img2.jpg", "img11.jpg"]


@pytest.mark.parametrize("make, message", [
    (lambda d: str(d / "missing.mp4"), "no such file"),
    (lambda d: str(d), "no images"),                                        # empty folder
    (lambda d: (d / "x.mp4").write_bytes(b"not a video") and str(d / "x.mp4"), "cannot decode"),
    (lambda d: "rtsp://127.0.0.1:1/live", "cannot connect"),                 # nothing listens on port 1
    (lambda d: "http://127.0.0.1:1/stream.ts", "cannot connect"),
    (lambda d: "57", "no camera"),                                           # no webcam 57 on any machine
])
def test_bad_uri_is_a_clear_error_within_seconds(tmp_path, make, message):
    uri = make(tmp_path)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=message):
        open_source(uri, SourceConfig(open_timeout_s=2.0, read_timeout_s=2.0))
    assert time.monotonic() - t0 < 5.0


def test_silent_server_times_out_instead_of_hanging():
    """A TCP port that accepts but never answers RTSP: the open timeout must end it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        t0 = time.monotonic()
        with pytest.raises(SourceError):
            open_source(f"rtsp://127.0.0.1:{port}/live", SourceConfig(open_timeout_s=1.5, read_timeout_s=1.5))
        assert time.monotonic() - t0 < 8.0
    finally:
        listener.close()


def test_source_config_from_dict_rejects_unknown_keys():
    assert from_dict(SourceConfig, {"realtime": True}).realtime is True
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(SourceConfig, {"real_time": True})
    with pytest.raises(ValueError):
        SourceConfig(folder_fps=0)


# -- RTSP, for real ------------------------------------------------------------------------------------------

@pytest.fixture
def long_clip(tmp_path) -> Path:
    clip = need(VIDEO / "pyfeat_single_face.mp4")
    ffmpeg = need_tool("ffmpeg")
    out = tmp_path / "looped.mp4"  # 2.4 s x 25 = 60 s of stream, no re-encoding
    subprocess.run([ffmpeg, "-v", "error", "-stream_loop", "24", "-i", str(clip), "-c", "copy", str(out)], check=True)
    return out


def test_rtsp_read_and_reconnect_after_server_restart(long_clip):
    if not have_rtsp_server():
        pytest.skip("/usr/bin/python3 lacks gi + GstRtspServer (.ci/run installs them)")
    port = free_port()
    server = start_rtsp_server(long_clip, port)
    cfg = SourceConfig(open_timeout_s=3.0, read_timeout_s=2.0, backoff_initial_s=0.2, give_up_after_s=20.0)
    src = open_source(f"rtsp://127.0.0.1:{port}/live", cfg, stream_id="cam-a")
    try:
        assert src.fps == pytest.approx(30.0, abs=1.0)
        before = [next(src) for _ in range(30)]
        assert before[0].image.shape == (360, 640, 3)
        assert [f.index for f in before] == list(range(30))
        server.kill()  # crash, mid-stream
        server.wait()
        time.sleep(1.0)
        server = start_rtsp_server(long_clip, port)
        t0 = time.monotonic()
        after = [next(src) for _ in range(30)]
        assert time.monotonic() - t0 < 15.0
        assert src.dropped_reconnects >= 1
        idx = [f.index for f in before + after]
        pts = [f.pts_s for f in before + after]
        mono = [f.mono_s for f in before + after]
        assert all(b > a for a, b in zip(idx, idx[1:]))     # index only jumps forward (the outage)
        assert all(b > a for a, b in zip(pts, pts[1:]))     # PTS stays increasing although the server restarted
        assert all(b >= a for a, b in zip(mono, mono[1:]))
        assert after[-1].image.shape == (360, 640, 3) and after[-1].image.mean() > 10
    finally:
        src.close()
        server.kill()
        server.wait()


def test_rtsp_frozen_server_hits_the_read_timeout_and_recovers(long_clip):
    """SIGSTOP keeps the TCP connection open but sends nothing: the read timeout, not a hang, must end the read."""
    if not have_rtsp_server():
        pytest.skip("/usr/bin/python3 lacks gi + GstRtspServer")
    port = free_port()
    server = start_rtsp_server(long_clip, port)
    cfg = SourceConfig(open_timeout_s=1.5, read_timeout_s=1.5, backoff_initial_s=0.2, give_up_after_s=20.0)
    src = open_source(f"rtsp://127.0.0.1:{port}/live", cfg)
    try:
        for _ in range(10):
            next(src)
        server.send_signal(signal.SIGSTOP)
        threading.Timer(4.0, server.send_signal, (signal.SIGCONT,)).start()
        t0 = time.monotonic()
        frames = [next(src) for _ in range(80)]  # more than any buffer holds: must outlast the freeze
        elapsed = time.monotonic() - t0
        assert 3.0 < elapsed < 15.0, elapsed
        assert src.dropped_reconnects >= 1  # the blocked read timed out (1.5 s < the 4 s freeze) and reopened
        assert frames[-1].image.shape == (360, 640, 3)
    finally:
        src.close()
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()


def test_rtsp_gives_up_when_the_server_stays_down(long_clip):
    if not have_rtsp_server():
        pytest.skip("/usr/bin/python3 lacks gi + GstRtspServer")
    port = free_port()
    server = start_rtsp_server(long_clip, port)
    cfg = SourceConfig(open_timeout_s=2.0, read_timeout_s=1.0, backoff_initial_s=0.2, give_up_after_s=3.0)
    src = open_source(f"rtsp://127.0.0.1:{port}/live", cfg)
    try:
        next(src)
        server.kill()
        server.wait()
        t0 = time.monotonic()
        with pytest.raises(SourceError, match="gave up"):
            for _ in range(10_000):
                next(src)
        assert time.monotonic() - t0 < 12.0
    finally:
        src.close()
        server.kill()
        server.wait()


def test_stream_ids_and_credentials_never_leak():
    from fes_live.stream.sources import default_stream_id, redact
    assert default_stream_id("0") == "cam0"
    assert default_stream_id("/data/clips/take_01.mp4") == "take_01"
    url = "rtsp://admin:secret@10.0.0.2:554/cam/1"
    assert "secret" not in default_stream_id(url) and "admin" not in default_stream_id(url)
    assert redact(url) == "rtsp://***@10.0.0.2:554/cam/1"
    with pytest.raises(SourceError) as err:
        open_source("rtsp://admin:secret@127.0.0.1:1/live", SourceConfig(open_timeout_s=1.0))
    assert "secret" not in str(err.value)


def test_probe_reads_a_first_frame_and_says_what_is_wrong(tmp_path):
    from fes_live.stream.sources import probe_source
    clip = need(VIDEO / "pyfeat_single_face.mp4")
    assert "fps=30" in probe_source(str(clip))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:60_000])  # the index (moov) is at the end: a cut file cannot be decoded
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="cannot decode video .*cut.mp4"):
        probe_source(str(cut))
    assert time.monotonic() - t0 < 5.0


def test_rtsp_down_at_start_is_retried_and_reported(long_clip):
    """retry_open: a camera that is down when the pipeline starts is waited for, with one "down" and one "up"."""
    if not have_rtsp_server():
        pytest.skip("/usr/bin/python3 lacks gi + GstRtspServer")
    port = free_port()
    cfg = SourceConfig(open_timeout_s=1.0, read_timeout_s=2.0, backoff_initial_s=0.2, backoff_max_s=1.0,
                       give_up_after_s=0.0, retry_open=True)
    src = open_source(f"rtsp://127.0.0.1:{port}/live", cfg)  # nothing listens yet: no error, it will retry
    changes = []
    src.on_outage = lambda what, message: changes.append((what, message))
    assert src.start_error.startswith("cannot connect") and src.fps == 0.0
    server = None
    try:
        started = threading.Timer(2.0, lambda: changes.append(("server", start_rtsp_server(long_clip, port))))
        started.start()
        frame = next(src)
        server = next(s for w, s in changes if w == "server")
        assert frame.image.shape == (360, 640, 3) and frame.index == 0
        assert src.fps == pytest.approx(30.0, abs=1.0) and not src.start_error
        assert [w for w, _ in changes if w != "server"] == ["down", "up"]
        assert "connected after" in next(m for w, m in changes if w == "up")
    finally:
        src.close()
        started.join()
        server = server or next((s for w, s in changes if w == "server"), None)
        if server is not None:
            server.kill()
            server.wait()
