"""`fes-train real` (train/real_train.py): targets, time-stretched windows, the fine-tune and its engine."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES
from fes_live.models.fedn import input_mask
from fes_live.train import real_eval
from fes_live.train import real_train as rt


@pytest.fixture(scope="module")
def engine():
    from fes_live.stream.engine import load_engine
    torch.set_num_threads(1)
    return load_engine(None, backend="export", device="cpu")


def clip(T=300, gt=((100, 140),), other=((200, 230),), seed=0) -> rt.Clip:
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=0.01, size=(T, 1008)).astype(np.float32)
    for s, e in gt:
        x[s:e + 1, 44:46] += 0.6  # mouthSmileLeft/Right well above neutral
    return rt.Clip("c", "person", 30.0, x, np.array(gt, np.float64).reshape(-1, 2), np.zeros(len(gt), np.int64),
                   np.array(other, np.float64).reshape(-1, 2), {})


def test_window_sample_maps_labels_into_the_stretched_window():
    c = clip()
    rng = np.random.default_rng(3)
    for _ in range(50):
        x, gt, ign, valid = rt.window_sample(c, 128, rng, rt.RealTrainConfig(), on_expression=True)
        assert x.shape == (128, 1008) and valid == 128
        (s, e), = gt
        assert -1 <= s and e <= 128  # the expression is inside the window
        frames = np.arange(128)
        inside = (frames >= np.ceil(s)) & (frames <= np.floor(e))
        assert (x[inside, 44] > 0.4).all() and (x[~inside & ((frames < s - 1) | (frames > e + 1)), 44] < 0.2).all()
        assert ign.shape == (1, 2)


def test_talking_windows_land_on_the_clips_talking():
    c = clip(T=900, gt=((100, 140),), other=())
    c.talking = np.array([[500.0, 560.0]])
    rng = np.random.default_rng(0)
    cfg = rt.RealTrainConfig()
    starts, ends = [], []
    for _ in range(200):
        x, gt, _, n_valid = rt.window_sample(c, 128, rng, cfg, on_expression=False, on_talking=True)
        assert x.shape == (128, 1008) and n_valid == 128
        # the label [100, 140] maps to window frames [(100 - s) / r, (141 - s) / r - 1]: recover s and r
        r = 41 / (gt[0, 1] - gt[0, 0] + 1)
        starts.append(100 - gt[0, 0] * r)
        ends.append(starts[-1] + 128 * r - 1)
    starts, ends = np.array(starts), np.array(ends)
    assert (starts <= 560).all() and (ends >= 500).all()                      # every window holds some talking
    assert starts.min() < 500 - 20 and ends.max() > 560 + 20                  # placed around it, not pinned
    assert not rt.RealTrainConfig().talking_windows                          # 0.6.0's recipe: off
    assert "talking_windows" not in rt.training_recipe(rt.RealTrainConfig())  # so its kept folds still match
    assert rt.training_recipe(rt.RealTrainConfig(talking_windows=0.5))["talking_windows"] == 0.5


def test_clean_talking_keeps_long_runs_without_expressions():
    events = [{"type": "talking", "start": 0, "end": 199}, {"type": "smile", "start": 50, "end": 80},
              {"type": "pout", "start": 170, "end": 175}, {"type": "blink", "start": 10, "end": 15}]
    runs = rt.clean_talking(events, frames=190, fps=30.0)
    # 0-49 and 81-169 are long enough; 176-189 (14 frames) is under a second; the blink does not cut talking
    assert runs.tolist() == [[0.0, 49.0], [81.0, 169.0]]
    assert rt.clean_talking([{"type": "smile", "start": 0, "end": 99}], 100, 30.0).shape == (0, 2)


def test_overlay_talking_moves_only_speech_channels_and_keeps_a_stronger_expression():
    cols = rt.speech_channels()
    names = list(MEDIAPIPE_BLENDSHAPES)
    assert {names[i] for i in cols} >= {"jawOpen", "mouthSmileLeft", "mouthFunnel"}
    assert not {names[i] for i in cols} & {"browInnerUp", "eyeBlinkLeft", "cheekSquintLeft"}
    target = clip(T=128, gt=((40, 90),))                        # smile 0.6 on mouthSmile (44, 45)
    donor = clip(T=300, gt=(), seed=1)
    jaw = names.index("jawOpen")
    donor.inputs[:, jaw] = 0.05 + 0.25 * (np.sin(np.arange(300) / 2.0) > 0)   # the jaw opening and closing
    donor.inputs[:, 44] = 0.2                                  # speech's weak smile reading
    x = target.inputs.copy()
    rt.overlay_talking(x, 128, donor, np.array([0.0, 299.0]), np.random.default_rng(0), cols)
    assert np.array_equal(x[:, ~np.isin(np.arange(1008), cols)], target.inputs[:, ~np.isin(np.arange(1008), cols)])
    starts = [k for k in range(300 - 128 + 1) if np.array_equal(x[:, jaw], donor.inputs[k:k + 128, jaw])]
    assert starts and x[:, jaw].max() == pytest.approx(0.3)   # one stretch of the donor's talking, in order
    assert (x[40:91, 44] > 0.5).all()                          # the smile stays a smile
    assert (np.abs(x[:40, 44] - 0.2) < 1e-6).all()             # the neutral mouth now reads speech's smile


def test_targets_leave_other_facial_actions_out_of_the_loss(engine):
    model = rt.base_fedn(engine, "expression")
    cfg = rt.RealTrainConfig()
    t = rt.targets(model, np.array([[20.0, 50.0]]), np.array([0]), np.array([[80.0, 100.0]]), 128, cfg)
    c = model.anchors.centres.numpy()
    assert t.positive.any() and (t.cls[t.positive, 0] == 1).all()
    assert not t.valid[(c >= 80) & (c <= 100)].any()          # the pout: neither positive nor negative
    assert t.valid[(c > 105) & ~t.positive].all()            # background after it: negatives


def test_open_end_learns_a_start_whose_end_is_not_in_the_window_yet(engine):
    model = rt.base_fedn(engine, "expression")
    running = np.array([[110.0, 170.0]])                       # 18 of its 61 frames inside a 128-frame window
    c = model.anchors.centres.numpy()
    plain = rt.targets(model, running, np.array([0]), np.zeros((0, 2)), 128, rt.RealTrainConfig())
    assert not plain.positive.any() and not plain.valid[c >= 110].any()   # too little inside: out of the loss
    t = rt.targets(model, running, np.array([0]), np.zeros((0, 2)), 128, rt.RealTrainConfig(open_end=8))
    assert t.positive.any() and (c[t.positive] >= 110).all()   # learnt, cut at the window's end
    assert not rt.targets(model, running, np.array([0]), np.zeros((0, 2)), 128,
                          rt.RealTrainConfig(open_end=20)).positive.any()  # not yet 20 frames in
    begun = np.array([[-30.0, 20.0]])                          # started before the window: the rule as before
    assert not rt.targets(model, begun, np.array([0]), np.zeros((0, 2)), 128,
                          rt.RealTrainConfig(open_end=8)).positive.any()


def test_open_end_windows_end_inside_an_expression(engine, monkeypatch):
    c = clip(T=600, gt=((300, 400),), other=())
    seen = windows_seen(engine, monkeypatch, c, rt.RealTrainConfig(epochs=1, windows_per_clip=64, rate=(1.0, 1.0),
                                                                     open_end=8))
    plain = windows_seen(engine, monkeypatch, c, rt.RealTrainConfig(epochs=1, windows_per_clip=64, rate=(1.0, 1.0)))
    inside = lambda w: int(((w[:, -1, 44] > 0.3) & (w[:, 0, 44] < 0.3)).sum())  # noqa: E731 (smile on at the end)
    assert inside(seen) >= inside(plain) + 8   # half the 32 expression windows, against background ones by chance


def test_base_fedn_keeps_the_weights_and_sees_only_expression_channels(engine):
    model = rt.base_fedn(engine, "expression")
    start = torch.load(engine.folder / "fedn.pt", weights_only=True)
    assert torch.equal(model.state_dict()["backbone.scale.weight"], start["backbone.scale.weight"])
    mask = input_mask("expression")
    assert mask[:52].sum() == 42 and mask[52:].sum() == 0
    x = torch.randn(1, 128, 1008)
    y = x.clone()
    y[..., 52:] = torch.randn(1, 128, 956)  # landmarks do not matter to it
    with torch.no_grad():
        assert torch.allclose(model.eval()(x).cls_logits, model(y).cls_logits)


def windows_seen(engine, monkeypatch, c: rt.Clip, cfg: rt.RealTrainConfig) -> torch.Tensor:
    """(N, W, F): every training window `finetune` feeds FEDN, on one clip."""
    seen = []
    base = rt.base_fedn

    def recorded(engine_, inputs):
        model = base(engine_, inputs)
        model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
        return model

    monkeypatch.setattr(rt, "base_fedn", recorded)
    rt.finetune(engine, [c], cfg, progress=False)
    monkeypatch.undo()
    return torch.cat(seen)


def test_mirror_swaps_each_left_blendshape_with_its_right_twin_and_trains_on_both_sides(engine, monkeypatch):
    names = list(MEDIAPIPE_BLENDSHAPES)
    order = rt.mirror_columns(1008)
    assert names[order[names.index("mouthSmileLeft")]] == "mouthSmileRight"
    assert names[order[names.index("mouthRight")]] == "mouthLeft"
    assert names[order[names.index("jawOpen")]] == "jawOpen" and (order[52:] == np.arange(52, 1008)).all()
    assert (order[order] == np.arange(1008)).all()
    c = clip(T=200, gt=((60, 100),))
    c.inputs[:, 45] = 0.0                                     # a one-sided smile: mouthSmileLeft only
    sides = {}
    for mirror in (0.0, 0.5):
        x = windows_seen(engine, monkeypatch, c, rt.RealTrainConfig(epochs=2, windows_per_clip=16, mirror=mirror))
        left, right = x[..., 44].amax(1) > 0.4, x[..., 45].amax(1) > 0.4
        assert not (left & right).any()
        sides[mirror] = (int(left.sum()), int(right.sum()))
    assert sides[0.0][0] >= 8 and sides[0.0][1] == 0           # as recorded: the smile on the left only
    assert min(sides[0.5]) >= 3                                 # mirrored: on either side
    assert "mirror" not in rt.training_recipe(rt.RealTrainConfig())  # off: 0.7.1's kept folds still match
    with pytest.raises(ValueError, match="landmark"):
        rt.finetune(engine, [c], rt.RealTrainConfig(epochs=1, mirror=0.5, fedn_inputs="all"), progress=False)


def test_gain_scales_whole_windows_within_its_range(engine, monkeypatch):
    c = clip(T=200, gt=((60, 100),))
    x = windows_seen(engine, monkeypatch, c, rt.RealTrainConfig(epochs=1, windows_per_clip=16, gain=(0.5, 2.0)))
    smile = x[..., 44].amax(1)                                # 0.6 plus noise where the window holds the smile
    held = smile > 0.2
    assert held.sum() >= 6 and smile[held].min() < 0.55 and smile[held].max() > 0.7   # scaled both ways
    assert smile[held].max() < 0.62 * 2.0 + 0.1
    assert "gain" not in rt.training_recipe(rt.RealTrainConfig())   # off: 0.7.1's kept folds still match
    assert rt.training_recipe(rt.RealTrainConfig(gain=(0.8, 1.25)))["gain"] == [0.8, 1.25]


@pytest.mark.slow
def test_finetune_learns_and_exports_an_engine_that_loads(engine, tmp_path):
    cfg = rt.RealTrainConfig(epochs=3, windows_per_clip=8, lr=1e-3)
    clips = [clip(seed=i, gt=((60 + 20 * i, 100 + 20 * i),)) for i in range(3)]
    model = rt.finetune(engine, clips, cfg, progress=False)
    out = rt.export_engine(engine, model, cfg, clips, tmp_path / "engine", "9.9.9")
    from fes_live.stream.engine import load_engine
    e = load_engine(out, backend="export", device="cpu")
    m = json.loads((out / "manifest.json").read_text())
    assert m["version"] == "9.9.9" and m["models"]["fedn"]["config"]["inputs"] == "expression"
    assert m["training_data"]["fedn"]["fine_tuned_on"].startswith("real_dev")
    assert e.spotter_config().fedn_only_threshold == cfg.fedn_only_threshold
    assert not list(tmp_path.glob(".engine-ckpt*"))
    x = np.zeros((1, 128, 1008), np.float32)
    x[0, 40:80, 44:46] = 0.6
    eager = model(torch.from_numpy(x)).cls_logits.detach().numpy()
    np.testing.assert_allclose(e.fedn(x).cls_logits, eager, atol=1e-4)


def test_loio_scores_each_identity_with_a_model_that_never_saw_it(engine, monkeypatch):
    """Each fold trains on the other identities' clips only, and every clip is scored once, by its own fold."""
    seen = []
    real_finetune = rt.finetune

    def finetune(engine, clips, cfg, desc="", progress=True):
        seen.append(sorted({c.identity for c in clips}))
        return real_finetune(engine, clips, cfg, desc, progress)
    monkeypatch.setattr(rt, "finetune", finetune)
    feats = {"geometry": np.zeros((90, 1008), np.float32), "roi_flow": np.zeros((90, 12, 2), np.float32),
             "face_present": np.ones(90, bool), "frame_index": np.arange(90), "fps": 30.0}
    clips = []
    for k, ident in enumerate("aab"):
        c = clip(T=90, gt=((20, 50),), other=(), seed=k)
        clips.append(rt.Clip(f"{ident}{k}", ident, 30.0, c.inputs, c.gt, c.labels, c.ignore, feats))
    cfg = rt.RealTrainConfig(epochs=1, windows_per_clip=2, select_threshold=())
    events, thresholds = rt.loio(engine, clips, cfg, progress=False)
    assert thresholds == {}
    assert seen == [["b"], ["a"]] and sorted(events) == ["a0", "a1", "b2"]


