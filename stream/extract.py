"""`fes-live extract VIDEO -o features.npz [--crops] [--csv TABLE]`: per-frame features of a whole video, once.

Reads the video (or a folder of numbered frames) flat out, runs the same FaceTracker and FeatureExtractor as the
live ingest, and writes the .npz layout of docs/contracts.md, so training never opens a video. Beside the arrays of
that layout the file holds `geometry_names` (the name of each of the 1008 geometry columns), `pose` (T, 6: yaw,
pitch, roll degrees, tx, ty, tz; NaN without a face) and `pose_names`.

`--csv TABLE` also scores every frame with the engine, through `fes-live batch`'s code path (the live detector's),
and writes the per-frame table (docs/table.md); the features then come from that same pass.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fes_live.stream.face import BLENDSHAPE_NAMES, N_LANDMARKS, FaceConfig, FaceTracker
from fes_live.stream.face_model import FaceModelError
from fes_live.stream.features import FeatureConfig, FeatureExtractor, FrameFeatures, save_features
from fes_live.stream.sources import FolderSource, SourceConfig, SourceError, on_source_clock, open_source

log = logging.getLogger(__name__)

# geometry = 52 blendshapes, then the 478 pose-free landmarks as crop_xy / 224 - 0.5, x and y interleaved
GEOMETRY_NAMES: tuple[str, ...] = BLENDSHAPE_NAMES + tuple(
    f"lm_{axis}_{i}" for i in range(N_LANDMARKS) for axis in ("x", "y"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="video file or folder of numbered frame images")
    parser.add_argument("-o", "--output", required=True, help="output .npz")
    parser.add_argument("--crops", action="store_true", help="also store the 224x224 aligned crops (large)")
    parser.add_argument("--csv", default="", metavar="TABLE",
                        help="also score every frame with the engine and write the per-frame table (docs/table.md)")
    parser.add_argument("--engine", default="", help="with --csv: engine folder (default: the bundled one)")
    parser.add_argument("--face-model", default=None, help="MediaPipe face_landmarker .task file")
    parser.add_argument("--max-faces", type=int, default=1, help="faces to track (the primary one is written)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of a folder of images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def extract(video: str, face_cfg: FaceConfig = FaceConfig(), feat_cfg: FeatureConfig = FeatureConfig(),
            src_cfg: SourceConfig = SourceConfig(), progress: bool = True,
            on_frame=None) -> tuple[list[FrameFeatures], float]:
    """All frames of `video` -> (features per frame, nominal fps); `on_frame(frame, faces, features)` per frame."""
    with open_source(video, src_cfg) as src, FaceTracker(face_cfg) as tracker:
        extractor = FeatureExtractor(feat_cfg)
        total = len(src) if isinstance(src, FolderSource) else _frame_count(src)
        feats = []
        for frame in tqdm(src, total=total, unit="frame", desc=Path(video).name, disable=not progress):
            if not src.live:  # a file's own clock: the same features on every run, and as `batch` computes them
                frame = on_source_clock(frame)
            faces = tracker.update(frame)
            feats.append(extractor.update(frame, faces))
            if on_frame is not None:
                on_frame(frame, faces, feats[-1])
        return feats, src.fps


def _frame_count(src) -> int | None:
    import cv2

    cap = getattr(src, "_cap", None)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap is not None else 0
    return n if n > 0 else None


class _Collect:
    """on_frame hook: the features and the head pose of every frame."""

    def __init__(self):
        self.feats: list[FrameFeatures] = []
        self.pose: list[tuple] = []

    def __call__(self, frame, faces, feats) -> None:
        from fes_live.stream.table import head_pose

        self.feats.append(feats)
        face = faces.primary
        self.pose.append(head_pose(face.pose) if face is not None else (np.nan,) * 6)


def main(args: argparse.Namespace) -> int:
    from fes_live.stream.pipeline_config import EngineError
    from fes_live.stream.table import POSE_COLUMNS

    t0 = time.perf_counter()
    hook = _Collect()
    try:
        if args.csv:
            from fes_live.stream.batch import BatchRunner
            from fes_live.stream.engine import load_engine
            if args.crops:
                log.error("--crops and --csv: run them as two commands (the scored pass keeps no crops)")
                return 2
            runner = BatchRunner(load_engine(args.engine or None), args.face_model, args.max_faces,
                                 progress=not args.no_progress)
            if Path(args.csv).exists():
                log.error("%s already exists (nothing is overwritten)", args.csv)
                return 2
            fps = runner.run(args.video, None, Path(args.csv), on_frame=hook, folder_fps=args.fps).fps
        else:
            _, fps = extract(args.video, FaceConfig(face_model=args.face_model, max_faces=args.max_faces),
                             FeatureConfig(keep_crop=args.crops), SourceConfig(folder_fps=args.fps),
                             progress=not args.no_progress, on_frame=hook)
    except (SourceError, FaceModelError, EngineError, ValueError, OSError) as e:
        log.error("%s", e)
        return 1
    feats = hook.feats
    if not feats:
        log.error("%s: no frames decoded", args.video)
        return 1
    extra = {"geometry_names": np.array(GEOMETRY_NAMES), "pose": np.array(hook.pose, dtype=np.float32),
             "pose_names": np.array(POSE_COLUMNS)}
    save_features(args.output, feats, fps, crops=args.crops, extra=extra)
    present = sum(f.face_present for f in feats)
    dt = time.perf_counter() - t0
    print(f"{args.video}: {len(feats)} frames, face on {present} ({100 * present / len(feats):.1f} %), "
          f"{len(feats) / dt:.1f} fps -> {args.output}" + (f", {args.csv}" if args.csv else ""))
    if present == 0:
        log.warning("%s: no face found in %d frames", args.video, len(feats))
        print(f"no face found in {args.video}")
    return 0
