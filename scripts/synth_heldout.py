"""Engines on held-out synthetic videos, per condition: pooled MEGC F1 (train.evaluate.megc_f1, the official rule)
through each engine's own online spotter, and a markdown table.

    scripts/synth_sets.sh        # the test sets: two people in no training set, seed 7001 (runs/synth_sets)
    .venv/bin/python scripts/synth_heldout.py runs/synth_sets ENGINE_DIR... [--out reports/synthetic/heldout.md]

Conditions (folders of SETS): test30 (30 fps, the default config), test_talk (8 talking bouts a minute), test_head
(8 head movements a minute), test_crf36 (test30 through x264 at CRF 36), test200 (200 fps); features of each set in
SETS/features/<set>/<video_id>.npz.
"""
import argparse
import datetime
from pathlib import Path

import torch

from fes_live.stream.engine import load_engine
from fes_live.stream.features import load_features
from fes_live.train.datasets import load_native
from fes_live.train.evaluate import megc_f1
from fes_live.train.train import spot_with_engine

CONDITIONS = {"test30": "30 fps, default config", "test_talk": "8 talking bouts a minute",
              "test_head": "8 head movements a minute", "test_crf36": "x264 CRF 36", "test200": "200 fps"}
GOALS = {"test30": 0.85, "test_talk": 0.8, "test_head": 0.8, "test_crf36": 0.8, "test200": 0.8}


def score(engine, data: Path, features: Path) -> dict:
    gt = load_native(data).by_video()
    preds = {vid: spot_with_engine(engine, load_features(features / f"{vid}.npz")) for vid in gt}
    return megc_f1(gt, preds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sets", help="folder of the test sets (scripts/synth_sets.sh's runs/synth_sets)")
    p.add_argument("engines", nargs="+", help="engine folders")
    p.add_argument("--out", help="write the markdown table here too")
    args = p.parse_args()
    torch.set_num_threads(2)
    sets = Path(args.sets)
    names = [n for n in CONDITIONS if (sets / n).is_dir()]
    rows = []
    for path in args.engines:
        engine = load_engine(path, backend="export", device="cpu")
        for name in names:
            r = score(engine, sets / name, sets / "features" / name)
            cells = " | ".join(f"{r[k]['f1']:.3f} ({r[k]['tp']}/{r[k]['predictions']}/{r[k]['ground_truth']})"
                               for k in ("overall", "macro", "micro"))
            rows.append(f"| `{path}` v{engine.manifest['version']} | {name}: {CONDITIONS[name]} | {cells} | "
                        f">= {GOALS[name]} |")
            print(rows[-1], flush=True)
    gt = load_native(sets / names[0]) if names else None
    lines = ["# Held-out synthetic videos", "",
             f"Two people who are in no training set ({', '.join(sorted(gt.subjects())) if gt else '-'}), seed "
             f"7001, never used before; made by `scripts/synth_sets.sh`, scored by `scripts/synth_heldout.py` "
             f"({datetime.date.today().isoformat()}) through each engine's online spotter, every frame, MEGC "
             f"official rule (inclusive IoU >= 0.5, per class). Cells: F1 (TP / predictions / GT).", "",
             "| engine | condition | overall | macro | micro | goal (overall) |", "|---|---|---|---|---|---|", *rows, ""]
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines))
        print(f"-> {args.out}")


if __name__ == "__main__":
    main()