def test_best_threshold_takes_the_best_f1_and_the_higher_of_a_tie():
    info = {"fps": 30.0, "frames": 300, "events": [{"type": "smile", "start": 100, "end": 140}]}
    hit = {"onset": 100, "offset": 140, "emotion": "happiness"}
    miss = {"onset": 200, "offset": 230, "emotion": "happiness"}
    labels = {"a": info, "b": info}
    by_t = {0.5: {"a": [hit, miss], "b": [hit, miss]}, 0.7: {"a": [hit], "b": [hit, miss]},
            0.8: {"a": [hit], "b": [hit]}, 0.9: {"a": [hit], "b": [hit]}, 0.95: {"a": [], "b": []}}
    scores = {t: {n: real_eval.score_clip(labels[n], ev, "scored") for n, ev in by_n.items()}
              for t, by_n in by_t.items()}
    assert rt.best_threshold(scores, ["a", "b"]) == 0.9          # F1 1.0 at 0.8 and 0.9: the higher
    assert rt.best_threshold({0.5: scores[0.5], 0.95: scores[0.95]}, ["a"]) == 0.5
    again = [hit, {**hit, "onset": 104}, {**hit, "offset": 136}]    # one smile reported three times
    dup = {0.6: {"a": real_eval.score_clip(info, again, "scored")}, 0.4: {"a": real_eval.score_clip(info, [hit, miss],
                                                                                                     "scored")}}
    assert rt.best_threshold(dup, ["a"]) == 0.4                    # F1 one event per expression: 0.67 against 0.5


