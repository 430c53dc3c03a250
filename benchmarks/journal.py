"""Replay from an old sequence number on a large SQLite journal while events keep flowing.

    fes-bench journal [--events 300000] [--requests 50] [--rate 3000] [--dir DIR] [--json out.json]

Fills a journal with N real-looking events (intensity events of 3 frames, as a 30 fps stream makes 10 a second),
starts a real `EventPublisher` on it (memory holding only the newest ones, so old ones come from SQLite), keeps
publishing at `--rate` events/s from the main thread (the detector's loop), and asks the replay endpoint over tcp
for pages of 1000 events from old, random sequence numbers. Prints replay answer time p50/p99/max (goal < 50 ms)
and the longest stall of the publishing loop meanwhile (it never waits for replay: the endpoint has its own thread).
"""
from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

GOAL_MS = 50.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _intensity(i: int) -> dict:
    return {"frames": [3 * i, 3 * i + 1, 3 * i + 2], "pts_s": [i / 10, i / 10 + 0.033, i / 10 + 0.067],
            "values": [0.123456, 0.234567, 0.345678], "apex_probs": [[0.1, 0.2], [0.1, 0.2], [0.1, 0.2]]}


def fill_journal(path: Path, n: int) -> None:
    """n journaled intensity events, written the way the publisher writes them (one transaction per batch)."""
    from fes_live.stream.events import SCHEMA_VERSION, Journal
    j = Journal(path)
    t0 = time.time() - n / 100
    data = json.dumps(_intensity(0), separators=(",", ":"))
    for start in range(j.last_seq + 1, n, 10_000):
        rows = []
        for seq in range(start, min(n, start + 10_000)):
            wall = t0 + seq / 100
            body = (f'{{"schema":{SCHEMA_VERSION},"seq":{seq},"type":"intensity","stream_id":"cam0",'
                    f'"wall_s":{wall!r},"publisher":"bench","data":{data}}}')
            rows.append((seq, wall, "intensity", "cam0", body.encode()))
        j.append(rows)
    j.close()


def run(folder: Path, events: int, requests: int, rate: float, seed: int = 0) -> dict:
    import zmq

    from fes_live.stream.client import fetch
    from fes_live.stream.events import EventPublisher
    path = folder / "events.sqlite"
    t = time.perf_counter()
    fill_journal(path, events)
    fill_s = time.perf_counter() - t
    ctx = zmq.Context()
    ev, rp = f"tcp://127.0.0.1:{_port()}", f"tcp://127.0.0.1:{_port()}"
    pub = EventPublisher(ctx, ev, rp, journal=str(path), memory_bytes=4 << 20, autoflush=False)
    stop, stalls, published = threading.Event(), [], [0]

    def loop():  # the detector's main thread: publish a turn's events, flush, sleep until the next turn
        i, last = events, time.perf_counter()
        while not stop.is_set():
            for _ in range(max(1, int(rate / 100))):
                pub.publish("intensity", "cam0", _intensity(i))
                i += 1
            pub.flush()
            now = time.perf_counter()
            stalls.append(now - last)
            last = now
            published[0] = i
            time.sleep(0.01)

    th = threading.Thread(target=loop)
    th.start()
    rng = np.random.default_rng(seed)
    times = []
    try:
        fetch(rp, 0, 0, ctx=ctx)  # connect once
        for _ in range(requests):
            first = int(rng.integers(0, events // 2))
            t = time.perf_counter()
            got, _ = fetch(rp, first, first + 999, ctx=ctx)
            times.append(time.perf_counter() - t)
            assert [e["seq"] for e in got] == list(range(first, first + 1000)), "replay returned the wrong events"
    finally:
        stop.set()
        th.join()
        pub.close()
        ctx.destroy(linger=0)
    ms = np.array(times) * 1000.0
    turn_ms = np.array(stalls) * 1000.0
    return {"events": events, "fill_s": round(fill_s, 2), "journal_mb": round(path.stat().st_size / 2**20, 1),
            "requests": requests, "replay_ms_p50": round(float(np.percentile(ms, 50)), 2),
            "replay_ms_p99": round(float(np.percentile(ms, 99)), 2), "replay_ms_max": round(float(ms.max()), 2),
            "loop_turn_ms_p50": round(float(np.percentile(turn_ms, 50)), 2),
            "loop_turn_ms_max": round(float(turn_ms.max()), 2), "published_meanwhile": published[0] - events,
            "goal_ms": GOAL_MS}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fes-bench journal", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=300_000, help="events journaled before the replay requests")
    p.add_argument("--requests", type=int, default=50, help="replay requests from old sequence numbers, timed")
    p.add_argument("--rate", type=float, default=3000.0, help="events/s published meanwhile")
    p.add_argument("--dir", default=None, help="folder for the journal (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = run(Path(a.dir or tmp), a.events, a.requests, a.rate)
    print(f"journal of {r['events']} events ({r['journal_mb']} MB, filled in {r['fill_s']} s)")
    print(f"replay of 1000 old events: p50 {r['replay_ms_p50']} ms, p99 {r['replay_ms_p99']} ms, "
          f"max {r['replay_ms_max']} ms (goal < {GOAL_MS:.0f} ms: ratio {r['replay_ms_p99'] / GOAL_MS:.2f})")
    print(f"publishing loop meanwhile: turn p50 {r['loop_turn_ms_p50']} ms, max {r['loop_turn_ms_max']} ms "
          f"(sleeps 10 ms per turn), {r['published_meanwhile']} events published")
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
