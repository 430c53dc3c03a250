"""`fes-live detect --workers 2`: real worker processes behind one front, real tcp sockets, recorded features of
the real smile clip. Streams split over both workers give exactly the expressions of a single detector; events
reach subscribers as one stream, numbered per worker (lane); a SIGKILLed worker is restarted and resumes its
streams, and the subscriber sees every event exactly once."""
import dataclasses
import json
import os
import re
import signal
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from conftest import REPO, scaled, wait_until
from fes_live.models.spotting import KIND_NAMES, ExpressionUpdate
from fes_live.stream import wire
from fes_live.stream.client import ReplayError, Subscription, fetch, hello, lane_of
from fes_live.stream.detect import emotion_names
from fes_live.stream.events import journal_events
from fes_live.stream.features import FrameFeatures
from fes_live.stream.workers import shard, worker_journal
from test_events_wire import free_port

FPS = 30.0
FEDN_WINDOW = 128  # frames (docs/contracts.md)


@pytest.fixture(scope="module")
def smile_npz(tmp_path_factory):
    """Features of the real smile clip (`fes-live extract`, as benchmarks/scale.py replays them)."""
    from fes_live.benchmarks.live import DEFAULT_VIDEO, features_file
    from conftest import need
    need(DEFAULT_VIDEO)
    return features_file(DEFAULT_VIDEO, tmp_path_factory.mktemp("smile"))


@pytest.fixture(scope="module")
def smile(smile_npz):
    from fes_live.benchmarks.scale import load_clips
    return load_clips([smile_npz])[0]


@pytest.fixture(scope="module")
def engine():
    import torch

    from fes_live.stream.engine import load_engine
    torch.set_num_threads(1)
    return load_engine(None)


def split_streams(n_per_worker: int = 2) -> list[str]:
    """Stream ids, n_per_worker owned by each of 2 workers."""
    ids = {0: [], 1: []}
    k = 0
    while min(len(v) for v in ids.values()) < n_per_worker:
        sid = f"cam-{k}"
        if len(ids[shard(sid, 2)]) < n_per_worker:
            ids[shard(sid, 2)].append(sid)
        k += 1
    return ids[0] + ids[1]


def stream_frames(smile, sid_index: int, n_frames: int):
    """(frame, face, geometry, flow): the clip looped, each stream from its own offset (benchmarks/scale.py)."""
    from fes_live.benchmarks.scale import stream_frames as frames
    return list(frames(smile, n_frames, 37 * sid_index))


def reference(engine, frames) -> list[tuple]:
    """What one detector finds in a stream: its spotter over the frames, then flushed."""
    spotter = engine.new_spotter()
    ups = [u for k, fp, g, r in frames for u in spotter.push(k, fp, g, r)] + spotter.flush()
    names = emotion_names(engine.labels)
    return [(KIND_NAMES[u.proposal.kind], names[u.proposal.emotion] if u.proposal.emotion is not None
             and names else u.proposal.emotion, u.proposal.onset, u.proposal.offset)
            for u in ups if isinstance(u, ExpressionUpdate)]


def finals(events, sid) -> list[tuple]:
    return [(e["data"]["kind"], e["data"]["emotion"], e["data"]["onset"]["frame"], e["data"]["offset"]["frame"])
            for e in events if e["type"] == "expression" and e["stream_id"] == sid]