def test_loio_chooses_each_folds_threshold_on_the_other_folds_only(engine, monkeypatch):
    asked = []
    real_best = rt.best_threshold

    def best(scores, names):
        asked.append(sorted(names))
        return real_best(scores, names)
    monkeypatch.setattr(rt, "best_threshold", best)
    feats = {"geometry": np.zeros((90, 1008), np.float32), "roi_flow": np.zeros((90, 12, 2), np.float32),
             "face_present": np.ones(90, bool), "frame_index": np.arange(90), "fps": 30.0}
    clips, labels = [], {}
    for k, ident in enumerate("aab"):
        c = clip(T=90, gt=((20, 50),), other=(), seed=k)
        clips.append(rt.Clip(f"{ident}{k}", ident, 30.0, c.inputs, c.gt, c.labels, c.ignore, feats))
        labels[f"{ident}{k}"] = {"fps": 30.0, "frames": 90, "events": [{"type": "smile", "start": 20, "end": 50}]}
    cfg = rt.RealTrainConfig(epochs=1, windows_per_clip=2, select_threshold=(0.5, 0.9))
    with pytest.raises(ValueError, match="labels"):
        rt.loio(engine, clips, cfg, progress=False)
    events, chosen = rt.loio(engine, clips, cfg, progress=False, labels=labels)
    assert asked == [["b2"], ["a0", "a1"], ["a0", "a1", "b2"]]     # a's fold on b's clips, b's on a's, then all
    assert set(chosen) == {"a", "b", "all"} and set(chosen.values()) <= {0.5, 0.9}
    assert sorted(events) == ["a0", "a1", "b2"]


