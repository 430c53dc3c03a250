"""Hostile peers: every malformed message is a counted BadMessage, floods cannot starve a real stream.

Unit level: the codec on every bad class of issue 12 and on hypothesis-generated garbage; the detector's admission
caps, eviction and aggregated stats on an in-process detector. System level: `fes-bench fuzz`'s fuzzer (a few
thousand messages) against a real detector process while a real stream (features of a real clip) runs through it.
"""
import json
import math
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FACE_MODEL, need
from fes_live.benchmarks import fuzz
from fes_live.stream import wire
from fes_live.stream.detect import Detector
from fes_live.stream.engine import load_engine
from fes_live.stream.events import REPLAY_MAX, parse_replay_request, validate
from fes_live.stream.features import GEOMETRY_DIM, FrameFeatures
from fes_live.stream.pipeline_config import DetectConfig
from test_pipeline_detect import tcp_endpoints

PAYLOAD = {"features": wire.to_features, "preview": wire.to_preview, "event": wire.to_event,
           "replay": lambda m: wire.to_replay_request(m, REPLAY_MAX), "control": lambda m: m}


def decode_all(frames):
    """Decode and convert as a receiver would: a Message / payload, or BadMessage (and nothing else)."""
    msg = wire.decode(frames)
    return PAYLOAD[msg.header.kind](msg)


@pytest.mark.parametrize("name", sorted(set(fuzz.feature_cases()) - {"wrong_kind_event", "wrong_kind_preview"}))
def test_every_bad_feature_class_is_a_bad_message(name):
    with pytest.raises(wire.BadMessage):
        decode_all(fuzz.feature_cases()[name])


@pytest.mark.parametrize("name", sorted(fuzz.replay_cases()))
def test_every_bad_replay_request_is_a_bad_message(name):
    with pytest.raises(wire.BadMessage):
        parse_replay_request(fuzz.replay_cases()[name])


def test_bounds_are_exact():
    """Edges of the bounds: the largest legal values pass, one more does not."""
    ok = fuzz._features({"face_present": True, "dropped": wire.MAX_INT})
    assert wire.to_features(wire.decode(ok)).frame_index == 0
    with pytest.raises(wire.BadMessage, match="meta.dropped"):
        wire.decode(fuzz._features({"face_present": True, "dropped": wire.MAX_INT + 1}))
    assert wire.decode(fuzz._control({"status": "started", "fps": 1000.0})).header.meta["fps"] == 1000.0
    with pytest.raises(wire.BadMessage, match="meta.fps"):
        wire.decode(fuzz._control({"status": "started", "fps": 1000.5}))
    assert wire.decode(fuzz._control({"status": "restarted", "child": "ingest-a", "note": "gave_up",
                                      "exitcode": None, "restarts": 5}, stream_id="pipeline"))
    r = parse_replay_request(fuzz._replay({"from": 3, "to": None, "max": 10**9}))
    assert (r.first, r.last, r.limit) == (3, None, REPLAY_MAX)
    assert parse_replay_request(fuzz._replay({"from": 0, "to": -1})).last == -1  # "nothing, just next_seq"


def test_events_go_out_as_standard_json():
    with pytest.raises(ValueError):
        wire.event_message({"type": "stats", "stream_id": "x", "wall_s": 1.0, "v": float("nan")})
    with pytest.raises(wire.BadMessage):  # and a NaN that came in is refused
        wire.loads(b'{"a": NaN}')


# frames of random bytes, and random JSON headers over the real keys: decoding raises BadMessage or succeeds
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=20)
header_keys = st.sampled_from(sorted(wire.HEADER_KEYS) + ["status", "from", "max", "dropped", "x"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=120), max_size=8))
def test_random_frames_only_ever_raise_bad_message(frames):
    try:
        decode_all(frames)
    except wire.BadMessage:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(header_keys, json_values, max_size=10), st.sampled_from(wire.KINDS),
       st.dictionaries(st.sampled_from(["status", "face_present", "dropped", "fps", "from", "to", "max", "box",
                                        "width", "height", "exitcode", "restarts", "child", "note", "ok"]),
                       json_values, max_size=5),
       st.lists(st.binary(max_size=64), max_size=3))
def test_random_headers_only_ever_raise_bad_message(head, kind, meta, buffers):
    h = {"v": 1, "kind": kind, "stream_id": "s", "frame_index": 0, "pts_s": 0.0, "wall_s": 1.0, "face_state": "none",
         "meta": meta, "arrays": [{"name": f"a{i}", "dtype": "uint8", "shape": [len(b)]}
                                  for i, b in enumerate(buffers)]}
    h.update(head)
    try:
        text = json.dumps(h).encode()
    except (ValueError, TypeError):
        return
    try:
        decode_all([b"t", text, *buffers])
    except wire.BadMessage:
        pass


# ---------------------------------------------------------------- the detector, in process

