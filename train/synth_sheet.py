"""Contact sheet of what `fes-synth` makes: the source face next to each emotion at onset, apex and offset.

Frames are rendered exactly as in a video (same warper, same profiles) but without head motion, lighting and
noise, so the sheet shows the expression itself. The last row is a micro-expression at micro amplitude.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fes_live.train.synth_timeline import EMOTION_AUS, EMOTIONS, expression_profile
from fes_live.train.synth_warp import BASES, BASIS_INDEX, FaceWarper

TILE = (176, 212)  # w, h


def emotion_weights(emotion: str, amplitude: float) -> np.ndarray:
    w = np.zeros(len(BASES), np.float32)
    for au, v in EMOTION_AUS[emotion].items():
        w[BASIS_INDEX[au]] = v * amplitude
    return w


def _tile(warper: FaceWarper, image: np.ndarray, top: str, bottom: str) -> np.ndarray:
    lm = warper.face.landmarks
    cx, cy = lm[:, 0].mean(), lm[:, 1].mean()
    half_w = 1.25 * warper.axes.iod
    half_h = half_w * TILE[1] / TILE[0]
    m = np.float32([[TILE[0] / (2 * half_w), 0, 0], [0, TILE[0] / (2 * half_w), 0]])
    m[:, 2] = [TILE[0] / 2 - m[0, 0] * cx, TILE[1] / 2 - m[1, 1] * (cy + 0.1 * half_h)]
    tile = cv2.warpAffine(image, m, TILE, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT101)
    for text, y in ((top, 16), (bottom, TILE[1] - 8)):
        cv2.putText(tile, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(tile, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def contact_sheet(warper: FaceWarper, fps: float = 30.0) -> np.ndarray:
    """(H, W, 3) BGR sheet, one row per emotion (macro) and one micro:
    [source | half way up the onset ramp | apex | half way down the offset ramp]."""
    ident = np.eye(2, 3, dtype=np.float32)
    rows = []
    specs = [(e, "macro", 1.5, 0.9) for e in EMOTIONS] + [("happiness", "micro", 0.33, 0.45)]
    for emotion, kind, seconds, amp in specs:
        n = max(5, int(round(seconds * fps)))
        rise, fall = (0.3, 0.35) if kind == "macro" else (0.45, 0.5)
        prof, apex = expression_profile(n, rise, fall)
        picks = [("rising (onset ramp)", int(round(rise * (n - 1) * 0.5))), ("apex", apex),
                 ("falling (offset ramp)", int(round((n - 1) * (1 - fall * 0.5))))]
        tiles = [_tile(warper, warper.base, "source", f"{kind} {emotion}")]
        for label, i in picks:
            img = warper.render(emotion_weights(emotion, amp) * prof[i], ident)
            tiles.append(_tile(warper, img, label, f"frame {i}/{n - 1}"))
        rows.append(np.hstack(tiles))
    half = (len(rows) + 1) // 2
    gap = np.full((TILE[1], 12, 3), 255, np.uint8)
    pairs = [np.hstack([rows[i], gap, rows[i + half]]) if i + half < len(rows) else rows[i] for i in range(half)]
    return np.vstack(pairs)


def write_contact_sheet(warper: FaceWarper, path: str | Path, fps: float = 30.0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), contact_sheet(warper, fps), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"cannot write {path}")
    return path
