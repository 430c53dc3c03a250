"""Dataset adapters: counts from the real annotation files, and frame folders laid out like each dataset."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import DATA, need
from fes_live.models.spotting import MACRO, MICRO
from fes_live.train.datasets import (DatasetError, load_casme2, load_casme3, load_casme3_lgsnet, load_native,
                            load_native_annotations, load_samm, loso_folds, point_labels)

ANN = DATA / "annotations"
BLACK = np.zeros((8, 8, 3), np.uint8)


def write_frames(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        assert cv2.imwrite(str(folder / name), BLACK)


# ------------------------------------------------------------------------------------------ real annotation files

def test_casme2_real_counts_and_quirks():
    ds = load_casme2(need(ANN / "CASME_sq_gt.xlsx"))
    assert ds.counts() == {"macro": 300, "micro": 57}
    assert len(ds.subjects()) == 22 and len(ds.videos) == 95
    first = ds.intervals[0]  # s15 anger1_1: 557 / 572 / 608, 1-based
    assert (first.video_id, first.onset, first.apex, first.offset) == ("s15_0401", 556, 571, 607)
    assert first.aus == ("4", "10", "14") and first.emotion == "negative" and first.raw["onset"] == 557
    no_offset = [i for i in ds.intervals if i.raw["offset_missing"]]
    assert len(no_offset) == 44 and all(i.offset == i.apex for i in no_offset)
    no_apex = [i for i in ds.intervals if i.raw["apex"] == 0]
    assert len(no_apex) == 1 and no_apex[0].apex == (no_apex[0].onset + no_apex[0].offset) // 2
    plus20 = load_casme2(ANN / "CASME_sq_gt.xlsx", missing_offset="apex+20")
    assert all(b.offset == b.apex + 20 for a, b in zip(ds.intervals, plus20.intervals) if a.raw["offset_missing"])
    assert all(0 <= i.onset <= i.apex <= i.offset for i in ds.intervals)


def test_casme2_matches_megc_ground_truth_file():
    """Our CAS(ME)^2 table equals the MEGC 2020 all_Info.txt (its offset-0 rule is ours by default)."""
    ds = load_casme2(need(ANN / "CASME_sq_gt.xlsx"))
    ours = sorted((i.video_id, i.onset + 1, i.offset + 1, i.kind_name) for i in ds.intervals)
    theirs = []
    for line in need(DATA / "megc2020_baseline" / "ground_truth_all_Info.txt").read_text().split("\n"):
        if line.strip():
            folder, code, cls, on, _, off = line.split()
            theirs.append((f"{folder}_{code}", int(float(on)), int(float(off)), cls.split("-")[0]))
    assert ours == sorted(theirs)


def test_samm_real_counts_and_quirks():
    ds = load_samm(need(ANN / "SAMMLV_gt.xlsx"))
    assert ds.counts() == {"macro": 343, "micro": 159}
    assert len(ds.videos) == 147 and len(ds.subjects()) == 30 and ds.videos[0].fps == 200
    first = next(i for i in ds.intervals if i.raw["filename"] == "006_1_1")  # 566.4 / 647.6 / 743.2
    assert (first.video_id, first.subject, first.onset, first.apex, first.offset) == ("006_1", "006", 565, 647, 742)
    assert sum(i.raw["apex_missing"] for i in ds.intervals) >= 6
    assert all(0 <= i.onset <= i.apex <= i.offset for i in ds.intervals)
    ds7 = load_samm(ANN / "SAMMLV_gt.xlsx", downsample=7)
    assert ds7.videos[0].fps == pytest.approx(200 / 7)
    first7 = next(i for i in ds7.intervals if i.raw["filename"] == "006_1_1")
    assert (first7.onset, first7.apex, first7.offset) == (round(565 / 7), round(647 / 7), round(742 / 7))


def test_casme3_lgsnet_real_counts():
    ds = load_casme3_lgsnet(need(ANN / "LGSNet_cas3_annotation_full_me_reduce.csv"))
    assert ds.counts() == {"macro": 2071, "micro": 277}
    assert len(ds.subjects()) == 97 and len(ds.videos) == 757
    first = ds.intervals[0]  # 001 a Macro 31..59, 1-based positions
    assert (first.video_id, first.subject, first.onset, first.offset) == ("spNO.1_a", "spNO.1", 30, 58)
    assert max(i.length for i in ds.intervals if i.kind == MICRO) <= 16
    assert next(v for v in ds.videos if v.video_id == "spNO.1_a").n_frames == 836


# ------------------------------------------------------------------------------------ synthetic on-disk layouts

def _casme2_sheet(path: Path) -> None:
    rows = [[1, "anger1_1", 5, 8, 12, "4+10", "negative", "macro-expression", "anger"],
            [1, "anger1_2", 20, 25, 0, "4", "negative", "macro-expression", "anger"],  # offset not annotated
            [2, "happy1_1", 3, 0, 9, "12", "positive", "micro-expression", "happy"]]   # apex not annotated
    with pd.ExcelWriter(path) as w:
        pd.DataFrame(rows).to_excel(w, sheet_name="CASFEcode_final", header=False, index=False)
        pd.DataFrame([[15, "s15", 1], [15, "s15", 1], [16, "s16", 2]]).to_excel(
            w, sheet_name="naming rule1", header=False, index=False)
        pd.DataFrame([[401, "anger1"], [502, "happy1"], [101, "disgust1"]]).to_excel(
            w, sheet_name="naming rule2", header=False, index=False)


def test_casme2_frame_folders_end_to_end(tmp_path):
    _casme2_sheet(tmp_path / "CASME_sq_gt.xlsx")
    root = tmp_path / "rawpic"
    write_frames(root / "s15" / "15_0401girlcrashing", [f"img{n}.jpg" for n in range(1, 41)])
    write_frames(root / "s16" / "16_0502funnyerrors", [f"img{n}.jpg" for n in range(1, 16)])
    write_frames(root / "s16" / "16_0101disgustingteeth", [f"img{n}.jpg" for n in range(1, 11)])  # no GT
    for where in (root, tmp_path):  # the rawpic folder itself or its parent
        ds = load_casme2(tmp_path / "CASME_sq_gt.xlsx", where)
        assert [v.video_id for v in ds.videos] == ["s15_0401", "s16_0101", "s16_0502"]
    v = ds.videos[0]
    assert v.n_frames == 40 and v.frames[9].name == "img10.jpg" and v.frames[10].name == "img11.jpg"
    assert all(cv2.imread(str(p)) is not None for p in v.frames)
    a, b, c = ds.intervals
    assert (a.onset, a.apex, a.offset, a.kind, a.emotion) == (4, 7, 11, MACRO, "negative")
    assert v.frames[a.onset].name == "img5.jpg"  # official number 5 is the file img5.jpg
    assert (b.onset, b.apex, b.offset) == (19, 24, 24) and b.raw["offset_missing"]
    assert (c.onset, c.apex, c.offset, c.kind) == (2, 5, 8, MICRO) and c.raw["apex_missing"]
    assert ds.by_video()["s16_0101"] == []
    b20 = load_casme2(tmp_path / "CASME_sq_gt.xlsx", root, missing_offset="onset+20").intervals[1]
    assert (b20.onset, b20.offset) == (19, 39)
    with pytest.raises(DatasetError, match="missing_offset"):
        load_casme2(tmp_path / "CASME_sq_gt.xlsx", missing_offset="guess")
    (root / "s15" / "15_0401girlcrashing" / "img3.jpg").unlink()
    (root / "s16" / "16_0502funnyerrors").rename(root / "s16" / "renamed")
    with pytest.raises(DatasetError, match="expected one folder"):
        load_casme2(tmp_path / "CASME_sq_gt.xlsx", root)


def _samm_sheet(path: Path, rows: list[list]) -> None:
    top = [["SAMM Long Videos Dataset - FACS Codes"], [], ["Symbol Key:"], ['"/" = or'], [], ["AU Help:"],
           ["L2 or R2", None, None, None, None, "NOTE: Subjects with Apex Frame not annotated were labelled as -1."],
           [], []]
    header = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
              "Action Units", "Notes"]
    table = [r + [None] * (10 - len(r)) for r in top] + [header] + rows
    pd.DataFrame(table).to_excel(path, sheet_name="FACS_Movement_Only", header=False, index=False)


def test_samm_frame_folders_end_to_end(tmp_path):
    _samm_sheet(tmp_path / "SAMM.xlsx", [
        ["006", "006_1_1", 1, 20.4, 35.6, 61.2, 41.8, "Macro", "4(B/C)+7B", None],
        ["006", "006_1_2", 1, 100, -1, 140, 41, "Micro - 1/2", "4", "While blinking"],
        ["007", "007_3_1", 3, 7, 9, 12, 6, "Micro - 1/2", "12", None]])
    root = tmp_path / "SAMM_longvideos"
    write_frames(root / "006_1", [f"006_1_{n:04d}.jpg" for n in range(1, 201)])
    write_frames(root / "007_3", [f"007_3_{n:04d}.jpg" for n in range(1, 51)])
    write_frames(root / "007_5", [f"007_5_{n:04d}.jpg" for n in range(1, 21)])  # no GT
    ds = load_samm(tmp_path / "SAMM.xlsx", root)
    assert [v.video_id for v in ds.videos] == ["006_1", "007_3", "007_5"]
    assert ds.videos[0].n_frames == 200 and ds.videos[0].fps == 200 and ds.subjects() == ["006", "007"]
    a, b, c = ds.intervals
    assert (a.onset, a.apex, a.offset) == (19, 35, 60) and a.aus == ("4(B/C)", "7B")
    assert ds.videos[0].frames[a.onset].name == "006_1_0020.jpg"
    assert (b.onset, b.apex, b.offset, b.kind) == (99, 119, 139, MICRO) and b.raw["apex_missing"]
    ds7 = load_samm(tmp_path / "SAMM.xlsx", root, downsample=7)
    v7 = ds7.videos[0]
    assert v7.n_frames == 29 and v7.fps == pytest.approx(200 / 7) and v7.frames[1].name == "006_1_0008.jpg"
    a7 = ds7.intervals[0]
    assert (a7.onset, a7.apex, a7.offset) == (3, 5, 9)  # 19/7, 35/7, 60/7 rounded
    assert v7.frames[a7.onset].name == "006_1_0022.jpg"  # nearest kept frame to official 20.4
    with pytest.raises(DatasetError, match="downsample"):
        load_samm(tmp_path / "SAMM.xlsx", downsample=0)
    (root / "007").mkdir()  # also nested per subject: 007/007_3/
    (root / "007_3").rename(root / "007" / "007_3")
    nested = load_samm(tmp_path / "SAMM.xlsx", root)
    assert nested.intervals == ds.intervals and nested.videos[1].frames[0].parent.name == "007_3"
    (root / "007" / "007_3").rename(root / "007" / "other")
    with pytest.raises(DatasetError, match="no frame folder 007_3"):
        load_samm(tmp_path / "SAMM.xlsx", root)


def test_casme3_original_layout_with_gaps(tmp_path):
    root = tmp_path / "part_A"
    numbers = [n for n in range(100, 161) if not 130 <= n <= 134]  # starts at 100, frames 130..134 missing
    write_frames(root / "spNO.1" / "a" / "color", [f"{n}.jpg" for n in numbers])
    write_frames(root / "spNO.1" / "b" / "color", [f"{n}.jpg" for n in range(1, 31)])  # no GT
    write_frames(root / "spNO.2" / "c" / "color", [f"{n}.jpg" for n in range(0, 12)])
    pd.DataFrame([["spNO.1", "A", 105, 110, 128, "4+7", "Macro-expression", "anger"],
                  ["spNO.1", "a", 129, 132, 140, "12", "Micro-expression", "happy"],
                  ["spNO.2", "c", 2, 0, 8, "1+2", "Micro-expression", "surprise"]],
                 columns=["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Expression type", "emotion"]
                 ).to_excel(tmp_path / "CAS(ME)3_part_A_v2.xlsx", index=False)
    ds = load_casme3(tmp_path / "CAS(ME)3_part_A_v2.xlsx", root)
    assert [v.video_id for v in ds.videos] == ["spNO.1_a", "spNO.1_b", "spNO.2_c"]
    v = ds.videos[0]
    assert v.n_frames == 56 and v.frames[0].name == "100.jpg" and v.frames[30].name == "135.jpg"
    a, b, c = ds.intervals
    assert (a.onset, a.apex, a.offset, a.kind, a.emotion, a.aus) == (5, 10, 28, MACRO, "anger", ("4", "7"))
    assert v.frames[a.offset].name == "128.jpg"
    assert (b.onset, b.apex, b.offset, b.kind) == (29, 30, 35, MICRO)  # apex 132 is in the gap -> next file 135
    assert v.frames[b.offset].name == "140.jpg"
    assert (c.onset, c.apex, c.offset) == (2, 5, 8) and c.raw["apex_missing"]  # numbering from 0 here
    assert ds.videos[2].frames[c.onset].name == "2.jpg"


def test_casme3_lgsnet_with_frames(tmp_path):
    root = tmp_path / "part_A"
    write_frames(root / "spNO.1" / "a" / "color", [f"{n}.jpg" for n in range(50, 90) if n != 60])
    write_frames(root / "spNO.1" / "d" / "color", [f"{n}.jpg" for n in range(1, 5)])
    (tmp_path / "cas3.csv").write_text(
        "subject,video,type,type_idx,startFrame,endFrame,frame_num,length\n"
        "001,/home/x/new_data_full_reduce/001/a,Macro,1,3,30,39,27\n"
        "001,/home/x/new_data_full_reduce/001/a,Micro,2,31,36,39,5\n")
    ds = load_casme3_lgsnet(tmp_path / "cas3.csv", root)
    assert [v.video_id for v in ds.videos] == ["spNO.1_a", "spNO.1_d"]
    a, b = ds.intervals
    assert (a.onset, a.offset, b.onset, b.offset, b.kind) == (2, 29, 30, 35, MICRO)
    assert ds.videos[0].frames[a.onset].name == "52.jpg" and ds.videos[0].frames[a.offset].name == "80.jpg"


def _native(tmp_path: Path) -> Path:
    out = tmp_path / "synth"
    out.mkdir()
    for k in range(4):
        vid = f"synth_{k:03d}"
        (out / f"{vid}.mp4").write_bytes(b"\x00")
        (out / f"{vid}.json").write_text(json.dumps({
            "video_id": vid, "subject": f"face{k % 3}", "fps": 30.0, "n_frames": 600, "source_face": "a.jpg",
            "seed": k, "intervals": [
                {"onset": 30, "apex": 40, "offset": 60, "kind": "macro", "emotion": "happiness", "aus": [6, 12]},
                {"onset": 200, "apex": 205, "offset": 210, "kind": "micro", "emotion": "surprise", "aus": [1, 2]}]}))
    return out


def test_native_layout_point_labels_and_loso(tmp_path):
    out = _native(tmp_path)
    ds = load_native(out)
    assert ds.counts() == {"macro": 4, "micro": 4} and ds.subjects() == ["face0", "face1", "face2"]
    assert ds.videos[0].frames == out / "synth_000.mp4" and ds.videos[0].n_frames == 600
    iv = ds.intervals[0]
    assert (iv.onset, iv.apex, iv.offset, iv.kind, iv.emotion, iv.aus) == (30, 40, 60, MACRO, "happiness", ("6", "12"))
    gt = load_native_annotations(out)
    assert sorted(gt) == [v.video_id for v in ds.videos] and len(gt["synth_001"]) == 2

    points = point_labels(ds.intervals, "random", seed=3)
    assert all(i.onset <= p <= i.offset for i, p in zip(ds.intervals, points))
    assert points == point_labels(ds.intervals, "random", seed=3)
    assert point_labels(ds.intervals[::-1], "random", seed=3) == points[::-1]  # independent of order
    assert any(point_labels(ds.intervals, "random", seed=s) != points for s in range(4, 8))
    assert point_labels(ds.intervals, "apex") == [i.apex for i in ds.intervals]

    folds = loso_folds(ds, n_val=1, seed=0)
    assert [f.test for f in folds] == [("face0",), ("face1",), ("face2",)]
    for f in folds:
        assert len(f.val) == 1 and not set(f.val) & set(f.train) and f.test[0] not in f.train + f.val
        assert set(f.train + f.val + f.test) == set(ds.subjects())

    (out / "synth_003.mp4").unlink()
    with pytest.raises(DatasetError, match="no video file"):
        load_native(out)
    (out / "synth_002.json").write_text('{"intervals": [{"onset": 9, "offset": 3, "kind": "macro"}]}')
    with pytest.raises(DatasetError, match="not a valid 0-based inclusive range"):
        load_native_annotations(out / "synth_002.json")


def test_loso_on_real_casme2():
    ds = load_casme2(need(ANN / "CASME_sq_gt.xlsx"))
    folds = loso_folds(ds, n_val=2, seed=1)
    assert len(folds) == 22 and sorted(f.test[0] for f in folds) == ds.subjects()
    assert all(len(f.train) == 19 and len(f.val) == 2 for f in folds)
    sub = ds.subset(folds[0].test)
    assert sub.subjects() == [folds[0].test[0]] and all(i.subject == folds[0].test[0] for i in sub.intervals)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="annotation file not found"):
        load_casme2(tmp_path / "nope.xlsx")
    pd.DataFrame([[1, 2]]).to_excel(tmp_path / "wrong.xlsx", sheet_name="other", header=False, index=False)
    with pytest.raises(DatasetError, match="sheet 'CASFEcode_final' missing"):
        load_casme2(tmp_path / "wrong.xlsx")
    with pytest.raises(DatasetError, match="header"):
        load_samm(tmp_path / "wrong.xlsx")
    _samm_sheet(tmp_path / "s.xlsx", [["006", "006_1_1", 1, 5, 6, 7, 3, "Giant", "4", None]])
    with pytest.raises(DatasetError, match="unknown expression type 'Giant'"):
        load_samm(tmp_path / "s.xlsx")
    _samm_sheet(tmp_path / "s.xlsx", [["006", "006_1_1", 1, 5, 6, 7, 3, "Macro", "4", None]])
    (tmp_path / "frames" / "006_1").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no numbered images"):
        load_samm(tmp_path / "s.xlsx", tmp_path / "frames")
    with pytest.raises(DatasetError, match="not found"):
        load_native(tmp_path / "missing")
