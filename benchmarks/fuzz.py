"""`fes-bench fuzz`: hostile peers against a running detector while a real stream goes through it.

A real detector process, a real stream (recorded features of a real clip, looped, sent exactly as an ingest sends
them) and, on the same sockets, a fuzzer: every class of malformed message that once crashed or starved the
detector (issue 12: bad header fields and array specs, bad control fields, bad replay requests, random garbage,
frames over the size limit, thousands of stream ids), mixed at random. Printed: messages per second the detector
survived, its RSS before and after, the real stream's fps and whether its expressions are exactly those the same
engine finds offline on the same frames. `tests/test_fuzz.py` runs the same thing for a few seconds.

    fes-bench fuzz --seconds 60
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from fes_live import version_text
from fes_live.stream import wire

FPS = 30.0
REAL = "real"


# ---------------------------------------------------------------- hostile messages

def _raw(kind: str = "features", *, meta=None, arrays=None, buffers=(), topic: bytes = b"features/x",
         literal: dict | None = None, **head) -> list:
    """Frames of a hand-made message. `literal` maps a placeholder value to raw JSON text (`1e400`, `NaN`) that
    json.dumps would never write."""
    h = {"v": 1, "kind": kind, "stream_id": "fz", "frame_index": 0, "pts_s": 0.0, "wall_s": time.time(),
         "face_state": "none", "meta": {"face_present": True, "dropped": 0} if meta is None else meta,
         "arrays": arrays if arrays is not None else [], **head}
    text = json.dumps(h)
    for placeholder, raw in (literal or {}).items():
        text = text.replace(json.dumps(placeholder), raw)
    return [topic, text.encode(), *buffers]


def _geometry_specs(geometry_dtype: str = "float32", geometry_shape=(1008,)):
    return [{"name": "geometry", "dtype": geometry_dtype, "shape": list(geometry_shape)},
            {"name": "roi_flow", "dtype": "float32", "shape": [12, 2]}]


GEOM, FLOW = np.zeros(1008, np.float32).tobytes(), np.zeros((12, 2), np.float32).tobytes()


def _features(meta=None, literal=None, geometry=GEOM, specs=None, **head) -> list:
    return _raw("features", meta=meta, arrays=specs or _geometry_specs(), buffers=(geometry, FLOW),
                literal=literal, **head)


def _control(meta: dict, literal=None, **head) -> list:
    return _raw("control", meta=meta, topic=b"control/fz", literal=literal, **head)


def _replay(meta: dict, literal=None) -> list:
    return _raw("replay", meta=meta, topic=b"replay", stream_id="pipeline", frame_index=-1, literal=literal)


BIG = "__big__"


def feature_cases() -> dict[str, list]:
    """Every class of bad message for the features endpoint (features and control), by name."""
    nan = np.full(1008, np.nan, np.float32).tobytes()
    return {
        "dropped_str": _features({"face_present": True, "dropped": "x"}),
        "dropped_null": _features({"face_present": True, "dropped": None}),
        "dropped_negative": _features({"face_present": True, "dropped": -1}),
        "dropped_1e400": _features({"face_present": True, "dropped": BIG}, {BIG: "1e400"}),
        "dropped_2e53": _features({"face_present": True, "dropped": 2**60}),
        "shape_65_dims": _features(specs=_geometry_specs(geometry_shape=[1] * 65)),
        "shape_2e70": _features(specs=_geometry_specs(geometry_shape=[0, 2**70])),
        "geometry_json": _features(specs=_geometry_specs("json", [len(GEOM)])),
        "geometry_object_dtype": _features(specs=_geometry_specs("object")),
        "geometry_nan": _features(geometry=nan),
        "frame_index_negative": _features(frame_index=-5),
        "frame_index_float": _features(frame_index=1.5),
        "frame_index_huge": _features(frame_index=10**30),
        "wall_s_1e308": _features(wall_s=1e308),
        "pts_nan": _features(pts_s=BIG, literal={BIG: "NaN"}),
        "face_present_str": _features({"face_present": "yes"}),
        "unknown_meta": _features({"face_present": True, "evil": 1}),
        "stream_id_slash": _features(stream_id="a/b"),
        "stream_id_long": _features(stream_id="x" * 500),
        "stream_id_int": _features(stream_id=7),
        "deep_json": [b"features/x", b"[" * 5000 + b"]" * 5000],
        "int_10e400": [b"features/x", b'{"v":1,"kind":"features","frame_index":' + b"9" * 5000 + b"}"],
        "not_utf8": [b"\xff\xfe", b"\xff\xfe\xfd"],
        "one_frame": [b"garbage"],
        "many_parts": [b"features/x", b"{}", *([b"x"] * 40)],
        "wrong_kind_event": wire.event_message({"type": "face", "stream_id": "x"}),
        "wrong_kind_preview": _raw("preview", meta={"box": None, "width": 10, "height": 10}),
        "started_fps_str": _control({"status": "started", "fps": "abc"}),
        "started_fps_nan": _control({"status": "started", "fps": BIG}, {BIG: "NaN"}),
        "started_fps_1e400": _control({"status": "started", "fps": BIG}, {BIG: "1e400"}),
        "started_source_obj": _control({"status": "started", "source": {"a": [1, 2]}}),
        "restarted_exitcode_str": _control({"status": "restarted", "child": "x", "note": "restarted",
                                            "exitcode": "x", "restarts": 1}, stream_id="pipeline"),
        "restarted_restarts_negative": _control({"status": "restarted", "child": "x", "note": "restarted",
                                                 "exitcode": 1, "restarts": -1}, stream_id="pipeline"),
        "restarted_note_bad": _control({"status": "restarted", "child": "x", "note": "exploded",
                                        "exitcode": 1, "restarts": 1}, stream_id="pipeline"),
        "control_status_bad": _control({"status": "exploded"}),
        "ended_frames_negative": _control({"status": "ended", "frames": -3}, frame_index=-9),
        "header_array": [b"features/x", b"[1,2]"],
        "header_too_big": [b"features/x", b'{"v":1,"pad":"' + b"x" * 70000 + b'"}'],
    }


def replay_cases() -> dict[str, list]:
    """Every class of bad request for the replay endpoint (each gets an `ok: false` answer)."""
    return {
        "from_1e400": _replay({"from": BIG, "to": None, "max": 10}, {BIG: "1e400"}),
        "to_1e400": _replay({"from": 0, "to": BIG, "max": 10}, {BIG: "1e400"}),
        "max_1e400": _replay({"from": 0, "to": None, "max": BIG}, {BIG: "1e400"}),
        "from_str": _replay({"from": "0"}),
        "from_negative": _replay({"from": -4}),
        "max_float": _replay({"from": 0, "max": 2.5}),
        "unknown_key": _replay({"from": 0, "sql": "drop"}),
        "features_kind": _features(),
        "garbage": [b"\x00" * 7],
    }


def random_message(rng: np.random.Generator, cases: list[list]) -> list:
    """A known-bad message, a mutated one (a byte flipped, a frame cut) or pure random bytes."""
    pick = rng.integers(4)
    if pick == 0:
        return [rng.bytes(int(rng.integers(0, 300))) for _ in range(int(rng.integers(1, 6)))]
    frames = [bytes(f) for f in cases[int(rng.integers(len(cases)))]]
    if pick == 1 and len(frames) > 1 and frames[1]:
        header = bytearray(frames[1])
        for _ in range(int(rng.integers(1, 4))):
            header[int(rng.integers(len(header)))] = int(rng.integers(256))
        frames[1] = bytes(header)
    elif pick == 2 and len(frames) > 2:
        frames[2] = frames[2][: int(rng.integers(len(frames[2]) + 1))]
    return frames


def valid_frame(stream_id: str, index: int) -> list:
    """A well-formed features message of some stream id: what a flood of fake streams sends."""
    from fes_live.stream.features import FrameFeatures
    f = FrameFeatures(index, index / FPS, time.time(), True, np.zeros(1008, np.float32), np.zeros((12, 2), np.float32),
                      None)
    return wire.features_message(stream_id, f, "tracked", {"dropped": 0})


class Fuzzer:
    """Sends hostile traffic at a detector's features and replay endpoints until stopped; counts what it sent."""

    def __init__(self, features: str, replay: str, seed: int = 0, stream_ids: int = 3000, huge_every: int = 500):
        self.features_addr, self.replay_addr = features, replay
        self.rng = np.random.default_rng(seed)
        self.cases, self.replays = feature_cases(), replay_cases()
        self.stream_ids, self.huge_every = stream_ids, huge_every
        self.sent = {"features": 0, "replay": 0, "huge": 0, "stream_ids": 0}
        self.replay_answers = {"ok": 0, "refused": 0}
        self.stop = threading.Event()

    def _push(self, ctx: zmq.Context) -> zmq.Socket:
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 1000)
        s.connect(self.features_addr)
        return s

    def run(self, max_messages: int | None = None, rate: float = 0.0) -> dict:
        """Send until stopped (or max_messages); rate > 0 caps messages per second."""
        ctx = zmq.Context()
        push, replay = self._push(ctx), ctx.socket(zmq.DEALER)
        replay.setsockopt(zmq.LINGER, 0)
        replay.connect(self.replay_addr)
        cases, replays = list(self.cases.values()), list(self.replays.values())
        n, t0 = 0, time.monotonic()
        try:
            while not self.stop.is_set() and (max_messages is None or n < max_messages):
                if rate > 0 and n > (time.monotonic() - t0) * rate:
                    time.sleep(0.002)
                    continue
                i = n % 10
                if n < len(cases):  # every known class once first
                    frames, kind = cases[n], "features"
                elif n % self.huge_every == 0:  # 10 MB: ZeroMQ drops the connection (MAXMSGSIZE)
                    huge = self._push(ctx)
                    wire.send(huge, [b"features/x", b"{}", b"\0" * 10_000_000], timeout_s=0.5)
                    huge.close()
                    frames, kind = None, "huge"
                elif i < 5:
                    frames, kind = random_message(self.rng, cases), "features"
                elif i < 8:
                    sid = f"fake{int(self.rng.integers(self.stream_ids))}"
                    frames, kind = valid_frame(sid, n), "stream_ids"
                elif i == 8:
                    frames, kind = random_message(self.rng, replays), "replay"
                else:  # a bad request, or a valid one for up to 1000 events (answering costs the detector)
                    valid = (n // 10) % 4 == 0
                    frames = _replay({"from": 0, "to": None, "max": 1000}) if valid else replays[n % len(replays)]
                    kind = "replay"
                if kind == "replay":
                    wire.send(replay, [b"", *frames], timeout_s=0.1)
                    self._answers(replay)
                elif frames is not None:
                    wire.send(push, frames, timeout_s=0.1)
                self.sent[kind] += 1
                n += 1
        finally:
            push.close()
            replay.close()
            ctx.destroy(linger=0)
        return {"messages": n, "seconds": time.monotonic() - t0, **self.sent, **self.replay_answers}

    def _answers(self, sock: zmq.Socket) -> None:
        while sock.poll(0):
            frames = sock.recv_multipart()
            try:
                ok = wire.decode(frames[1:] if not frames[0] else frames).header.meta.get("ok")
            except wire.BadMessage:
                ok = False
            self.replay_answers["ok" if ok else "refused"] += 1


# ---------------------------------------------------------------- the run

def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def offline_expressions(engine_path: str | None, npz: Path, loops: int) -> list[tuple]:
    """What the same engine finds offline on the frames the real stream sends (the clip, looped)."""
    import torch

    from fes_live.models.online import spot_video
    from fes_live.stream.detect import emotion_names
    from fes_live.stream.engine import load_engine
    from fes_live.stream.features import load_features
    torch.set_num_threads(1)  # frame-by-frame batches: as in the detector (many threads only contend)
    d = load_features(npz)
    T = len(d["frame_index"])
    tiled = {"geometry": np.tile(d["geometry"], (loops, 1)), "roi_flow": np.tile(d["roi_flow"], (loops, 1, 1)),
             "face_present": np.tile(d["face_present"], loops), "new_face": np.tile(d["new_face"], loops),
             "frame_index": np.arange(T * loops), "fps": FPS}  # each loop starts on the clip's first face again
    engine = load_engine(engine_path or None)
    emotions = emotion_names(engine.labels if hasattr(engine, "labels") else {})
    return sorted((p.onset, p.apex, p.offset, ("macro", "micro")[p.kind],
                   emotions[p.emotion] if 0 <= p.emotion < len(emotions) else None)
                  for p in spot_video(engine.new_spotter(), tiled))


def run(npz: Path, seconds: float, tmp: Path, *, engine: str = "", max_messages: int | None = None,
        rate: float = 0.0, seed: int = 0, warmup_s: float = 4.0) -> dict:
    """Detector + real stream + fuzzer for `seconds` of real stream; the figures of the run."""
    from fes_live.benchmarks.live import _d, free_port
    from fes_live.stream.app import DETECTOR, wait_for_detector
    from fes_live.stream.client import fetch, subscribe
    from fes_live.stream.config import from_dict
    from fes_live.stream.detect import run_detector
    from fes_live.stream.ingest import _replay_role
    from fes_live.stream.pipeline_config import DetectConfig, Endpoints, IngestConfig
    from fes_live.stream.supervise import Supervisor

    ep = Endpoints(features=f"tcp://127.0.0.1:{free_port()}", events=f"tcp://127.0.0.1:{free_port()}",
                   replay=f"tcp://127.0.0.1:{free_port()}", preview=f"ipc://{tmp}/preview")
    changes: list = []
    sup = Supervisor(max_restarts=5, on_change=lambda *a: changes.append(a))
    sup.start(DETECTOR, run_detector, from_dict(DetectConfig, {"endpoints": _d(ep), "engine": engine}))
    real_name = "replay-real"
    try:
        if wait_for_detector(sup, ep.replay, threading.Event()) is None:
            raise RuntimeError("detector did not start")
        pid = sup.children[DETECTOR].process.pid
        events: list[dict] = []
        sub = subscribe(ep.events, ep.replay, from_seq=0, idle_timeout_s=3)
        collector = threading.Thread(target=lambda: events.extend(sub), daemon=True)
        collector.start()
        T = len(np.load(npz)["frame_index"])
        loops = max(1, int(np.ceil(seconds * FPS / T)))
        sup.start(real_name, _replay_role, (from_dict(IngestConfig, {"stream_id": REAL, "endpoints": _d(ep),
                                                                      "preview": False}), str(npz), FPS, loops))
        time.sleep(warmup_s)  # the real stream is admitted and the engine warm before the flood starts
        rss_before = rss_mb(pid)
        fuzzer = Fuzzer(ep.features, ep.replay, seed=seed)
        result: dict = {}
        ft = threading.Thread(target=lambda: result.update(fuzzer.run(max_messages, rate)), daemon=True)
        ft.start()
        while sup.running([real_name]):
            sup.poll()
            time.sleep(0.2)
        fuzzer.stop.set()
        ft.join(30)
        time.sleep(1.0)
        rss_after = rss_mb(pid)
        _, next_seq = fetch(ep.replay, 0, -1, timeout_s=5.0)  # the replay endpoint still answers
        sup.poll()
        alive = sup.running([DETECTOR]) == [DETECTOR]
        sup.stop([DETECTOR], 30)
        collector.join(20)
    finally:
        sup.stop(list(sup.running()), 10)
    real = [e for e in events if e["stream_id"] == REAL]
    intensity = [e for e in real if e["type"] == "intensity"]
    frames = [f for e in intensity for f in e["data"]["frames"]]
    span = intensity[-1]["wall_s"] - intensity[0]["wall_s"] if len(intensity) > 1 else 0.0
    pipeline = [e["data"] for e in events if e["type"] == "stats" and e["stream_id"] == "pipeline"]
    live = sorted((e["data"]["onset"]["frame"], e["data"]["apex"]["frame"], e["data"]["offset"]["frame"],
                   e["data"]["kind"], e["data"]["emotion"]) for e in real if e["type"] == "expression")
    onsets = [e["data"]["latency_s"] for e in real if e["type"] == "expression.onset" and e["data"]["latency_s"]]
    expected = offline_expressions(engine, npz, loops)
    return {"fuzz": result, "msgs_per_s": result.get("messages", 0) / max(result.get("seconds", 1e-9), 1e-9),
            "detector_restarts": len(changes), "detector_alive": alive, "rss_before_mb": round(rss_before, 1),
            "rss_after_mb": round(rss_after, 1), "real_frames": len(frames), "real_expected": loops * T,
            "real_fps": round((len(frames) - 1) / span, 2) if span else 0.0,
            "real_onset_latency_p99_s": round(float(np.percentile(onsets, 99)), 3) if onsets else None,
            "expressions": live, "expressions_expected": expected, "expressions_equal": live == expected,
            "last_pipeline_stats": pipeline[-1] if pipeline else None, "next_seq": next_seq,
            "non_json": sum(1 for e in events if _non_standard(e))}


def _non_standard(event: dict) -> bool:
    try:
        wire.dumps(event)
        return False
    except ValueError:
        return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fes-bench fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=version_text("fes-bench fuzz"))
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of the real stream (the fuzzer runs as long)")
    p.add_argument("--features", default=None, help=".npz from `fes-live extract` (default: extract the smile clip)")
    p.add_argument("--engine", default="", help="engine folder (default: the bundled default engine)")
    p.add_argument("--rate", type=float, default=0.0, help="fuzz messages per second (0: as fast as it goes)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the hostile messages (same seed, same run)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from fes_live.benchmarks.live import DEFAULT_VIDEO, features_file
    with tempfile.TemporaryDirectory(prefix="fes-fuzz-") as tmp:
        npz = Path(args.features) if args.features else features_file(DEFAULT_VIDEO, Path(tmp))
        r = run(npz, args.seconds, Path(tmp), engine=args.engine, rate=args.rate, seed=args.seed)
    f = r["fuzz"]
    print(f"fuzz: {f.get('messages', 0)} messages in {f.get('seconds', 0):.1f} s = {r['msgs_per_s']:.0f}/s survived "
          f"({f.get('features', 0)} bad, {f.get('stream_ids', 0)} fake-stream frames, {f.get('huge', 0)} x 10 MB, "
          f"{f.get('replay', 0)} replay requests: {f.get('refused', 0)} refused, {f.get('ok', 0)} answered)")
    print(f"detector: alive {r['detector_alive']}, restarts {r['detector_restarts']}, RSS {r['rss_before_mb']} -> "
          f"{r['rss_after_mb']} MB; last pipeline stats {r['last_pipeline_stats']}")
    print(f"real stream: {r['real_frames']}/{r['real_expected']} frames at {r['real_fps']} fps, onset latency p99 "
          f"{r['real_onset_latency_p99_s']} s; expressions "
          f"{len(r['expressions'])} (offline {len(r['expressions_expected'])}) equal: {r['expressions_equal']}; "
          f"non-standard JSON events: {r['non_json']}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    ok = r["detector_alive"] and not r["detector_restarts"] and r["expressions_equal"] and not r["non_json"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
