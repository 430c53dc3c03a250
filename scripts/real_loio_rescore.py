"""Kept leave-one-identity-out fold models re-run on their held-out clips with other spotter settings (inference
only, nothing retrained): the figures at each FEDN-only threshold, and with the threshold chosen nested as
`fes-train real` chooses it (each fold's on the other folds).

    .venv/bin/python scripts/real_loio_rescore.py [--folds runs/real_loio] [--spotter '{"fedn_stride": 8}']
        [--data DIR --cache DIR]    # the same folds on other copies of the clips (docs/real_dev.md, "Webcam quality")
        [--soup runs/real_loio_s0 runs/real_loio_s2]   # each fold the average of its seeds' weights

docs/real_dev.md quotes it for settings that do not change the weights (FEDN window stride). Choosing among such
settings by these figures is selection on the reported folds.
"""
import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from fes_live.calibration.thresholds import merge_spotter
from fes_live.stream.engine import load_engine
from fes_live.train import real_eval, real_train

GRID = real_train.RealTrainConfig().select_threshold


def line(t: dict) -> str:
    n = t["nuisance"]
    return (f"recall {real_eval.fmt(t['recall_03'])} / {real_eval.fmt(t['recall_05'])} precision "
            f"{real_eval.fmt(t['precision'])} (TP {t['tp']} FP {t['fp']}; {t['duplicates']} duplicates: one-to-one "
            f"{real_eval.fmt(t['precision_one_to_one'])}) FA/min talking "
            f"{real_eval.fmt(n['talking']['fa_per_min'])} blink {real_eval.fmt(n['blink']['fa_per_min'])} gaze "
            f"{real_eval.fmt(n['gaze']['fa_per_min'])} emotion {real_eval.fmt(t['emotion_acc'])}" + apex(t) + timing(t))


def apex(t: dict) -> str:
    a = t.get("apex")
    return (f" apex from labelled peak p50 / p90 {real_eval.fmt(a['p50'])} / {real_eval.fmt(a['p90'])} s, "
            f"{real_eval.fmt(a['within_02'])} within 0.2 s" if a else "")


def timing(t: dict) -> str:
    m = t.get("timing")
    if not m:
        return ""
    f = real_eval.fmt
    return (f"\n    onsets {m['onsets']} ({f(m['onsets_per_min'], 1)}/min), {f(m['onsets_to_events'])} followed by "
            f"their event; found announced first {f(m['announced'])}; onset after labelled start p50 / p90 "
            f"{f(m['onset_delay_p50'])} / {f(m['onset_delay_p90'])} s; event after labelled end p50 / p90 / p99 "
            f"{f(m['final_delay_p50'])} / {f(m['final_delay_p90'])} / {f(m['final_delay_p99'])} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--start", default="runs/start_engine", help="the engine the folds were fine-tuned from")
    p.add_argument("--folds", default="runs/real_loio", help="<identity>.pt of `fes-train real --keep-folds`")
    p.add_argument("--spotter", default="{}",
                   help="JSON merged into every run's spotter config (sub-configs such as baseline one level deep)")
    p.add_argument("--data", default=str(real_eval.DEFAULT_DATA),
                   help="a real_dev layout (clips/, labels.json): e.g. the clips re-encoded smaller or harder")
    p.add_argument("--cache", default=str(real_eval.DEFAULT_CACHE), help="feature cache folder")
    p.add_argument("--soup", nargs="*", default=[], metavar="DIR",
                   help="more kept folds of the same recipe (other seeds): each fold's weights averaged over them")
    args = p.parse_args()
    torch.set_num_threads(1)
    extra = json.loads(args.spotter)
    engine = load_engine(args.start, backend="export", device="cpu")
    clips, labels = real_train.load_clips(engine, Path(args.data), Path(args.cache), real_eval.DEFAULT_OVERRIDES,
                                          None)
    cfg = real_train.RealTrainConfig()
    scores: dict[float, dict[str, dict]] = {t: {} for t in GRID}
    for c in clips:
        # the weights as kept, without kept_fold's recipe check: a fold kept before a recipe field was added or
        # removed (runs/real_loio has `soup`) holds the same weights
        model = real_train.base_fedn(engine, cfg.fedn_inputs)
        states = [torch.load(Path(d) / f"{c.identity}.pt", weights_only=True)["state_dict"]
                  for d in [args.folds, *args.soup]]
        model.load_state_dict({k: sum(st[k] for st in states) / len(states) if v.is_floating_point() else v
                               for k, v in states[0].items()})
        runner = real_train.fedn_runner(model.eval())
        for t in GRID:
            spotter = merge_spotter(real_train.spotter_overrides(replace(cfg, fedn_only_threshold=t)), extra)
            run = real_eval.run_engine(engine, c.feats, fedn=runner, spotter=spotter)
            scores[t][c.name] = real_eval.score_clip(labels[c.name], run["events"], "scored", run["onsets"])
    roles = {c.name: "scored" for c in clips}
    for t in GRID:
        print(f"threshold {t}: {line(real_eval.totals(scores[t], roles))}")
    identities = sorted({c.identity for c in clips})
    chosen = real_train.nested_thresholds(scores, clips, identities)
    nested = {c.name: scores[chosen[c.identity]][c.name] for c in clips}
    print(f"nested (folds chose {sorted({chosen[i] for i in identities})}; on all folds {chosen['all']}): "
          f"{line(real_eval.totals(nested, roles))}")


if __name__ == "__main__":
    main()