def test_loio_reuses_kept_folds_of_the_same_recipe_only(engine, monkeypatch, tmp_path):
    feats = {"geometry": np.zeros((90, 1008), np.float32), "roi_flow": np.zeros((90, 12, 2), np.float32),
             "face_present": np.ones(90, bool), "frame_index": np.arange(90), "fps": 30.0}
    clips = [rt.Clip(i, i, 30.0, c.inputs, c.gt, c.labels, c.ignore, feats)
             for i, c in (("a", clip(T=90, gt=((20, 50),), other=(), seed=0)),
                          ("b", clip(T=90, gt=((30, 60),), other=(), seed=1)))]
    cfg = rt.RealTrainConfig(epochs=1, windows_per_clip=2, select_threshold=())
    first, _ = rt.loio(engine, clips, cfg, progress=False, models=tmp_path)
    trained = []
    real_finetune = rt.finetune
    monkeypatch.setattr(rt, "finetune", lambda *a, **k: trained.append(1) or real_finetune(*a, **k))
    again, _ = rt.loio(engine, clips, replace(cfg, fedn_only_threshold=0.6), progress=False, reuse=tmp_path)
    assert trained == [] and all(e["score"] >= 0.6 for ev in again.values() for e in ev)
    same, _ = rt.loio(engine, clips, cfg, progress=False, reuse=tmp_path)
    assert trained == [] and same == first
    rt.loio(engine, clips, replace(cfg, seed=5), progress=False, reuse=tmp_path)
    assert trained == [1, 1]                                    # another recipe: both folds trained again
    relabelled = [clips[0], rt.Clip("b", "b", 30.0, clips[1].inputs, np.array([[35.0, 60.0]]), clips[1].labels,
                                    clips[1].ignore, feats)]
    rt.loio(engine, relabelled, cfg, progress=False, reuse=tmp_path)
    assert trained == [1, 1, 1]                                 # a's fold learnt b's old label: trained again
    reextracted = [clips[0], rt.Clip("b", "b", 30.0, clips[1].inputs + np.float32(1e-3), clips[1].gt,
                                     clips[1].labels, clips[1].ignore, feats)]
    rt.loio(engine, reextracted, cfg, progress=False, reuse=tmp_path)
    assert trained == [1, 1, 1, 1]                              # a's fold learnt b's old features: trained again


