"""`fes-live batch FOLDER_OR_FILES -o OUT`: recorded sessions, every frame scored, the same result every run.

Per video it writes `OUT/<name>.events.jsonl` (every event the detector published for it, the schema of
stream/event.schema.json, numbered from 0) and `OUT/<name>.csv` (the per-frame table, docs/table.md). Nothing is
reimplemented: the frames go through the live ingest's FaceTracker and FeatureExtractor (on the file's own clock,
as a lossless `fes-live --source FILE --lossless` ingest does), are encoded with the wire codec and handed to a real
`Detector` (its own sockets in a temporary folder), whose per-stream spotter, event building and journal are the
live ones. So two runs give the same events (timestamps aside) and tables, and they equal the live lossless run's.
What differs from live is only when intensity events are cut: here one per processed frame (live: 10 per second
of wall time), so the event file does not depend on the machine's speed. See docs/batch.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from fes_live.stream import wire
from fes_live.stream.config import from_dict
from fes_live.stream.pipeline_config import ENGINE_HELP, THRESHOLD_HELP, DetectConfig

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


@dataclass
class VideoResult:
    video: str
    stream_id: str
    frames: int
    fps: float
    face_frames: int
    expressions: int
    events_path: Path | None
    table_path: Path | None

    @property
    def no_face(self) -> bool:
        return self.face_frames == 0


TIMING_KEYS = ("wall_s", "latency_s", "fps_in", "fps_out", "latency_ms_p50", "latency_ms_p99")


def timing_free(event: dict) -> dict:
    """An event without what measures time or the machine (the `publisher` id and every wall_s, latency_s,
    fps_in/out and latency_ms_* at any depth): what two runs on the same file must have equal."""
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in TIMING_KEYS}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v
    return {k: strip(v) for k, v in event.items() if k != "publisher" and k not in TIMING_KEYS}


def find_videos(inputs: list[str]) -> list[Path]:
    """Files as given; folders: their video files (by suffix), sorted. A missing input is a clear error."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return out


def output_names(videos: list[Path]) -> list[str]:
    """One output stem per video: its file stem, numbered when two videos share one."""
    names: list[str] = []
    for v in videos:
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in v.stem) or "video"
        name, k = stem, 1
        while name in names:
            k += 1
            name = f"{stem}-{k}"
        names.append(name)
    return names


class BatchRunner:
    """One engine, one video at a time through the live code path."""

    def __init__(self, engine=None, face_model: str | None = None, max_faces: int = 1, progress: bool = True):
        import torch

        from fes_live.stream.engine import load_engine

        threads = DetectConfig().torch_threads  # as the detector: results depend on torch's thread count
        if threads > 0:
            torch.set_num_threads(threads)
        self.engine = engine if engine is not None else load_engine(None)
        self.face_model, self.max_faces, self.progress = face_model, max_faces, progress

    def run(self, video: str | Path, events_path: Path | None, table_path: Path | None, stream_id: str = "",
            on_frame=None, desc: str = "", folder_fps: float = 30.0) -> VideoResult:
        """Score every frame of `video`; write its events (JSONL) and table (CSV) when given paths.

        `on_frame(frame, faces, features)` is called per frame (`fes-live extract` keeps the features from it).
        """
        from fes_live.stream.detect import Detector
        from fes_live.stream.extract import _frame_count
        from fes_live.stream.face import FaceConfig, FaceTracker
        from fes_live.stream.features import FeatureConfig, FeatureExtractor
        from fes_live.stream.sources import FolderSource, SourceConfig, on_source_clock, open_source
        from fes_live.stream.table import FrameTable

        src_cfg = SourceConfig(realtime=False, folder_fps=folder_fps)
        with tempfile.TemporaryDirectory(prefix="fes-batch-") as tmp, \
                open_source(str(video), src_cfg, stream_id or None) as source, \
                FaceTracker(FaceConfig(face_model=self.face_model, max_faces=self.max_faces)) as tracker:
            sid = source.stream_id
            extractor = FeatureExtractor(FeatureConfig(keep_crop=False))
            cfg = from_dict(DetectConfig, {
                "endpoints": {"features": f"ipc://{tmp}/features", "events": f"ipc://{tmp}/events",
                              "replay": f"ipc://{tmp}/replay", "preview": f"ipc://{tmp}/preview"},
                "journal": "", "batch_streams": False,
                "intensity_hz": math.inf})  # an intensity event per processed frame: independent of speed
            detector = Detector(cfg, self.engine)
            table = FrameTable(table_path, source.fps or 30.0) if table_path else None
            events_file = open(events_path, "wb") if events_path else None  # JSON Lines, bytes as published
            taken = detector.publisher.seq  # events from here on are this video's
            n, expressions = 0, 0

            def collect() -> None:
                nonlocal taken, expressions
                detector.journal_turn()  # this turn's events, sent (as the live loop does after each turn)
                _, rows = detector.publisher.memory.since(taken)
                taken = detector.publisher.seq
                for row in rows:
                    if events_file is not None:
                        events_file.write(row[4] + b"\n")
                    ev = json.loads(row[4])
                    expressions += ev["type"] == "expression" and ev["stream_id"] == sid
                    if table is not None and ev["stream_id"] == sid:
                        table.on_event(ev)

            try:
                detector.handle(_as_received(wire.control_message(sid, "started", source=source.describe(),
                                                     fps=float(source.fps or 0.0), lossless=True)))
                total = len(source) if isinstance(source, FolderSource) else _frame_count(source)
                bar = tqdm(total=total, unit="frame", desc=desc or Path(video).name, disable=not self.progress)
                with bar:
                    for frame in source:
                        frame = on_source_clock(frame)
                        faces = tracker.update(frame)
                        feats = extractor.update(frame, faces)
                        if on_frame is not None:
                            on_frame(frame, faces, feats)
                        if table is not None:
                            table.add(frame.index, frame.pts_s, faces)
                        detector.handle(_as_received(wire.features_message(sid, feats, faces.state.value,
                                                                           {"dropped": 0})))
                        while detector.step(budget_s=1.0):
                            pass
                        collect()
                        n += 1
                        bar.update(1)
                detector.handle(_as_received(wire.control_message(sid, "ended", message="end of source",
                                                                  frame_index=n - 1, frames=n, dropped=0)))
                collect()
            finally:
                detector.close()
                if table is not None:
                    table.close()
                if events_file is not None:
                    events_file.close()
            fps = float(source.fps or 0.0)
        return VideoResult(str(video), sid, n, fps, table.face_frames if table is not None else -1, expressions,
                           events_path, table_path)


