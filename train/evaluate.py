"""Spotting evaluation: MEGC F1 by the official rules (plus named variants), detection mAP, reports and plots.

The official MEGC 2020 rule, which reproduces the published baseline numbers exactly (see tests): per video and per
class, IoU on inclusive frame intervals; a ground truth is *found* when some prediction of its class reaches
IoU >= 0.5; TP = ground truths found; every prediction counts, also in videos without ground truth; counts are pooled
over all videos, and "overall" pools both classes (F1 = 2 TP / (#pred + #GT), not a mean of F1s).
The literature's other rules are variants behind explicit options and are named in every report:
`matching="one-to-one"` (score-sorted greedy, each prediction and GT used once), `iou="exclusive"`
(offset - onset lengths) and `classes="duration"` (class-agnostic matching, both sides split by length).

Inputs everywhere: gt `{video_id: [Interval | (onset, offset, kind)]}`, preds
`{video_id: [Proposal | (onset, offset, kind, score)]}`; kind is MACRO/MICRO or "macro"/"micro"; 0-based inclusive.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from fes_live import version_text
from fes_live.models import spotting
from fes_live.models.spotting import KIND_NAMES, MACRO, MICRO

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50:0.95, ActivityNet / FEDN mAP
MATCHINGS = ("gt-found", "one-to-one")
IOU_MODES = ("inclusive", "exclusive")
CLASS_MODES = ("label", "duration")


class EvalError(ValueError):
    """Input that cannot be scored: unreadable file, malformed line, unknown class."""


@dataclass(frozen=True)
class Segment:
    """The evaluator's view of an interval or a prediction: 0-based inclusive frames."""
    onset: int
    offset: int
    kind: int
    score: float = 1.0


# ---------------------------------------------------------------------------------------------- normalising inputs

def parse_kind(value: Any) -> int:
    """MACRO/MICRO from an int or any of the datasets' spellings ("macro", "Micro - 1/2", "micro-expression")."""
    try:
        return spotting.parse_kind(value)
    except ValueError as e:
        raise EvalError(str(e)) from None


def to_segment(item: Any) -> Segment:
    """A Segment from an Interval / Proposal (attributes) or a tuple (onset, offset, kind[, score])."""
    if isinstance(item, Segment):
        return item
    if hasattr(item, "onset") and hasattr(item, "offset"):
        onset, offset, kind, score = item.onset, item.offset, item.kind, getattr(item, "score", 1.0)
    elif isinstance(item, Mapping):
        onset, offset, kind, score = item["onset"], item["offset"], item["kind"], item.get("score", 1.0)
    else:
        try:
            onset, offset, kind, *rest = item
        except (TypeError, ValueError):
            raise EvalError(f"cannot read an interval from {item!r}: need (onset, offset, kind[, score])") from None
        score = rest[0] if rest else 1.0
    onset, offset = int(round(float(onset))), int(round(float(offset)))
    if offset < onset:
        raise EvalError(f"interval with offset {offset} before onset {onset}")
    return Segment(onset, offset, parse_kind(kind), float(score))


def to_segments(table: Mapping[str, Iterable[Any]]) -> dict[str, list[Segment]]:
    return {str(video): [to_segment(x) for x in items] for video, items in table.items()}


def length_class(seg: Segment, micro_max_len: int) -> int:
    """Class by duration (LGSNet): MICRO when it lasts at most `micro_max_len` frames."""
    return MICRO if seg.offset - seg.onset + 1 <= micro_max_len else MACRO


# ------------------------------------------------------------------------------------------------------------ IoU

def iou_matrix(a: list[Segment], b: list[Segment], mode: str = "inclusive") -> np.ndarray:
    """(len(a), len(b)) temporal IoU. inclusive: both end frames belong (+1); exclusive: lengths offset - onset."""
    if mode not in IOU_MODES:
        raise EvalError(f"iou mode {mode!r} not in {IOU_MODES}")
    if not a or not b:
        return np.zeros((len(a), len(b)))
    extra = 1.0 if mode == "inclusive" else 0.0
    a_on = np.array([s.onset for s in a], float)[:, None]
    a_off = np.array([s.offset for s in a], float)[:, None]
    b_on = np.array([s.onset for s in b], float)[None, :]
    b_off = np.array([s.offset for s in b], float)[None, :]
    inter = np.clip(np.minimum(a_off, b_off) - np.maximum(a_on, b_on) + extra, 0.0, None)
    union = (a_off - a_on + extra) + (b_off - b_on + extra) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


