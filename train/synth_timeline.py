"""What happens when in a synthetic video: labelled expressions, and the unlabelled nuisances around them.

Everything is drawn from one numpy Generator, so a seed fixes the whole video. The output is per-frame arrays
(basis weights, head similarity, lighting) that the renderer consumes frame by frame, plus the ground truth.
Expressions are sparse (a few per minute, mostly neutral in between, as in CAS(ME)^2 and SAMM-LV); each has an
onset -> apex -> offset profile with smooth ramps, a plateau for macro ones, and a short peak for micro ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fes_live.train.synth_warp import BASES, BASIS_INDEX

if TYPE_CHECKING:
    from fes_live.train.synth import SynthConfig

EMOTIONS = ("happiness", "surprise", "disgust", "anger", "sadness")
# Emotion -> basis weights at apex (FACS prototypes: happiness 6+12, surprise 1+2+5+26, disgust 9+10+4,
# anger 4+7+24 (or 4+5+24), sadness 1+4+15).
EMOTION_AUS: dict[str, dict[str, float]] = {
    "happiness": {"AU6": 0.8, "AU12": 1.0},
    "surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0, "AU26": 0.8},
    "disgust": {"AU9": 1.0, "AU10": 1.0, "AU4": 0.4},
    "anger": {"AU4": 1.0, "AU7": 0.8, "AU24": 0.8},
    "sadness": {"AU1": 1.0, "AU4": 0.5, "AU15": 1.0},
}


@dataclass(frozen=True)
class Expression:
    """One labelled expression; frames are 0-based and inclusive."""
    onset: int
    apex: int
    offset: int
    kind: str            # "macro" | "micro"
    emotion: str
    aus: tuple[int, ...]
    amplitude: float

    def as_dict(self) -> dict:
        return {"onset": self.onset, "apex": self.apex, "offset": self.offset, "kind": self.kind,
                "emotion": self.emotion, "aus": list(self.aus)}


@dataclass
class Timeline:
    n_frames: int
    weights: np.ndarray      # (T, K) float32 basis weights, K = len(BASES)
    head: np.ndarray         # (T, 4) float32: dx, dy (face units), rotation (deg), scale - 1
    light: np.ndarray        # (T, 2) float32: global gain - 1, left-right gradient
    expressions: list[Expression]
    blinks: list[tuple[int, int]]
    talking: list[tuple[int, int]]
    head_moves: list[tuple[int, int]]


def _ease(x: np.ndarray) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0.0, 1.0))


def expression_profile(n: int, rise: float, fall: float) -> tuple[np.ndarray, int]:
    """Intensity over `n` frames (0 at both ends, 1 on the plateau) and the apex position (plateau middle)."""
    t = np.arange(n) / max(n - 1, 1)
    prof = np.minimum(_ease(t / rise), _ease((1 - t) / fall))
    apex = int(round((rise + 1 - fall) / 2 * (n - 1)))
    return prof.astype(np.float32), min(max(apex, 1), n - 2)


def frame_range(seconds: tuple[float, float], fps: float, kind: str) -> tuple[int, int]:
    """Allowed lengths in frames (offset - onset + 1): micro strictly under 0.5 s, macro 0.5 - 4 s."""
    lo, hi = max(3, math.ceil(seconds[0] * fps - 1e-9)), math.floor(seconds[1] * fps + 1e-9)
    if kind == "micro":
        hi = min(hi, math.ceil(0.5 * fps) - 1)
    else:
        lo, hi = max(lo, math.ceil(0.5 * fps - 1e-9)), min(hi, math.floor(4.0 * fps + 1e-9))
    if hi < lo:
        raise ValueError(f"{kind} durations {seconds} s give no valid length at {fps} fps")
    return lo, hi


def _sample_expressions(cfg: SynthConfig, n_frames: int,
                        rng: np.random.Generator) -> list[tuple[Expression, float, float]]:
    fps = cfg.fps
    total_rate = cfg.macro_per_min + cfg.micro_per_min
    if total_rate <= 0:
        return []
    p_micro = cfg.micro_per_min / total_rate
    mean_gap_s = max(60.0 / total_rate - 1.0, cfg.min_gap_s)
    ranges = {k: frame_range(getattr(cfg, f"{k}_s"), fps, k) for k in ("macro", "micro")}
    out = []
    t = int(round(rng.uniform(cfg.min_gap_s, cfg.min_gap_s + mean_gap_s) * fps))
    while True:
        kind = "micro" if rng.random() < p_micro else "macro"
        lo, hi = ranges[kind]
        n = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi + 0.999))) - 0.5))
        n = min(max(n, lo), hi)
        if t + n > n_frames - int(cfg.min_gap_s * fps / 2):
            break
        emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
        amp_lo, amp_hi = cfg.macro_amp if kind == "macro" else cfg.micro_amp
        amp = float(rng.uniform(amp_lo, amp_hi))
        if kind == "macro":
            rise, fall = rng.uniform(0.2, 0.35), rng.uniform(0.25, 0.4)
        else:
            rise = rng.uniform(0.35, 0.5)
            fall = 1.0 - rise - rng.uniform(0.0, 0.1)
        _, apex = expression_profile(n, rise, fall)
        aus = dict(EMOTION_AUS[emotion])
        if emotion == "anger" and rng.random() < 0.4:  # glaring (lid raise) instead of narrowing
            aus["AU5"] = aus.pop("AU7")
        au_ids = tuple(sorted({int(a[2:]) for a in aus}))
        out.append((Expression(t, t + apex, t + n - 1, kind, emotion, au_ids, round(amp, 3)), rise, fall))
        gap = cfg.min_gap_s + rng.exponential(mean_gap_s)
        t += n + int(round(gap * fps))
    return out


def _slow_wave(rng: np.random.Generator, n: int, fps: float, amplitude: float) -> np.ndarray:
    """Sum of three slow sinusoids (0.02 - 0.25 Hz) scaled to peak about `amplitude`."""
    t = np.arange(n) / fps
    wave = np.zeros(n)
    for _ in range(3):
        wave += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(0.02, 0.25) * t + rng.uniform(0, 2 * np.pi))
    return (amplitude * wave / 2.0).astype(np.float32)


def build_timeline(cfg: SynthConfig, rng: np.random.Generator) -> Timeline:
    fps = cfg.fps
    n = int(round(cfg.seconds * fps))
    if n < 2:
        raise ValueError(f"seconds={cfg.seconds} at fps={fps} gives {n} frames")
    weights = np.zeros((n, len(BASES)), np.float32)
    expressions = []
    for expr, rise, fall in _sample_expressions(cfg, n, rng):
        prof, _ = expression_profile(expr.offset - expr.onset + 1, rise, fall)
        for au, w in EMOTION_AUS[expr.emotion].items():
            if expr.emotion == "anger" and au == "AU7" and 5 in expr.aus:
                au = "AU5"
            jitter = rng.uniform(0.85, 1.15)
            weights[expr.onset: expr.offset + 1, BASIS_INDEX[au]] += expr.amplitude * w * jitter * prof
        expressions.append(expr)

    blinks = []
    for _ in range(int(rng.poisson(cfg.blinks_per_min * cfg.seconds / 60.0))):
        length = max(2, int(round(rng.uniform(*cfg.blink_s) * fps)))
        start = int(rng.integers(0, max(1, n - length)))
        t = np.arange(length) / max(length - 1, 1)
        close = 0.4
        prof = np.where(t < close, _ease(t / close), _ease((1 - t) / (1 - close)))
        depth = 1.0 if rng.random() < 0.8 else rng.uniform(0.5, 0.9)
        end = min(start + length, n)
        weights[start:end, BASIS_INDEX["blink"]] = np.maximum(weights[start:end, BASIS_INDEX["blink"]],
                                                              depth * prof[: end - start])
        blinks.append((start, end - 1))
    blinks.sort()

    talking = _talking(cfg, n, expressions, weights, rng)
    head = np.stack([_slow_wave(rng, n, fps, cfg.head_shift), _slow_wave(rng, n, fps, cfg.head_shift),
                     _slow_wave(rng, n, fps, cfg.head_rot_deg), _slow_wave(rng, n, fps, cfg.head_scale)], -1)
    head_moves = _head_moves(cfg, n, head, rng)
    light = np.stack([_slow_wave(rng, n, fps, cfg.light_drift), _slow_wave(rng, n, fps, cfg.light_gradient)], -1)
    return Timeline(n, weights, head, light, expressions, blinks, talking, head_moves)


def _head_moves(cfg: SynthConfig, n: int, head: np.ndarray,
                rng: np.random.Generator) -> list[tuple[int, int]]:
    """Quick head movements (a nod, a turn of the head in the image plane, a lean) that go out and come back."""
    moves = []
    for _ in range(int(rng.poisson(cfg.head_moves_per_min * cfg.seconds / 60.0))):
        length = max(3, int(round(rng.uniform(0.4, 1.5) * cfg.fps)))
        start = int(rng.integers(0, max(1, n - length)))
        bump = np.sin(np.pi * np.arange(length) / (length - 1)) ** 2
        delta = rng.uniform(-1, 1, 4) * np.array([cfg.head_shift * 1.5, cfg.head_shift * 1.5,
                                                   cfg.head_rot_deg * 2, cfg.head_scale])
        end = min(start + length, n)
        head[start:end] += (bump[: end - start, None] * delta).astype(np.float32)
        moves.append((start, end - 1))
    return sorted(moves)


def _talking(cfg: SynthConfig, n: int, expressions: list[Expression], weights: np.ndarray,
             rng: np.random.Generator) -> list[tuple[int, int]]:
    """Talking bursts (jaw and lip motion at syllable rate) placed only in neutral stretches, never labelled."""
    fps = cfg.fps
    margin = int(round(0.3 * fps))
    busy = np.zeros(n, bool)
    for e in expressions:
        busy[max(0, e.onset - margin): e.offset + margin + 1] = True
    segments = []
    for _ in range(int(rng.poisson(cfg.talk_per_min * cfg.seconds / 60.0))):
        length = int(round(rng.uniform(*cfg.talk_s) * fps))
        for _try in range(20):
            start = int(rng.integers(0, max(1, n - length)))
            if length > 2 and not busy[start: start + length].any():
                break
        else:
            continue
        busy[start: start + length] = True
        t = np.arange(length) / fps
        envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.15)
        rate = rng.uniform(3.0, 5.0)
        syllables = 0.5 - 0.5 * np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
        loud = rng.uniform(0.25, 0.6, size=int(t[-1] * rate) + 2)[(t * rate).astype(int)]
        weights[start: start + length, BASIS_INDEX["AU26"]] += (envelope * syllables * loud).astype(np.float32)
        weights[start: start + length, BASIS_INDEX["pucker"]] += (
            envelope * 0.5 * np.maximum(0, np.sin(2 * np.pi * rate * 0.7 * t))).astype(np.float32)
        segments.append((start, start + length - 1))
    return sorted(segments)
