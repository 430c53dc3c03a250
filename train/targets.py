"""Training targets: GIM pseudo-labels from point labels, and FEDN anchor assignment from intervals.

GIM (reference_notes §1.4): a point label p of kind c (0 macro, 1 micro) becomes, by epoch,
  epoch < soft_start            hard box [p - h, p + h) of ones (h = 5 macro, 3 micro);
  soft_start <= epoch < gim     feature-space Gaussian around the point itself, radius 2/1, then 4/2;
  epoch >= gim_start            instance-adaptive: pseudo-apex a = argmax I(t) near p, duration from the number
                                of reliable frames (I > tau_e), feature-space Gaussian around a.
"Feature-space Gaussian" is y(t) = exp(-|g_t - g_a|^2 / (2 sigma^2)) with sigma^2 the mean squared distance in the
window: it follows the expression's own appearance, not a bell curve over time. Negatives are the unlabelled frames
with the lowest I(t). `mode="hard"` keeps the epoch-0 boxes for the whole run (the baseline the paper compares to).

Where it adds (PWES's MPLG, Algorithm 1): with `mining="mplg"` the intensity plays PWES's attention A and the apex
classifier's probabilities its class-specific TCAM S (classes = macro, micro). Step 1 modulates A by the normalised
feature similarity to the labelled points before the pseudo-apex search, so a high-intensity context frame that
looks unlike every labelled point does not become the apex; steps 2-5 (`mplg_foreground`, from `gim_start` on)
add fine-grained foreground frames: S masked to the top-k of that A, weighted by the similarity to each kind's
labelled points, cut below its temporal mean, kept where the winning kind exceeds theta; step 6 takes negatives
from the 2k least-attended frames.

All arrays here are numpy: targets are computed without gradients from the model's current (detached) outputs.
Frame indices are 0-based and intervals inclusive; the reference's end-exclusive clip to [0, T-1) is not kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fes_live.models.proposals import iou_1d
from fes_live.models.spotting import MACRO, MICRO


@dataclass(frozen=True)
class PseudoLabelConfig:
    mode: str = "gim"                         # "gim" (schedule above) or "hard" (epoch-0 boxes throughout)
    mining: str = "lowest"                    # "lowest" (GIM) or "mplg" (PWES-style similarity-refined)
    hard_half: tuple[int, int] = (5, 3)       # epoch-0 box [p - h, p + h) per kind (macro, micro)
    soft_start: int = 1                       # first epoch with soft labels around the point
    soft_radius: tuple[int, int] = (2, 1)     # radius of those, epochs soft_start .. soft_wide_start - 1
    soft_wide_start: int = 3
    soft_wide_radius: tuple[int, int] = (4, 2)
    gim_start: int = 5                        # first epoch of instance-adaptive labels
    k: tuple[int, int] = (32, 16)             # search scale: apex within +-k/4, duration within +-k/2
    d_max: tuple[int, int] = (36, 16)         # longest duration a pseudo label may get (frames)
    duration_scale: float = 1.2               # n reliable frames -> estimated duration
    tau_start: float = 0.8                    # reliability threshold at gim_start ...
    tau_end: float = 0.5                      # ... falling linearly to this ...
    tau_epochs: int = 24                      # ... over this many epochs (the reference: 0.8 - (e-5)/80)
    apex_radius: tuple[int, int] = (2, 1)     # apex-classifier positives a +- r
    apex_ignore_radius: int = 6               # apex negatives: frames within this of a y > 0.5 frame
    mplg_k_frac: float = 0.3                  # MPLG: at most this fraction of frames is coarse foreground
    mplg_theta: float = 0.8                   # MPLG step 5: foreground where the refined probability exceeds this


@dataclass
class GIMTargets:
    """Per-frame targets of one video (T frames)."""
    y: np.ndarray          # (T, 2) soft intensity target per kind (macro, micro); 0 = unlabelled
    apex: np.ndarray       # (T, 2) apex-classifier target: 1, 0, or -1 (ignored)
    negative: np.ndarray   # (T,) bool, mined negatives (intensity target 0)
    apex_frames: np.ndarray  # (P,) pseudo-apex frame of each point
    contrast: np.ndarray   # (T,) contrastive class: -1 ignore, 0 neutral, 1 macro, 2 micro

    @property
    def pseudo_intensity(self) -> np.ndarray:
        return self.y.max(axis=1)


def feature_gaussian(g: np.ndarray, centre: int, lo: int, hi: int) -> np.ndarray:
    """exp(-|g_t - g_centre|^2 / (2 sigma^2)) for t in [lo, hi], sigma^2 = mean squared distance in the window."""
    d2 = ((g[lo:hi + 1] - g[centre]) ** 2).sum(axis=1)
    var = float(d2.mean())
    if var <= 1e-12:  # identical features: the whole window is the expression
        return np.ones(hi - lo + 1, dtype=np.float32)
    return np.exp(-d2 / (2.0 * var)).astype(np.float32)


def reliability_threshold(epoch: int, cfg: PseudoLabelConfig) -> float:
    step = (cfg.tau_start - cfg.tau_end) / max(cfg.tau_epochs, 1)
    return max(cfg.tau_end, cfg.tau_start - (epoch - cfg.gim_start) * step)


def pseudo_apex(intensity: np.ndarray, point: int, kind: int, cfg: PseudoLabelConfig) -> int:
    """argmax of I(t) within +-k/4 of the point (first maximum on ties)."""
    T = len(intensity)
    r = cfg.k[kind] // 4
    lo, hi = max(0, point - r), min(T - 1, point + r)
    return lo + int(np.argmax(intensity[lo:hi + 1]))


def estimated_half_duration(intensity: np.ndarray, apex: int, kind: int, tau: float,
                            cfg: PseudoLabelConfig) -> int:
    """h = floor(min(D_max, max(k/2, round(scale * n))) / 2), n = #frames within +-k/2 of the apex with I > tau."""
    T = len(intensity)
    half = cfg.k[kind] // 2
    lo, hi = max(0, apex - half), min(T - 1, apex + half)
    n = int((intensity[lo:hi + 1] > tau).sum())
    duration = min(cfg.d_max[kind], max(half, int(round(cfg.duration_scale * n))))
    return duration // 2


