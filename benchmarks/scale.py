"""`fes-bench scale`: how many live streams one detector serves at 30 fps, and how close that is to the models' limit.

N streams of recorded features (`fes-live extract` of real clips and, with --features, of synthetic videos) are
replayed at 30 fps by feeder processes through a real tcp socket into the real detector process, as edge ingests
would send them (each stream starts at a different point of its clip, so expressions do not all coincide); a
subscriber takes the events off the PUB socket. Per N:
- fps: frames per stream that came out of the spotter (intensity events) / seconds, min over streams;
- drops: frames the feeder could not send (socket full) + frames the detector dropped (queue full), and frames
  that never came out;
- latency of final `expression` events from the offset frame's capture time and of `expression.onset` events from
  the onset frame's capture time, p50 / p99, on receipt;
- CPU use of the detector and the feeders (% of one core, from /proc), GPU use where nvidia-smi exists.
N "holds" when every stream kept >= 95 % of 30 fps, nothing was dropped and every frame came out.

In the same run, with the same engine and backend:
- the model-only ceiling: batched GIM + FEDN throughput at the batch sizes the detector uses at the largest N
  tried (one GIM window per stream per frame, one FEDN window per stream every stride frames), as streams at 30
  fps on the detector's cores, and the ratio of the largest N that held to it;
- per-stage times of the detector's own loop (decode + queue, spotter, model calls, publishing), in ms per
  stream-frame, from an in-process pass over the same messages;
- the spotter's own share of final latency: each clip once through the engine's spotter without sockets, seconds
  from each final event's offset frame to the frame that emitted it (the rest of the measured latency is sockets,
  queues and a busy detector).

    fes-bench scale --streams 8,16,24,32,48 --seconds 20
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from fes_live import version_text
from fes_live.benchmarks.live import DEFAULT_VIDEO, _d, _percentiles, features_file, free_port, start_detector
from fes_live.stream.app import DETECTOR
from fes_live.stream.client import subscribe
from fes_live.stream.config import from_dict
from fes_live.stream.events import PIPELINE_STREAM
from fes_live.stream.pipeline_config import DetectConfig, Endpoints

FPS = 30.0
HOLD = 0.95  # a stream "keeps 30 fps" at >= 95 % of it


def load_clips(paths: list[Path]) -> list[dict]:
    from fes_live.stream.features import load_features
    return [{k: np.asarray(v) for k, v in load_features(p).items()
             if k in ("geometry", "roi_flow", "face_present")} for p in paths]


def stream_frames(clip: dict, n_frames: int, offset: int):
    """(frame index, face_present, geometry, roi_flow) of a stream that loops `clip` from `offset`."""
    T = len(clip["face_present"])
    for k in range(n_frames):
        i = (offset + k) % T
        yield k, bool(clip["face_present"][i]), clip["geometry"][i], clip["roi_flow"][i]


def feeder(endpoint: str, stream_ids: list[str], clip_paths: list[str], seconds: float, out: mp.Queue) -> None:
    """One feeder process: its streams' frames at 30 fps, all streams of a tick sent together, never blocking."""
    import zmq

    from fes_live.stream import wire
    from fes_live.stream.features import FrameFeatures
    clips = load_clips([Path(p) for p in clip_paths])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 20_000)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(endpoint)
    n_frames = int(seconds * FPS)
    streams = [(sid, stream_frames(clips[i % len(clips)], n_frames, 37 * i)) for i, sid in enumerate(stream_ids)]
    dropped = {sid: 0 for sid in stream_ids}
    for sid in stream_ids:
        sock.send_multipart(wire.control_message(sid, "started", source="fes-bench scale", fps=FPS))
    t0, late = time.monotonic(), 0.0
    for k in range(n_frames):
        wait = t0 + k / FPS - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        late = max(late, -wait)
        now = time.time()
        for sid, frames in streams:
            index, face, geometry, flow = next(frames)
            f = FrameFeatures(index, index / FPS, now, face, geometry, flow, None)
            msg = wire.features_message(sid, f, "tracked" if face else "none", {"dropped": dropped[sid]})
            try:
                sock.send_multipart(msg, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                dropped[sid] += 1
    for sid in stream_ids:
        sock.send_multipart(wire.control_message(sid, "ended", message="end of features", frame_index=n_frames - 1,
                                                 frames=n_frames, dropped=dropped[sid]))
    sock.close()
    ctx.term()
    out.put({"dropped": dropped, "late_max_s": round(late, 3), "cpu_s": sum(os.times()[:2])})


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its living descendants (a pool's front and workers), from /proc (Linux);
    NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return own + sum(c for c in (cpu_seconds(int(k)) for k in children) if c == c)


class GpuSampler(threading.Thread):
    """GPU utilisation samples from nvidia-smi once a second (None where there is no NVIDIA GPU)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.smi = shutil.which("nvidia-smi")

    def run(self) -> None:
        while self.smi and not self.stop.wait(1.0):
            try:
                out = subprocess.run([self.smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                self.samples.append(float(out.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return

    def mean(self) -> float | None:
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def run_n(n: int, seconds: float, clips: list[Path], args, tmp: Path) -> dict:
    ep = Endpoints(features=f"tcp://127.0.0.1:{free_port()}", events=f"tcp://127.0.0.1:{free_port()}",
                   replay=f"tcp://127.0.0.1:{free_port()}", preview=f"ipc://{tmp}/p{n}")
    sup, child = start_detector(ep, {"engine": args.engine, "backend": args.backend, "max_streams": max(256, n),
                                     "max_pending_streams": max(64, n), "workers": args.workers,
                                     "journal": str(tmp / f"journal-{n}.sqlite")})
    try:
        events: list[tuple[float, dict]] = []
        sub = subscribe(ep.events, ep.replay, idle_timeout_s=15)
        done = threading.Event()

        def collect():
            for ev in sub:
                events.append((time.time(), ev))
                if ev["type"] == "stream" and ev["data"]["status"] == "ended":
                    ended.add(ev["stream_id"])
                # (an `ended` that came before the feeders were joined counts too: missing it cost a wait of
                # `seconds + 60` and made the CPU figures a fifth of the truth)
                if done.is_set() and len(ended) >= n:
                    return
        ended: set[str] = set()
        t = threading.Thread(target=collect, daemon=True)
        t.start()
        time.sleep(0.5)
        sids = [f"s{i}" for i in range(n)]
        k = max(1, min(args.feeders, n))
        spawn = mp.get_context("spawn")
        q: mp.Queue = spawn.Queue()
        feeders = [spawn.Process(target=feeder, args=(ep.features, sids[j::k], [str(c) for c in clips], seconds, q))
                   for j in range(k)]
        gpu = GpuSampler()
        gpu.start()
        cpu0, t0 = cpu_seconds(child.process.pid), time.time()
        for f in feeders:
            f.start()
        fed = []
        deadline = time.monotonic() + seconds + 120
        while len(fed) < len(feeders):
            try:
                fed.append(q.get(timeout=1.0))
            except queue.Empty:
                if time.monotonic() > deadline or sum(f.is_alive() for f in feeders) < len(feeders) - len(fed):
                    raise RuntimeError("a feeder died or hung (its traceback is above)") from None
        for f in feeders:
            f.join(30)
        done.set()
        t.join(seconds + 60)  # until every stream's `ended` (the detector flushed it) or the subscriber idles out
        wall = time.time() - t0
        cpu1 = cpu_seconds(child.process.pid)
        gpu.stop.set()
    finally:
        sup.stop([DETECTOR], 30)
    evs = [e for _, e in events]
    expected = int(seconds * FPS)
    per_stream = {}
    for sid in sids:
        frames = [e for e in evs if e["type"] == "intensity" and e["stream_id"] == sid]
        count = sum(len(e["data"]["frames"]) for e in frames)
        times = [e["wall_s"] for e in frames]
        span = (max(times) - min(times)) if len(times) > 1 else 0.0
        stats = [e["data"] for e in evs if e["type"] == "stats" and e["stream_id"] == sid]
        per_stream[sid] = {"frames": count, "fps": round(count / span, 2) if span else 0.0,
                           "dropped_detector": stats[-1]["dropped_detector"] if stats else 0,
                           "expressions": sum(e["type"] == "expression" and e["stream_id"] == sid for e in evs)}
    fed_drops = sum(sum(f["dropped"].values()) for f in fed)
    final = [recv - e["data"]["offset"]["wall_s"] for recv, e in events
             if e["type"] == "expression" and e["data"]["offset"]["wall_s"] is not None]
    onset = [recv - e["data"]["onset"]["wall_s"] for recv, e in events
             if e["type"] == "expression.onset" and e["data"]["onset"]["wall_s"] is not None]
    fps_min = min(s["fps"] for s in per_stream.values())
    # beyond DetectConfig.stats_streams streams the detector sends one detector-wide stats event instead of one per
    # stream: its dropped_detector sums the streams running then
    pipeline = [e["data"].get("dropped_detector", 0) for e in evs
                if e["type"] == "stats" and e["stream_id"] == PIPELINE_STREAM]
    drops = fed_drops + max(sum(s["dropped_detector"] for s in per_stream.values()), max(pipeline, default=0))
    missing = sum(expected - s["frames"] for s in per_stream.values())
    return {"streams": n, "seconds": round(wall, 1), "fps_min": fps_min, "drops": drops, "frames_missing": missing,
            "holds_30fps": fps_min >= HOLD * FPS and drops == 0 and missing == 0,
            "expression_from_offset": _percentiles(final), "onset_from_onset": _percentiles(onset),
            "detector_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
            "feeder_cpu_pct": round(100 * sum(f["cpu_s"] for f in fed) / wall, 1),
            "feeder_late_max_s": max(f["late_max_s"] for f in fed), "gpu_util_pct": gpu.mean(),
            "per_stream": per_stream}


def model_ceiling(n: int, args) -> dict:
    """Streams at 30 fps that the models alone could serve on one detector core: GIM at batch n (one window per
    stream per frame), FEDN at the batch of streams due in one frame position (n / stride, at least 1)."""
    import torch

    from fes_live.stream.batching import StepBatcher
    from fes_live.stream.engine import load_engine
    torch.set_num_threads(1)
    engine = load_engine(args.engine or None, backend=args.backend)
    batcher = StepBatcher.for_engine(engine)
    rng = np.random.default_rng(0)
    shape = engine.manifest["models"]["gim"]["input_shape"][1:]
    w = rng.normal(0, 1, (n, *shape)).astype(np.float32)

    def median_s(fn, x, repeats):
        fn(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    gim_s = median_s(batcher.gim, w, 20)
    out = {"batch_gim": n, "gim_ms_per_call": round(1000 * gim_s, 3), "gim_ms_per_window": round(1000 * gim_s / n, 4)}
    per_stream_s = FPS * gim_s / n  # model seconds per stream-second
    if engine.has_fedn:
        stride = int(engine.manifest["stride"]["fedn"])
        b = max(1, round(n / stride))
        fshape = engine.manifest["models"]["fedn"]["input_shape"][1:]
        x = rng.normal(0, 0.05, (b, *fshape)).astype(np.float32)
        fedn_s = median_s(batcher.fedn_batch, x, 5)
        out.update({"batch_fedn": b, "fedn_ms_per_call": round(1000 * fedn_s, 3),
                    "fedn_ms_per_window": round(1000 * fedn_s / b, 4)})
        per_stream_s += FPS / stride * fedn_s / b
    out["streams_at_30fps"] = round(1.0 / per_stream_s, 1)
    out["backend"] = engine.backend
    return out


def spotter_lag(clips: list[Path], args) -> dict:
    """The spotter's own share of final latency: each clip once through the engine's spotter, in process, no
    sockets; per final event, seconds from its offset frame to the frame whose push emitted it (an event emitted
    by the flush at a clip's end counts from its last frame). What the sockets and queues add is the rest."""
    import torch

    from fes_live.models.spotting import ExpressionUpdate
    from fes_live.stream.engine import load_engine
    torch.set_num_threads(1)
    engine = load_engine(args.engine or None, backend=args.backend)
    lags = []
    for clip in load_clips(clips):
        spotter = engine.new_spotter(FPS)
        n = len(clip["face_present"])
        for t in range(n + 1):
            updates = (spotter.push(t, bool(clip["face_present"][t]), clip["geometry"][t], clip["roi_flow"][t])
                       if t < n else spotter.flush())
            lags += [(min(t, n - 1) - u.proposal.offset) / FPS for u in updates if isinstance(u, ExpressionUpdate)]
    out = _percentiles(lags)
    out["p90_s"] = round(float(np.percentile(lags, 90)), 4) if lags else None
    out["max_s"] = round(max(lags), 4) if lags else None
    return out


def stage_profile(n: int, frames: int, clips: list[Path], args) -> dict:
    """ms per stream-frame of the detector's own stages, in process: the same Detector class and messages."""
    import torch

    from fes_live.stream import wire
    from fes_live.stream.detect import Detector
    from fes_live.stream.engine import load_engine
    from fes_live.stream.features import FrameFeatures
    torch.set_num_threads(1)
    engine = load_engine(args.engine or None, backend=args.backend)
    ep = Endpoints(features=f"tcp://127.0.0.1:{free_port()}", events=f"tcp://127.0.0.1:{free_port()}",
                   replay=f"tcp://127.0.0.1:{free_port()}", preview="")
    det = Detector(from_dict(DetectConfig, {"endpoints": _d(ep), "queue_frames": frames + 10}), engine)
    model = [0.0]
    if det.batcher is not None:
        for attr in ("gim", "fedn_batch"):
            fn = getattr(det.batcher, attr)

            def timed(x, fn=fn):
                t = time.perf_counter()
                try:
                    return fn(x)
                finally:
                    model[0] += time.perf_counter() - t
            setattr(det.batcher, attr, timed)
    publish = [0.0]
    inner_publish = det._publish

    def timed_publish(s, results):
        t = time.perf_counter()
        inner_publish(s, results)
        publish[0] += time.perf_counter() - t
    det._publish = timed_publish
    data = load_clips(clips)
    msgs = []
    for i in range(n):
        sid = f"s{i}"
        det.handle(wire.control_message(sid, "started", fps=FPS))
        for index, face, geometry, flow in stream_frames(data[i % len(data)], frames, 37 * i):
            f = FrameFeatures(index, index / FPS, time.time(), face, geometry, flow, None)
            msgs.append([bytes(m) for m in wire.features_message(sid, f, "tracked" if face else "none")])
    msgs = [msgs[i * frames + k] for k in range(frames) for i in range(n)]  # frame k of every stream together
    t = time.perf_counter()
    for m in msgs:
        det.handle(m)
    decode = time.perf_counter() - t
    t = time.perf_counter()
    while det.step(budget_s=60.0):
        pass
    step = time.perf_counter() - t
    det.close()
    k = 1000.0 / (n * frames)
    return {"streams": n, "frames": frames, "decode_ms": round(decode * k, 4), "model_ms": round(model[0] * k, 4),
            "spotter_ms": round((step - model[0] - publish[0]) * k, 4), "publish_ms": round(publish[0] * k, 4),
            "total_ms": round((decode + step) * k, 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fes-bench scale", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=version_text("fes-bench scale"))
    p.add_argument("--streams", default="8,16,24,32,48", help="comma-separated stream counts, tried in order")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of 30 fps features per stream")
    p.add_argument("--features", action="append", default=[],
                   help=".npz from `fes-live extract` (repeatable; default: the real smile clip)")
    p.add_argument("--feeders", type=int, default=1, help="feeder processes sending the streams (edge ingests)")
    p.add_argument("--engine", default="", help="engine folder (default: the bundled default engine)")
    p.add_argument("--backend", default="auto", help="auto, tensorrt, aoti, export or eager")
    p.add_argument("--workers", type=int, default=1, help="detector worker processes (fes-live detect --workers)")
    p.add_argument("--keep-going", action="store_true", help="try every N even after one did not hold")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    counts = [int(x) for x in args.streams.split(",")]
    with tempfile.TemporaryDirectory(prefix="fes-bench-scale-") as tmp:
        clips = [Path(f) for f in args.features] or [features_file(DEFAULT_VIDEO, Path(tmp))]
        load_clips(clips)  # a missing or bad file fails here, before any process starts
        results = []
        for n in counts:
            r = run_n(n, args.seconds, clips, args, Path(tmp))
            results.append(r)
            f, o = r["expression_from_offset"], r["onset_from_onset"]
            print(f"N={n:<4} fps(min)={r['fps_min']:6.2f} drops={r['drops']:<5} missing={r['frames_missing']:<5} "
                  f"final p50/p99 {f['p50_s']}/{f['p99_s']} s (n={f['n']})  onset p50/p99 {o['p50_s']}/{o['p99_s']} s "
                  f"(n={o['n']})  detector CPU {r['detector_cpu_pct']} %  feeders CPU {r['feeder_cpu_pct']} %  "
                  f"GPU {r['gpu_util_pct'] if r['gpu_util_pct'] is not None else 'n/a'} %  holds: {r['holds_30fps']}",
                  flush=True)
            if not r["holds_30fps"] and not args.keep_going:
                break
        best = max((r["streams"] for r in results if r["holds_30fps"]), default=0)
        top = max(r["streams"] for r in results)
        ceiling = model_ceiling(top, args)
        stages = stage_profile(min(top, 32), 150, clips, args)
        lag = spotter_lag(clips, args)
    ratio = round(best / ceiling["streams_at_30fps"], 3) if ceiling["streams_at_30fps"] else None
    held = next((r for r in results if r["streams"] == best), None)
    print(f"largest N holding 30 fps with no drops: {best}" +
          (f" (final p99 {held['expression_from_offset']['p99_s']} s, onset p99 {held['onset_from_onset']['p99_s']} s)"
           if held else ""))
    print(f"model-only ceiling ({ceiling['backend']}; GIM batch {ceiling['batch_gim']} "
          f"{ceiling['gim_ms_per_window']} ms/window" +
          (f", FEDN batch {ceiling['batch_fedn']} {ceiling['fedn_ms_per_window']} ms/window" if "batch_fedn" in ceiling
           else "") + f"): {ceiling['streams_at_30fps']} streams at 30 fps on one core; largest N / ceiling = {ratio}")
    print(f"detector stages, ms per stream-frame at N={stages['streams']} (in process): decode {stages['decode_ms']}, "
          f"spotter {stages['spotter_ms']}, models {stages['model_ms']}, publish {stages['publish_ms']}, "
          f"total {stages['total_ms']}")
    print(f"spotter's own share of final latency (each clip once, in process, no sockets): p50/p90/p99 "
          f"{lag['p50_s']}/{lag['p90_s']}/{lag['p99_s']} s, max {lag['max_s']} s (n={lag['n']})")
    print(f"detector workers: {args.workers}; machine: {os.cpu_count()} CPU cores; GPU: {'nvidia-smi present' if shutil.which('nvidia-smi') else 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "largest_n_30fps": best, "model_ceiling": ceiling,
                                               "ratio_to_ceiling": ratio, "stages": stages, "spotter_lag": lag,
                                               "cpu_count": os.cpu_count(), "workers": args.workers}, indent=2))
    return 0
