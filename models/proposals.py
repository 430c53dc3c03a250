"""Post-processing: intervals from GIM's intensity curve and from FEDN's anchors, and the 1-D (soft-)NMS they share.

Intervals are inclusive frame ranges [onset, offset] (length offset - onset + 1, as the MEGC metric). Numpy in,
`models.spotting.Proposal` out; only `diou_1d` is torch (it is differentiable, for training).

GIM (reference_notes §1.7-1.8): for each threshold theta, runs of frames with I(t) > theta are candidates; a run's
score is inner - outer + gamma * A_c(apex) (mean intensity inside minus mean over margins of 0.2 x its length on
both sides, plus the apex classifier's probability of kind c at the run's peak), kept only if A_c(apex) > 0.5.
Then Gaussian soft-NMS per kind, duration filters per kind (seconds -> frames by fps), score thresholds, hard NMS
per kind with a cap, and one kind per place (a run of exactly 0.5 s could otherwise be both).
FEDN: per window, objectness = max sigmoid class score, threshold, top-k, clip to the window, shift to stream
frames; the caller merges windows with `nms_1d`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fes_live.models.spotting import MACRO, MICRO, MICRO_MAX_SECONDS, Proposal, kind_by_length


# ---------------------------------------------------------------------------------------------------------------
# IoU and NMS

def iou_1d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of inclusive intervals a (N, 2) and b (M, 2) -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    inter = np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    inter = np.clip(inter, 0, None)
    union = (a[:, 1] - a[:, 0] + 1)[:, None] + (b[:, 1] - b[:, 0] + 1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def nms_1d(intervals: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS: indices kept, best score first; a box is suppressed by a kept one with IoU > iou_threshold."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    iou = iou_1d(intervals, intervals)
    keep: list[int] = []
    for i in order:
        if max_keep is not None and len(keep) >= max_keep:
            break
        if all(iou[i, j] <= iou_threshold for j in keep):
            keep.append(int(i))
    return np.array(keep, dtype=np.int64)


def soft_nms_1d(intervals: np.ndarray, scores: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian soft-NMS: repeatedly take the best box and decay the rest by exp(-IoU^2 / sigma).

    Returns (order, decayed_scores): every index in the order it was picked, and its score at that moment.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1).copy()
    iou = iou_1d(intervals, intervals)
    left = list(range(len(scores)))
    order, out = [], []
    while left:
        k = max(left, key=lambda i: (scores[i], -i))
        left.remove(k)
        order.append(k)
        out.append(scores[k])
        for i in left:
            scores[i] *= math.exp(-iou[k, i] ** 2 / sigma)
    return np.array(order, dtype=np.int64), np.array(out, dtype=np.float64)


def diou_1d(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-D Distance-IoU of paired inclusive intervals (N, 2) -> (N,) in [-1, 1]: IoU - (centre distance / hull)^2.

    The DIoU loss is `1 - diou_1d(pred, target)`. A predicted end before its start counts as a 1-frame interval.
    """
    ps, pe = pred[:, 0], torch.maximum(pred[:, 1], pred[:, 0])
    ts, te = target[:, 0], target[:, 1]
    inter = (torch.minimum(pe, te) - torch.maximum(ps, ts) + 1).clamp(min=0)
    union = (pe - ps + 1) + (te - ts + 1) - inter
    hull = torch.maximum(pe, te) - torch.minimum(ps, ts) + 1
    dist = (ps + pe) / 2 - (ts + te) / 2
    return inter / union.clamp(min=1e-6) - (dist / hull.clamp(min=1e-6)) ** 2


# ---------------------------------------------------------------------------------------------------------------
# GIM: intensity curve -> proposals

@dataclass(frozen=True)
class GIMProposalConfig:
    thresholds: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # reference: 0.2 .. 0.8, both kinds
    outer_ratio: float = 0.2          # outer margin = 0.2 x run length on each side (reference lambda)
    apex_weight: float = 0.2          # gamma: score += gamma * A_c(apex)
    apex_threshold: float = 0.5       # keep a kind-c run only if A_c(apex) > this (reference action_thr)
    soft_nms_sigma: float = 0.3       # score * exp(-IoU^2 / 0.3)
    # Duration filters in seconds (reference at 30 fps: macro 15-240 frames, micro 9-15 frames).
    macro_seconds: tuple[float, float] = (0.5, 8.0)
    micro_seconds: tuple[float, float] = (0.3, MICRO_MAX_SECONDS)
    score_threshold: tuple[float, float] = (0.5, 0.5)  # (macro, micro); reference CAS(ME)^2; engines calibrate
    nms_iou: float = 0.5              # final hard NMS per kind
    max_per_segment: tuple[int, int] = (3, 2)  # cap per processed curve segment (the reference: 8 + 2 per video)


def duration_frames(seconds: tuple[float, float], fps: float) -> tuple[int, int]:
    """A (min, max) duration in seconds -> inclusive frame counts at `fps`."""
    return int(round(seconds[0] * fps)), int(round(seconds[1] * fps))


def threshold_runs(curve: np.ndarray, theta: float) -> list[tuple[int, int]]:
    """Inclusive (start, end) index ranges where curve > theta."""
    above = np.concatenate([[False], np.asarray(curve) > theta, [False]])
    edges = np.flatnonzero(above[1:] != above[:-1])
    return [(int(s), int(e) - 1) for s, e in zip(edges[::2], edges[1::2])]