def mplg_attention(intensity: np.ndarray, g: np.ndarray, points: np.ndarray) -> np.ndarray:
    """PWES MPLG step 1: A' = A * minmax(max_n cos(g_t, g_point_n)); labelled frames keep their full weight."""
    if len(points) == 0:
        return intensity.astype(np.float32)
    gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-8)
    sim = (gn @ gn[points].T).max(axis=1)  # (T,)
    span = sim.max() - sim.min()
    sim = (sim - sim.min()) / span if span > 1e-8 else np.ones_like(sim)
    sim[points] = 1.0
    return (intensity * sim).astype(np.float32)


def mplg_foreground(probs: np.ndarray, attention: np.ndarray, g: np.ndarray, points: np.ndarray,
                    kinds: np.ndarray, cfg: PseudoLabelConfig = PseudoLabelConfig()) -> np.ndarray:
    """PWES MPLG steps 2-5: (T, C) bool fine-grained pseudo foreground per class from (T, C) probabilities.

    attention is step 1's A' (`mplg_attention`). W_{t,c} = softmax_c(-|g_t - Z_c|) with Z_c the mean feature of
    class c's labelled points; a class without points in this video gets W = 0 (the others 1), as PWES says.
    (PWES writes the softmax of the distance itself; a weight that should favour the nearer class needs -distance.)
    """
    T, C = probs.shape
    k = max(1, int(cfg.mplg_k_frac * T))
    mask = np.zeros(T, dtype=bool)
    mask[np.argsort(-attention, kind="stable")[:k]] = True                      # step 2: top-k of A'
    s1 = probs * mask[:, None]
    present = [c for c in range(C) if (kinds == c).any()]
    if len(present) == C:                                                      # step 3: class-level similarity
        dist = np.stack([np.linalg.norm(g - g[points[kinds == c]].mean(axis=0), axis=1) for c in range(C)], 1)
        w = np.exp(-(dist - dist.min(axis=1, keepdims=True)))
        w /= w.sum(axis=1, keepdims=True)
    else:
        w = np.zeros((T, C), dtype=np.float32)
        w[:, present] = 1.0
    s2 = s1 * w
    s2[s2 < probs.mean(axis=0)[None, :]] = 0.0                                 # step 4: below the temporal mean
    best = s2.argmax(axis=1)                                                   # step 5: winning class above theta
    fg = np.zeros((T, C), dtype=bool)
    keep = s2[np.arange(T), best] > cfg.mplg_theta
    fg[np.flatnonzero(keep), best[keep]] = True
    return fg