def frame_msg(sid: str, i: int) -> list:
    f = FrameFeatures(i, i / 30, time.time(), True, np.zeros(GEOMETRY_DIM, np.float32),
                      np.zeros((12, 2), np.float32), None)
    return [bytes(x) for x in wire.features_message(sid, f, "tracked", {"dropped": 0})]


def test_detector_counts_every_bad_class_and_raises_nothing(engine_dir, tmp_path):
    det = Detector(DetectConfig(endpoints=tcp_endpoints(tmp_path)), load_engine(engine_dir))
    try:
        cases = fuzz.feature_cases()
        for name, frames in cases.items():
            before = det.bad_messages
            det.handle(frames)
            assert det.bad_messages == before + 1, name
        det.handle(fuzz._features(stream_id="fz2", wall_s=1e9))
        assert det.handler_errors == 0 and det.event_errors == 0 and not det.streams
        for e in det.publisher.memory:
            validate(e)
            wire.dumps(e)  # standard JSON
    finally:
        det.close()


def test_made_up_timestamps_do_not_retime_a_stream(engine_dir, tmp_path):
    """A peer whose frames come in bursts a microsecond apart (a million frames a second: followed, a model frame
    would wait for 33 000 of them) or a minute apart: the stream stays at its announced rate and every frame is
    scored."""
    det = Detector(DetectConfig(endpoints=tcp_endpoints(tmp_path), stats_interval_s=0.0), load_engine(engine_dir))
    try:
        for sid, pts in (("bursts", lambda i: i // 20 * 0.25 + i % 20 * 1e-6), ("slow", lambda i: i * 60.0)):
            det.handle(wire.control_message(sid, "started", source="test", fps=30.0))
            for i in range(150):
                f = FrameFeatures(i, pts(i), time.time(), True, np.zeros(GEOMETRY_DIM, np.float32),
                                  np.zeros((12, 2), np.float32), None)
                det.turn.clear()  # as each drain turn does
                det.handle([bytes(x) for x in wire.features_message(sid, f, "tracked")])
                det.step(budget_s=10.0)
            det.housekeeping()
            assert det.streams[sid].spot_fps == 30.0 and det.streams[sid].spotter.stream_fps == 30.0
            assert det.streams[sid].frames_out == 150
    finally:
        det.close()


def test_stream_admission_caps_eviction_and_aggregated_stats(engine_dir, tmp_path):
    cfg = DetectConfig(endpoints=tcp_endpoints(tmp_path), max_streams=2, max_pending_streams=3, admit_frames=3,
                       pending_idle_s=0.2, stats_streams=1, stats_interval_s=0.0, batch_streams=False)
    det = Detector(cfg, load_engine(engine_dir))
    try:
        for i in range(2):  # a b c d: four new ids at once, three may wait to prove real
            for sid in "abcd":
                det.handle(frame_msg(sid, i))
        assert sorted(det.pending) == ["a", "b", "c"] and det.refused == 2 and not det.streams
        for sid in "ab":
            det.handle(frame_msg(sid, 2))  # third valid frame: real
        assert sorted(det.streams) == ["a", "b"] and all(det.streams[s].spotter is not None for s in "ab")
        det.handle(frame_msg("c", 2))  # proves real, but both slots are taken: refused once, stays pending
        det.handle(frame_msg("c", 3))
        assert "c" in det.pending and det.refused == 3
        det.handle(frame_msg("a", 2))  # indices must increase
        assert det.bad_messages == 1
        time.sleep(0.3)
        det.handle(frame_msg("a", 3))
        det.handle(frame_msg("b", 3))
        det.housekeeping()  # c went quiet before proving real: forgotten without an event
        assert not det.pending and det.evicted == 1
        while det.step(1.0):
            pass
        det.housekeeping()
        evs = list(det.publisher.memory)
        for e in evs:
            validate(e)
        assert [e["stream_id"] for e in evs if e["type"] == "stream"] == ["a", "b"]  # c, d never announced
        assert not [e for e in evs if e["type"] == "stats" and e["stream_id"] != "pipeline"]  # 2 > stats_streams
        last = [e["data"] for e in evs if e["type"] == "stats"][-1]
        assert last["streams"] == 2 and last["refused"] == 3 and last["evicted"] == 1 and len(last["per_stream"]) == 1
    finally:
        det.close()


def test_short_stream_that_never_proved_real_is_still_spotted(engine_dir, tmp_path):
    det = Detector(DetectConfig(endpoints=tcp_endpoints(tmp_path), admit_frames=10), load_engine(engine_dir))
    try:
        det.handle(wire.control_message("clip", "started", source="x", fps=30.0))
        for i in range(4):
            det.handle(frame_msg("clip", i))
        det.handle(wire.control_message("clip", "ended", message="end of source", frames=4))
        evs = list(det.publisher.memory)
        assert [(e["data"]["status"]) for e in evs if e["type"] == "stream"] == ["started", "ended"]
        assert [f for e in evs if e["type"] == "intensity" for f in e["data"]["frames"]] == [0, 1, 2, 3]
    finally:
        det.close()


def test_replay_endpoint_refuses_bad_requests_and_keeps_serving(engine_dir, tmp_path):
    ep = tcp_endpoints(tmp_path)
    det = Detector(DetectConfig(endpoints=ep), load_engine(engine_dir))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(ep.replay)
    try:
        answers = []
        for name, frames in [*fuzz.replay_cases().items(), ("good", fuzz._replay({"from": 0, "to": -1}))]:
            sock.send_multipart([b"", *frames])
            deadline = time.monotonic() + 10
            while not sock.poll(10):
                det.drain(10)
                assert time.monotonic() < deadline, name
            answers.append((name, wire.decode(sock.recv_multipart()[1:]).header.meta["ok"]))
        assert answers == [(n, False) for n in fuzz.replay_cases()] + [("good", True)]
        assert det.publisher.bad_requests == len(fuzz.replay_cases())
    finally:
        sock.close(0)
        ctx.destroy(0)
        det.close()


# ---------------------------------------------------------------- the system, under fire

RSS_GROWTH_MB = 150  # the detector's growth over the flood (the flood itself costs ~15 MB; before: +530 MB)


@pytest.mark.slow
def test_fuzz_against_a_running_detector_with_a_real_stream(tmp_path, smile_npz):
    """A few thousand hostile messages (every class, random garbage, 10 MB frames, thousands of stream ids) while
    a real stream runs: the detector never exits, the real stream keeps >= 25 fps and exactly its expressions."""
    need(FACE_MODEL)
    r = fuzz.run(smile_npz, 8.0, tmp_path, max_messages=4000, rate=500, warmup_s=3.0)
    f = r["fuzz"]
    assert f["messages"] >= 3000 and f["huge"] >= 1 and f["stream_ids"] > 500 and f["refused"] > 100, f
    assert r["detector_alive"] and r["detector_restarts"] == 0, r
    assert r["real_frames"] == r["real_expected"] and r["real_fps"] >= 25, r
    assert r["expressions_equal"] and r["expressions"], (r["expressions"], r["expressions_expected"])
    assert r["non_json"] == 0
    stats = r["last_pipeline_stats"]
    assert stats["bad_messages"] > 1000 and stats["refused"] > 0 and stats["errors"] == 0
    assert r["rss_after_mb"] - r["rss_before_mb"] < RSS_GROWTH_MB, r
    assert not math.isnan(r["rss_after_mb"])


def test_an_announced_stream_waits_for_its_first_frames(engine_dir, tmp_path):
    """`started`, then seconds before the first frame (a file ingest loading its model on a busy machine): the
    pending stream keeps what `started` said, so a lossless stream stays lossless (a CI run lost 166 frames so)."""
    det = Detector(DetectConfig(endpoints=tcp_endpoints(tmp_path), admit_frames=3, pending_idle_s=0.2),
                   load_engine(engine_dir))
    try:
        det.handle(wire.control_message("file", "started", source="f.mp4", fps=30.0, lossless=True))
        det.handle(frame_msg("noise", 0))  # features only: forgotten after pending_idle_s
        time.sleep(0.3)
        det.housekeeping()
        assert list(det.pending) == ["file"] and det.evicted == 1
        for i in range(3):
            det.handle(frame_msg("file", i))
        s = det.streams["file"]
        assert s.queue.maxlen is None and s.fps == 30.0 and s.source == "f.mp4"  # lossless: never drops
    finally:
        det.close()


@pytest.mark.parametrize("age_s, said, want", [
    (1.0, {"source": "cam.mp4", "fps": 60.0, "lossless": True}, ("cam.mp4", 60.0, True)),
    (1.0, {"source": 3, "fps": "fast", "lossless": "yes"}, ("", None, False)),  # a damaged row: nothing of it
    (1.0, {"source": "cam.mp4", "fps": math.inf, "lossless": False}, ("cam.mp4", None, False)),
    (1.0, "started", ("", None, False)),
    (3600.0, {"source": "cam.mp4", "fps": 60.0, "lossless": True}, ("", None, False)),  # too old to be this run
])
def test_a_stream_joining_mid_stream_takes_its_saved_started_message(engine_dir, tmp_path, age_s, said, want):
    """A restarted detector never saw the stream's `started`: the saved one gives its source, frame rate and
    losslessness back, and whatever the row holds, the stream runs."""
    det = Detector(DetectConfig(endpoints=tcp_endpoints(tmp_path), admit_frames=3), load_engine(engine_dir))
    try:
        det.publisher.saved_states["cam"] = (time.time() - age_s, {"next_track": 4, "started": said})
        for i in range(3):
            det.handle(frame_msg("cam", i))
        s = det.streams["cam"]
        assert (s.source, s.fps, s.lossless) == want
        assert s.queue.maxlen == (None if want[2] else det.cfg.queue_frames)
        started = [e["data"] for e in det.publisher.memory if e["type"] == "stream"]
        assert [(d["message"], d["source"], d.get("fps")) for d in started] == [("joined mid-stream", *want[:2])]
    finally:
        det.close()
