#!/usr/bin/env bash
# The eyes-closed hold (`eyes_closed_hold` 0.5: eyeSquint keeps its open-eye value while the eyes are closed, in
# training inputs and in the spotter) on 0.6.0's recipe, seeds 0, 1 and 2, and on the recipe with the webcam-size
# copies (scripts/real_loio_copies.sh), seed 0 (COPY_SEEDS="0 1 2" for all three):
# reports/real_dev/eyes/{seed<N>,copies/seed<N>}/loio.{md,json}, folds kept in runs/real_loio_hold[_copies]_s<N>
# and reused by a second run. About 10 and 17 minutes a seed on 2 cores. docs/real_dev.md ("Eyes closed").
source "$(dirname "$0")/common.sh"
START=${START:-runs/start_engine}
start_engine "$START"
[ -f runs/copies/small/labels.json ] || scripts/clip_copies.sh
HOLD='"eyes_closed_hold": 0.5'
for seed in 0 1 2; do
  loio_seed "$seed" "$HOLD" "runs/real_loio_hold_s$seed" "reports/real_dev/eyes/seed$seed"
done
for seed in ${COPY_SEEDS:-0}; do
  loio_seed "$seed" "$HOLD" "runs/real_loio_hold_copies_s$seed" "reports/real_dev/eyes/copies/seed$seed" \
    --copies runs/copies/small
done
