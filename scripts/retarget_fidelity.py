"""How MediaPipe reads retargeted clips against their real sources: per channel, the correlation of the two
blendshape curves (each minus its own neutral median) and the median deviation at labelled expression apexes.

    .venv/bin/python scripts/retarget_fidelity.py runs/retarget [--out FILE.md]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES
from fes_live.stream.features import load_features
from fes_live.train import real_eval
from fes_live.train.synth_retarget import N_BLENDSHAPES, neutral_frames

CHANNELS = ("mouthSmileLeft", "browInnerUp", "browOuterUpLeft", "browDownLeft", "jawOpen", "mouthFunnel",
            "eyeBlinkLeft", "eyeSquintLeft", "eyeWideLeft", "mouthFrownLeft", "mouthPressLeft")


def deviation(feats: dict, events: list[dict]) -> np.ndarray:
    bs = feats["geometry"][:, :N_BLENDSHAPES]
    present = feats["face_present"].astype(bool)
    return bs - np.median(bs[neutral_frames(len(bs), present, events, bs)], axis=0)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--out", default="")
    args = p.parse_args()
    folder = Path(args.folder)
    manifest = json.loads((folder / "retarget_manifest.json").read_text())["videos"]
    labels, _ = real_eval.load_labels(real_eval.DEFAULT_DATA, real_eval.DEFAULT_OVERRIDES)
    fm = real_eval.find_face_model(real_eval.DEFAULT_DATA, None)
    version = real_eval.feature_code_version(fm)
    cols = [MEDIAPIPE_BLENDSHAPES.index(c) for c in CHANNELS]
    corr, apex_src, apex_rt, all_src, all_rt = [], [], [], [], []
    for stem, v in sorted(manifest.items()):
        path = folder / "features" / f"{stem}.npz"
        if not path.is_file():
            continue
        events = labels[v["clip"]]["events"]
        src = deviation(real_eval.clip_features(real_eval.DEFAULT_DATA / "clips" / f"{v['clip']}.mp4",
                                                real_eval.DEFAULT_CACHE, fm, version), events)
        rt = deviation(load_features(path), events)
        n = min(len(src), len(rt))
        src, rt = src[:n], rt[:n]
        all_src.append(src[:, cols])
        all_rt.append(rt[:, cols])
        corr.append([np.corrcoef(src[:, c], rt[:, c])[0, 1] if src[:, c].std() > 1e-6 and rt[:, c].std() > 1e-6
                     else np.nan for c in cols])
        for e in events:
            if real_eval.label_kind(e["type"]) == "expression" and e["end"] < n:
                seg = slice(int(e["start"]), int(e["end"]) + 1)
                k = int(np.argmax(np.abs(src[seg][:, cols]).sum(1)))
                apex_src.append(src[seg][k, cols])
                apex_rt.append(rt[seg][k, cols])
    lines = [f"{len(corr)} retargeted videos of {folder}", "",
             "| channel | correlation, median over videos | slope, retargeted on source | apex deviation, source "
             "(median) | retargeted |", "|---|---|---|---|---|"]
    corr = np.array(corr)
    a, b = np.concatenate(all_src), np.concatenate(all_rt)
    for j, c in enumerate(CHANNELS):
        slope = (a[:, j] * b[:, j]).sum() / max((a[:, j] ** 2).sum(), 1e-9)
        lines.append(f"| {c} | {np.nanmedian(corr[:, j]):.2f} | {slope:.2f} | "
                     f"{np.median(np.array(apex_src)[:, j]):+.2f} | {np.median(np.array(apex_rt)[:, j]):+.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
