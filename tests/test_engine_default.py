"""The bundled default engine loads with no arguments, on the CPU, and spots a stream through its spotter."""
import numpy as np

from fes_live.stream.engine import DEFAULT_ENGINE, load_engine


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
