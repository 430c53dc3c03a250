"""`fes-train real`: fine-tune an engine's FEDN on the real development clips, cross-validated by identity.

The bundled FEDN learnt the synthetic generator (issue 10); real faces differ in what matters most: how talking,
blinks and glances move the blendshapes and landmarks, and how real expressions rise and fall. The weak interval
labels of `../shared/data/real_dev` (docs/real_dev.md) teach exactly that, on top of the synthetic pretraining
(training starts from the engine's FEDN weights; GIM is kept as it is).

Honest figures need every clip scored by a model that never saw its person: `--loio` trains one model per identity
of the scored clips on all the other identities' clips and runs the held-out identity's clips through the engine's
own online spotter (`train.real_eval.run_engine`, every frame), then pools the scores with the benchmark's rules.
The recipe (`RealTrainConfig`) and the FEDN-only threshold are fixed before any fold is run: nothing is selected
on the folds that are reported. `--export DIR` then trains once on every scored clip with the same recipe and writes
an engine (GIM copied, FEDN replaced, the threshold written into the manifest).

Targets: expressions are positives with a training emotion (below); "other facial actions" (pout, O-mouth, ...)
are left out of the loss, as the benchmark neither requires nor penalises them; everything else, talking, blinks
and glances included, is background. Windows are drawn half on an expression, half anywhere, and time-stretched
at random (`rate`), so the model sees expressions at other speeds and frame rates.

`--synth DIR --synth-features DIR` trains on synthetic videos too (fes-synth's native layout, people who are in no
scored clip; `scripts/synth_sets.sh`): real clips alone teach talking and real dynamics but hold no
micro-expression, and a model trained on them alone forgets the synthetic ones (engine 0.3.0: F1 0.15 on held-out
synthetic videos). The synthetic videos are in every fold's training set, as none of their people is held out.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fes_live import version_text
from fes_live.stream.config import ConfigError, from_dict, to_dict
from fes_live.train import real_eval
from fes_live.train.losses import fedn_loss
from fes_live.train.targets import AssignConfig, assign_anchor_targets
from fes_live.train.train import fedn_runner

log = logging.getLogger("fes-train-real")

# The training emotion of each expression label. The engine's classes are emotions; labels without one of its five
# still have to train as positives: raised brows are surprise's brows, a frown (brow lowerer) is anger's, fear's
# raised brows and open eyes are surprise-like, contempt's one-sided lip is disgust-like. Only smile, laugh,
# surprise, sad, disgust, anger (and fear, contempt: always wrong) are scored for emotion (real_eval.EMOTION_OF).
TRAIN_EMOTION = {"smile": "happiness", "laugh": "happiness", "surprise": "surprise", "brow-raise": "surprise",
                 "fear": "surprise", "sad": "sadness", "frown": "anger", "anger": "anger", "disgust": "disgust",
                 "contempt": "disgust"}


@dataclass(frozen=True)
class RealTrainConfig:
    epochs: int = 15
    lr: float = 5e-4                   # a fine-tune: half the synthetic run's rate
    weight_decay: float = 1e-4
    batch: int = 8
    windows_per_clip: int = 12         # per clip and epoch; half of them hold an expression
    synth_windows_per_clip: int = 36   # per synthetic video (60 s, about 7 expressions) and epoch; chosen on the
                                       # synthetic validation videos (12 forgot more of them), not on a real fold
    rate: tuple[float, float] = (0.75, 1.33)  # time-stretch range of a training window (source frames per frame)
    min_inside: float = 0.7            # a label counts for a window when this much of it is inside
    fedn_only_threshold: float = 0.5   # the spotter's FEDN-only score threshold when select_threshold is () (engine
                                       # 0.3.0: fixed a priori, the sigmoid's midpoint)
    select_threshold: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)  # candidates: with --loio, each fold's is the
                                       # one with the best F1 on the *other* folds' held-out clips (nested: never on
                                       # the fold it reports), the exported engine's the best on all of them (0.5.0)
    fedn_inputs: str = "expression"    # FEDNConfig.inputs of the fine-tuned model: blendshapes without blink and
                                       # gaze channels (landmarks move with head turns and talking)
    talking_overlay: float = 0.0       # fraction of windows that get a training clip's talking laid over their
                                       # mouth and jaw channels (speech on other faces, over neutral stretches and
                                       # over expressions; labels unchanged): 0.5 measured worse on the folds
                                       # once thresholds are chosen (docs/real_dev.md), so off
    neutral_ceiling: tuple[str, ...] = ()  # blendshapes whose new neutral baseline starts no higher than a resting
                                       # face reads (configs/neutral_ceiling.json, scripts/neutral_ceiling.py), so a
                                       # face already smiling when it appears shows its smile; in training inputs,
                                       # in the folds' spotter and in the exported engine's
    inference_ceiling: tuple[str, ...] = ("mouthSmileLeft", "mouthSmileRight")  # the same, in the folds' and the
                                       # exported engine's spotter only: trained in, the smile ceiling cost
                                       # precision; applied to a model trained without it, it found the smiles
                                       # already on when a clip starts at no cost (docs/real_dev.md). Not part of
                                       # the training recipe: kept folds are re-scored with it, not retrained
    talking_windows: float = 0.0       # fraction of a clip's background windows drawn on its labelled talking (clean
                                       # runs, `Clip.talking`) instead of anywhere: speech is where the false alarms
                                       # are, and a random window lands on it rarely. 0: engine 0.6.0's recipe;
                                       # 0.5 measured no better (docs/real_dev.md, "Seeds")
    held_as_background: bool = False   # the held-emotion clips (eamm_*: one emotion held while talking, no onset or
                                       # offset inside) train as background, as their labels say: real speech of 5
                                       # more people, smiling, frowning and raising brows as they talk. Their
                                       # identities get folds of their own, so their emotion is still scored by a
                                       # model that never saw them
    eyes_closed_hold: float = 0.0      # BaselineConfig.eyes_closed_hold in training inputs, the folds' spotter and
                                       # the exported engine's: eyeSquint keeps its open-eye value while eyeBlink is
                                       # above this, so a blink, a long eye closure or a look down does not read
                                       # as a squint (docs/real_dev.md, "Eyes closed"). 0: off (0.6.0's recipe)
    rises_only: bool = False           # BaselineConfig.rises_only, likewise: FEDN sees no blendshape below its
                                       # baseline (docs/real_dev.md, "Eyes closed"): measured worse, off
    mirror: float = 0.0                # fraction of training windows seen left-right mirrored (each *Left
                                       # blendshape swapped with its *Right twin): a face's expression mirrored is
                                       # the same expression, and 22 clips are few (docs/real_dev.md, "Mirrored
                                       # and scaled windows"). Blendshape inputs only: landmarks are not mirrored
    gain: tuple[float, float] = (1.0, 1.0)  # range of a per-window factor (log-uniform) all its inputs are
                                       # multiplied by: an expression made larger is still that expression and
                                       # speech made larger still speech (a fainter expression may be none, so
                                       # the range starts at 1); people and MediaPipe's reading of them vary in
                                       # strength (docs/real_dev.md, "Mirrored and scaled windows"). (1, 1): off
    open_end: int = 0                  # a label still going on at a window's last frame is learnt, cut there, once
                                       # this many of its frames are inside (and half the expression windows end
                                       # inside one), so FEDN reports a start before its end is in view: the live
                                       # onset (docs/real_dev.md, "Onsets learnt from starts"). 0: min_inside alone
    synth_emotions: tuple[str, ...] = ()  # with --synth: the synthetic videos' expressions of these emotions train
                                       # as expressions, the others are left out of the loss (neither expression
                                       # nor background). The real clips teach happiness and surprise; MediaPipe
                                       # reads the generator's surprise (AU1+2+5+26) at a quarter of a real one's
                                       # rise (brows +0.09, docs/real_dev.md), which teaches FEDN that slight brow
                                       # movements are surprises. (): every emotion (the lab recipe)
    seed: int = 0
    assign: AssignConfig = AssignConfig()


@dataclass
class Clip:
    name: str
    identity: str
    fps: float
    inputs: np.ndarray       # (T, F) geometry minus the causal neutral baseline (what the spotter feeds FEDN)
    gt: np.ndarray           # (M, 2) expression intervals, inclusive frames
    labels: np.ndarray       # (M,) training emotion index
    ignore: np.ndarray       # (K, 2) other facial actions: out of the loss
    feats: dict              # the clip's features (for evaluation through the online spotter)
    synthetic: bool = False  # a fes-synth video (its person is in no real clip)
    role: str = "scored"     # real_eval.clip_role: "scored" (boundaries) or "held" (emotion only; trains as
                             # background), "retarget": a scored clip's motion on another face, or "copy": a
                             # scored clip re-encoded (both training only)
    talking: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (R, 2) labelled talking with no
                             # expression or other facial action in it, runs of >= 1 s (the overlay's donors)


NEUTRAL_CEILING = real_eval.REPO / "configs" / "neutral_ceiling.json"


def ceiling_values(cfg: RealTrainConfig, channels: tuple[str, ...] | None = None) -> tuple[float, ...]:
    """BaselineConfig.neutral_ceiling for `channels` (default `cfg.neutral_ceiling`; 1.0, no ceiling, for the
    others)."""
    channels = cfg.neutral_ceiling if channels is None else channels
    if not channels:
        return ()
    from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES
    values = json.loads(NEUTRAL_CEILING.read_text())["ceiling"]
    unknown = sorted(set(channels) - set(values))
    if unknown:
        raise ValueError(f"neutral_ceiling: {unknown} are not blendshapes of {NEUTRAL_CEILING}")
    return tuple(float(values[n]) if n in channels else 1.0 for n in MEDIAPIPE_BLENDSHAPES)


# RealTrainConfig fields that are BaselineConfig fields of the same name, set alike in training inputs, the folds'
# spotter and the exported engine's
BASELINE_FIELDS = ("eyes_closed_hold", "rises_only")


def baseline_fields(cfg: RealTrainConfig) -> dict:
    return {f: getattr(cfg, f) for f in BASELINE_FIELDS}


def baseline_config(engine, fps: float, cfg: RealTrainConfig):
    """The neutral baseline the fine-tuned engine's spotter runs, so training inputs are what it will see."""
    base = engine.spotter_config(fps).baseline
    # the recipe's own ceiling or none: not the start engine's, which may be an inference-only one (0.6.0's)
    return replace(base, neutral_ceiling=ceiling_values(cfg), **baseline_fields(cfg))


