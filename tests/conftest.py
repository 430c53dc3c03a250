"""Shared fixtures: where the real data lives, and skips for what a machine lacks (never a download)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FES_SHARED_DIR", REPO.parent / "shared"))
DATA = SHARED / "data"
VIDEO = DATA / "video"
FACE_MODEL = SHARED / "models" / "face_landmarker_v2_with_blendshapes.task"

# The product looks for the MediaPipe model via this variable before its user cache; tests point it at shared/.
if FACE_MODEL.is_file():
    os.environ.setdefault("FES_FACE_MODEL", str(FACE_MODEL))
# Detectors started by tests never compile AOTInductor packages in the background (tests/test_engine_build.py does).
os.environ.setdefault("FES_AOTI_BUILD", "0")


def need(path: Path) -> Path:
    """Skip the test when a file from ../shared is missing on this machine."""
    if not path.exists():
        pytest.skip(f"missing {path}")
    return path


def need_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed (.ci/run installs it)")
    return found


def have_rtsp_server() -> bool:
    """Whether Debian's python3 has the GStreamer RTSP server bindings that tests/rtsp_server.py runs on."""
    if not Path("/usr/bin/python3").exists():
        return False
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import GstRtspServer")
    return subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True).returncode == 0


def start_rtsp_server(clip: Path, port: int, popen=subprocess.Popen) -> subprocess.Popen:
    """tests/rtsp_server.py serving `clip` at rtsp://127.0.0.1:PORT/live, once it listens."""
    proc = popen(["/usr/bin/python3", str(REPO / "tests" / "rtsp_server.py"), str(clip), str(port)],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # printed once it listens
    if "serving" not in line:
        proc.kill()
        pytest.fail(f"RTSP server did not start: {line!r} {proc.stderr.read()}")
    return proc


def slower(f: dict, k: int) -> dict:
    """Features as a camera k times slower would see them: every k-th frame, flow summed over the k frames."""
    import numpy as np
    T = len(f["frame_index"]) // k * k
    return {"geometry": f["geometry"][k - 1:T:k], "roi_flow": f["roi_flow"][:T].reshape(T // k, k, 12, 2).sum(1),
            "face_present": f["face_present"][k - 1:T:k], "frame_index": np.arange(T // k),
            "fps": float(f["fps"]) / k}


def held_then_smiling(smile: dict, fps: int, hold_s: float = 3.0) -> dict:
    """Features of the smile clip (`fes-live extract`, 30 fps) as a camera at `fps` (30 / k) sees a person who holds
    still for `hold_s`, then smiles (the clip's 0.57-2.33 s: 3.57-5.33 s with the default hold): its first frame
    held, then `slower`, timestamps at `fps`."""
    import numpy as np
    slow, hold = slower(smile, round(30 / fps)), round(hold_s * fps)
    geometry = np.concatenate([np.repeat(smile["geometry"][:1], hold, 0), slow["geometry"]])
    flow = np.concatenate([np.zeros((hold, 12, 2), np.float32), slow["roi_flow"]])
    n = len(geometry)
    return {"geometry": geometry, "roi_flow": flow, "face_present": np.ones(n, bool), "frame_index": np.arange(n),
            "pts_s": np.arange(n) / fps, "fps": float(fps)}


def at_frame_rate(clip: Path, fps: int, out: Path) -> Path:
    """`clip` re-encoded by ffmpeg (x264) at `fps`, frames dropped or repeated as a camera at that rate gives them."""
    subprocess.run([need_tool("ffmpeg"), "-v", "error", "-i", str(need(clip)), "-vf", f"fps={fps}", "-c:v", "libx264",
                    "-crf", "18", "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


@pytest.fixture
def face_model() -> Path:
    return need(FACE_MODEL)


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory) -> Path:
    """A real engine folder written by fes-export from an untrained GIM (the plumbing does not need skill); once
    per session, read-only for the tests (tests/test_engine_export.py has an engine_dir of its own)."""
    import torch

    from fes_live.models.gim import GIM, GIMConfig
    from fes_live.train.export import export
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("engine")
    torch.save({"model": "gim", "config": {}, "state_dict": GIM(GIMConfig()).state_dict(),
                "engine": {"fps": 30.0, "emotions": ["happiness", "surprise"]}}, d / "gim.ckpt")
    return export([d / "gim.ckpt"], d / "engine")


@pytest.fixture(scope="session")
def smile_npz(tmp_path_factory) -> Path:
    """`fes-live extract` of the real smile clip, run once per session (several modules replay these features);
    read-only for the tests that use it."""
    clip = need(VIDEO / "pyfeat_single_face.mp4")
    need(FACE_MODEL)
    out = tmp_path_factory.mktemp("smile") / "smile.npz"
    env = dict(os.environ, FES_FACE_MODEL=str(FACE_MODEL), FES_NO_DOWNLOAD="1")
    done = subprocess.run([sys.executable, "-m", "fes_live.stream.cli", "extract", str(clip), "-o", str(out),
                           "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=scaled(180))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


# Waits in tests are deadlines with polling, scaled by this factor on a slow or busy machine (FES_TEST_SLOWDOWN=3).
SLOWDOWN = float(os.environ.get("FES_TEST_SLOWDOWN", "1") or 1)


def scaled(seconds: float) -> float:
    return seconds * SLOWDOWN


def wait_until(cond, timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll `cond()` until it is true or `timeout_s` (scaled) has passed."""
    deadline = time.monotonic() + scaled(timeout_s)
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(poll_s)
    return bool(cond())


def wait_for_detector_process(replay: str, det: subprocess.Popen, log_path: Path, ctx=None,
                              timeout_s: float = 180) -> int:
    """A detector process's next seq once its replay endpoint answers; fails with its log if it dies or times out."""
    from fes_live.stream.client import ReplayError, next_seq
    deadline = time.monotonic() + scaled(timeout_s)
    while True:
        try:
            return next_seq(replay, timeout_s=1.0, ctx=ctx)
        except ReplayError:
            assert det.poll() is None and time.monotonic() < deadline, Path(log_path).read_text()[-3000:]


class Procs:
    """Processes a test starts, each in a process group of its own, all killed (children included) at teardown."""

    def __init__(self):
        self.started: list[subprocess.Popen] = []

    def popen(self, cmd, **kw) -> subprocess.Popen:
        kw.setdefault("start_new_session", True)  # its own group: the detector, ingests and viewer die with it
        proc = subprocess.Popen(cmd, **kw)
        self.started.append(proc)
        return proc

    @staticmethod
    def kill_group(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left of it after `grace_s`."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                pass
            if not _group_alive(proc.pid):
                break
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        for proc in self.started:
            self.kill_group(proc, grace_s=0.0 if proc.poll() is not None else 3.0)
            for f in (proc.stdout, proc.stderr, proc.stdin):
                if f is not None:
                    f.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


@pytest.fixture
def procs():
    """`procs.popen(cmd, ...)`: like subprocess.Popen, and nothing it started outlives the test."""
    p = Procs()
    try:
        yield p
    finally:
        p.close()


class Lines:
    """Collects a process's text stdout line by line in a thread; `wait_for(regex)` polls with a scaled deadline."""

    def __init__(self, proc: subprocess.Popen):
        import threading
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float):
        import re
        found = []
        wait_until(lambda: found.append(re.search(pattern, self.text)) or found[-1], timeout_s)
        return found[-1] if found else None

    def join(self, timeout_s: float = 10.0) -> str:
        self._thread.join(scaled(timeout_s))
        return self.text


def pytest_collection_modifyitems(config, items):
    """Modules with a `slow` or `browser` test run first (each module's tests stay together and in order): with
    `-n 3 --dist loadfile --no-loadscope-reorder` (README's test command) the long ones start at once on every
    worker, and the short modules fill in at the end instead of one long module running alone."""
    def path(item) -> str:
        return item.nodeid.split("::", 1)[0]
    heavy = {path(item) for item in items if item.get_closest_marker("slow") or item.get_closest_marker("browser")}
    order = {id(item): k for k, item in enumerate(items)}
    items.sort(key=lambda item: (path(item) not in heavy, order[id(item)]))
