"""Ingest throughput: decode + face alignment + features for one 640x360 stream, with per-stage milliseconds.

    python -m fes_live.benchmarks.ingest [--frames 600] [--clip pyfeat_single_face.mp4] [--json out.json]

Plays the clip flat out in a loop (the way a faster-than-real-time camera would feed us), times each stage per
frame and prints the figures and the ratio to the goal: 60 fps, twice real time for a 30 fps camera.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from fes_live.benchmarks.run import emit

GOAL_FPS = 60.0
DEFAULT_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "video" / "pyfeat_single_face.mp4"
DEFAULT_MODEL = DEFAULT_CLIP.parents[2] / "models" / "face_landmarker_v2_with_blendshapes.task"


def run(clip: str, frames: int, warmup: int, face_model: str | None, flow_size: int) -> dict:
    from fes_live.stream.face import FaceConfig, FaceTracker
    from fes_live.stream.features import FeatureConfig, FeatureExtractor
    from fes_live.stream.sources import SourceConfig, open_source

    stages = {"decode": [], "face": [], "features": [], "total": []}
    faces = 0
    with open_source(clip, SourceConfig(loop=True)) as src, FaceTracker(FaceConfig(face_model=face_model)) as tracker:
        extractor = FeatureExtractor(FeatureConfig(flow_size=flow_size))
        shape = None
        wall0 = None
        for i in range(warmup + frames):
            if i == warmup:
                wall0 = time.perf_counter()
            t0 = time.perf_counter()
            frame = next(src)
            t1 = time.perf_counter()
            result = tracker.update(frame)
            t2 = time.perf_counter()
            extractor.update(frame, result)
            t3 = time.perf_counter()
            if i >= warmup:
                for name, dt in (("decode", t1 - t0), ("face", t2 - t1), ("features", t3 - t2), ("total", t3 - t0)):
                    stages[name].append(dt * 1000.0)
                faces += result.primary is not None
                shape = frame.image.shape
        wall = time.perf_counter() - wall0
    fps = frames / wall
    return {
        "clip": str(clip), "frame_shape": list(shape), "frames": frames, "face_frames": faces,
        "fps": fps, "goal_fps": GOAL_FPS, "ratio_to_goal": fps / GOAL_FPS, "flow_size": flow_size,
        "ms_mean": {k: float(np.mean(v)) for k, v in stages.items()},
        "ms_median": {k: float(np.median(v)) for k, v in stages.items()},
        "ms_p95": {k: float(np.percentile(v, 95)) for k, v in stages.items()},
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
    }


def report(r: dict) -> str:
    lines = [f"ingest benchmark: {Path(r['clip']).name} {r['frame_shape'][1]}x{r['frame_shape'][0]}, "
             f"{r['frames']} frames, face on {r['face_frames']}, {r['cpus']} CPUs",
             f"{'stage':<10}{'mean ms':>10}{'median ms':>11}{'p95 ms':>9}"]
    for k in ("decode", "face", "features", "total"):
        lines.append(f"{k:<10}{r['ms_mean'][k]:>10.2f}{r['ms_median'][k]:>11.2f}{r['ms_p95'][k]:>9.2f}")
    verdict = "meets" if r["fps"] >= r["goal_fps"] else "misses"
    lines.append(f"throughput {r['fps']:.1f} fps = {r['ratio_to_goal']:.2f} x the {r['goal_fps']:.0f} fps goal "
                 f"({verdict} it; {r['fps'] / 30:.2f} x real time at 30 fps)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fes-bench ingest", description=__doc__.splitlines()[0])
    p.add_argument("--clip", default=str(DEFAULT_CLIP), help="video file to read (default: the smile clip)")
    p.add_argument("--frames", type=int, default=600, help="frames timed (the clip is looped)")
    p.add_argument("--warmup", type=int, default=30, help="frames run before timing starts")
    p.add_argument("--flow-size", type=int, default=112, help="side of the crop the ROI optical flow runs on")
    p.add_argument("--face-model", default=str(DEFAULT_MODEL) if DEFAULT_MODEL.is_file() else None,
                   help="MediaPipe face_landmarker .task file")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if not Path(args.clip).is_file():
        print(f"clip not found: {args.clip}", file=sys.stderr)
        return 1
    r = run(args.clip, args.frames, args.warmup, args.face_model, args.flow_size)
    return emit(report(r), r, args.json)


if __name__ == "__main__":
    sys.exit(main())