# -------------------------------------------------------------------------------------------------------- MEGC F1

def _prf(n_pred: int, tp: int, n_gt: int) -> dict[str, Any]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * tp / (n_pred + n_gt) if n_pred + n_gt else 0.0
    return {"predictions": n_pred, "tp": tp, "ground_truth": n_gt,
            "precision": precision, "recall": recall, "f1": f1}


def _greedy_matches(ious: np.ndarray, scores: list[float], threshold: float) -> list[int]:
    """One-to-one: predictions by descending score each take the best still-free GT; the GT row per prediction
    (-1 when none). `ious` is (n_gt, n_pred)."""
    free = np.ones(ious.shape[0], bool)
    match = [-1] * ious.shape[1]
    if not ious.size:
        return match
    for j in sorted(range(ious.shape[1]), key=lambda j: -scores[j]):
        cand = np.where(free & (ious[:, j] >= threshold), ious[:, j], -1.0)
        i = int(cand.argmax())
        if cand[i] >= 0:
            free[i] = False
            match[j] = i
    return match


def _count_tp(gts: list[Segment], preds: list[Segment], threshold: float, iou: str, matching: str) -> int:
    ious = iou_matrix(gts, preds, iou)
    if matching == "gt-found":
        return int((ious >= threshold).any(axis=1).sum()) if ious.size else 0
    return sum(i >= 0 for i in _greedy_matches(ious, [p.score for p in preds], threshold))


def rule_name(iou: str, matching: str, classes: str, threshold: float) -> str:
    """Short name of a rule set; "megc-official" only for the official one."""
    if (iou, matching, classes, threshold) == ("inclusive", "gt-found", "label", 0.5):
        return "megc-official"
    parts = [f"{iou}-iou", matching, "class-agnostic-duration-split" if classes == "duration" else "per-class"]
    return "+".join(parts) + f"@{threshold:g}"


def megc_f1(gt: Mapping[str, Iterable[Any]], preds: Mapping[str, Iterable[Any]], *, iou_threshold: float = 0.5,
            iou: str = "inclusive", matching: str = "gt-found", classes: str = "label",
            micro_max_len: int | None = None) -> dict[str, Any]:
    """MEGC spotting counts and F1 for micro, macro and overall (defaults: the official rule, see module doc).

    `classes="duration"` matches class-agnostically and assigns both GT and predictions to micro when they last at
    most `micro_max_len` frames (LGSNet's rule; 15 at 30 fps). Returns plain dicts; per-video counts included.
    """
    if matching not in MATCHINGS:
        raise EvalError(f"matching {matching!r} not in {MATCHINGS}")
    if classes not in CLASS_MODES:
        raise EvalError(f"classes {classes!r} not in {CLASS_MODES}")
    if classes == "duration" and not micro_max_len:
        raise EvalError("classes='duration' needs micro_max_len (frames)")
    gt_s, pred_s = to_segments(gt), to_segments(preds)
    counts = {k: [0, 0, 0] for k in (MACRO, MICRO)}  # predictions, tp, gt
    per_video: dict[str, dict[str, list[int]]] = {}
    for video in sorted(set(gt_s) | set(pred_s)):
        g_all, p_all = gt_s.get(video, []), pred_s.get(video, [])
        if classes == "duration":
            g_all = [Segment(s.onset, s.offset, length_class(s, micro_max_len), s.score) for s in g_all]
            p_all = [Segment(s.onset, s.offset, length_class(s, micro_max_len), s.score) for s in p_all]
        agnostic = _one_to_one_agnostic(g_all, p_all, iou_threshold, iou) if (
            classes == "duration" and matching == "one-to-one") else {}
        row = {}
        for kind in (MACRO, MICRO):
            g = [s for s in g_all if s.kind == kind]
            p = [s for s in p_all if s.kind == kind]
            if classes == "label":
                tp = _count_tp(g, p, iou_threshold, iou, matching)
            elif matching == "gt-found":  # class-agnostic: any prediction may find a GT, the TP is the GT's class
                tp = _count_tp(g, p_all, iou_threshold, iou, matching)
            else:
                tp = agnostic[kind]
            row[KIND_NAMES[kind]] = [len(p), tp, len(g)]
        for kind in (MACRO, MICRO):
            for n, v in enumerate(row[KIND_NAMES[kind]]):
                counts[kind][n] += v
        per_video[video] = row
    report = {"rule": rule_name(iou, matching, classes, iou_threshold),
              "rules": {"iou": iou, "iou_threshold": iou_threshold, "matching": matching, "classes": classes,
                        "micro_max_len": micro_max_len},
              "micro": _prf(*counts[MICRO]), "macro": _prf(*counts[MACRO]),
              "overall": _prf(*(counts[MACRO][n] + counts[MICRO][n] for n in range(3))),
              "videos": len(per_video), "per_video": per_video}
    return report


