"""Explicit batching (stream/batching.py): many spotters' model requests answered by one call per model per round,
with exactly the updates each spotter gives alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fes_live.models.spotting import ExpressionUpdate, IntensityUpdate
from fes_live.stream.batching import StepBatcher, bucket, padded_call
from fes_live.stream.engine import DEFAULT_ENGINE, load_engine


def test_bucket_and_padding_cut_back_to_the_real_batch():
    assert [bucket(n, (1, 2, 4, 8)) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 9]
    seen = []

    def fn(x):
        seen.append(len(x))
        return x.sum(axis=1), x[:, :1] * 2

    x = np.arange(22, dtype=np.float32).reshape(11, 2)
    a, b = padded_call(fn, x, (1, 2, 4))
    assert seen == [4, 4, 4]  # 11 = 4 + 4 + 3 (padded to 4): only bucket shapes reach the engine
    np.testing.assert_array_equal(a, x.sum(axis=1))
    np.testing.assert_array_equal(b, x[:, :1] * 2)
    a, _ = padded_call(fn, x, None)
    assert seen[-1] == 11 and len(a) == 11


def streams(n_streams: int, n_frames: int, geometry_dim: int):
    """Random but smooth feature streams with face gaps, so GIM pieces, FEDN windows and track ends all occur."""
    rng = np.random.default_rng(7)
    out = []
    for k in range(n_streams):
        t = np.arange(n_frames)[:, None]
        geometry = (0.05 * np.sin(t / (7 + k)) + 0.01 * rng.normal(size=(n_frames, geometry_dim))).astype(np.float32)
        flow = (2.0 * np.sin(t[:, :, None] / (5 + k)) * rng.normal(size=(1, 12, 2))).astype(np.float32)
        face = np.ones(n_frames, bool)
        face[100 + 10 * k:110 + 10 * k] = False
        out.append((geometry, flow, face))
    return out


def signature(updates):
    """What the events are made of, rounded: batch size changes the last float bits of the engine's output."""
    out = []
    for u in updates:
        if isinstance(u, IntensityUpdate):
            out.append(("I", u.frame_index, round(u.intensity, 4)))
        elif isinstance(u, ExpressionUpdate):
            p = u.proposal
            out.append(("E", p.onset, p.offset, p.kind, p.emotion, u.track))
        else:
            out.append((type(u).__name__, u.frame_index, u.track))
    return out


@pytest.fixture(scope="module")
def default_engine():
    """The bundled engine on its exported programs, loaded once for the module (seconds per load)."""
    if not (DEFAULT_ENGINE / "manifest.json").is_file():
        pytest.skip("no bundled engine")
    torch.set_num_threads(1)
    return load_engine(DEFAULT_ENGINE, backend="export")


def test_step_batcher_gives_each_stream_exactly_its_own_updates(default_engine):
    engine = default_engine
    data = streams(4, 200, engine.spotter_config().geometry_dim)
    alone = []
    for geometry, flow, face in data:
        sp = engine.new_spotter()
        ups = [u for t in range(len(face)) for u in sp.push(t, face[t], geometry[t], flow[t])] + sp.flush()
        alone.append(signature(ups))

    batcher = StepBatcher.for_engine(engine)
    spotters = [engine.new_spotter() for _ in data]
    together = [[] for _ in data]
    for t in range(200):
        jobs = [sp.steps(t, face[t], geometry[t], flow[t]) for sp, (geometry, flow, face) in zip(spotters, data)]
        for acc, ups in zip(together, batcher.run(jobs)):
            acc += ups
    for acc, ups in zip(together, batcher.run([sp.flush_steps() for sp in spotters])):
        acc += ups
    assert [signature(t) for t in together] == alone
    assert any(u[0] == "I" for u in alone[0])
    # one call per model per round: 4 streams' windows shared every GIM call and FEDN call
    assert batcher.items["gim"] >= 3 * batcher.calls["gim"] > 0
    assert batcher.items["fedn"] >= 3 * batcher.calls["fedn"] > 0


def test_fedn_batch_equals_one_window_at_a_time(default_engine):
    engine = default_engine
    w, f = engine.manifest["models"]["fedn"]["input_shape"][1:]
    x = np.random.default_rng(0).normal(0, 0.05, (3, w, f)).astype(np.float32)
    batched = engine.fedn_batch(x)
    for i in range(3):
        one = engine.fedn(x[i:i + 1])
        for a, b in zip(batched, one):
            np.testing.assert_allclose(a[i:i + 1], b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="FEDN batch input"):
        engine.fedn_batch(x[0])


def test_a_bad_frame_fails_alone():
    """A ValueError inside one stream's push (frame index going back) is that job's result; the others go on."""
    calls = []

    def gim(w):
        calls.append(len(w))
        return np.zeros(len(w), np.float32), np.zeros((len(w), 2), np.float32)

    from fes_live.models.online import OnlineSpotter, SpotterConfig
    cfg = SpotterConfig()
    a, b = OnlineSpotter(gim, None, cfg), OnlineSpotter(gim, None, cfg)
    z = np.zeros(cfg.geometry_dim, np.float32), np.zeros((cfg.n_rois, 2), np.float32)
    batcher = StepBatcher(gim)
    for t in range(20):
        batcher.run([a.steps(t, True, *z), b.steps(t, True, *z)])
    res = batcher.run([a.steps(5, True, *z), b.steps(20, True, *z)])
    assert isinstance(res[0], ValueError) and isinstance(res[1], list)
    assert max(calls) == 2  # both streams' windows in one call
