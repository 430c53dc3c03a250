"""`fes-train CONFIG.json [--set key=value ...]`: train GIM and FEDN, select on validation, evaluate, report.

Runs top to bottom (nanoGPT style, but as `main(cfg)`): data and cached features -> folds -> per fold GIM
(point-supervised, `fes_live.train.targets` pseudo-labels) -> FEDN (fully supervised from intervals, or from point labels
through GIM's pseudo intervals) -> model selection on the fold's *validation subjects* (never its test subject) ->
test predictions through the same `models.online.OnlineSpotter` the live detector runs -> MEGC F1 and mAP per
fold and pooled (`fes_live.train.evaluate`), a report (markdown + JSON + plots) and checkpoints that carry their configs.

Features are extracted once per video (`fes-live extract`'s code, `stream.extract.extract`) into
`<features>/<video_id>.npz`, so training never opens a video. Fixed seeds; `resume` picks a fold's run up from its
last checkpoint when the config is unchanged.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fes_live import version_text
from fes_live.stream.config import ConfigError, from_dict, load_config, to_dict
from fes_live.train.losses import (fedn_loss, focal_apex, intensity_aware_contrastive, intensity_regression, reward,
                          smoothness, sparsity)
from fes_live.train.dfcl import DFCLConfig, MemoryBank, feature_contrastive, region_vectors
from fes_live.train.targets import AssignConfig, PseudoLabelConfig, assign_anchor_targets, gim_targets

log = logging.getLogger("fes-train")

EMOTIONS = ("happiness", "surprise", "disgust", "anger", "sadness")
TASKS = ("gim", "gim+fedn", "gim+fedn-points")


@dataclass(frozen=True)
class GIMLossWeights:
    smooth: float = 0.1           # reference 0.1
    apex: float = 1.0
    contrastive: float = 0.1      # reference 1.4e-5 on unnormalised features; ours are L2-normalised
    sparsity: float = 1.0         # reference 2.5 (CAS(ME)^2); synthetic videos are ~85 % neutral
    reward: tuple[float, float] = (0.4, 0.6)
    apex_alpha: tuple[float, float] = (0.90, 0.93)
    apex_weight: tuple[float, float] = (1.0, 1.8)
    apex_gamma: float = 1.0
    apex_smoothing: float = 0.1   # reference 0.25; lower keeps negatives' probabilities well below 0.5


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""                          # native folder (fes-synth output) or the dataset's root
    dataset: str = "native"                 # native | casme2 | samm | casme3 | casme3-lgsnet
    annotation: str = ""                    # the dataset's annotation file (not for native)
    features: str = ""                      # feature cache folder; default <out>/features
    out: str = "runs/default"
    task: str = "gim+fedn"                  # gim | gim+fedn | gim+fedn-points
    protocol: str = "holdout"               # loso | holdout
    test_subjects: tuple[str, ...] = ()     # holdout: the test subjects
    val_subjects: tuple[str, ...] = ()      # holdout: validation subjects (else n_val drawn from training)
    n_val: int = 1
    max_folds: int = 0                      # loso: stop after this many folds (0 = all)
    seed: int = 0
    threads: int = 2
    point_mode: str = "random"              # point labels: random frame inside each interval, or "apex"
    emotions: tuple[str, ...] = EMOTIONS    # FEDN label map; an interval with another emotion is an error
    gim: dict = field(default_factory=dict)     # models.gim.GIMConfig overrides
    fedn: dict = field(default_factory=dict)    # models.fedn.FEDNConfig overrides
    spotter: dict = field(default_factory=dict)  # models.online.OnlineConfig overrides (written into the engine)
    pseudo: PseudoLabelConfig = PseudoLabelConfig()
    assign: AssignConfig = AssignConfig()
    gim_loss: GIMLossWeights = GIMLossWeights()
    dfcl: DFCLConfig = DFCLConfig()         # PWES feature contrast across videos (fes_live.train.dfcl); weight 0 = off
    gim_epochs: int = 30
    gim_lr: float = 1e-3                    # reference 2e-5 with batch 1 for 100 epochs on a 3 M model
    gim_weight_decay: float = 1e-4
    gim_crop: int = 256                     # frames per training crop (a whole 60 s video is 1800)
    gim_crops_per_video: int = 2
    fedn_epochs: int = 30
    fedn_lr: float = 1e-3                   # FEDN paper 1e-4 over 30 epochs of far more data
    fedn_weight_decay: float = 1e-4
    fedn_batch: int = 8
    fedn_windows_per_video: int = 16        # random windows per video and epoch (half centred on an expression)
    fedn_reg_weight: float = 1.0
    fedn_cls_weight: float = 1.0
    fedn_min_inside: float = 0.7            # a GT counts for a window if this much of it is inside
    fedn_eval_every: int = 10               # FEDN epochs between validation evaluations (and always the last)
    eval_every: int = 5                     # epochs between validation evaluations (and always the last)
    # FEDN has no kind head: an interval is micro when shorter than spotter.fedn_decode.micro_max_seconds. With
    # candidates here, the FEDN-only calibration picks that boundary on the validation videos as well (seconds).
    micro_max_grid: tuple[float, ...] = ()
    resume: bool = True
    progress: bool = True


# -------------------------------------------------------------------------------------------------------- data

@dataclass
class VideoData:
    video_id: str
    subject: str
    fps: float
    roi_flow: np.ndarray        # (T, 12, 2)
    geometry: np.ndarray        # (T, 1008)
    face_present: np.ndarray    # (T,) bool
    intervals: list             # [train.datasets.Interval]
    points: np.ndarray          # (P,) point label per interval (same order)
    new_face: np.ndarray | None = None  # (T,) bool: a shot cut or another person (stream.features); None: never

    @property
    def n_frames(self) -> int:
        return len(self.roi_flow)

    def features_dict(self) -> dict:
        new_face = np.zeros(self.n_frames, bool) if self.new_face is None else self.new_face
        return {"roi_flow": self.roi_flow, "geometry": self.geometry, "face_present": self.face_present,
                "new_face": new_face, "frame_index": np.arange(self.n_frames), "fps": self.fps}


def load_dataset(cfg: TrainConfig):
    from fes_live.train.datasets import LOADERS, DatasetError, load_native
    if cfg.dataset == "native":
        return load_native(cfg.data)
    if cfg.dataset not in LOADERS:
        raise ConfigError(f"dataset {cfg.dataset!r}: choose native or one of {sorted(LOADERS)}")
    if not cfg.annotation:
        raise ConfigError(f"dataset {cfg.dataset!r} needs 'annotation' (its annotation file)")
    try:
        return LOADERS[cfg.dataset](cfg.annotation, cfg.data or None)
    except DatasetError:
        raise


def feature_path(cfg: TrainConfig, video_id: str) -> Path:
    return Path(cfg.features or Path(cfg.out) / "features") / f"{video_id}.npz"


def cache_features(cfg: TrainConfig, dataset) -> None:
    """Extract every video's features once (the `fes-live extract` code path); later runs reuse the files."""
    from fes_live.stream.extract import extract
    from fes_live.stream.features import save_features
    todo = [v for v in dataset.videos if not feature_path(cfg, v.video_id).is_file()]
    for v in tqdm(todo, desc="extract features", unit="video", disable=not cfg.progress or not todo):
        source = v.frames if isinstance(v.frames, Path) else (Path(v.frames[0]).parent if v.frames else None)
        if source is None:
            raise ConfigError(f"video {v.video_id}: no frames to extract features from")
        feats, fps = extract(str(source), progress=False)
        save_features(feature_path(cfg, v.video_id), feats, fps)
        log.info("features of %s: %d frames", v.video_id, len(feats))


