"""Emotion from blendshape evidence (models/emotion.py) and its place in the OnlineSpotter."""
import numpy as np
import pytest

from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES, SMILE, EmotionEvidenceConfig, evidence_emotion
from fes_live.models.online import OnlineSpotter, SpotterConfig, spot_video, timed_updates
from fes_live.models.spotting import ExpressionUpdate
from fes_live.models.talking import TalkingConfig

I = {n: i for i, n in enumerate(MEDIAPIPE_BLENDSHAPES)}


def test_names_are_mediapipes():
    assert len(MEDIAPIPE_BLENDSHAPES) == 52 and MEDIAPIPE_BLENDSHAPES[0] == "_neutral"
    assert MEDIAPIPE_BLENDSHAPES[44:46] == ("mouthSmileLeft", "mouthSmileRight")


def frames(n=20, **values):
    x = np.zeros((n, 52))
    for name, v in values.items():
        x[:, I[name]] = v
    return x


def marked_fedn(emotion: int):
    """Test-double FEDN: the frames of the window marked in geometry channel 0 are one interval of `emotion`."""
    def fedn(x):
        on = np.flatnonzero(x[0, :, 0] > 0.5)
        logits, iv = np.full((1, 4, 3), -9.0, np.float32), np.zeros((1, 4, 2), np.float32)
        if len(on):
            logits[0, 0, emotion], iv[0, 0] = 4.0, (on[0], on[-1])
        return logits, iv
    return fedn


def spot_marked(geometry: np.ndarray, emotion: int, timed: bool = False, cut: int | None = None,
                **cfg) -> list[tuple[int, ...]]:
    """The spotter over `geometry` with a test-double FEDN that reports the frames marked in blendshape 0 as
    `emotion` (of happiness, surprise, anger): its events' (onset, offset, emotion); `timed`: (frame that made the
    event known, onset, offset, emotion); `cut`: another face from that frame on (a shot cut)."""
    T = len(geometry)
    fedn = marked_fedn(emotion)
    feats = {"geometry": geometry, "roi_flow": np.zeros((T, 12, 2), np.float32), "face_present": np.ones(T, bool),
             "frame_index": np.arange(T), "fps": 30.0, "new_face": np.arange(T) == cut}
    sp = OnlineSpotter(lambda w: (np.zeros(len(w)), np.zeros((len(w), 2))), fedn,
                       SpotterConfig(fedn_window=64, emotions=("happiness", "surprise", "anger"), **cfg))
    if timed:
        return [(at, u.proposal.onset, u.proposal.offset, u.proposal.emotion) for at, u in timed_updates(sp, feats)
                if isinstance(u, ExpressionUpdate)]
    return [(p.onset, p.offset, p.emotion) for p in spot_video(sp, feats)]


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


def test_jaw_cycles_and_talking():
    from fes_live.models.talking import is_talking, jaw_cycles
    t = np.arange(60) / 30.0
    speech = 0.15 + 0.12 * np.sin(2 * np.pi * 3.0 * t)       # 3 jaw cycles a second for 2 s
    assert jaw_cycles(speech, 0.08) in (5, 6)
    assert jaw_cycles(np.linspace(0, 0.8, 60), 0.08) == 0     # one jaw drop held open: no cycle
    assert jaw_cycles(0.01 * np.sin(2 * np.pi * 5 * t), 0.08) == 0  # jitter
    raw = np.zeros((60, 52))
    raw[:, I["jawOpen"]] = speech
    on = TalkingConfig(enabled=True)
    assert is_talking(raw, 30.0, on) and not is_talking(raw[:20], 30.0, on)  # under 1 s: not judged
    assert not is_talking(raw, 30.0)                                          # off by default
    raw[:, I["jawOpen"]] = np.linspace(0, 0.8, 60)
    assert not is_talking(raw, 30.0, on)


