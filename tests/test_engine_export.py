"""fes-export -> stream.engine.load_engine: backends agree, bad engines fail with a clear EngineError."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fes_live.models.fedn import FEDN, FEDNConfig
from fes_live.models.gim import GIM, GIMConfig, GIMOutput
from fes_live.stream.config import to_dict
from fes_live.stream.engine import EngineError, load_engine, write_manifest
from fes_live.train.export import ExportError, export, main as export_main

GIM_CFG = GIMConfig(dim=16, heads=2, dim_head=8, mlp_dim=32)
FEDN_CFG = FEDNConfig(window=64, num_classes=3, backbone_hidden=32, backbone_dim=16, dim=16, head_dim=16, heads=2)


def checkpoint(path: Path, name: str, model, cfg, window: int = 17, feature_dim: int = 0) -> Path:
    torch.save({"model": name, "config": to_dict(cfg), "state_dict": model.state_dict(), "epoch": 3,
                "engine": {"fps": 30.0, "feature": "roi-flow" if name == "gim" else "geometry-minus-baseline",
                           "window": window, "stride": 16 if name == "fedn" else 1, "feature_dim": feature_dim,
                           "emotions": ["happiness", "surprise", "anger"], "spotter": {"fedn_stride": 16},
                           "thresholds": {}, "training_data": {"data": "test"}}}, path)
    return path


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("engine")
    g = checkpoint(root / "gim.ckpt", "gim", GIM(GIM_CFG).eval(), GIM_CFG)
    f = checkpoint(root / "fedn.ckpt", "fedn", FEDN(FEDN_CFG).eval(), FEDN_CFG, FEDN_CFG.window, FEDN_CFG.in_dim)
    out = root / "engine"
    assert export_main([str(g), str(f), "-o", str(out), "--log-level", "WARNING"]) == 0
    return out


def copy(engine_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "engine"
    shutil.copytree(engine_dir, dst)
    return dst


def test_manifest_contents(engine_dir):
    m = json.loads((engine_dir / "manifest.json").read_text())
    assert set(m["files"]) == {"gim.pt2", "fedn.pt2", "gim.pt", "fedn.pt"}
    assert m["models"]["gim"]["input_shape"] == [-1, 17, 12, 2]
    assert m["models"]["fedn"]["input_shape"] == [-1, 64, 1008]  # FEDN takes a batch of windows too
    assert m["window"] == {"gim": 17, "fedn": 64} and m["stride"]["fedn"] == 16 and m["fps"] == 30.0
    assert m["labels"]["emotions"] == ["happiness", "surprise", "anger"]
    assert m["models"]["gim"]["config"]["dim"] == 16


def test_backends_agree(engine_dir):
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(5, 17, 12, 2)).astype(np.float32)
    x = rng.normal(size=(1, 64, 1008)).astype(np.float32)
    exp = load_engine(engine_dir, backend="export")
    eager = load_engine(engine_dir, backend="eager")
    auto = load_engine(engine_dir)
    assert exp.backend.startswith("export") and eager.backend.startswith("eager")
    assert auto.backend.startswith("eager") and "aoti" in auto.backend  # says why aoti was skipped
    for a, b in zip(exp.gim(windows), eager.gim(windows)):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)
    i, p = exp.gim(windows[:1])
    assert i.shape == (1,) and p.shape == (1, 2) and (0 <= p).all() and (p <= 1).all()
    fa, fb = exp.fedn(x), eager.fedn(x)
    assert fa.cls_logits.shape[0] == 1 and fa.intervals.shape[-1] == 2
    assert np.allclose(fa.cls_logits, fb.cls_logits, atol=1e-4) and np.allclose(fa.intervals, fb.intervals, atol=1e-3)
    with pytest.raises(ValueError, match="GIM input"):
        exp.gim(np.zeros((2, 9, 12, 2), np.float32))


def test_auto_takes_eager_only_where_the_code_reproduces_the_exported_program(engine_dir, tmp_path, monkeypatch):
    """The probe written at export: eager first while this code computes what was exported; once the model code
    changes (here GIM's forward, by 1%), auto falls back to the exported program and says why; an engine exported
    before probes existed keeps the old order (export first)."""
    m = json.loads((engine_dir / "manifest.json").read_text())
    assert all(len(entry["probe"]) == len(entry["outputs"]) for entry in m["models"].values())
    assert load_engine(engine_dir).backend.startswith("eager")
    forward = GIM.forward
    monkeypatch.setattr(GIM, "forward", lambda self, x: GIMOutput(*(1.01 * t for t in forward(self, x))))
    drifted = load_engine(engine_dir)
    assert drifted.backend.startswith("export") and "does not reproduce the exported program" in drifted.backend
    monkeypatch.undo()
    old = copy(engine_dir, tmp_path)
    for entry in m["models"].values():
        del entry["probe"]
    write_manifest(old, m)
    assert load_engine(old).backend.startswith("export")


def test_new_spotter_runs_a_stream(engine_dir):
    engine = load_engine(engine_dir, backend="export")
    spotter = engine.new_spotter()
    assert spotter.cfg.fedn_window == 64 and spotter.cfg.fps == 30.0
    rng = np.random.default_rng(1)
    updates = []
    for t in range(100):
        updates += spotter.push(t, True, rng.normal(size=1008).astype(np.float32),
                                rng.normal(0, 0.1, size=(12, 2)).astype(np.float32))
    updates += spotter.flush()
    assert sum(type(u).__name__ == "IntensityUpdate" for u in updates) == 100


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(EngineError, match="not found"):
        load_engine(tmp_path / "nope")
    with pytest.raises(EngineError, match="manifest.json: missing"):
        load_engine(tmp_path)


def test_corrupt_program_named(engine_dir, tmp_path):
    eng = copy(engine_dir, tmp_path)
    (eng / "gim.pt2").write_bytes(b"garbage")
    with pytest.raises(EngineError, match=r"gim\.pt2: sha256 .* does not match"):
        load_engine(eng)
    m = json.loads((eng / "manifest.json").read_text())
    write_manifest(eng, m)  # digest now matches the garbage: the load itself must fail, naming the file
    with pytest.raises(EngineError, match=r"gim\.pt2: cannot load the exported program"):
        load_engine(eng, backend="export")


def test_missing_file_named(engine_dir, tmp_path):
    eng = copy(engine_dir, tmp_path)
    (eng / "fedn.pt").unlink()
    with pytest.raises(EngineError, match=r"fedn\.pt: missing"):
        load_engine(eng)


def test_bad_manifest(engine_dir, tmp_path):
    eng = copy(engine_dir, tmp_path)
    (eng / "manifest.json").write_text("{not json")
    with pytest.raises(EngineError, match="not valid JSON"):
        load_engine(eng)
    m = json.loads((engine_dir / "manifest.json").read_text())
    m["format_version"] = 99
    (eng / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(EngineError, match="format_version"):
        load_engine(eng)


def test_mismatched_shape_and_config(engine_dir, tmp_path):
    eng = copy(engine_dir, tmp_path)
    m = json.loads((engine_dir / "manifest.json").read_text())
    m["models"]["gim"]["input_shape"] = [-1, 17, 10, 2]  # the program was exported for 12 ROIs
    (eng / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(EngineError, match=r"gim\.pt2: does not run on the manifest's input shape"):
        load_engine(eng, backend="export")
    m = json.loads((engine_dir / "manifest.json").read_text())
    m["models"]["gim"]["config"]["dim"] = 32  # weights are 16-wide
    (eng / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(EngineError, match="gim: weights do not fit the config"):
        load_engine(eng, backend="eager")


def test_unknown_backend_and_missing_trt(engine_dir):
    with pytest.raises(EngineError, match="unknown backend"):
        load_engine(engine_dir, backend="onnx")
    with pytest.raises(EngineError, match="tensorrt backend needs a CUDA device"):
        load_engine(engine_dir, backend="tensorrt", device="cpu")


def test_export_errors(tmp_path):
    with pytest.raises(ExportError, match="not found"):
        export([tmp_path / "x.pt"], tmp_path / "e")
    torch.save({"foo": 1}, tmp_path / "bad.pt")
    with pytest.raises(ExportError, match="not a fes-train checkpoint"):
        export([tmp_path / "bad.pt"], tmp_path / "e")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ExportError, match="not a readable checkpoint"):
        export([tmp_path / "junk.pt"], tmp_path / "e")


@pytest.mark.gpu
def test_tensorrt_backend(engine_dir, tmp_path):
    pytest.importorskip("torch_tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    eng = copy(engine_dir, tmp_path)
    trt = load_engine(eng, backend="tensorrt")
    ref = load_engine(eng, backend="eager", device="cpu")
    w = np.random.default_rng(0).normal(size=(8, 17, 12, 2)).astype(np.float32)
    assert np.allclose(trt.gim(w)[0], ref.gim(w)[0], atol=2e-2)  # FP16
