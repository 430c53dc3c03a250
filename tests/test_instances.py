"""Two `fes-live` runs on one machine at the same time: each its own ipc folder and ports, each sees only its stream.

Before, the second run's ingest fed the first run's detector through a shared ipc socket and exited 0.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import FACE_MODEL, REPO, VIDEO, Lines, need, scaled

SMILE = VIDEO / "pyfeat_single_face.mp4"
NOFACE = VIDEO / "pyfeat_no_face.mp4"


def start(procs, source, runtime, *args):
    env = dict(os.environ, FES_FACE_MODEL=str(FACE_MODEL), FES_NO_DOWNLOAD="1", XDG_RUNTIME_DIR=str(runtime))
    proc = procs.popen([sys.executable, "-m", "fes_live.stream.cli", "run", "--source", str(source), *args],
                       env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, Lines(proc)


@pytest.mark.slow
def test_two_instances_never_cross_wire(tmp_path, procs):
    from fes_live.stream.client import subscribe
    need(FACE_MODEL)
    need(REPO / "stream" / "engines" / "default" / "manifest.json")
    runtime = tmp_path / "rt"  # both runs share the runtime folder, as two runs of one user would
    runtime.mkdir()
    a, b = tmp_path / "alpha.mp4", tmp_path / "beta.mp4"
    shutil.copy(need(SMILE), a)
    shutil.copy(need(NOFACE), b)
    runs = {}
    for name, clip in (("alpha", a), ("beta", b)):
        proc, out = start(procs, clip, runtime, "--port", "auto", "--loop", "--quiet")
        m = out.wait_for(r"events on (tcp://\S+), replay on (tcp://\S+)", 30)
        assert m, out.text
        seen: list[dict] = []
        sub = subscribe(m.group(1), m.group(2), from_seq=0)
        threading.Thread(target=lambda s=sub, seen=seen: [seen.append(e) for e in s], daemon=True).start()
        runs[name] = (proc, out, seen, m.group(1))
    assert runs["alpha"][3] != runs["beta"][3]
    # both run at once: each has its stream's frames scored while the other one runs too
    deadline = time.monotonic() + scaled(180)
    while not all(sum(1 for e in seen if e["type"] == "intensity") >= 20 for _, _, seen, _ in runs.values()):
        for proc, out, _, _ in runs.values():
            assert proc.poll() is None, out.text[-3000:]
        assert time.monotonic() < deadline, {k: len(v[2]) for k, v in runs.items()}
        time.sleep(0.2)
    folders = sorted(p.name for p in runtime.iterdir())
    assert len(folders) == 2 and all(re.fullmatch(r"run-\d+-\w+", f) for f in folders), folders
    # a third run asking for alpha's port is refused at once, and changes nothing for alpha
    port = int(runs["alpha"][3].rsplit(":", 1)[1])
    third, third_out = start(procs, a, runtime, "--port", str(port))
    assert third.wait(scaled(30)) == 2
    assert f"tcp://127.0.0.1:{port}: cannot bind" in third_out.join() and "Traceback" not in third_out.text
    for name, (proc, out, seen, _) in runs.items():
        proc.send_signal(signal.SIGINT)
    for name, (proc, out, seen, _) in runs.items():
        assert proc.wait(scaled(60)) == 0, out.join()[-3000:]
        streams = {e["stream_id"] for e in seen}
        assert streams <= {name, "pipeline"} and name in streams, (name, streams)
        loops = max(f for e in seen if e["type"] == "intensity" for f in e["data"]["frames"])
        assert loops >= 20
    assert list(runtime.iterdir()) == []  # each run removed its own folder


def test_without_ipc_each_run_gets_free_tcp_ports(monkeypatch, tmp_path):
    """Where ZeroMQ has no ipc:// (some Windows builds) the local endpoints are tcp on 127.0.0.1, free per run."""
    from fes_live.stream import pipeline_config
    from fes_live.stream.app import role_configs
    from fes_live.stream.pipeline_config import RunConfig
    monkeypatch.setattr(pipeline_config, "has_ipc", lambda: False)
    a, _ = role_configs(RunConfig(sources=("x.mp4",)), str(tmp_path))
    b, ingests = role_configs(RunConfig(sources=("x.mp4",)), str(tmp_path))
    for ep in (a.endpoints, b.endpoints):
        assert ep.features.startswith("tcp://127.0.0.1:") and ep.preview.startswith("tcp://127.0.0.1:")
    assert a.endpoints.features != b.endpoints.features
    assert ingests["ingest-x"].endpoints == b.endpoints
    assert list(tmp_path.iterdir()) == []  # no ipc folder made