def load_clips(engine, data: Path, cache: Path, overrides: Path | None, face_model: str | None,
               cfg: RealTrainConfig = RealTrainConfig()) -> tuple[list[Clip], dict]:
    """Every scored clip of the dev set (real_eval.clip_role) with its features and training targets, and with
    `cfg.held_as_background` the held-emotion clips as background (no expression interval, nothing ignored)."""
    labels, _ = real_eval.load_labels(data, overrides)
    fm = real_eval.find_face_model(data, face_model)
    version = real_eval.feature_code_version(fm)
    emotions = list(engine.labels["emotions"])
    clips = []
    for name in sorted(labels):
        info = labels[name]
        role = real_eval.clip_role(name, info)
        if role != "scored" and not (role == "held" and cfg.held_as_background):
            continue
        feats = real_eval.clip_features(data / "clips" / f"{name}.mp4", cache, fm, version)
        fps = float(feats["fps"])
        inputs = baseline_normalize_inputs(engine, feats, fps, cfg)
        events = info["events"] if role == "scored" else []
        expr = [e for e in events if real_eval.label_kind(e["type"]) == "expression"]
        other = [e for e in events if real_eval.label_kind(e["type"]) == "other"]
        clips.append(Clip(name, real_eval.identity(name), fps, inputs,
                          np.array([[e["start"], e["end"]] for e in expr], dtype=np.float64).reshape(-1, 2),
                          np.array([emotions.index(TRAIN_EMOTION[e["type"]]) for e in expr], dtype=np.int64),
                          np.array([[e["start"], e["end"]] for e in other], dtype=np.float64).reshape(-1, 2),
                          feats, talking=clean_talking(events, len(inputs), fps), role=role))
    return clips, labels


def clean_talking(events: list[dict], frames: int, fps: float, min_seconds: float = 1.0) -> np.ndarray:
    """(R, 2) inclusive runs of labelled talking that overlap no expression or other facial action."""
    talk = np.zeros(frames, bool)
    for e in events:
        if e["type"] == "talking":
            talk[int(e["start"]):min(int(e["end"]), frames - 1) + 1] = True
    for e in events:
        if real_eval.label_kind(e["type"]) in ("expression", "other"):
            talk[int(e["start"]):int(e["end"]) + 1] = False
    edges = np.flatnonzero(np.diff(np.concatenate([[0], talk.astype(np.int8), [0]])))
    runs = edges.reshape(-1, 2) - [0, 1]
    return runs[(runs[:, 1] - runs[:, 0] + 1) >= min_seconds * fps].astype(np.float64).reshape(-1, 2)


