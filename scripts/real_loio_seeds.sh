#!/usr/bin/env bash
# The default engine's fine-tune recipe (scripts/real_loio.sh, seed 1) under seeds 0 and 2 as well: 21 folds each
# (kept in runs/real_loio_s<N>, reused by a second run), reports/real_dev/seeds/seed<N>/loio.{md,json}, and the three
# seeds side by side in reports/real_dev/seeds/README.md (scripts/seeds_table.py). About 10 minutes a seed on 2 cores.
source "$(dirname "$0")/common.sh"
START=${START:-runs/start_engine}
start_engine "$START"
for seed in 0 2; do
  loio_seed "$seed" '' "runs/real_loio_s$seed" "reports/real_dev/seeds/seed$seed"
done
"$PY/python" scripts/seeds_table.py reports/real_dev/loio.json reports/real_dev/seeds/seed{0,2}/loio.json \
  --out reports/real_dev/seeds/README.md
