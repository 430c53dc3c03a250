"""NeutralBaseline: warm-up mean, slow EMA, freeze on expressive frames, reset per track; batch == live."""
import numpy as np
import pytest

from fes_live.models.baseline import BaselineConfig, NeutralBaseline, baseline_normalize

# alpha = 1 / (ema_seconds * fps) = 0.5; feature 0 plays the blendshape, 1-2 landmarks
CFG = BaselineConfig(fps=2.0, warmup_frames=3, ema_seconds=1.0, freeze_delta=0.15, blendshape_dim=1)


def test_hand_computed_sequence():
    b = NeutralBaseline(CFG)
    steps = [  # (geometry, face, expected delta)
        ([0.0, 0.0, 0.0], True, [0.0, 0.0, 0.0]),     # first frame is the baseline
        ([0.1, 2.0, 0.0], True, [0.05, 1.0, 0.0]),    # warm-up: running mean [0.05, 1, 0]
        ([0.2, 4.0, 0.0], True, [0.1, 2.0, 0.0]),     # mean [0.1, 2, 0]
        ([0.1, 4.0, 0.0], True, [0.0, 1.0, 0.0]),     # calm: EMA 0.5 -> [0.1, 3, 0]
        ([0.9, 0.0, 0.0], True, [0.8, -3.0, 0.0]),    # expressive (0.8 > 0.15): frozen
        ([0.1, 3.0, 0.0], True, [0.0, 0.0, 0.0]),     # calm again, baseline still [0.1, 3, 0]
        ([5.0, 5.0, 5.0], False, [0.0, 0.0, 0.0]),    # no face: zeros, and the person is forgotten
        ([1.0, 1.0, 1.0], True, [0.0, 0.0, 0.0]),     # new track starts a new baseline
    ]
    for geom, face, want in steps:
        assert b.update(np.array(geom), face) == pytest.approx(np.array(want, np.float32), abs=1e-6)


def test_batch_equals_live_and_is_causal():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(50, 1008)).astype(np.float32)
    face = np.ones(50, bool)
    face[20:23] = False
    out = baseline_normalize(g, face)
    live = NeutralBaseline()
    assert np.array_equal(out, np.stack([live.update(g[t], face[t]) for t in range(50)]))
    g2 = g.copy()
    g2[30:] += 10  # the future does not change the past
    assert np.array_equal(baseline_normalize(g2, face)[:30], out[:30])
    assert not out[20:23].any()


def test_a_new_face_starts_its_own_baseline_on_its_first_frame():
    """After a shot cut there is no frame without a face: `new_face` is what says the resting face changed."""
    g = np.zeros((60, 1008), np.float32)
    g[30:, :3] = 0.7                              # the second person's neutral face reads 0.7 on three channels
    face = np.ones(60, bool)
    carried = baseline_normalize(g, face)
    assert carried[30:, :3].min() > 0.6           # without the mark: an "expression" that never ends
    cut = np.zeros(60, bool)
    cut[30] = True
    fresh = baseline_normalize(g, face, new_face=cut)
    assert not fresh.any()
    live = NeutralBaseline()
    assert np.array_equal(fresh, np.stack([live.update(g[t], True, bool(cut[t])) for t in range(60)]))
    with pytest.raises(ValueError, match="len\\(new_face\\)"):
        baseline_normalize(g, face, new_face=cut[:10])


def test_shape_error():
    with pytest.raises(ValueError, match="T = len"):
        baseline_normalize(np.zeros((5, 4)), np.ones(4, bool))


def test_a_face_that_starts_smiling_does_not_hide_the_next_smile():
    """Smiling for the warm-up, then neutral for 2 s, then smiling again: the second smile stands out, because the
    smile channel fell well below the baseline and the baseline followed it down (landmarks wait until then)."""
    cfg = BaselineConfig(fps=30.0, blendshape_dim=2)
    b = NeutralBaseline(cfg)
    smile, neutral = np.array([0.8, 0.05, 1.0]), np.array([0.05, 0.05, 0.0])
    for _ in range(30):
        b.update(smile, True)
    assert b.update(neutral, True)[0] < -0.7  # the baseline is the smile
    for _ in range(60):
        b.update(neutral, True)
    again = b.update(smile, True)
    assert again[0] > 0.6 and abs(again[1]) < 1e-6
    stuck = NeutralBaseline(BaselineConfig(fps=30.0, blendshape_dim=2, relax_seconds=0))  # the rule off
    for g in [smile] * 30 + [neutral] * 61:
        stuck.update(g, True)
    assert stuck.update(smile, True)[0] == pytest.approx(0.0, abs=1e-6)


def test_neutral_ceiling_shows_a_smile_the_face_appeared_with():
    """A face smiling from its first frame: without a ceiling the smile becomes the neutral face; with one, the
    baseline starts no higher than a resting face reads, the smile stands out and the landmarks are untouched."""
    smile = np.zeros((40, 4))
    smile[:20, 0] = 0.8           # blendshape 0 smiles for 20 frames, then rests at 0.05
    smile[20:, 0] = 0.05
    smile[:, 2:] = 3.0            # landmarks
    plain = BaselineConfig(fps=10.0, warmup_frames=5, blendshape_dim=2)
    capped = BaselineConfig(fps=10.0, warmup_frames=5, blendshape_dim=2, neutral_ceiling=(0.1, 1.0))
    face = np.ones(40, bool)
    assert np.abs(baseline_normalize(smile, face, plain)[:20, 0]).max() < 1e-6
    out = baseline_normalize(smile, face, capped)
    assert (out[:20, 0] == pytest.approx(0.7)) and np.abs(out[25:, 0]).max() < 0.06
    assert not out[:, 1:].any()
    with pytest.raises(ValueError, match="2 values"):
        NeutralBaseline(BaselineConfig(blendshape_dim=2, neutral_ceiling=(0.1,)))