def load_videos(cfg: TrainConfig, dataset) -> dict[str, VideoData]:
    from fes_live.stream.features import load_features
    from fes_live.train.datasets import point_labels
    by_video = dataset.by_video()
    videos = {}
    for v in dataset.videos:
        f = load_features(feature_path(cfg, v.video_id))
        T = len(f["frame_index"])
        intervals = sorted(by_video.get(v.video_id, []), key=lambda i: i.onset)
        bad = [i for i in intervals if i.offset >= T]
        if bad:
            raise ConfigError(f"{v.video_id}: interval [{bad[0].onset}, {bad[0].offset}] beyond its {T} frames")
        points = np.array(point_labels(intervals, cfg.point_mode, cfg.seed), dtype=np.int64)
        videos[v.video_id] = VideoData(v.video_id, v.subject, float(f["fps"]), f["roi_flow"].astype(np.float32),
                                       f["geometry"].astype(np.float32), f["face_present"].astype(bool),
                                       intervals, points, f["new_face"].astype(bool))
    return videos


@dataclass(frozen=True)
class Split:
    name: str
    train: tuple[str, ...]   # video ids
    val: tuple[str, ...]
    test: tuple[str, ...]
    subjects: dict           # {"train": [...], "val": [...], "test": [...]}


def make_splits(cfg: TrainConfig, dataset) -> list[Split]:
    """LOSO folds (train.datasets.loso_folds) or one held-out split; validation subjects come from training ones."""
    from fes_live.train.datasets import loso_folds
    subjects = dataset.subjects()
    vids = {s: tuple(v.video_id for v in dataset.videos if v.subject == s) for s in subjects}

    def split(name, train_s, val_s, test_s):
        if set(test_s) & (set(train_s) | set(val_s)) or set(val_s) & set(train_s):
            raise ConfigError(f"split {name}: test, validation and training subjects overlap")
        if not train_s or not val_s or not test_s:
            raise ConfigError(f"split {name}: needs training, validation and test subjects, got "
                              f"{len(train_s)}/{len(val_s)}/{len(test_s)}")
        return Split(name, sum((vids[s] for s in train_s), ()), sum((vids[s] for s in val_s), ()),
                     sum((vids[s] for s in test_s), ()),
                     {"train": list(train_s), "val": list(val_s), "test": list(test_s)})

    if cfg.protocol == "holdout":
        unknown = sorted((set(cfg.test_subjects) | set(cfg.val_subjects)) - set(subjects))
        if unknown or not cfg.test_subjects:
            raise ConfigError(f"holdout: test_subjects {list(cfg.test_subjects)} must name subjects of the data "
                              f"({subjects}); unknown: {unknown}")
        rest = [s for s in subjects if s not in cfg.test_subjects]
        if cfg.val_subjects:
            val = list(cfg.val_subjects)
        else:
            rng = np.random.default_rng(cfg.seed)
            val = sorted(rng.choice(rest, size=min(cfg.n_val, len(rest) - 1), replace=False).tolist())
        return [split("holdout", [s for s in rest if s not in val], val, list(cfg.test_subjects))]
    if cfg.protocol != "loso":
        raise ConfigError(f"protocol {cfg.protocol!r}: loso or holdout")
    folds = loso_folds(dataset, n_val=cfg.n_val, seed=cfg.seed)
    if cfg.max_folds:
        folds = folds[:cfg.max_folds]
    return [split(f.name, f.train, f.val, f.test) for f in folds]


# -------------------------------------------------------------------------------------------------- spotting

def gim_runner(model: torch.nn.Module):
    """numpy windows -> (intensity, apex_probs), as an engine's `gim` does."""
    from fes_live.stream.engine import GIMInference, Runner
    runner = Runner("gim", "eager", GIMInference(model).eval(), "cpu")
    return lambda windows: runner(windows)


def fedn_runner(model: torch.nn.Module):
    from fes_live.models.fedn import FEDNOutput
    from fes_live.stream.engine import FEDNInference, Runner
    runner = Runner("fedn", "eager", FEDNInference(model).eval(), "cpu")
    return lambda x: FEDNOutput(*runner(x))


def spotter_config(cfg: TrainConfig, fps: float, fedn_window: int | None = None, overrides: dict | None = None,
                   **changes):
    """models.online.SpotterConfig of this run at `fps` (the baseline follows the same fps); `overrides` are
    merged one level deep (e.g. calibrated thresholds into `proposals`)."""
    from fes_live.calibration.thresholds import merge_spotter
    from fes_live.models.online import SpotterConfig
    data = merge_spotter(cfg.spotter, overrides or {})
    data.update(fps=fps, **changes)
    data["baseline"] = {**data.get("baseline", {}), "fps": fps}
    if fedn_window:
        data["fedn_window"] = fedn_window
    return from_dict(SpotterConfig, data, where="spotter")


