"""Leave-one-identity-out figures of one recipe under several seeds, side by side (docs/real_dev.md, "Seeds"):
one seed's folds moved recall by 0.09 and precision by 0.12, so a variant is judged against this range.

    .venv/bin/python scripts/seeds_table.py reports/real_dev/loio.json reports/real_dev/seeds/*/loio.json \
        --out reports/real_dev/seeds/README.md
"""
import argparse
import json
from pathlib import Path

from fes_live.stream.config import from_dict, to_dict
from fes_live.train import real_eval
from fes_live.train.real_train import RealTrainConfig

ROWS = (("recall at IoU 0.3", lambda t: t["recall_03"]), ("recall at IoU 0.5", lambda t: t["recall_05"]),
        ("precision", lambda t: t["precision"]),
        ("precision, one event per expression", lambda t: t["precision_one_to_one"]), ("TP (duplicates) / FP", None),
        ("false alarms a minute of talking", lambda t: t["nuisance"]["talking"]["fa_per_min"]),
        ("false alarms a minute of blinks", lambda t: t["nuisance"]["blink"]["fa_per_min"]),
        ("false alarms a minute of gaze", lambda t: t["nuisance"]["gaze"]["fa_per_min"]),
        ("emotion right on found expressions", lambda t: t["emotion_acc"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", help="loio.json of `fes-train real --loio`, one per seed")
    p.add_argument("--out", help="write the markdown here too")
    args = p.parse_args()
    runs = [json.loads(Path(r).read_text()) for r in args.reports]
    # a field a report predates (talking_windows) is its default: read each config as RealTrainConfig
    recipes = [{k: v for k, v in to_dict(from_dict(RealTrainConfig, r["config"], where=path)).items() if k != "seed"}
               for r, path in zip(runs, args.reports)]
    if any(rc != recipes[0] for rc in recipes):
        raise SystemExit("seeds_table: these runs differ in more than their seed")
    seeds = [r["config"]["seed"] for r in runs]
    totals = [r["totals"]["loio"] for r in runs]
    lines = ["# Real dev clips, leave one identity out: one recipe, several seeds", "",
             f"The recipe of `{args.reports[0]}` (the bundled default engine's), trained with seeds "
             f"{', '.join(map(str, seeds))}; "
             "each column is 21 folds scored with the threshold chosen nested (`scripts/real_loio_seeds.sh`). "
             "A variant measured with one seed is inside this range unless it moves a figure by more.", "",
             "| figure | " + " | ".join(f"seed {s}" for s in seeds) + " | range |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for name, get in ROWS:
        if get is None:
            lines.append(f"| {name} | " + " | ".join(f"{t['tp']} ({t['duplicates']}) / {t['fp']}" for t in totals)
                         + " | |")
            continue
        vals = [get(t) for t in totals]
        lines.append(f"| {name} | " + " | ".join(real_eval.fmt(v) for v in vals)
                     + f" | {real_eval.fmt(min(vals))}-{real_eval.fmt(max(vals))} |")
    chosen = [sorted({v for k, v in r["thresholds"].items() if k != "all"}) for r in runs]
    lines.append("| thresholds the folds chose | " + " | ".join(", ".join(map(str, c)) for c in chosen) + " | |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
