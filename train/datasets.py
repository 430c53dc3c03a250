"""Spotting datasets as shipped (frame folders + official spreadsheets) -> one table of videos and intervals.

Every loader returns a `Dataset`: `Video(video_id, subject, fps, frames)` and `Interval(video_id, subject, onset,
apex, offset, kind, emotion, aus, raw)` with 0-based positions into the video's ordered frame list, inclusive
intervals, kind MACRO/MICRO (fes_live.models.spotting). The official numbers stay in `Interval.raw` (what the sheet says).

Quirks handled here, once: 1-based frame numbers; frame numbers that name image files (CAS(ME)^3 numbering starts
anywhere and has gaps, so a number maps to the position of its file in the sorted folder); CAS(ME)^2 offset 0
(missing; `missing_offset` picks the fill) and apex 0; SAMM fractional frames (rounded, as the MEGC baseline
does) and apex -1; SAMM's 200 fps with optional temporal down-sampling. A missing apex becomes the interval's
middle frame (the MEGC baseline's rule) and `raw["apex_missing"]` says so (also set when the
sheet's apex lies outside its interval).
"""
from __future__ import annotations

import bisect
import csv
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from fes_live.models.spotting import KIND_NAMES, MACRO, MICRO, parse_kind

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")
MISSING_OFFSET_RULES = ("apex", "apex+20", "onset+20")


class DatasetError(ValueError):
    """A dataset that cannot be read: missing file or folder, unknown layout, malformed row."""


@dataclass(frozen=True)
class Video:
    """One long video: a video file or an ordered tuple of image paths (empty when only annotations were read)."""
    video_id: str
    subject: str
    fps: float
    frames: Path | tuple[Path, ...] = ()
    n_frames: int | None = None  # None when unknown (annotation-only load, or a video file not opened)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Interval:
    """One annotated expression, 0-based inclusive frame positions in its video."""
    video_id: str
    subject: str
    onset: int
    apex: int
    offset: int
    kind: int  # MACRO or MICRO
    emotion: str = ""
    aus: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def length(self) -> int:
        return self.offset - self.onset + 1


@dataclass(frozen=True)
class Dataset:
    name: str
    videos: tuple[Video, ...]
    intervals: tuple[Interval, ...]

    def counts(self) -> dict[str, int]:
        return {name: sum(i.kind == k for i in self.intervals) for k, name in enumerate(KIND_NAMES)}

    def subjects(self) -> list[str]:
        return sorted({v.subject for v in self.videos}, key=natural_key)

    def by_video(self) -> dict[str, list[Interval]]:
        """Ground truth for fes_live.train.evaluate: {video_id: [Interval]}, every video present (also those without GT)."""
        table: dict[str, list[Interval]] = {v.video_id: [] for v in self.videos}
        for i in self.intervals:
            table.setdefault(i.video_id, []).append(i)
        return table

    def subset(self, subjects: Iterable[str]) -> Dataset:
        keep = set(subjects)
        return Dataset(self.name, tuple(v for v in self.videos if v.subject in keep),
                       tuple(i for i in self.intervals if i.subject in keep))


