"""`fes-synth`: long, labelled facial-expression videos made from real faces.

    fes-synth --face PATH [--face PATH ...] --seconds 60 --fps 30 --seed 0 --out DIR [--videos N]
              [--layout native|casme2|samm]

A source face (photo or the neutral start of a video) is animated by landmark-driven warps (`synth_warp`) along a
seeded timeline of sparse macro/micro expressions plus unlabelled nuisances (`synth_timeline`): blinks, head drift
and jitter, talking, lighting drift, sensor noise, and lossy compression. The native layout is `<video_id>.mp4`
+ `<video_id>.json` + `annotations.csv` (0-based inclusive frames, see docs/contracts.md); `--layout casme2|samm`
writes the dataset's frame folders and official spreadsheet instead (`synth_layouts`), so the dataset adapters
read synthetic data exactly like the real thing.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from fes_live import version_text
from fes_live.stream.config import ConfigError, load_config, to_dict
from fes_live.train import synth_face, synth_layouts
from fes_live.train.synth_sheet import write_contact_sheet
from fes_live.train.synth_timeline import Timeline, build_timeline
from fes_live.train.synth_warp import FaceWarper

log = logging.getLogger(__name__)

LAYOUTS = ("native", "casme2", "samm")


@dataclass(frozen=True)
class SynthConfig:
    fps: float = 30.0
    seconds: float = 60.0
    width: int = 640
    height: int = 480
    face_height: float = 0.5             # face oval height / frame height
    macro_per_min: float = 3.0
    micro_per_min: float = 3.0
    macro_s: tuple[float, float] = (0.5, 4.0)
    micro_s: tuple[float, float] = (0.2, 0.45)
    macro_amp: tuple[float, float] = (0.7, 1.0)
    micro_amp: tuple[float, float] = (0.35, 0.55)
    min_gap_s: float = 1.5               # neutral time between two expressions, at least
    blinks_per_min: float = 15.0
    blink_s: tuple[float, float] = (0.1, 0.3)
    talk_per_min: float = 1.5
    talk_s: tuple[float, float] = (1.0, 3.0)
    head_shift: float = 0.06             # head drift, peak, in eye distances
    head_rot_deg: float = 2.0
    head_scale: float = 0.02
    head_jitter: float = 0.004           # per-frame jitter, eye distances
    head_moves_per_min: float = 2.0      # quick out-and-back head movements (0.4 - 1.5 s)
    light_drift: float = 0.08            # global gain drift, peak
    light_gradient: float = 0.05         # left-right gain gradient, peak
    noise_sigma: float = 2.0             # sensor noise, grey levels
    jpeg_quality: int = 85               # frame-folder layouts (casme2, samm)

    def __post_init__(self):
        if self.fps <= 0 or self.seconds <= 0:
            raise ConfigError(f"SynthConfig: fps and seconds must be positive (got {self.fps}, {self.seconds})")
        if self.width < 64 or self.height < 64:
            raise ConfigError(f"SynthConfig: frame {self.width}x{self.height} is too small")
        if not 0.1 <= self.face_height <= 0.9:
            raise ConfigError(f"SynthConfig: face_height must be in [0.1, 0.9] (got {self.face_height})")
        if min(self.macro_per_min, self.micro_per_min, self.blinks_per_min, self.talk_per_min,
               self.head_moves_per_min) < 0:
            raise ConfigError("SynthConfig: rates per minute must be >= 0")


@dataclass
class VideoRecord:
    """One generated video: its ids, where it went, and its ground truth."""
    index: int
    video_id: str
    subject: str
    fps: float
    n_frames: int
    source_face: str
    seed: int
    width: int
    height: int
    timeline: Timeline | None = None
    names: dict = field(default_factory=dict)  # layout-specific names (folders, codes)

    def as_dict(self) -> dict:
        tl = self.timeline
        return {"video_id": self.video_id, "subject": self.subject, "fps": self.fps, "n_frames": self.n_frames,
                "source_face": self.source_face, "seed": self.seed, "video_index": self.index,
                "width": self.width, "height": self.height,
                "intervals": [e.as_dict() for e in tl.expressions],
                "blinks": [list(b) for b in tl.blinks], "talking": [list(t) for t in tl.talking],
                "head_moves": [list(m) for m in tl.head_moves]}


def head_matrix(warper: FaceWarper, row: np.ndarray) -> np.ndarray:
    """Forward similarity (2, 3) of the head pose `row` = (dx, dy, rot deg, scale - 1), about the nose bridge."""
    axes = warper.axes
    centre = axes.origin + 0.6 * axes.iod * axes.ey
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(row[2]), 1.0 + float(row[3]))
    m[:, 2] += (row[0] * axes.ex + row[1] * axes.ey) * axes.iod
    return m.astype(np.float32)


class Renderer:
    """Frames of one timeline: warp, lighting, sensor noise (compression happens in the sink)."""

    def __init__(self, warper: FaceWarper, cfg: SynthConfig, rng: np.random.Generator):
        self.warper, self.cfg = warper, cfg
        h, w = warper.base.shape[:2]
        self.noise = [rng.normal(0, cfg.noise_sigma, (h, w, 3)).astype(np.float32) for _ in range(6)]
        self.ramp = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None]
        self.rng = rng

    def frame(self, tl: Timeline, t: int) -> np.ndarray:
        head = tl.head[t].copy()
        head[:2] += self.rng.normal(0, self.cfg.head_jitter, 2)
        img = self.warper.render(tl.weights[t], head_matrix(self.warper, head))
        gain = 1.0 + tl.light[t, 0] + tl.light[t, 1] * self.ramp
        noise = self.noise[int(self.rng.integers(len(self.noise)))]
        return np.clip(img.astype(np.float32) * gain + noise, 0, 255).astype(np.uint8)


def render_video(warper: FaceWarper, tl: Timeline, cfg: SynthConfig, rng: np.random.Generator, sink,
                 progress=None) -> None:
    renderer = Renderer(warper, cfg, rng)
    for t in range(tl.n_frames):
        sink.write(renderer.frame(tl, t))
        if progress is not None:
            progress.update(1)


def load_faces(paths: list[str], cfg: SynthConfig, face_model: str | None = None,
               mirror: bool = False) -> list[FaceWarper]:
    """Detect and frame every source face once (a FaceWarper precomputes its warp fields); `mirror` adds each
    face flipped left-right as one more subject."""
    if not paths:
        raise synth_face.SourceFaceError("no --face given: pass a photo or video of a face")
    with synth_face.MeshDetector(synth_face.face_model_path(face_model)) as det:
        faces = [synth_face.load_source_face(p, det, (cfg.width, cfg.height), cfg.face_height) for p in paths]
        if mirror:
            faces += [synth_face.mirrored(f, det) for f in faces]
    names = [f.name for f in faces]
    warpers = []
    for i, f in enumerate(faces):
        if names.count(f.name) > 1:  # two sources with the same stem are two subjects
            f = synth_face.SourceFace(f"{f.name}_{i}", f.path, f.image, f.landmarks)
        warpers.append(FaceWarper(f))
    return warpers


def generate(faces: list[FaceWarper], cfg: SynthConfig, out: str | Path, videos: int = 1, seed: int = 0,
             layout: str = "native", first_index: int = 0) -> list[VideoRecord]:
    """Write `videos` videos (round-robin over `faces`) and their annotations into `out`; returns the records.

    Video i (first_index <= i < first_index + videos) draws from rng [seed, i] and is named `<face>_<i:03d>`, so a
    later call with a higher `first_index` adds videos to a folder without renaming or changing earlier ones.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    if videos < 1:
        raise ValueError("videos must be >= 1")
    if first_index < 0:
        raise ValueError("first_index must be >= 0")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(first_index, first_index + videos):
        warper = faces[(i - first_index) % len(faces)]
        rng = np.random.default_rng([seed, i])
        tl = build_timeline(cfg, rng)
        records.append(VideoRecord(i, f"{warper.face.name}_{i:03d}", warper.face.name, cfg.fps, tl.n_frames,
                                   warper.face.path, seed, cfg.width, cfg.height, tl))
    synth_layouts.assign_names(records, layout, n_faces=len(faces))
    # a progress bar over every frame of the job on a terminal (none in logs and tests: disable=None)
    progress = tqdm(total=sum(r.n_frames for r in records), unit="frame", desc="fes-synth", disable=None,
                    dynamic_ncols=True)
    for rec in records:
        warper = faces[(rec.index - first_index) % len(faces)]
        t0 = time.perf_counter()
        sink = synth_layouts.open_sink(layout, out, rec, cfg)
        progress.set_postfix_str(rec.video_id)
        try:
            render_video(warper, rec.timeline, cfg, np.random.default_rng([seed, rec.index, 1]), sink, progress)
        finally:
            sink.close()
        log.info("%s: %d frames, %d expressions in %.1f s", rec.video_id, rec.n_frames,
                 len(rec.timeline.expressions), time.perf_counter() - t0)
    progress.close()
    if layout == "native":
        write_native_annotations(records, out)
    else:
        synth_layouts.write_spreadsheet(layout, records, out)
    (out / "synth_manifest.json").write_text(json.dumps(
        {"layout": layout, "seed": seed, "config": to_dict(cfg), "videos": [r.as_dict() | {"names": r.names}
                                                                          for r in records]}, indent=1))
    return records


