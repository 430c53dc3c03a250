"""`fes-bench live`: N concurrent streams through the real sockets, at 30 fps each.

Each stream is a process replaying recorded features (`fes-live extract` of a real clip, looped) to a real
detector process, exactly as an ingest sends them; a subscriber takes the events off the PUB socket. Per N:
- sustained fps: frames per stream that came out of the spotter (intensity events) / seconds, min over streams;
- latency of final `expression` events from the expression's offset frame's capture time, and of provisional
  `expression.onset` events from the onset frame's capture time, measured where a user sees them (on receipt);
- drops (ingest queue full + detector drop-oldest).
N "holds 30 fps" when every stream kept >= 95% of 30 fps and nothing was dropped.

    fes-bench live --streams 1,2,4,8 --seconds 20
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from fes_live import version_text
from fes_live.stream.app import DETECTOR, free_port, wait_for_detector
from fes_live.stream.client import subscribe
from fes_live.stream.config import from_dict
from fes_live.stream.pipeline_config import DetectConfig, Endpoints, IngestConfig
from fes_live.stream.supervise import Supervisor

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "video" / "pyfeat_single_face.mp4"
FPS = 30.0


def features_file(video: Path, cache: Path) -> Path:
    """Features of `video` (extracted once with `fes-live extract`)."""
    out = cache / f"{video.stem}.npz"
    if not out.is_file():
        subprocess.run([sys.executable, "-m", "fes_live.stream.cli", "extract", str(video), "-o", str(out), "--no-progress"],
                       check=True, cwd=REPO)
    return out


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50_s": None, "p99_s": None}
    a = np.asarray(values)
    return {"n": len(values), "p50_s": round(float(np.percentile(a, 50)), 4),
            "p99_s": round(float(np.percentile(a, 99)), 4)}


def start_detector(ep: Endpoints, fields: dict) -> tuple[Supervisor, object]:
    """The real detector process on `ep` (DetectConfig `fields` besides the endpoints), once it answers."""
    from fes_live.stream.detect import run_detector
    sup = Supervisor(max_restarts=0)
    child = sup.start(DETECTOR, run_detector, from_dict(DetectConfig, {"endpoints": _d(ep), **fields}))
    if wait_for_detector(sup, ep.replay, threading.Event()) is None:
        sup.stop([DETECTOR], 10)
        raise RuntimeError("detector did not start")
    return sup, child


def run_n(n: int, seconds: float, npz: Path, engine: str, backend: str, tmp: Path) -> dict:
    ep = Endpoints(features=f"ipc://{tmp}/f{n}", events=f"tcp://127.0.0.1:{free_port()}",
                   replay=f"tcp://127.0.0.1:{free_port()}", preview=f"ipc://{tmp}/p{n}")
    from fes_live.stream.ingest import _replay_role
    sup, _ = start_detector(ep, {"engine": engine, "backend": backend})
    events: list[tuple[float, dict]] = []
    sub = subscribe(ep.events, ep.replay, idle_timeout_s=10)
    stop_sub = threading.Event()

    def collect():
        for ev in sub:
            events.append((time.time(), ev))
            if stop_sub.is_set():
                return

    t = threading.Thread(target=collect, daemon=True)
    t.start()
    time.sleep(0.5)
    frames_per_loop = len(np.load(npz)["frame_index"])
    loops = max(1, int(np.ceil(seconds * FPS / frames_per_loop)))
    names = []
    t0 = time.time()
    for i in range(n):
        cfg = from_dict(IngestConfig, {"stream_id": f"s{i}", "endpoints": _d(ep), "preview": False})
        names.append(f"replay-s{i}")
        sup.start(names[-1], _replay_role, (cfg, str(npz), FPS, loops))
    while sup.running(names):
        sup.poll()
        time.sleep(0.2)
    sup.stop([DETECTOR], 30)
    stop_sub.set()
    t.join(15)
    wall = time.time() - t0
    evs = [e for _, e in events]
    per_stream = {}
    for i in range(n):
        sid = f"s{i}"
        frames = [e for e in evs if e["type"] == "intensity" and e["stream_id"] == sid]
        times = [e["wall_s"] for e in frames]
        count = sum(len(e["data"]["frames"]) for e in frames)
        span = (max(times) - min(times)) if len(times) > 1 else 0.0
        last = [e["data"] for e in evs if e["type"] == "stats" and e["stream_id"] == sid]
        drops = (last[-1]["dropped_ingest"] + last[-1]["dropped_detector"]) if last else 0
        per_stream[sid] = {"frames": count, "expected": loops * frames_per_loop,
                           "fps": round(count / span, 2) if span else 0.0, "drops": drops}
    final = [recv - e["data"]["offset"]["wall_s"] for recv, e in events
             if e["type"] == "expression" and e["data"]["offset"]["wall_s"] is not None]
    onset = [recv - e["data"]["onset"]["wall_s"] for recv, e in events
             if e["type"] == "expression.onset" and e["data"]["onset"]["wall_s"] is not None]
    fps_min = min(s["fps"] for s in per_stream.values())
    drops = sum(s["drops"] for s in per_stream.values())
    lost = sum(s["expected"] - s["frames"] for s in per_stream.values())
    return {"streams": n, "seconds": round(wall, 1), "fps_min": fps_min, "drops": drops, "frames_missing": lost,
            "holds_30fps": fps_min >= 0.95 * FPS and drops == 0 and lost == 0,
            "expression_from_offset": _percentiles(final), "onset_from_onset": _percentiles(onset),
            "per_stream": per_stream}


def _d(ep: Endpoints) -> dict:
    from fes_live.stream.config import to_dict
    return to_dict(ep)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fes-bench live", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=version_text("fes-bench live"))
    p.add_argument("--streams", default="1,2,4", help="comma-separated stream counts to try")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds of 30 fps features per stream")
    p.add_argument("--features", default=None, help=".npz from `fes-live extract` (default: extract the smile clip)")
    p.add_argument("--engine", default="", help="engine folder (default: the bundled default engine)")
    p.add_argument("--backend", default="auto", help="auto, tensorrt, aoti, export or eager")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="fes-bench-") as tmp:
        npz = Path(args.features) if args.features else features_file(DEFAULT_VIDEO, Path(tmp))
        results = []
        for n in [int(x) for x in args.streams.split(",")]:
            r = run_n(n, args.seconds, npz, args.engine, args.backend, Path(tmp))
            results.append(r)
            f, o = r["expression_from_offset"], r["onset_from_onset"]
            print(f"N={n:<3} fps(min)={r['fps_min']:6.2f} drops={r['drops']:<4} missing={r['frames_missing']:<4} "
                  f"expression p50/p99 {f['p50_s']}/{f['p99_s']} s (n={f['n']})  "
                  f"onset p50/p99 {o['p50_s']}/{o['p99_s']} s (n={o['n']})  holds 30 fps: {r['holds_30fps']}",
                  flush=True)
    best = max((r["streams"] for r in results if r["holds_30fps"]), default=0)
    print(f"largest N holding 30 fps: {best}  (cpu_count={os.cpu_count()})")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "largest_n_30fps": best}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
