"""`fes-events` as a real process against a real publisher; the detector service dropping garbage."""
import json
import subprocess
import sys
import threading
import time

import zmq

from fes_live.stream import wire
from fes_live.stream.client import subscribe
from fes_live.stream.detect import Detector
from fes_live.stream.events import EventPublisher, validate
from fes_live.stream.pipeline_config import DetectConfig, Endpoints
from test_events_wire import free_port


def test_fes_events_filters_and_replays(tmp_path):
    ctx = zmq.Context()
    ev, rp = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    pub = EventPublisher(ctx, ev, rp)  # (serves replay from its own thread)
    for i in range(6):
        pub.publish("face", "a" if i % 2 else "b", {"state": "found", "frame": i, "pts_s": 0.0, "wall_s": 0.0})
    cmd = [sys.executable, "-m", "fes_live.stream.events_cli", "--events", ev, "--replay", rp]
    out = subprocess.run(cmd + ["--json", "--replay-from", "0", "--stream", "a", "--count", "3"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    got = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["seq"] for e in got] == [1, 3, 5] and all(e["stream_id"] == "a" for e in got)
    # live + human-readable: started first, then events are published
    proc = subprocess.Popen(cmd + ["--type", "stream", "--idle-timeout", "3"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        pub.publish("stream", "cam0", {"status": "started", "message": "", "source": "x.mp4"})
        pub.publish("face", "cam0", {"state": "lost", "frame": 9, "pts_s": 0.3, "wall_s": 0.0})
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0
    lines = stdout.splitlines()
    assert len(lines) == 1 and "cam0" in lines[0] and "stream" in lines[0] and "started x.mp4" in lines[0]
    bad = subprocess.run(cmd + ["--replay-from", "-3"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--replay-from" in bad.stderr
    pub.close(); ctx.destroy(linger=0)


def test_detector_counts_and_drops_garbage():
    ep = Endpoints(features=f"tcp://127.0.0.1:{free_port()}", events=f"tcp://127.0.0.1:{free_port()}",
                   replay=f"tcp://127.0.0.1:{free_port()}", preview="ipc:///tmp/unused-preview")
    det = Detector(DetectConfig(endpoints=ep, stats_interval_s=0.2), engine=None)
    stop = threading.Event()
    t = threading.Thread(target=det.run, args=(stop,), daemon=True)
    t.start()
    sub = subscribe(ep.events, ep.replay, from_seq=0, types=["stats", "stream"], idle_timeout_s=5)
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.connect(ep.features)
    push.send_multipart([b"garbage"])
    push.send_multipart([b"features/x", b"{not json", b"\x00" * 10])
    push.send_multipart(wire.control_message("x", "ended", message="never started"))
    push.send_multipart(wire.event_message({"type": "face", "stream_id": "x"}))  # wrong kind for the detector
    push.send_multipart(wire.control_message("bad/id", "started"))
    seen = []
    for ev in sub:
        validate(ev)
        seen.append(ev)
        if ev["type"] == "stats" and ev["stream_id"] == "pipeline" and ev["data"].get("bad_messages") == 4:
            break
    stop.set(); t.join(10)
    assert not t.is_alive()
    assert det.bad_messages == 4
    ended = [e for e in seen if e["type"] == "stream"]
    assert ended and ended[0]["data"]["status"] == "ended" and ended[0]["stream_id"] == "x"
    push.close()