def test_synthetic_videos_train_in_every_fold_and_are_never_held_out(engine, monkeypatch):
    seen = []
    real_finetune = rt.finetune

    def finetune(engine, clips, cfg, desc="", progress=True):
        seen.append(sorted(c.identity for c in clips))
        return real_finetune(engine, clips, cfg, desc, progress)
    monkeypatch.setattr(rt, "finetune", finetune)
    feats = {"geometry": np.zeros((90, 1008), np.float32), "roi_flow": np.zeros((90, 12, 2), np.float32),
             "face_present": np.ones(90, bool), "frame_index": np.arange(90), "fps": 30.0}
    c = clip(T=90, gt=((20, 50),), other=(), seed=0)
    real = [rt.Clip(f"{i}", i, 30.0, c.inputs, c.gt, c.labels, c.ignore, feats) for i in "ab"]
    synth = [rt.Clip("s0", "synth:p", 30.0, c.inputs, c.gt, c.labels, c.ignore, feats, synthetic=True),
             # a's motion on another face: trains b's fold, never a's own
             rt.Clip("a@face", "a", 30.0, c.inputs, c.gt, c.labels, c.ignore, feats, role="retarget"),
             # b's clip re-encoded: trains a's fold, never b's own
             rt.Clip("b@small", "b", 30.0, c.inputs, c.gt, c.labels, c.ignore, feats, role="copy")]
    cfg = rt.RealTrainConfig(epochs=1, windows_per_clip=2, synth_windows_per_clip=2, select_threshold=())
    events, _ = rt.loio(engine, real, cfg, progress=False, synth=synth)
    assert seen == [["b", "b", "synth:p"], ["a", "a", "synth:p"]] and sorted(events) == ["a", "b"]
    labels = {n: {"fps": 30.0, "frames": 90, "events": [{"type": "smile", "start": 20, "end": 50}]} for n in "ab"}
    report = rt.loio_report(engine, real, labels, events, cfg, synth)
    assert (report["retargeted_videos"], report["copies"]) == (["a@face"], ["b@small"])
    md = rt.loio_markdown(report)
    assert "1 re-encoded copies of those clips (`scripts/clip_copies.sh`: small)" in md
    assert "Regenerate with" not in md  # a report that does not say what made it
    made = {**report, "made_by": "scripts/real_loio_copies.sh"}
    assert "Regenerate with `scripts/real_loio_copies.sh`." in rt.loio_markdown(made)


def test_load_retargeted_takes_its_own_features_and_its_source_clips_labels(engine, tmp_path):
    from fes_live.stream.features import FrameFeatures, save_features
    c = clip(T=90, gt=((20, 50),), other=((60, 70),), seed=0)
    src = rt.Clip("a", "person_a", 30.0, c.inputs, c.gt, c.labels, c.ignore, {}, talking=np.array([[0.0, 15.0]]))
    (tmp_path / "retarget_manifest.json").write_text(json.dumps({"videos": {
        "a@f1": {"clip": "a", "face": "f1"}, "z@f1": {"clip": "z", "face": "f1"}}}))
    (tmp_path / "features").mkdir()
    with pytest.raises(FileNotFoundError, match="no features for retargeted video a@f1"):
        rt.load_retargeted(engine, [src], tmp_path)
    geometry = np.full(1008, 0.25, np.float32)
    save_features(tmp_path / "features" / "a@f1.npz", [FrameFeatures(i, i / 30, 0.0, True, geometry,
                                                                     np.zeros((12, 2), np.float32), None)
                                                       for i in range(90)], 30.0)
    (r,) = rt.load_retargeted(engine, [src], tmp_path)  # z's source clip is not trained on: skipped
    assert (r.name, r.identity, r.role, r.synthetic) == ("a@f1", "person_a", "retarget", False)
    assert r.gt.tolist() == [[20, 50]] and r.ignore.tolist() == [[60, 70]] and r.talking.tolist() == [[0, 15]]
    assert r.inputs.shape == (90, 1008) and not np.array_equal(r.inputs, src.inputs)


