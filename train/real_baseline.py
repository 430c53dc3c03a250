"""The ~40-line spotter a user would write with MediaPipe blendshapes (issue 10's baseline for `fes-eval real`).

Per frame: the largest absolute deviation of the blendshapes, the blink and gaze channels (and MediaPipe's
`_neutral` score) left out, from their running mean with a 5 s time constant. An interval opens when the deviation
rises above 0.25, closes when it falls below 0.15, and is kept when it lasts at least 0.2 s. No emotion, no model:
it is the yardstick the engine must beat on real faces. The running mean restarts when the face is lost.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fes_live.stream.face import BLENDSHAPE_NAMES

LEFT_OUT = ("_neutral", "eyeBlinkLeft", "eyeBlinkRight") + tuple(n for n in BLENDSHAPE_NAMES if n.startswith("eyeLook"))
CHANNELS = np.array([i for i, n in enumerate(BLENDSHAPE_NAMES) if n not in LEFT_OUT])


@dataclass(frozen=True)
class BlendshapeSpotterConfig:
    tau_seconds: float = 5.0    # running-mean time constant
    open_above: float = 0.25    # hysteresis: an interval opens above this deviation ...
    close_below: float = 0.15   # ... and closes below this one
    min_seconds: float = 0.2    # shorter intervals are dropped


def blendshape_spot(geometry: np.ndarray, face_present: np.ndarray, fps: float,
                    cfg: BlendshapeSpotterConfig = BlendshapeSpotterConfig()) -> tuple[list[dict], np.ndarray]:
    """(T, >=52) geometry (blendshapes first) -> (intervals [{onset, offset, apex, peak}], deviation curve (T,)).

    Causal, one pass, frame by frame as it would run live."""
    x = np.asarray(geometry, dtype=np.float64)[:, CHANNELS]
    face = np.asarray(face_present, dtype=bool)
    alpha = 1.0 / max(1.0, cfg.tau_seconds * fps)
    mean, start = None, None
    deviation = np.zeros(len(x))
    found: list[dict] = []

    def close(end: int) -> None:
        if end - start + 1 >= cfg.min_seconds * fps:
            apex = start + int(np.argmax(deviation[start:end + 1]))
            found.append({"onset": start, "offset": end, "apex": apex, "peak": float(deviation[apex])})

    for t in range(len(x)):
        if not face[t]:
            if start is not None:
                close(t - 1)
            mean, start = None, None
            continue
        if mean is None:
            mean = x[t].copy()
        deviation[t] = float(np.max(np.abs(x[t] - mean)))
        mean += alpha * (x[t] - mean)
        if start is None and deviation[t] > cfg.open_above:
            start = t
        elif start is not None and deviation[t] < cfg.close_below:
            close(t - 1)
            start = None
    if start is not None:
        close(len(x) - 1)
    return found, deviation
