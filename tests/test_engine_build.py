"""The background AOTInductor build: a detector on the exported program switches to the packages once they exist."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fes_live.models.gim import GIM, GIMConfig
from fes_live.stream.detect import Detector
from fes_live.stream.engine import EngineError, load_engine
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


@pytest.mark.slow
def test_background_build_then_upgrade(small_engine, tmp_path):
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


def test_a_running_build_is_not_started_twice(small_engine):
    (small_engine / LOCK).write_text("12345")
    assert start_background_build(small_engine) is None
    with pytest.raises(EngineError, match="another build"):
        build(small_engine)
    engine = load_engine(small_engine, device="cpu")
    assert not engine.upgrade("aoti") and engine.backend.startswith("eager")  # nothing built: stays