def test_load_copies_takes_the_copys_features_and_its_source_clips_labels(engine, tmp_path, monkeypatch):
    c = clip(T=90, gt=((20, 50),), other=((60, 70),), seed=0)
    src = rt.Clip("a", "person_a", 30.0, c.inputs, c.gt, c.labels, c.ignore, {}, talking=np.array([[0.0, 15.0]]))
    copies = tmp_path / "small"
    with pytest.raises(FileNotFoundError, match="no copy of a"):
        rt.load_copies(engine, [src], copies, tmp_path, None)
    (copies / "clips").mkdir(parents=True)
    (copies / "clips" / "a.mp4").write_bytes(b"")
    frames = {"n": 89}

    def features(path, cache, face_model, version):  # what the copy's extraction gives
        assert path == copies / "clips" / "a.mp4" and cache == tmp_path
        n = frames["n"]
        return {"geometry": np.full((n, 1008), 0.25, np.float32), "roi_flow": np.zeros((n, 12, 2), np.float32),
                "face_present": np.ones(n, bool), "frame_index": np.arange(n), "fps": 30.0}
    monkeypatch.setattr(real_eval, "clip_features", features)
    monkeypatch.setattr(real_eval, "feature_code_version", lambda *a: "v")
    with pytest.raises(ValueError, match="89 frames at 30 fps, its source has 90 at 30"):
        rt.load_copies(engine, [src], copies, tmp_path, None)  # a frame lost in re-encoding: labels would shift
    frames["n"] = 90
    (r,) = rt.load_copies(engine, [src], copies, tmp_path, None)
    assert (r.name, r.identity, r.role, r.synthetic) == ("a@small", "person_a", "copy", False)
    assert r.gt.tolist() == [[20, 50]] and r.ignore.tolist() == [[60, 70]] and r.talking.tolist() == [[0, 15]]
    assert r.inputs.shape == (90, 1008) and not np.array_equal(r.inputs, src.inputs)


def test_load_synth_reads_a_native_set_and_its_features(engine, tmp_path):
    """fes-synth's layout (a JSON per video) and `fes-live extract`'s npz become clips with the labels' emotions;
    a video without features is a clear error."""
    from fes_live.stream.features import FrameFeatures, save_features
    data, feats = tmp_path / "set", tmp_path / "features"
    data.mkdir()
    feats.mkdir()
    meta = {"video_id": "p_000", "subject": "p", "fps": 30.0, "n_frames": 120,
            "intervals": [{"onset": 10, "apex": 14, "offset": 20, "kind": "micro", "emotion": "sadness"},
                          {"onset": 50, "apex": 70, "offset": 90, "kind": "macro", "emotion": "happiness"}]}
    (data / "p_000.json").write_text(json.dumps(meta))
    (data / "p_000.mp4").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no features for synthetic video p_000"):
        rt.load_synth(engine, data, feats)
    save_features(feats / "p_000.npz", [FrameFeatures(i, i / 30, 0.0, True, np.zeros(1008, np.float32),
                                                      np.zeros((12, 2), np.float32), None) for i in range(120)], 30.0)
    (c,) = rt.load_synth(engine, data, feats)
    emotions = list(engine.labels["emotions"])
    assert c.synthetic and c.identity == "synth:p" and c.inputs.shape == (120, 1008)
    assert c.gt.tolist() == [[10, 20], [50, 90]]
    assert c.labels.tolist() == [emotions.index("sadness"), emotions.index("happiness")]
    assert c.ignore.shape == (0, 2)
    # synth_emotions: the others are left out of the loss, neither expression nor background
    (c,) = rt.load_synth(engine, data, feats, rt.RealTrainConfig(synth_emotions=("sadness", "anger")))
    assert c.gt.tolist() == [[10, 20]] and c.labels.tolist() == [emotions.index("sadness")]
    assert c.ignore.tolist() == [[50, 90]]
    with pytest.raises(ValueError, match="synth_emotions: not emotions of the engine"):
        rt.load_synth(engine, data, feats, rt.RealTrainConfig(synth_emotions=("joy",)))


def test_neutral_ceiling_reaches_training_inputs_folds_and_engine(engine):
    cfg = rt.RealTrainConfig(neutral_ceiling=("mouthSmileLeft", "mouthSmileRight"))
    values = rt.ceiling_values(cfg)
    names = list(MEDIAPIPE_BLENDSHAPES)
    assert len(values) == 52 and values[names.index("mouthSmileLeft")] < 0.5 and values[names.index("jawOpen")] == 1.0
    assert rt.baseline_config(engine, 30.0, cfg).neutral_ceiling == values
    assert rt.baseline_config(engine, 30.0, rt.RealTrainConfig()).neutral_ceiling == ()
    assert rt.spotter_overrides(cfg)["baseline"]["neutral_ceiling"] == list(values)
    assert rt.spotter_overrides(rt.RealTrainConfig(inference_ceiling=()))["baseline"] == {
        "neutral_ceiling": [], "eyes_closed_hold": 0.0, "rises_only": False}
    with pytest.raises(ValueError, match="not blendshapes"):
        rt.ceiling_values(rt.RealTrainConfig(neutral_ceiling=("smile",)))