def spot_videos(cfg: TrainConfig, videos: dict[str, VideoData], ids, gim, fedn,
                overrides: dict | None = None) -> dict[str, list]:
    """{video_id: [Proposal]} from the online spotter run over each whole video (the live code path).

    GIM runs in batches of 64 frames here: that changes only latency, not the curve (the windows are the same).
    """
    from fes_live.models.online import OnlineSpotter, spot_video
    gim.eval()
    if fedn is not None:
        fedn.eval()
    preds = {}
    for vid in ids:
        v = videos[vid]
        sc = spotter_config(cfg, v.fps, fedn.cfg.window if fedn is not None else None, overrides, gim_batch=64)
        spotter = OnlineSpotter(gim_runner(gim), fedn_runner(fedn) if fedn is not None else None, sc)
        preds[vid] = spot_video(spotter, v.features_dict())
    return preds


def calibrate_split(cfg: TrainConfig, split: "Split", videos: dict[str, VideoData], gim, fedn,
                    full: bool = False) -> dict:
    """Thresholds from the split's validation videos (fes_live.calibration.thresholds), never from its test videos.

    With `full`, a second candidate has the GIM proposals switched off (their thresholds above any score), since
    at zero thresholds GIM proposals claim the FEDN intervals they overlap and so hide FEDN-only proposals; the
    better candidate is re-run with its thresholds to report the real validation F1.
    """
    from fes_live.calibration.thresholds import ZERO_THRESHOLDS, calibrate, merge_spotter
    gt = {vid: videos[vid].intervals for vid in split.val}
    result = calibrate(gt, spot_videos(cfg, videos, split.val, gim, fedn, ZERO_THRESHOLDS))
    if full and fedn is not None:
        off = merge_spotter(ZERO_THRESHOLDS, {"proposals": {"score_threshold": [10.0, 10.0]}})
        preds = spot_videos(cfg, videos, split.val, gim, fedn, off)
        for m in cfg.micro_max_grid or (None,):
            # with GIM's proposals off every interval is FEDN's, so its kind is its duration: relabel, not re-run
            cand = preds if m is None else {vid: [relabel_kind(p, m * videos[vid].fps) for p in ps]
                                             for vid, ps in preds.items()}
            fedn_only = calibrate(gt, cand)
            if fedn_only["val_f1"] > result["val_f1"]:
                fedn_only.update(gim_macro=10.0, gim_micro=10.0)
                extra = {"proposals": {"score_threshold": [10.0, 10.0]}}
                if m is not None:
                    fedn_only["micro_max_seconds"] = m
                    extra["fedn_decode"] = {"micro_max_seconds": m}
                fedn_only["spotter"] = merge_spotter(fedn_only["spotter"], extra)
                result = fedn_only
    if full:
        rerun = score(videos, spot_videos(cfg, videos, split.val, gim, fedn, result["spotter"]))
        result["val_f1_rerun"] = float(rerun["overall"]["f1"])
    result["calibrated_on"] = {"subjects": split.subjects["val"], "videos": list(split.val)}
    return result


def relabel_kind(p, micro_max_frames: float):
    """A FEDN interval's kind by its duration (models.proposals.fedn_proposals' rule) at another boundary."""
    from fes_live.models.spotting import kind_by_length
    return dataclasses.replace(p, kind=kind_by_length(p.length, micro_max_frames))


def validation_f1(cfg: TrainConfig, split: "Split", videos: dict[str, VideoData], gim, fedn,
                  full: bool = False) -> float:
    """Model selection metric: pooled MEGC F1 on the validation videos at their best thresholds (so an epoch
    is not judged by thresholds that suit another epoch's score scale)."""
    r = calibrate_split(cfg, split, videos, gim, fedn, full=full)
    return float(r.get("val_f1_rerun", r["val_f1"]))


def calibrate_fold(run: Path, fold: str = "holdout") -> dict:
    """Re-derive a finished run's thresholds for one fold (`fes-train --recalibrate RUN`)."""
    cfg = load_config(TrainConfig, run / "config.json")
    dataset = load_dataset(cfg)
    videos = load_videos(cfg, dataset)
    split = next((s for s in make_splits(cfg, dataset) if s.name == fold), None)
    if split is None:
        raise ValueError(f"{run}: no fold {fold!r}")
    from fes_live.models.fedn import FEDN, FEDNConfig
    from fes_live.models.gim import GIM, GIMConfig
    gim = load_best(run / fold / "gim_best.pt", GIM, GIMConfig)
    fedn = load_best(run / fold / "fedn_best.pt", FEDN, FEDNConfig) if (run / fold / "fedn_best.pt").is_file() else None
    return calibrate_split(cfg, split, videos, gim, fedn, full=True)


def score(videos: dict[str, VideoData], preds: dict[str, list]) -> dict:
    from fes_live.train.evaluate import megc_f1
    gt = {vid: videos[vid].intervals for vid in preds}
    return megc_f1(gt, preds)


# ------------------------------------------------------------------------------------------------------- GIM

