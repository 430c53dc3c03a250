#!/usr/bin/env bash
# The real-clip figures that count (issue 10): FEDN fine-tuned on the real dev clips, leave one identity out
# (`fes-train real --loio`), written to reports/real_dev/loio.md and loio.json; then the same recipe on every scored
# clip, exported as the bundled engine (`--export`), and the benchmark report of that engine (scripts/real_report.sh).
#   scripts/real_loio.sh                # everything (about an hour on 2 cores)
#   STAGE=export scripts/real_loio.sh   # skip the cross-validation
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STAGE=${STAGE:-loio}
START=${START:-runs/start_engine}    # the engine the fine-tune starts from (engine 0.2.0, synthetic data only)
export FES_FACE_MODEL=${FES_FACE_MODEL:-../shared/models/face_landmarker_v2_with_blendshapes.task}
if [ ! -f "$START/manifest.json" ]; then
  mkdir -p "$START" && git archive c70fe62 stream/engines/default | tar -x -C "$START" --strip-components=3
fi
if [ "$STAGE" = loio ]; then
  nice -n 5 "$PY" -m fes_live.train.train real --engine "$START" --loio reports/real_dev --keep-folds runs/real_loio --no-progress
fi
nice -n 5 "$PY" -m fes_live.train.train real --engine "$START" --export stream/engines/default --engine-version 0.3.0 --no-progress
scripts/real_report.sh