def test_eyes_closed_hold_reaches_training_inputs_folds_and_engine(engine):
    """The hold shapes what FEDN learns from, so it is part of the recipe; off, the recipe is 0.6.0's (its kept
    folds still match)."""
    cfg = rt.RealTrainConfig(eyes_closed_hold=0.5)
    assert rt.baseline_config(engine, 30.0, cfg).eyes_closed_hold == 0.5
    assert rt.spotter_overrides(cfg)["baseline"]["eyes_closed_hold"] == 0.5
    assert rt.training_recipe(cfg)["eyes_closed_hold"] == 0.5
    assert "eyes_closed_hold" not in rt.training_recipe(rt.RealTrainConfig())
    feats = {"geometry": np.zeros((40, 1008), np.float32), "face_present": np.ones(40, bool)}
    squint, blink = (MEDIAPIPE_BLENDSHAPES.index(n) for n in ("eyeSquintLeft", "eyeBlinkLeft"))
    feats["geometry"][30:, [squint, blink]] = [0.4, 0.9]          # eyes closing at frame 30
    held = rt.baseline_normalize_inputs(engine, feats, 30.0, cfg)
    plain = rt.baseline_normalize_inputs(engine, feats, 30.0, rt.RealTrainConfig())
    assert held[35, squint] == 0.0 and plain[35, squint] > 0.3 and held[35, blink] == plain[35, blink]


def test_the_default_smile_ceiling_is_applied_at_inference_only(engine):
    """0.6.0's recipe: the smile channels' ceiling in the folds' and the engine's spotter, not in the training
    inputs and not in the recipe, so folds kept without it are re-scored with it rather than trained again."""
    cfg = rt.RealTrainConfig()
    smile = rt.ceiling_values(cfg, ("mouthSmileLeft", "mouthSmileRight"))
    assert rt.spotter_overrides(cfg)["baseline"]["neutral_ceiling"] == list(smile)
    assert rt.baseline_config(engine, 30.0, cfg).neutral_ceiling == ()
    assert rt.training_recipe(cfg) == rt.training_recipe(rt.RealTrainConfig(inference_ceiling=()))


def test_held_clips_train_as_background_get_their_own_folds_and_never_choose_a_threshold(engine, monkeypatch):
    """held_as_background: a held-emotion clip trains with no interval in every other fold, is scored (for its
    emotion) by the fold that left its person out, and the thresholds are chosen on the scored clips alone."""
    seen, asked = [], []
    real_finetune, real_best = rt.finetune, rt.best_threshold

    def finetune(engine, clips, cfg, desc="", progress=True):
        seen.append(sorted(c.name for c in clips))
        assert all(len(c.gt) == 0 for c in clips if c.role == "held")
        return real_finetune(engine, clips, cfg, desc, progress)

    def best(scores, names):
        asked.append(sorted(names))
        return real_best(scores, names)
    monkeypatch.setattr(rt, "finetune", finetune)
    monkeypatch.setattr(rt, "best_threshold", best)
    feats = {"geometry": np.zeros((90, 1008), np.float32), "roi_flow": np.zeros((90, 12, 2), np.float32),
             "face_present": np.ones(90, bool), "frame_index": np.arange(90), "fps": 30.0}
    c = clip(T=90, gt=((20, 50),), other=(), seed=0)
    smile = [{"type": "smile", "start": 20, "end": 50}]
    clips = [rt.Clip(n, n, 30.0, c.inputs, c.gt, c.labels, c.ignore, feats) for n in "ab"]
    clips.append(rt.Clip("eamm_x", "eamm_x", 30.0, c.inputs, np.zeros((0, 2)), np.zeros(0, np.int64),
                         np.zeros((0, 2)), feats, role="held"))
    labels = {"a": {"fps": 30.0, "frames": 90, "events": smile}, "b": {"fps": 30.0, "frames": 90, "events": smile},
              "eamm_x": {"fps": 30.0, "frames": 90, "events": [{"type": "smile", "start": 0, "end": 89},
                                                               {"type": "talking", "start": 0, "end": 89}]}}
    cfg = rt.RealTrainConfig(epochs=1, windows_per_clip=2, select_threshold=(0.5, 0.9), held_as_background=True)
    events, chosen = rt.loio(engine, clips, cfg, progress=False, labels=labels)
    assert seen == [["b", "eamm_x"], ["a", "eamm_x"], ["a", "b"]]
    assert asked == [["b"], ["a"], ["a", "b"], ["a", "b"]]          # a's, b's, eamm_x's fold, then all
    assert sorted(events) == ["a", "b", "eamm_x"] and set(chosen) == {"a", "b", "eamm_x", "all"}
    report = rt.loio_report(engine, clips, labels, events, cfg, thresholds=chosen)
    assert report["totals"]["loio"]["clips"] == 2 and report["totals"]["loio"]["held_clips"] == 1
    assert "held happiness: said" in rt.loio_markdown(report)


