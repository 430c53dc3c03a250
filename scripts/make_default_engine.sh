#!/usr/bin/env bash
# Reproduce the bundled default engine (stream/engines/default) and its reports: engine 0.2.0 from synthetic videos
# (reports/default_engine), then its FEDN fine-tuned on the real dev clips as the default engine 0.8.0
# (reports/real_dev, scripts/real_loio.sh), and on those clips with synthetic videos of other people
# (scripts/synth_sets.sh) as the bundled `lab` engine 0.4.2 (reports/real_dev/joint, reports/synthetic/heldout.md).
#
#   scripts/make_default_engine.sh            # everything: data, features, training, export, report
#   STAGE=train scripts/make_default_engine.sh  # from training on (data and features already there)
#   STOP_AFTER=data scripts/make_default_engine.sh  # only the data and features
#   STAGE=real scripts/make_default_engine.sh   # only the real-clip fine-tune (scripts/real_loio.sh) of engine 0.2.0
#
# Data: synthetic 60 s videos (fes-synth) made from the real faces in ../shared/data/images. Five identities and
# their mirrored faces train (30 videos, 10 subjects); pyfeat_45-m7-di-ph is the validation subject that model
# selection and threshold calibration use (8 videos); the held-out identity 2008_002506 with its own seed (1000) is
# the test set and is used for nothing else (6 videos; the first 2 are the test set of engine 0.1.0).
# (The two other photos in ../shared/data/images are group shots with faces too small to warp.)
source "$(dirname "$0")/common.sh"
IMAGES=$SHARED/data/images
RUN=${RUN:-runs/default_engine}
DATA=$RUN/synth
STAGE=${STAGE:-data}
STOP_AFTER=${STOP_AFTER:-}
ENGINE_VERSION=0.2.0

if [ "$STAGE" = data ]; then
  rm -rf "$DATA"
  # 12 training/validation videos, two per identity (round-robin), seed 0
  $PY/fes-synth --config configs/synth_default.json --seed 0 --videos 12 --out "$DATA" \
    --face "$IMAGES/pyfeat_0-f1-su-ph.jpg" --face "$IMAGES/pyfeat_0-f15-hao-ph.jpg" \
    --face "$IMAGES/pyfeat_15-f13-anc-ph.jpg" --face "$IMAGES/pyfeat_45-m7-di-ph.jpg" \
    --face "$IMAGES/pyfeat_single_face.jpg" --face "$IMAGES/2009_004587.jpg"
  # two more videos of the validation identity with their own seed: a larger validation set for selection and
  # threshold calibration (12 -> 28 expressions)
  $PY/fes-synth --config configs/synth_default.json --seed 2000 --videos 2 --out "$DATA" \
    --face "$IMAGES/pyfeat_45-m7-di-ph.jpg"
  # more training data (seed 3000): one more video of each training identity and one of each of their mirrored
  # faces (--mirror: `<name>_mirror`, another training subject). The face order keeps the new `<name>_<index>`
  # ids clear of the seed-0 ones; the validation and held-out identities are not in this call.
  $PY/fes-synth --config configs/synth_default.json --seed 3000 --videos 10 --mirror --out "$DATA" \
    --face "$IMAGES/pyfeat_0-f15-hao-ph.jpg" --face "$IMAGES/pyfeat_15-f13-anc-ph.jpg" \
    --face "$IMAGES/pyfeat_0-f1-su-ph.jpg" --face "$IMAGES/pyfeat_single_face.jpg" --face "$IMAGES/2009_004587.jpg"
  # still more (engine 0.2): a third video of each training identity and of each mirrored face (seed 4000,
  # indices 20-29), and four more validation videos (seed 2000, indices 10-13) so that model selection and
  # threshold calibration see 8 videos instead of 4
  $PY/fes-synth --config configs/synth_default.json --seed 4000 --first-index 20 --videos 10 --mirror --out "$DATA" \
    --face "$IMAGES/pyfeat_0-f15-hao-ph.jpg" --face "$IMAGES/pyfeat_15-f13-anc-ph.jpg" \
    --face "$IMAGES/pyfeat_0-f1-su-ph.jpg" --face "$IMAGES/pyfeat_single_face.jpg" --face "$IMAGES/2009_004587.jpg"
  $PY/fes-synth --config configs/synth_default.json --seed 2000 --first-index 10 --videos 4 --out "$DATA" \
    --face "$IMAGES/pyfeat_45-m7-di-ph.jpg"
  # the held-out identity and seed: test only (videos 0-1 are engine 0.1.0's test set, 2-5 were added with 0.2)
  $PY/fes-synth --config configs/synth_default.json --seed 1000 --videos 6 --out "$DATA" \
    --face "$IMAGES/2008_002506.jpg"
  # features once per video (fes-train would do the same on its first run); JOBS extractions side by side
  mkdir -p "$RUN/features"
  for v in "$DATA"/*.mp4; do
    id=$(basename "$v" .mp4)
    [ -f "$RUN/features/$id.npz" ] && continue
    $PY/fes-live extract "$v" -o "$RUN/features/$id.npz" --no-progress &
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do wait -n; done
  done
  wait
  [ "$STOP_AFTER" = data ] && exit 0
  STAGE=train
fi

if [ "$STAGE" = train ]; then
  $PY/fes-train configs/default_engine.json --set "data=$DATA" --set "features=$RUN/features" --set "out=$RUN/train"
  [ "$STOP_AFTER" = train ] && exit 0
  STAGE=export
fi

if [ "$STAGE" = export ]; then
  # the engine with the thresholds fes-train calibrated on the validation subject, then its report on the
  # held-out identity and the real clips
  $PY/fes-export "$RUN/train/holdout/gim_best.pt" "$RUN/train/holdout/fedn_best.pt" \
    --thresholds "$RUN/train/holdout/thresholds.json" -o "$RUN/engine_synth" --engine-version "$ENGINE_VERSION"
  $PY/fes-train configs/default_engine.json --set "data=$DATA" --set "features=$RUN/features" \
    --report-engine "$RUN/engine_synth" --report-out reports/default_engine --clips "$SHARED/data/video"
  # the hand-written notes (how the engine was chosen, what it gets wrong) after the generated report
  cat reports/default_engine/notes.md >> reports/default_engine/report.md
  # the training run's own report (selected epochs, validation curves, calibrated thresholds) next to it
  mkdir -p reports/default_engine/training
  cp "$RUN/train/report.md" "$RUN/train/report.json" "$RUN/train/curves_holdout.png" \
    "$RUN/train/holdout/thresholds.json" reports/default_engine/training/
  STAGE=real
fi

if [ "$STAGE" = real ]; then
  # the default engine = that synthetic engine with FEDN fine-tuned on the real dev clips: the leave-one-identity-out
  # figures (reports/real_dev/loio.md), the export into stream/engines/default, the real-clip report; then the
  # lab engine (real clips + synthetic videos of other people) into stream/engines/lab
  START="$RUN/engine_synth" STAGE=${REAL_STAGE:-loio} scripts/real_loio.sh
  START="$RUN/engine_synth" STAGE=${REAL_STAGE:-loio} JOINT=1 scripts/real_loio.sh
fi