def gim_targets(points: np.ndarray, kinds: np.ndarray, intensity: np.ndarray, g: np.ndarray, epoch: int,
                cfg: PseudoLabelConfig = PseudoLabelConfig(), apex_probs: np.ndarray | None = None) -> GIMTargets:
    """Pseudo-labels of one video at `epoch` from point labels, the current I(t) (T,) and GIM features g (T, D);
    with `mining="mplg"` also the apex classifier's (T, 2) probabilities (MPLG's class-specific scores)."""
    points = np.asarray(points, dtype=np.int64).reshape(-1)
    kinds = np.asarray(kinds, dtype=np.int64).reshape(-1)
    intensity = np.asarray(intensity, dtype=np.float32).reshape(-1)
    g = np.asarray(g, dtype=np.float32)
    T = len(intensity)
    if len(points) != len(kinds):
        raise ValueError(f"{len(points)} points but {len(kinds)} kinds")
    if len(points) and (points.min() < 0 or points.max() >= T):
        raise ValueError(f"point labels {points.tolist()} outside the video's {T} frames")
    if g.shape[0] != T:
        raise ValueError(f"features have {g.shape[0]} frames, intensity {T}")
    if cfg.mode not in ("gim", "hard") or cfg.mining not in ("lowest", "mplg"):
        raise ValueError(f"unknown pseudo-label mode {cfg.mode!r} / mining {cfg.mining!r}")

    search = mplg_attention(intensity, g, points) if cfg.mining == "mplg" else intensity
    y = np.zeros((T, 2), dtype=np.float32)
    apexes = np.zeros(len(points), dtype=np.int64)
    for i, (p, c) in enumerate(zip(points, kinds)):
        if cfg.mode == "hard" or epoch < cfg.soft_start:
            h = cfg.hard_half[c]
            lo, hi = max(0, p - h), min(T - 1, p + h - 1)  # [p - h, p + h) inclusive of p - h, exclusive of p + h
            y[lo:hi + 1, c] = 1.0
            apexes[i] = p
            continue
        if epoch < cfg.gim_start:
            r = cfg.soft_radius[c] if epoch < cfg.soft_wide_start else cfg.soft_wide_radius[c]
            centre = p
        else:
            centre = pseudo_apex(search, int(p), int(c), cfg)
            r = estimated_half_duration(intensity, centre, int(c), reliability_threshold(epoch, cfg), cfg)
        lo, hi = max(0, centre - r), min(T - 1, centre + r)
        y[lo:hi + 1, c] = np.maximum(y[lo:hi + 1, c], feature_gaussian(g, centre, lo, hi))
        apexes[i] = centre

    if cfg.mining == "mplg" and cfg.mode == "gim" and epoch >= cfg.gim_start and apex_probs is not None and len(points):
        fg = mplg_foreground(np.asarray(apex_probs, dtype=np.float32).reshape(T, 2), search, g, points, kinds, cfg)
        y[fg] = 1.0                                                            # eq. 15: point labels OR mined
    negative = mine_negatives(y, search if cfg.mining == "mplg" else intensity, cfg)
    return GIMTargets(y=y, apex=apex_targets(y, apexes, kinds, negative, cfg), negative=negative,
                      apex_frames=apexes, contrast=contrast_classes(y, negative))


def mine_negatives(y: np.ndarray, intensity: np.ndarray, cfg: PseudoLabelConfig = PseudoLabelConfig()) -> np.ndarray:
    """The k_neg unlabelled frames with the lowest intensity, k_neg = max(1, min(#unlabelled, #positive)).

    With `mining="mplg"` k_neg is 2 * #positive (PWES: twice as many background as foreground samples), capped
    at the unlabelled frames.
    """
    labelled = y.max(axis=1) > 0
    free = np.flatnonzero(~labelled)
    n_pos = int(labelled.sum())
    k = n_pos if cfg.mining == "lowest" else 2 * n_pos
    k = max(1, min(len(free), k)) if len(free) else 0
    neg = np.zeros(len(y), dtype=bool)
    if k:
        order = free[np.argsort(intensity[free], kind="stable")]
        neg[order[:k]] = True
    return neg


def apex_targets(y: np.ndarray, apexes: np.ndarray, kinds: np.ndarray, negative: np.ndarray,
                 cfg: PseudoLabelConfig = PseudoLabelConfig()) -> np.ndarray:
    """1 on apex +- r of its own kind; 0 near any confident frame (y > 0.5) and on negatives; -1 elsewhere."""
    T = len(y)
    out = np.full((T, 2), -1.0, dtype=np.float32)
    confident = np.flatnonzero(y.max(axis=1) > 0.5)
    for t in confident:
        lo, hi = max(0, t - cfg.apex_ignore_radius), min(T - 1, t + cfg.apex_ignore_radius)
        out[lo:hi + 1] = 0.0
    out[negative] = 0.0
    for a, c in zip(apexes, kinds):
        r = cfg.apex_radius[c]
        out[max(0, a - r):min(T - 1, a + r) + 1, c] = 1.0
    return out