def speech_channels() -> np.ndarray:
    """The geometry columns speech moves: MediaPipe's mouth* and jaw* blendshapes (smile readings included, which
    speech raises on real faces: liveportrait_d13's talking reads mouthSmile 0.6)."""
    from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES
    return np.array([i for i, n in enumerate(MEDIAPIPE_BLENDSHAPES) if n.startswith(("mouth", "jaw"))])


def mirror_columns(width: int) -> np.ndarray:
    """Column order of a left-right mirrored geometry row: every *Left blendshape and its *Right twin swapped
    (mouthLeft and mouthRight too); the other columns, landmarks included, stay."""
    from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES as names
    order = np.arange(width)
    for i, n in enumerate(names):
        twin = n.replace("Left", "Right") if "Left" in n else n.replace("Right", "Left")
        order[i] = names.index(twin)
    return order


def overlay_talking(x: np.ndarray, n_valid: int, donor: Clip, run: np.ndarray, rng: np.random.Generator,
                    cols: np.ndarray) -> None:
    """Lay a stretch of `donor`'s talking over window `x` in place: on the speech channels, per frame and channel,
    whichever of the two deviates more from its own neutral baseline (a smile stays a smile, a neutral mouth
    talks)."""
    a, b = int(run[0]), int(run[1])
    length = min(b - a + 1, n_valid)
    if length <= 0:
        return
    s = int(rng.integers(a, b - length + 2))
    t = int(rng.integers(0, n_valid - length + 1))
    mine, theirs = x[t:t + length][:, cols], donor.inputs[s:s + length][:, cols]
    x[t:t + length, cols] = np.where(np.abs(theirs) > np.abs(mine), theirs, mine)


def video_inputs(engine, path: Path, fps: float, cfg: RealTrainConfig, what: str) -> tuple[dict, np.ndarray]:
    """A training video's extracted features and what FEDN sees of them (minus the spotter's neutral baseline)."""
    from fes_live.stream.features import load_features
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no features for {what}")
    feats = load_features(path)
    return feats, baseline_normalize_inputs(engine, feats, fps, cfg)


def load_synth(engine, data: Path, features: Path, cfg: RealTrainConfig = RealTrainConfig()) -> list[Clip]:
    """fes-synth videos (native layout) and their extracted features as training clips; identities are prefixed
    `synth:` so that no fold ever holds them out."""
    from fes_live.train.datasets import load_native
    ds = load_native(data)
    emotions = list(engine.labels["emotions"])
    unknown = sorted(set(cfg.synth_emotions) - set(emotions))
    if unknown:
        raise ValueError(f"synth_emotions: not emotions of the engine {emotions}: {unknown}")
    gt = ds.by_video()
    clips = []
    for v in ds.videos:
        feats, inputs = video_inputs(engine, features / f"{v.video_id}.npz", v.fps, cfg,
                                     f"synthetic video {v.video_id} (fes-live extract, or scripts/synth_sets.sh)")
        taught = [i for i in gt[v.video_id] if not cfg.synth_emotions or i.emotion in cfg.synth_emotions]
        left_out = [i for i in gt[v.video_id] if i not in taught]
        clips.append(Clip(v.video_id, f"synth:{v.subject}", v.fps, inputs,
                          np.array([[i.onset, i.offset] for i in taught], dtype=np.float64).reshape(-1, 2),
                          np.array([emotions.index(i.emotion) for i in taught], dtype=np.int64),
                          np.array([[i.onset, i.offset] for i in left_out], dtype=np.float64).reshape(-1, 2),
                          feats, synthetic=True))
    return clips


def load_retargeted(engine, clips: list[Clip], folder: Path, cfg: RealTrainConfig = RealTrainConfig()) -> list[Clip]:
    """Retargeted videos (`train/synth_retarget.py`: `<clip>@<face>.mp4`, features in `folder/features`) as
    training clips: their own features, their source clip's labels, and their source clip's identity, so that the
    fold holding that person out never trains on their motion."""
    manifest = json.loads((folder / "retarget_manifest.json").read_text())["videos"]
    by_name = {c.name: c for c in clips}
    out = []
    for stem, v in sorted(manifest.items()):
        src = by_name.get(v["clip"])
        if src is None:
            continue  # a clip this run does not train on
        feats, inputs = video_inputs(engine, folder / "features" / f"{stem}.npz", src.fps, cfg,
                                     f"retargeted video {stem} (fes-live extract)")
        out.append(Clip(stem, src.identity, src.fps, inputs, src.gt, src.labels, src.ignore, feats,
                        role="retarget", talking=src.talking))
    return out


def load_copies(engine, clips: list[Clip], folder: Path, cache: Path, face_model: Path | None,
                cfg: RealTrainConfig = RealTrainConfig()) -> list[Clip]:
    """Re-encoded copies of the scored clips (`folder/clips/<clip>.mp4`, e.g. smaller and more compressed:
    `scripts/clip_copies.sh`) as training clips: their own features (extracted by `face_model` and cached like the
    originals'), their source clip's labels and identity, so that the fold holding that person out never trains on
    them."""
    version = real_eval.feature_code_version(face_model)
    out = []
    for src in clips:
        path = folder / "clips" / f"{src.name}.mp4"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no copy of {src.name} (scripts/clip_copies.sh makes them)")
        feats = real_eval.clip_features(path, cache, face_model, version)
        if len(feats["frame_index"]) != len(src.inputs) or abs(float(feats["fps"]) - src.fps) > 0.01:
            raise ValueError(f"{path}: {len(feats['frame_index'])} frames at {float(feats['fps']):g} fps, its source "
                             f"has {len(src.inputs)} at {src.fps:g}: the labels would not line up")
        inputs = baseline_normalize_inputs(engine, feats, src.fps, cfg)
        out.append(Clip(f"{src.name}@{folder.name}", src.identity, src.fps, inputs, src.gt, src.labels, src.ignore,
                        feats, role="copy", talking=src.talking))
    return out


