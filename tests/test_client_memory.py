"""Slow and absent clients cost the detector a bounded amount of memory: 10 subscribers that never read and 300
replay requests whose answers are never read, while ~50 MB of events go out."""
import json
import os
import signal
import subprocess
import sys
import time

import zmq

from conftest import REPO, wait_for_detector_process
from fes_live.stream import wire
from fes_live.stream.client import next_seq
from fes_live.stream.events import MAX_EVENT_BYTES, REPLAY_ANSWER_BYTES, REPLAY_IN_FLIGHT, replay_request
from test_events_wire import free_port

EVENTS = 12000
MESSAGE = 4000  # bytes of each event's message (the wire's limit is 4096): 12000 x 4 kB = 48 MB of events
MEMORY_MB = SUBSCRIBER_MB = 8
REPLAY_CLIENTS, REQUESTS = 3, 100
# memory buffer + what the stuck subscribers pin (at most PUB SNDHWM events each) + the replay answers queued per
# client + SQLite's page cache and allocator slack
BOUND_MB = (MEMORY_MB + 10 * (SUBSCRIBER_MB * 2**20 // MAX_EVENT_BYTES) * MESSAGE / 2**20
            + REPLAY_CLIENTS * (REPLAY_IN_FLIGHT + 1) * REPLAY_ANSWER_BYTES / 2**20 + 30)


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_stuck_subscribers_and_unread_replays_cost_bounded_memory(tmp_path):
    ep = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("features", "events", "replay")}
    cfg = tmp_path / "detect.json"
    cfg.write_text(json.dumps({"replay_memory_mb": MEMORY_MB, "subscriber_buffer_mb": SUBSCRIBER_MB,
                               "notes_per_s": 1e6}))  # ends of unknown streams make the events here: no rate limit
    log = open(tmp_path / "detector.log", "w")
    det = subprocess.Popen([sys.executable, "-m", "fes_live.stream.cli", "detect", "--config", str(cfg),
                            "--features-endpoint", ep["features"], "--events-endpoint", ep["events"],
                            "--replay-endpoint", ep["replay"], "--journal", str(tmp_path / "events.sqlite")],
                           cwd=REPO, stdout=log, stderr=log, start_new_session=True)
    ctx = zmq.Context()
    socks = []
    try:
        wait_for_detector_process(ep["replay"], det, tmp_path / "detector.log", ctx)
        push = ctx.socket(zmq.PUSH)
        push.connect(ep["features"])
        socks.append(push)

        def note(i):  # a `stream` event of ~4 kB per message (an ingest's long error for a stream never opened)
            push.send_multipart(wire.control_message(f"s{i % 50}", "error", message=f"{i} " + "x" * MESSAGE))

        for i in range(300):  # warm up: allocator, SQLite cache, sockets
            note(i)
        for _ in range(10):
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.RCVHWM, 10)
            sub.setsockopt(zmq.RCVBUF, 4096)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(ep["events"])
            socks.append(sub)
        time.sleep(1.0)
        before = rss_mb(det.pid)
        for i in range(300, 300 + EVENTS):
            note(i)
            if i % 500 == 0:  # paced: what the features socket queues is not what this test measures
                deadline = time.monotonic() + 120
                while next_seq(ep["replay"], timeout_s=5.0, ctx=ctx) < i - 100:
                    assert time.monotonic() < deadline and det.poll() is None
                    time.sleep(0.05)
            if i == 300 + EVENTS // 2:  # unread replay answers of 1000 events (~4 MB each without a byte cap)
                for _ in range(REPLAY_CLIENTS):
                    d = ctx.socket(zmq.DEALER)
                    d.setsockopt(zmq.RCVHWM, 1)
                    d.setsockopt(zmq.RCVBUF, 4096)
                    d.connect(ep["replay"])
                    socks.append(d)
                    for _ in range(REQUESTS):
                        d.send_multipart([b"", *replay_request(0)])
        deadline = time.monotonic() + 120
        while next_seq(ep["replay"], timeout_s=5.0, ctx=ctx) < 300 + EVENTS:
            assert time.monotonic() < deadline and det.poll() is None
            time.sleep(0.2)
        time.sleep(1.0)  # the last replay answers
        growth = rss_mb(det.pid) - before
        print(f"detector RSS growth {growth:.1f} MB (bound {BOUND_MB:.0f} MB) with 10 stuck subscribers and "
              f"{REPLAY_CLIENTS * REQUESTS} unread replay answers, {EVENTS * MESSAGE / 2**20:.0f} MB of events")
        assert growth < BOUND_MB, growth
        det.send_signal(signal.SIGTERM)
        assert det.wait(30) == 0
    finally:
        for s in socks:
            s.close(linger=0)
        ctx.destroy(linger=0)
        if det.poll() is None:
            os.killpg(det.pid, signal.SIGKILL)
            det.wait(10)