def _one_to_one_agnostic(g_all: list[Segment], p_all: list[Segment], threshold: float, iou: str) -> dict[int, int]:
    """Class-agnostic one-to-one matching; each matched pair is a TP of the GT's class."""
    matches = _greedy_matches(iou_matrix(g_all, p_all, iou), [p.score for p in p_all], threshold)
    return {kind: sum(i >= 0 and g_all[i].kind == kind for i in matches) for kind in (MACRO, MICRO)}


# ------------------------------------------------------------------------------------------------------------ mAP

def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """ActivityNet's AP: area under the precision envelope (precision made non-increasing in recall)."""
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def pr_curve(gt: Mapping[str, list[Segment]], preds: Mapping[str, list[Segment]], kind: int,
             threshold: float, iou: str = "inclusive") -> tuple[np.ndarray, np.ndarray, int]:
    """Precision and recall after each prediction of `kind` (all videos, by descending score), and #GT.

    ActivityNet matching: a prediction takes the highest-IoU still unmatched GT of its video at IoU >= threshold.
    """
    gts = {v: [s for s in segs if s.kind == kind] for v, segs in gt.items()}
    n_gt = sum(len(v) for v in gts.values())
    flat = [(s.score, v, s) for v, segs in preds.items() for s in segs if s.kind == kind]
    flat.sort(key=lambda t: -t[0])  # stable: ties keep input order
    used = {v: np.zeros(len(g), bool) for v, g in gts.items()}
    tp = np.zeros(len(flat))
    for n, (_, video, seg) in enumerate(flat):
        g = gts.get(video, [])
        if not g:
            continue
        ious = iou_matrix([seg], g, iou)[0]
        for i in np.argsort(-ious, kind="stable"):
            if ious[i] < threshold:
                break
            if not used[video][i]:
                used[video][i] = True
                tp[n] = 1
                break
    ctp = np.cumsum(tp)
    precision = ctp / np.arange(1, len(flat) + 1) if len(flat) else np.zeros(0)
    recall = ctp / n_gt if n_gt else np.zeros(len(flat))
    return precision, recall, n_gt


def detection_map(gt: Mapping[str, Iterable[Any]], preds: Mapping[str, Iterable[Any]], *,
                  iou_thresholds: Iterable[float] = IOU_THRESHOLDS, iou: str = "inclusive") -> dict[str, Any]:
    """ActivityNet-style AP per class at each IoU threshold, mAP per class and overall (mean over classes with GT)."""
    gt_s, pred_s = to_segments(gt), to_segments(preds)
    thresholds = [float(t) for t in iou_thresholds]
    ap: dict[str, list[float] | None] = {}
    for kind in (MACRO, MICRO):
        values = []
        for t in thresholds:
            precision, recall, n_gt = pr_curve(gt_s, pred_s, kind, t, iou)
            values.append(_interpolated_ap(precision, recall) if n_gt and len(precision) else 0.0)
        has_gt = any(s.kind == kind for segs in gt_s.values() for s in segs)
        ap[KIND_NAMES[kind]] = values if has_gt else None
    scored = [v for v in ap.values() if v is not None]
    overall = [float(np.mean([v[i] for v in scored])) for i in range(len(thresholds))] if scored else None
    return {"iou": iou, "iou_thresholds": thresholds, "ap": {**ap, "overall": overall},
            "map": {name: (float(np.mean(v)) if v is not None else None) for name, v in {**ap, "overall": overall}.items()}}


