"""A per-person, causal neutral face: FEDN sees geometry minus this baseline, so identity and resting face cancel.

`NeutralBaseline` is fed one frame at a time (live, inside `models.online.OnlineSpotter`); `baseline_normalize`
runs the very same object over a whole video (training, offline evaluation), so both see identical inputs.

Rule: on a new track (first face frame, after a frame without a face, or a frame the ingest marks `new_face`: a
shot cut, another person taking over) the baseline restarts. For the first
`warmup_frames` face frames it is their running mean (a person usually starts near neutral); after that a slow
EMA (time constant `ema_seconds`) follows drift (lighting, posture), but is frozen while the face is expressive,
i.e. while any blendshape differs from its baseline by more than `freeze_delta` -- so a 3 s smile is not absorbed
into "neutral". Blendshapes are activations, and an expression raises them: a channel that falls well below its
baseline (by more than `freeze_delta`) says the baseline was taken on an expression (a face that started out
smiling or crying), so that channel follows it down quickly (`relax_seconds`), and the next smile stands out again.
Closing the eyes (a blink, a long eye closure, a look down) makes MediaPipe read a squint as well (real_dev curves:
eyeSquint +0.20 at the median frame with eyeBlink > 0.5), which FEDN takes for part of an expression; with
`eyes_closed_hold` set, the eye-coupled channels keep their last open-eye values while the eyes are closed.
The rules look at geometry only (not at a model's intensity), so training needs no model outputs to reproduce them
exactly. Pure numpy.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES

BLENDSHAPE_DIM = 52  # fes_live.stream.features: geometry = [52 blendshapes, 478 x 2 aligned landmarks]


@dataclass(frozen=True)
class BaselineConfig:
    fps: float = 30.0
    warmup_frames: int = 15        # 0.5 s of running mean before the EMA takes over
    ema_seconds: float = 10.0      # EMA time constant; slow so that expressions barely move it
    freeze_delta: float = 0.15     # blendshape deviation (0..1 scale) above which the baseline is frozen
    relax_seconds: float = 1.0     # time constant of a blendshape baseline following its channel down (0: never)
    neutral_ceiling: tuple[float, ...] = ()  # per blendshape, the most a neutral face reads: a new baseline starts
                                   # no higher, so a face that is already smiling when it appears shows its smile
                                   # (() : no ceiling)
    eyes_closed_hold: float = 0.0  # eyeBlink (the more closed eye) above which `eyes_closed_channels` keep their
                                   # last open-eye values (0: off)
    eyes_closed_channels: tuple[str, ...] = ("eyeSquintLeft", "eyeSquintRight")
    rises_only: bool = False       # blendshape deltas below 0 read as 0: an expression raises activations, and a
                                   # channel below its baseline says only that the baseline was taken on an
                                   # expression (a face whose raised brows drop as its eyes close is not frowning)
    blendshape_dim: int = BLENDSHAPE_DIM


class NeutralBaseline:
    def __init__(self, cfg: BaselineConfig = BaselineConfig()):
        if cfg.neutral_ceiling and len(cfg.neutral_ceiling) != cfg.blendshape_dim:
            raise ValueError(f"neutral_ceiling needs {cfg.blendshape_dim} values, got {len(cfg.neutral_ceiling)}")
        self.cfg = cfg
        self.ceiling = np.asarray(cfg.neutral_ceiling, dtype=np.float64) if cfg.neutral_ceiling else None
        self.alpha = 1.0 / max(1.0, cfg.ema_seconds * cfg.fps)
        self.relax = 1.0 / max(1.0, cfg.relax_seconds * cfg.fps) if cfg.relax_seconds > 0 else 0.0
        unknown = sorted(set(cfg.eyes_closed_channels) - set(MEDIAPIPE_BLENDSHAPES))
        if unknown:
            raise ValueError(f"eyes_closed_channels: not MediaPipe blendshapes: {unknown}")
        if cfg.eyes_closed_hold and cfg.blendshape_dim != len(MEDIAPIPE_BLENDSHAPES):
            raise ValueError(f"eyes_closed_hold needs MediaPipe's {len(MEDIAPIPE_BLENDSHAPES)} blendshapes first in "
                             f"the geometry, not {cfg.blendshape_dim}")
        self.blink = [MEDIAPIPE_BLENDSHAPES.index(n) for n in ("eyeBlinkLeft", "eyeBlinkRight")]
        self.held = [MEDIAPIPE_BLENDSHAPES.index(n) for n in cfg.eyes_closed_channels] if cfg.eyes_closed_hold else []
        self.reset()

    def reset(self) -> None:
        """Forget the person: the next face frame starts a new baseline."""
        self.mean: np.ndarray | None = None
        self.count = 0
        self.open_eyes: np.ndarray | None = None   # the held channels' values when the eyes were last open

    def update(self, geometry: np.ndarray, face_present: bool, new_face: bool = False) -> np.ndarray:
        """Feed one frame; returns geometry - baseline (float32, zeros without a face). No face resets; a new face
        starts a new baseline on its own first frame."""
        x = np.asarray(geometry, dtype=np.float64).reshape(-1)
        if not face_present or new_face:
            self.reset()
        if not face_present:
            return np.zeros(x.shape, dtype=np.float32)
        if self.held:
            x = self._hold_eyes(x)
        k = self.cfg.blendshape_dim
        if self.mean is None or self.count < self.cfg.warmup_frames:
            if self.mean is None:
                self.mean, self.count = x.copy(), 1
            else:
                self.count += 1
                self.mean += (x - self.mean) / self.count
            if self.ceiling is not None:
                self.mean[:k] = np.minimum(self.mean[:k], self.ceiling)
        else:
            d = x[:k] - self.mean[:k]
            expressive = float(np.max(np.abs(d), initial=0.0)) > self.cfg.freeze_delta
            if not expressive:
                self.mean += self.alpha * (x - self.mean)
            elif self.relax:
                low = d < -self.cfg.freeze_delta
                self.mean[:k][low] += self.relax * d[low]
            self.count += 1
        out = (x - self.mean).astype(np.float32)
        if self.cfg.rises_only:
            np.maximum(out[:k], 0.0, out=out[:k])
        return out

    def _hold_eyes(self, x: np.ndarray) -> np.ndarray:
        if max(x[i] for i in self.blink) <= self.cfg.eyes_closed_hold:
            self.open_eyes = x[self.held].copy()
            return x
        if self.open_eyes is None:      # the track started with closed eyes: nothing to hold yet
            return x
        x = x.copy()
        x[self.held] = self.open_eyes
        return x

    def state(self) -> dict:
        """Everything needed to continue this baseline elsewhere (a restarted detector): JSON-able, ~11 KB, exact
        (the float64 mean as base64)."""
        mean = None if self.mean is None else base64.b64encode(self.mean.astype("<f8").tobytes()).decode()
        eyes = None if self.open_eyes is None else [float(v) for v in self.open_eyes]
        return {"mean": mean, "count": int(self.count), "open_eyes": eyes}

    @classmethod
    def from_state(cls, state: dict, cfg: BaselineConfig = BaselineConfig()) -> "NeutralBaseline":
        """The baseline `state()` described; ValueError when `state` is not one."""
        base = cls(cfg)
        if not isinstance(state, dict) or not isinstance(state.get("count"), int) or state["count"] < 0:
            raise ValueError(f"not a baseline state: {str(state)[:80]!r}")
        if state.get("mean") is not None:
            mean = np.frombuffer(base64.b64decode(state["mean"], validate=True), dtype="<f8").astype(np.float64)
            if not np.isfinite(mean).all() or len(mean) <= cfg.blendshape_dim:
                raise ValueError(f"baseline state: bad mean of {len(mean)} values")
            base.mean, base.count = mean, state["count"]
        eyes = state.get("open_eyes")      # absent in states saved before the hold existed
        if eyes is not None and base.held:
            try:
                eyes = np.asarray(eyes, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                eyes = np.zeros(0)
            if len(eyes) != len(base.held) or not np.isfinite(eyes).all():
                raise ValueError(f"baseline state: bad open_eyes {str(state['open_eyes'])[:80]!r}")
            base.open_eyes = eyes
        return base


def baseline_normalize(geometry: np.ndarray, face_present: np.ndarray,
                       cfg: BaselineConfig = BaselineConfig(), new_face: np.ndarray | None = None) -> np.ndarray:
    """(T, F) geometry of a whole video -> (T, F) deltas, causally, exactly as the live spotter computes them."""
    geometry = np.asarray(geometry)
    face_present = np.asarray(face_present, dtype=bool).reshape(-1)
    new_face = np.zeros(len(face_present), bool) if new_face is None else np.asarray(new_face, bool).reshape(-1)
    if geometry.ndim != 2 or len(geometry) != len(face_present) or len(new_face) != len(face_present):
        raise ValueError(f"geometry must be (T, F) with T = len(face_present) = len(new_face); got {geometry.shape}, "
                         f"{face_present.shape} and {new_face.shape}")
    base = NeutralBaseline(cfg)
    out = np.zeros(geometry.shape, dtype=np.float32)
    for t in range(len(geometry)):
        out[t] = base.update(geometry[t], bool(face_present[t]), bool(new_face[t]))
    return out
