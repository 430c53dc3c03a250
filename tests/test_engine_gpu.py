"""The bundled engine on a CUDA device through AOTInductor, batched as the detector batches (skipped without CUDA)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fes_live.stream.batching import StepBatcher
from fes_live.stream.engine import DEFAULT_ENGINE, load_engine

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_aoti_cuda_agrees_with_the_cpu_and_batches():
    gpu = load_engine(DEFAULT_ENGINE, backend="aoti", device="cuda")  # compiles and caches it when missing
    cpu = load_engine(DEFAULT_ENGINE, backend="eager", device="cpu")
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (256, 17, 12, 2)).astype(np.float32)
    for a, b in zip(gpu.gim(w), cpu.gim(w)):
        np.testing.assert_allclose(a, b, atol=2e-3)
    x = rng.normal(0, 0.05, (8, *cpu.manifest["models"]["fedn"]["input_shape"][1:])).astype(np.float32)
    for a, b in zip(gpu.fedn_batch(x), cpu.fedn_batch(x)):
        np.testing.assert_allclose(a, b, atol=2e-3)
    batcher = StepBatcher.for_engine(gpu)
    spotters = [gpu.new_spotter() for _ in range(64)]
    geometry = rng.normal(0, 0.02, (64, cpu.spotter_config().geometry_dim)).astype(np.float32)
    for t in range(40):
        flow = rng.normal(0, 1, (64, 12, 2)).astype(np.float32)
        out = batcher.run([sp.steps(t, True, geometry[i], flow[i]) for i, sp in enumerate(spotters)])
        assert all(isinstance(o, list) for o in out)
    assert batcher.calls["gim"] < batcher.items["gim"] / 32  # 64 streams' windows per call