# --------------------------------------------------------------------------------------------- report and plots

def evaluate(gt: Mapping[str, Iterable[Any]], preds: Mapping[str, Iterable[Any]], out_dir: str | Path | None = None,
             *, micro_max_len: int | None = None, title: str = "") -> dict[str, Any]:
    """Official MEGC F1, the named variants, and mAP in one report; with `out_dir`, write report.json and plots.

    `micro_max_len` (frames) adds the class-agnostic duration-split variant.
    """
    gt_s, pred_s = to_segments(gt), to_segments(preds)
    official = megc_f1(gt_s, pred_s)
    variants = {}
    for kwargs in ({"matching": "one-to-one"}, {"iou": "exclusive"}, {"matching": "one-to-one", "iou": "exclusive"}):
        r = megc_f1(gt_s, pred_s, **kwargs)
        variants[r["rule"]] = _summary(r)
    if micro_max_len:
        r = megc_f1(gt_s, pred_s, classes="duration", micro_max_len=micro_max_len)
        variants[r["rule"]] = _summary(r)
    report = {"title": title, "megc": official, "variants": variants, "map": detection_map(gt_s, pred_s)}
    if out_dir is not None:
        write_report(report, gt_s, pred_s, out_dir)
    return report


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("rule", "rules", "micro", "macro", "overall")}


