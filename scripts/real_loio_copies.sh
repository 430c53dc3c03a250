#!/usr/bin/env bash
# 0.6.0's fine-tune recipe with the dev clips' webcam-size copies (scripts/clip_copies.sh, `small`) in every fold but
# their own person's, seeds 0, 1 and 2: reports/real_dev/copies/seed<N>/loio.{md,json} (folds kept in
# runs/real_loio_copies[_s<N>] and reused by a second run), then the same folds scored on the copies themselves.
# About 17 minutes a seed on 2 cores. docs/real_dev.md ("Webcam quality") has the figures; not the default recipe.
source "$(dirname "$0")/common.sh"
START=${START:-runs/start_engine}
start_engine "$START"
[ -f runs/copies/small/labels.json ] || scripts/clip_copies.sh
for seed in 0 1 2; do
  folds=runs/real_loio_copies$([ "$seed" = 0 ] || echo "_s$seed")
  loio_seed "$seed" '' "$folds" "reports/real_dev/copies/seed$seed" --copies runs/copies/small
  echo "seed $seed on the small copies:"
  "$PY/python" scripts/real_loio_rescore.py --start "$START" --folds "$folds" --data runs/copies/small | grep '^nested'
done
