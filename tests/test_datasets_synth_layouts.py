"""fes-synth's dataset layouts read back through the real adapters: what the generator wrote is what we load."""
from __future__ import annotations

import json

import pytest

from conftest import DATA, FACE_MODEL, need
from fes_live.train.datasets import load_casme2, load_native, load_native_annotations, load_samm

synth = pytest.importorskip("fes_live.train.synth")
FACE = DATA / "images" / "pyfeat_single_face.jpg"


def run_synth(out, *extra: str) -> None:
    need(FACE_MODEL)
    rc = synth.main(["--face", str(need(FACE)), "--out", str(out), "--size", "96x72", "--seed", "3",
                     "--macro-per-min", "30", "--micro-per-min", "30", "--face-model", str(FACE_MODEL), *extra])
    assert rc == 0


def native_truth(out) -> list[tuple[int, int, int, str]]:
    return sorted((i["onset"], i["apex"], i["offset"], i["kind"])
                  for p in out.glob("*.json") if p.name != "synth_manifest.json"
                  for i in json.loads(p.read_text())["intervals"])


def test_synth_casme2_and_native_layouts_agree(tmp_path):
    run_synth(tmp_path / "native", "--seconds", "8", "--videos", "2")
    run_synth(tmp_path / "casme2", "--seconds", "8", "--videos", "2", "--layout", "casme2")
    native = load_native(tmp_path / "native")
    truth = native_truth(tmp_path / "native")
    assert truth, "the generator made no expression"
    assert sorted((i.onset, i.apex, i.offset, i.kind_name) for i in native.intervals) == truth
    assert sum(len(v) for v in load_native_annotations(tmp_path / "native").values()) == len(truth)

    sheet = next((tmp_path / "casme2").glob("*.xlsx"))
    c2 = load_casme2(sheet, tmp_path / "casme2")
    assert len(c2.videos) == 2 and all(v.n_frames == 240 for v in c2.videos)
    # same seed, same timeline: the 1-based sheet comes back as the native 0-based intervals
    assert sorted((i.onset, i.apex, i.offset, i.kind_name) for i in c2.intervals) == truth


def test_synth_samm_layout_with_downsampling(tmp_path):
    run_synth(tmp_path, "--seconds", "12", "--fps", "200", "--videos", "1", "--layout", "samm")
    sheet = next(tmp_path.glob("*.xlsx"))
    ds = load_samm(sheet, tmp_path)
    assert ds.intervals and ds.videos[0].n_frames == 2400 and ds.videos[0].fps == 200
    assert all(0 <= i.onset <= i.apex <= i.offset < 2400 for i in ds.intervals)
    ds7 = load_samm(sheet, tmp_path, downsample=7)
    assert ds7.videos[0].n_frames == 343
    for full, low in zip(ds.intervals, ds7.intervals):
        assert (low.onset, low.offset) == (round(full.onset / 7), round(full.offset / 7))
