#!/usr/bin/env bash
# `open_end` (labels still going on at a window's end learnt from their first OPEN_END frames, half the expression
# windows ending inside one) on the default engine's recipe: reports/real_dev/open_end/seed<N>/loio.{md,json}, folds
# kept in runs/real_loio_open_end_s<N> and reused by a second run. About 10 minutes a seed on 2 cores. Seed 0 only
# (SEEDS="0 1 2" for three): it measured below the recipe without it, so the others were not run.
# docs/real_dev.md ("Onsets learnt from starts").
source "$(dirname "$0")/common.sh"
START=${START:-runs/start_engine}
start_engine "$START"
for seed in ${SEEDS:-0}; do
  loio_seed "$seed" "\"open_end\": ${OPEN_END:-8}" "runs/real_loio_open_end_s$seed" "reports/real_dev/open_end/seed$seed"
done
