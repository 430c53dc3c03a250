"""The ingest benchmark runs end to end on the real clip and reports every stage (a short run, not a timing)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from fes_live.benchmarks import ingest
from conftest import VIDEO, need


def test_ingest_benchmark_short_run(tmp_path, capsys):
    clip = need(VIDEO / "pyfeat_single_face.mp4")
    out = tmp_path / "bench.json"
    model = os.environ.get("FES_FACE_MODEL")
    assert ingest.main(["--clip", str(clip), "--frames", "90", "--warmup", "5", "--json", str(out),
                        *(["--face-model", model] if model else [])]) == 0
    text = capsys.readouterr().out
    assert "fps goal" in text and "decode" in text and "features" in text
    r = json.loads(Path(out).read_text())
    assert r["frames"] == 90 and r["face_frames"] >= 85  # the clip loops past its 72 frames
    assert r["frame_shape"] == [360, 640, 3]
    stages = r["ms_mean"]
    assert set(stages) == {"decode", "face", "features", "total"}
    assert all(v > 0 for v in stages.values())
    assert stages["total"] >= stages["face"] and r["fps"] > 1.0
    assert abs(r["ratio_to_goal"] - r["fps"] / 60.0) < 1e-9


def test_ingest_benchmark_missing_clip(tmp_path):
    assert ingest.main(["--clip", str(tmp_path / "none.mp4"), "--frames", "5"]) == 1