def baseline_normalize_inputs(engine, feats: dict, fps: float, cfg: RealTrainConfig) -> np.ndarray:
    """What FEDN sees of a clip's features: geometry minus the spotter's causal neutral baseline."""
    from fes_live.models.baseline import baseline_normalize
    return baseline_normalize(feats["geometry"], feats["face_present"], baseline_config(engine, fps, cfg),
                              feats.get("new_face"))


def base_fedn(engine, inputs: str):
    """The engine's FEDN as a trainable torch module (its manifest config and weights), seeing `inputs`."""
    from fes_live.models.fedn import FEDN, FEDNConfig
    entry = engine.manifest["models"]["fedn"]
    model = FEDN(from_dict(FEDNConfig, {**entry["config"], "inputs": inputs}, where="fedn config"))
    state = torch.load(engine.folder / entry["weights"], map_location="cpu", weights_only=True)
    state.pop("input_mask", None)  # the mask is the config's, not the start engine's
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"input_mask"}:
        raise ValueError(f"{engine.folder}: FEDN weights do not fit its config ({missing}, {unexpected})")
    return model


def window_sample(clip: Clip, W: int, rng: np.random.Generator, cfg: RealTrainConfig, on_expression: bool,
                  on_talking: bool = False):
    """(W, F) input, GT, ignore spans in window frames: a random window, time-stretched by a random rate (on an
    expression, on a talking run centred anywhere in it, or anywhere)."""
    T = len(clip.inputs)
    r = float(np.exp(rng.uniform(np.log(cfg.rate[0]), np.log(cfg.rate[1]))))
    span = W * r                                   # source frames the window covers
    if on_talking and len(clip.talking):
        m = clip.talking[rng.integers(len(clip.talking))]
        s = float(np.clip(rng.uniform(m[0], m[1] + 1) - span / 2, 0.0, max(T - span, 0.0)))
    elif on_expression and len(clip.gt) and cfg.open_end > 0 and rng.random() < 0.5:
        m = clip.gt[rng.integers(len(clip.gt))]   # the window ends inside the expression: its start is news
        end = rng.uniform(min(m[0] + cfg.open_end * r, m[1]), m[1] + 1)
        s = float(np.clip(end - span, 0.0, max(T - span, 0.0)))
    elif on_expression and len(clip.gt):
        m = clip.gt[rng.integers(len(clip.gt))]
        lo, hi = m[1] - span + 1, m[0]             # the expression inside the window
        s = float(rng.uniform(max(0.0, lo), max(0.0, min(hi, T - span)) + 1e-9)) if hi >= max(0.0, lo) else 0.0
    else:
        s = float(rng.uniform(0, max(T - span, 0) + 1e-9))
    src = np.floor(s + np.arange(W) * r).astype(np.int64)
    valid = src < T
    x = np.zeros((W, clip.inputs.shape[1]), dtype=np.float32)
    x[valid] = clip.inputs[src[valid]]
    # window frame j shows source frame floor(s + j r): source frames [a, b] are window frames
    # [(a - s) / r, (b + 1 - s) / r - 1] (inclusive, as continuous ends)
    to_window = lambda iv: np.stack([(iv[:, 0] - s) / r, (iv[:, 1] + 1 - s) / r - 1], 1)  # noqa: E731
    return x, to_window(clip.gt), to_window(clip.ignore), int(valid.sum())


def targets(model, gt: np.ndarray, labels: np.ndarray, ignore: np.ndarray, W: int, cfg: RealTrainConfig):
    """Anchor targets of one window: labels mostly inside are learnt (clipped); anchors centred on a label mostly
    outside, or on an other facial action, are out of the loss."""
    a = model.anchors
    s, e = gt[:, 0], gt[:, 1]
    frames_in = (np.minimum(e, W - 1) - np.maximum(s, 0) + 1).clip(0)
    inside = frames_in / np.maximum(e - s + 1, 1e-6)
    keep = inside >= cfg.min_inside
    if cfg.open_end > 0:   # started in the window and still going on at its end
        keep |= (s >= 0) & (e > W - 1) & (frames_in >= cfg.open_end)
    clipped = np.stack([np.maximum(s, 0), np.minimum(e, W - 1)], 1)[keep]
    t = assign_anchor_targets(a.reference.numpy(), a.anchor_free.numpy(), a.strides.numpy(),
                              a.regress_range.numpy(), clipped, labels[keep], model.cfg.num_classes, cfg.assign)
    c = a.centres.numpy()
    for ps, pe in np.concatenate([np.stack([s, e], 1)[(inside > 0) & ~keep], ignore]).reshape(-1, 2):
        t.valid[(c >= ps) & (c <= pe) & ~t.positive] = False
    return t