def write_report(report: dict[str, Any], gt: Mapping[str, list[Segment]], preds: Mapping[str, list[Segment]],
                 out_dir: str | Path) -> list[Path]:
    """report.json, pr_curves.png (precision-recall per class at IoU 0.5) and ap_vs_iou.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "pr_curves.png", out / "ap_vs_iou.png"]
    paths[0].write_text(json.dumps(report, indent=1))

    fig, ax = plt.subplots(figsize=(5, 4))
    for kind in (MACRO, MICRO):
        precision, recall, n_gt = pr_curve(gt, preds, kind, 0.5)
        if n_gt and len(precision):
            ax.plot(recall, precision, label=f"{KIND_NAMES[kind]} ({n_gt} GT, {len(precision)} pred)")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall at IoU 0.5")
    _save_plot(plt, fig, ax, paths[1])

    fig, ax = plt.subplots(figsize=(5, 4))
    m = report["map"]
    for name, values in m["ap"].items():
        if values is not None:
            ax.plot(m["iou_thresholds"], values, marker="o", label=f"{name} (mAP {m['map'][name]:.3f})")
    ax.set(xlabel="IoU threshold", ylabel="AP", ylim=(0, 1.02), title="AP versus IoU")
    _save_plot(plt, fig, ax, paths[2])
    return paths


def _save_plot(plt, fig, ax, path: Path) -> None:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_loso(folds: Mapping[str, tuple[Mapping[str, Iterable[Any]], Mapping[str, Iterable[Any]]]],
                  out_dir: str | Path | None = None, *, micro_max_len: int | None = None) -> dict[str, Any]:
    """LOSO: pool every fold's videos into one evaluation (the MEGC way), plus each fold's own official counts."""
    pooled_gt: dict[str, list[Segment]] = {}
    pooled_pred: dict[str, list[Segment]] = {}
    per_fold = {}
    for name, (gt, preds) in folds.items():
        gt_s, pred_s = to_segments(gt), to_segments(preds)
        clash = (set(gt_s) | set(pred_s)) & (set(pooled_gt) | set(pooled_pred))
        if clash:
            raise EvalError(f"fold {name!r}: video(s) {sorted(clash)[:3]} already in another fold")
        pooled_gt.update(gt_s)
        pooled_pred.update(pred_s)
        per_fold[name] = _summary(megc_f1(gt_s, pred_s))
    report = evaluate(pooled_gt, pooled_pred, out_dir=None, micro_max_len=micro_max_len, title="LOSO pooled")
    f1s = [f["overall"]["f1"] for f in per_fold.values()]
    report["folds"] = per_fold
    report["fold_overall_f1"] = {"mean": float(np.mean(f1s)) if f1s else 0.0,
                                 "std": float(np.std(f1s)) if f1s else 0.0}
    if out_dir is not None:
        write_report(report, pooled_gt, pooled_pred, out_dir)
    return report


# ----------------------------------------------------------------------------------------------- file formats

def _read_lines(path: Path) -> list[list[str]]:
    try:
        text = path.read_text()
    except OSError as e:
        raise EvalError(f"cannot read {path}: {e}") from None
    return [line.split() for line in text.splitlines() if line.strip()]


def _frame(text: str, path: Path, n: int) -> int:
    try:
        return int(round(float(text)))
    except ValueError:
        raise EvalError(f"{path}:{n}: {text!r} is not a frame number") from None


def read_megc_gt(path: str | Path) -> dict[str, list[Segment]]:
    """MEGC 2020 `all_Info.txt`: `folder code class onset apex offset` (1-based) -> {"folder_code": [Segment]}."""
    path = Path(path)
    gt: dict[str, list[Segment]] = {}
    for n, fields in enumerate(_read_lines(path), 1):
        if len(fields) != 6:
            raise EvalError(f"{path}:{n}: expected 'folder code class onset apex offset', got {' '.join(fields)!r}")
        folder, code, cls, onset, _, offset = fields
        on, off = _frame(onset, path, n) - 1, _frame(offset, path, n) - 1
        gt.setdefault(f"{folder}_{code}", []).append(Segment(on, max(on, off), parse_kind(cls)))
    if not gt:
        raise EvalError(f"{path}: no ground truth lines")
    return gt


def parse_len_range(text: str) -> tuple[int, int | None]:
    """'7:16' -> (7, 16), '17:' -> (17, None), ':16' -> (1, 16): inclusive lengths in frames."""
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return (int(lo) if lo else 1), (int(hi) if hi else None)
    except ValueError:
        raise EvalError(f"length range {text!r}: expected MIN:MAX, MIN: or :MAX (frames)") from None


def read_megc_predictions(pred_dir: str | Path, micro_len: tuple[int, int | None] = (1, None),
                          macro_len: tuple[int, int | None] = (1, None)) -> dict[str, list[Segment]]:
    """MEGC 2020 submission layout: DIR/{micro,macro}/<folder>_<code>.txt with `onset offset score` lines (1-based).

    Keeps a prediction when its inclusive length lies in its class's range (the baseline's own length filter).
    Every file is a video, so predictions in videos without ground truth count.
    """
    pred_dir = Path(pred_dir)
    ranges = {"micro": micro_len, "macro": macro_len}
    found = [name for name in ranges if (pred_dir / name).is_dir()]
    if not found:
        raise EvalError(f"{pred_dir}: no micro/ or macro/ folder of <video>.txt prediction files")
    preds: dict[str, list[Segment]] = {}
    for name in found:
        kind = parse_kind(name)
        lo, hi = ranges[name]
        for path in sorted((pred_dir / name).glob("*.txt")):
            video = preds.setdefault(path.stem, [])
            for n, fields in enumerate(_read_lines(path), 1):
                if len(fields) < 2:
                    raise EvalError(f"{path}:{n}: expected 'onset offset [score]'")
                on, off = _frame(fields[0], path, n) - 1, _frame(fields[1], path, n) - 1
                score = float(fields[2]) if len(fields) > 2 else 1.0
                length = off - on + 1
                if off >= on and length >= lo and (hi is None or length <= hi):
                    video.append(Segment(on, off, kind, score))
    return preds


def write_megc_predictions(preds: Mapping[str, Iterable[Any]], out_dir: str | Path) -> Path:
    """Predictions in the MEGC 2020 submission layout (1-based): OUT/{micro,macro}/<video>.txt, one file per video
    and class (empty when none), so `fes-eval megc2020` and the official scripts read them."""
    out = Path(out_dir)
    for kind in (MACRO, MICRO):
        (out / KIND_NAMES[kind]).mkdir(parents=True, exist_ok=True)
    for video, segs in to_segments(preds).items():
        for kind in (MACRO, MICRO):
            lines = [f"{s.onset + 1} {s.offset + 1} {s.score:.6g}\n" for s in segs if s.kind == kind]
            (out / KIND_NAMES[kind] / f"{video}.txt").write_text("".join(lines))
    return out


def read_predictions(path: str | Path) -> dict[str, list[Segment]]:
    """Our prediction files: JSON `{video_id: [{onset, offset, kind, score}]}` / a list of rows with video_id /
    a fes-train report.json (its folds' predictions), or CSV with columns video_id, onset, offset, kind, score
    (0-based inclusive frames)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"prediction file not found: {path}")
    if path.suffix.lower() == ".csv":
        return _rows_to_table(_read_csv(path), path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EvalError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict) and "fold_details" in data:  # a fes-train report: every fold's test predictions
        data = {v: items for fold in data["fold_details"].values() for v, items in fold.get("predictions", {}).items()}
    elif isinstance(data, dict) and "predictions" in data:
        data = data["predictions"]
    if isinstance(data, dict):
        out: dict[str, list[Segment]] = {}
        for video, items in data.items():
            if not isinstance(items, list):
                raise EvalError(f"{path}: value of {video!r} must be a list of predictions")
            out[str(video)] = [_segment_or_error(x, path) for x in items]
        return out
    if isinstance(data, list):
        return _rows_to_table(data, path)
    raise EvalError(f"{path}: expected a JSON object {{video_id: [...]}} or a list of rows")


