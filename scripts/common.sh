# Sourced first by the data scripts (scripts/synth_sets.sh, scripts/make_default_engine.sh): strict mode, the
# repository root as the working folder, the venv's commands, the shared data folder, the MediaPipe model, and no
# download at run time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin
SHARED=${FES_SHARED_DIR:-../shared}
export FES_FACE_MODEL=${FES_FACE_MODEL:-$SHARED/models/face_landmarker_v2_with_blendshapes.task}
export FES_NO_DOWNLOAD=1
