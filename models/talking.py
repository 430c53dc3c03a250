"""Talking recognised as talking: the jaw opening and closing at syllable rate.

Speech moves the jaw in cycles of roughly 2-6 a second; an expression opens it once (surprise, a shout) or not at
all. Over a spotted interval, the cycles of MediaPipe's `jawOpen` that rise and fall by at least `step` are
counted (a zig-zag counter: no filter design, no look-ahead beyond the interval); `cycles_per_second` or more over
an interval of at least `min_seconds` is speech. The spotter drops such an event unless a clear expression pattern
(models.emotion) shows in it as well: a smile or a laugh while talking stays.

The thresholds are set a priori (speech rate, a jaw movement well above MediaPipe's jitter), not fitted. Measured
once on real_dev it removed 3 false alarms and 2 loosely found expressions, so it ships switched off
(`SpotterConfig.talking.enabled`); a trained talking detector should replace it. The same cycle count, always on,
asks a happiness said while talking to read as a smile outright (`SpotterConfig.speech_smile`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fes_live.models.emotion import JAW


@dataclass(frozen=True)
class TalkingConfig:
    enabled: bool = False           # off by default: on real_dev it trades found expressions for false alarms
                                    # (docs/real_dev.md, "Changes measured here")
    step: float = 0.08              # a jaw cycle rises and falls by at least this much (0..1 activation)
    cycles_per_second: float = 1.5  # this many cycles a second or more is speech
    min_seconds: float = 1.0        # shorter intervals are not judged


def jaw_cycles(jaw: np.ndarray, step: float) -> int:
    """Number of rise-then-fall excursions of at least `step` in a 1-D curve."""
    jaw = np.asarray(jaw, dtype=np.float64).reshape(-1)
    if len(jaw) == 0:
        return 0
    lo = hi = jaw[0]
    rising, cycles = False, 0
    for v in jaw[1:]:
        if rising:
            hi = max(hi, v)
            if hi - v >= step:        # fell back from a peak: one cycle
                cycles += 1
                rising, lo = False, v
        else:
            lo = min(lo, v)
            if v - lo >= step:
                rising, hi = True, v
    return cycles


def moves_like_speech(raw: np.ndarray, fps: float, cfg: TalkingConfig = TalkingConfig()) -> bool:
    """(T, 52) raw blendshapes over an interval -> whether the jaw moves like speech, whether or not the gate is on
    (the spotter's `speech_smile` asks this of a smile)."""
    raw = np.asarray(raw, dtype=np.float64)
    seconds = len(raw) / fps
    if seconds < cfg.min_seconds:
        return False
    return jaw_cycles(raw[:, JAW[0]], cfg.step) / seconds >= cfg.cycles_per_second


def is_talking(raw: np.ndarray, fps: float, cfg: TalkingConfig = TalkingConfig()) -> bool:
    """(T, 52) raw blendshapes over an interval -> whether the talking gate (when on) takes it for speech."""
    return cfg.enabled and moves_like_speech(raw, fps, cfg)
