"""`fes-live extract VIDEO -o features.npz [--crops]`: per-frame features of a whole video, once, for training.

Reads the video (or a folder of numbered frames) flat out, runs the same FaceTracker and FeatureExtractor as the
live ingest, and writes the .npz layout of docs/contracts.md, so training never opens a video.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from tqdm import tqdm

from fes_live.stream.face import FaceConfig, FaceTracker
from fes_live.stream.face_model import FaceModelError
from fes_live.stream.features import FeatureConfig, FeatureExtractor, FrameFeatures, save_features
from fes_live.stream.sources import FolderSource, SourceConfig, SourceError, open_source

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="video file or folder of numbered frame images")
    parser.add_argument("-o", "--output", required=True, help="output .npz")
    parser.add_argument("--crops", action="store_true", help="also store the 224x224 aligned crops (large)")
    parser.add_argument("--face-model", default=None, help="MediaPipe face_landmarker .task file")
    parser.add_argument("--max-faces", type=int, default=1, help="faces to track (the primary one is written)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of a folder of images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def extract(video: str, face_cfg: FaceConfig = FaceConfig(), feat_cfg: FeatureConfig = FeatureConfig(),
            src_cfg: SourceConfig = SourceConfig(), progress: bool = True) -> tuple[list[FrameFeatures], float]:
    """All frames of `video` -> (features per frame, nominal fps)."""
    with open_source(video, src_cfg) as src, FaceTracker(face_cfg) as tracker:
        extractor = FeatureExtractor(feat_cfg)
        total = len(src) if isinstance(src, FolderSource) else _frame_count(src)
        feats = []
        for frame in tqdm(src, total=total, unit="frame", desc=Path(video).name, disable=not progress):
            feats.append(extractor.update(frame, tracker.update(frame)))
        return feats, src.fps


def _frame_count(src) -> int | None:
    import cv2

    cap = getattr(src, "_cap", None)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap is not None else 0
    return n if n > 0 else None


def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        feats, fps = extract(args.video, FaceConfig(face_model=args.face_model, max_faces=args.max_faces),
                             FeatureConfig(keep_crop=args.crops), SourceConfig(folder_fps=args.fps),
                             progress=not args.no_progress)
    except (SourceError, FaceModelError, ValueError) as e:
        log.error("%s", e)
        return 1
    if not feats:
        log.error("%s: no frames decoded", args.video)
        return 1
    save_features(args.output, feats, fps, crops=args.crops)
    present = sum(f.face_present for f in feats)
    dt = time.perf_counter() - t0
    print(f"{args.video}: {len(feats)} frames, face on {present} ({100 * present / len(feats):.1f} %), "
          f"{len(feats) / dt:.1f} fps -> {args.output}")
    return 0