class Pool:
    """`fes-live detect --workers 2 [extra]` as a process of its own (killed with its group by `procs`)."""

    def __init__(self, procs, tmp_path, extra: tuple[str, ...] = (), curve=None):
        self.ep = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("features", "events", "replay")}
        self.curve = curve
        self.journal = tmp_path / "events.sqlite"
        self.log = tmp_path / "pool.log"
        cfg = tmp_path / "detect.json"
        fields = {"state_interval_s": 0.2, "idle_stream_s": 300.0}
        if curve is not None:
            fields["endpoints"] = {"curve": dataclasses.asdict(curve)}
        cfg.write_text(json.dumps(fields))
        with open(self.log, "w") as out:
            self.proc = procs.popen([sys.executable, "-m", "fes_live.stream.cli", "detect", "--workers", "2",
                                     *extra, "--config", str(cfg), "--journal", str(self.journal),
                                     "--features-endpoint", self.ep["features"], "--events-endpoint",
                                     self.ep["events"], "--replay-endpoint", self.ep["replay"]],
                                    cwd=REPO, stdout=out, stderr=out)
        self.lanes = self.wait_up()

    def wait_up(self) -> dict:
        """{lane: next seq} once the front answers for every worker."""
        got = {}

        def up():
            try:
                got.update(hello(self.ep["replay"], timeout_s=1.0, curve=self.curve)["publishers"])
                return True
            except ReplayError:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                return False
        assert wait_until(up, 180, poll_s=0.2), self.log.read_text()[-3000:]
        return got

    def wait(self, cond, timeout_s: float) -> None:
        """Until cond(), while the pool runs."""
        def ok():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            return cond()
        assert wait_until(ok, timeout_s, poll_s=0.1), self.log.read_text()[-3000:]

    def worker_pid(self, i: int) -> int:
        return int(re.findall(rf"started detector-{i} \(pid (\d+)\)", self.log.read_text())[-1])

    def journal_of(self, i: int) -> list[dict]:
        return journal_events(worker_journal(str(self.journal), i))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(scaled(60)) == 0, self.log.read_text()[-3000:]


class Collector(threading.Thread):
    """A subscriber from each lane's first seq (nothing published before it joined is missed)."""

    def __init__(self, pool: Pool):
        super().__init__(daemon=True)
        self.sub = Subscription(pool.ep["events"], pool.ep["replay"], from_seq=pool.lanes, idle_timeout_s=None,
                                curve=pool.curve)
        self.events: list[dict] = []
        self.start()

    def run(self) -> None:
        for ev in self.sub:
            self.events.append(ev)

    def finish(self) -> list[dict]:
        """Every event, once the publishers have stopped and nothing came for a while."""
        self.sub.idle_timeout_s = 2.0
        self.join(scaled(30))
        assert not self.is_alive()
        return self.events

    def ended(self, sids) -> bool:
        return set(sids) <= {e["stream_id"] for e in self.events if e["type"] == "stream"
                             and e["data"]["status"] == "ended"}


class Feeder:
    """PUSH sockets sending the streams' frames round-robin, as edge ingests would (`endpoint`: one for all, or
    {stream id: endpoint}); lossless streams block instead of dropping, so every frame reaches a spotter."""

    def __init__(self, endpoint, sids: list[str], lossless: bool, curve=None, intruder: bool = False):
        from fes_live.stream.auth import apply_client
        from fes_live.stream.pipeline_config import CurveConfig
        self.ctx = zmq.Context()
        where = endpoint if isinstance(endpoint, dict) else dict.fromkeys(sids, endpoint)
        socks = {}
        for ep in set(where.values()):
            socks[ep] = self.ctx.socket(zmq.PUSH)
            socks[ep].setsockopt(zmq.LINGER, 2000)
            # a hang fails instead of blocking; an intruder's connection never completes its handshake, so its
            # frames queue or are refused (zmq.Again), whichever the handshake's timing gives
            socks[ep].setsockopt(zmq.SNDTIMEO, 0 if intruder else int(scaled(60) * 1000))
            apply_client(socks[ep], ep, curve or CurveConfig())
            socks[ep].connect(ep)
        self.push = {sid: socks[ep] for sid, ep in where.items()}
        self.intruder = intruder
        for sid in sids:
            self._send(sid, wire.control_message(sid, "started", source="smile.npz", fps=FPS, lossless=lossless))

    def _send(self, sid, frames) -> None:
        try:
            self.push[sid].send_multipart(frames)
        except zmq.Again:
            if not self.intruder:
                raise

    def send(self, sid, k, fp, g, r) -> None:
        f = FrameFeatures(k, k / FPS, time.time(), fp, np.asarray(g, np.float32), np.asarray(r, np.float32), None)
        self._send(sid, wire.features_message(sid, f, "tracked" if fp else "none"))

    def end(self, sids) -> None:
        for sid in sids:
            self._send(sid, wire.control_message(sid, "ended", message="end of features"))

    def close(self) -> None:
        for sock in set(self.push.values()):
            sock.close()
        self.ctx.term()