def gim_step(cfg: TrainConfig, model, windows: torch.Tensor, points: np.ndarray, kinds: np.ndarray,
             epoch: int, bank: MemoryBank | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One crop: forward, pseudo-labels from the detached outputs, the GIM loss terms (+ DFCL with a bank)."""
    out = model(windows)
    probs = torch.sigmoid(out.apex_logits).detach().numpy() if cfg.pseudo.mining == "mplg" else None
    tg = gim_targets(points, kinds, out.intensity.detach().numpy(), out.embed.detach().numpy(), epoch, cfg.pseudo,
                     probs)
    y = torch.from_numpy(tg.y)
    w = cfg.gim_loss
    terms = {
        "intensity": intensity_regression(out.intensity, y, torch.from_numpy(tg.negative)),
        "smooth": w.smooth * smoothness(out.intensity),
        "reward": reward(out.intensity, y, w.reward),
        "apex": w.apex * focal_apex(out.apex_logits, torch.from_numpy(tg.apex), w.apex_alpha, w.apex_weight,
                                    w.apex_gamma, w.apex_smoothing),
        "contrastive": w.contrastive * intensity_aware_contrastive(out.feature, torch.from_numpy(tg.contrast),
                                                                   torch.from_numpy(tg.pseudo_intensity)),
        "sparsity": w.sparsity * sparsity(out.intensity),
    }
    if bank is not None:
        vectors, labels = region_vectors(out.feature, tg.contrast, cfg.dfcl.regions)
        terms["dfcl"] = cfg.dfcl.weight * feature_contrastive(vectors, labels, bank, cfg.dfcl.temperature)
        bank.push(vectors, labels)
    loss = sum(terms.values())
    return loss, {k: float(v.detach()) for k, v in terms.items()}


def crop_starts(T: int, crop: int, n: int, rng: np.random.Generator) -> list[int]:
    if T <= crop:
        return [0]
    return [int(rng.integers(0, T - crop + 1)) for _ in range(n)]


def train_gim(cfg: TrainConfig, split: Split, videos: dict[str, VideoData], out: Path, fps: float):
    from fes_live.models.gim import GIM, GIMConfig
    from fes_live.stream.features import flow_windows
    gcfg = from_dict(GIMConfig, cfg.gim, where="gim")
    torch.manual_seed(cfg.seed)
    model = GIM(gcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.gim_lr, weight_decay=cfg.gim_weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.gim_epochs, 1))
    run = Checkpointer("gim", out, model, gcfg, cfg, split, fps, opt, sched)
    windows = {vid: torch.from_numpy(flow_windows(videos[vid].roi_flow, np.arange(videos[vid].n_frames)))
               for vid in split.train}
    bank = MemoryBank(gcfg.dim, cfg.dfcl.bank_size) if cfg.dfcl.weight > 0 else None
    bar = tqdm(range(run.start, cfg.gim_epochs), desc=f"{split.name} GIM", unit="epoch", disable=not cfg.progress,
               initial=run.start, total=cfg.gim_epochs)
    for epoch in bar:
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        sums: dict[str, float] = {}
        steps = 0
        for vid in rng.permutation(list(split.train)):
            v = videos[vid]
            for s in crop_starts(v.n_frames, cfg.gim_crop, cfg.gim_crops_per_video, rng):
                e = min(v.n_frames, s + cfg.gim_crop)
                inside = (v.points >= s) & (v.points < e)
                kinds = np.array([i.kind for i in v.intervals], dtype=np.int64)[inside]
                loss, terms = gim_step(cfg, model, windows[vid][s:e], v.points[inside] - s, kinds, epoch,
                                       bank)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                for k, val in terms.items():
                    sums[k] = sums.get(k, 0.0) + val
                steps += 1
        sched.step()
        evaluate = epoch + 1 == cfg.gim_epochs or ((epoch + 1) % cfg.eval_every == 0 and epoch >= cfg.pseudo.gim_start)
        row = run.end_epoch(epoch, sums, steps, validation_f1(cfg, split, videos, model, None) if evaluate else None)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "epoch"})
    return load_best(out / "gim_best.pt", GIM, GIMConfig), run.history


# ------------------------------------------------------------------------------------------------------ FEDN

def fedn_inputs(cfg: TrainConfig, v: VideoData) -> np.ndarray:
    """Geometry minus the causal neutral baseline, exactly as the online spotter feeds FEDN."""
    from fes_live.models.baseline import baseline_normalize
    return baseline_normalize(v.geometry, v.face_present, spotter_config(cfg, v.fps).baseline, v.new_face)


def window_targets(cfg: TrainConfig, model, gt: np.ndarray, labels: np.ndarray, start: int, W: int):
    """Targets of the window [start, start + W): GT mostly inside is clipped and learnt; anchors on a GT mostly
    outside are left out of the loss (neither positive nor a fair negative)."""
    a = model.anchors
    s, e = gt[:, 0] - start, gt[:, 1] - start
    inside = (np.minimum(e, W - 1) - np.maximum(s, 0) + 1).clip(0) / (e - s + 1)
    keep = inside >= cfg.fedn_min_inside
    clipped = np.stack([np.maximum(s, 0), np.minimum(e, W - 1)], 1)[keep]
    t = assign_anchor_targets(a.reference.numpy(), a.anchor_free.numpy(), a.strides.numpy(),
                              a.regress_range.numpy(), clipped, labels[keep], model.cfg.num_classes, cfg.assign)
    partial = (inside > 0) & ~keep
    if partial.any():
        c = a.centres.numpy()
        for ps, pe in np.stack([s, e], 1)[partial]:
            t.valid[(c >= ps) & (c <= pe) & ~t.positive] = False
    return t


def fedn_intervals(cfg: TrainConfig, v: VideoData, pseudo: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) intervals and (M,) emotion indices a video trains FEDN with: GT, or GIM's pseudo intervals."""
    emo = {name: k for k, name in enumerate(cfg.emotions)}
    unknown = sorted({i.emotion for i in v.intervals} - set(emo))
    if unknown:
        raise ConfigError(f"{v.video_id}: emotion(s) {unknown} not in the label map {list(cfg.emotions)}")
    labels = np.array([emo[i.emotion] for i in v.intervals], dtype=np.int64)
    if pseudo is not None:
        return pseudo[v.video_id], labels
    return np.array([[i.onset, i.offset] for i in v.intervals], dtype=np.float64).reshape(-1, 2), labels


def pseudo_intervals(cfg: TrainConfig, gim, videos: dict[str, VideoData], ids) -> dict[str, np.ndarray]:
    """Point labels -> intervals through the trained GIM: the instance-adaptive pseudo-label window [a - h, a + h]
    of the last schedule epoch (pseudo-apex a, half-duration h estimated from the reliable frames)."""
    from fes_live.stream.features import flow_windows
    from fes_live.train.targets import estimated_half_duration, mplg_attention, pseudo_apex, reliability_threshold
    gim.eval()
    out = {}
    epoch = cfg.pseudo.gim_start + cfg.pseudo.tau_epochs
    for vid in ids:
        v = videos[vid]
        with torch.no_grad():
            o = gim(torch.from_numpy(flow_windows(v.roi_flow, np.arange(v.n_frames))))
        inten, g = o.intensity.numpy(), o.embed.numpy()
        search = mplg_attention(inten, g, v.points) if cfg.pseudo.mining == "mplg" else inten
        rows = []
        for p, i in zip(v.points, v.intervals):
            a = pseudo_apex(search, int(p), i.kind, cfg.pseudo)
            h = estimated_half_duration(inten, a, i.kind, reliability_threshold(epoch, cfg.pseudo), cfg.pseudo)
            rows.append([max(0, a - h), min(v.n_frames - 1, a + h)])
        out[vid] = np.array(rows, dtype=np.float64).reshape(-1, 2)
    return out


def train_fedn(cfg: TrainConfig, split: Split, videos: dict[str, VideoData], out: Path, fps: float, gim,
               pseudo: dict | None):
    from fes_live.models.fedn import FEDN, FEDNConfig
    fcfg = from_dict(FEDNConfig, {"num_classes": len(cfg.emotions), **cfg.fedn}, where="fedn")
    torch.manual_seed(cfg.seed + 1)
    model = FEDN(fcfg)
    W = fcfg.window
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.fedn_lr, weight_decay=cfg.fedn_weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.fedn_epochs, 1))
    run = Checkpointer("fedn", out, model, fcfg, cfg, split, fps, opt, sched)
    inputs = {vid: fedn_inputs(cfg, videos[vid]) for vid in split.train}
    gts = {vid: fedn_intervals(cfg, videos[vid], pseudo) for vid in split.train}
    bar = tqdm(range(run.start, cfg.fedn_epochs), desc=f"{split.name} FEDN", unit="epoch", disable=not cfg.progress,
               initial=run.start, total=cfg.fedn_epochs)
    for epoch in bar:
        model.train()
        rng = np.random.default_rng([cfg.seed, 1000 + epoch])
        samples = []
        for vid in split.train:
            T = videos[vid].n_frames
            gt, _ = gts[vid]
            for k in range(cfg.fedn_windows_per_video):
                if k % 2 == 0 and len(gt):  # half the windows hold an expression somewhere inside
                    m = gt[rng.integers(len(gt))]
                    lo, hi = int(max(0, m[1] - W + 1)), int(min(m[0], max(T - W, 0)))
                    s = int(rng.integers(lo, hi + 1)) if hi >= lo else int(rng.integers(0, max(T - W, 0) + 1))
                else:
                    s = int(rng.integers(0, max(T - W, 0) + 1))
                samples.append((vid, s))
        rng.shuffle(samples)
        sums = {"reg": 0.0, "cls": 0.0}
        steps = 0
        for b in range(0, len(samples), cfg.fedn_batch):
            batch = samples[b:b + cfg.fedn_batch]
            x = np.zeros((len(batch), W, fcfg.in_dim), dtype=np.float32)
            tgs = []
            for j, (vid, s) in enumerate(batch):
                chunk = inputs[vid][s:s + W]
                x[j, :len(chunk)] = chunk
                gt, lab = gts[vid]
                tgs.append(window_targets(cfg, model, gt, lab, s, W))
            o = model(torch.from_numpy(x))
            reg, cls = fedn_loss(o.cls_logits.reshape(-1, fcfg.num_classes), o.intervals.reshape(-1, 2),
                                 torch.from_numpy(np.concatenate([t.cls for t in tgs])),
                                 torch.from_numpy(np.concatenate([t.interval for t in tgs])),
                                 torch.from_numpy(np.concatenate([t.positive for t in tgs])),
                                 torch.from_numpy(np.concatenate([t.valid for t in tgs])),
                                 cfg.fedn_reg_weight, cfg.fedn_cls_weight)
            loss = reg + cls
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sums["reg"] += reg.item()
            sums["cls"] += cls.item()
            steps += 1
        sched.step()
        evaluate = (epoch + 1) % cfg.fedn_eval_every == 0 or epoch + 1 == cfg.fedn_epochs
        row = run.end_epoch(epoch, sums, steps, validation_f1(cfg, split, videos, gim, model, full=True)
                            if evaluate else None)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "epoch"})
    return load_best(out / "fedn_best.pt", FEDN, FEDNConfig), run.history


