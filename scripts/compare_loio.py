"""Two leave-one-identity-out reports of the same clips side by side, with 95 % intervals of their difference
(the identities resampled with replacement, the same draw for both: a paired bootstrap). A variant whose interval
holds 0 is not shown better or worse by the dev clips, whatever its headline says.

    .venv/bin/python scripts/compare_loio.py reports/real_dev/loio.json reports/real_dev/eyes/seed0/loio.json
"""
import argparse
import json
from pathlib import Path

import numpy as np

from fes_live.train import real_eval
from fes_live.train.real_train import band, identity_rows, resampled_figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="loio.json of `fes-train real --loio` (the reference)")
    p.add_argument("b", help="loio.json of the variant")
    p.add_argument("--draws", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    ra, rb = (identity_rows(json.loads(Path(f).read_text())) for f in (args.a, args.b))
    if set(ra) != set(rb):
        raise SystemExit(f"compare_loio: the reports hold other identities: {sorted(set(ra) ^ set(rb))}")
    names = sorted(ra)
    a, b = (np.stack([r[n] for n in names]) for r in (ra, rb))
    picks = np.random.default_rng(args.seed).integers(len(names), size=(args.draws, len(names)))
    fa, fb = resampled_figures(a, picks), resampled_figures(b, picks)
    every = np.arange(len(names))[None]                   # one draw: each identity once, the reports' own figures
    whole_a, whole_b = resampled_figures(a, every), resampled_figures(b, every)
    print(f"{len(names)} identities, {args.draws} paired draws; {args.a} -> {args.b}")
    for k, label in enumerate(("recall at IoU 0.3", "precision")):
        va, vb = whole_a[k][0], whole_b[k][0]
        lo, hi = band(fb[k] - fa[k])
        if lo is None:
            print(f"  {label}: {real_eval.fmt(va)} -> {real_eval.fmt(vb)} (not defined in any draw)")
            continue
        print(f"  {label}: {real_eval.fmt(va)} -> {real_eval.fmt(vb)} (difference {vb - va:+.2f}, 95 % "
              f"{lo:+.2f} to {hi:+.2f})")


if __name__ == "__main__":
    main()