def check_lanes(pool: Pool, events: list[dict]) -> None:
    """The subscriber got every journaled event of both workers exactly once, in order per lane."""
    seen = [(lane_of(e["publisher"]), e["seq"]) for e in events]
    assert len(seen) == len(set(seen)), "an event was yielded twice"
    assert set(pool.lanes) == {lane_of(e["publisher"]) for e in events}
    for i, lane in enumerate(sorted(pool.lanes)):
        journaled = [e["seq"] for e in pool.journal_of(i)]
        assert journaled == list(range(len(journaled)))  # gapless per worker
        got = [s for la, s in seen if la == lane]
        first = pool.lanes[lane]
        assert got == journaled[first:], (lane, got[-5:], journaled[-5:])


def test_shard_is_stable_and_spreads():
    assert shard("cam-0", 4) == shard("cam-0", 4) == __import__("zlib").crc32(b"cam-0") % 4
    counts = np.bincount([shard(f"s{i}", 4) for i in range(400)], minlength=4)
    assert counts.min() > 60, counts


@pytest.mark.slow
def test_streams_split_over_two_workers_give_a_single_detectors_expressions(smile, engine, procs, tmp_path):
    sids = split_streams(2)
    n_frames = 4 * len(smile["face_present"])
    frames = {sid: stream_frames(smile, i, n_frames) for i, sid in enumerate(sids)}
    pool = Pool(procs, tmp_path)
    assert len(pool.lanes) == 2
    sub = Collector(pool)
    feed = Feeder(pool.ep["features"], sids, lossless=True)
    try:
        for k in range(n_frames):
            for sid in sids:
                feed.send(sid, *frames[sid][k])
        feed.end(sids)
        pool.wait(lambda: sub.ended(sids), 120)
        # a subscriber joining late, from seq 0: the front's hello tells it the lanes, each is replayed
        late = list(Subscription(pool.ep["events"], pool.ep["replay"], from_seq=0, types=("expression",),
                                 idle_timeout_s=2.0))
        pool.stop()
    finally:
        feed.close()
    evs = sub.finish()
    check_lanes(pool, evs)
    by_lane = lambda e: (lane_of(e["publisher"]), e["seq"])  # noqa: E731 (a late one gets lane after lane)
    assert sorted(late, key=by_lane) == sorted((e for e in evs if e["type"] == "expression"), key=by_lane)
    assert len(late) >= 4
    for i, sid in enumerate(sids):
        lanes = {lane_of(e["publisher"]) for e in evs if e["stream_id"] == sid}
        assert lanes == {sorted(pool.lanes)[shard(sid, 2)]}, (sid, lanes)  # one worker per stream, by its hash
        spotted = [f for e in evs if e["type"] == "intensity" and e["stream_id"] == sid for f in e["data"]["frames"]]
        assert spotted == list(range(n_frames)), sid  # lossless: every frame, once
        want = reference(engine, frames[sid])
        assert want and finals(evs, sid) == want, (sid, finals(evs, sid), want)


def kill_mid_run(pool: Pool, smile, sids: list[str], endpoint, kill, back) -> tuple[list[dict], dict]:
    """Streams sids[:2] on worker 0 and sids[2:] on worker 1, paced; `kill()` once worker 1 has published an onset
    (its state journaled), then 30 more ticks of worker 0's streams alone (they do not wait for worker 1), `back()`
    waits for worker 1's restart, and its streams go on from where they were. Every event, and the frames."""
    T = len(smile["face_present"])
    n_frames = 8 * T
    frames = {sid: stream_frames(smile, i, n_frames) for i, sid in enumerate(sids)}
    sub = Collector(pool)
    feed = Feeder(endpoint, sids, lossless=True)  # the reference is every frame scored, however loaded the host
    pos = dict.fromkeys(sids, 0)
    state, dead_ticks = "before", 0
    try:
        while any(k < n_frames for k in pos.values()):
            for sid in sids if state != "dead" else sids[:2]:
                if pos[sid] < n_frames:
                    feed.send(sid, *frames[sid][pos[sid]])
                    pos[sid] += 1
            time.sleep(1 / 60)
            if state == "before" and pos[sids[0]] % 5 == 0 and any(
                    e["type"] == "expression.onset" and e["stream_id"] in sids[2:] for e in sub.events):
                time.sleep(0.5)  # its streams' states are journaled every 0.2 s
                kill()
                state = "dead"
                assert pos[sids[2]] < n_frames - 3 * T, "no onset early enough on worker 1"
            elif state == "dead":
                dead_ticks += 1
                if dead_ticks == 30:
                    back()
                    pool.wait_up()
                    state = "after"
        assert state == "after", "worker 1 never published an onset"
        feed.end(sids)
        pool.wait(lambda: sub.ended(sids), 120)
        pool.stop()
    finally:
        feed.close()
    evs = sub.finish()
    assert sub.sub.missed == 0
    return evs, frames