def inner_outer_score(curve: np.ndarray, start: int, end: int, outer_ratio: float) -> float:
    """mean(curve[start..end]) - mean of the margins of max(1, round(ratio x len)) frames each side (clipped)."""
    n = end - start + 1
    m = max(1, int(round(outer_ratio * n)))
    inner = float(np.mean(curve[start:end + 1]))
    outer_idx = np.r_[max(0, start - m):start, end + 1:min(len(curve), end + 1 + m)]
    outer = float(np.mean(curve[outer_idx])) if len(outer_idx) else 0.0
    return inner - outer


def gim_proposals(intensity: np.ndarray, apex_probs: np.ndarray, fps: float,
                  cfg: GIMProposalConfig = GIMProposalConfig(), first_frame: int = 0) -> list[Proposal]:
    """Proposals from a piece of the intensity curve: intensity (T,), apex_probs (T, 2) [macro, micro].

    `first_frame` is the stream frame of intensity[0]. Best score first.
    """
    curve = np.asarray(intensity, dtype=np.float64).reshape(-1)
    apex_probs = np.asarray(apex_probs, dtype=np.float64).reshape(len(curve), 2)
    limits = {MACRO: duration_frames(cfg.macro_seconds, fps), MICRO: duration_frames(cfg.micro_seconds, fps)}
    found: list[Proposal] = []
    for kind in (MACRO, MICRO):
        cand: list[tuple[int, int, int, float]] = []  # start, end, apex, score
        for theta in cfg.thresholds:
            for s, e in threshold_runs(curve, theta):
                apex = s + int(np.argmax(curve[s:e + 1]))
                a = apex_probs[apex, kind]
                if a <= cfg.apex_threshold:
                    continue
                score = inner_outer_score(curve, s, e, cfg.outer_ratio) + cfg.apex_weight * a
                cand.append((s, e, apex, score))
        cand = list(dict.fromkeys(cand))  # the same run found at several thresholds counts once
        if not cand:
            continue
        iv = np.array([(c[0], c[1]) for c in cand], dtype=np.float64)
        order, decayed = soft_nms_1d(iv, np.array([c[3] for c in cand]), cfg.soft_nms_sigma)
        lo, hi = limits[kind]
        kept = [(cand[i], sc) for i, sc in zip(order, decayed)
                if lo <= cand[i][1] - cand[i][0] + 1 <= hi and sc >= cfg.score_threshold[kind]]
        if not kept:
            continue
        iv = np.array([(c[0], c[1]) for c, _ in kept], dtype=np.float64)
        keep = nms_1d(iv, np.array([sc for _, sc in kept]), cfg.nms_iou, cfg.max_per_segment[kind])
        for k in keep:
            (s, e, apex, _), sc = kept[k]
            found.append(Proposal(onset=first_frame + s, apex=first_frame + apex, offset=first_frame + e, kind=kind,
                                  score=float(sc), peak_intensity=float(curve[apex]), source="gim"))
    return resolve_kinds(found, cfg.nms_iou)


def resolve_kinds(proposals: list[Proposal], iou_threshold: float) -> list[Proposal]:
    """One kind per place: NMS over all kinds together, best score first."""
    if not proposals:
        return []
    iv = np.array([(p.onset, p.offset) for p in proposals], dtype=np.float64)
    keep = nms_1d(iv, np.array([p.score for p in proposals]), iou_threshold)
    return [proposals[i] for i in keep]


# ---------------------------------------------------------------------------------------------------------------
# FEDN: one window's anchors -> proposals

@dataclass(frozen=True)
class FEDNDecodeConfig:
    score_threshold: float = 0.3      # objectness (max class probability) to keep an interval
    top_k: int = 30                   # best intervals kept per window before NMS (LGSNet TOP_K 30)
    nms_iou: float = 0.5              # within a window and across overlapping windows
    min_frames: int = 3               # shorter predictions are noise at 30 fps
    micro_max_seconds: float = MICRO_MAX_SECONDS  # FEDN has no kind head: kind by duration (< 0.5 s = micro)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def fedn_proposals(cls_logits: np.ndarray, intervals: np.ndarray, first_frame: int, window: int, fps: float,
                   cfg: FEDNDecodeConfig = FEDNDecodeConfig(), valid_frames: int | None = None) -> list[Proposal]:
    """Decode one window: cls_logits (N, C), intervals (N, 2) in window frames -> proposals in stream frames.

    Intervals are clipped to the window's first `valid_frames` frames (default: all), rounded, filtered and
    NMS'd; best score first.
    """
    probs = _sigmoid(np.asarray(cls_logits, dtype=np.float64))
    iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    if len(probs) != len(iv):
        raise ValueError(f"FEDN output mismatch: {len(probs)} class rows but {len(iv)} intervals")
    last = (window if valid_frames is None else valid_frames) - 1
    score = probs.max(axis=1)
    cand = np.flatnonzero(score >= cfg.score_threshold)
    cand = cand[np.argsort(-score[cand], kind="stable")][:cfg.top_k]
    onset = np.clip(np.round(iv[cand, 0]), 0, last).astype(np.int64)
    offset = np.clip(np.round(iv[cand, 1]), 0, last).astype(np.int64)
    ok = offset - onset + 1 >= cfg.min_frames
    cand, onset, offset = cand[ok], onset[ok], offset[ok]
    if len(cand) == 0:
        return []
    keep = nms_1d(np.stack([onset, offset], 1), score[cand], cfg.nms_iou)
    micro_max = cfg.micro_max_seconds * fps
    out = []
    for k in keep:
        i, s, e = int(cand[k]), int(onset[k]), int(offset[k])
        out.append(Proposal(onset=first_frame + s, apex=first_frame + (s + e) // 2, offset=first_frame + e,
                            kind=kind_by_length(e - s + 1, micro_max), score=float(score[i]),
                            emotion=int(np.argmax(probs[i])), emotion_probs=tuple(float(p) for p in probs[i]),
                            source="fedn"))
    return out
