#!/usr/bin/env bash
# Synthetic videos of new identities (../shared/data/faces, people who are not in the scored real dev clips) for
# engine 0.4: a training set that joins the real clips in `fes-train real --synth`, and a held-out test set of two
# more people with a seed never used before, in the conditions issue 10 names (30 fps, 8 talking bouts a minute,
# more head motion, x264 CRF 36, 200 fps). Features are extracted once per video. Nothing here is committed: the
# faces carry no licence (their README), so neither do videos made from them.
#
#   scripts/synth_sets.sh            # both sets into runs/synth_sets
#   ONLY=train scripts/synth_sets.sh # or ONLY=test
source "$(dirname "$0")/common.sh"
FACES=$SHARED/data/faces
OUT=${OUT:-runs/synth_sets}
JOBS=${JOBS:-2}
ONLY=${ONLY:-}

# training people (person ids of the faces README): P01 P02 P03 P04 P06 P08 P09 P10; P07 is fomm_10's actor and
# P12-P31 are real dev people, so none of them is here. Seed 6000 (0-5000 were used by earlier sets).
TRAIN_FACES=(deepface_img11 deepface_img53 deepface_img13 deepface_img62 deepface_img33 deepface_img40
  deepface_img47 deepface_couple_right)
# validation (recipe choices): engine 0.2.0's validation person from ../shared/data/images, seed 6500
VAL_FACE=$SHARED/data/images/pyfeat_45-m7-di-ph.jpg
# held-out people: P05 and P11 (two videos each), seed 7001, used for nothing but the test
TEST_FACES=(deepface_img19 facenet_kate_siegel)

jobs_wait() { while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done; }

synth() {  # synth OUT_DIR SEED INDEX FACE [fes-synth flags...]
  local dir=$1 seed=$2 index=$3 face=$4; shift 4
  $PY/fes-synth --config configs/synth_default.json --seed "$seed" --first-index "$index" --videos 1 \
    --out "$dir/part_$index" --face "$FACES/$face.jpg" "$@" >/dev/null
}

# one fes-synth per video so that JOBS of them run side by side, each into its own folder, merged into DIR after;
# a video already there is kept (a set grows by calls with other FIRST indices)
make_set() {  # make_set NAME SEED FIRST FACES... [-- fes-synth flags]
  local name=$1 seed=$2 first=$3; shift 3
  local faces=() flags=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do faces+=("$1"); shift; done
  [ $# -gt 0 ] && shift && flags=("$@")
  local dir=$OUT/$name i=$first face part
  mkdir -p "$dir"
  for face in "${faces[@]}"; do
    if ! ls "$dir/${face}_$(printf %03d "$i").mp4" >/dev/null 2>&1; then
      synth "$dir" "$seed" "$i" "$face" "${flags[@]}" &
      jobs_wait
    fi
    i=$((i + 1))
  done
  wait
  # merge the parts: videos and their JSON labels side by side, their rows appended to the set's annotations.csv
  for part in "$dir"/part_*; do
    [ -d "$part" ] || continue
    mv "$part"/*.mp4 "$dir"/
    mv "$part/synth_manifest.json" "$dir/synth_manifest_$(basename "$part").json"
    mv "$part"/*.json "$dir"/
    [ -f "$dir/annotations.csv" ] || head -1 "$part/annotations.csv" > "$dir/annotations.csv"
    tail -n +2 "$part/annotations.csv" >> "$dir/annotations.csv"
    rm -r "$part"
  done
}

extract() {  # extract NAME: features/NAME/<video>.npz for every video of the set
  local dir=$OUT/$1 feats=$OUT/features/$1
  mkdir -p "$feats"
  for v in "$dir"/*.mp4; do
    id=$(basename "$v" .mp4)
    [ -f "$feats/$id.npz" ] && continue
    $PY/fes-live extract "$v" -o "$feats/$id.npz" --no-progress >/dev/null &
    jobs_wait
  done
  wait
}

if [ "$ONLY" != test ]; then
  # three videos of each person: twice the default config's talking bouts and head movements; the default config;
  # four times both (the nuisances real clips are full of)
  make_set train 6000 0 "${TRAIN_FACES[@]}" -- --talk-per-min 3 --head-moves-per-min 4
  make_set train 6000 8 "${TRAIN_FACES[@]}"
  make_set train 6000 16 "${TRAIN_FACES[@]}" -- --talk-per-min 6 --head-moves-per-min 8
  extract train
  if [ ! -f "$OUT/val/annotations.csv" ]; then
    $PY/fes-synth --config configs/synth_default.json --seed 6500 --videos 2 --out "$OUT/val" --face "$VAL_FACE" \
      --talk-per-min 3 --head-moves-per-min 4 >/dev/null
  fi
  extract val
fi
if [ "$ONLY" != train ]; then
  make_set test30 7001 0 "${TEST_FACES[@]}" "${TEST_FACES[@]}"
  make_set test_talk 7001 0 "${TEST_FACES[@]}" "${TEST_FACES[@]}" -- --talk-per-min 8
  make_set test_head 7001 0 "${TEST_FACES[@]}" "${TEST_FACES[@]}" -- --head-moves-per-min 8
  make_set test200 7001 0 "${TEST_FACES[@]}" "${TEST_FACES[@]}" -- --fps 200 --seconds 20
  # CRF 36: the 30 fps test videos through x264 at CRF 36, same labels
  if [ ! -f "$OUT/test_crf36/annotations.csv" ]; then  # (made last: the copy of annotations.csv marks it done)
    rm -rf "$OUT/test_crf36"; mkdir -p "$OUT/test_crf36"
    for v in "$OUT"/test30/*.mp4; do
      ffmpeg -loglevel error -y -i "$v" -c:v libx264 -crf 36 -pix_fmt yuv420p "$OUT/test_crf36/$(basename "$v")"
    done
    cp "$OUT"/test30/*.json "$OUT"/test30/annotations.csv "$OUT/test_crf36/"
  fi
  for name in test30 test_talk test_head test200 test_crf36; do extract "$name"; done
fi