def natural_key(text: str) -> tuple:
    """Sort key that puts `spNO.2` before `spNO.10` and `img9` before `img10`."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


# --------------------------------------------------------------------------------------------------- frame lists

def _number(path: Path) -> int | None:
    """The last integer in a file name: img12.jpg -> 12, 006_1_0034.jpg -> 34, 105.jpg -> 105."""
    found = re.findall(r"\d+", path.stem)
    return int(found[-1]) if found else None


def list_frames(folder: Path) -> tuple[tuple[Path, ...], list[int]]:
    """Image files of a folder sorted by their number (unpadded names sort right), and those numbers."""
    if not folder.is_dir():
        raise DatasetError(f"frame folder not found: {folder}")
    numbered = [(n, p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                and (n := _number(p)) is not None]
    if not numbered:
        raise DatasetError(f"no numbered images (*.jpg, *.png) in {folder}")
    numbered.sort()
    numbers = [n for n, _ in numbered]
    if len(set(numbers)) != len(numbers):
        raise DatasetError(f"{folder}: two image files carry the same frame number")
    return tuple(p for _, p in numbered), numbers


def number_to_position(number: float, numbers: list[int] | None, first: int = 1) -> int:
    """Position (0-based) of official frame `number` in a sorted frame-number list.

    Without a frame list, frames are taken as numbered from `first`. A number that falls in a gap maps to the
    next existing frame; numbers beyond either end are clamped.
    """
    n = int(round(number))
    if numbers is None:
        return max(0, n - first)
    pos = bisect.bisect_left(numbers, n)
    return min(pos, len(numbers) - 1)


def _fix_interval(onset: int, apex: int | None, offset: int) -> tuple[int, int, int, bool]:
    offset = max(offset, onset)
    apex_missing = apex is None or not onset <= apex <= offset
    return onset, (onset + offset) // 2 if apex_missing else apex, offset, apex_missing


def _aus(text: Any) -> tuple[str, ...]:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ()
    return tuple(a.strip() for a in str(text).replace(",", "+").split("+") if a.strip() and a.strip() != "nan")


def _read_excel(path: Path, **kwargs: Any):
    import pandas as pd
    if not path.is_file():
        raise DatasetError(f"annotation file not found: {path}")
    try:
        return pd.read_excel(path, **kwargs)
    except ValueError as e:  # missing sheet, unreadable file
        raise DatasetError(f"{path}: {e}") from None


def _num(value: Any, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {value!r} is not a frame number") from None
    if math.isnan(x):
        raise DatasetError(f"{where}: empty frame number")
    return x


# ------------------------------------------------------------------------------------------------------ CAS(ME)^2

def load_casme2(annotation: str | Path, root: str | Path | None = None, *, missing_offset: str = "apex",
                fps: float = 30.0) -> Dataset:
    """CAS(ME)^2 from `CAS(ME)^2code_final.xlsx` / `CASME_sq_gt.xlsx` and, optionally, the `rawpic` folder.

    Sheet `CASFEcode_final` (no header): subject number, clip (`anger1_1`), onset, apex, offset, AUs, emotion,
    type, self-report; sheet `naming rule1` maps the subject number to its folder (`s15`), `naming rule2` the
    stimulus (`anger1`) to its code (`0401`). Video id `s15_0401` (the MEGC file name); frames in
    `root/s15/15_0401<name>/img<N>.jpg`, 1-based. Offset 0 (44 rows, not annotated) becomes `missing_offset`:
    "apex" (MEGC baseline, SoftNet; default), "apex+20" (LGSNet) or "onset+20" (GIM, roughly).
    """
    if missing_offset not in MISSING_OFFSET_RULES:
        raise DatasetError(f"missing_offset {missing_offset!r} not in {MISSING_OFFSET_RULES}")
    path = Path(annotation)
    sheets = _read_excel(path, sheet_name=None, header=None)
    for name in ("CASFEcode_final", "naming rule1", "naming rule2"):
        if name not in sheets:
            raise DatasetError(f"{path}: sheet {name!r} missing (found {sorted(sheets)})")
    try:
        folder_of = {int(r[2]): str(r[1]).strip() for r in sheets["naming rule1"].itertuples(index=False)}
        code_of = {str(r[1]).strip(): str(int(r[0])).zfill(4) for r in sheets["naming rule2"].itertuples(index=False)}
    except (IndexError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: naming rule sheets must hold (number, folder, subject) / (code, stimulus) "
                           f"rows ({e})") from None

    intervals: list[Interval] = []
    video_subject: dict[str, str] = {}
    for n, r in enumerate(sheets["CASFEcode_final"].itertuples(index=False), 1):
        where = f"{path}:CASFEcode_final row {n}"
        subj_no, clip = int(_num(r[0], where)), str(r[1]).strip()
        stimulus = clip.rsplit("_", 1)[0]
        if subj_no not in folder_of or stimulus not in code_of:
            raise DatasetError(f"{where}: no naming rule for subject {subj_no} / stimulus {stimulus!r}")
        folder = folder_of[subj_no]
        video_id = f"{folder}_{code_of[stimulus]}"
        video_subject[video_id] = folder
        on, ap, off = (_num(r[k], where) for k in (2, 3, 4))
        intervals.append(Interval(video_id, folder, 0, 0, 0, _kind(r[7], where), str(r[6]).strip(), _aus(r[5]),
                                  {"clip": clip, "onset": on, "apex": ap, "offset": off,
                                   "self_report": str(r[8]).strip()}))

    if root is not None:  # videos without any expression are part of the dataset too (false positives count)
        for vdir in _casme2_folders(Path(root)):
            code = vdir.name.split("_", 1)[1]
            video_subject.setdefault(f"{vdir.parent.name}_{code[:4]}", vdir.parent.name)
    videos: list[Video] = []
    numbers_of: dict[str, list[int] | None] = {}
    for video_id in sorted(video_subject):
        folder = video_subject[video_id]
        frames, numbers, raw = (), None, {}
        if root is not None:
            code = video_id.split("_", 1)[1]
            vdir = _find_casme2_folder(Path(root), folder, code)
            frames, numbers = list_frames(vdir)
            raw = {"folder": str(vdir)}
        numbers_of[video_id] = numbers
        videos.append(Video(video_id, folder, fps, frames, len(frames) if frames else None, raw))

    fixed = []
    for iv in intervals:
        numbers = numbers_of[iv.video_id]
        on_n, ap_n, off_n = iv.raw["onset"], iv.raw["apex"], iv.raw["offset"]
        if off_n == 0:
            off_n = {"apex": ap_n, "apex+20": ap_n + 20, "onset+20": on_n + 20}[missing_offset]
        onset = number_to_position(on_n, numbers)
        offset = number_to_position(off_n, numbers)
        apex = number_to_position(ap_n, numbers) if ap_n > 0 else None
        onset, apex, offset, missing = _fix_interval(onset, apex, offset)
        raw = {**iv.raw, "offset_missing": iv.raw["offset"] == 0, "apex_missing": missing}
        fixed.append(Interval(iv.video_id, iv.subject, onset, apex, offset, iv.kind, iv.emotion, iv.aus, raw))
    return Dataset("casme2", tuple(videos), tuple(fixed))


def _casme2_base(root: Path) -> Path:
    if not root.is_dir():
        raise DatasetError(f"CAS(ME)^2 frame root not found: {root}")
    return root / "rawpic" if (root / "rawpic").is_dir() else root


def _casme2_folders(root: Path) -> list[Path]:
    """Every `s<NN>/<NN>_<4-digit code>...` video folder under the root (or its `rawpic/`)."""
    base = _casme2_base(root)
    return sorted(p for p in base.glob("s*/*") if p.is_dir() and re.fullmatch(r"\d+_\d{4}.*", p.name))


def _find_casme2_folder(root: Path, folder: str, code: str) -> Path:
    base = _casme2_base(root) / folder
    number = folder.lstrip("sS")
    hits = sorted(base.glob(f"{number}_{code}*")) if base.is_dir() else []
    if len(hits) != 1:
        raise DatasetError(f"CAS(ME)^2: expected one folder {base}/{number}_{code}*, found {len(hits)}")
    return hits[0]


def _kind(value: Any, where: str) -> int:
    try:
        return parse_kind(value)
    except ValueError:
        raise DatasetError(f"{where}: unknown expression type {value!r}") from None


# --------------------------------------------------------------------------------------------------------- SAMM-LV

def load_samm(annotation: str | Path, root: str | Path | None = None, *, downsample: int = 1,
              fps: float = 200.0, sheet: str | int = 0) -> Dataset:
    """SAMM-LV from its release sheet (`SAMMLV_gt.xlsx`, header on row 10) and optionally the frame folders.

    Filename `006_1_3` is expression 3 of video `006_1`; frames in `root/006_1/*.jpg` (any numbered names).
    Fractional frame numbers are rounded (MEGC baseline), apex -1 (not annotated) becomes the middle frame.
    `downsample=k` keeps every k-th frame (fps / k; 7 for SpotFormer/GIM's ~28.6 fps) and maps positions p -> round(p / k).
    """
    if downsample < 1:
        raise DatasetError(f"downsample must be >= 1, got {downsample}")
    path = Path(annotation)
    df = _read_excel(path, sheet_name=sheet, header=9, dtype=str)
    need = ["Subject", "Filename", "Onset", "Apex", "Offset", "Type"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: columns {missing} not on header row 10 (found {list(df.columns)[:10]})")
    rows = []
    for n, r in enumerate(df.to_dict("records"), 11):
        if not isinstance(r["Filename"], str) or not r["Filename"].strip():
            continue  # trailing blank rows
        where = f"{path} row {n}"
        name = r["Filename"].strip()
        video_id = name.rsplit("_", 1)[0]
        subject = str(r["Subject"]).strip().zfill(3)
        rows.append((video_id, subject, name, _num(r["Onset"], where), _num(r["Apex"], where),
                     _num(r["Offset"], where), _kind(r["Type"], where), _aus(r.get("Action Units")),
                     str(r.get("Notes") or "").strip() if str(r.get("Notes")) != "nan" else ""))

    video_subject = {v: s for v, s, *_ in rows}
    folders = _samm_folders(Path(root)) if root is not None else {}
    for video_id in folders:  # videos without any expression too
        video_subject.setdefault(video_id, video_id.split("_")[0].zfill(3))
    videos, numbers_of, kept_of = [], {}, {}
    for video_id in sorted(video_subject):
        frames, numbers, raw = (), None, {}
        if root is not None:
            if video_id not in folders:
                raise DatasetError(f"SAMM: no frame folder {video_id} under {root}")
            frames, numbers = list_frames(folders[video_id])
            raw = {"folder": str(folders[video_id]), "n_frames_full": len(frames)}
            frames = frames[::downsample]
        numbers_of[video_id], kept_of[video_id] = numbers, (len(frames) if frames else None)
        videos.append(Video(video_id, video_subject[video_id], fps / downsample, frames, kept_of[video_id], raw))

    intervals = []
    for video_id, subject, name, on_n, ap_n, off_n, kind, aus, notes in rows:
        last = (kept_of[video_id] or 10**9) - 1
        pos = [min(int(round(number_to_position(x, numbers_of[video_id]) / downsample)), last)
               for x in (on_n, ap_n, off_n)]
        onset, apex, offset, missing = _fix_interval(pos[0], pos[1] if ap_n >= 0 else None, pos[2])
        intervals.append(Interval(video_id, subject, onset, apex, offset, kind, "", aus,
                                  {"filename": name, "onset": on_n, "apex": ap_n, "offset": off_n, "notes": notes,
                                   "apex_missing": missing, "downsample": downsample}))
    return Dataset("samm", tuple(videos), tuple(intervals))


def _samm_folders(root: Path) -> dict[str, Path]:
    """`<subject>_<video>` frame folders: `SAMM_longvideos/006_1/` as released, or nested as `006/006_1/`."""
    if not root.is_dir():
        raise DatasetError(f"SAMM frame root not found: {root}")
    found = {}
    for vdir in sorted([*root.glob("*"), *root.glob("*/*")]):
        if vdir.is_dir() and re.fullmatch(r"\d+_\d+", vdir.name):
            found.setdefault(vdir.name, vdir)
    return found


# ------------------------------------------------------------------------------------------------------- CAS(ME)^3

def casme3_video_id(subject: str, letter: str) -> str:
    """`spNO.1_a` for subject `spNO.1` / LGSNet's `001` and video letter `a`."""
    k = int(str(subject).split(".")[-1])
    return f"spNO.{k}_{str(letter).strip().lower()}"


def _casme3_unlabelled(root: Path | None, video_info: dict[str, tuple], subjects: Iterable[str]) -> None:
    """Add every `root/<subject>/<letter>/color` video of the annotated subjects (videos without GT count too)."""
    if root is None:
        return
    if not root.is_dir():
        raise DatasetError(f"CAS(ME)^3 frame root not found: {root}")
    for subject in sorted(set(subjects)):
        for color in sorted((root / subject).glob("*/color")):
            letter = color.parent.name
            video_info.setdefault(casme3_video_id(subject, letter), (subject, letter, None))


def _casme3_frames(root: Path | None, subject: str, letter: str) -> tuple[tuple[Path, ...], list[int] | None, dict]:
    if root is None:
        return (), None, {}
    folder = root / subject / letter / "color"
    frames, numbers = list_frames(folder)
    return frames, numbers, {"folder": str(folder), "first_number": numbers[0]}


def load_casme3_lgsnet(annotation: str | Path, root: str | Path | None = None, *, fps: float = 30.0) -> Dataset:
    """CAS(ME)^3 part A as filtered by LGSNet (`cas3_annotation_full_me_reduce.csv`: 2071 macro + 277 micro).

    Its startFrame / endFrame are 1-based positions in the sorted frame list (LGSNet renumbers every folder to
    1..N), so position = number - 1; frames from `root/spNO.<k>/<letter>/color/<n>.jpg`. No apex in this file:
    the middle frame stands in (`raw["apex_missing"]`). No emotion either.
    """
    path = Path(annotation)
    if not path.is_file():
        raise DatasetError(f"annotation file not found: {path}")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"subject", "video", "type", "startFrame", "endFrame"}
    if not rows or not need <= set(rows[0]):
        raise DatasetError(f"{path}: expected LGSNet columns {sorted(need)}")
    root = Path(root) if root is not None else None
    parsed, video_info = [], {}
    for n, r in enumerate(rows, 2):
        where = f"{path} line {n}"
        subject = f"spNO.{int(r['subject'])}"
        letter = r["video"].rstrip("/").rsplit("/", 1)[-1]
        video_id = casme3_video_id(subject, letter)
        video_info.setdefault(video_id, (subject, letter, r.get("frame_num")))
        parsed.append((video_id, subject, _num(r["startFrame"], where), _num(r["endFrame"], where),
                       _kind(r["type"], where)))
    _casme3_unlabelled(root, video_info, [v[0] for v in video_info.values()])
    videos, count_of = [], {}
    for video_id in sorted(video_info, key=natural_key):
        subject, letter, frame_num = video_info[video_id]
        frames, numbers, raw = _casme3_frames(root, subject, letter)
        n_frames = len(frames) if frames else (int(frame_num) if frame_num else None)
        count_of[video_id] = n_frames
        videos.append(Video(video_id, subject, fps, frames, n_frames, {**raw, "letter": letter}))
    intervals = []
    for video_id, subject, on_n, off_n, kind in parsed:
        last = (count_of[video_id] or 10**9) - 1
        onset, offset = min(int(on_n) - 1, last), min(int(off_n) - 1, last)
        onset, apex, offset, missing = _fix_interval(max(onset, 0), None, offset)
        intervals.append(Interval(video_id, subject, onset, apex, offset, kind, "", (),
                                  {"startFrame": on_n, "endFrame": off_n, "apex_missing": missing}))
    return Dataset("casme3-lgsnet", tuple(videos), tuple(intervals))


