#!/usr/bin/env bash
# Regenerate reports/real_dev/ (report.md, report.json, timelines/*.png): the bundled engine and the blendshape
# baseline on the real development clips of ../shared/data/real_dev (docs/real_dev.md). Features are cached per
# clip outside the repository (~/.cache/fes-live/real_dev, keyed by clip hash and feature-code version), so only
# the first run extracts them. Extra arguments go to `fes-eval real` (e.g. --engine DIR, --clip NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export FES_FACE_MODEL=${FES_FACE_MODEL:-../shared/models/face_landmarker_v2_with_blendshapes.task}
rm -rf reports/real_dev/report.md reports/real_dev/report.json reports/real_dev/timelines  # loio.md stays (scripts/real_loio.sh)
nice -n 5 "$PY" -m fes_live.train.evaluate real --out reports/real_dev "$@"
