"""On-disk layouts of `fes-synth`: native mp4 + JSON, or the CAS(ME)^2 / SAMM-LV frame folders and spreadsheets.

The dataset layouts copy the official releases (see ../shared/papers/reference_notes.md section 6 and the real
sheets in ../shared/data/annotations/) so that the dataset adapters read synthetic data through the same code
path as the licensed data: 1-based frame numbers that equal the image numbers, CAS(ME)^2's headerless
`CASFEcode_final` sheet with its two naming-rule sheets, and SAMM-LV's 9 preamble rows before the header on row 10.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import openpyxl

if TYPE_CHECKING:
    from fes_live.train.synth import SynthConfig, VideoRecord

# CAS(ME)^2: folder numbers of its 22 subjects (sheet `naming rule1`) and its 9 stimuli (sheet `naming rule2`,
# folder suffixes as in the released `rawpic/`).
CASME2_FOLDERS = (15, 16, 19, 20, 21, 22, 23, 24, 25, 26, 27, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 40)
CASME2_STIMULI = (("0101", "disgust1", "disgustingteeth"), ("0102", "disgust2", "eatingworms"),
                  ("0401", "anger1", "girlcrashing"), ("0402", "anger2", "beatingpregnantwoman"),
                  ("0502", "happy1", "funnyerrors"), ("0503", "happy2", "unnyfarting"),
                  ("0505", "happy3", "funnyinnovations"), ("0507", "happy4", "climbingthewall"),
                  ("0508", "happy5", "funnydunkey"))
# Our labels -> CAS(ME)^2 "estimated emotion" column; the label itself goes in the self-report column.
CASME2_EMOTION = {"happiness": "positive", "surprise": "surprise", "disgust": "negative", "anger": "negative",
                  "sadness": "negative"}
SAMM_PREAMBLE = {
    "A1": "SAMM Long Videos Dataset - FACS Codes",
    "A3": "Symbol Key:",
    "A4": '"/" = or',
    "A6": "AU Help:",
    "A7": '"L2 or R2" = Unilateral AU 2 on left side of face / right side of face',
    "F7": "NOTE: Subjects with Apex Frame not annotated were labelled as -1.",
    "A8": '"A2" = Asymmetric AU 2. Occurs on both sides of face but stronger on one side',
}
SAMM_HEADER = ("Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
               "Action Units", "Notes")
SAMM_FIRST_SUBJECT = 6  # SAMM-LV subjects are 006-037
# SAMM-LV has no emotion column; synthetic rows carry their label in `Notes` (real notes are free text).
CASME2_XLSX = "CAS(ME)^2code_final.xlsx"
SAMM_XLSX = "SAMM_LongVideos_synth_Release.xlsx"


def assign_names(records: list[VideoRecord], layout: str, n_faces: int) -> None:
    """Give every record its dataset names (subject, video id, folder); the k-th face is the k-th subject."""
    per_subject: dict[int, int] = {}
    for n, rec in enumerate(records):
        subj = n % n_faces
        k = per_subject.get(subj, 0)
        per_subject[subj] = k + 1
        if layout == "casme2":
            if subj >= len(CASME2_FOLDERS):
                raise ValueError(f"casme2 layout holds at most {len(CASME2_FOLDERS)} subjects (faces)")
            if k >= len(CASME2_STIMULI):
                raise ValueError(f"casme2 layout holds at most {len(CASME2_STIMULI)} videos per subject; "
                                 f"use more --face or fewer --videos")
            folder = CASME2_FOLDERS[subj]
            code, stim, suffix = CASME2_STIMULI[k]
            rec.subject = f"s{folder}"
            rec.video_id = f"{folder}_{code}{suffix}"
            rec.names = {"subject_number": subj + 1, "folder_number": folder, "code": code, "stimulus": stim,
                         "dir": f"rawpic/s{folder}/{rec.video_id}"}
        elif layout == "samm":
            rec.subject = f"{SAMM_FIRST_SUBJECT + subj:03d}"
            rec.video_id = f"{rec.subject}_{k + 1}"
            rec.names = {"inducement_code": k + 1, "dir": f"{rec.subject}/{rec.video_id}"}


class Mp4Sink:
    """H.264 in an .mp4 (stream/video_writer.py: the one writer of fes-live; lossy, so real compression artefacts)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        from fes_live.stream.video_writer import VideoWriter

        self.path = path
        self.writer = VideoWriter(path, fps)

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)

    def close(self) -> None:
        self.writer.close()


