"""Where the MediaPipe Face Landmarker model file comes from.

No pip wheel of mediapipe >= 0.10.30 ships the model, so the product looks for it in this order: the
`--face-model` flag, `$FES_FACE_MODEL`, then `~/.cache/fes-live/face_landmarker.task`. On a user's machine with
none of these, Google's public `face_landmarker.task` is downloaded once into that cache. Tests set
`FES_NO_DOWNLOAD=1` (or point `FES_FACE_MODEL` at ../shared/models), so they never download.
"""
from __future__ import annotations

import logging
import os
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

MODEL_URL = ("https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/"
             "float16/1/face_landmarker.task")
CACHE_PATH = Path("~/.cache/fes-live/face_landmarker.task")
DOWNLOAD_TIMEOUT_S = 60.0


class FaceModelError(RuntimeError):
    """No usable face model: a named file that does not exist, or no model and no download allowed/possible."""


def find_face_model(explicit: str | None = None) -> Path:
    """Path of the Face Landmarker `.task` file: flag, then $FES_FACE_MODEL, then the user cache (downloaded once)."""
    for where, value in (("--face-model", explicit), ("$FES_FACE_MODEL", os.environ.get("FES_FACE_MODEL"))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise FaceModelError(f"{where} points to {path}, which is not a file")
            return path
    cached = CACHE_PATH.expanduser()
    if cached.is_file() and cached.stat().st_size > 0:
        return cached
    if os.environ.get("FES_NO_DOWNLOAD"):
        raise FaceModelError(f"no face model: pass --face-model, set $FES_FACE_MODEL or put one at {cached} "
                             "(FES_NO_DOWNLOAD is set, so it is not downloaded)")
    return _download(cached)


def _download(dest: Path) -> Path:
    """Fetch Google's public model once; write to a temp name first so a broken download never looks valid."""
    log.warning("face model not found; downloading %s -> %s (once)", MODEL_URL, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    try:
        with urllib.request.urlopen(MODEL_URL, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as out:
            while chunk := resp.read(1 << 16):
                out.write(chunk)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise FaceModelError(f"could not download the face model from {MODEL_URL}: {e}; "
                             f"pass --face-model or set $FES_FACE_MODEL") from None
    tmp.replace(dest)
    log.warning("face model saved to %s (%d bytes)", dest, dest.stat().st_size)
    return dest
