"""fes-synth-retarget: real motion fitted by the generator's bases, replayed on another face, read back alike."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA, FACE_MODEL, VIDEO, need
from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES
from fes_live.stream.config import from_dict
from fes_live.train import synth, synth_retarget as rt
from fes_live.train.synth_warp import BASES, BASIS_INDEX

SMALL = {"width": 320, "height": 240}


@pytest.fixture(scope="module")
def face():
    need(FACE_MODEL)
    cfg = from_dict(synth.SynthConfig, SMALL)
    # a near-neutral face (../shared/data/faces; its README: never committed), resting smile reading ~0.4
    return synth.load_faces([str(need(DATA / "faces" / "deepface_img11.jpg"))], cfg, str(FACE_MODEL))[0]


def test_fit_recovers_known_weights_under_head_motion(face):
    neutral = face.face.landmarks.astype(np.float64)
    bases = rt.fit_bases(neutral)
    rng = np.random.default_rng(0)
    T = 40
    truth = np.zeros((T, len(BASES)))
    truth[10:30, BASIS_INDEX["AU12"]] = np.linspace(0, 1.2, 20)              # a smile
    truth[5:15, BASIS_INDEX["AU1"]] = truth[5:15, BASIS_INDEX["AU2"]] = 0.8  # raised brows
    truth[20:24, BASIS_INDEX["blink"]] = 0.9
    truth[25:40, BASIS_INDEX["AU26"]] = rng.uniform(0, 0.6, 15)             # talking
    frames = neutral + np.tensordot(truth, bases, axes=1)
    for t in range(T):  # what the crop alignment leaves: a few pixels, a degree, 2 %
        a = np.deg2rad(rng.uniform(-1.5, 1.5))
        m = (1 + rng.uniform(-0.02, 0.02)) * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        frames[t] = frames[t] @ m.T + rng.uniform(-3, 3, 2)
    present = np.ones(T, bool)
    present[3] = False
    w, explained = rt.fit_weights(frames, present, np.arange(0, 5))
    assert w.shape == (T, len(BASES)) and (w >= 0).all() and (w <= rt.MAX_WEIGHT).all()
    keep = present.copy()
    keep[:5] = False  # the neutral frames themselves
    assert np.abs(w[keep] - truth[keep]).max() < 0.1
    assert not w[3].any() and np.isnan(explained[3])
    moving = keep & (np.abs(truth).sum(1) > 0.2)
    assert np.nanmin(explained[moving]) > 0.95


def test_neutral_frames_leave_out_labelled_spans():
    present = np.ones(100, bool)
    present[:3] = False
    idx = rt.neutral_frames(100, present, [{"start": 20, "end": 60, "type": "smile"}], np.zeros((100, 52)))
    assert idx.min() == 3 and not ((idx >= 15) & (idx <= 65)).any()
    # labelled throughout: the least active tenth
    act = np.zeros((100, 52))
    act[:, 0] = np.arange(100)[::-1]
    idx = rt.neutral_frames(100, np.ones(100, bool), [{"start": 0, "end": 99, "type": "grimace"}], act)
    assert sorted(idx) == list(range(90, 100))


def test_a_real_smile_replayed_on_another_face_reads_as_a_smile(face, tmp_path):
    """The smile clip's MediaPipe landmarks -> bases -> another person's photo -> MediaPipe again: the smile
    channel follows the source's (correlation) and reaches most of its strength."""
    from fes_live.stream.extract import extract
    from fes_live.stream.face import FaceConfig

    cfg = from_dict(synth.SynthConfig, SMALL)
    src, fps = extract(str(need(VIDEO / "pyfeat_single_face.mp4")), FaceConfig(face_model=str(FACE_MODEL)),
                       progress=False)
    geometry = np.stack([f.geometry for f in src])
    present = np.array([f.face_present for f in src])
    events = [{"start": 12, "end": 75, "type": "smile"}]
    idx = rt.neutral_frames(len(geometry), present, events, geometry[:, :52])
    w, _ = rt.clip_weights(geometry, present, events)
    assert w[:, BASIS_INDEX["AU12"]].max() > 0.5
    path = tmp_path / "smile@other.mp4"
    tl = rt.write_video(path, face, w, fps, cfg, [1])
    out, _ = extract(str(path), FaceConfig(face_model=str(FACE_MODEL)), progress=False)
    assert len(out) == tl.n_frames
    smile = [MEDIAPIPE_BLENDSHAPES.index(n) for n in ("mouthSmileLeft", "mouthSmileRight")]
    a = geometry[: tl.n_frames][:, smile].mean(1)
    b = np.stack([f.geometry for f in out])[:, smile].mean(1)
    a, b = a - np.median(a[idx[idx < tl.n_frames]]), b - np.median(b[idx[idx < tl.n_frames]])
    assert np.corrcoef(a, b)[0, 1] > 0.8
    assert b.max() > 0.5 * a.max() > 0.1