def test_spotter_drops_speech_but_keeps_a_smile_while_talking():
    """A test-double FEDN reports frames 60-99 (marked in blendshape 0); the jaw moves at 3 cycles a second there.
    Without a smile the event is speech and is dropped; with a broad smile it stays, as happiness."""
    geometry = np.zeros((200, 1008), np.float32)
    geometry[60:100, 0] = 1.0
    geometry[60:100, I["jawOpen"]] = 0.15 + 0.12 * np.sin(2 * np.pi * 3.0 * np.arange(40) / 30.0)
    talking = TalkingConfig(enabled=True)
    assert spot_marked(geometry, 2, talking=talking) == []
    smiling = geometry.copy()
    smiling[60:100, SMILE] = 0.7
    assert spot_marked(smiling, 2, talking=talking) == [(60, 99, 0)]


def test_a_happiness_said_while_talking_must_read_as_a_smile_outright():
    """Speech spreads the lips, which MediaPipe reads as a smile of 0.3-0.45 (the default's false alarms on
    edtalk's and retalking_4's talking: 0.42 and 0.41 at most); the dev clips' smiles said while talking read 0.5-0.9.
    A test-double FEDN reports frames 60-71 as a happiness while the jaw moves at 3 cycles a second from frame 30:
    with mouthSmile 0.4 it is lips spread by speech, with 0.6 a smile. The second before it is what says the jaw
    moves like speech: its own 0.4 s is too short to judge (`talking.min_seconds`). In a face's first second, with
    less than that before it, the frames after it make up the second (liveportrait_d10's 13-24, 0.44 at most). After
    a shot cut, the face before it does not count."""
    jaw = 0.15 + 0.12 * np.sin(2 * np.pi * 3.0 * np.arange(200) / 30.0)

    def spotted(smile, jaw_from=30, at=60, jaw_to=72, cut=None, **cfg):
        geometry = np.zeros((200, 1008), np.float32)
        geometry[at:at + 12, 0] = 1.0
        geometry[jaw_from:jaw_to, I["jawOpen"]] = jaw[jaw_from:jaw_to]
        geometry[at:at + 12, SMILE] = smile
        return spot_marked(geometry, 0, cut=cut, **cfg)
    assert spotted(0.4) == []
    assert spotted(0.6) == [(60, 71, 0)]
    assert spotted(0.4, jaw_from=60) == [(60, 71, 0)]     # the jaw moves in the event's own frames only
    assert spotted(0.4, speech_smile=0.0) == [(60, 71, 0)]
    assert spotted(0.4, jaw_from=0, at=13, jaw_to=40) == []    # frames 0-29 judged: 13-24 and the frames after
    assert spotted(0.4, jaw_from=13, at=13, jaw_to=19) == [(13, 24, 0)]  # one jaw cycle in that second
    assert spotted(0.4, jaw_from=0, jaw_to=55) == []                    # one face talks, then smiles
    assert spotted(0.4, jaw_from=0, jaw_to=55, cut=50) == [(60, 71, 0)]  # one talks, the next smiles
    with pytest.raises(ValueError, match="speech_smile"):
        SpotterConfig(speech_smile=-1.0)


def test_apex_is_the_top_of_the_emotions_action_units_not_a_one_frame_flicker():
    from fes_live.models.emotion import apex_index
    d = np.zeros((30, len(MEDIAPIPE_BLENDSHAPES)))
    brows, smile = [MEDIAPIPE_BLENDSHAPES.index(n) for n in ("browInnerUp", "mouthSmileLeft")]
    d[8:12, brows] = 0.5        # raised brows held for 4 frames
    d[20, brows] = 0.9          # a one-frame MediaPipe flicker, higher
    d[14:18, smile] = 0.6       # and a smile elsewhere
    assert apex_index(d, "surprise") in (9, 10)         # the held raise, not the flicker
    assert apex_index(d, "happiness") in (15, 16)       # each emotion reads its own action units
    d[25, MEDIAPIPE_BLENDSHAPES.index("eyeBlinkLeft")] = 1.0
    assert apex_index(d, "contempt") in (15, 16)        # no channel set: the largest expression deviation, blinks
    assert apex_index(d, None) in (15, 16)              # and gaze left out
    with pytest.raises(ValueError):
        apex_index(d[:0], "surprise")