def check_killed_run(pool: Pool, engine, evs: list[dict], sids: list[str], frames: dict) -> None:
    """Every event once; worker 1 is one numbering under two publisher ids; worker 0's streams are untouched and
    worker 1's resumed with their saved baselines: the same expressions, no onset left open, no track id twice."""
    check_lanes(pool, evs)
    lane = sorted(pool.lanes)[1]
    names = {e["publisher"] for e in evs if lane_of(e["publisher"]) == lane}
    assert len(names) == 2, names
    second = (names - {next(e["publisher"] for e in evs if lane_of(e["publisher"]) == lane)}).pop()  # restarted
    for sid in sids[:2]:
        assert finals(evs, sid) == reference(engine, frames[sid]), sid
    for sid in sids[2:]:
        onsets = [e for e in evs if e["type"] == "expression.onset" and e["stream_id"] == sid]
        closing = [e for e in evs if e["type"] in ("expression", "expression.cancel") and e["stream_id"] == sid]
        tracks = [e["data"]["track"] for e in onsets]
        assert onsets and len(tracks) == len(set(tracks)), tracks
        # the successor never saw the stream's `started`: its source, frame rate and losslessness are the saved ones
        rejoined = [e["data"] for e in evs if e["type"] == "stream" and e["stream_id"] == sid
                    and e["publisher"] == second and e["data"]["status"] == "started"]
        assert [(d["source"], d.get("fps"), d["message"]) for d in rejoined] == [
            ("smile.npz", FPS, "joined mid-stream")], rejoined
        for o in onsets:  # (an onset the dead worker left open is cancelled by its successor)
            assert any(c["data"]["track"] == o["data"]["track"] and c["seq"] > o["seq"] for c in closing), o
        # once the successor has a FEDN window of its own frames (the expression the crash cut is another matter),
        # its answers are the single detector's: with the saved neutral baseline, not a fresh one
        restart = min(f for e in evs if e["type"] == "intensity" and e["stream_id"] == sid
                      and e["publisher"] == second for f in e["data"]["frames"])
        settled = restart + FEDN_WINDOW
        got = {(kind, emo) for kind, emo, onset, _ in finals([e for e in evs if e["publisher"] == second], sid)
               if onset >= settled}
        want = {(kind, emo) for kind, emo, onset, _ in reference(engine, frames[sid]) if onset >= settled}
        assert got and got == want, (sid, restart, got, want)


@pytest.mark.slow
def test_a_killed_worker_comes_back_and_subscribers_see_every_event_once(smile, engine, procs, tmp_path):
    sids = split_streams(2)
    pool = Pool(procs, tmp_path)
    old_pid = pool.worker_pid(1)
    evs, frames = kill_mid_run(pool, smile, sids, pool.ep["features"], lambda: os.kill(old_pid, signal.SIGKILL),
                               lambda: pool.wait(lambda: pool.worker_pid(1) != old_pid, 60))
    check_killed_run(pool, engine, evs, sids, frames)
    assert any(e["type"] == "supervisor" and e["data"]["child"] == "detector-1" for e in evs)