def _frame(blink: float = 0.0, squint: float = 0.0, smile: float = 0.0) -> np.ndarray:
    from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES as B
    g = np.zeros(len(B) + 4)
    for name, v in (("eyeBlinkLeft", blink), ("eyeBlinkRight", blink), ("eyeSquintLeft", squint),
                    ("eyeSquintRight", squint), ("mouthSmileLeft", smile)):
        g[B.index(name)] = v
    return g


def _squint(delta: np.ndarray) -> float:
    from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES as B
    return float(delta[B.index("eyeSquintLeft")])


def test_eyes_closed_hold_keeps_the_squint_a_blink_raises_out():
    """A blink reads as a squint (+0.3 here); with the hold the squint keeps its open-eye value, other channels
    (a smile during the blink) still pass, and once the eyes open the squint is read again."""
    seq = [_frame(squint=0.1)] * 20 + [_frame(blink=0.8, squint=0.4, smile=0.5)] * 4 + [_frame(squint=0.35)]
    plain, held = NeutralBaseline(BaselineConfig()), NeutralBaseline(BaselineConfig(eyes_closed_hold=0.5))
    p = [plain.update(g, True) for g in seq]
    h = [held.update(g, True) for g in seq]
    assert _squint(p[21]) == pytest.approx(0.3, abs=1e-6)
    assert _squint(h[21]) == pytest.approx(0.0, abs=1e-6)
    from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES as B
    assert h[21][B.index("mouthSmileLeft")] == pytest.approx(0.5, abs=1e-6)
    assert h[21][B.index("eyeBlinkLeft")] == pytest.approx(0.8, abs=1e-6)
    assert _squint(h[-1]) == pytest.approx(0.25, abs=1e-6)        # eyes open: a real squint shows


def test_eyes_closed_hold_waits_for_open_eyes_and_restarts_with_the_track():
    b = NeutralBaseline(BaselineConfig(eyes_closed_hold=0.5, warmup_frames=1))
    b.update(_frame(blink=0.9, squint=0.6), True)                  # a track that starts with closed eyes:
    assert _squint(b.update(_frame(blink=0.9, squint=0.7), True)) == pytest.approx(0.1, abs=1e-3)  # nothing held
    b.update(_frame(squint=0.2), True)                              # open: 0.2 is what is held from now on
    assert b.state()["open_eyes"] == pytest.approx([0.2, 0.2])
    b.update(_frame(), False)                                       # no face: the person is forgotten
    assert b.open_eyes is None


def test_eyes_closed_hold_state_round_trip_and_validation():
    cfg = BaselineConfig(eyes_closed_hold=0.5)
    b = NeutralBaseline(cfg)
    for g in [_frame(squint=0.1)] * 20:
        b.update(g, True)
    c = NeutralBaseline.from_state(b.state(), cfg)
    closed = _frame(blink=0.9, squint=0.5)
    assert np.array_equal(b.update(closed, True), c.update(closed, True))
    for bad in ([0.1], ["x", "y"], {"a": 1}, [float("nan"), 0.0]):
        with pytest.raises(ValueError):
            NeutralBaseline.from_state({**b.state(), "open_eyes": bad}, cfg)
    with pytest.raises(ValueError, match="not MediaPipe blendshapes"):
        NeutralBaseline(BaselineConfig(eyes_closed_hold=0.5, eyes_closed_channels=("eyeSquintLift",)))
    with pytest.raises(ValueError, match="needs MediaPipe"):
        NeutralBaseline(BaselineConfig(eyes_closed_hold=0.5, blendshape_dim=1))


def test_rises_only_zeroes_channels_below_their_baseline_and_nothing_else():
    """Raised brows at the start, then dropping as the eyes close: without the option FEDN sees the brows 0.6 below
    neutral; with it, 0. A channel above its baseline, and the landmarks, are unchanged."""
    from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES as B
    up, smile = B.index("browInnerUp"), B.index("mouthSmileLeft")
    seq = np.zeros((40, len(B) + 4))
    seq[:, up] = 0.8
    seq[30:, up] = 0.2
    seq[30:, smile] = 0.5
    seq[:, -1] = np.linspace(0, 1, 40)                      # a landmark coordinate, falling below its mean later
    plain = baseline_normalize(seq, np.ones(40, bool), BaselineConfig(relax_seconds=0))
    rises = baseline_normalize(seq, np.ones(40, bool), BaselineConfig(relax_seconds=0, rises_only=True))
    assert plain[35, up] == pytest.approx(-0.6, abs=1e-6) and rises[35, up] == 0.0
    assert rises[35, smile] == plain[35, smile] == pytest.approx(0.5, abs=1e-6)
    assert np.array_equal(rises[:, len(B):], plain[:, len(B):])
    assert (rises[:, :len(B)] >= 0).all()
