"""End to end on tiny synthetic feature arrays: fes-train learns to spot, fes-export writes an engine that loads."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fes_live.stream.config import load_config
from fes_live.train.train import TrainConfig, main as train_main, main_cfg

REPO = Path(__file__).resolve().parents[1]

FPS = 30.0
EMOTIONS = ["happiness", "surprise"]


def write_video(folder: Path, cache: Path, vid: str, subject: str, T: int, rng: np.random.Generator) -> None:
    """A video whose ROI flow moves during each expression (out during onset, back during offset) over noise,
    and whose blendshape of the emotion rises; macro 30-50 frames, micro 10-13 frames."""
    flow = rng.normal(0, 0.05, size=(T, 12, 2)).astype(np.float32)
    geometry = rng.normal(0, 0.01, size=(T, 1008)).astype(np.float32) + 0.1
    intervals, t = [], 30 + int(rng.integers(0, 20))
    while t < T - 80:
        micro = rng.random() < 0.35
        n = int(rng.integers(10, 14)) if micro else int(rng.integers(30, 51))
        amp = 0.6 if micro else 1.0
        emotion = int(rng.integers(len(EMOTIONS)))
        apex = t + n // 2
        rois = [8, 9, 10, 11] if emotion == 0 else [0, 1, 2, 3, 4, 5]
        for k in range(n):
            direction = 1.0 if t + k <= apex else -1.0
            flow[t + k, rois, 1] += direction * amp * (1 if emotion == 0 else -1)
        geometry[t:t + n, 3 + emotion * 7] += amp * np.sin(np.linspace(0, np.pi, n))[:, None][:, 0]
        intervals.append({"onset": t, "apex": apex, "offset": t + n - 1, "kind": "micro" if micro else "macro",
                          "emotion": EMOTIONS[emotion], "aus": []})
        t += n + int(rng.integers(40, 90))
    (folder / f"{vid}.json").write_text(json.dumps({"video_id": vid, "subject": subject, "fps": FPS, "n_frames": T,
                                                     "intervals": intervals}))
    (folder / f"{vid}.mp4").write_bytes(b"")  # features are cached below, so the video is never opened
    np.savez(cache / f"{vid}.npz", geometry=geometry, roi_flow=flow, face_present=np.ones(T, bool),
             frame_index=np.arange(T), pts_s=np.arange(T) / FPS, fps=np.float64(FPS),
             roi_names=np.array([f"r{i}" for i in range(12)]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    data, cache = root / "data", root / "features"
    data.mkdir()
    cache.mkdir()
    rng = np.random.default_rng(0)
    for s in range(5):
        write_video(data, cache, f"v{s}", f"s{s}", 900, rng)
    return root


def tiny_config(root: Path, **changes) -> TrainConfig:
    """configs/tiny.json (the committed CI config) on the tiny set."""
    data = {"data": str(root / "data"), "features": str(root / "features"), "out": str(root / "run"),
            "test_subjects": ["s4"], "val_subjects": ["s3"], "emotions": EMOTIONS, "threads": 1, "progress": False}
    data.update(changes)
    return load_config(TrainConfig, REPO / "configs" / "tiny.json", data)


@pytest.mark.slow
def test_train_beats_chance_and_exports(tiny, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(tiny)
    report = main_cfg(cfg)
    f1 = report["megc"]["overall"]["f1"]
    # chance: as many random intervals of the right lengths as there are GT, scored by the same rule
    from fes_live.train.evaluate import megc_f1
    gt = json.loads((tiny / "data" / "v4.json").read_text())["intervals"]
    rng = np.random.default_rng(1)
    rand = [(s, s + g["offset"] - g["onset"], g["kind"]) for g in gt for s in [int(rng.integers(0, 850))]]
    chance = megc_f1({"v4": [(g["onset"], g["offset"], g["kind"]) for g in gt]}, {"v4": rand})["overall"]["f1"]
    assert f1 > max(0.3, chance + 0.2), (f1, chance)
    out = Path(cfg.out)
    assert (out / "report.md").is_file() and (out / "pr_curves.png").is_file()
    assert "validation subjects" in (out / "report.md").read_text()
    ck = torch.load(out / "holdout" / "gim_best.pt", weights_only=True)
    assert ck["config"]["dim"] == 16 and ck["train_config"]["test_subjects"] == ["s4"]


def test_resume_continues_and_config_errors(tiny, tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(tiny, out=str(tmp_path / "run"), task="gim", gim_epochs=2, eval_every=2)
    main_cfg(cfg)
    ck = torch.load(tmp_path / "run" / "holdout" / "gim_last.pt", weights_only=True)
    assert ck["epoch"] == 1 and len(ck["history"]) == 2
    more = tiny_config(tiny, out=str(tmp_path / "run"), task="gim", gim_epochs=2, eval_every=2)
    main_cfg(more)  # same config: resumes after epoch 1, nothing left to train
    again = torch.load(tmp_path / "run" / "holdout" / "gim_last.pt", weights_only=True)
    assert again["epoch"] == 1 and len(again["history"]) == 2
    assert train_main([str(REPO / "configs" / "tiny.json"), "--set", "bogus=1"]) == 1
    assert train_main([str(REPO / "configs" / "tiny.json"), "--set", f"data={tiny / 'data'}",
                       "--set", "test_subjects=[\"nobody\"]", "--set", f"out={tmp_path / 'x'}"]) == 1


def test_pseudo_intervals_contain_their_points(tiny):
    """FEDN from points: GIM's pseudo interval [a - h, a + h] always holds the point (|a - p| <= k/4 <= h)."""
    from fes_live.models.gim import GIM, GIMConfig
    from fes_live.train.train import load_dataset, load_videos, pseudo_intervals
    torch.manual_seed(0)
    cfg = tiny_config(tiny)
    videos = load_videos(cfg, load_dataset(cfg))
    gim = GIM(GIMConfig(dim=8, heads=2, dim_head=4, mlp_dim=16))
    out = pseudo_intervals(cfg, gim, videos, ["v0", "v1"])
    for vid in ("v0", "v1"):
        iv, pts = out[vid], videos[vid].points
        assert iv.shape == (len(pts), 2)
        assert ((iv[:, 0] <= pts) & (pts <= iv[:, 1])).all()
        assert ((iv[:, 1] - iv[:, 0]) >= 2 * (cfg.pseudo.k[1] // 4)).all()


def test_pwes_mplg_and_dfcl_train_gim(tiny, tmp_path):
    """PWES MPLG mining (from epoch 1 here) and DFCL switched on: the DFCL term is logged, non-zero once the bank
    holds vectors, and finite."""
    torch.set_num_threads(1)
    cfg = tiny_config(tiny, out=str(tmp_path / "run"), task="gim", gim_epochs=2, eval_every=2,
                      dfcl={"weight": 0.5, "bank_size": 64},
                      pseudo={"mining": "mplg", "soft_start": 1, "soft_wide_start": 1, "gim_start": 1})
    main_cfg(cfg)
    ck = torch.load(tmp_path / "run" / "holdout" / "gim_last.pt", weights_only=True)
    terms = [row["dfcl"] for row in ck["history"]]
    assert len(terms) == 2 and all(np.isfinite(terms)) and terms[-1] > 0
    assert ck["train_config"]["dfcl"]["weight"] == 0.5


def test_relabel_kind_by_duration():
    """The calibration's micro/macro boundary search relabels FEDN intervals exactly as fedn_proposals would."""
    from fes_live.models.spotting import MACRO, MICRO, Proposal
    from fes_live.train.train import relabel_kind
    p = Proposal(onset=10, apex=16, offset=22, kind=MACRO, score=0.9, source="fedn")     # 13 frames
    assert relabel_kind(p, 0.45 * 30).kind == MICRO                                      # 13 < 13.5
    assert relabel_kind(p, 0.40 * 30).kind == MACRO                                      # 13 >= 12
    assert relabel_kind(p, 0.45 * 30).score == 0.9 and relabel_kind(p, 0.45 * 30).onset == 10
