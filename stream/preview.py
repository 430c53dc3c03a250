"""`fes-live preview --source X`: print per-frame face state and a few features of a source, live.

The quickest check that a camera, stream or file reaches the face tracker: one line per frame with the face state,
track id, a few blendshapes, the largest ROI flow and the processing rate. It is what the main job prints until
the detector lands.
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from fes_live.stream.face import BLENDSHAPE_NAMES, FaceConfig, FaceTracker
from fes_live.stream.face_model import FaceModelError
from fes_live.stream.features import ROI_NAMES, FeatureConfig, FeatureExtractor
from fes_live.stream.sources import SourceConfig, SourceError, open_source

log = logging.getLogger(__name__)

SHOWN = {"smileL": "mouthSmileLeft", "smileR": "mouthSmileRight", "jaw": "jawOpen", "browUp": "browInnerUp",
         "blinkL": "eyeBlinkLeft"}  # short label -> blendshape


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help='"0" (webcam), rtsp:// or http:// URL, video file or folder')
    parser.add_argument("--frames", type=int, default=0, help="stop after this many frames (0: until the end)")
    parser.add_argument("--realtime", action="store_true", help="play files at their own frame rate")
    parser.add_argument("--loop", action="store_true", help="loop a file or folder")
    parser.add_argument("--max-faces", type=int, default=1, help="faces tracked in the source (default 1)")
    parser.add_argument("--face-model", default=None, help="MediaPipe face_landmarker .task file")


def format_line(feat, result, fps: float) -> str:
    """One human-readable line per frame."""
    idx = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}
    head = f"{feat.frame_index:6d} {feat.pts_s:8.3f}s {result.state.value:<7}"
    if result.primary is None:
        return f"{head} faces=0{'':>70} {fps:6.1f} fps"
    bs = " ".join(f"{k}={result.primary.blendshapes[idx[n]]:.2f}" for k, n in SHOWN.items())
    mag = np.linalg.norm(feat.roi_flow, axis=1)
    top = int(mag.argmax())
    return (f"{head} id={result.primary.track_id} faces={len(result.faces)} {bs} "
            f"flow[{ROI_NAMES[top]}]={mag[top]:.2f} {fps:6.1f} fps")


def main(args: argparse.Namespace) -> int:
    try:
        src = open_source(args.source, SourceConfig(realtime=args.realtime, loop=args.loop))
        tracker = FaceTracker(FaceConfig(face_model=args.face_model, max_faces=args.max_faces))
    except (SourceError, FaceModelError, ValueError) as e:
        log.error("%s", e)
        return 1
    print(f"# {src.describe()}", flush=True)
    extractor = FeatureExtractor(FeatureConfig(keep_crop=False))
    rate, last = 0.0, time.perf_counter()
    try:
        for frame in src:
            result = tracker.update(frame)
            feat = extractor.update(frame, result)
            now = time.perf_counter()
            rate = 0.9 * rate + 0.1 / max(now - last, 1e-6) if rate else 1.0 / max(now - last, 1e-6)
            last = now
            print(format_line(feat, result, rate), flush=True)
            if args.frames and frame.index + 1 >= args.frames:
                break
    except SourceError as e:
        log.error("%s", e)
        return 1
    finally:
        tracker.close()
        src.close()
    return 0