def test_an_emotion_whose_action_units_never_move_is_not_supported():
    from fes_live.models.emotion import supported
    still = np.zeros((20, 52))
    assert not supported(still, still, "happiness") and not supported(still, still, "surprise")
    blink = frames(eyeBlinkLeft=0.9, eyeBlinkRight=0.9, browDownLeft=0.02)
    assert not supported(blink, blink, "happiness") and not supported(blink, blink, "surprise")
    faint = frames(mouthSmileLeft=0.15, mouthSmileRight=0.12)  # smile and cheeks: mean 0.07, above the jitter
    assert supported(faint, faint, "happiness", EmotionEvidenceConfig(smile_min=0.0))
    assert not supported(faint, faint, "happiness")   # but a smile of 0.14 is no smile (smile_min 0.3)
    assert not supported(faint, faint, "surprise")
    cheeks = frames(cheekSquintLeft=0.4, cheekSquintRight=0.4, mouthSmileLeft=0.1, mouthSmileRight=0.1)
    assert not supported(cheeks, cheeks, "happiness")  # squinting or puffed cheeks, mouth corners barely up
    smile = frames(mouthSmileLeft=0.35, mouthSmileRight=0.3)
    assert supported(smile, smile, "happiness")
    shut = frames(mouthSmileLeft=0.6, mouthSmileRight=0.5, eyeBlinkLeft=0.8, eyeBlinkRight=0.8)
    assert not supported(shut, shut, "happiness")     # eyes shut on every frame: crying, not a smile
    shut[:5, [I["eyeBlinkLeft"], I["eyeBlinkRight"]]] = 0.1
    assert supported(shut, shut, "happiness")         # open on a quarter of them: a laugh's squeezed eyes
    partly = frames(mouthSmileLeft=0.15, mouthSmileRight=0.15)  # a smile the baseline partly absorbed: it reads
    assert supported(smile, partly, "happiness")                # 0.33, 0.15 above the neutral
    assert supported(frames(mouthSmileLeft=0.6, mouthSmileRight=0.6), still, "happiness")  # absorbed by the baseline
    one_frame = still.copy()
    one_frame[10, SMILE] = 0.12                         # a one-frame flicker is MediaPipe's jitter, not a smile
    assert not supported(one_frame, one_frame, "happiness")
    for unread in ("contempt", "disgust", "sadness", "anger", None):  # MediaPipe misses their action units
        assert supported(still, still, unread)
    assert supported(still, still, "happiness", EmotionEvidenceConfig(min_rise=0.0))
    assert supported(still[:0], still[:0], "happiness")


def test_spotter_drops_an_event_whose_emotions_action_units_never_move():
    """A test-double FEDN reports frames 60-99 (marked in blendshape 0) as happiness while the person only closes
    the eyes there: no event; with a smile there, or with the check off, one; with a faint smile, none; a
    micro-expression is asked only for a happiness's smile (`micro_smile`)."""
    geometry = np.zeros((200, 1008), np.float32)
    geometry[60:100, 0] = 1.0
    geometry[60:100, [I["eyeBlinkLeft"], I["eyeBlinkRight"]]] = 0.9
    assert spot_marked(geometry, 0) == []
    assert spot_marked(geometry, 0, emotion_evidence=EmotionEvidenceConfig(min_rise=0.0)) == [(60, 99, 0)]
    smiling = geometry.copy()
    smiling[70:90, SMILE] = 0.35
    crying = smiling.copy()                           # the mouth stretched with the eyes shut throughout: MediaPipe
    assert spot_marked(crying, 0) == []               # reads a smile (WolfgangLanger 8-134), `smile_eyes_shut`
    assert spot_marked(crying, 0, emotion_evidence=EmotionEvidenceConfig(smile_eyes_shut=0.0)) == [(60, 99, 0)]
    smiling[70:90, [I["eyeBlinkLeft"], I["eyeBlinkRight"]]] = 0.3  # a smile with the eyes open, closed around it
    assert spot_marked(smiling, 0) == [(60, 99, 0)]
    faint = geometry.copy()                           # eyes closing on a faint smile (fomm_10 106-120): the mouth
    faint[70:90, SMILE] = 0.2                         # moves, but never reads as smiling (smile_min)
    assert spot_marked(faint, 0) == []
    no_smile_min = EmotionEvidenceConfig(smile_min=0.0, smile_eyes_shut=0.0)
    assert spot_marked(faint, 0, emotion_evidence=no_smile_min) == [(60, 99, 0)]
    micro = np.zeros_like(geometry)                   # a micro-expression (< 0.5 s) is asked only for its smile
    micro[60:70, 0] = 1.0
    assert spot_marked(micro, 0) == []
    assert spot_marked(micro, 0, emotion_evidence=EmotionEvidenceConfig(micro_smile=False)) == [(60, 69, 0)]
    assert spot_marked(micro, 1) == [(60, 69, 1)]      # a micro surprise is not asked
    micro[60:70, SMILE] = 0.35
    assert spot_marked(micro, 0) == [(60, 69, 0)]


