"""`fes-live --view` on the README's 2.4 s clip: the viewer is up before the source plays, so it gets its previews.

Before, the viewer bound its preview socket after the clip had ended and showed nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import FACE_MODEL, REPO, VIDEO, Lines, need, scaled
from test_events_wire import free_port


@pytest.mark.slow
def test_view_gets_the_previews_of_a_short_file(tmp_path, procs):
    need(FACE_MODEL)
    need(REPO / "stream" / "engines" / "default" / "manifest.json")
    clip = need(VIDEO / "pyfeat_single_face.mp4")  # 72 frames at 30 fps, played at its own rate
    port = free_port()
    env = dict(os.environ, FES_FACE_MODEL=str(FACE_MODEL), FES_NO_DOWNLOAD="1", XDG_RUNTIME_DIR=str(tmp_path))
    proc = procs.popen([sys.executable, "-m", "fes_live.stream.cli", "run", "--source", str(clip), "--quiet",
                        "--view", "--view-port", str(port), "--port", "auto"],
                       env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Lines(proc)
    previews = 0
    deadline = time.monotonic() + scaled(240)
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as r:
                streams = json.load(r)["streams"]
            previews = max([previews] + [s["previews"] for s in streams if s["id"] == "pyfeat_single_face"])
        except OSError:
            pass
        time.sleep(0.1)
    assert proc.wait(scaled(60)) == 0, out.join()[-3000:]
    log = out.join()
    assert log.index("started viewer") < log.index("started ingest-pyfeat_single_face"), log
    # ~15 previews/s over 2.4 s on a quiet machine, 19 seen on a busy one (the last poll may also miss the end);
    # before the fix: none
    assert previews >= 10, (previews, log[-3000:])