def read_ground_truth(path: str | Path) -> dict[str, list[Segment]]:
    """Ground truth from an MEGC all_Info.txt, a native annotation JSON / folder of them, or annotations.csv."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".txt":
        return read_megc_gt(path)
    from fes_live.train.datasets import DatasetError, load_native_annotations
    try:
        videos = load_native_annotations(path)
    except DatasetError as e:
        raise EvalError(str(e)) from None
    return {v: [Segment(i.onset, i.offset, parse_kind(i.kind)) for i in items] for v, items in videos.items()}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _segment_or_error(item: Any, path: Path) -> Segment:
    try:
        return to_segment(item)
    except (KeyError, TypeError, ValueError) as e:
        raise EvalError(f"{path}: bad prediction {item!r} ({e})") from None


def _rows_to_table(rows: list[Any], path: Path) -> dict[str, list[Segment]]:
    out: dict[str, list[Segment]] = {}
    for n, row in enumerate(rows, 1):
        if not isinstance(row, Mapping) or "video_id" not in row:
            raise EvalError(f"{path}: row {n} has no video_id: {row!r}")
        out.setdefault(str(row["video_id"]), []).append(_segment_or_error(row, path))
    return out


# --------------------------------------------------------------------------------------------------------- CLI

def _brief(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "per_video"}


def summary_table(report: dict[str, Any]) -> str:
    """The terminal summary of a MEGC report (megc_f1's, or evaluate's with `megc`, `variants`, `map`)."""
    megc = report.get("megc", report)
    lines = [f"MEGC spotting F1 ({megc['rule']}" + (f", {megc['videos']} videos" if "videos" in megc else "") + ")",
             f"{'class':<8} {'predicted':>9} {'truth':>6} {'TP':>5} {'precision':>9} {'recall':>7} {'F1':>7}"]
    for cls in ("micro", "macro", "overall"):
        r = megc[cls]
        lines.append(f"{cls:<8} {r['predictions']:>9} {r['ground_truth']:>6} {r['tp']:>5} {r['precision']:>9.4f} "
                     f"{r['recall']:>7.4f} {r['f1']:>7.4f}")
    for name, v in (report.get("variants") or {}).items():
        lines.append(f"variant {name}: overall F1 {v['overall']['f1']:.4f}")
    if report.get("map"):
        m = report["map"]["map"]
        lines.append("mAP@[.5:.95]: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()))
    return "\n".join(lines)


def emit(report: dict[str, Any], json_path: str | None) -> None:
    """The summary table on the terminal; the JSON to `json_path` ("-": the JSON on stdout instead)."""
    text = json.dumps(report, indent=1)
    if json_path == "-":
        print(text)
        return
    print(summary_table(report))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(text + "\n")
        print(f"JSON report: {json_path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fes-eval", description="Score expression spotting (MEGC F1, mAP).")
    parser.add_argument("--version", action="version", version=version_text("fes-eval"))
    sub = parser.add_subparsers(dest="command", required=True)
    rules = argparse.ArgumentParser(add_help=False)
    rules.add_argument("--matching", choices=MATCHINGS, default="gt-found",
                       help="gt-found = official (TP = GTs found); one-to-one = each GT and prediction used once")
    rules.add_argument("--iou", choices=IOU_MODES, default="inclusive", help="inclusive = official (+1 frame)")
    rules.add_argument("--iou-threshold", type=float, default=0.5, help="a prediction matches at IoU >= this")
    rules.add_argument("--json", metavar="PATH", help="write the JSON report to PATH ('-': print it instead of "
                       "the summary table)")
    rules.add_argument("--classes", choices=CLASS_MODES, default="label",
                       help="label = official (per submitted class); duration = class-agnostic, split by length")
    rules.add_argument("--micro-max-len", type=int,
                       help="frames: micro when at most this long (needed by --classes duration; LGSNet: 15)")

    m = sub.add_parser("megc2020", parents=[rules], help="MEGC 2020 submission layout: all_Info.txt + micro/ macro/")
    m.add_argument("--gt", required=True, help="all_Info.txt: folder code class onset apex offset")
    m.add_argument("--pred-dir", required=True, help="folder with micro/ and macro/ <folder>_<code>.txt files")
    m.add_argument("--micro-len", default="1:", help="keep micro predictions of MIN:MAX frames (baseline: 7:16)")
    m.add_argument("--macro-len", default="1:", help="keep macro predictions of MIN:MAX frames (baseline: 17:)")
    m.add_argument("--per-video", action="store_true", help="include per-video counts in the JSON")
    m.add_argument("--out", help="also write the full report (variants, mAP) as report.json + plots here")

    s = sub.add_parser("score", help="native ground truth vs prediction JSON/CSV -> report.json + plots")
    s.add_argument("--gt", required=True, help="annotation JSON, folder of them, annotations.csv or all_Info.txt")
    s.add_argument("--pred", required=True, help="prediction JSON or CSV")
    s.add_argument("--out", help="write report.json, pr_curves.png, ap_vs_iou.png here")
    s.add_argument("--micro-max-len", type=int, help="frames: also report the class-agnostic duration-split variant")
    s.add_argument("--json", metavar="PATH", help="write the JSON report to PATH ('-': print it instead of the "
                   "summary table)")

    from fes_live.train import real_eval
    r = sub.add_parser("real", help="the real-clip benchmark: an engine and the blendshape baseline on "
                                    "../shared/data/real_dev (docs/real_dev.md)")
    real_eval.add_arguments(r)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "real":
        import logging
        from fes_live.train import real_eval
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return real_eval.main(args)
    try:
        if args.command == "megc2020":
            gt = read_megc_gt(args.gt)
            preds = read_megc_predictions(args.pred_dir, parse_len_range(args.micro_len),
                                          parse_len_range(args.macro_len))
            report = megc_f1(gt, preds, iou_threshold=args.iou_threshold, iou=args.iou, matching=args.matching,
                             classes=args.classes, micro_max_len=args.micro_max_len)
            if args.out:
                evaluate(gt, preds, args.out, micro_max_len=args.micro_max_len, title=str(args.pred_dir))
            emit(report if args.per_video else _brief(report), args.json)
        else:
            gt, preds = read_ground_truth(args.gt), read_predictions(args.pred)
            unknown = sorted(set(preds) - set(gt))
            if unknown:
                print(f"fes-eval: note: {len(unknown)} predicted video(s) without ground truth entry, "
                      f"e.g. {unknown[:3]}; their predictions count as false positives", file=sys.stderr)
            report = evaluate(gt, preds, args.out, micro_max_len=args.micro_max_len, title=str(args.pred))
            report["megc"] = _brief(report["megc"])
            emit({k: report[k] for k in ("megc", "variants", "map")}, args.json)
    except EvalError as e:
        print(f"fes-eval: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
