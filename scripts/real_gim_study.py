"""Study (session 26, not kept): GIM on real faces. The engine's GIM (trained on synthetic ROI flow) fine-tuned on the
real dev clips, point-supervised as PWES/GIM intend for cheaply labelled video (one point per expression: the
label's `peak`, else its middle; train.train.gim_step's soft Gaussian pseudo-labels) with the labelled talking,
blink and gaze frames as negatives too, leave one identity out on the named folds; optionally with the ROI flow
divided by a causal running scale per face track (`--mode scale`: real flow is 4-7x the synthetic videos'), or
(session 36, `--mode displacement`) with each ROI's displacement from the person's neutral instead of flow (the 12
ROI landmarks of the geometry minus the causal baseline, what FEDN sees; a held smile keeps it, where its flow is
0), GIM then trained from scratch, or (session 37, `--mode blendshapes`) with the expression blendshapes' own
deviations from that neutral (`BLENDSHAPE_NODES`), likewise from scratch. The held-out intensity curves are scored
frame by frame (AUROC, expression frames against background and nuisance frames), next to the expression level on
the same frames (`models.emotion.expression_level`, nothing learnt), and, with `--proposals`, as GIM-only proposals
by the benchmark's rules.

    .venv/bin/python scripts/real_gim_study.py --folds edtalk_expression_source,liveportrait_d12,fomm_10,\
liveportrait_d9,liveportrait_d0,sadtalker_RD_Radio34_000 [--mode scale|displacement|blendshapes] [--epochs 10] \
[--lr 1e-3] [--proposals]

About 2 minutes a fold and 10 epochs on 2 cores (blendshapes: 5). docs/real_dev.md ("GIM on real faces") has the
figures.
"""
import argparse
import dataclasses
import time

import numpy as np
import torch

from fes_live.models.baseline import BLENDSHAPE_DIM
from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES, expression_level
from fes_live.models.gim import GIM, GIMConfig
from fes_live.models.proposals import GIMProposalConfig, gim_proposals
from fes_live.stream.config import from_dict
from fes_live.stream.engine import load_engine
from fes_live.stream.features import ROI_MESH_INDEX, flow_windows
from fes_live.train import real_eval, real_train
from fes_live.train.train import TrainConfig, gim_step

# `--mode blendshapes`: the expression blendshapes' deviations from neutral as GIM nodes of two values each (a
# left/right twin, or two channels of one region), in region groups
BLENDSHAPE_NODES = (
    ("browDownLeft", "browDownRight"), ("browOuterUpLeft", "browOuterUpRight"), ("browInnerUp", "browInnerUp"),
    ("cheekSquintLeft", "cheekSquintRight"), ("eyeSquintLeft", "eyeSquintRight"), ("eyeWideLeft", "eyeWideRight"),
    ("noseSneerLeft", "noseSneerRight"),
    ("mouthSmileLeft", "mouthSmileRight"), ("mouthFrownLeft", "mouthFrownRight"),
    ("mouthDimpleLeft", "mouthDimpleRight"), ("mouthStretchLeft", "mouthStretchRight"),
    ("mouthPressLeft", "mouthPressRight"), ("mouthUpperUpLeft", "mouthUpperUpRight"),
    ("mouthLowerDownLeft", "mouthLowerDownRight"), ("mouthLeft", "mouthRight"), ("jawLeft", "jawRight"),
    ("jawOpen", "jawForward"), ("mouthPucker", "mouthFunnel"), ("mouthRollLower", "mouthRollUpper"),
    ("mouthShrugLower", "mouthShrugUpper"), ("mouthClose", "cheekPuff"),
)
BLENDSHAPE_GROUPS = ((0, 1, 2), (3, 4, 5, 6), tuple(range(7, len(BLENDSHAPE_NODES))))
SYNTHETIC_FLOW = 0.07  # median ROI flow magnitude of the synthetic training videos (real clips: 0.1-0.6)
DISPLACEMENT_SCALE = 10.0  # aligned-landmark deltas (0.01-0.04 over expressions) to the synthetic flow's scale