def test_front_checks_what_peers_send(tmp_path):
    """Garbage on the features endpoint is counted and dropped; a replay request names a lane the front has, a
    hello waits for every worker; whatever is wrong is an error answer, never a crash or a hang."""
    import zmq

    from fes_live.stream.pipeline_config import Endpoints
    from fes_live.stream.workers import Front, FrontConfig
    workers = tuple(Endpoints(*(f"ipc://{tmp_path}/w{i}-{k}" for k in "fer"), preview="") for i in range(2))
    ep = Endpoints(*(f"tcp://127.0.0.1:{free_port()}" for _ in range(3)), preview="")
    front = Front(FrontConfig(ep, workers, ("t-w0", "t-w1"), "t-front"))
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(ep.features)
    try:
        for junk in ([b"x"], [b"features/a", b"{not json"], wire.event_message({"stream_id": "a", "type": "stream"})):
            push.send_multipart(junk)
        f = FrameFeatures(0, 0.0, time.time(), True, np.zeros(1008, np.float32), np.zeros((12, 2), np.float32), None)
        push.send_multipart(wire.features_message("a", f))
        deadline = time.monotonic() + scaled(10)
        while front.bad_messages < 3 or front.forwarded < 1:
            front.turn(50)
            assert time.monotonic() < deadline, (front.bad_messages, front.forwarded)
        assert (front.bad_messages, front.forwarded) == (3, 1)
        with pytest.raises(ReplayError, match="not answering yet"):
            hello(ep.replay, timeout_s=5)  # no worker is up
        with pytest.raises(ReplayError, match="name one"):
            fetch(ep.replay, 0, None, timeout_s=5)
        with pytest.raises(ReplayError, match="no publisher lane"):
            fetch(ep.replay, 0, None, timeout_s=5, publisher="other-w0")
        with pytest.raises(ReplayError, match="worker 1 .* not answering"):
            fetch(ep.replay, 0, None, timeout_s=10, publisher="t-w1")
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(ep.replay)
        dealer.send_multipart([b"", b"replay", b"[]"])  # not a request: an error answer
        assert dealer.poll(int(scaled(10) * 1000))
        answer = wire.decode(dealer.recv_multipart()[1:])
        assert answer.header.meta["ok"] is False and front.bad_requests >= 3
        dealer.close()
    finally:
        push.close(linger=0)
        ctx.term()
        front.close()