def test_blink_veto_drops_an_expression_mediapipe_cannot_see_while_the_eyes_close():
    """FEDN (test double) reports "anger" over 60-69 (micro) or 60-99 (macro) while the eyes close (eyeBlink +0.5):
    with `blink_veto` (0.3, the default) that is a blink, whatever the model says; a happiness with its smile stays
    (MediaPipe reads it), and so do the anger with the eyes open and the eyes closing on a smile (a laugh the model
    named otherwise); off, nothing is dropped."""
    veto = EmotionEvidenceConfig()
    for end in (70, 100):
        geometry = np.zeros((220, 1008), np.float32)
        geometry[60:end, 0] = 1.0
        geometry[62:68, [I["eyeBlinkLeft"], I["eyeBlinkRight"]]] = 0.5
        assert spot_marked(geometry, 2, emotion_evidence=EmotionEvidenceConfig(blink_veto=0)) == [(60, end - 1, 2)]
        assert spot_marked(geometry, 2, emotion_evidence=veto) == []
        geometry[62:68, I["eyeBlinkRight"]] = 0.0          # one eye: both eyes' mean 0.25, under the veto
        assert spot_marked(geometry, 2, emotion_evidence=veto) == [(60, end - 1, 2)]
        geometry[62:68, I["eyeBlinkRight"]] = 0.5
        laugh = geometry.copy()
        laugh[63:66, SMILE] = 0.35                         # a smile, too brief to name the interval happiness
        assert spot_marked(laugh, 2, emotion_evidence=veto) == [(60, end - 1, 2)]
        geometry[60:end, SMILE] = 0.6
        assert [e[2] for e in spot_marked(geometry, 0, emotion_evidence=veto)] == [0]  # (a macro one grows)


def test_an_interval_grows_to_its_action_units_movement():
    """FEDN (the test double) reports 60-99 as happiness; the smile runs 52-107: the event is 51-108 (the 3-frame
    mean spreads it by a frame), heard once the smile has come down, not at FEDN's offset. Growth stops grow_seconds
    (15 frames) beyond FEDN's ends, and switched off the event is FEDN's."""
    geometry = np.zeros((200, 1008), np.float32)
    geometry[60:100, 0] = 1.0
    smile = geometry.copy()
    smile[52:108, SMILE] = 0.6
    [(heard, *event)] = spot_marked(smile, 0, timed=True)
    assert tuple(event) == (51, 108, 0) and heard >= 109
    assert spot_marked(smile, 0, grow_below=0.0) == [(60, 99, 0)]
    long = geometry.copy()
    long[30:140, SMILE] = 0.6
    assert spot_marked(long, 0) == [(45, 114, 0)]
    with pytest.raises(ValueError):
        SpotterConfig(grow_below=1.0)


def test_only_an_interval_that_can_become_an_event_waits_for_its_action_units():
    """Below the score threshold, FEDN's 60-99 over a smile running to 130 is settled once a window has seen it
    whole (frame 111: out of the pool that later windows' NMS and onsets consult); above it, it waits for the smile
    to come down."""
    geometry = np.zeros((200, 1008), np.float32)
    geometry[60:100, 0] = 1.0
    geometry[52:131, SMILE] = 0.6

    def pool_at_frame_112(threshold: float) -> list[tuple[int, int]]:
        sp = OnlineSpotter(lambda w: (np.zeros(len(w)), np.zeros((len(w), 2))), marked_fedn(0),
                           SpotterConfig(fedn_window=64, emotions=("happiness", "surprise", "anger"),
                                         fedn_only_threshold=threshold))
        for t in range(113):
            sp.push(t, True, geometry[t], np.zeros((12, 2), np.float32))
        return [(d.onset, d.offset) for d in sp._pool]

    assert pool_at_frame_112(0.5) == [(60, 99)]
    assert pool_at_frame_112(0.9999) == []


