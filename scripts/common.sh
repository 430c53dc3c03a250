# Sourced first by the data and training scripts (scripts/synth_sets.sh, make_default_engine.sh, real_loio*.sh):
# strict mode, the repository root as the working folder, the venv's commands, the shared data folder, the MediaPipe
# model, no download at run time, and the real-clip fine-tune's start engine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin
SHARED=${FES_SHARED_DIR:-../shared}
export FES_FACE_MODEL=${FES_FACE_MODEL:-$SHARED/models/face_landmarker_v2_with_blendshapes.task}
export FES_NO_DOWNLOAD=1

# start_engine DIR: engine 0.2.0 (synthetic data only, git c70fe62), which every real-clip fine-tune starts from,
# unpacked into DIR unless it is there
start_engine() {
  [ -f "$1/manifest.json" ] && return
  mkdir -p "$1" && git archive c70fe62 stream/engines/default | tar -x -C "$1" --strip-components=3
}

# loio_seed SEED FIELDS FOLDS REPORT [fes-train real args...]: one seed's leave-one-identity-out run of a recipe
# (FIELDS: more RealTrainConfig fields as JSON members, e.g. '"eyes_closed_hold": 0.5', or ''), its folds kept in
# and reused from FOLDS, its report in REPORT/loio.{md,json}, which names the calling script as what regenerates it
loio_seed() {
  local seed=$1 fields=$2 folds=$3 report=$4 config
  shift 4
  config=$(mktemp)
  echo "{\"seed\": $seed${fields:+, $fields}}" > "$config"
  nice -n 5 "$PY/python" -m fes_live.train.train real --engine "${START:-runs/start_engine}" --no-progress \
    --config "$config" --loio "$report" --keep-folds "$folds" --reuse-folds "$folds" \
    --made-by "scripts/$(basename "$0")" "$@"
  rm -f "$config"
}
