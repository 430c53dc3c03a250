"""Loss terms of GIM (reference_notes §1.5) and FEDN (1-D DIoU + BCE), as pure tensor functions.

Each takes the model's outputs and the targets of `fes_live.train.targets` and returns a scalar; an empty selection gives
0 (not NaN), so a video without a given kind trains on the rest. Weights live in the training config.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def intensity_regression(intensity: Tensor, y: Tensor, negative: Tensor) -> Tensor:
    """MSE(I, y) on macro-labelled frames + MSE(I, y) on micro-labelled frames + MSE(I, 0) on mined negatives.

    intensity (T,), y (T, 2) soft targets (0 = unlabelled), negative (T,) bool.
    """
    loss = intensity.new_zeros(())
    for c in range(y.shape[1]):
        loss = loss + _masked_mean((intensity - y[:, c]) ** 2, y[:, c] > 0)
    return loss + _masked_mean(intensity ** 2, negative)


def smoothness(intensity: Tensor) -> Tensor:
    """mean_t |I(t+1) - I(t)|.

    The reference takes the signed mean, which telescopes to (I_T - I_0) / (T - 1) and so smooths nothing;
    the absolute difference penalises every jump (an L1 total variation keeps sharp onsets possible).
    """
    if intensity.numel() < 2:
        return intensity.new_zeros(())
    return (intensity[1:] - intensity[:-1]).abs().mean()


def reward(intensity: Tensor, y: Tensor, weights: tuple[float, float] = (0.4, 0.6)) -> Tensor:
    """-w_macro * mean(I on y_macro > 0.5) - w_micro * mean(I on y_micro > 0.5): pushes confident frames up."""
    loss = intensity.new_zeros(())
    for c, w in enumerate(weights):
        loss = loss - w * _masked_mean(intensity, y[:, c] > 0.5)
    return loss


def focal_apex(logits: Tensor, target: Tensor, alpha: tuple[float, float] = (0.90, 0.93),
               weight: tuple[float, float] = (1.0, 1.8), gamma: float = 1.0, smoothing: float = 0.25) -> Tensor:
    """Focal BCE per channel (macro, micro) on frames with target 0 or 1 (-1 ignored).

    Positives: -alpha (1-p)^gamma log p. Negatives: -(1-alpha) p^gamma [(1-s) log(1-p) + s log p] with s the label
    smoothing of negatives. Mean over the labelled frames of each channel, weighted per channel.
    """
    if logits.shape != target.shape:
        raise ValueError(f"apex logits shape {tuple(logits.shape)} != target shape {tuple(target.shape)}")
    loss = logits.new_zeros(())
    for c in range(logits.shape[1]):
        z, t = logits[:, c], target[:, c]
        p = torch.sigmoid(z)
        log_p, log_1p = F.logsigmoid(z), F.logsigmoid(-z)
        pos = -alpha[c] * (1 - p) ** gamma * log_p
        neg = -(1 - alpha[c]) * p ** gamma * ((1 - smoothing) * log_1p + smoothing * log_p)
        per = torch.where(t > 0.5, pos, neg)
        loss = loss + weight[c] * _masked_mean(per, t >= 0)
    return loss


def intensity_aware_contrastive(features: Tensor, classes: Tensor, pseudo_intensity: Tensor,
                                temperature: float = 0.5, base_temperature: float = 0.07) -> Tensor:
    """Supervised contrastive loss over frames of class 0 neutral, 1 macro, 2 micro (-1 ignored), weighted by intensity.

    Pair weights w_ij: same expression class 1 - |I*_i - I*_j|; neutral-neutral 1; neutral-expression and
    macro-micro |I*_i - I*_j|. For anchor i with positives P(i) (same class):
      l_i = -1/|P(i)| sum_{j in P(i)} [log w_ij + s_ij - log sum_{k != i} w_ik exp(s_ik)],  s = f_i.f_j / temperature,
    scaled by temperature / base_temperature. Unlike the reference, features are L2-normalised first so that the
    term's scale does not depend on the feature norm (its weight is then O(0.1), not 1e-5).
    """
    keep = classes >= 0
    f, c, q = features[keep], classes[keep], pseudo_intensity[keep]
    n = f.shape[0]
    if n < 2:
        return features.new_zeros(())
    f = F.normalize(f, dim=1)
    s = f @ f.T / temperature                                   # (n, n)
    same = c[:, None] == c[None, :]
    diff = (q[:, None] - q[None, :]).abs()
    both_neutral = (c[:, None] == 0) & (c[None, :] == 0)
    w = torch.where(same, 1 - diff, diff)
    w = torch.where(both_neutral, torch.ones_like(w), w).clamp(min=1e-6)
    eye = torch.eye(n, dtype=torch.bool, device=f.device)
    s = s - s.detach().max(dim=1, keepdim=True).values           # numerical stability, cancels out
    denom = torch.logsumexp(torch.where(eye, torch.full_like(s, -torch.inf), s + w.log()), dim=1)  # (n,)
    pos = same & ~eye
    log_prob = w.log() + s - denom[:, None]
    n_pos = pos.sum(dim=1)
    has = n_pos > 0
    if not bool(has.any()):
        return features.new_zeros(())
    per = -(log_prob * pos).sum(dim=1)[has] / n_pos[has]
    return (temperature / base_temperature) * per.mean()


def sparsity(intensity: Tensor) -> Tensor:
    """mean I(t): most frames of a long video are neutral."""
    return intensity.mean()


def diou_loss_1d(pred: Tensor, target: Tensor) -> Tensor:
    """1-D Distance-IoU loss per pair of inclusive intervals (N, 2) -> (N,): 1 - IoU + (centre distance / hull)^2.

    Lengths are end - start + 1 (inclusive frames), matching the MEGC evaluation's IoU.
    """
    ps, pe = pred[:, 0], torch.maximum(pred[:, 1], pred[:, 0])
    ts, te = target[:, 0], target[:, 1]
    inter = (torch.minimum(pe, te) - torch.maximum(ps, ts) + 1).clamp(min=0)
    union = (pe - ps + 1) + (te - ts + 1) - inter
    iou = inter / union.clamp(min=1e-6)
    hull = torch.maximum(pe, te) - torch.minimum(ps, ts) + 1
    dist = (ps + pe) / 2 - (ts + te) / 2
    return 1 - iou + (dist / hull.clamp(min=1e-6)) ** 2


def fedn_loss(cls_logits: Tensor, intervals: Tensor, cls_target: Tensor, interval_target: Tensor,
              positive: Tensor, valid: Tensor, reg_weight: float = 1.0, cls_weight: float = 1.0
              ) -> tuple[Tensor, Tensor]:
    """(DIoU on positives, BCE on valid anchors), each normalised by the number of positives (>= 1).

    cls_logits (N, C), intervals (N, 2) decoded predictions, cls_target (N, C), interval_target (N, 2),
    positive / valid (N,) bool. The highest class score is the objectness, so negatives are all-zero targets.
    """
    n_pos = positive.sum().clamp(min=1).to(cls_logits.dtype)
    reg = diou_loss_1d(intervals[positive], interval_target[positive]).sum() / n_pos
    bce = F.binary_cross_entropy_with_logits(cls_logits[valid], cls_target[valid], reduction="sum") / n_pos
    return reg_weight * reg, cls_weight * bce