def onsets_and_events(geometry: np.ndarray, cut: int | None = None, **cfg) -> list[tuple[int, str, int, int]]:
    """(frame that made it known, update type, its frame, track) of the spotter over `geometry`, FEDN (the test
    double of `spot_marked`) announcing onsets; `cut`: a new face from that frame (a shot cut)."""
    from fes_live.models.spotting import CancelUpdate, OnsetUpdate

    T = len(geometry)
    feats = {"geometry": geometry, "roi_flow": np.zeros((T, 12, 2), np.float32), "face_present": np.ones(T, bool),
             "frame_index": np.arange(T), "fps": 30.0, "new_face": np.arange(T) == cut}
    sp = OnlineSpotter(lambda w: (np.zeros(len(w)), np.zeros((len(w), 2))), marked_fedn(0),
                       SpotterConfig(fedn_window=64, emotions=("happiness", "surprise", "anger"), onsets="fedn", **cfg))
    out = []
    for at, u in timed_updates(sp, feats):
        if isinstance(u, (OnsetUpdate, CancelUpdate)):
            out.append((at, type(u).__name__, u.frame_index, u.track))
        elif isinstance(u, ExpressionUpdate):
            out.append((at, "ExpressionUpdate", u.proposal.onset, u.track))
    return out


def test_action_units_announce_an_onset_before_fedn_can():
    """A smile from frame 52 (FEDN, the test double, reports 60-99): with `au_onset` its onset is announced three
    frames into the rise, at its first frame, and the event takes that track; FEDN's own first announcement comes
    only from a window holding enough of it. A smile FEDN never reports is announced too, and cancelled once the
    windows have seen it end; brows raised are a surprise's; cheeks with no smile announce nothing under
    `smile_min`; a face already smiling when it appears is announced from its raw smile."""
    geometry = np.zeros((220, 1008), np.float32)
    geometry[60:100, 0] = 1.0
    geometry[52:108, SMILE] = 0.6
    [onset, final] = onsets_and_events(geometry, au_onset=0.2)
    assert onset == (54, "OnsetUpdate", 51, 0) and final[1:] == ("ExpressionUpdate", 51, 0)
    [fedn_onset, same] = onsets_and_events(geometry)
    assert fedn_onset[1] == "OnsetUpdate" and fedn_onset[0] >= 63 and same[1:] == final[1:]
    unconfirmed = geometry.copy()
    unconfirmed[:, 0] = 0.0
    [onset, cancel] = onsets_and_events(unconfirmed, au_onset=0.2)
    assert onset == (54, "OnsetUpdate", 51, 0) and cancel[1:] == ("CancelUpdate", 51, 0) and cancel[0] > 107
    brows = np.zeros((220, 1008), np.float32)
    brows[52:108, [I["browInnerUp"], I["browOuterUpLeft"], I["browOuterUpRight"]]] = 0.6
    assert onsets_and_events(brows, au_onset=0.2)[0][:3] == (54, "OnsetUpdate", 51)
    faint = np.zeros((220, 1008), np.float32)
    faint[52:108, [I["cheekSquintLeft"], I["cheekSquintRight"]]] = 0.6
    faint[52:108, SMILE] = 0.2
    assert onsets_and_events(faint, au_onset=0.2) == []
    assert onsets_and_events(faint, au_onset=0.2, emotion_evidence=EmotionEvidenceConfig(smile_min=0))[0][1] == \
        "OnsetUpdate"
    smiling = np.zeros((220, 1008), np.float32)   # already smiling when the face appears: the baseline starts on it
    smiling[:40, SMILE] = 0.6
    smiling[20:40, 0] = 1.0                       # (FEDN's input is the baseline's delta too: it marks 20-39)
    [onset, final] = onsets_and_events(smiling, au_onset=0.2)
    assert onset == (2, "OnsetUpdate", 0, 0) and final[1:] == ("ExpressionUpdate", 20, 0)
    with pytest.raises(ValueError, match="au_onset"):
        SpotterConfig(au_onset=-1)


