"""fes-synth speed: one annotated video end to end through the CLI (face fit, timeline, warps, mp4, annotations).

    python -m fes_live.benchmarks.synth [--seconds 60] [--fps 30] [--face pyfeat_single_face.mp4] [--json out.json]

The goal is faster than real time (a 60 s, 30 fps video in under 60 s), so that training sets of hundreds of
videos are made in the time they last. Prints the time, frames per second and the ratio to the goal.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from fes_live.benchmarks.ingest import DEFAULT_CLIP
from fes_live.benchmarks.run import emit


def run(face: str, seconds: float, fps: float, face_model: str | None, seed: int = 0) -> dict:
    from fes_live.train import synth
    with tempfile.TemporaryDirectory(prefix="fes-bench-synth-") as out:
        args = ["--face", face, "--seconds", str(seconds), "--fps", str(fps), "--seed", str(seed), "--out", out,
                "--log-level", "WARNING"] + (["--face-model", face_model] if face_model else [])
        t0 = time.perf_counter()
        rc = synth.main(args)
        elapsed = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError(f"fes-synth exited {rc}")
        meta = json.loads(next(Path(out).glob("*.json")).read_text())
    return {"face": face, "seconds": seconds, "fps": fps, "frames": meta["n_frames"],
            "expressions": len(meta["intervals"]), "elapsed_s": elapsed, "frames_per_s": meta["n_frames"] / elapsed,
            "ratio_to_goal": seconds / elapsed, "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine()}


def report(r: dict) -> str:
    verdict = "meets" if r["ratio_to_goal"] >= 1.0 else "misses"
    return (f"synth benchmark: {r['seconds']:g} s at {r['fps']:g} fps ({r['frames']} frames, {r['expressions']} "
            f"expressions) from {Path(r['face']).name}, {r['cpus']} CPUs\n"
            f"{r['elapsed_s']:.1f} s through the CLI, {r['frames_per_s']:.0f} frames/s = {r['ratio_to_goal']:.2f} x "
            f"real time (goal: 1.00 x, faster than real time; {verdict} it)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fes-bench synth", description=__doc__.splitlines()[0])
    p.add_argument("--face", default=str(DEFAULT_CLIP), help="face photo or video (default: the smile clip)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the generated video")
    p.add_argument("--fps", type=float, default=30.0, help="its frame rate (200 for SAMM-LV-like videos)")
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--face-model", help="MediaPipe face_landmarker .task (default: $FES_FACE_MODEL, then the cache)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if not Path(args.face).is_file():
        print(f"face not found: {args.face}", file=sys.stderr)
        return 1
    r = run(args.face, args.seconds, args.fps, args.face_model, args.seed)
    return emit(report(r), r, args.json)


if __name__ == "__main__":
    sys.exit(main())
