"""`fes-train real` (train/real_train.py): targets, time-stretched windows, the fine-tune and its engine."""
import json

import numpy as np
import pytest
import torch

from fes_live.models.fedn import input_mask
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


def test_targets_leave_other_facial_actions_out_of_the_loss(engine):
    model = rt.base_fedn(engine, "expression")
    cfg = rt.RealTrainConfig()
    t = rt.targets(model, np.array([[20.0, 50.0]]), np.array([0]), np.array([[80.0, 100.0]]), 128, cfg)
    c = model.anchors.centres.numpy()
    assert t.positive.any() and (t.cls[t.positive, 0] == 1).all()
    assert not t.valid[(c >= 80) & (c <= 100)].any()          # the pout: neither positive nor negative
    assert t.valid[(c > 105) & ~t.positive].all()            # background after it: negatives


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
    events = rt.loio(engine, clips, rt.RealTrainConfig(epochs=1, windows_per_clip=2), progress=False)
    assert seen == [["b"], ["a"]] and sorted(events) == ["a0", "a1", "b2"]


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
    synth = [rt.Clip("s0", "synth:p", 30.0, c.inputs, c.gt, c.labels, c.ignore, feats, synthetic=True)]
    events = rt.loio(engine, real, rt.RealTrainConfig(epochs=1, windows_per_clip=2, synth_windows_per_clip=2),
                     progress=False, synth=synth)
    assert seen == [["b", "synth:p"], ["a", "synth:p"]] and sorted(events) == ["a", "b"]


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
