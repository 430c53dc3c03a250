"""Engines on held-out synthetic videos: pooled MEGC F1 (train.evaluate.megc_f1) through each engine's own spotter.

    # the held-out identity of engine 0.2.0 (reports/default_engine), seed 1000, its first two videos
    .venv/bin/fes-synth --config configs/synth_default.json --seed 1000 --videos 2 --out runs/synth_test/synth30 \
        --face ../shared/data/images/2008_002506.jpg
    for v in runs/synth_test/synth30/*.mp4; do .venv/bin/fes-live extract $v -o runs/synth_test/features/$(basename $v .mp4).npz; done
    .venv/bin/python scripts/synth_heldout.py runs/synth_test/synth30 runs/synth_test/features ENGINE_DIR...
"""
import sys
from pathlib import Path

import torch

from fes_live.stream.engine import load_engine
from fes_live.stream.features import load_features
from fes_live.train.datasets import load_native
from fes_live.train.evaluate import megc_f1
from fes_live.train.train import spot_with_engine


def main(data: str, features: str, engines: list[str]) -> None:
    torch.set_num_threads(2)
    gt = load_native(Path(data)).by_video()
    for path in engines:
        engine = load_engine(path, backend="export", device="cpu")
        preds = {vid: spot_with_engine(engine, load_features(Path(features) / f"{vid}.npz")) for vid in gt}
        r = megc_f1(gt, preds)
        print(f"{path} v{engine.manifest['version']}: " + ", ".join(
            f"{k} F1 {r[k]['f1']:.3f} ({r[k]['tp']} TP)" for k in ("overall", "macro", "micro")))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
