"""Windows mean the same time at any frame rate: a 200 fps stream reaches the models at ~30 fps, a 12 fps one at 24
(issue 10)."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, VIDEO, need
from fes_live.models.online import OnlineSpotter, stream_updates
from fes_live.models.spotting import ExpressionUpdate, IntensityUpdate, KIND_NAMES


@pytest.fixture(scope="module")
def smile(tmp_path_factory):
    clip = need(VIDEO / "pyfeat_single_face.mp4")
    out = tmp_path_factory.mktemp("smile") / "smile.npz"
    subprocess.run([sys.executable, "-m", "fes_live.stream.cli", "extract", str(clip), "-o", str(out),
                    "--no-progress"], check=True, cwd=REPO, capture_output=True)
    return dict(np.load(out))


@pytest.fixture(scope="module")
def engine():
    import torch

    from fes_live.stream.engine import load_engine
    torch.set_num_threads(1)
    return load_engine(None)


def faster(f: dict, k: int) -> dict:
    """The clip as a camera k times faster would see it: every frame k times, flow per frame 1/k."""
    T = len(f["frame_index"])
    return {"geometry": np.repeat(f["geometry"], k, axis=0), "roi_flow": np.repeat(f["roi_flow"], k, axis=0) / k,
            "face_present": np.repeat(f["face_present"], k), "frame_index": np.arange(T * k),
            "fps": float(f["fps"]) * k}


def events(spotter, feats) -> list[tuple]:
    return [(u.proposal.onset, u.proposal.offset, KIND_NAMES[u.proposal.kind], u.proposal.emotion)
            for u in stream_updates(spotter, feats) if isinstance(u, ExpressionUpdate)]


def test_a_200_fps_stream_gives_the_30_fps_answer_in_its_own_frames(smile, engine):
    ref = events(engine.new_spotter(fps=float(smile["fps"])), smile)
    assert len(ref) == 1 and ref[0][2] == "macro", ref
    k = 7  # 30 -> 210 fps (SAMM-LV and CAS(ME)^2 raw footage are 200 fps)
    fast = faster(smile, k)
    spotter = engine.new_spotter(fps=fast["fps"])
    assert spotter.decimate == k and spotter.stream_fps == fast["fps"]
    got = events(spotter, fast)
    (on, off, kind, emo), = ref
    assert got == [(on * k, off * k + k - 1, kind, emo)], (got, ref)
    # every update is in stream frames: the intensity curve covers the fast clip's frame range
    ups = [u for u in stream_updates(engine.new_spotter(fps=fast["fps"]), fast) if isinstance(u, IntensityUpdate)]
    curve = [u.frame_index for u in ups]
    assert curve[0] == 0 and curve[-1] >= len(fast["frame_index"]) - k and curve == sorted(curve)
    # so does the expression level: up over the smile's frames, as at 30 fps
    ref_level = {u.frame_index: u.level for u in stream_updates(engine.new_spotter(fps=float(smile["fps"])), smile)
                 if isinstance(u, IntensityUpdate)}
    inside = [u.level for u in ups if on * k <= u.frame_index <= off * k + k - 1]
    assert max(inside) == pytest.approx(max(ref_level[f] for f in range(on, off + 1)), abs=0.05)


def test_without_resampling_200_fps_breaks_the_answer(smile, engine):
    """What the engine did before: 128-frame windows are 0.6 s at 210 fps and the smile is not found as it is."""
    fast = faster(smile, 7)
    cfg = dataclasses.replace(engine.spotter_config(fast["fps"]), model_fps=0.0)
    plain = OnlineSpotter(engine.gim, engine.fedn, cfg)
    assert plain.decimate == 1
    ref = events(engine.new_spotter(fps=fast["fps"]), fast)
    assert events(plain, fast) != ref


def slower(f: dict, k: int) -> dict:
    """The clip as a camera k times slower would see it: every k-th frame, flow summed over the k frames."""
    T = len(f["frame_index"]) // k * k
    return {"geometry": f["geometry"][k - 1:T:k], "roi_flow": f["roi_flow"][:T].reshape(T // k, k, 12, 2).sum(1),
            "face_present": f["face_present"][k - 1:T:k], "frame_index": np.arange(T // k),
            "fps": float(f["fps"]) / k}


def test_without_upsampling_10_fps_moves_the_answer(smile, engine):
    """What the engine did before: at 10 fps a 128-frame window is 12.8 s and the smile's boundaries move (engine
    0.7.0 happens to get this clip right at 15 fps without upsampling, within a frame at each end)."""
    (on, off, _, _), = events(engine.new_spotter(fps=float(smile["fps"])), smile)
    slow = slower(smile, 3)
    cfg = dataclasses.replace(engine.spotter_config(slow["fps"]), model_fps=0.0)
    plain = OnlineSpotter(engine.gim, engine.fedn, cfg)
    assert plain.upsample == 1
    (on3, off3, _, _), = events(plain, slow)
    assert abs(on3 - on // 3) + abs(off3 - off // 3) > 2


@pytest.mark.parametrize("k", [2, 3])
def test_a_slow_stream_gives_the_30_fps_answer_in_its_own_frames(smile, engine, k):
    """15 and 10 fps (xportrait_driving_video is 12): each frame reaches the models as k, so a 128-frame window is
    still 4.3 s."""
    (on, off, kind, emo), = events(engine.new_spotter(fps=float(smile["fps"])), smile)
    slow = slower(smile, k)
    spotter = engine.new_spotter(fps=slow["fps"])
    assert spotter.upsample == k and spotter.decimate == 1 and spotter.cfg.fps == float(smile["fps"])
    (on2, off2, kind2, emo2), = events(spotter, slow)
    assert (kind2, emo2) == (kind, emo) and abs(on2 - on // k) <= 1 and abs(off2 - off // k) <= 1
    # one intensity value per stream frame, in stream frames
    curve = [u.frame_index for u in stream_updates(engine.new_spotter(fps=slow["fps"]), slow)
             if isinstance(u, IntensityUpdate)]
    assert curve == list(range(len(slow["frame_index"])))


def test_frame_rates_near_the_engines_are_left_alone(engine):
    for fps, k in ((12.0, 1), (25.0, 1), (30.0, 1), (44.0, 1), (60.0, 2), (120.0, 4), (200.0, 7)):
        assert engine.new_spotter(fps=fps).decimate == k, fps
    for fps, u in ((8.0, 4), (10.0, 3), (12.0, 2), (15.0, 2), (20.0, 2), (21.0, 1), (25.0, 1), (60.0, 1)):
        assert engine.new_spotter(fps=fps).upsample == u, fps


def test_gaps_and_missing_faces_inside_a_model_frame(engine):
    """Frames grouped k at a time: a gap skips groups, a group with mostly no face is a no-face frame, and the
    ordering rule still holds for stream frames."""
    s = engine.new_spotter(fps=90.0)  # k = 3
    g, r = np.zeros(1008, np.float32), np.zeros((12, 2), np.float32)
    for t in (0, 1, 2, 3, 4, 5, 9, 10, 30, 31, 32):
        s.push(t, t not in (9, 10), g, r)
    assert s._last == 3 and s._group_index == 10  # groups 0, 1, 3 (no face), then 10 (being gathered)
    with pytest.raises(ValueError, match="increase"):
        s.push(31, True, g, r)
    s.flush()
