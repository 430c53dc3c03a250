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