def load_casme3(annotation: str | Path, root: str | Path | None = None, *, fps: float = 30.0) -> Dataset:
    """CAS(ME)^3 part A from the original sheet (`CAS(ME)3_part_A_v2.xls`, header row 0: Subject `spNO.<k>`,
    Filename = video letter, Onset, Apex, Offset, ..., `Expression type`) and `root/spNO.<k>/<letter>/color/<n>.jpg`.

    Frame numbers name files, unpadded, not starting at 1 and with gaps: a number maps to its file's position in
    the sorted list (a number inside a gap to the next file). Without `root`, numbers are taken as 1-based.
    """
    path = Path(annotation)
    df = _read_excel(path, sheet_name=0, header=0)
    cols = {str(c).strip().lower(): c for c in df.columns}
    need = ["subject", "filename", "onset", "apex", "offset", "expression type"]
    missing = [c for c in need if c not in cols]
    if missing:
        raise DatasetError(f"{path}: columns {missing} missing (found {list(df.columns)})")
    emotion_col = next((cols[c] for c in ("emotion", "objective class", "estimated emotion") if c in cols), None)
    au_col = next((cols[c] for c in ("au", "action units", "aus") if c in cols), None)
    root = Path(root) if root is not None else None
    rows, video_info = [], {}
    for n, r in enumerate(df.to_dict("records"), 2):
        where = f"{path} row {n}"
        subject, letter = str(r[cols["subject"]]).strip(), str(r[cols["filename"]]).strip().lower()
        video_id = casme3_video_id(subject, letter)
        video_info[video_id] = (subject, letter, None)
        rows.append((video_id, subject, [_num(r[cols[c]], where) for c in ("onset", "apex", "offset")],
                     _kind(r[cols["expression type"]], where),
                     str(r[emotion_col]).strip() if emotion_col is not None else "",
                     _aus(r[au_col]) if au_col is not None else ()))
    _casme3_unlabelled(root, video_info, [v[0] for v in video_info.values()])
    videos, numbers_of = [], {}
    for video_id in sorted(video_info, key=natural_key):
        subject, letter, _ = video_info[video_id]
        frames, numbers, raw = _casme3_frames(root, subject, letter)
        numbers_of[video_id] = numbers
        videos.append(Video(video_id, subject, fps, frames, len(frames) if frames else None, {**raw, "letter": letter}))
    intervals = []
    for video_id, subject, (on_n, ap_n, off_n), kind, emotion, aus in rows:
        numbers = numbers_of[video_id]
        onset, offset = number_to_position(on_n, numbers), number_to_position(off_n, numbers)
        apex = number_to_position(ap_n, numbers) if ap_n > 0 else None
        onset, apex, offset, missing = _fix_interval(onset, apex, offset)
        intervals.append(Interval(video_id, subject, onset, apex, offset, kind, emotion, aus,
                                  {"onset": on_n, "apex": ap_n, "offset": off_n, "apex_missing": missing}))
    return Dataset("casme3", tuple(videos), tuple(intervals))


