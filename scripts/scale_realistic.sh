#!/usr/bin/env bash
# `fes-bench scale` on realistic content (README, docs/events.md): instead of the looped smile clip, 10 real dev
# clips with talking, expressions and head turns (their features from the real_dev cache, extracted once; the clips
# stay in ../shared) and the 8 held-out synthetic videos at 30 fps and with talking (scripts/synth_sets.sh's test30
# and test_talk, made first if missing). It prints the spotter's own share of the final latency too.
#   scripts/scale_realistic.sh                          # 32 streams, 20 s
#   scripts/scale_realistic.sh --streams 16,32 --workers 2
source "$(dirname "$0")/common.sh"
SETS=${SETS:-runs/synth_sets}
ls "$SETS"/features/test_talk/*.npz >/dev/null 2>&1 || OUT=$SETS ONLY=test scripts/synth_sets.sh
mapfile -t REAL < <("$PY/python" - "$SHARED/data/real_dev" <<'PY'
import sys
from pathlib import Path
from fes_live.train import real_eval
data = Path(sys.argv[1])
fm = real_eval.find_face_model(data, None)
version = real_eval.feature_code_version(fm)
for name in ("edtalk_expression_source", "liveportrait_d13", "liveportrait_d12", "tpsmm_driving",
             "sadtalker_RD_Radio34_000", "sadtalker_WDA_EdMarkey0_000", "fomm_10", "liveportrait_d9",
             "liveportrait_d6", "liveportrait_d10"):
    print(real_eval.cached_features(data / "clips" / f"{name}.mp4", real_eval.DEFAULT_CACHE, fm, version))
PY
)
ARGS=()
for f in "${REAL[@]}" "$SETS"/features/test30/*.npz "$SETS"/features/test_talk/*.npz; do ARGS+=(--features "$f"); done
[ $# -gt 0 ] || set -- --streams 32 --seconds 20
"$PY/fes-bench" scale "${ARGS[@]}" "$@"
