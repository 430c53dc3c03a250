"""Retargeting: a real clip's facial motion replayed on other people's faces (issue 10).

The generator's own expressions are hand-made action-unit displacements that MediaPipe reads faintly or not at all
(docs/real_dev.md: its anger moves browDown by a few hundredths). Here the motion comes from a real labelled clip
instead: every frame's pose-free landmarks (the ingest's aligned, frontalized crop) minus the clip's own neutral
shape are fitted, frame by frame, by the generator's action-unit bases
(bounded least squares, in face units), and the fitted weights drive `FaceWarper` on another face. Smiles, raised
brows, talking and blinks keep their real timing and co-occurrence, and smiles their strength; MediaPipe reads
the warped brows and jaw at a fifth to a half of theirs (docs/real_dev.md). The labels are the source clip's,
frame for frame. Head drift and lighting are the generator's; the source's head turns are not replayed.

    python -m fes_live.train.synth_retarget --faces F.jpg [F.jpg ...] --per-clip 2 --out runs/retarget
    scripts/retarget_sets.sh    # every scored clip on two of eight faces, and their features

Each video is `<clip>@<face>.mp4` at the clip's frame rate; its labels stay with the clip (real_dev labels.json
and configs/real_dev_overrides.json), so nothing is copied from the dev set but motion.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from fes_live.train import synth_face as sf
from fes_live.train.synth_warp import BASES, BASIS_INDEX, basis_displacements, face_axes

log = logging.getLogger(__name__)

N_BLENDSHAPES = 52
CROP = 224.0
MAX_WEIGHT = 1.5
# Rendered and read back by MediaPipe, a basis moves the mesh less than its weight says (the warp's rings and the
# tracker's own smoothing): the slope of the weights fitted on a render against those it was rendered from (no L1
# weight either side), over four dev clips (brow raises, smiles, talking, blinks, face-pulling) on one face, was
# AU1 0.63, AU2 0.96, AU4 0.45, AU5 0.71, AU6 0.48, AU7 0.48, AU9 0.52, AU10 0.56, AU12 0.81, AU15 0.95, AU24 0.44,
# AU26 0.65, blink 0.34, pucker 0.80. The render takes the fitted weights times about their inverse; the brows
# more (MediaPipe's brow readings stayed at a fifth of the source's), AU10 less (an upper lip raised further shows
# a dark slab where a real mouth shows teeth). docs/real_dev.md has what MediaPipe then reads.
ROUND_TRIP_GAIN = dict(AU1=2.5, AU2=2.0, AU4=2.2, AU5=1.4, AU6=2.1, AU7=2.1, AU9=1.9, AU10=1.0, AU12=1.25,
                       AU15=1.05, AU24=2.3, AU26=1.55, blink=2.9, pucker=1.25)
RENDER_MAX = 2.5
# An L1 weight on the action units in the fit: without it, least squares explains a real mouth by opposing bases
# that cancel in the mesh (a smile as AU12 + AU15 + AU24 + pucker) and render as a torn mouth; at 0.15 a smile is
# AU12 with AU6 / AU10, at 0.5 the smaller brow motions shrink to nothing. Chosen on rendered frames, not on a score.
SPARSITY = 0.15


def render_weights(weights: np.ndarray) -> np.ndarray:
    """Fitted weights -> the weights to render (round-trip gain; a blink closes the eye at 1, no further)."""
    w = weights * np.array([ROUND_TRIP_GAIN[b] for b in BASES], np.float32)
    hi = np.full(len(BASES), RENDER_MAX, np.float32)
    hi[BASIS_INDEX["blink"]] = 1.0
    return np.minimum(w, hi)


def crop_landmarks(geometry: np.ndarray) -> np.ndarray:
    """(T, 468, 2) mesh points in aligned-crop pixels, from the feature layout's geometry columns."""
    lm = geometry[:, N_BLENDSHAPES:].reshape(len(geometry), -1, 2)[:, : sf.MESH_POINTS]
    return (lm + 0.5) * CROP


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity taking the points `src` (N, 2) onto `dst` (Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, s, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1.0, d]) @ vt
    m = np.zeros((2, 3))
    m[:, :2] = (s * [1.0, d]).sum() / (a ** 2).sum(1).mean() * r
    m[:, 2] = md - m[:, :2] @ ms
    return m


def neutral_shape(landmarks: np.ndarray) -> np.ndarray:
    """The median resting mesh of (N, 468, 2) neutral frames, each first aligned to their mean (whole mesh: they
    hold no expression), so what alignment the crops left does not blur it."""
    ref = landmarks.mean(0)
    for _ in range(2):
        aligned = [f @ m[:, :2].T + m[:, 2] for f in landmarks for m in [similarity(f, ref)]]
        ref = np.median(aligned, axis=0)
    return ref