# -------------------------------------------------------------------------------------------------- native layout

def _native_interval(d: dict[str, Any], video_id: str, subject: str, where: str) -> Interval:
    try:
        onset, offset = int(d["onset"]), int(d["offset"])
        apex = int(d["apex"]) if d.get("apex") not in (None, "") else None
        kind = _kind(d["kind"], where)
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{where}: bad interval {d!r} ({e})") from None
    if offset < onset or onset < 0:
        raise DatasetError(f"{where}: interval [{onset}, {offset}] is not a valid 0-based inclusive range")
    aus = d.get("aus") or ()
    aus = tuple(str(a) for a in aus) if isinstance(aus, (list, tuple)) else _aus(aus)
    onset, apex, offset, missing = _fix_interval(onset, apex, offset)
    return Interval(video_id, subject, onset, apex, offset, kind, str(d.get("emotion") or ""), aus,
                    {"apex_missing": missing})


def _read_native_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: not a readable annotation JSON ({e})") from None
    if not isinstance(meta, dict) or "intervals" not in meta or not isinstance(meta["intervals"], list):
        raise DatasetError(f"{path}: expected an object with 'intervals': [...]")
    return meta


def _video_next_to(path: Path) -> Path | None:
    return next((v for s in VIDEO_SUFFIXES if (v := path.with_suffix(s)).is_file()), None)


