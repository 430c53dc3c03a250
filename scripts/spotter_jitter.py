"""The spotter against a FEDN whose intervals are exact but for noise: random streams of expressions (12-290 frames,
8-80 apart, after the neutral baseline's warm-up), each window's interval boundaries moved by up to JITTER frames
either way (none at a window's own edge) and its class changed with probability FLIP. Printed: how many expressions
come out as no event (none at IoU >= 0.5), as two, and how many events match none. docs/real_dev.md quotes it
("A real clip from outside", "Long smiles in conversation"); no model, no data: the spotter's own rules only.

    .venv/bin/python scripts/spotter_jitter.py [--streams 40] [--jitter 4] [--flip 0.15]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_models_online import curve_gim, video  # noqa: E402  (the unit tests' GIM double and feature layout)

from fes_live.models.online import OnlineSpotter, SpotterConfig, spot_video  # noqa: E402
from fes_live.train.real_eval import iou  # noqa: E402


def noisy_fedn(rng: np.random.Generator, jitter: int, flip: float):
    """One interval per run of frames whose blendshape-0 delta is > 0.5 (up to 4), its boundaries moved by up to
    `jitter` frames, its class 1 instead of 2 with probability `flip`."""
    def fn(x):
        on = np.r_[0, (x[0, :, 0] > 0.5).astype(int), 0]
        edges = np.flatnonzero(np.diff(on)).reshape(-1, 2)[:4]
        logits = np.full((1, 4, 3), -9.0, np.float32)
        iv = np.zeros((1, 4, 2), np.float32)
        last = x.shape[1] - 1
        for k, (a, b) in enumerate(edges):
            b -= 1
            a = a if a == 0 else int(np.clip(a + rng.integers(-jitter, jitter + 1), 0, last))
            b = b if b == last else int(np.clip(b + rng.integers(-jitter, jitter + 1), a, last))
            logits[0, k, 1 if rng.random() < flip else 2] = 4.0
            iv[0, k] = (a, b)
        return logits, iv
    return fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=40)
    ap.add_argument("--jitter", type=int, default=4)
    ap.add_argument("--flip", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    T = 900
    curve, apex = np.zeros(T, np.float32), np.zeros((T, 2), np.float32)
    n = lost = twice = unmatched = 0
    for stream in range(args.streams):
        marker, runs = np.zeros(T, bool), []
        t = int(rng.integers(60, 120))
        while t < T - 20:
            end = min(T, t + int(rng.integers(12, 290)))
            runs.append((t, end - 1))
            marker[t:end] = True
            t = end + int(rng.integers(8, 80))
        fedn = noisy_fedn(np.random.default_rng(stream), args.jitter, args.flip)
        got = [(p.onset, p.offset) for p in spot_video(OnlineSpotter(curve_gim, fedn, SpotterConfig()),
                                                       video(curve, apex, marker=marker))]
        n += len(runs)
        for r in runs:
            k = sum(1 for g in got if iou(g, r) >= 0.5)
            lost += k == 0
            twice += k > 1
        unmatched += sum(1 for g in got if not any(iou(g, r) >= 0.5 for r in runs))
    print(f"jitter {args.jitter} flip {args.flip}: {n} expressions in {args.streams} streams; no event {lost}, "
          f"two events {twice}; events matching none {unmatched}")


if __name__ == "__main__":
    main()
