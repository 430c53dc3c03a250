#!/usr/bin/env bash
# The scored real dev clips' motion replayed on the synthetic training people's faces (train/synth_retarget.py,
# issue 10's retargeting): each clip on two of the eight faces of scripts/synth_sets.sh's training set (people in
# no dev clip), then their features. Nothing here is committed (the faces and the clips carry no licence).
#   scripts/retarget_sets.sh          # -> runs/retarget/<clip>@<face>.mp4, runs/retarget/features/*.npz
source "$(dirname "$0")/common.sh"
OUT=${OUT:-runs/retarget}
JOBS=${JOBS:-2}
FACES=(deepface_img11 deepface_img53 deepface_img13 deepface_img62 deepface_img33 deepface_img40 deepface_img47
  deepface_couple_right)
PATHS=()
for f in "${FACES[@]}"; do PATHS+=("$SHARED/data/faces/$f.jpg"); done
$PY/python -m fes_live.train.synth_retarget --data "$SHARED/data/real_dev" --per-clip 2 --seed 8000 --out "$OUT" \
  --faces "${PATHS[@]}" --face-model "$FES_FACE_MODEL" 2>&1 | grep -v "^W0000\|^INFO: Created"
mkdir -p "$OUT/features"
for v in "$OUT"/*.mp4; do
  id=$(basename "$v" .mp4)
  [ -f "$OUT/features/$id.npz" ] && continue
  $PY/fes-live extract "$v" -o "$OUT/features/$id.npz" --no-progress >/dev/null 2>&1 &
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
done
wait
echo "$(ls "$OUT"/features/*.npz | wc -l) retargeted videos with features in $OUT"
