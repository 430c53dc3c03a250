"""Children die with their parent: SIGKILL of `fes-live` leaves no detector, ingest or viewer behind, and frees
the ports; the readiness check only accepts this run's own detector."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import zmq

from conftest import FACE_MODEL, REPO, VIDEO, Lines, need, wait_until
from test_events_wire import free_port


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_sigkill_of_fes_live_leaves_nothing_behind(tmp_path, procs):
    need(FACE_MODEL)
    need(REPO / "stream" / "engines" / "default" / "manifest.json")
    ports = [free_port(), free_port(), free_port()]
    env = dict(os.environ, FES_FACE_MODEL=str(FACE_MODEL), FES_NO_DOWNLOAD="1", XDG_RUNTIME_DIR=str(tmp_path))
    clip = need(VIDEO / "pyfeat_single_face.mp4")
    proc = procs.popen([sys.executable, "-m", "fes_live.stream.cli", "run", "--source", str(clip), "--loop", "--view",
                        "--view-port", str(ports[2]), "--events-endpoint", f"tcp://127.0.0.1:{ports[0]}",
                        "--replay-endpoint", f"tcp://127.0.0.1:{ports[1]}"],
                       env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Lines(proc)
    assert out.wait_for(r"started ingest-\S+ \(pid \d+\)", 180), out.text[-3000:]
    children = [int(p) for p in re.findall(r"started \S+ \(pid (\d+)\)", out.text)]
    assert len(children) == 3, out.text  # detector, viewer, ingest
    assert not any(port_free(p) for p in ports)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: nothing gets to shut down in order
    proc.wait(10)
    assert wait_until(lambda: group_members(proc.pid) == [], 30), \
        [(p, Path(f"/proc/{p}/cmdline").read_bytes()[:80]) for p in group_members(proc.pid)]
    assert wait_until(lambda: all(port_free(p) for p in ports), 10), ports


def idle_role(_cfg, stop_event) -> int:
    stop_event.wait(60)
    return 0


def test_readiness_check_wants_its_own_detector(monkeypatch):
    """An old detector still answering on the replay port (another run's) is not taken for ours."""
    from fes_live.stream import app, wire
    from fes_live.stream.supervise import Supervisor
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    answer_as = ["other-1234abcd"]

    def serve():
        while not router.closed:
            try:
                if not router.poll(100):
                    continue
                frames = router.recv_multipart()
            except zmq.ZMQError:
                return
            meta = {"ok": True, "next_seq": 7, "publisher": answer_as[0]}
            reply = wire.encode("replay", wire.Header("replay", "pipeline", meta=meta), {"events": []})
            router.send_multipart([frames[0], b"", *reply])

    threading.Thread(target=serve, daemon=True).start()
    sup = Supervisor()
    sup.start(app.DETECTOR, idle_role, None)
    try:
        monkeypatch.setattr(app, "ENGINE_LOAD_TIMEOUT_S", 3.0)
        stop = threading.Event()
        assert app.wait_for_detector(sup, f"tcp://127.0.0.1:{port}", stop, "mine") is None
        answer_as[0] = "mine-99887766"
        assert app.wait_for_detector(sup, f"tcp://127.0.0.1:{port}", stop, "mine") == 7
    finally:
        sup.stop([app.DETECTOR], 10)
        router.close()