def _annotation_jsons(directory: Path) -> list[Path]:
    """The `<video_id>.json` files of a native folder: those next to a video or holding 'intervals'; other JSON
    (fes-synth's `synth_manifest.json`) is not an annotation."""
    found = []
    for p in sorted(directory.glob("*.json")):
        if _video_next_to(p) is None:
            try:
                meta = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if not (isinstance(meta, dict) and "intervals" in meta):
                continue
        found.append(p)
    return found


def load_native(directory: str | Path) -> Dataset:
    """The synthetic generator's native layout: `DIR/<video_id>.mp4` + `DIR/<video_id>.json` (see contracts.md)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"native dataset folder not found: {directory}")
    files = _annotation_jsons(directory)
    if not files:
        raise DatasetError(f"{directory}: no <video_id>.json annotation files")
    videos, intervals = [], []
    for path in files:
        meta = _read_native_json(path)
        video_id = str(meta.get("video_id") or path.stem)
        subject = str(meta.get("subject") or video_id)
        media = _video_next_to(path)
        if media is None:
            raise DatasetError(f"{path}: no video file {path.stem}.mp4 next to it")
        try:
            fps = float(meta["fps"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{path}: missing or bad 'fps'") from None
        n_frames = int(meta["n_frames"]) if meta.get("n_frames") is not None else None
        videos.append(Video(video_id, subject, fps, media, n_frames,
                            {k: meta[k] for k in ("source_face", "seed") if k in meta}))
        intervals += [_native_interval(d, video_id, subject, f"{path} interval {n}")
                      for n, d in enumerate(meta["intervals"])]
    return Dataset("native", tuple(videos), tuple(intervals))


def load_native_annotations(path: str | Path) -> dict[str, list[Interval]]:
    """Ground truth only, from one native JSON, a folder of them, or `annotations.csv` (no video files needed)."""
    path = Path(path)
    if path.is_dir():
        files = _annotation_jsons(path)
        if not files:
            csv_path = path / "annotations.csv"
            if csv_path.is_file():
                return load_native_annotations(csv_path)
            raise DatasetError(f"{path}: no annotation JSON files or annotations.csv")
    elif path.is_file():
        files = [path]
    else:
        raise DatasetError(f"ground truth not found: {path}")
    table: dict[str, list[Interval]] = {}
    if files[0].suffix.lower() == ".csv":
        with files[0].open(newline="") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                if "video_id" not in row:
                    raise DatasetError(f"{files[0]}: no video_id column")
                vid = row["video_id"]
                table.setdefault(vid, []).append(
                    _native_interval({**row, "aus": row.get("aus", "")}, vid, row.get("subject") or vid,
                                     f"{files[0]} line {n}"))
        return table
    for p in files:
        meta = _read_native_json(p)
        vid = str(meta.get("video_id") or p.stem)
        table[vid] = [_native_interval(d, vid, str(meta.get("subject") or vid), f"{p} interval {n}")
                      for n, d in enumerate(meta["intervals"])]
    return table


# ------------------------------------------------------------------------------------- point labels and LOSO

def point_labels(intervals: Sequence[Interval], mode: str = "random", seed: int = 0) -> list[int]:
    """One frame per interval for point supervision: "apex", or "random" = uniform inside [onset, offset].

    The random frame depends only on (seed, video, onset, offset), not on the order or the other intervals.
    """
    if mode == "apex":
        return [i.apex for i in intervals]
    if mode != "random":
        raise DatasetError(f"point label mode {mode!r}: use 'random' or 'apex'")
    out = []
    for i in intervals:
        rng = np.random.default_rng([seed, zlib.crc32(i.video_id.encode()), i.onset, i.offset])
        out.append(int(rng.integers(i.onset, i.offset + 1)))
    return out


@dataclass(frozen=True)
class Fold:
    """Leave-one-subject-out fold: test on one subject, train on the rest minus a few validation subjects."""
    name: str
    test: tuple[str, ...]
    train: tuple[str, ...]
    val: tuple[str, ...]


def loso_folds(dataset: Dataset, *, n_val: int = 1, seed: int = 0, only_with_gt: bool = True) -> list[Fold]:
    """One fold per subject (subjects without any interval are skipped as test subjects when `only_with_gt`).

    Validation subjects are drawn (seeded) from each fold's training subjects; they never overlap test or train.
    """
    subjects = dataset.subjects()
    with_gt = sorted({i.subject for i in dataset.intervals}, key=natural_key)
    tests = with_gt if only_with_gt else subjects
    if len(subjects) < 2 + n_val:
        raise DatasetError(f"LOSO needs at least {2 + n_val} subjects, {dataset.name} has {len(subjects)}")
    folds = []
    for n, subject in enumerate(tests):
        rest = [s for s in subjects if s != subject]
        rng = np.random.default_rng([seed, n])
        val = sorted(rng.choice(rest, size=n_val, replace=False).tolist()) if n_val else []
        folds.append(Fold(subject, (subject,), tuple(s for s in rest if s not in val), tuple(val)))
    return folds


LOADERS = {"casme2": load_casme2, "samm": load_samm, "casme3": load_casme3, "casme3-lgsnet": load_casme3_lgsnet}
