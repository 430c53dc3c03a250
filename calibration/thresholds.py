"""Score thresholds calibrated on validation data, per fold, so that no threshold is ever tuned on a test subject.

The spotter emits three kinds of scored proposals with scores on different scales: GIM macro and GIM micro
(inner-outer curve scores, `SpotterConfig.proposals.score_threshold`) and FEDN-only intervals (objectness,
`SpotterConfig.fedn_only_threshold`). Run the spotter on the validation videos with all three at 0, then
`calibrate` searches the grid for the triple with the best pooled MEGC F1 (official rule: inclusive IoU >= 0.5,
a GT is found by any prediction of its class). Raising a threshold only drops proposals, so filtering the
zero-threshold output equals re-running with the threshold up to the spotter's per-piece caps (which can admit a
lower-scored proposal when a better one is filtered) -- a small, conservative difference.

The result goes into the engine manifest (`fes-export --thresholds`) as `thresholds` plus `spotter` overrides.
Pure numpy, importing nothing of ours above `models/`: `stream/` and `train/` both use it
(`fes-train --recalibrate RUN` re-derives a finished run's thresholds).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from fes_live.models.spotting import MACRO, MICRO
GROUPS = ("gim_macro", "gim_micro", "fedn_only")
# GIM scores are inner-outer (<= 1) + 0.2 x apex probability, so they reach 1.2; the grid's top switches a kind off
DEFAULT_GRID = tuple(round(x, 3) for x in np.arange(0.0, 1.2501, 0.025))
ZERO_THRESHOLDS = {"proposals": {"score_threshold": [0.0, 0.0]}, "fedn_only_threshold": 0.0}


_TUPLE_FIELDS = ("onset", "offset", "kind", "score")


def _get(p: Any, key: str, default=None):
    """A field of an Interval / Proposal, a dict, or a tuple (onset, offset, kind[, score])."""
    if isinstance(p, Mapping):
        value = p.get(key, default)
    elif isinstance(p, (tuple, list)):
        i = _TUPLE_FIELDS.index(key) if key in _TUPLE_FIELDS else len(p)
        value = p[i] if i < len(p) else default
    else:
        value = getattr(p, key, default)
    if key == "kind" and isinstance(value, str):
        value = MICRO if value.lower().startswith("micro") else MACRO
    return value


def group_of(p: Any) -> int:
    """0 gim_macro, 1 gim_micro, 2 fedn_only (a proposal from FEDN that no GIM proposal claimed)."""
    if _get(p, "source", "") == "fedn":
        return 2
    return MICRO if int(_get(p, "kind")) == MICRO else MACRO


def _iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    return inter / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter)


def calibrate(gt: Mapping[str, Iterable[Any]], preds: Mapping[str, Iterable[Any]],
              grid: Iterable[float] = DEFAULT_GRID, iou_threshold: float = 0.5) -> dict[str, Any]:
    """Best (gim_macro, gim_micro, fedn_only) thresholds for pooled MEGC F1 on `gt` / `preds` (zero thresholds).

    Ties go to the higher thresholds (fewer false positives on unseen data).
    """
    grid = np.asarray(sorted(set(float(g) for g in grid)), dtype=np.float64)
    G = len(grid)
    # n_pred[g, i]: proposals of group g with score >= grid[i]
    scores: list[list[float]] = [[], [], []]
    # per GT: best score per group among predictions of its class with IoU >= threshold (-inf when none)
    gt_best: list[np.ndarray] = []
    videos = set(gt) | set(preds)
    for vid in videos:
        ps = list(preds.get(vid, []))
        for p in ps:
            scores[group_of(p)].append(float(_get(p, "score")))
        for g in gt.get(vid, []):
            kind = int(_get(g, "kind"))
            span = (int(_get(g, "onset")), int(_get(g, "offset")))
            best = np.full(3, -np.inf)
            for p in ps:
                if int(_get(p, "kind")) != kind:
                    continue
                if _iou(span, (int(_get(p, "onset")), int(_get(p, "offset")))) >= iou_threshold:
                    k = group_of(p)
                    best[k] = max(best[k], float(_get(p, "score")))
            gt_best.append(best)
    n_gt = len(gt_best)
    n_pred = np.array([[np.sum(np.asarray(s) >= t) for t in grid] for s in scores])  # (3, G)
    found = np.array(gt_best).reshape(-1, 3)                                          # (n_gt, 3)
    above = found[:, :, None] >= grid[None, None, :]                                   # (n_gt, 3, G)
    best = (-1.0, 0, 0, 0)
    for i in range(G - 1, -1, -1):
        for j in range(G - 1, -1, -1):
            a = above[:, 0, i] | above[:, 1, j]                                       # (n_gt,)
            tp = (a[:, None] | above[:, 2, :]).sum(axis=0)                            # (G,) over k
            denom = n_pred[0, i] + n_pred[1, j] + n_pred[2, :] + n_gt
            f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
            k = int(np.argmax(f1[::-1]))
            k = G - 1 - k
            if f1[k] > best[0] + 1e-12:
                best = (float(f1[k]), i, j, k)
    f1, i, j, k = best
    values = {"gim_macro": float(grid[i]), "gim_micro": float(grid[j]), "fedn_only": float(grid[k])}
    return {**values, "val_f1": max(f1, 0.0), "val_gt": n_gt,
            "val_predictions_at_zero": int(sum(len(s) for s in scores)),
            "spotter": spotter_overrides(values)}


def spotter_overrides(values: Mapping[str, float]) -> dict[str, Any]:
    """The SpotterConfig fields the thresholds set (merged into the manifest's `spotter`)."""
    return {"proposals": {"score_threshold": [values["gim_macro"], values["gim_micro"]]},
            "fedn_only_threshold": values["fedn_only"]}


def merge_spotter(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dict merge (one level deep for sub-configs such as `proposals`)."""
    out = dict(base)
    for k, v in overrides.items():
        out[k] = {**out[k], **v} if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out
