#!/usr/bin/env bash
# Training-window augmentations on engine 0.7.1's recipe, seeds 0, 1 and 2 (SEEDS="0" for one), folds kept in
# runs/real_loio_<VARIANT>_s<N> and reused by a second run, reports in reports/real_dev/<VARIANT>/seed<N>/loio.md.
# About 10 minutes a seed on 2 cores. docs/real_dev.md ("Mirrored and scaled windows").
#   scripts/real_loio_augment.sh mirror   # half of the windows left-right mirrored (`mirror` 0.5)
#   scripts/real_loio_augment.sh gain     # every window scaled up by a factor in 1-1.5 (`gain`)
source "$(dirname "$0")/common.sh"
VARIANT=${1:?which augmentation: mirror or gain}
case "$VARIANT" in
  mirror) FIELDS='"mirror": 0.5' ;;
  gain) FIELDS='"gain": [1.0, 1.5]' ;;
  *) echo "unknown augmentation $VARIANT (mirror, gain)" >&2; exit 2 ;;
esac
START=${START:-runs/start_engine}
start_engine "$START"
for seed in ${SEEDS:-0 1 2}; do
  loio_seed "$seed" "$FIELDS" "runs/real_loio_${VARIANT}_s$seed" "reports/real_dev/$VARIANT/seed$seed" \
    --made-by "scripts/real_loio_augment.sh $VARIANT"
done