def running_scale(flow: np.ndarray, face: np.ndarray, fps: float, seconds: float = 5.0) -> np.ndarray:
    """Causal running mean of each frame's median ROI flow magnitude (1 s plain mean, then an EMA); restarts with
    each face track."""
    mag = np.median(np.linalg.norm(flow, axis=-1), axis=1)
    out, s, n, a = np.ones(len(mag)), 0.0, 0, 1.0 / max(1.0, seconds * fps)
    for t, (m, f) in enumerate(zip(mag, face)):
        if not f:
            n = 0
            continue
        n += 1
        s = m if n == 1 else (s + (m - s) / n if n < fps else s + a * (m - s))
        out[t] = s
    return out


def trailing_mean3(x: np.ndarray) -> np.ndarray:
    """Each value averaged with the two before it (the spotter's smoothing of the expression level)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(1, len(x) + 1)
    return (c[i] - c[np.maximum(i - 3, 0)]) / np.minimum(i, 3)


def prepare(clip, info: dict, mode: str):
    """Flow (scaled or not), face mask, frame kinds (0 background, 1 expression, 2 nuisance, 3 other facial
    action; an expression said while talking is an expression), point labels and kinds (macro 0 / micro 1)."""
    flow = np.asarray(clip.feats["roi_flow"], np.float32)
    face = np.asarray(clip.feats["face_present"], bool)
    if mode == "blendshapes":
        index = [[MEDIAPIPE_BLENDSHAPES.index(c) for c in pair] for pair in BLENDSHAPE_NODES]
        flow = clip.inputs[:, :BLENDSHAPE_DIM][:, index].astype(np.float32)
    elif mode == "displacement":
        landmarks = clip.inputs[:, BLENDSHAPE_DIM:].reshape(len(flow), -1, 2)
        flow = (landmarks[:, ROI_MESH_INDEX] * DISPLACEMENT_SCALE).astype(np.float32)
    elif mode == "scale":
        scale = SYNTHETIC_FLOW / np.maximum(running_scale(flow, face, clip.fps), 0.02)
        flow = flow * scale[:, None, None].astype(np.float32)
    n = len(flow)
    kind = real_eval.frame_kinds(info, n)
    points, kinds = [], []
    for e in info["events"]:
        s, t = int(e["start"]), min(int(e["end"]), n - 1)
        if real_eval.label_kind(e["type"]) == "expression":
            points.append(int(e["peak"]) if e.get("peak") is not None else (s + t) // 2)
            kinds.append(1 if (t - s + 1) < 0.5 * clip.fps else 0)
    return flow, face, kind, np.array(points, np.int64), np.array(kinds, np.int64)


def finetune(start: dict, gcfg: GIMConfig, data: dict, names: list[str], epochs: int, lr: float, crops: int = 4,
             crop: int = 256, seed: int = 0) -> GIM:
    torch.manual_seed(seed)
    model = GIM(gcfg)
    model.load_state_dict(start)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    cfg = TrainConfig()
    windows = {n: torch.from_numpy(flow_windows(data[n][0], np.arange(len(data[n][0])))) for n in names}
    for epoch in range(epochs):
        model.train()
        rng = np.random.default_rng([seed, epoch])
        for n in rng.permutation(names):
            flow, _, kind, points, kinds = data[n]
            T = len(flow)
            for s in [0] if T <= crop else [int(rng.integers(0, T - crop + 1)) for _ in range(crops)]:
                e = min(T, s + crop)
                inside = (points >= s) & (points < e)
                # past the point-label warm-up (gim_start): instance-adaptive pseudo-labels from the first epoch,
                # as the start model already has a curve
                loss, _ = gim_step(cfg, model, windows[n][s:e], points[inside] - s, kinds[inside],
                                   epoch + cfg.pseudo.gim_start)
                nuisance = torch.from_numpy(kind[s:e] == 2)
                if nuisance.any():
                    loss = loss + (model(windows[n][s:e][nuisance]).intensity ** 2).mean()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
        sched.step()
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", default="stream/engines/default")
    p.add_argument("--folds", required=True, help="comma-separated identities to hold out, one fold each")
    p.add_argument("--mode", choices=("raw", "scale", "displacement", "blendshapes"), default="raw")
    p.add_argument("--epochs", type=int, default=10, help="0: the engine's GIM as it is")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--proposals", action="store_true", help="also score GIM-only proposals")
    args = p.parse_args()
    torch.set_num_threads(2)
    engine = load_engine(args.engine, backend="export", device="cpu")
    clips, labels = real_train.load_clips(engine, real_eval.DEFAULT_DATA, real_eval.DEFAULT_CACHE,
                                          real_eval.DEFAULT_OVERRIDES, None)
    entry = engine.manifest["models"]["gim"]
    gcfg = from_dict(GIMConfig, entry["config"], where="gim")
    start = torch.load(engine.folder / entry["weights"], map_location="cpu", weights_only=True)
    if args.mode == "blendshapes":
        gcfg = dataclasses.replace(gcfg, n_rois=len(BLENDSHAPE_NODES), rois=tuple(range(len(BLENDSHAPE_NODES))),
                                   groups=BLENDSHAPE_GROUPS)
    if args.mode in ("displacement", "blendshapes"):  # another input: the flow-trained weights mean nothing for it
        torch.manual_seed(0)
        start = GIM(gcfg).state_dict()
    data = {c.name: prepare(c, labels[c.name], args.mode) for c in clips}
    curves = {}
    for ident in args.folds.split(","):
        t0 = time.monotonic()
        model = finetune(start, gcfg, data, [c.name for c in clips if c.identity != ident], args.epochs, args.lr)
        for c in clips:
            if c.identity == ident:
                flow = data[c.name][0]
                with torch.no_grad():
                    curves[c.name] = model(torch.from_numpy(flow_windows(flow, np.arange(len(flow))))).intensity.numpy()
        print(f"fold {ident}: {time.monotonic() - t0:.0f} s", flush=True)
    by_name = {c.name: c for c in clips}
    levels = {n: trailing_mean3(expression_level(by_name[n].inputs[:, :BLENDSHAPE_DIM])) for n in curves}
    for what, source in ((f"{args.mode}, {args.epochs} epochs: I(t)", curves), ("expression level", levels)):
        frames = {k: [] for k in (1, 0, 2)}
        for n, curve in source.items():
            _, face, kind, _, _ = data[n]
            for k in frames:
                frames[k] += list(curve[face & (kind == k)])
        print(f"{what}: median on expression {np.median(frames[1]):.2f}, background {np.median(frames[0]):.2f}, "
              f"nuisance {np.median(frames[2]):.2f} frames; AUROC expression against background "
              f"{real_eval.auroc(frames[1], frames[0]):.3f}, against nuisance "
              f"{real_eval.auroc(frames[1], frames[2]):.3f}")
    if args.proposals:
        for threshold in (0.3, 0.5, 0.7):
            cfg = GIMProposalConfig(apex_threshold=-1.0, score_threshold=(threshold, 10.0))
            scores = {}
            for n, curve in curves.items():
                found = gim_proposals(curve, np.ones((len(curve), 2)), float(labels[n]["fps"]), cfg)
                events = [{"onset": q.onset, "offset": q.offset, "emotion": None} for q in found]
                scores[n] = real_eval.score_clip(labels[n], events, "scored")
            t = real_eval.totals(scores, {n: "scored" for n in scores})
            print(f"GIM-only proposals, score >= {threshold}: recall {real_eval.fmt(t['recall_03'])} of "
                  f"{t['expressions']}, precision {real_eval.fmt(t['precision'])} ({t['tp']} TP / {t['fp']} FP)")


if __name__ == "__main__":
    main()
