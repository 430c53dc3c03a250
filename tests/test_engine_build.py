"""AOTInductor packages, built in the background (a detector switches to them once they exist) or on demand.

Both tests need the same tiny GIM compiled (about 30 s of CPU here): the background build compiles it for
real, in its child process, and the on-demand test reuses that package instead of compiling it a second time."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from fes_live.models.gim import GIM, GIMConfig
from fes_live.stream.detect import Detector
from fes_live.stream.engine import EngineError, aoti_name, compile_aoti, load_engine, read_manifest
from fes_live.stream.engine_build import LOCK, build, missing_packages, start_background_build
from fes_live.stream.pipeline_config import DetectConfig, Endpoints
from fes_live.train.export import export
from test_engine_export import checkpoint, copy


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A GIM-only engine, exported once for the module."""
    torch.manual_seed(2)
    cfg = GIMConfig(dim=8, heads=2, dim_head=4, mlp_dim=16)
    tmp = tmp_path_factory.mktemp("small")
    return export([checkpoint(tmp / "gim.ckpt", "gim", GIM(cfg).eval(), cfg)], tmp / "engine")


@pytest.fixture
def small_engine(exported, tmp_path):
    """Each test's own copy (the tests build packages and locks into it)."""
    return copy(exported, tmp_path)


@pytest.fixture(scope="module")
def built():
    """The package the background build compiled, kept for the on-demand test (empty if that test did not run)."""
    return {}


@pytest.mark.slow
def test_background_build_then_upgrade(small_engine, tmp_path, built, monkeypatch):
    # the build child compiles for real, with torch's cheapest settings: scalar kernels (no vector ISA probing and
    # vector codegen) in one process (no compile worker pool): about 30 s of CPU instead of 45 here on a fresh
    # inductor cache, same mechanism
    monkeypatch.setenv("TORCHINDUCTOR_VEC_ISA_OK", "0")
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")
    engine = load_engine(small_engine, device="cpu")
    assert engine.backend.startswith("eager")  # until the packages exist
    assert missing_packages(small_engine, engine.manifest) == ["gim"]
    w = np.random.default_rng(0).normal(size=(5, 17, 12, 2)).astype(np.float32)
    before = engine.gim(w)
    det = Detector(DetectConfig(endpoints=Endpoints(features=f"ipc://{tmp_path}/f", events=f"ipc://{tmp_path}/e",
                                                    replay=f"ipc://{tmp_path}/r", preview="")), engine)
    det.engine_build = start_background_build(small_engine)
    assert det.engine_build is not None
    assert det.engine_build.wait(timeout=600) == 0
    assert missing_packages(small_engine, engine.manifest) == []
    assert start_background_build(small_engine) is None  # nothing left to do
    det._poll_engine_build()  # what the detector's loop does: switch between two frames
    det.close()
    assert engine.backend.startswith("aoti") and det.engine_build is None
    for a, b in zip(engine.gim(w), before):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert load_engine(small_engine, device="cpu").backend.startswith("aoti")  # later starts take it directly
    built["gim"] = small_engine / aoti_name("gim", "cpu")


@pytest.mark.slow
def test_aoti_compile_on_demand_then_auto_picks_it(small_engine, tmp_path, built, monkeypatch):
    """backend="aoti" compiles the missing package into the engine's cache and loads it; "auto" then takes it and
    agrees with eager. The compile itself is torch's: the background build's package of this same engine stands in
    for it where that test ran (the program handed to the compiler is still loaded and checked)."""
    if "gim" not in built:
        built["gim"] = compile_aoti(small_engine, read_manifest(small_engine), "gim", "cpu", out_dir=tmp_path)
    compiled = []

    def compile_(program, package_path):
        assert isinstance(program, torch.export.ExportedProgram)
        compiled.append(package_path)
        shutil.copyfile(built["gim"], package_path)
        return package_path

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", compile_)
    aoti = load_engine(small_engine, backend="aoti", device="cpu")
    assert not aoti.has_fedn and aoti.backend.startswith("aoti")
    assert compiled == [str(small_engine / aoti_name("gim", "cpu"))]  # cached in the engine's folder
    monkeypatch.undo()
    auto = load_engine(small_engine, device="cpu")
    assert auto.backend.startswith("aoti") and not compiled[1:]
    w = np.random.default_rng(0).normal(size=(3, 17, 12, 2)).astype(np.float32)
    ref = load_engine(small_engine, backend="eager", device="cpu").gim(w)
    for a, b in zip(auto.gim(w), ref):
        assert np.allclose(a, b, atol=1e-5)


def test_a_running_build_is_not_started_twice(small_engine):
    (small_engine / LOCK).write_text("12345")
    assert start_background_build(small_engine) is None
    with pytest.raises(EngineError, match="another build"):
        build(small_engine)
    engine = load_engine(small_engine, device="cpu")
    assert not engine.upgrade("aoti") and engine.backend.startswith("eager")  # nothing built: stays
