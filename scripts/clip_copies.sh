#!/usr/bin/env bash
# Re-encoded copies of the real dev clips, as a webcam or a stream would deliver them, in real_dev's layout
# (clips/, labels.json) under runs/copies/<variant> (ignored: the clips carry no licence and must never be
# committed). `small`: 40 % of the size (a face of 100-430 px instead of 256-1080) at x264 CRF 28; `crf36`: full
# size at CRF 36. Every frame kept (same count and rate, so the labels still line up; fes-train real checks).
# Used by `fes-train real --copies DIR` (training) and `scripts/real_loio_rescore.py --data DIR` (scoring).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/real_dev}
OUT=${OUT:-runs/copies}
declare -A FILTER=([small]="-vf scale=trunc(iw*0.4/2)*2:trunc(ih*0.4/2)*2 -crf 28" [crf36]="-crf 36")
for variant in small crf36; do
  mkdir -p "$OUT/$variant/clips"
  cp "$DATA/labels.json" "$OUT/$variant/labels.json"
  for clip in "$DATA"/clips/*.mp4; do
    # shellcheck disable=SC2086
    ffmpeg -loglevel error -nostdin -y -i "$clip" ${FILTER[$variant]} -c:v libx264 -pix_fmt yuv420p \
      "$OUT/$variant/clips/$(basename "$clip")"
  done
done
echo "-> $OUT/{small,crf36}"
