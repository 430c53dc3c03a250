"""fes-bench scale's offline part: the spotter's own share of final latency on recorded features."""
import argparse

import numpy as np

from fes_live.benchmarks import scale
from fes_live.models.spotting import ExpressionUpdate
from fes_live.stream.engine import load_engine
from fes_live.stream.features import load_features


def test_spotter_lag_is_the_frames_from_each_offset_to_its_emission(smile_npz):
    args = argparse.Namespace(engine="", backend="eager")
    lag = scale.spotter_lag([smile_npz, smile_npz], args)
    # by hand: the same clip pushed frame by frame, each final event's emission frame minus its offset frame
    f = load_features(smile_npz)
    spotter = load_engine(None, backend="eager").new_spotter(scale.FPS)
    n, want = len(f["face_present"]), []
    for t in range(n + 1):
        ups = spotter.push(t, bool(f["face_present"][t]), f["geometry"][t], f["roi_flow"][t]) if t < n \
            else spotter.flush()
        want += [(min(t, n - 1) - u.proposal.offset) / scale.FPS for u in ups if isinstance(u, ExpressionUpdate)]
    assert want and lag["n"] == 2 * len(want)                      # the smile, once per clip given
    assert lag["max_s"] == round(max(want), 4) and lag["p50_s"] == round(float(np.percentile(want * 2, 50)), 4)
    assert all(w >= 0 for w in want)
