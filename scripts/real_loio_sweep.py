"""Post-hoc: the kept leave-one-identity-out fold models (`scripts/real_loio.sh` keeps them in runs/real_loio) re-run
on their held-out clips with other spotter settings (FEDN-only threshold, cross-window NMS, the talking gate).

This is selection on the reported folds, so its figures are optimistic; docs/real_dev.md quotes them as such. The
shipped engine's threshold is chosen nested instead (`fes-train real`, `select_threshold`). `.venv/bin/python scripts/real_loio_sweep.py [START_ENGINE] [FOLDS]`
"""
import itertools
import sys

import torch

from fes_live.models.fedn import FEDN, FEDNConfig
from fes_live.stream.config import from_dict
from fes_live.stream.engine import load_engine
from fes_live.train import real_eval, real_train


def main(start: str = "runs/start_engine", folds: str = "runs/real_loio") -> None:
    torch.set_num_threads(2)
    engine = load_engine(start, backend="export", device="cpu")
    clips, labels = real_train.load_clips(engine, real_eval.DEFAULT_DATA, real_eval.DEFAULT_CACHE,
                                          real_eval.DEFAULT_OVERRIDES, None)
    models = {}
    for c in clips:
        ckpt = torch.load(f"{folds}/{c.identity}.pt", weights_only=True)
        models[c.name] = FEDN(from_dict(FEDNConfig, ckpt["config"]))
        models[c.name].load_state_dict(ckpt["state_dict"])
        models[c.name].eval()
    roles = {c.name: "scored" for c in clips}
    for threshold, nms, talking in itertools.product((0.5, 0.6, 0.7, 0.8), (0.5, 0.3), (False, True)):
        spotter = {**real_train.spotter_overrides(real_train.RealTrainConfig(fedn_only_threshold=threshold)),
                   "fedn_decode": {"nms_iou": nms}, "talking": {"enabled": talking}}
        scores = {c.name: real_eval.score_clip(labels[c.name], real_eval.run_engine(
            engine, c.feats, fedn=real_train.fedn_runner(models[c.name]), spotter=spotter)["events"], "scored")
            for c in clips}
        t = real_eval.totals(scores, roles)
        print(f"threshold {threshold} nms {nms} talking gate {talking}: recall {t['recall_03']:.2f} precision "
              f"{t['precision']:.2f} TP {t['tp']} FP {t['fp']} talking FA/min {t['nuisance']['talking']['fa_per_min']:.1f} "
              f"blink FA/min {t['nuisance']['blink']['fa_per_min']:.1f} emotion {t['emotion_acc']:.2f}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