def test_run_with_workers_prints_every_streams_events_and_journals_per_worker(procs, tmp_path):
    """`fes-live run --workers 2` with two real clips: the app waits for every worker (the front's hello), prints
    both streams' events from the first of each lane, and each worker journals its own."""
    import subprocess

    from conftest import FACE_MODEL, VIDEO, need
    need(FACE_MODEL)
    clips = [str(need(VIDEO / "pyfeat_single_face.mp4")), str(need(VIDEO / "pyfeat_no_face.mp4"))]
    env = dict(os.environ, FES_FACE_MODEL=str(FACE_MODEL), FES_NO_DOWNLOAD="1")
    run = procs.popen([sys.executable, "-m", "fes_live.stream.cli", "run", "--workers", "2", "--fast", "--port",
                       "auto", "--record", str(tmp_path), *(a for c in clips for a in ("--source", c))],
                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = run.communicate(timeout=scaled(240))  # (on a timeout, `procs` ends the whole process group)
    assert run.returncode == 0, err[-3000:]
    for sid in ("pyfeat_single_face", "pyfeat_no_face"):
        assert re.search(rf"{sid} +stream +started", out) and re.search(rf"{sid} +stream +ended", out), out
    assert re.search(r"pyfeat_single_face +expression +track \d+ macro", out), out
    folder = next(tmp_path.iterdir())
    journals = [journal_events(folder / f"events.w{i}.sqlite") for i in range(2)]
    owners = {e["stream_id"]: i for i, evs in enumerate(journals) for e in evs if e["stream_id"] != "pipeline"}
    assert owners == {sid: shard(sid, 2) for sid in ("pyfeat_single_face", "pyfeat_no_face")}, owners


def test_replay_meta_of_a_front_is_checked():
    from fes_live.stream.events import replay_request

    def answer(meta):
        return wire.encode("replay", wire.Header("replay", "pipeline", meta={"ok": True, "next_seq": 0,
                                                                             "publisher": "f", **meta}))
    assert wire.decode(answer({"publishers": {"t-w0": 3, "t-w1": 0}})).header.meta["publishers"]["t-w0"] == 3
    for bad in ({"publishers": [1]}, {"publishers": {"t-w0": -1}}, {"publishers": {"x" * 65: 0}},
                {"publishers": {f"w{i}": 0 for i in range(65)}}, {"publishers": {"w0": 1.5}}):
        with pytest.raises(wire.BadMessage):
            wire.decode(answer(bad))
    assert wire.decode(replay_request(0, publisher="t-w1")).header.meta["publisher"] == "t-w1"
    frames = replay_request(0)
    head = json.loads(frames[1])
    head["meta"]["publisher"] = 7
    with pytest.raises(wire.BadMessage):
        wire.decode([frames[0], json.dumps(head).encode()])


def test_workers_front_authenticates_on_tcp(smile, procs, tmp_path):
    """With CURVE required (as off loopback), the front admits only known client keys on all three endpoints; the
    workers behind it, on private ipc sockets, need none."""
    from fes_live.stream import auth
    from fes_live.stream.pipeline_config import CurveConfig
    good = CurveConfig(**auth.keygen(tmp_path / "keys"), require="always")
    pool = Pool(procs, tmp_path, curve=good)
    with pytest.raises(ReplayError):
        hello(pool.ep["replay"], timeout_s=2.0)  # no keys: no answer
    sub = Collector(pool)
    keyed, plain = Feeder(pool.ep["features"], ["keyed"], lossless=True, curve=good), \
        Feeder(pool.ep["features"], ["plain"], lossless=False, intruder=True)
    try:
        frames = stream_frames(smile, 0, 60)
        for k in range(60):
            keyed.send("keyed", *frames[k])
            plain.send("plain", *frames[k])  # (queued or refused: its handshake never completes)
        keyed.end(["keyed"])
        plain.end(["plain"])
        pool.wait(lambda: sub.ended(["keyed"]), 60)
        pool.stop()
    finally:
        keyed.close()
        plain.close()
    evs = sub.finish()
    assert {e["stream_id"] for e in evs} <= {"keyed", "pipeline"} and any(e["stream_id"] == "keyed" for e in evs)


def test_a_subscriber_from_seq_0_started_before_the_publisher_misses_nothing(tmp_path):
    """`fes-events --replay-from 0` before the detector is up: the hello finds nobody, so each lane is replayed from
    0 when its first live event arrives (the events published before the SUB connected come from replay)."""
    from fes_live.stream.events import EventPublisher
    ctx = zmq.Context()
    # the SUB socket tries again 6 s after its first refused connect: the first events (published at 3.5 s) are
    # surely missed, with 2.5 s to spare on a loaded machine (2 s, with 0.5 s to spare, once missed fewer)
    ctx.setsockopt(zmq.RECONNECT_IVL, 6000)
    ev, rp = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    sub = Subscription(ev, rp, from_seq=0, ctx=ctx)
    got = []
    t = threading.Thread(target=lambda: got.extend(sub), daemon=True)
    t.start()
    time.sleep(3.5)  # the subscriber's hello (3 s) has given up
    pub = EventPublisher(ctx, ev, rp, run_token="t")
    try:
        for i in range(5):
            pub.publish("face", "cam0", {"state": "found", "frame": i, "pts_s": i / 30, "wall_s": 1.0})
        assert len(got) == 0
        deadline = time.monotonic() + scaled(15)
        while not got:
            pub.publish("face", "cam0", {"state": "found", "frame": pub.seq, "pts_s": 0.0, "wall_s": 1.0})
            assert time.monotonic() < deadline, "the subscriber never connected"
            time.sleep(0.3)
        sub.idle_timeout_s = 1.0
        t.join(scaled(20))
    finally:
        pub.close()
        ctx.destroy(linger=0)
    assert [e["seq"] for e in got] == list(range(pub.seq)) and sub.missed == 0, [e["seq"] for e in got]
