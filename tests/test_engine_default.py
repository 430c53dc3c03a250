"""The bundled default engine loads with no arguments, on the CPU, and spots a stream through its spotter."""
import numpy as np
import pytest

from fes_live.stream.engine import DEFAULT_ENGINE, EngineError, load_engine


def test_default_engine_loads_and_runs():
    engine = load_engine()
    assert engine.folder == DEFAULT_ENGINE and engine.has_fedn
    m = engine.manifest
    assert m["fps"] == 30.0 and m["labels"]["kinds"] == ["macro", "micro"] and len(m["labels"]["emotions"]) == 5
    assert "gim_macro" in m["thresholds"] and m["training_data"]["gim"]["subjects"]["test"] == ["2008_002506"]
    assert sum(p.stat().st_size for p in DEFAULT_ENGINE.iterdir()) < 20 * 2 ** 20
    intensity, apex = engine.gim(np.zeros((4, 17, 12, 2), np.float32))
    assert intensity.shape == (4,) and apex.shape == (4, 2)
    spotter = engine.new_spotter()
    rng = np.random.default_rng(0)
    n = 0
    for t in range(60):
        n += len(spotter.push(t, True, rng.normal(0, 0.01, 1008).astype(np.float32),
                              rng.normal(0, 0.05, (12, 2)).astype(np.float32)))
    n += len(spotter.flush())
    assert n >= 60  # at least one IntensityUpdate per frame


def test_lab_engine_is_bundled_by_name_and_finds_micro_expressions(tmp_path):
    """`--engine lab` (real clips + synthetic videos of other people): small, found by its name, and on a fresh
    synthetic video (a seed no engine trained on) it finds the micro-expressions, which the real-clip default
    cannot learn from the dev set (it has none)."""
    import os
    import subprocess
    import sys

    from conftest import FACE_MODEL, REPO, VIDEO, need, scaled
    from fes_live.stream.config import from_dict
    from fes_live.stream.engine import engine_folder
    from fes_live.stream.features import load_features
    from fes_live.stream.pipeline_config import BUNDLED_ENGINES
    from fes_live.train import synth
    from fes_live.train.datasets import load_native
    from fes_live.train.evaluate import megc_f1
    from fes_live.train.train import spot_with_engine
    assert engine_folder("lab") == BUNDLED_ENGINES / "lab" and engine_folder(str(tmp_path)) == tmp_path
    with pytest.raises(EngineError, match="nosuch: engine folder not found .bundled engines, by name: default, lab"):
        load_engine("nosuch")
    lab = load_engine("lab", backend="export", device="cpu")
    assert lab.manifest["training_data"]["fedn"]["synthetic_videos"]
    assert sum(p.stat().st_size for p in lab.folder.iterdir()) < 20 * 2 ** 20
    cfg = from_dict(synth.SynthConfig, {"seconds": 12.0, "macro_per_min": 10, "micro_per_min": 20})
    face = synth.load_faces([str(need(VIDEO / "pyfeat_single_face.mp4"))], cfg, str(need(FACE_MODEL)))[0]
    rec = synth.generate([face], cfg, tmp_path / "set", videos=1, seed=9100)[0]
    micro = sum(e.kind == "micro" for e in rec.timeline.expressions)
    assert micro >= 2
    npz = tmp_path / "f.npz"
    env = dict(os.environ, FES_FACE_MODEL=str(FACE_MODEL), FES_NO_DOWNLOAD="1")
    subprocess.run([sys.executable, "-m", "fes_live.stream.cli", "extract", str(next((tmp_path / "set").glob("*.mp4"))),
                    "-o", str(npz), "--no-progress"], cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=scaled(300))
    gt = load_native(tmp_path / "set").by_video()
    r = megc_f1(gt, {rec.video_id: spot_with_engine(lab, load_features(npz))})
    assert r["micro"]["tp"] >= micro / 2, r["micro"]