def _as_received(frames: list) -> list[bytes]:
    """The frames of an encoded message as the socket would deliver them (array buffers as raw bytes)."""
    return [bytes(f) for f in frames]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="FOLDER_OR_FILE", help="video files, or folders of videos")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="folder for <name>.events.jsonl and <name>.csv per video (existing files are never replaced)")
    p.add_argument("--engine", default="", help=ENGINE_HELP)
    p.add_argument("--backend", default="auto", help="auto, tensorrt, aoti, export or eager")
    p.add_argument("--fedn-threshold", type=float, default=None, metavar="T", help=THRESHOLD_HELP)
    p.add_argument("--face-model", default=None, help="MediaPipe face_landmarker .task file")
    p.add_argument("--max-faces", type=int, default=1, help="faces to track (the primary one is scored)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from fes_live.stream.engine import EngineError, load_engine
    from fes_live.stream.face_model import FaceModelError, find_face_model
    from fes_live.stream.sources import SourceError

    try:
        videos = find_videos(args.inputs)
    except FileNotFoundError as e:
        log.error("%s", e)
        return 2
    if not videos:
        log.error("no video files in %s (suffixes %s)", ", ".join(args.inputs), " ".join(VIDEO_SUFFIXES))
        return 2
    out = Path(args.output)
    names = output_names(videos)
    clash = [out / f"{n}{s}" for n in names for s in (".events.jsonl", ".csv") if (out / f"{n}{s}").exists()]
    if clash:
        log.error("%s already exists: give another -o folder or remove it (nothing is overwritten)", clash[0])
        return 2
    try:
        face_model = str(find_face_model(args.face_model))  # once, before any video: a clear error at once
        engine = load_engine(args.engine or None, backend=args.backend, fedn_threshold=args.fedn_threshold)
        runner = BatchRunner(engine, face_model, args.max_faces, progress=not args.no_progress)
    except (EngineError, FaceModelError) as e:
        log.error("%s", e)
        return 2
    out.mkdir(parents=True, exist_ok=True)  # only once there is something to write
    failed, no_face = [], []
    for i, (video, name) in enumerate(zip(videos, names), start=1):
        try:
            r = runner.run(video, out / f"{name}.events.jsonl", out / f"{name}.csv", stream_id=name,
                           desc=f"{i}/{len(videos)} {video.name}")
        except (SourceError, FaceModelError, ValueError, OSError) as e:
            log.error("%s: %s", video, e)
            failed.append(str(video))
            continue
        if r.no_face:
            log.warning("%s: no face found in %d frames", video, r.frames)
            no_face.append(str(video))
        print(f"{video}: {r.frames} frames, face on {r.face_frames}, {r.expressions} expression(s) -> "
              f"{r.events_path}, {r.table_path}")
    if no_face:
        print(f"no face found in: {', '.join(no_face)}")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0