class FolderSink:
    """Numbered JPEG frames (1-based) in a folder, named by `pattern` (str.format with the number)."""

    def __init__(self, folder: Path, pattern: str, quality: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.pattern, self.n = folder, pattern, 0
        self.params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]

    def write(self, frame: np.ndarray) -> None:
        self.n += 1
        path = self.folder / self.pattern.format(self.n)
        if not cv2.imwrite(str(path), frame, self.params):
            raise OSError(f"cannot write {path}")

    def close(self) -> None:
        pass


def open_sink(layout: str, out: Path, rec: VideoRecord, cfg: SynthConfig):
    if layout == "native":
        return Mp4Sink(out / f"{rec.video_id}.mp4", cfg.fps, (cfg.width, cfg.height))
    if layout == "casme2":
        return FolderSink(out / rec.names["dir"], "img{}.jpg", cfg.jpeg_quality)
    return FolderSink(out / rec.names["dir"], rec.video_id + "_{:04d}.jpg", cfg.jpeg_quality)


def _aus_cell(aus) -> int | str:
    """Single AU as a number, several joined with '+', as the official sheets store them."""
    return int(aus[0]) if len(aus) == 1 else "+".join(str(a) for a in aus)


def write_spreadsheet(layout: str, records: list[VideoRecord], out: Path) -> Path:
    return (_write_casme2 if layout == "casme2" else _write_samm)(records, out)


def _write_casme2(records: list[VideoRecord], out: Path) -> Path:
    rows = []
    for rec in records:
        for k, e in enumerate(sorted(rec.timeline.expressions, key=lambda e: e.onset), start=1):
            rows.append((rec.names["subject_number"], rec.names["folder_number"], f"{rec.names['stimulus']}_{k}",
                         e.onset + 1, e.apex + 1, e.offset + 1, _aus_cell(e.aus), CASME2_EMOTION[e.emotion],
                         f"{e.kind}-expression", e.emotion))
    rows.sort(key=lambda r: (r[0], r[2].split("_")[0], int(r[2].split("_")[1])))
    wb = openpyxl.Workbook()
    main = wb.active
    main.title = "CASFEcode_final"
    rule1 = wb.create_sheet("naming rule1")
    for subj, folder, clip, on, ap, off, aus, emo, kind, label in rows:
        main.append([subj, clip, on, ap, off, aus, emo, kind, label])
        rule1.append([folder, f"s{folder}", subj])
    rule2 = wb.create_sheet("naming rule2")
    for code, stim, _ in CASME2_STIMULI:
        rule2.append([code, stim])
    path = out / CASME2_XLSX
    wb.save(path)
    return path


def _write_samm(records: list[VideoRecord], out: Path) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "FACS_Movement_Only"
    for cell, text in SAMM_PREAMBLE.items():
        ws[cell] = text
    for col, name in enumerate(SAMM_HEADER, start=1):
        ws.cell(row=10, column=col, value=name)
    r = 11
    for rec in records:
        for k, e in enumerate(sorted(rec.timeline.expressions, key=lambda e: e.onset), start=1):
            values = (rec.subject, f"{rec.video_id}_{k}", rec.names["inducement_code"], e.onset + 1, e.apex + 1,
                      e.offset + 1, f"=SUM(F{r}-D{r})+1", "Macro" if e.kind == "macro" else "Micro - 1/2",
                      _aus_cell(e.aus), e.emotion)
            for col, value in enumerate(values, start=1):
                ws.cell(row=r, column=col, value=value)
            r += 1
    path = out / SAMM_XLSX
    wb.save(path)
    return path