def neutral_frames(n: int, present: np.ndarray, events: list[dict], blendshapes: np.ndarray,
                   margin: int = 5, least: int = 10) -> np.ndarray:
    """Frames of the clip's resting face: present and outside every labelled span (any type, with a margin); a clip
    that is labelled almost throughout takes its least active tenth instead."""
    free = present.copy()
    for e in events:
        free[max(int(e["start"]) - margin, 0): int(e["end"]) + margin + 1] = False
    if free.sum() >= least:
        return np.flatnonzero(free)
    activity = np.where(present, np.abs(blendshapes).sum(1), np.inf)
    return np.argsort(activity)[: max(least, n // 10)]


def fit_bases(neutral: np.ndarray) -> np.ndarray:
    """(K, 468, 2) displacements of the mesh at full weight of each basis, on the source's own neutral shape.

    The blink's rendering basis says where pixels come from (a backward field); as mesh motion a blink carries each
    upper-lid point onto the lower lid.
    """
    axes = face_axes(neutral)
    bases = basis_displacements(neutral, axes).astype(np.float64)
    blink = np.zeros_like(bases[0])
    for upper, lower in ((sf.RIGHT_EYE_UPPER, sf.RIGHT_EYE_LOWER), (sf.LEFT_EYE_UPPER, sf.LEFT_EYE_LOWER)):
        up, lo = list(upper[1:-1]), list(lower[1:-1])
        blink[up] = neutral[lo] - neutral[up]
    bases[BASIS_INDEX["blink"]] = blink
    return bases


def pose_bases(neutral: np.ndarray) -> np.ndarray:
    """(4, 468, 2) mesh motion of a small shift (x, y), scaling and roll of the whole neutral shape."""
    rel = neutral - neutral.mean(0)
    shift_x, shift_y = np.zeros_like(rel), np.zeros_like(rel)
    shift_x[:, 0], shift_y[:, 1] = 1.0, 1.0
    return np.stack([shift_x, shift_y, rel, np.stack([-rel[:, 1], rel[:, 0]], 1)])


def fit_weights(landmarks: np.ndarray, present: np.ndarray, neutral_idx: np.ndarray,
                iterations: int = 500, sparsity: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame basis weights (T, K) in [0, MAX_WEIGHT] (the blink in [0, 1]) that best explain each frame's mesh
    displacement from the neutral shape, and the fraction of that displacement they explain (T,).

    The crops are aligned already; what alignment is left (a shift, scale or roll of a few pixels) is fitted with
    the action units, as four unbounded bases, not removed first: every mesh point moves under some action unit,
    so aligning on any of them first would take part of the expression away. Accelerated projected gradient
    (FISTA) on the normal equations, all frames at once, each basis scaled to unit norm first (their norms differ
    20-fold and some are close to collinear: AU1 and AU4, AU5 and the blink). `sparsity` is an L1 weight on the
    action units (SPARSITY), relative to the clip's rms projected motion so it does not depend on the crop scale.
    """
    neutral = neutral_shape(landmarks[neutral_idx])
    disp = (landmarks - neutral).reshape(len(landmarks), -1)           # (T, 936)
    k = len(BASES)
    a = np.concatenate([fit_bases(neutral), pose_bases(neutral)]).reshape(k + 4, -1)
    norm = np.maximum(np.linalg.norm(a, axis=1), 1e-9)
    gram, rhs = (a @ a.T) / np.outer(norm, norm), (disp @ a.T) / norm
    lo = np.concatenate([np.zeros(k), np.full(4, -np.inf)])
    hi = np.concatenate([np.full(k, MAX_WEIGHT), np.full(4, np.inf)])
    hi[BASIS_INDEX["blink"]] = 1.0
    lo, hi = lo * norm, hi * norm                                      # bounds of the scaled unknowns
    step = 1.0 / np.linalg.eigvalsh(gram).max()
    penalty = np.concatenate([np.full(k, sparsity), np.zeros(4)]) * np.sqrt((rhs ** 2).mean())
    v = y = np.zeros_like(rhs)
    momentum = 1.0
    for _ in range(iterations):
        v_next = np.clip(y - step * (y @ gram - rhs + penalty), lo, hi)
        m_next = (1 + np.sqrt(1 + 4 * momentum * momentum)) / 2
        y = v_next + ((momentum - 1) / m_next) * (v_next - v)
        v, momentum = v_next, m_next
    w = v / norm
    w[~present] = 0.0
    resid = ((disp - w @ a) ** 2).sum(1)
    explained = 1.0 - resid / np.maximum((disp ** 2).sum(1), 1e-9)
    return w[:, :k].astype(np.float32), np.where(present, explained, np.nan)


def clip_weights(geometry: np.ndarray, present: np.ndarray, events: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """A clip's features and labels -> (the weights to render per frame, the fraction of motion the fit explains)."""
    idx = neutral_frames(len(geometry), present, events, geometry[:, :N_BLENDSHAPES])
    weights, explained = fit_weights(crop_landmarks(geometry), present, idx, sparsity=SPARSITY)
    return render_weights(weights), explained


def retarget_timeline(weights: np.ndarray, fps: float, cfg, rng: np.random.Generator):
    """A fes-synth Timeline with the fitted weights, and the generator's head drift and lighting for its length."""
    from fes_live.train.synth_timeline import build_timeline
    quiet = replace(cfg, fps=fps, seconds=len(weights) / fps, macro_per_min=0.0, micro_per_min=0.0,
                    blinks_per_min=0.0, talk_per_min=0.0)
    tl = build_timeline(quiet, rng)
    n = min(tl.n_frames, len(weights))
    tl.n_frames = n
    tl.weights = np.ascontiguousarray(weights[:n])
    tl.head, tl.light = tl.head[:n], tl.light[:n]
    return tl, quiet


def write_video(path: Path, warper, weights: np.ndarray, fps: float, cfg, seed: list[int]):
    """Render the fitted `weights` on `warper`'s face into an .mp4 at `fps`; returns the timeline rendered."""
    from fes_live.train.synth import render_video
    from fes_live.train.synth_layouts import Mp4Sink
    tl, vcfg = retarget_timeline(weights, fps, cfg, np.random.default_rng(seed))
    sink = Mp4Sink(path, fps, (vcfg.width, vcfg.height))
    try:
        render_video(warper, tl, vcfg, np.random.default_rng([*seed, 1]), sink)
    finally:
        sink.close()
    return tl


def pairs(clips: list[str], faces: list[str], per_clip: int) -> list[tuple[str, str]]:
    """(clip, face) pairs: each clip on `per_clip` faces, taken round-robin so every face gets as many clips."""
    out, k = [], 0
    for c in clips:
        for _ in range(per_clip):
            out.append((c, faces[k % len(faces)]))
            k += 1
    return out


def main(argv: list[str] | None = None) -> int:
    from fes_live.stream.config import load_config
    from fes_live.train import real_eval
    from fes_live.train.synth import SynthConfig, load_faces

    p = argparse.ArgumentParser(prog="python -m fes_live.train.synth_retarget", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(real_eval.DEFAULT_DATA), help="real dev set (labels.json, clips/)")
    p.add_argument("--clip", action="append", default=[], help="only these clips (default: every scored clip)")
    p.add_argument("--faces", nargs="+", required=True, help="target face photos")
    p.add_argument("--per-clip", type=int, default=2, help="target faces per clip")
    p.add_argument("--config", default="configs/synth_default.json", help="fes-synth config (head drift, light)")
    p.add_argument("--cache", default=str(real_eval.DEFAULT_CACHE), help="feature cache of the dev clips")
    p.add_argument("--face-model", default=None)
    p.add_argument("--seed", type=int, default=8000)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels, _ = real_eval.load_labels(data, real_eval.DEFAULT_OVERRIDES)
    names = args.clip or sorted(n for n in labels if real_eval.clip_role(n, labels[n]) == "scored")
    fm = real_eval.find_face_model(data, args.face_model)
    version = real_eval.feature_code_version(fm)
    cfg = load_config(SynthConfig, args.config) if args.config else SynthConfig()
    warpers = {w.face.name: w for w in load_faces(args.faces, cfg, args.face_model)}
    summary, fitted = {}, {}
    for k, (clip, face) in enumerate(pairs(names, list(warpers), args.per_clip)):
        path = out / f"{clip}@{face}.mp4"
        if clip not in fitted:  # once per clip, whatever the number of faces
            feats = real_eval.clip_features(data / "clips" / f"{clip}.mp4", Path(args.cache), fm, version)
            present, fps = feats["face_present"].astype(bool), float(feats["fps"])
            fitted[clip] = (fps, *clip_weights(feats["geometry"], present, labels[clip]["events"]))
        fps, weights, explained = fitted[clip]
        summary[path.stem] = {"clip": clip, "face": face, "fps": fps, "frames": len(weights),
                              "explained_median": float(np.nanmedian(explained))}
        if path.exists():
            continue
        tl = write_video(path, warpers[face], weights, fps, cfg, [args.seed, k])
        log.info("%s: %d frames, fit explains %.2f of the motion (median)", path.name, tl.n_frames,
                 summary[path.stem]["explained_median"])
    (out / "retarget_manifest.json").write_text(json.dumps({"seed": args.seed, "videos": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