CSV_FIELDS = ("video_id", "subject", "onset", "apex", "offset", "kind", "emotion", "aus")


def write_native_annotations(records: list[VideoRecord], out: Path) -> None:
    """`<video_id>.json` per video and one `annotations.csv` (aus joined with '+', as the datasets write them)."""
    for rec in records:
        (out / f"{rec.video_id}.json").write_text(json.dumps(rec.as_dict(), indent=1))
    with open(out / "annotations.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for rec in records:
            for e in rec.timeline.expressions:
                writer.writerow({"video_id": rec.video_id, "subject": rec.subject, "onset": e.onset, "apex": e.apex,
                                 "offset": e.offset, "kind": e.kind, "emotion": e.emotion,
                                 "aus": "+".join(str(a) for a in e.aus)})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--face", action="append", default=[], metavar="PATH",
                   help="photo or video of a face (repeat for several subjects); a video gives its neutral start")
    p.add_argument("--out", help="output folder (required unless only --contact-sheet is asked for)")
    p.add_argument("--seconds", type=float, help="length of each video (default 60)")
    p.add_argument("--fps", type=float, help="frame rate (default 30; SAMM-LV is 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same videos")
    p.add_argument("--videos", type=int, default=1, help="number of videos, round-robin over the faces")
    p.add_argument("--first-index", type=int, default=0,
                   help="index of the first video (its rng stream and name suffix), to add videos to a folder")
    p.add_argument("--layout", choices=LAYOUTS, default="native",
                   help="native (one folder per video + annotations.csv) or the CAS(ME)^2 / SAMM-LV dataset layouts")
    p.add_argument("--config", help="JSON file of SynthConfig fields (flags below override it)")
    p.add_argument("--macro-per-min", type=float, help="macro-expressions per minute (default: SynthConfig's)")
    p.add_argument("--micro-per-min", type=float, help="micro-expressions per minute (default: SynthConfig's)")
    p.add_argument("--blinks-per-min", type=float, help="blinks per minute (default: SynthConfig's)")
    p.add_argument("--talk-per-min", type=float, help="talking bouts per minute (default: SynthConfig's)")
    p.add_argument("--head-moves-per-min", type=float, help="head movements per minute (default: SynthConfig's)")
    p.add_argument("--noise-sigma", type=float, help="sensor noise, standard deviation in grey levels (default: SynthConfig's)")
    p.add_argument("--size", help="frame size WxH (default 640x480)")
    p.add_argument("--mirror", action="store_true", help="add every face flipped left-right as another subject")
    p.add_argument("--contact-sheet", metavar="PNG", help="also write a contact sheet of the first face's expressions")
    p.add_argument("--face-model", help="MediaPipe face_landmarker.task (default: $FES_FACE_MODEL, then the cache)")


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    overrides = {k: getattr(args, k) for k in ("seconds", "fps", "macro_per_min", "micro_per_min",
                                               "blinks_per_min", "talk_per_min", "head_moves_per_min", "noise_sigma")
                 if getattr(args, k) is not None}
    if args.size:
        try:
            w, h = (int(x) for x in args.size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--size must look like 640x480, got {args.size!r}") from None
        overrides.update(width=w, height=h)
    return load_config(SynthConfig, args.config, overrides)


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="fes-synth", description=__doc__.split("\n\n")[0])
        parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
        parser.add_argument("--version", action="version", version=version_text("fes-synth"))
        add_arguments(parser)
        args = parser.parse_args(args)
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = config_from_args(args)
        t0 = time.perf_counter()
        if not args.out and not args.contact_sheet:
            raise ConfigError("pass --out DIR (and/or --contact-sheet PNG)")
        faces = load_faces(args.face, cfg, args.face_model, mirror=args.mirror)
        if args.contact_sheet:
            print(f"fes-synth: contact sheet -> {write_contact_sheet(faces[0], args.contact_sheet, cfg.fps)}")
        if not args.out:
            return 0
        records = generate(faces, cfg, args.out, args.videos, args.seed, args.layout, args.first_index)
    except (ConfigError, ValueError, OSError, RuntimeError) as e:
        print(f"fes-synth: error: {e}", file=sys.stderr)
        return 2
    n_expr = sum(len(r.timeline.expressions) for r in records)
    print(f"fes-synth: {len(records)} video(s), {sum(r.n_frames for r in records)} frames, {n_expr} expressions "
          f"-> {args.out} ({args.layout}) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
