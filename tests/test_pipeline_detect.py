"""The detector service on a real (randomly initialised, exported) engine: backpressure, stats, events, roles."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zmq

from conftest import FACE_MODEL, REPO, VIDEO, held_then_smiling, need, scaled
from fes_live.stream import wire
from fes_live.stream.client import ReplayError, fetch
from fes_live.stream.detect import Detector, emotion_names
from fes_live.stream.engine import load_engine
from fes_live.stream.events import journal_events, read_journal, validate
from fes_live.stream.features import GEOMETRY_DIM, FrameFeatures
from fes_live.stream.pipeline_config import DetectConfig, Endpoints
from test_events_wire import free_port


def tcp_endpoints(tmp_path):
    return Endpoints(features=f"tcp://127.0.0.1:{free_port()}", events=f"tcp://127.0.0.1:{free_port()}",
                     replay=f"tcp://127.0.0.1:{free_port()}", preview=f"ipc://{tmp_path}/p")


def test_emotion_names_from_manifest_labels():
    assert emotion_names({"kinds": ["macro", "micro"], "emotions": ["a", "b"]}) == ["a", "b"]
    assert emotion_names({"emotion": {"1": "b", "0": "a"}}) == ["a", "b"]
    assert emotion_names({}) == []


def test_lagging_stream_drops_oldest_and_says_so(engine_dir, tmp_path):
    torch.set_num_threads(1)
    ep = tcp_endpoints(tmp_path)
    det = Detector(DetectConfig(endpoints=ep, queue_frames=10, record_dir=str(tmp_path / "rec")),
                   load_engine(engine_dir))
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(ep.features)
    rng = np.random.default_rng(0)
    push.send_multipart(wire.control_message("cam0", "started", source="test", fps=30.0))
    for i in range(50):  # all of them arrive before the detector gets to process any: it is "lagging"
        f = FrameFeatures(i, i / 30, time.time(), True, np.zeros(GEOMETRY_DIM, np.float32),
                          rng.normal(0, 1, (12, 2)).astype(np.float32), None)
        push.send_multipart(wire.features_message("cam0", f, "found" if i == 0 else "tracked", {"dropped": 2}))
    push.send_multipart(wire.control_message("cam0", "ended", message="done", dropped=2))
    received = 0
    deadline = time.monotonic() + scaled(20)
    while received < 52 and time.monotonic() < deadline:
        received += det.drain(200)
    det.close()
    push.close()
    evs = list(det.publisher.memory)
    for e in evs:
        validate(e)
    stats = [e["data"] for e in evs if e["type"] == "stats" and e["stream_id"] == "cam0"]
    assert stats[-1]["dropped_detector"] == 40 and stats[-1]["dropped_ingest"] == 2
    assert stats[-1]["frames_in"] == 50 and stats[-1]["frames_out"] == 10 and stats[-1]["queue"] == 0
    frames = [f for e in evs if e["type"] == "intensity" for f in e["data"]["frames"]]
    assert frames == list(range(40, 50))  # the newest frames survived
    assert [e["data"]["status"] for e in evs if e["type"] == "stream"] == ["started", "ended"]
    rows = (tmp_path / "rec" / "intensity_cam0.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(40, 50))


def test_separate_roles_and_clean_stop(engine_dir, tmp_path, procs):
    """`fes-live detect` and `fes-live ingest` as separate processes over tcp; SIGINT stops each cleanly."""
    need(FACE_MODEL)
    ep = tcp_endpoints(tmp_path)
    env = dict(os.environ, FES_FACE_MODEL=str(FACE_MODEL), FES_NO_DOWNLOAD="1")
    journal = tmp_path / "events.jsonl"
    det = procs.popen([sys.executable, "-m", "fes_live.stream.cli", "detect", "--engine", str(engine_dir),
                            "--features-endpoint", ep.features, "--events-endpoint", ep.events,
                            "--replay-endpoint", ep.replay, "--journal", str(journal)], env=env, cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + scaled(90)
    while True:  # the detector answers replay requests once its engine is loaded
        try:
            fetch(ep.replay, 0, -1, timeout_s=1.0)
            break
        except ReplayError:
            assert time.monotonic() < deadline and det.poll() is None
    ing = procs.popen([sys.executable, "-m", "fes_live.stream.cli", "ingest", "--source",
                            str(VIDEO / "pyfeat_face_noface.mov"), "--stream-id", "door",
                            "--features-endpoint", ep.features, "--preview-endpoint", ep.preview],
                           env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + scaled(90)
    while not any(e["type"] == "face" for e in journal_events(journal)):
        assert time.monotonic() < deadline and ing.poll() is None and det.poll() is None
        time.sleep(0.05)
    ing.send_signal(signal.SIGINT)  # mid-stream (real-time playback takes ~5.6 s)
    assert ing.wait(scaled(30)) == 0, ing.stderr.read()[-2000:]
    deadline = time.monotonic() + scaled(30)
    while not any(e["type"] == "stream" and e["data"]["status"] == "ended" for e in journal_events(journal)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    det.send_signal(signal.SIGTERM)
    assert det.wait(scaled(30)) == 0, det.stderr.read()[-2000:]
    evs = read_journal(journal)
    for e in evs:
        validate(e)
    status = [(e["data"]["status"], e["data"]["message"]) for e in evs if e["type"] == "stream"]
    assert status == [("started", ""), ("ended", "stopped")]
    frames = [f for e in evs if e["type"] == "intensity" for f in e["data"]["frames"]]
    assert frames and frames == list(range(len(frames)))  # every frame up to the stop, flushed


def test_gim_batched_across_streams_gives_the_same_events(engine_dir, tmp_path):
    """Three streams processed side by side: fewer engine calls (GIM and FEDN), exactly the events of unbatched
    processing."""
    torch.set_num_threads(1)
    engine = load_engine(engine_dir)
    rng = np.random.default_rng(1)
    flows = {sid: rng.normal(0, 2, (60, 12, 2)).astype(np.float32) for sid in ("a", "b", "c")}

    def run(batch: bool):
        det = Detector(DetectConfig(endpoints=tcp_endpoints(tmp_path), batch_streams=batch, queue_frames=100),
                       engine)
        calls = []
        inner = det.batcher.gim if batch else None
        if batch:
            det.batcher.gim = lambda w: (calls.append(len(w)), inner(w))[1]
        for sid, flow in flows.items():
            det.handle(wire.control_message(sid, "started"))
            for i, fl in enumerate(flow[: 40 if sid == "c" else 60]):  # c is shorter: rounds with 2 and 3 streams
                f = FrameFeatures(i, i / 30, 1000.0, True, np.zeros(GEOMETRY_DIM, np.float32), fl, None)
                det.handle([bytes(x) for x in wire.features_message(sid, f, "tracked")])
        while det.step(budget_s=10.0):
            pass
        for sid in flows:
            det.handle(wire.control_message(sid, "ended"))
        evs = [(e["type"], e["stream_id"], json.dumps(rounded(e["data"]), sort_keys=True))
               for e in det.publisher.memory if e["type"] in ("expression.onset", "expression", "expression.cancel")]
        evs += [("curve", e["stream_id"], json.dumps(rounded([f, v, a])))  # intensity events group frames by time
                for e in det.publisher.memory if e["type"] == "intensity"
                for f, v, a in zip(e["data"]["frames"], e["data"]["values"], e["data"]["apex_probs"])]
        det.close()
        return evs, calls

    def rounded(x):  # batch size changes the last float bits of the engine's output, nothing more
        if isinstance(x, float):
            return round(x, 4)
        if isinstance(x, dict):
            return {k: rounded(v) for k, v in x.items() if k != "latency_s"}
        if isinstance(x, list):
            return [rounded(v) for v in x]
        return x

    plain, _ = run(False)
    batched, calls = run(True)
    assert sorted(batched) == sorted(plain) and len(plain) > 10
    assert max(calls) > 1 and sum(calls) >= 100  # windows of several streams went in one call


def test_live_equals_offline_on_the_same_features(engine_dir, tmp_path, procs, smile_npz):
    """Recorded features of the smile clip through real ingest + detector processes give exactly the expressions
    the same engine finds offline (models.online.spot_video): the pipeline adds transport, never changes results."""
    need(FACE_MODEL)
    from fes_live.models.online import spot_video
    from fes_live.stream.features import load_features
    default = REPO / "stream" / "engines" / "default"
    engine = default if (default / "manifest.json").is_file() else engine_dir
    env = dict(os.environ, FES_FACE_MODEL=str(FACE_MODEL), FES_NO_DOWNLOAD="1")
    npz = smile_npz
    ep = tcp_endpoints(tmp_path)
    journal = tmp_path / "events.jsonl"
    det = procs.popen([sys.executable, "-m", "fes_live.stream.cli", "detect", "--engine", str(engine),
                            "--features-endpoint", ep.features, "--events-endpoint", ep.events,
                            "--replay-endpoint", ep.replay, "--journal", str(journal)], env=env, cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + scaled(90)
        while True:
            try:
                fetch(ep.replay, 0, -1, timeout_s=1.0)
                break
            except ReplayError:
                assert time.monotonic() < deadline and det.poll() is None
        ing = subprocess.run([sys.executable, "-m", "fes_live.stream.cli", "ingest", "--features", str(npz), "--stream-id",
                              "smile", "--features-endpoint", ep.features, "--no-preview"], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert ing.returncode == 0, ing.stderr[-2000:]
        deadline = time.monotonic() + scaled(30)
        while not any(e["type"] == "stream" and e["data"]["status"] == "ended" for e in journal_events(journal)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        det.send_signal(signal.SIGTERM)
        det.wait(scaled(30))
    evs = read_journal(journal)
    live = [(e["data"]["onset"]["frame"], e["data"]["apex"]["frame"], e["data"]["offset"]["frame"], e["data"]["kind"])
            for e in evs if e["type"] == "expression"]
    offline = [(p.onset, p.apex, p.offset, ("macro", "micro")[p.kind])
               for p in spot_video(load_engine(engine).new_spotter(), load_features(npz))]
    # events come out in the order they are settled (a FEDN-only macro can settle after a GIM micro inside it);
    # spot_video returns proposals by onset
    assert sorted(live, key=lambda e: (e[0], e[2])) == offline
    frames = [f for e in evs if e["type"] == "intensity" for f in e["data"]["frames"]]
    assert frames == list(range(72))
    levels = [v for e in evs if e["type"] == "intensity" for v in e["data"]["levels"]]
    assert len(levels) == 72 and max(levels) > 0.5  # the expression level of every frame: the smile raises it
    assert all(0 < e["data"]["peak_level"] <= max(levels) for e in evs if e["type"] == "expression")


def test_a_source_that_says_the_wrong_rate_is_spotted_at_the_rate_its_frames_come(tmp_path, smile_npz):
    """A camera that says 30 fps and gives 10 (a webcam in the dark), or says nothing (the browser camera): the
    spotters get the frames' timestamps and go by the rate they show, so the smile comes out where it is, as for a
    source that said 10; told to trust the source instead, it starts 0.27 s early. Here the person holds still for
    3 s, then smiles (the smile clip's 0.57-2.33 s: 3.57-5.33 s)."""
    torch.set_num_threads(1)
    engine = load_engine(None)
    fps = 10.0
    camera = held_then_smiling(dict(np.load(smile_npz)), 10)
    geometry, flow = camera["geometry"], camera["roi_flow"]

    def run(said: float, follow: bool = True) -> tuple[list, list]:
        det = Detector(DetectConfig(endpoints=tcp_endpoints(tmp_path), queue_frames=1000, follow_frame_rate=follow,
                                    stats_interval_s=0.0), engine)
        det.handle(wire.control_message("cam", "started", source="test", fps=said))
        for i in range(len(geometry)):
            x = FrameFeatures(i, i / fps, time.time(), True, geometry[i], flow[i], None)
            det.handle([bytes(b) for b in wire.features_message("cam", x, "found" if i == 0 else "tracked")])
            det.step(budget_s=10.0)
            det.housekeeping()
        det.handle(wire.control_message("cam", "ended"))
        evs = list(det.publisher.memory)
        det.close()
        for e in evs:
            validate(e)
        spotted = [e["data"]["spot_fps"] for e in evs if e["type"] == "stats" and e["stream_id"] == "cam"]
        return [(e["data"]["onset"]["pts_s"], e["data"]["offset"]["pts_s"], e["data"]["kind"], e["data"]["emotion"])
                for e in evs if e["type"] == "expression"], spotted

    def where(events: list) -> tuple[float, float]:
        (on, off, kind, emotion), = events
        assert (kind, emotion) == ("macro", "happiness")
        return on, off + 1 / fps

    said_right, spotted = run(fps)
    assert where(said_right) == pytest.approx((3.57, 5.33), abs=0.1) and set(spotted) == {fps}
    for said in (30.0, 0.0):
        events, spotted = run(said)
        assert where(events) == pytest.approx((3.57, 5.33), abs=0.1), said
        assert spotted[0] == 30.0 and spotted[-1] == pytest.approx(fps, rel=0.01)
    trusted, spotted = run(30.0, follow=False)
    assert set(spotted) == {30.0} and where(trusted)[0] < 3.57 - 0.2