def test_a_new_face_gets_its_own_action_unit_onset():
    """A smile from frame 52 still up at a shot cut (frame 120) to another face already smiling: the second face's
    smile is announced too, from its raw smile; the first face's rise does not hold it back."""
    geometry = np.zeros((260, 1008), np.float32)
    geometry[52:260, SMILE] = 0.6
    onsets = [u for u in onsets_and_events(geometry, cut=120, au_onset=0.2) if u[1] == "OnsetUpdate"]
    assert [(u[0], u[2]) for u in onsets] == [(54, 51), (122, 120)]


def test_an_expression_the_blendshapes_name_as_one_already_reported_is_not_reported_again():
    """FEDN (test double) reports a smile's first part, 40-70, as happiness, then a later window the span 50-140 as
    "anger"; the blendshapes show the smile over it, so that is happiness, and sharing 0.68 of the first event it is
    the expression already reported: one event, not two."""
    T = 220
    geometry = np.zeros((T, 1008), np.float32)
    geometry[40:141, SMILE] = 0.6

    def events() -> list[tuple[int, int, int]]:
        ends = iter(range(15, T + 16, 16))     # the grid's windows (every 16 frames, no announcing ones between)

        def fedn(x):
            end = next(ends)
            start = max(0, end - 127)
            logits, iv = np.full((1, 4, 3), -9.0, np.float32), np.zeros((1, 4, 2), np.float32)
            if 70 + 4 <= end < 150:
                logits[0, 0, 0], iv[0, 0] = 4.0, (40 - start, 70 - start)
            elif end >= 150:
                logits[0, 0, 2], iv[0, 0] = 4.0, (50 - start, 140 - start)
            return logits, iv

        feats = {"geometry": geometry, "roi_flow": np.zeros((T, 12, 2), np.float32),
                 "face_present": np.ones(T, bool), "frame_index": np.arange(T), "fps": 30.0}
        sp = OnlineSpotter(lambda w: (np.zeros(len(w)), np.zeros((len(w), 2))), fedn,
                           SpotterConfig(emotions=("happiness", "surprise", "anger"), grow_below=0.0, onset_stride=0))
        return [(p.onset, p.offset, p.emotion) for p in spot_video(sp, feats)]

    assert events() == [(40, 70, 0)]


def test_expression_level_is_the_largest_rise_of_an_expression_channel():
    """Blinks, gaze and the mouth's speech movements come with no expression, and a channel below its neutral is not
    one either."""
    from fes_live.models.emotion import expression_level
    delta = np.zeros((5, 52))
    delta[0, MEDIAPIPE_BLENDSHAPES.index("eyeBlinkLeft")] = 0.9          # a blink
    delta[0, MEDIAPIPE_BLENDSHAPES.index("eyeLookDownRight")] = 0.7      # a look down
    delta[1, MEDIAPIPE_BLENDSHAPES.index("mouthSmileLeft")] = 0.6        # a smile ...
    delta[1, MEDIAPIPE_BLENDSHAPES.index("browInnerUp")] = 0.2
    delta[2, MEDIAPIPE_BLENDSHAPES.index("mouthSmileRight")] = -0.8      # a baseline taken on a smile
    delta[3, MEDIAPIPE_BLENDSHAPES.index("mouthUpperUpLeft")] = 1.4     # beyond the activations' range
    for name in ("jawOpen", "mouthClose", "mouthFunnel", "mouthLowerDownLeft", "mouthRollUpper"):  # a word
        delta[4, MEDIAPIPE_BLENDSHAPES.index(name)] = 0.5
    delta[4, MEDIAPIPE_BLENDSHAPES.index("mouthStretchRight")] = 0.1
    assert expression_level(delta).tolist() == [0.0, 0.6, 0.0, 1.0, 0.1]
    assert expression_level(np.zeros((0, 52))).shape == (0,)
