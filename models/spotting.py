"""What a spotter says about a stream: the value types shared by offline evaluation and the live detector.

Frame indices are 0-based positions in the stream; intervals are inclusive ([onset, offset] both belong to it).
Pure data: no torch, no I/O, so `stream/` and `train/` can both use them.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

MACRO, MICRO = 0, 1
KIND_NAMES = ("macro", "micro")
MICRO_MAX_SECONDS = 0.5  # the field's definition: a micro-expression lasts under half a second


def parse_kind(value) -> int:
    """MACRO/MICRO from an int or any of the datasets' spellings ("macro", "Micro - 1/2", "micro-expression");
    ValueError for anything else."""
    if isinstance(value, numbers.Integral) and int(value) in (MACRO, MICRO):  # numpy ints too
        return int(value)
    text = str(value).strip().lower()
    if text.startswith("macro"):
        return MACRO
    if text.startswith("micro"):
        return MICRO
    raise ValueError(f"unknown expression class {value!r} (expected macro/micro or {MACRO}/{MICRO})")


@dataclass(frozen=True)
class Proposal:
    """One spotted interval, as the post-processing of any model produces it."""
    onset: int
    apex: int
    offset: int
    kind: int  # MACRO or MICRO
    score: float
    emotion: int = -1  # index into the engine's emotion label map, -1 when the model has none
    emotion_probs: tuple[float, ...] = ()
    peak_intensity: float = 0.0
    source: str = ""  # "gim", "fedn" or "gim+fedn"
    peak_level: float = 0.0  # the top of the expression level over it (models.emotion.expression_level)

    @property
    def length(self) -> int:
        return self.offset - self.onset + 1


def kind_by_length(length: int, micro_max_frames: float) -> int:
    """MICRO when an interval of `length` frames is shorter than `micro_max_frames` (FEDN has no kind head)."""
    return MICRO if length < micro_max_frames else MACRO


@dataclass(frozen=True)
class IntensityUpdate:
    """The class-agnostic intensity I(t) of one frame, available `delay` frames after it was captured."""
    frame_index: int
    intensity: float
    apex_probs: tuple[float, float] = (0.0, 0.0)  # (macro, micro)
    level: float = 0.0  # the face's expression level at that frame (models.emotion.expression_level), 0 without one


@dataclass(frozen=True)
class OnsetUpdate:
    """Provisional: an expression started at `frame_index` (GIM's curve or FEDN says so; may never become final)."""
    frame_index: int
    intensity: float
    track: int  # id that the matching ExpressionUpdate (or CancelUpdate) repeats


@dataclass(frozen=True)
class CancelUpdate:
    """A provisional onset that did not become an expression (too short, suppressed, below threshold)."""
    frame_index: int
    track: int


@dataclass(frozen=True)
class ExpressionUpdate:
    """Final: a spotted expression; `track` links it to its OnsetUpdate when there was one (else -1)."""
    proposal: Proposal
    track: int = -1
    extras: dict = field(default_factory=dict)


Update = IntensityUpdate | OnsetUpdate | CancelUpdate | ExpressionUpdate