def contrast_classes(y: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """-1 ignore, 0 neutral (mined negative), 1 macro (y > 0.5), 2 micro (y > 0.5; micro wins a tie)."""
    out = np.full(len(y), -1, dtype=np.int64)
    out[negative] = 0
    out[y[:, MACRO] > 0.5] = 1
    out[y[:, MICRO] > 0.5] = 2
    return out


# ---------------------------------------------------------------------------------------------------------------
# FEDN: anchors -> targets


@dataclass(frozen=True)
class AssignConfig:
    pos_iou: float = 0.5          # anchor-based: positive when IoU with a GT >= this ...
    neg_iou: float = 0.4          # ... negative below this, ignored in between (LGSNet FG_TH / BG_TH)
    centre_radius: float = 1.5    # anchor-free: positive when |position - GT centre| <= radius * stride


@dataclass
class AnchorTargets:
    cls: np.ndarray        # (N, C) float: one-hot emotion of the matched GT, zeros for negatives
    interval: np.ndarray   # (N, 2) float: matched GT [start, end] in window frames (valid where positive)
    positive: np.ndarray   # (N,) bool
    valid: np.ndarray      # (N,) bool: takes part in the classification loss (positives and negatives)


def assign_anchor_targets(anchors: np.ndarray, anchor_free: np.ndarray, strides: np.ndarray,
                          regress_range: np.ndarray, gt: np.ndarray, gt_labels: np.ndarray, num_classes: int,
                          cfg: AssignConfig = AssignConfig()) -> AnchorTargets:
    """Match N anchors of one window to its M ground-truth intervals.

    anchors (N, 2): the reference interval [start, end] of anchor-based anchors; for anchor-free ones the
    position (start == end == centre). anchor_free (N,) bool, strides (N,) frames per position of the anchor's
    pyramid level, regress_range (N, 2) lengths an anchor-free position of that level is responsible for.
    Anchor-based: IoU >= pos_iou (best GT), and each GT's best anchor is positive whatever its IoU (so every GT
    is learnt). Anchor-free: centre within `centre_radius * stride` of the GT centre and GT length within the
    level's range; the shortest such GT wins. GT that overlaps the window only partly should be clipped first.
    """
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    N = len(anchors)
    free = np.asarray(anchor_free, dtype=bool).reshape(N)
    strides = np.asarray(strides, dtype=np.float64).reshape(N)
    ranges = np.asarray(regress_range, dtype=np.float64).reshape(N, 2)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    if len(gt) != len(labels):
        raise ValueError(f"{len(gt)} GT intervals but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"GT labels {labels.tolist()} outside 0..{num_classes - 1}")
    cls = np.zeros((N, num_classes), dtype=np.float32)
    interval = np.zeros((N, 2), dtype=np.float32)
    positive = np.zeros(N, dtype=bool)
    valid = np.ones(N, dtype=bool)
    if len(gt) == 0:
        return AnchorTargets(cls, interval, positive, valid)

    match = np.full(N, -1, dtype=np.int64)
    based = np.flatnonzero(~free)
    if len(based):
        iou = iou_1d(anchors[based], gt)  # (Nb, M)
        best = iou.argmax(axis=1)
        best_iou = iou[np.arange(len(based)), best]
        match[based[best_iou >= cfg.pos_iou]] = best[best_iou >= cfg.pos_iou]
        valid[based[(best_iou >= cfg.neg_iou) & (best_iou < cfg.pos_iou)]] = False
        for m in range(len(gt)):  # every GT gets at least its best anchor
            j = int(iou[:, m].argmax())
            if iou[j, m] > 0:
                match[based[j]] = m
                valid[based[j]] = True

    idx = np.flatnonzero(free)
    if len(idx):
        centre = anchors[idx, 0]
        gt_centre = gt.mean(axis=1)
        gt_len = gt[:, 1] - gt[:, 0] + 1
        near = np.abs(centre[:, None] - gt_centre[None, :]) <= cfg.centre_radius * strides[idx, None]
        inside = (centre[:, None] >= gt[None, :, 0]) & (centre[:, None] <= gt[None, :, 1])
        in_range = (gt_len[None, :] >= ranges[idx, 0:1]) & (gt_len[None, :] <= ranges[idx, 1:2])
        ok = near & inside & in_range
        cost = np.where(ok, gt_len[None, :], np.inf)
        best = cost.argmin(axis=1)
        has = np.isfinite(cost[np.arange(len(idx)), best])
        match[idx[has]] = best[has]

    positive = match >= 0
    cls[positive, labels[match[positive]]] = 1.0
    interval[positive] = gt[match[positive]]
    return AnchorTargets(cls, interval, positive, valid)