def finetune(engine, clips: list[Clip], cfg: RealTrainConfig, desc: str = "FEDN", progress: bool = True):
    """The engine's FEDN trained further on `clips` for `cfg.epochs` (no selection: the last epoch is the model)."""
    torch.manual_seed(cfg.seed)
    model = base_fedn(engine, cfg.fedn_inputs)
    W, C = model.cfg.window, model.cfg.num_classes
    donors = [(c, run) for c in clips for run in c.talking]    # the training clips' own talking: never a held-out one
    cols = speech_channels()
    if cfg.mirror > 0 and cfg.fedn_inputs == "all":
        raise ValueError("mirror: FEDN must read blendshapes only (fedn_inputs 'expression' or 'blendshapes'); "
                         "the landmark columns are not mirrored")
    mirrored = mirror_columns(clips[0].inputs.shape[1]) if clips else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    bar = tqdm(range(cfg.epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        samples = [(i, k % 2 == 0) for i, c in enumerate(clips)
                   for k in range(cfg.synth_windows_per_clip if c.synthetic else cfg.windows_per_clip)]
        rng.shuffle(samples)
        total, steps = 0.0, 0
        for b in range(0, len(samples), cfg.batch):
            xs, tgs = [], []
            for i, on_expr in samples[b:b + cfg.batch]:
                # (the draw only when asked for: the recipe without it keeps its random stream, so its folds)
                on_talk = not on_expr and cfg.talking_windows > 0 and rng.random() < cfg.talking_windows
                x, gt, ign, n_valid = window_sample(clips[i], W, rng, cfg, on_expr, on_talk)
                if cfg.talking_overlay > 0 and donors and rng.random() < cfg.talking_overlay:
                    donor, run = donors[rng.integers(len(donors))]
                    overlay_talking(x, n_valid, donor, run, rng, cols)
                if cfg.mirror > 0 and rng.random() < cfg.mirror:
                    x = x[:, mirrored]
                if cfg.gain != (1.0, 1.0):
                    x = x * np.float32(np.exp(rng.uniform(np.log(cfg.gain[0]), np.log(cfg.gain[1]))))
                xs.append(x)
                tgs.append(targets(model, gt, clips[i].labels, ign, W, cfg))
            o = model(torch.from_numpy(np.stack(xs)))
            cat = lambda f: torch.from_numpy(np.concatenate([getattr(t, f) for t in tgs]))  # noqa: E731
            reg, cls = fedn_loss(o.cls_logits.reshape(-1, C), o.intervals.reshape(-1, 2), cat("cls"),
                                 cat("interval"), cat("positive"), cat("valid"), 1.0, 1.0)
            loss = reg + cls
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total += loss.item()
            steps += 1
        sched.step()
        bar.set_postfix(loss=f"{total / max(steps, 1):.3f}")
    return model.eval()


def spotter_overrides(cfg: RealTrainConfig) -> dict:
    """What the fine-tuned engine's manifest says of its spotter: FEDN-only proposals at the fixed threshold."""
    out = {"fedn_only_threshold": cfg.fedn_only_threshold, "proposals": {"score_threshold": [10.0, 10.0]}}
    channels = tuple(dict.fromkeys(cfg.neutral_ceiling + cfg.inference_ceiling))
    # always said (an empty list: none), so an engine fine-tuned from one with a ceiling does not inherit it
    out["baseline"] = {"neutral_ceiling": list(ceiling_values(cfg, channels)), **baseline_fields(cfg)}
    return out


def loio(engine, clips: list[Clip], cfg: RealTrainConfig, progress: bool = True,
         only: list[str] | None = None, models: Path | None = None, synth: list[Clip] = (),
         labels: dict | None = None, reuse: Path | None = None) -> tuple[dict, dict]:
    """Leave one identity out -> ({clip: events}, thresholds): each clip's events from the model that never saw its
    person (`only`: just these identities' folds; `models`: keep each fold's weights there, `<identity>.pt`; `synth`:
    synthetic and retargeted clips the folds train on, each but in the fold of its own identity; `reuse`: take a
    fold's model from there when it was kept with this recipe and these training clips, to re-score without
    retraining). With `cfg.select_threshold` (needs `labels`),
    thresholds is {identity: the threshold its clips were scored at, chosen on the other folds; "all": the best on
    every fold}."""
    identities = sorted({c.identity for c in clips} if not only else set(only))
    grid = tuple(cfg.select_threshold) or (cfg.fedn_only_threshold,)
    if cfg.select_threshold and labels is None:
        raise ValueError("select_threshold needs the labels to score the other folds")
    by_threshold: dict[float, dict[str, list]] = {t: {} for t in grid}
    started = time.monotonic()
    for k, ident in enumerate(identities):
        train = [c for c in clips if c.identity != ident] + [c for c in synth if c.identity != ident]
        model = kept_fold(engine, reuse / f"{ident}.pt", train, cfg) if reuse is not None else None
        trained = model is None
        if trained:
            model = finetune(engine, train, cfg, desc=f"fold {k + 1}/{len(identities)} ({ident})", progress=progress)
        if models is not None and (trained or reuse != models):
            models.mkdir(parents=True, exist_ok=True)
            torch.save({"config": to_dict(model.cfg), "state_dict": model.state_dict(), "recipe": training_recipe(cfg),
                        "targets": targets_digest(train), "trained_on": sorted(c.name for c in train)},
                       models / f"{ident}.pt")
        for c in clips:
            if c.identity == ident:
                for t in grid:
                    run = real_eval.run_engine(engine, c.feats, fedn=fedn_runner(model),
                                               spotter=spotter_overrides(replace(cfg, fedn_only_threshold=t)))
                    by_threshold[t][c.name] = run["events"]
        log.info("fold %d/%d %s: %d training clips, %.0f s so far", k + 1, len(identities), ident, len(train),
                 time.monotonic() - started)
    if not cfg.select_threshold:
        return by_threshold[grid[0]], {}
    scored = [c for c in clips if c.identity in identities and c.role == "scored"]  # thresholds: boundary F1 only
    scores = {t: {c.name: real_eval.score_clip(labels[c.name], by_threshold[t][c.name], "scored") for c in scored}
              for t in grid}
    chosen = nested_thresholds(scores, scored, identities)
    events = {c.name: by_threshold[chosen[c.identity]][c.name] for c in clips if c.identity in identities}
    log.info("thresholds chosen on the other folds: %s", chosen)
    return events, chosen


def training_recipe(cfg: RealTrainConfig) -> dict:
    """The recipe fields that shape the trained weights (not the thresholds applied afterwards)."""
    recipe = {k: v for k, v in to_dict(cfg).items()
              if k not in ("fedn_only_threshold", "select_threshold", "inference_ceiling")}
    if cfg.neutral_ceiling:
        recipe["neutral_ceiling_values"] = list(ceiling_values(cfg))
    # fields added after 0.6.0's folds were kept: off, they are the same recipe
    for field_ in ("talking_windows", "eyes_closed_hold", "rises_only", "mirror", "open_end", "synth_emotions"):
        if not getattr(cfg, field_):
            del recipe[field_]
    if cfg.gain == (1.0, 1.0):
        del recipe["gain"]
    return recipe


def targets_digest(clips: list[Clip]) -> str:
    """What a fold learnt from, beyond the recipe: each training clip's name, inputs, labels and talking runs (a
    label correction or features extracted by other code change it)."""
    import hashlib
    h = hashlib.sha256()
    for c in sorted(clips, key=lambda c: c.name):
        h.update(c.name.encode())
        h.update(np.ascontiguousarray(c.inputs, dtype=np.float32).tobytes())
        for a in (c.gt, c.labels, c.ignore, c.talking):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def kept_fold(engine, path: Path, train: list[Clip], cfg: RealTrainConfig):
    """A fold model kept by an earlier run, if it learnt from exactly `train`'s targets with this recipe; else
    None."""
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    recipe = json.loads(json.dumps(training_recipe(cfg)))  # tuples as lists, as the checkpoint holds them
    if ckpt.get("recipe") != recipe or ckpt.get("targets") != targets_digest(train):
        log.warning("%s: kept from another recipe, other clips or other labels: training this fold again", path)
        return None
    model = base_fedn(engine, cfg.fedn_inputs)
    model.load_state_dict(ckpt["state_dict"])
    log.info("%s: reused", path)
    return model.eval()


def best_threshold(scores: dict[float, dict[str, dict]], names: list[str]) -> float:
    """The threshold whose clip scores ({threshold: {clip: real_eval.score_clip}}) on `names` have the best pooled
    F1 (IoU 0.3, one event per expression); a tie goes to the higher one."""
    def f1(t: float) -> float:
        tot = real_eval.totals({n: scores[t][n] for n in names}, {n: "scored" for n in names})
        r, p = tot["recall_03"] or 0.0, tot["precision_one_to_one"] or 0.0
        return 2 * r * p / (r + p) if r + p else 0.0
    return max(sorted(scores), key=lambda t: (round(f1(t), 9), t))


def nested_thresholds(scores: dict[float, dict[str, dict]], held: list[Clip], identities: list[str]) -> dict:
    """{identity: the best threshold (best_threshold) on the *other* identities' held-out clips; "all": the best
    on every one of them}: model selection never looks at the fold it reports."""
    chosen = {ident: best_threshold(scores, [c.name for c in held if c.identity != ident]) for ident in identities}
    chosen["all"] = best_threshold(scores, [c.name for c in held])
    return chosen


def loio_report(engine, clips: list[Clip], labels: dict, events: dict, cfg: RealTrainConfig,
                synth: list[Clip] = (), thresholds: dict | None = None) -> dict:
    """The LOIO events scored by the benchmark's rules, beside the engine as shipped on the same clips."""
    shipped = {c.name: real_eval.run_engine(engine, c.feats)["events"] for c in clips}
    roles = {c.name: c.role for c in clips}
    scores = {"loio": {n: real_eval.score_clip(labels[n], ev, roles[n]) for n, ev in events.items()},
              "start": {n: real_eval.score_clip(labels[n], ev, roles[n]) for n, ev in shipped.items()}}
    return {"config": to_dict(cfg), "start_engine": {"path": real_eval._shown(engine.folder),
                                                    "version": engine.manifest["version"]},
            "identities": sorted({c.identity for c in clips}),
            "synthetic_videos": sorted(c.name for c in synth if c.synthetic),
            "retargeted_videos": sorted(c.name for c in synth if c.role == "retarget"),
            "copies": sorted(c.name for c in synth if c.role == "copy"),
            "thresholds": thresholds or {},
            "totals": {k: real_eval.totals(v, roles) for k, v in scores.items()},
            "clips": {n: {"identity": next(c.identity for c in clips if c.name == n),
                          "loio": scores["loio"][n], "start": scores["start"][n], "events": events[n]}
                      for n in events}}


def identity_rows(report: dict, side: str = "loio") -> dict[str, np.ndarray]:
    """Per identity of a LOIO report's scored clips: [expressions found at IoU 0.3, expressions, TP, FP]."""
    per: dict[str, np.ndarray] = {}
    for c in report["clips"].values():
        s = c[side]
        if "held" in s:
            continue
        row = np.array([sum(f["iou"] >= 0.3 for f in s["expressions"]), len(s["expressions"]), s["tp"], s["fp"]])
        per[c["identity"]] = per.get(c["identity"], 0) + row
    return per


def resampled_figures(rows: np.ndarray, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall at 0.3 and precision of each draw of identities (`picks`: draws x identities, indices into rows)."""
    sums = rows.astype(np.float64)[picks].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0] / sums[:, 1], sums[:, 2] / (sums[:, 2] + sums[:, 3])


def band(values: np.ndarray) -> tuple[float | None, float | None]:
    """The central 95 % of the draws where the figure is defined; (None, None) where it never is (no expression, no
    prediction)."""
    values = values[np.isfinite(values)]
    return tuple(float(q) for q in np.percentile(values, [2.5, 97.5])) if len(values) else (None, None)


def identity_intervals(report: dict, side: str = "loio", draws: int = 2000, seed: int = 0) -> dict:
    """95 % percentile intervals of recall at IoU 0.3 and precision, the scored clips' identities resampled with
    replacement: how far these 21 people let a figure be read (one seed's recipe moved recall by 0.09)."""
    rows = np.stack(list(identity_rows(report, side).values()))
    picks = np.random.default_rng(seed).integers(len(rows), size=(draws, len(rows)))
    recall, precision = resampled_figures(rows, picks)
    return {"identities": len(rows), "draws": draws, "recall_03": band(recall), "precision": band(precision)}


def loio_markdown(report: dict) -> str:
    fmt = real_eval.fmt
    t = report["totals"]
    a, b = t["loio"], t["start"]
    synth = report.get("synthetic_videos", [])
    also = (f" and on {len(synth)} synthetic videos of {len({v.rsplit('_', 1)[0] for v in synth})} other people "
            f"(`scripts/synth_sets.sh`; in every fold)" if synth else "")
    moved = report.get("retargeted_videos", [])
    if moved:
        also += (f"{' and' if synth else ' and on'} {len(moved)} retargeted videos (`scripts/retarget_sets.sh`: "
                 f"those clips' motion on {len({v.split('@')[1] for v in moved})} other people's faces)")
    copies = report.get("copies", [])
    if copies:
        also += (f"{' and' if synth or moved else ' and on'} {len(copies)} re-encoded copies of those clips "
                 f"(`scripts/clip_copies.sh`: {', '.join(sorted({v.split('@')[1] for v in copies}))})")
    held = f" and the {a['held_clips']} held-emotion clips (trained as background)" if a["held_clips"] else ""
    made_by = report.get("made_by")
    lines = ["# Real dev clips, leave one identity out: FEDN fine-tuned on real clips"
             + (" and synthetic videos" if synth else ""), "",
             f"Start: engine `{report['start_engine']['path']}` v{report['start_engine']['version']}. For each of "
             f"the {len(report['identities'])} identities of the {a['clips']} scored clips{held}, FEDN is fine-tuned "
             f"on the other identities' clips{also} (`train/real_train.py`, recipe below, fixed before any fold ran, "
             f"no selection on any fold) and scored on that identity's clips through the online spotter, every frame."
             + (f" Regenerate with `{made_by}`." if made_by else ""), "",
             "| figure | fine-tuned, held-out identity | start engine | goal |", "|---|---|---|---|"]
    for label, k, goal in (("recall, IoU >= 0.3", "recall_03", ">= 0.8"), ("recall, IoU >= 0.5", "recall_05", ""),
                           ("recall at 0.3, high-confidence labels", "recall_03_high", ""),
                           ("precision (IoU >= 0.3)", "precision", ">= 0.8"),
                           ("false alarms per minute, overall", "fa_per_min", ""),
                           ("emotion right, found expressions with an emotion", "emotion_acc", ">= 0.75")):
        lines.append(f"| {label} | **{fmt(a[k])}** | {fmt(b[k])} | {goal} |")
    if a["held_clips"]:
        lines.append(f"| emotion right, held-emotion clips (eamm_*, {a['held_clips']}; trained as background) | "
                     f"**{fmt(a['held_acc'])}** | {fmt(b['held_acc'])} | |")
    if "precision_one_to_one" in a:
        lines.append(f"| precision, one event per expression (MEGC's one-to-one rule) | "
                     f"**{fmt(a['precision_one_to_one'])}** | {fmt(b['precision_one_to_one'])} | >= 0.8 |")
    lines.append(f"| predictions: TP (of them duplicates) / FP / on other facial actions only | {a['tp']} "
                 f"({a.get('duplicates', 0)}) / {a['fp']} / {a['ignored']} | {b['tp']} ({b.get('duplicates', 0)}) / "
                 f"{b['fp']} / {b['ignored']} | |")
    for g in real_eval.NUISANCES:
        na, nb = a["nuisance"][g], b["nuisance"][g]
        lines.append(f"| false alarms per minute of {g} ({na['spans']} spans); spans reported | "
                     f"**{fmt(na['fa_per_min'])}**; {na['spans_reported']} | {fmt(nb['fa_per_min'])}; "
                     f"{nb['spans_reported']} | <= 0.5 |")
    if a.get("apex") and b.get("apex"):
        lines.append(f"| apex from the labelled peak, p50 / p90 (s); share within 0.2 s | "
                     f"**{real_eval.apex_cell(a['apex'])}** | {real_eval.apex_cell(b['apex'])} | |")
    ci = identity_intervals(report)
    lines += ["", f"95 % intervals over the {ci['identities']} identities (resampled with replacement, {ci['draws']} "
              f"draws): recall at IoU 0.3 {fmt(ci['recall_03'][0])}-{fmt(ci['recall_03'][1])}, precision "
              f"{fmt(ci['precision'][0])}-{fmt(ci['precision'][1])}: where the figures could fall on another set of "
              f"as many people like these, so the headline is a measure of the product within that margin."]
    lines += ["", "## Per clip", "", "| clip | identity | found at 0.3 (fine-tuned / start) of | events (FP) "
              "fine-tuned | events (FP) start |", "|---|---|---|---|---|"]
    for name, c in report["clips"].items():
        la, lb = c["loio"], c["start"]
        if "held" in la:
            said = [s["held"]["said"] or "nothing" for s in (la, lb)]
            lines.append(f"| {name} | {c['identity']} | held {la['held']['label']}: said {said[0]} / {said[1]} | "
                         f"{la['predictions']} | {lb['predictions']} |")
            continue
        fa = sum(f["iou"] >= 0.3 for f in la["expressions"])
        fb = sum(f["iou"] >= 0.3 for f in lb["expressions"])
        lines.append(f"| {name} | {c['identity']} | {fa} / {fb} of {len(la['expressions'])} | "
                     f"{la['predictions']} ({la['fp']}) | {lb['predictions']} ({lb['fp']}) |")
    chosen = report.get("thresholds") or {}
    if chosen:
        per_fold = sorted(v for k, v in chosen.items() if k != "all")
        counts = ", ".join(f"{t} ({per_fold.count(t)} folds)" for t in sorted(set(per_fold)))
        lines += ["", "## FEDN-only threshold, chosen nested", "",
                  f"Each fold's held-out clips were scored at the threshold of {report['config']['select_threshold']} "
                  f"with the best F1 (IoU 0.3) on the other folds' held-out clips, never on its own: {counts}. The "
                  f"exported engine takes the best on all folds: {chosen['all']}."]
    lines += ["", "## Recipe", "", "```json", json.dumps(report["config"], indent=1), "```", ""]
    return "\n".join(lines)


def export_engine(engine, model, cfg: RealTrainConfig, clips: list[Clip], out: Path, version: str,
                  synth_data: str | None = None) -> Path:
    """An engine folder: the start engine's GIM, the fine-tuned FEDN, the fixed threshold in the manifest."""
    from fes_live.calibration.thresholds import merge_spotter
    from fes_live.train.export import export
    m = engine.manifest
    tmp = out.parent / f".{out.name}-ckpt"
    tmp.mkdir(parents=True, exist_ok=True)
    meta = {"fps": m["fps"], "window": m["window"], "emotions": list(m["labels"]["emotions"]),
            "spotter": {}, "thresholds": {}, "package_version": version}
    gim_entry = m["models"]["gim"]
    gim_ckpt = {"model": "gim", "config": gim_entry["config"], "epoch": gim_entry.get("epoch", 0),
                "state_dict": torch.load(engine.folder / gim_entry["weights"], map_location="cpu", weights_only=True),
                "engine": {**meta, "feature": "roi-flow", "window": 17, "stride": 1, "feature_dim": 0,
                           "training_data": m.get("training_data", {}).get("gim", {})}}
    fedn_ckpt = {"model": "fedn", "config": to_dict(model.cfg), "epoch": cfg.epochs - 1,
                 "state_dict": model.state_dict(),
                 "engine": {**meta, "feature": "geometry-minus-baseline", "window": int(m["window"]["fedn"]),
                            "stride": int(m["stride"]["fedn"]), "feature_dim": int(m["models"]["fedn"]["config"]["in_dim"]),
                            "training_data": {"start": f"engine {m['version']} FEDN "
                                              f"({m.get('training_data', {}).get('fedn', {}).get('data', 'synthetic')})",
                                              "fine_tuned_on": "real_dev scored clips (../shared/data/real_dev)"
                                              + (f" and synthetic videos ({synth_data})" if synth_data else ""),
                                              "clips": [c.name for c in clips
                                                        if not c.synthetic and c.role not in ("retarget", "copy")],
                                              "copies": [c.name for c in clips if c.role == "copy"],
                                              "synthetic_videos": [c.name for c in clips if c.synthetic],
                                              "retargeted_videos": [c.name for c in clips if c.role == "retarget"],
                                              "recipe": to_dict(cfg)}}}
    torch.save(gim_ckpt, tmp / "gim.ckpt")
    torch.save(fedn_ckpt, tmp / "fedn.ckpt")
    old = m.get("thresholds", {})
    thresholds = {**{k: v for k, v in old.items() if k not in ("spotter", "calibrated_on")},
                  "fedn_only": cfg.fedn_only_threshold,
                  "spotter": merge_spotter(old.get("spotter", {}), spotter_overrides(cfg)),
                  "calibrated_on": {"rule": (f"best F1 (IoU 0.3) of {list(cfg.select_threshold)} on the leave-one-"
                                             f"identity-out held-out clips (fes-train real --loio)")
                                    if cfg.select_threshold else "fixed a priori (RealTrainConfig)"}}
    for k in ("val_f1", "val_gt", "val_predictions_at_zero", "val_f1_rerun"):
        thresholds.pop(k, None)
    path = export([tmp / "gim.ckpt", tmp / "fedn.ckpt"], out, thresholds=thresholds, version=version)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fes-train real", description=__doc__.splitlines()[0])
    p.add_argument("--engine", default=None, help="start engine (default: the bundled stream/engines/default)")
    p.add_argument("--data", default=str(real_eval.DEFAULT_DATA), help="the real_dev folder")
    p.add_argument("--overrides", default=str(real_eval.DEFAULT_OVERRIDES), help="label corrections ('' for none)")
    p.add_argument("--cache", default=str(real_eval.DEFAULT_CACHE), help="feature cache (outside the repository)")
    p.add_argument("--face-model", default=None, help="MediaPipe face_landmarker .task file")
    p.add_argument("--config", default=None, help="JSON of RealTrainConfig fields (unknown keys are errors)")
    p.add_argument("--loio", metavar="DIR", help="leave-one-identity-out run: write loio.md and loio.json here")
    p.add_argument("--keep-folds", metavar="DIR", help="with --loio: keep each fold's FEDN weights here")
    p.add_argument("--made-by", metavar="CMD", help="with --loio: the command that regenerates the report, written "
                   "into it (scripts/real_loio*.sh give themselves; default: this command line)")
    p.add_argument("--reuse-folds", metavar="DIR", help="with --loio: take fold models kept there (same recipe and "
                   "clips) instead of training them again, e.g. to re-score with other thresholds")
    p.add_argument("--synth", metavar="DIR", action="append", default=[],
                   help="also train on these fes-synth videos (native layout); repeatable")
    p.add_argument("--synth-features", metavar="DIR", action="append", default=[],
                   help="with each --synth, in the same order: their features, <video_id>.npz")
    p.add_argument("--retarget", metavar="DIR", help="also train on these retargeted videos (the scored "
                   "clips' motion on other faces; left out of their source identity's fold)")
    p.add_argument("--copies", metavar="DIR", action="append", default=[],
                   help="also train on re-encoded copies of the scored clips (DIR/clips/<clip>.mp4, "
                   "scripts/clip_copies.sh; each left out of its source identity's fold); repeatable")
    p.add_argument("--export", metavar="DIR", help="train on every scored clip and write an engine folder here")
    p.add_argument("--engine-version", default="0.3.0", help="version of the exported engine")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--version", action="version", version=version_text("fes-train real"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.loio and not args.export:
        p.error("give --loio DIR, --export DIR or both")
    if len(args.synth) != len(args.synth_features):
        p.error("every --synth needs its --synth-features, in the same order")
    torch.set_num_threads(max(1, args.threads))
    from fes_live.stream.engine import EngineError, load_engine
    try:
        cfg = from_dict(RealTrainConfig, json.loads(Path(args.config).read_text()) if args.config else {},
                        where=args.config or "config")
        engine = load_engine(args.engine, backend="export", device="cpu")
        if not engine.has_fedn:
            raise EngineError(f"{engine.folder}: no FEDN to fine-tune")
        clips, labels = load_clips(engine, Path(args.data), Path(args.cache),
                                   Path(args.overrides) if args.overrides else None, args.face_model, cfg)
        synth = [c for d, f in zip(args.synth, args.synth_features)
                 for c in load_synth(engine, Path(d), Path(f), cfg)]
        if args.retarget:
            synth = synth + load_retargeted(engine, clips, Path(args.retarget), cfg)
        face_model = real_eval.find_face_model(Path(args.data), args.face_model)
        for d in args.copies:
            synth = synth + load_copies(engine, [c for c in clips if c.role == "scored"], Path(d), Path(args.cache),
                                        face_model, cfg)
        if synth:
            log.info("%d synthetic, retargeted or re-encoded videos (%d expressions) join the training (a retargeted "
                     "or re-encoded one every fold but its source person's)", len(synth), sum(len(c.gt) for c in synth))
        if args.loio:
            out = Path(args.loio)
            events, chosen = loio(engine, clips, cfg, not args.no_progress,
                                  models=Path(args.keep_folds) if args.keep_folds else None, synth=synth,
                                  labels=labels, reuse=Path(args.reuse_folds) if args.reuse_folds else None)
            report = loio_report(engine, clips, labels, events, cfg, synth, chosen)
            given = sys.argv[1:] if argv is None else argv
            report["made_by"] = args.made_by or shlex.join(["fes-train", "real", *given])
            out.mkdir(parents=True, exist_ok=True)
            (out / "loio.json").write_text(json.dumps(report, indent=1, default=float))
            (out / "loio.md").write_text(loio_markdown(report))
            for k in ("loio", "start"):
                t = report["totals"][k]
                print(f"{k:6s} recall@0.3 {real_eval.fmt(t['recall_03'])} precision {real_eval.fmt(t['precision'])} "
                      f"FA/min {real_eval.fmt(t['fa_per_min'])} talking "
                      f"{real_eval.fmt(t['nuisance']['talking']['fa_per_min'])} emotion {real_eval.fmt(t['emotion_acc'])}")
            print(f"-> {out / 'loio.md'}")
        if args.export:
            if cfg.select_threshold:
                if not args.loio:
                    raise ValueError("select_threshold chooses the engine's threshold on the folds: give --loio too")
                cfg = replace(cfg, fedn_only_threshold=chosen["all"])
            model = finetune(engine, clips + synth, cfg, desc="all clips", progress=not args.no_progress)
            print(export_engine(engine, model, cfg, clips + synth, Path(args.export), args.engine_version,
                                ", ".join(args.synth) or None))
    except (ConfigError, EngineError, real_eval.RealDevError, FileNotFoundError, ValueError) as e:
        print(f"fes-train real: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
