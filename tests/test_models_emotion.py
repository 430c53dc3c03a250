"""Emotion from blendshape evidence (models/emotion.py) and its place in the OnlineSpotter."""
import numpy as np

from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES, SMILE, EmotionEvidenceConfig, evidence_emotion
from fes_live.models.online import OnlineSpotter, SpotterConfig, spot_video
from fes_live.stream.face import BLENDSHAPE_NAMES

I = {n: i for i, n in enumerate(MEDIAPIPE_BLENDSHAPES)}


def test_names_are_mediapipes():
    assert MEDIAPIPE_BLENDSHAPES == BLENDSHAPE_NAMES


def frames(n=20, **values):
    x = np.zeros((n, 52))
    for name, v in values.items():
        x[:, I[name]] = v
    return x


def test_patterns():
    none = np.zeros((20, 52))
    assert evidence_emotion(none, none) is None
    smile = frames(mouthSmileLeft=0.6, mouthSmileRight=0.5)
    assert evidence_emotion(smile, smile) == "happiness"
    assert evidence_emotion(smile, none) == "happiness"          # absorbed by the baseline, still a smile
    assert evidence_emotion(frames(mouthSmileLeft=0.2, mouthSmileRight=0.2), none) is None
    surprise = frames(browInnerUp=0.6, browOuterUpLeft=0.5, browOuterUpRight=0.5, jawOpen=0.4)
    assert evidence_emotion(surprise, surprise) == "surprise"
    assert evidence_emotion(frames(browInnerUp=0.6, browOuterUpLeft=0.5, browOuterUpRight=0.5),
                            frames(browInnerUp=0.6, browOuterUpLeft=0.5, browOuterUpRight=0.5)) is None  # brows only
    assert evidence_emotion(smile, smile, EmotionEvidenceConfig(enabled=False)) is None


def test_spotter_takes_the_smile_over_the_models_emotion():
    """A test-double FEDN calls a broad smile emotion 2 ("anger"); with the label map known, the blendshapes win
    and the event says so; without it (emotions=()) the model's emotion stays."""
    T, W = 200, 64
    geometry = np.zeros((T, 1008), np.float32)
    geometry[60:100, SMILE] = 0.7
    feats = {"geometry": geometry, "roi_flow": np.zeros((T, 12, 2), np.float32),
             "face_present": np.ones(T, bool), "frame_index": np.arange(T), "fps": 30.0}

    def fedn(x):  # one interval over the smiling frames of the window, emotion 2
        on = np.flatnonzero(x[0, :, SMILE[0]] > 0.35)
        logits, iv = np.full((1, 4, 3), -9.0, np.float32), np.zeros((1, 4, 2), np.float32)
        if len(on):
            logits[0, 0, 2], iv[0, 0] = 4.0, (on[0], on[-1])
        return logits, iv

    names = ("happiness", "surprise", "anger")
    with_map = spot_video(OnlineSpotter(lambda w: (np.zeros(len(w)), np.zeros((len(w), 2))), fedn,
                                        SpotterConfig(fedn_window=W, emotions=names)), feats)
    without = spot_video(OnlineSpotter(lambda w: (np.zeros(len(w)), np.zeros((len(w), 2))), fedn,
                                       SpotterConfig(fedn_window=W)), feats)
    assert [(p.onset, p.offset, p.emotion) for p in without] == [(60, 99, 2)]
    assert [(p.onset, p.offset, p.emotion) for p in with_map] == [(60, 99, 0)]