# ------------------------------------------------------------------------------------------------ checkpoints

def save_checkpoint(path: Path, name: str, model, model_cfg, cfg: TrainConfig, split: Split, fps: float,
                    epoch: int, metrics: dict, opt=None, sched=None, history=None, best=None) -> None:
    """A checkpoint carries the model config, the training config and what `fes-export` needs for the manifest."""
    fcfg = model_cfg if name == "fedn" else None
    ckpt = {
        "model": name, "config": to_dict(model_cfg), "state_dict": model.state_dict(), "epoch": epoch,
        "metrics": metrics, "train_config": to_dict(cfg),
        "selected_on": f"validation subjects {split.subjects['val']} (never the test subjects)",
        "engine": {
            "fps": fps, "feature": "geometry-minus-baseline" if name == "fedn" else "roi-flow",
            "window": fcfg.window if fcfg else 17, "stride": spotter_config(cfg, fps).fedn_stride if fcfg else 1,
            "feature_dim": fcfg.in_dim if fcfg else 0, "emotions": list(cfg.emotions),
            "spotter": dict(cfg.spotter), "thresholds": {}, "package_version": package_version(),
            "training_data": {"data": cfg.data, "dataset": cfg.dataset, "split": split.name,
                              "subjects": split.subjects, "videos": {"train": len(split.train),
                                                                     "val": len(split.val)}},
        },
    }
    if opt is not None:
        ckpt.update(optimizer=opt.state_dict(), scheduler=sched.state_dict(), history=history,
                    best=list(best) if best else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def relevant_config(cfg: TrainConfig | dict, name: str) -> dict:
    """The part of the config that GIM's training depends on (FEDN's keys do not), or all of it for FEDN; where
    the run is written and how it is shown do not count (a run folder copied elsewhere resumes)."""
    data = to_dict(cfg) if not isinstance(cfg, dict) else dict(cfg)
    for key in ("resume", "progress", "out", "threads"):
        data.pop(key, None)
    if name == "gim":
        data = {k: v for k, v in data.items() if not k.startswith("fedn") and k not in ("task", "micro_max_grid")}
    return data


class Checkpointer:
    """One model's run state across epochs: resumes from `<name>_last.pt`, saves it after every epoch, and saves
    `<name>_best.pt` whenever the validation F1 improves (the model selection; never the test subjects)."""

    def __init__(self, name: str, out: Path, model, model_cfg, cfg: TrainConfig, split: Split, fps: float,
                 opt, sched):
        self.name, self.out, self.model, self.model_cfg = name, out, model, model_cfg
        self.cfg, self.split, self.fps, self.opt, self.sched = cfg, split, fps, opt, sched
        self.start, self.history, self.best = resume_state(cfg, out / f"{name}_last.pt", model, opt, sched)

    def end_epoch(self, epoch: int, sums: dict[str, float], steps: int, val_f1: float | None) -> dict:
        """The epoch's row (mean loss terms, and the validation F1 when evaluated), after saving."""
        row = {"epoch": epoch, **{k: v / max(steps, 1) for k, v in sums.items()}}
        save = (self.name, self.model, self.model_cfg, self.cfg, self.split, self.fps, epoch, row)
        if val_f1 is not None:
            row["val_f1"] = val_f1
            if self.best is None or val_f1 > self.best[0]:
                self.best = (val_f1, epoch)
                save_checkpoint(self.out / f"{self.name}_best.pt", *save)
        self.history.append(row)
        save_checkpoint(self.out / f"{self.name}_last.pt", *save, self.opt, self.sched, self.history, self.best)
        return row


def resume_state(cfg: TrainConfig, path: Path, model, opt, sched) -> tuple[int, list, tuple | None]:
    """(first epoch, history, best) — from `path` when resuming with the same config (for GIM: the same GIM
    settings; FEDN's may differ), else a fresh start."""
    if not (cfg.resume and path.is_file()):
        return 0, [], None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    name = ckpt.get("model", "gim")
    if relevant_config(ckpt.get("train_config") or {}, name) != relevant_config(cfg, name):
        log.warning("%s was trained with another config; starting over", path)
        return 0, [], None
    model.load_state_dict(ckpt["state_dict"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    log.info("resuming %s after epoch %d", path, ckpt["epoch"])
    return ckpt["epoch"] + 1, list(ckpt.get("history") or []), tuple(ckpt["best"]) if ckpt.get("best") else None


def load_best(path: Path, model_cls, cfg_cls):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = model_cls(from_dict(cfg_cls, ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def package_version() -> str:
    try:
        from importlib.metadata import version
        return version("fes-live")
    except Exception:  # noqa: BLE001 - not installed: a source checkout
        return "0.1.0"


# ------------------------------------------------------------------------------------------------------ report

def plot_history(path: Path, histories: dict[str, list[dict]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.5), squeeze=False)
    for ax, (name, hist) in zip(axes[0], histories.items()):
        keys = sorted({k for row in hist for k in row} - {"epoch"})
        for k in keys:
            xs = [r["epoch"] for r in hist if k in r]
            ax.plot(xs, [r[k] for r in hist if k in r], marker="o" if k == "val_f1" else None, label=k)
        ax.set(title=name, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_markdown(path: Path, cfg: TrainConfig, report: dict, folds: dict) -> None:
    m = report["megc"]

    def row(name, r):
        return (f"| {name} | {r['overall']['f1']:.3f} | {r['macro']['f1']:.3f} | {r['micro']['f1']:.3f} | "
                f"{r['overall']['tp']}/{r['overall']['predictions']}/{r['overall']['ground_truth']} |")
    lines = [f"# fes-train report: {cfg.out}", "",
             f"Task `{cfg.task}`, protocol `{cfg.protocol}`, data `{cfg.data}` ({cfg.dataset}), seed {cfg.seed}.",
             "Model selection: the epoch with the best overall MEGC F1 on each fold's **validation subjects** "
             "(drawn from its training subjects). The test subjects are never used for selection or calibration "
             "(the reference repositories pick the epoch on the test subject; we do not).", "",
             f"Rule: `{m['rule']}` (inclusive IoU >= 0.5, a GT is found by any prediction of its class).", "",
             "| fold | overall F1 | macro F1 | micro F1 | TP/pred/GT |", "|---|---|---|---|---|"]
    lines += [row(name, f["megc"]) for name, f in folds.items()]
    lines.append(row("**pooled**", m))
    mp = report["map"]["map"]
    lines += ["", f"Detection mAP@[.5:.95]: overall {fmt(mp.get('overall'))}, macro {fmt(mp.get('macro'))}, "
                  f"micro {fmt(mp.get('micro'))}.", "",
              "Per fold: validation F1 at the selected epoch, subjects:", ""]
    for name, f in folds.items():
        lines.append(f"- {name}: test {f['subjects']['test']}, val {f['subjects']['val']}, "
                     f"train {len(f['subjects']['train'])} subjects; selected GIM epoch {f.get('gim_epoch')}, "
                     f"FEDN epoch {f.get('fedn_epoch')}")
    lines += ["", "Plots: `pr_curves.png`, `ap_vs_iou.png`, `curves_<fold>.png`. Numbers: `report.json`.", ""]
    path.write_text("\n".join(lines))


def fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# -------------------------------------------------------------------------------------------------------- main

def main_cfg(cfg: TrainConfig) -> dict:
    """Train, select, evaluate and report; returns the pooled report dict."""
    if cfg.task not in TASKS:
        raise ConfigError(f"task {cfg.task!r}: choose one of {TASKS}")
    torch.set_num_threads(max(1, min(cfg.threads, 2)))
    np.random.seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    dataset = load_dataset(cfg)
    cache_features(cfg, dataset)
    videos = load_videos(cfg, dataset)
    fps_all = {round(v.fps, 3) for v in videos.values()}
    if len(fps_all) != 1:
        raise ConfigError(f"videos have different frame rates {sorted(fps_all)}; resample first")
    fps = fps_all.pop()
    from fes_live.train.evaluate import evaluate_loso, to_segments
    fold_results, fold_data, histories = {}, {}, {}
    for split in make_splits(cfg, dataset):
        t0 = time.time()
        fold_dir = out / split.name
        gim, gim_hist = train_gim(cfg, split, videos, fold_dir, fps)
        histories[f"{split.name} GIM"] = gim_hist
        fedn = None
        if cfg.task != "gim":
            if cfg.task == "gim+fedn-points":
                log.info("fold %s: GIM done; pseudo-intervals for FEDN from its intensity curves", split.name)
            pseudo = pseudo_intervals(cfg, gim, videos, split.train) if cfg.task == "gim+fedn-points" else None
            fedn, fedn_hist = train_fedn(cfg, split, videos, fold_dir, fps, gim, pseudo)
            histories[f"{split.name} FEDN"] = fedn_hist
        log.info("fold %s: training done; calibrating score thresholds on %d validation video(s) (the slow part "
                 "after the last epoch)", split.name, len(split.val))
        thresholds = calibrate_split(cfg, split, videos, gim, fedn, full=True)
        (fold_dir / "thresholds.json").write_text(json.dumps(thresholds, indent=2))
        log.info("fold %s: spotting %d test video(s) with the selected models", split.name, len(split.test))
        preds = spot_videos(cfg, videos, split.test, gim, fedn, thresholds["spotter"])
        gt = {vid: videos[vid].intervals for vid in split.test}
        fold_data[split.name] = (gt, preds)
        gim_ck = torch.load(fold_dir / "gim_best.pt", map_location="cpu", weights_only=True)
        fedn_ck = (torch.load(fold_dir / "fedn_best.pt", map_location="cpu", weights_only=True)
                   if fedn is not None else None)
        fold_results[split.name] = {"megc": score(videos, preds), "subjects": split.subjects,
                                    "gim_epoch": gim_ck["epoch"], "fedn_epoch": fedn_ck["epoch"] if fedn_ck else None,
                                    "seconds": round(time.time() - t0, 1), "thresholds": thresholds,
                                    "predictions": {vid: [dataclasses.asdict(p) for p in ps]
                                                    for vid, ps in preds.items()}}
        plot_history(out / f"curves_{split.name}.png",
                     {k: v for k, v in histories.items() if k.startswith(split.name)})
        log.info("fold %s: overall F1 %.3f (%.0f s)", split.name,
                 fold_results[split.name]["megc"]["overall"]["f1"], time.time() - t0)
    log.info("scoring %d fold(s) and writing the report to %s", len(fold_data), out)
    report = evaluate_loso(fold_data, out)
    report["config"] = to_dict(cfg)
    report["fold_details"] = {k: {kk: vv for kk, vv in v.items() if kk != "megc"} for k, v in fold_results.items()}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    write_markdown(out / "report.md", cfg, report, fold_results)
    return report


# ------------------------------------------------------------------------------------------------ engine report

REAL_CLIPS = {  # ../shared/data/video: what a good engine does on them
    "pyfeat_single_face.mp4": {"expect": "one macro-expression (the smile, frames ~18-70) at IoU >= 0.5, nothing else",
                               "gt": [(18, 70, "macro")]},
    "pyfeat_no_face.mp4": {"expect": "nothing (no face)", "gt": []},
}


def spot_with_engine(engine, features: dict) -> list:
    """The deployed path: a spotter from the engine (manifest thresholds), fps following the clip."""
    from fes_live.models.online import spot_video
    return spot_video(engine.new_spotter(float(features.get("fps", engine.manifest["fps"]))), features)


def per_frame_cost(engine, repeats: int = 50) -> dict[str, float]:
    """Median CPU milliseconds per frame: GIM one window per frame; FEDN one window per stride frames."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, size=(1, 17, 12, 2)).astype(np.float32)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        engine.gim(w)
        times.append(time.perf_counter() - t)
    out = {"gim_ms_per_frame": 1000 * float(np.median(times))}
    if engine.has_fedn:
        shape = [1, *engine.manifest["models"]["fedn"]["input_shape"][1:]]  # one window
        x = rng.normal(0, 0.01, size=shape).astype(np.float32)
        times = []
        for _ in range(max(5, repeats // 5)):
            t = time.perf_counter()
            engine.fedn(x)
            times.append(time.perf_counter() - t)
        stride = int(engine.manifest["stride"]["fedn"])
        out["fedn_ms_per_window"] = 1000 * float(np.median(times))
        out["fedn_ms_per_frame"] = out["fedn_ms_per_window"] / stride
    return out


def engine_report(engine_path: str | Path, cfg: TrainConfig, out: str | Path,
                  clips_dir: str | Path | None = None) -> dict:
    """Evaluate an exported engine on the config's *test* subjects and on the real clips; write report.md/.json."""
    from fes_live.stream.engine import load_engine
    from fes_live.train.evaluate import evaluate, megc_f1
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, min(cfg.threads, 2)))
    engine = load_engine(engine_path)
    dataset = load_dataset(cfg)
    cache_features(cfg, dataset)
    videos = load_videos(cfg, dataset)
    split = make_splits(cfg, dataset)[0]
    preds = {vid: spot_with_engine(engine, videos[vid].features_dict()) for vid in split.test}
    gt = {vid: videos[vid].intervals for vid in split.test}
    report = evaluate(gt, preds, out_dir=out, title=f"engine {engine_path} on held-out {split.subjects['test']}")
    report["engine"] = {"path": str(engine_path), "backend": engine.backend,
                        "manifest": {k: engine.manifest[k] for k in ("version", "fps", "window", "stride", "labels",
                                                                     "thresholds", "training_data")}}
    report["test"] = {"subjects": split.subjects["test"], "videos": list(split.test),
                      "predictions": {vid: [dataclasses.asdict(p) for p in ps] for vid, ps in preds.items()}}
    clips = {}
    clips_dir = Path(clips_dir) if clips_dir else None
    if clips_dir is not None:
        from fes_live.stream.extract import extract
        from fes_live.stream.features import load_features, save_features
        for name, info in REAL_CLIPS.items():
            path = clips_dir / name
            if not path.is_file():
                continue
            cache = feature_path(cfg, f"clips/{path.stem}")
            if not cache.is_file():
                feats, fps = extract(str(path), progress=False)
                save_features(cache, feats, fps)
            f = load_features(cache)
            found = spot_with_engine(engine, f)
            gt_clip = {name: info["gt"]}
            r = megc_f1(gt_clip, {name: found})
            ok = (r["overall"]["tp"] == len(info["gt"]) and len(found) == len(info["gt"]))
            clips[name] = {"expect": info["expect"], "frames": int(len(f["frame_index"])),
                           "face_frames": int(f["face_present"].sum()), "fps": float(f["fps"]),
                           "found": [dataclasses.asdict(p) for p in found], "as_expected": bool(ok)}
    report["clips"] = clips
    report["cost"] = per_frame_cost(engine)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    write_engine_markdown(out / "report.md", engine, report, split, cfg)
    return report


def write_engine_markdown(path: Path, engine, report: dict, split: "Split", cfg: TrainConfig) -> None:
    m, mp = report["megc"], report["map"]["map"]
    labels = engine.manifest["labels"]["emotions"]
    lines = [
        "# The default engine", "",
        f"Engine `{report['engine']['path']}`, version `{engine.manifest['version']}`, backend `{engine.backend}`.",
        f"Trained by `scripts/make_default_engine.sh` (config `configs/default_engine.json`) on synthetic videos "
        f"(`fes-synth`) of the real faces in `../shared/data/images`: training subjects {split.subjects['train']}, "
        f"validation subject {split.subjects['val']} (model selection and threshold calibration only).", "",
        f"## Held-out identity {split.subjects['test']} (own seed; never used for training, selection or "
        f"calibration)", "",
        f"{len(split.test)} videos, rule `{m['rule']}` (inclusive IoU >= 0.5, per class).", "",
        "| | F1 | precision | recall | TP / predictions / GT |", "|---|---|---|---|---|"]
    for k in ("overall", "macro", "micro"):
        r = m[k]
        lines.append(f"| {k} | **{r['f1']:.3f}** | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['tp']} / {r['predictions']} / {r['ground_truth']} |")
    lines += ["", f"Goal: overall F1 >= 0.8, micro F1 >= 0.5. Detection mAP@[.5:.95]: overall {fmt(mp.get('overall'))}, "
                  f"macro {fmt(mp.get('macro'))}, micro {fmt(mp.get('micro'))}.", "",
              "Other matching rules (same predictions):", ""]
    for name, v in report["variants"].items():
        lines.append(f"- `{name}`: overall {v['overall']['f1']:.3f}, macro {v['macro']['f1']:.3f}, "
                     f"micro {v['micro']['f1']:.3f}")
    lines += ["", "![precision-recall](pr_curves.png) ![AP vs IoU](ap_vs_iou.png)", "", "## Real clips", ""]
    for name, c in report["clips"].items():
        found = ", ".join(f"{'macro' if p['kind'] == 0 else 'micro'} [{p['onset']}, {p['offset']}] "
                          f"score {p['score']:.2f}"
                          + (f" {labels[p['emotion']]}" if 0 <= p['emotion'] < len(labels) else "")
                          for p in c["found"]) or "nothing"
        lines.append(f"- `{name}` ({c['frames']} frames, face on {c['face_frames']}, {c['fps']:g} fps): "
                     f"expected {c['expect']}; found {found} -> **{'as expected' if c['as_expected'] else 'NOT as expected'}**")
    cost = report["cost"]
    lines += ["", "## CPU cost (this machine, 2 shared cores, median)", "",
              f"- GIM: {cost['gim_ms_per_frame']:.2f} ms per frame (one 17-frame window)"]
    if "fedn_ms_per_frame" in cost:
        lines.append(f"- FEDN: {cost['fedn_ms_per_window']:.2f} ms per window, every "
                     f"{engine.manifest['stride']['fedn']} frames = {cost['fedn_ms_per_frame']:.2f} ms per frame")
    th = engine.manifest.get("thresholds", {})
    if th:
        lines += ["", f"Thresholds (calibrated on the validation subject): GIM macro {th.get('gim_macro')}, "
                      f"GIM micro {th.get('gim_micro')}, FEDN-only {th.get('fedn_only')} "
                      f"(validation F1 {th.get('val_f1', 0):.3f})."]
    lines += ["", "Numbers: `report.json` (all predictions included).", ""]
    path.write_text("\n".join(lines))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs, values parsed as JSON when they are JSON (numbers, lists, objects), else strings."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["real"]:  # `fes-train real ...`: fine-tune on the real dev clips (train/real_train.py)
        from fes_live.train.real_train import main as real_main
        return real_main(argv[1:])
    parser = argparse.ArgumentParser(prog="fes-train", description=__doc__.splitlines()[0],
                                     epilog="fes-train real --help: fine-tune FEDN on the real dev clips")
    parser.add_argument("--version", action="version", version=version_text("fes-train"))
    parser.add_argument("config", nargs="?", help="JSON config file (configs/*.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--report-engine", metavar="ENGINE",
                        help="instead of training: evaluate this engine folder on the config's test subjects")
    parser.add_argument("--report-out", default="reports/engine", help="folder of the engine report")
    parser.add_argument("--clips", help="folder with the real clips (pyfeat_single_face.mp4, pyfeat_no_face.mp4)")
    parser.add_argument("--recalibrate", metavar="RUN",
                        help="instead of training: re-derive the thresholds of a finished run's --fold into --output")
    parser.add_argument("--fold", default="holdout", help="with --recalibrate: the fold (default holdout)")
    parser.add_argument("-o", "--output", help="with --recalibrate: JSON file to write")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.recalibrate:
            if not args.output:
                raise ConfigError("--recalibrate needs --output FILE")
            result = calibrate_fold(Path(args.recalibrate), args.fold)
            Path(args.output).write_text(json.dumps(result, indent=2))
            print(json.dumps({k: v for k, v in result.items() if k != "spotter"}))
            return 0
        cfg = load_config(TrainConfig, args.config, parse_overrides(args.set))
        if args.report_engine:
            report = engine_report(args.report_engine, cfg, args.report_out, args.clips)
            m = report["megc"]
            print(f"engine on the test subjects: MEGC F1 overall {m['overall']['f1']:.3f} macro "
                  f"{m['macro']['f1']:.3f} micro {m['micro']['f1']:.3f}; report in {args.report_out}/report.md")
            return 0
        report = main_cfg(cfg)
    except (ConfigError, ValueError, OSError, RuntimeError) as e:
        print(f"fes-train: {e}", file=sys.stderr)
        return 1
    m = report["megc"]
    print(f"pooled MEGC F1 overall {m['overall']['f1']:.3f} macro {m['macro']['f1']:.3f} "
          f"micro {m['micro']['f1']:.3f}; report in {cfg.out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
