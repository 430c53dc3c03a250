"""Emotion from blendshape evidence: FACS-like patterns of MediaPipe's 52 blendshapes over a spotted interval.

FEDN's emotion head learned the synthetic generator's hand-made displacements and does not transfer to real faces
(real_dev: smiles called sadness or anger). A broad smile (AU6+12), or raised brows with widened eyes or a dropped
jaw (AU1+2 with 5 or 26), is unmistakable in the blendshapes whoever the person is; where one of these patterns is
clearly present it decides the emotion, otherwise FEDN's stays. Evidence is the median over the interval of the
deviation from the person's neutral baseline (`models.baseline`), and, for the smile, of the raw value too: a
baseline that started on a smiling face has absorbed the smile, the raw value has not.

The thresholds are set a priori from what the channels mean (0..1 activations), not fitted to any benchmark.
Pure numpy. `MEDIAPIPE_BLENDSHAPES` is the one list of MediaPipe's blendshape names (`stream.face` uses it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# MediaPipe Face Landmarker's blendshape order (index 0 is `_neutral`)
MEDIAPIPE_BLENDSHAPES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)
_I = {n: i for i, n in enumerate(MEDIAPIPE_BLENDSHAPES)}


def _channels(*names: str) -> np.ndarray:
    return np.array([_I[n] for n in names])


SMILE = _channels("mouthSmileLeft", "mouthSmileRight")
BLINK = _channels("eyeBlinkLeft", "eyeBlinkRight")
BROWS_UP = _channels("browInnerUp", "browOuterUpLeft", "browOuterUpRight")
EYES_WIDE = _channels("eyeWideLeft", "eyeWideRight")
JAW = _channels("jawOpen")


# The action units of each emotion as MediaPipe reads them (FACS, as in the synthetic generator's AU table): where
# they deviate most from the person's neutral is the expression's apex. Contempt is one-sided and has no channel set
# here: it, and any other name, falls back to the largest deviation of any expression channel.
APEX_CHANNELS = {
    "happiness": _channels("mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft", "cheekSquintRight"),   # AU6+12
    "surprise": _channels("browInnerUp", "browOuterUpLeft", "browOuterUpRight", "eyeWideLeft", "eyeWideRight",
                          "jawOpen"),                                                                      # AU1+2+5+26
    "anger": _channels("browDownLeft", "browDownRight", "eyeSquintLeft", "eyeSquintRight", "mouthPressLeft",
                       "mouthPressRight"),                                                                 # AU4+7+24
    "sadness": _channels("browInnerUp", "mouthFrownLeft", "mouthFrownRight", "mouthShrugLower"),           # AU1+15+17
    "disgust": _channels("noseSneerLeft", "noseSneerRight", "mouthUpperUpLeft", "mouthUpperUpRight"),      # AU9+10
    "fear": _channels("browInnerUp", "eyeWideLeft", "eyeWideRight", "mouthStretchLeft", "mouthStretchRight"),
}
# blinks and gaze: they move with no expression (FEDN's "expression" inputs leave them out too)
BLINK_GAZE = _channels("eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft",
                       "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight")
# what an apex is never read from: blinks and gaze, and the `_neutral` score
NOT_EXPRESSION = np.union1d(_channels("_neutral"), BLINK_GAZE)

# what the mouth does to speak (jaw, lips closing, rounding, rolling, shrugging, moving sideways): the expression
# level leaves them out, so that talking does not read as an expression. The mouth channels of emotions stay
# (smile, frown, dimple, stretch, press, upper lip raised), and so do the brows, eyes, cheeks and nose.
SPEECH = _channels("jawOpen", "jawForward", "jawLeft", "jawRight", "mouthClose", "mouthFunnel", "mouthPucker",
                   "mouthRollLower", "mouthRollUpper", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthShrugLower",
                   "mouthShrugUpper", "mouthLeft", "mouthRight")
_NOT_LEVEL = np.union1d(NOT_EXPRESSION, SPEECH)


def au_strength(delta: np.ndarray, emotion: str | None) -> np.ndarray | None:
    """(T, 52) deviations from the neutral baseline -> (T,) how strongly `emotion`'s action units show: their mean,
    over a centred 3-frame mean against MediaPipe's frame-to-frame jitter; None for an emotion without a channel
    set."""
    channels = APEX_CHANNELS.get(emotion or "")
    if channels is None:
        return None
    return smooth3(channel_mean(delta, channels))


def channel_mean(frames: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """(T, 52) blendshape rows (raw or deviations) -> (T,) the mean of `channels`."""
    return np.asarray(frames, dtype=np.float64).reshape(-1, len(MEDIAPIPE_BLENDSHAPES))[:, channels].mean(axis=1)


def expression_level(delta: np.ndarray) -> np.ndarray:
    """(T, 52) deviations from the person's neutral baseline -> (T,) in [0, 1]: the largest rise of any expression
    channel above it (blinks, gaze and `_neutral` left out: they move with no expression; so do the articulators of
    speech, `SPEECH`). A class-agnostic intensity that reads real faces, where GIM's I(t), learnt from synthetic
    frame-to-frame flow, sits near 1 whatever the face does and a held smile has no flow (docs/events.md, "The
    expression level"). A fall below neutral is not an expression (a baseline taken on one relaxes down to the face:
    models.baseline)."""
    d = np.asarray(delta, dtype=np.float64).reshape(-1, len(MEDIAPIPE_BLENDSHAPES))
    return np.clip(np.delete(d, _NOT_LEVEL, axis=1), 0.0, 1.0).max(axis=1, initial=0.0)


def smooth3(x: np.ndarray) -> np.ndarray:
    return np.convolve(np.pad(x, 1, mode="edge"), np.ones(3) / 3, mode="valid") if len(x) >= 3 else x


def apex_index(delta: np.ndarray, emotion: str | None) -> int:
    """Row of (T, 52) deviations from the neutral baseline where `emotion`'s action units are strongest
    (`au_strength`); for an emotion without a channel set, where any expression channel deviates most."""
    delta = np.asarray(delta, dtype=np.float64).reshape(-1, len(MEDIAPIPE_BLENDSHAPES))
    if len(delta) == 0:
        raise ValueError("apex_index: no frames")
    strength = au_strength(delta, emotion)
    if strength is None:
        strength = smooth3(np.abs(np.delete(delta, NOT_EXPRESSION, axis=1)).max(axis=1))
    return int(np.argmax(strength))


@dataclass(frozen=True)
class EmotionEvidenceConfig:
    enabled: bool = True
    smile_delta: float = 0.3     # happiness: smile this far above the person's neutral ...
    smile_raw: float = 0.5       # ... or this high outright (a smile the baseline absorbed)
    brows_delta: float = 0.3     # surprise: brows raised this much ...
    open_delta: float = 0.2      # ... with eyes widened or jaw dropped this much, and no smile
    min_rise: float = 0.05       # a macro happiness or surprise whose action units never rise this far above the
                                 # person's neutral (`au_strength`; a smile also when it is smile_raw outright) is
                                 # not that expression: dropped (`supported`). Above MediaPipe's jitter; 0: off
    smile_min: float = 0.3       # ... and so is a macro happiness whose mouth never reads as smiling: mouthSmile
                                 # (3-frame mean) under this at every frame, as on 9 in 10 of a resting face's
                                 # frames (eyes closing on a faint smile, squinting). 0: off
    smile_eyes_shut: float = 0.8  # ... and so is a macro happiness with the eyes shut (raw eyeBlink of both over 0.5)
                                 # on this share of its frames or more: crying with the mouth stretched, which
                                 # MediaPipe reads as a smile (WolfgangLanger_Pexels.mp4: 0.94). The dev clips'
                                 # labelled smiles and laughs have them shut on 0.62 at most (edtalk). 0: off
    micro_smile: bool = True     # a micro happiness must show its smile too (smile_min; otherwise a micro-
                                 # expression is not asked: too brief and faint for its action units to be read)
    blink_veto: float = 0.3      # an event of an emotion MediaPipe does not read well (not READ_WELL), macro or
                                 # micro, during which the eyes close this far beyond the person's neutral
                                 # (eyeBlink, both eyes, 3-frame mean) is a blink, an eye closure or a look down
                                 # (which raises eyeBlink as well), not that expression: dropped, unless the mouth
                                 # smiles (`shows_smile`: the eyes closing in a laugh the model named otherwise).
                                 # Set between the synthetic videos' blinks (+0.19 at the apex) and real ones
                                 # (+0.49), far above the synthetic micro-expressions' (0.00-0.01). 0: off


def evidence_emotion(raw: np.ndarray, delta: np.ndarray, cfg: EmotionEvidenceConfig = EmotionEvidenceConfig()
                     ) -> str | None:
    """(T, 52) raw blendshapes and deviations from the neutral baseline over an interval -> "happiness",
    "surprise" or None (no clear pattern: leave the emotion to the model)."""
    raw = np.asarray(raw, dtype=np.float64).reshape(-1, len(MEDIAPIPE_BLENDSHAPES))
    delta = np.asarray(delta, dtype=np.float64).reshape(-1, len(MEDIAPIPE_BLENDSHAPES))
    if not cfg.enabled or len(raw) == 0:
        return None
    median = lambda x, idx: float(np.median(x[:, idx].mean(axis=1)))  # noqa: E731
    smile_d, smile_r = median(delta, SMILE), median(raw, SMILE)
    if smile_d >= cfg.smile_delta or smile_r >= cfg.smile_raw:
        return "happiness"
    opened = max(median(delta, EYES_WIDE), median(delta, JAW))
    if median(delta, BROWS_UP) >= cfg.brows_delta and opened >= cfg.open_delta and smile_d < cfg.smile_delta / 2:
        return "surprise"
    return None


# the emotions whose action units MediaPipe reads on any face; the others' it misses (noseSneer reads ~0 on disgust,
# mouthFrown ~0 on clearly sad mouths: the real_dev README), so their absence says nothing
READ_WELL = ("happiness", "surprise")


def supported(raw: np.ndarray, delta: np.ndarray, emotion: str | None,
              cfg: EmotionEvidenceConfig = EmotionEvidenceConfig()) -> bool:
    """Whether the blendshapes over an interval show any of `emotion`'s action units: a "happiness" with no smile
    at all (a blink, a pout, a turn of the head) is a false alarm whatever the model's score, and so is one whose
    mouth never reads as smiling (`smile_min`: eyes closing on a faint resting smile, squinting), or whose eyes stay
    shut (`smile_eyes_shut`: crying). Only the emotions MediaPipe reads well (`READ_WELL`) are judged."""
    strength = au_strength(delta, emotion) if emotion in READ_WELL else None
    if not cfg.enabled or cfg.min_rise <= 0 or strength is None or len(strength) == 0:
        return True
    if emotion != "happiness":
        return float(strength.max()) >= cfg.min_rise
    if eyes_shut(raw, cfg):
        return False
    return (float(strength.max()) >= cfg.min_rise and shows_smile(raw, cfg)) or shows_smile(raw, cfg, outright=True)


def eyes_shut(raw: np.ndarray, cfg: EmotionEvidenceConfig = EmotionEvidenceConfig()) -> bool:
    """Whether the eyes are shut (raw eyeBlink of both over 0.5) on `smile_eyes_shut` of the frames of (T, 52) raw
    blendshapes or more; never when that is off."""
    if cfg.smile_eyes_shut <= 0 or len(raw) == 0:
        return False
    return float((channel_mean(raw, BLINK) > 0.5).mean()) >= cfg.smile_eyes_shut


def shows_smile(raw: np.ndarray, cfg: EmotionEvidenceConfig = EmotionEvidenceConfig(), outright: bool = False) -> bool:
    """Whether the mouth reads as smiling at some frame of (T, 52) raw blendshapes: mouthSmile (3-frame mean) at
    `smile_min`, or (`outright`) at `smile_raw`, a smile whatever the baseline absorbed."""
    smile = channel_mean(raw, SMILE)
    if outright:
        return len(smile) > 0 and float(smile.max()) >= cfg.smile_raw
    return len(smile) > 0 and float(smooth3(smile).max()) >= cfg.smile_min


def eyes_close(delta: np.ndarray, cfg: EmotionEvidenceConfig = EmotionEvidenceConfig()) -> bool:
    """Whether the eyes close (or look down) at some frame of (T, 52) deviations from the neutral baseline:
    eyeBlink of both eyes (3-frame mean) at `blink_veto` above neutral; never when the veto is off."""
    if not cfg.enabled or cfg.blink_veto <= 0:
        return False
    blink = channel_mean(delta, BLINK)
    return len(blink) > 0 and float(smooth3(blink).max()) >= cfg.blink_veto
