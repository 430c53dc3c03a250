"""The per-frame table (stream/table.py): columns, head pose, when rows are written, no face, quoting."""
import math

import numpy as np
import pandas as pd
import pytest

from fes_live.stream.face import BLENDSHAPE_NAMES, Face, FaceResult, FaceState
from fes_live.stream.table import COLUMNS, MAX_HELD, POSE_COLUMNS, FrameTable, head_pose


def rot(yaw=0.0, pitch=0.0, roll=0.0, scale=1.0, t=(0.0, 0.0, 0.0)):
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = scale * rz @ ry @ rx
    m[:3, 3] = t
    return m


def faces(i, present=True):
    if not present:
        return FaceResult(FaceState.NONE, None, [])
    lm = np.stack([np.arange(478) + i, np.arange(478) * 0.5, np.zeros(478)], axis=1).astype(np.float32)
    face = Face(3, lm, np.linspace(0, 1, 52, dtype=np.float32), rot(10, -5, 3, t=(1, 2, -30)).astype(np.float32),
                (0, 0, 10, 10), np.eye(2, 3, dtype=np.float32), np.zeros((224, 224, 3), np.uint8))
    return FaceResult(FaceState.TRACKED, face, [face])


def intensity(frames, levels=True):
    data = {"frames": list(frames), "values": [f / 1000 for f in frames], "apex_probs": [[0.25, 0.75]] * len(frames)}
    if levels:  # absent from journals written before the expression level
        data["levels"] = [f / 100 for f in frames]
    return {"type": "intensity", "data": data}


def expression(onset, offset, kind="macro", emotion="happiness", score=0.9, track=0):
    pt = lambda f: {"frame": f, "pts_s": f / 30, "wall_s": None}
    return {"type": "expression", "data": {"track": track, "onset": pt(onset), "apex": pt(onset), "offset": pt(offset),
                                           "kind": kind, "emotion": emotion, "score": score}}


def test_head_pose_reads_yaw_pitch_roll_and_translation():
    assert head_pose(rot(20, -10, 5, scale=2.0, t=(1, -2, -40))) == pytest.approx((20, -10, 5, 1, -2, -40), abs=1e-6)
    assert head_pose(np.eye(4)) == pytest.approx((0,) * 6)


def test_columns_rows_and_expression_membership(tmp_path):
    path = tmp_path / "t.csv"
    table = FrameTable(path, fps=30.0, horizon_s=2.0)  # rows wait until the detector is 60 frames past them
    for i in range(100):
        table.add(i, i / 30, faces(i, present=not 40 <= i < 45))
        if i >= 8:  # the detector reports I(t) 8 frames late
            table.on_event(intensity([i - 8], levels=i != 20))
        if i == 50:
            table.on_event(expression(10, 20))
            table.on_event(expression(15, 17, kind="micro", emotion="disgust, strong", score=0.95, track=-1))
        if i == 80:
            assert table.rows == 72 - 60 + 1  # frames 0..12: the detector has scored frame 72
    table.on_event(intensity(range(92, 100)))  # the flush at the end
    assert table.close() == 100 and table.face_frames == 95 and not table.no_face
    df = pd.read_csv(path)
    assert tuple(df.columns) == COLUMNS and len(COLUMNS) == 5 + 6 + 956 + 52 + 4 + 5
    assert list(df["frame"]) == list(range(100)) and df["timestamp_s"][30] == pytest.approx(1.0)
    row = df.iloc[7]
    assert (row["face_id"], row["face_present"], row["face_state"]) == (3, 1, "tracked")
    assert [row[c] for c in POSE_COLUMNS] == pytest.approx([10, -5, 3, 1, 2, -30], abs=1e-3)
    assert (row["x_5"], row["y_5"], row["x_477"]) == (12.0, 2.5, 484.0)
    assert row[BLENDSHAPE_NAMES[0]] == 0.0 and row[BLENDSHAPE_NAMES[-1]] == 1.0
    assert (row["intensity"], row["apex_macro"], row["apex_micro"], row["level"]) == (0.007, 0.25, 0.75, 0.07)
    assert math.isnan(df.iloc[12]["level"]) and df.iloc[12]["intensity"] == 0.012  # an event without levels
    gap = df.iloc[42]
    assert gap["face_present"] == 0 and gap["face_state"] == "none" and math.isnan(gap["x_0"])
    assert df["intensity"].notna().all()
    kinds = df.set_index("frame")["expression_kind"]
    assert kinds.loc[10:14].tolist() == ["macro"] * 5 and kinds.loc[15:17].tolist() == ["micro"] * 3  # best score
    assert kinds.loc[18:20].tolist() == ["macro"] * 3 and kinds.drop(range(10, 21)).isna().all()
    assert df.set_index("frame")["expression_emotion"][16] == "disgust, strong"  # quoted
    with pytest.raises(FileExistsError):  # never appends to or replaces an earlier table
        FrameTable(path, fps=30.0)


def test_rows_are_bounded_when_the_detector_is_silent(tmp_path):
    table = FrameTable(tmp_path / "t.csv", fps=30.0)
    for i in range(MAX_HELD + 5):
        table.add(i, i / 30, faces(i, present=False))
    assert table.rows == 5  # no intensity ever came: the oldest rows go out without it
    table.close()
    df = pd.read_csv(tmp_path / "t.csv", usecols=["frame", "intensity"])
    assert len(df) == MAX_HELD + 5 and df["intensity"].isna().all() and table.no_face