def test_load_clips_takes_held_clips_only_when_asked(engine, tmp_path, monkeypatch):
    labels = {"a": {"fps": 30.0, "frames": 90, "usable": "expression test",
                    "events": [{"type": "smile", "start": 20, "end": 50}]},
              "eamm_x": {"fps": 30.0, "frames": 90, "usable": "expression-while-talking",
                         "events": [{"type": "smile", "start": 0, "end": 89},
                                    {"type": "talking", "start": 0, "end": 89}]}}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    feats = {"geometry": np.zeros((90, 1008), np.float32), "roi_flow": np.zeros((90, 12, 2), np.float32),
             "face_present": np.ones(90, bool), "frame_index": np.arange(90), "fps": 30.0}
    monkeypatch.setattr(real_eval, "clip_features", lambda *a, **k: feats)
    monkeypatch.setattr(real_eval, "find_face_model", lambda *a: None)
    monkeypatch.setattr(real_eval, "feature_code_version", lambda *a: "v")
    clips, _ = rt.load_clips(engine, tmp_path, tmp_path, None, None)
    assert [c.name for c in clips] == ["a"]
    clips, _ = rt.load_clips(engine, tmp_path, tmp_path, None, None, rt.RealTrainConfig(held_as_background=True))
    held = clips[1]
    assert [c.name for c in clips] == ["a", "eamm_x"] and held.role == "held"
    assert held.gt.shape == (0, 2) and held.ignore.shape == (0, 2) and len(held.talking) == 0


def _loio_report(per_identity: dict[str, tuple[int, int, int, int]]) -> dict:
    """A minimal LOIO report: per identity, (found at 0.3, expressions, TP, FP) on one clip."""
    clips = {}
    for name, (found, n, tp, fp) in per_identity.items():
        exprs = [{"iou": 0.9 if k < found else 0.0} for k in range(n)]
        clips[name] = {"identity": name, "loio": {"expressions": exprs, "tp": tp, "fp": fp}}
    return {"clips": clips}


def test_identity_intervals_hold_the_pooled_figure_and_narrow_with_agreeing_people():
    even = _loio_report({f"p{i}": (4, 5, 4, 1) for i in range(20)})    # everyone alike: no spread at all
    ci = rt.identity_intervals(even)
    assert ci["identities"] == 20 and ci["recall_03"] == pytest.approx((0.8, 0.8)) and ci["precision"] == \
        pytest.approx((0.8, 0.8))
    mixed = _loio_report({**{f"p{i}": (5, 5, 5, 0) for i in range(10)}, **{f"q{i}": (3, 5, 3, 3) for i in range(10)}})
    lo, hi = rt.identity_intervals(mixed)["recall_03"]
    assert lo < 0.8 < hi and hi - lo > 0.1                             # pooled 0.8, people disagree
    assert rt.identity_intervals(_loio_report({"p": (0, 0, 0, 0)}))["recall_03"] == (None, None)  # nothing to measure


def test_compare_loio_pairs_the_draws(tmp_path):
    """The same people resampled for both reports: a variant that finds one more expression for every person has a
    difference interval entirely above 0, though each report's own interval is wide."""
    import subprocess
    import sys
    people = {**{f"p{i}": (3, 5, 3, 1) for i in range(10)}, **{f"q{i}": (1, 5, 1, 1) for i in range(10)}}
    better = {k: (f + 1, n, tp + 1, fp) for k, (f, n, tp, fp) in people.items()}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_loio_report(people)))
    b.write_text(json.dumps(_loio_report(better)))
    out = subprocess.run([sys.executable, str(real_eval.REPO / "scripts" / "compare_loio.py"), str(a), str(b)],
                         capture_output=True, text=True, check=True).stdout
    assert "recall at IoU 0.3: 0.40 -> 0.60 (difference +0.20, 95 % +0.20 to +0.20)" in out
    c = tmp_path / "c.json"
    c.write_text(json.dumps(_loio_report({"x": (1, 1, 1, 0)})))
    bad = subprocess.run([sys.executable, str(real_eval.REPO / "scripts" / "compare_loio.py"), str(a), str(c)],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "other identities" in bad.stderr
