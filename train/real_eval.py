"""`fes-eval real`: the real-clip benchmark (docs/real_dev.md).

Runs an engine on every usable clip of the real development set (`../shared/data/real_dev/`) through the path users
get: features exactly as the live ingest computes them (`stream.extract.extract`: the same FaceTracker and
FeatureExtractor, every frame, nothing dropped), fed frame by frame to the engine's `OnlineSpotter`. Scores the
events against the weak labels of `labels.json` (corrected by `configs/real_dev_overrides.json`) and writes
report.md, report.json and one timeline plot per clip.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "real_dev"
DEFAULT_CACHE = Path.home() / ".cache" / "fes-live" / "real_dev"


# ------------------------------------------------------------------------------------------------------- features

def file_sha256(path: Path) -> str:
    from fes_live.stream.engine import sha256_file
    return sha256_file(path)


def feature_code_version(face_model: Path | None) -> str:
    """A digest of everything that decides a clip's features: the ingest's source, face and feature code, their
    default configs and the MediaPipe model file. Any change there invalidates the cache."""
    from fes_live.stream import extract, face, face_model as fm, features, shot_cuts, sources
    h = hashlib.sha256()
    for module in (extract, face, fm, features, shot_cuts, sources):
        h.update(inspect.getsource(module).encode())
    h.update(repr((face.FaceConfig(), features.FeatureConfig(keep_crop=False))).encode())
    if face_model is not None:
        h.update(file_sha256(face_model).encode())
    return h.hexdigest()[:12]


def clip_features(clip: Path, cache: Path, face_model: Path | None, code_version: str | None = None) -> dict:
    """The clip's per-frame features as the live ingest computes them, cached (`cached_features`)."""
    from fes_live.stream.features import load_features
    return load_features(cached_features(clip, cache, face_model, code_version))


def cached_features(clip: Path, cache: Path, face_model: Path | None, code_version: str | None = None) -> Path:
    """`<cache>/<clip stem>-<clip sha256[:12]>-<code version>.npz`, extracted first if it is not there (what
    `fes-bench scale --features` replays: scripts/scale_realistic.sh)."""
    from fes_live.stream.extract import extract
    from fes_live.stream.face import FaceConfig
    from fes_live.stream.features import FeatureConfig, save_features
    version = code_version or feature_code_version(face_model)
    path = Path(cache) / f"{clip.stem}-{file_sha256(clip)[:12]}-{version}.npz"
    if not path.is_file():
        log.info("extracting features of %s -> %s", clip.name, path)
        feats, fps = extract(str(clip), FaceConfig(face_model=str(face_model) if face_model else None),
                             FeatureConfig(keep_crop=False), progress=False)
        if not feats:
            raise ValueError(f"{clip}: no frames decoded")
        tmp = path.with_suffix(".tmp.npz")
        save_features(tmp, feats, fps)
        tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------------------- labels

EXPRESSIONS = ("smile", "laugh", "surprise", "frown", "anger", "sad", "disgust", "fear", "contempt", "brow-raise")
OTHER_ACTIONS = ("pout", "cheek-puff", "lip-press", "squeeze", "O-mouth", "grimace")
NUISANCES = {"talking": ("talking",), "blink": ("blink", "wink", "eye-close"), "gaze": ("gaze",)}
NON_EXPRESSIONS = tuple(t for group in NUISANCES.values() for t in group)
# label type -> the emotion it shows (README: smile/laugh are happiness, ...); frown and brow-raise carry none
EMOTION_OF = {"smile": "happiness", "laugh": "happiness", "surprise": "surprise", "sad": "sadness",
              "disgust": "disgust", "anger": "anger", "fear": "fear", "contempt": "contempt"}
HELD_EMOTION_PREFIX = "eamm_"      # one emotion held while talking: score the emotion, not the boundaries
SKIP_USABLE_PREFIX = "multi-face"  # labels name one of several faces; the product reports the primary one only
# clips that show the same person (../shared/data/faces/README.md); every other clip is its own identity
SAME_PERSON = {"lpfork_sideye2": "liveportrait_d0", "faceswapss_test_video_03_2faces": "faceswapss_sveta_03",
               "eamm_surprised": "eamm_fear"}
DEFAULT_OVERRIDES = REPO / "configs" / "real_dev_overrides.json"


class RealDevError(ValueError):
    """A labels or overrides file that cannot be used."""


def identity(clip: str) -> str:
    return SAME_PERSON.get(clip, clip)


def label_kind(event_type: str) -> str:
    if event_type in EXPRESSIONS:
        return "expression"
    if event_type in OTHER_ACTIONS:
        return "other"
    if event_type in NON_EXPRESSIONS:
        return "nuisance"
    raise RealDevError(f"unknown label type {event_type!r}")


def load_labels(data: Path, overrides: Path | None = DEFAULT_OVERRIDES) -> tuple[dict, list[dict]]:
    """labels.json with the repository's corrections applied -> (labels, the overrides that were applied)."""
    import copy
    import json
    labels = json.loads((Path(data) / "labels.json").read_text())
    applied: list[dict] = []
    if overrides is not None and Path(overrides).is_file():
        labels = copy.deepcopy(labels)
        spec = json.loads(Path(overrides).read_text())
        for i, o in enumerate(spec.get("overrides", [])):
            applied.append(apply_override(labels, o, f"{overrides} overrides[{i}]"))
    for name, info in labels.items():
        for e in info["events"]:
            label_kind(e["type"])
            if not 0 <= e["start"] <= e["end"]:
                raise RealDevError(f"{name}: bad interval {e}")
    return labels, applied


def apply_override(labels: dict, o: dict, where: str) -> dict:
    """One correction {clip, action: replace|remove|add, match: {type, start}, event: {...}, reason}."""
    unknown = set(o) - {"clip", "action", "match", "event", "reason"}
    if unknown or not str(o.get("reason", "")).strip() or o.get("clip") not in labels:
        raise RealDevError(f"{where}: needs clip (a labelled clip), action, reason; unknown keys {sorted(unknown)}")
    events = labels[o["clip"]]["events"]
    action = o.get("action")
    if action in ("replace", "remove"):
        hits = [e for e in events if all(e.get(k) == v for k, v in o.get("match", {}).items())]
        if len(hits) != 1 or not o.get("match"):
            raise RealDevError(f"{where}: match {o.get('match')} selects {len(hits)} events of {o['clip']}, not 1")
        events.remove(hits[0])
        if action == "replace":
            events.append({**hits[0], **o["event"], "note": f"override: {o['reason']}"})
    elif action == "add":
        ev = o.get("event", {})
        if not {"type", "start", "end"} <= set(ev):
            raise RealDevError(f"{where}: an added event needs type, start, end")
        events.append({"peak": None, "confidence": "override", **ev, "note": f"override: {o['reason']}"})
    else:
        raise RealDevError(f"{where}: action must be replace, remove or add, got {action!r}")
    label_kind((o.get("event") or {}).get("type", "smile"))
    return o


def clip_role(name: str, info: dict) -> str:
    """"scored" (boundaries), "held" (one emotion while talking) or "skipped" (the labels cannot be scored)."""
    usable = info.get("usable")
    if not usable or str(usable).startswith(SKIP_USABLE_PREFIX):
        return "skipped"
    return "held" if name.startswith(HELD_EMOTION_PREFIX) else "scored"


# --------------------------------------------------------------------------------------------------------- running

def engine_spotter(engine, fps: float, fedn=None, spotter: dict | None = None):
    """The engine's own OnlineSpotter (manifest thresholds), its frame rate following the clip's. `fedn` replaces
    the engine's FEDN callable and `spotter` is merged into its spotter config (train.real_train's held-out folds)."""
    from fes_live.calibration.thresholds import merge_spotter
    from fes_live.models.online import OnlineSpotter, SpotterConfig
    from fes_live.stream.config import from_dict, to_dict
    sc = engine.spotter_config(fps)
    if spotter:
        sc = from_dict(SpotterConfig, merge_spotter(to_dict(sc), spotter), where="spotter overrides")
    return OnlineSpotter(engine.gim, fedn or (engine.fedn if engine.has_fedn else None), sc)


def run_engine(engine, feats: dict, fedn=None, spotter: dict | None = None) -> dict:
    """Push every frame through the engine's spotter -> events, the intensity curve, onsets and cancels. Events and
    onsets carry `track` and `known_at`: the frame whose push made them known, as a live stream hears them."""
    import numpy as np
    from fes_live.models.online import timed_updates
    from fes_live.models.spotting import CancelUpdate, ExpressionUpdate, IntensityUpdate, OnsetUpdate
    emotions = engine.labels["emotions"]
    updates = timed_updates(engine_spotter(engine, float(feats["fps"]), fedn, spotter), feats)
    curve = sorted((u.frame_index, u.intensity, u.level) for _, u in updates if isinstance(u, IntensityUpdate))
    events = []
    for at, u in updates:
        if isinstance(u, ExpressionUpdate):
            p = u.proposal
            events.append({"onset": p.onset, "offset": p.offset, "apex": p.apex, "score": float(p.score),
                           "peak_level": float(p.peak_level),
                           "kind": "macro" if p.kind == 0 else "micro", "source": p.source,
                           "emotion": emotions[p.emotion] if 0 <= p.emotion < len(emotions) else None,
                           "track": int(u.track), "known_at": at})
    return {"events": sorted(events, key=lambda e: (e["onset"], e["offset"])),
            "curve": np.array(curve, dtype=np.float64).reshape(-1, 3),  # frame, GIM's I(t), expression level
            "onsets": [{"frame": u.frame_index, "track": int(u.track), "known_at": at}
                       for at, u in updates if isinstance(u, OnsetUpdate)],
            "cancels": [u.frame_index for _, u in updates if isinstance(u, CancelUpdate)]}


def run_baseline(feats: dict) -> dict:
    from fes_live.train.real_baseline import blendshape_spot
    found, deviation = blendshape_spot(feats["geometry"], feats["face_present"], float(feats["fps"]))
    import numpy as np
    return {"events": [{**f, "emotion": None, "source": "baseline"} for f in found],
            "curve": np.stack([np.asarray(feats["frame_index"], np.float64), deviation], axis=1)}


# --------------------------------------------------------------------------------------------------------- scoring

def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Inclusive-frame IoU of two intervals."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    return inter / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter)


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return min(a[1], b[1]) >= max(a[0], b[0])


def score_clip(info: dict, events: list[dict], role: str, onsets: list[dict] | None = None) -> dict:
    """One clip's predictions against its labels (docs/real_dev.md has the rules); with `onsets` (and events
    carrying `track` and `known_at`, as `run_engine` gives them), also when a live stream heard them."""
    fps, frames = float(info["fps"]), int(info["frames"])
    labels = info["events"]
    expr = [e for e in labels if label_kind(e["type"]) == "expression"]
    other = [e for e in labels if label_kind(e["type"]) == "other"]
    span = lambda x: (int(x["start"]), int(x["end"]))  # noqa: E731
    ev = lambda x: (int(x["onset"]), int(x["offset"]))  # noqa: E731
    out: dict = {"minutes": frames / fps / 60.0, "predictions": len(events)}
    if role == "held":
        want = EMOTION_OF.get(expr[0]["type"]) if expr else None
        votes: dict = {}
        for p in events:
            if p["emotion"]:
                votes[p["emotion"]] = votes.get(p["emotion"], 0) + p["offset"] - p["onset"] + 1
        said = max(votes, key=votes.get) if votes else None
        out["held"] = {"label": want, "said": said, "correct": said is not None and said == want}
        return out
    found = []
    for e in expr:
        best = max(events, key=lambda p: iou(span(e), ev(p)), default=None)
        best_iou = iou(span(e), ev(best)) if best else 0.0
        want = EMOTION_OF.get(e["type"])
        said = best["emotion"] if best and best_iou >= 0.3 else None
        apex_error = ((best["apex"] - e["peak"]) / fps if best_iou >= 0.3 and e.get("peak") is not None
                      and best.get("apex") is not None else None)
        found.append({"type": e["type"], "start": e["start"], "end": e["end"], "confidence": e.get("confidence"),
                      "iou": round(best_iou, 3), "emotion": want, "said": said,
                      "emotion_correct": None if want is None or best_iou < 0.3 else said == want,
                      "apex_error_s": apex_error})
    verdicts = []
    for p in events:
        if any(iou(ev(p), span(e)) >= 0.3 for e in expr):
            verdicts.append("tp")
        elif any(overlaps(ev(p), span(o)) for o in other):
            verdicts.append("other")
        else:
            verdicts.append("fp")
    nuisance: dict = {}
    for group, types in NUISANCES.items():
        spans = [span(e) for e in labels if e["type"] in types]
        covered = set()
        for s in spans:
            covered.update(range(s[0], min(s[1], frames - 1) + 1))
        fps_on = [p for p, v in zip(events, verdicts) if v == "fp" and any(overlaps(ev(p), s) for s in spans)]
        hit = sum(any(overlaps(ev(p), s) for p in fps_on) for s in spans)
        nuisance[group] = {"spans": len(spans), "minutes": len(covered) / fps / 60.0, "false_alarms": len(fps_on),
                           "spans_reported": hit}
    out.update({"expressions": found, "verdicts": verdicts, "tp": verdicts.count("tp"),
                "fp": verdicts.count("fp"), "ignored": verdicts.count("other"), "nuisance": nuisance,
                "duplicates": len(duplicates(expr, events, verdicts))})
    if onsets is not None:
        out["timing"] = timing(expr, events, onsets, fps)
    return out


def duplicates(expr: list[dict], events: list[dict], verdicts: list[str]) -> list[int]:
    """Indices of the true positives that find an expression another event found better: each is matched to its
    best-IoU label, and each label keeps only its best-IoU event (MEGC's one-to-one rule). A user sees two events
    for one smile; `precision_one_to_one` counts the second as a false alarm."""
    best: dict[int, tuple[float, int]] = {}
    out = []
    for i, (p, v) in enumerate(zip(events, verdicts)):
        if v != "tp":
            continue
        ious = [iou((e["start"], e["end"]), (p["onset"], p["offset"])) for e in expr]
        k = max(range(len(expr)), key=lambda j: ious[j])
        if k in best:
            keep, drop = (i, best[k][1]) if ious[k] > best[k][0] else (best[k][1], i)
            out.append(drop)
            best[k] = (max(ious[k], best[k][0]), keep)
        else:
            best[k] = (ious[k], i)
    return sorted(out)


def timing(expr: list[dict], events: list[dict], onsets: list[dict], fps: float) -> dict:
    """Live timing against the labels: how many onsets were announced and how many of them became an event; for
    each found expression (its best event at IoU >= 0.3), whether its event's onset was announced before the event
    itself, the announcement's delay after the labelled start and the event's after the labelled end (seconds)."""
    announced = {o["track"]: o for o in onsets}
    tracks = {p["track"] for p in events if p.get("track", -1) >= 0}
    rows = []
    for e in expr:
        best = max(events, key=lambda p: iou((e["start"], e["end"]), (p["onset"], p["offset"])), default=None)
        if best is None or iou((e["start"], e["end"]), (best["onset"], best["offset"])) < 0.3:
            continue
        o = announced.get(best.get("track", -1))
        early = o is not None and o["known_at"] <= best["known_at"]
        rows.append({"start": e["start"], "announced": early,
                     "onset_delay_s": (o["known_at"] - e["start"]) / fps if early else None,
                     "final_delay_s": (best["known_at"] - e["end"]) / fps})
    return {"onsets": len(onsets), "onsets_to_events": len(tracks & set(announced)), "found": rows}


def totals(scores: dict[str, dict], roles: dict[str, str]) -> dict:
    """Pool per-clip scores of one spotter into the report's headline figures."""
    import numpy as np
    scored = [s for n, s in scores.items() if roles[n] == "scored"]
    held = [s["held"] for n, s in scores.items() if roles[n] == "held"]
    found = [f for s in scored for f in s["expressions"]]
    ratio = lambda a, b: (a / b) if b else None  # noqa: E731
    tp, fp = sum(s["tp"] for s in scored), sum(s["fp"] for s in scored)
    minutes = sum(s["minutes"] for s in scored)
    emo = [f["emotion_correct"] for f in found if f["emotion_correct"] is not None]
    high = [f for f in found if f["confidence"] == "high"]
    out = {"clips": len(scored), "minutes": minutes, "expressions": len(found),
           "recall_03": ratio(sum(f["iou"] >= 0.3 for f in found), len(found)),
           "recall_05": ratio(sum(f["iou"] >= 0.5 for f in found), len(found)),
           "recall_03_high": ratio(sum(f["iou"] >= 0.3 for f in high), len(high)), "high": len(high),
           "predictions": sum(s["predictions"] for s in scored), "tp": tp, "fp": fp,
           "ignored": sum(s["ignored"] for s in scored), "precision": ratio(tp, tp + fp),
           "duplicates": sum(s.get("duplicates", 0) for s in scored),
           "fa_per_min": ratio(fp, minutes),
           "emotion_found": len(emo), "emotion_acc": ratio(sum(emo), len(emo)),
           "held_clips": len(held), "held_acc": ratio(sum(h["correct"] for h in held), len(held)),
           "nuisance": {}}
    dup = out["duplicates"]
    out["precision_one_to_one"] = ratio(tp - dup, tp + fp)
    every = [e for e in (emo + [h["correct"] for h in held])]
    out["emotion_acc_all"] = ratio(sum(every), len(every))
    apex = [abs(f["apex_error_s"]) for f in found if f.get("apex_error_s") is not None]
    if apex:
        out["apex"] = {"found": len(apex), "p50": float(np.percentile(apex, 50)),
                       "p90": float(np.percentile(apex, 90)), "within_02": ratio(sum(a <= 0.2 for a in apex),
                                                                                  len(apex))}
    timed = [s["timing"] for s in scored if "timing" in s]
    if timed:
        rows = [r for t in timed for r in t["found"]]
        onset = [r["onset_delay_s"] for r in rows if r["announced"]]
        final = [r["final_delay_s"] for r in rows]
        pct = lambda x, q: float(np.percentile(x, q)) if x else None  # noqa: E731
        n = sum(t["onsets"] for t in timed)
        out["timing"] = {"onsets": n, "onsets_per_min": ratio(n, minutes),
                         "onsets_to_events": ratio(sum(t["onsets_to_events"] for t in timed), n),
                         "found": len(rows), "announced": ratio(len(onset), len(rows)),
                         "onset_delay_p50": pct(onset, 50), "onset_delay_p90": pct(onset, 90),
                         "final_delay_p50": pct(final, 50), "final_delay_p90": pct(final, 90),
                         "final_delay_p99": pct(final, 99)}
    for group in NUISANCES:
        rows = [s["nuisance"][group] for s in scored]
        m = sum(r["minutes"] for r in rows)
        n = sum(r["false_alarms"] for r in rows)
        out["nuisance"][group] = {"spans": sum(r["spans"] for r in rows), "minutes": m, "false_alarms": n,
                                  "spans_reported": sum(r["spans_reported"] for r in rows),
                                  "fa_per_min": ratio(n, m)}
    return out


# --------------------------------------------------------------------------------------------------------- plots

def frame_kinds(info: dict, frames: int):
    """(frames,) int8 per frame: 0 unlabelled, 1 expression (also while talking), 2 talking / blink / gaze only,
    3 other facial action."""
    import numpy as np
    kind = np.zeros(frames, np.int8)
    for e in info["events"]:
        k = label_kind(e["type"])
        s, t = int(e["start"]), min(int(e["end"]), frames - 1)
        if k == "expression":
            kind[s:t + 1] = 1
        elif k == "other":
            kind[s:t + 1] = np.where(kind[s:t + 1] == 1, 1, 3)
        elif k == "nuisance":
            kind[s:t + 1] = np.where(kind[s:t + 1] == 0, 2, kind[s:t + 1])
    return kind


def auroc(pos, neg) -> float | None:
    """P(a value from `pos` > one from `neg`), ties half (Mann-Whitney); None when either is empty."""
    import numpy as np
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if not len(pos) or not len(neg):
        return None
    values, inverse, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    r = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based ranks, ties averaged
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


CURVES = {"gim": "engine: GIM's I(t)", "level": "engine: expression level",
          "baseline": "baseline: max \\|blendshape - mean\\|"}  # markdown: a pipe in a cell is escaped


def curve_separation(samples: dict[str, dict[int, list]]) -> dict:
    """{curve: {0/1/2: values on face frames of that kind}} -> per curve the medians and how well it tells expression
    frames from unlabelled ones and from talking / blink / gaze (AUROC)."""
    import numpy as np
    med = lambda v: float(np.median(v)) if len(v) else None
    return {c: {"median_expression": med(v[1]), "median_background": med(v[0]), "median_nuisance": med(v[2]),
                "auroc_background": auroc(v[1], v[0]), "auroc_nuisance": auroc(v[1], v[2])}
            for c, v in samples.items()}


KIND_COLOURS = {"expression": "tab:green", "other": "tab:gray", "talking": "tab:orange", "blink": "tab:purple",
                "gaze": "tab:brown"}


def plot_clip(path: Path, name: str, info: dict, engine_run: dict, baseline_run: dict, role: str) -> None:
    """Timeline: label spans by kind, the engine's and the baseline's events, I(t), the expression level and the
    baseline's deviation.
    Curves and spans only, never a frame of the clip."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    fps = float(info["fps"])
    dur = int(info["frames"]) / fps
    fig, (ax, cx) = plt.subplots(2, 1, figsize=(11, 3.6), sharex=True, gridspec_kw={"height_ratios": [1.3, 1]})
    rows = {"labels: expression": 3.0, "labels: other / non-expr.": 2.0, "engine": 1.0, "baseline": 0.0}
    for e in info["events"]:
        kind = label_kind(e["type"])
        colour = KIND_COLOURS[kind] if kind != "nuisance" else next(
            KIND_COLOURS[g] for g, types in NUISANCES.items() if e["type"] in types)
        y = 3.0 if kind == "expression" else 2.0
        x0, w = e["start"] / fps, (e["end"] - e["start"] + 1) / fps
        ax.broken_barh([(x0, w)], (y - 0.4, 0.8), color=colour, alpha=0.75 if kind != "nuisance" else 0.45)
        ax.text(x0 + 0.02, y, e["type"], fontsize=7, va="center", clip_on=True)
        if kind == "expression" and e.get("peak") is not None:
            ax.plot([e["peak"] / fps] * 2, [y - 0.4, y + 0.4], color="black", lw=1.2)
    for y, run, colour in ((1.0, engine_run, "tab:red"), (0.0, baseline_run, "tab:blue")):
        for p in run["events"]:
            x0, w = p["onset"] / fps, (p["offset"] - p["onset"] + 1) / fps
            ax.broken_barh([(x0, w)], (y - 0.35, 0.7), color=colour, alpha=0.8)
            if p.get("emotion"):
                ax.text(x0 + 0.02, y, p["emotion"], fontsize=7, va="center", color="white", clip_on=True)
            if p.get("apex") is not None:
                ax.plot([p["apex"] / fps] * 2, [y - 0.35, y + 0.35], color="black", lw=1.2)
    for o in engine_run.get("onsets", []):
        ax.plot(o["frame"] / fps, 1.45, marker="v", color="tab:red", markersize=4)
    for f in engine_run.get("cancels", []):
        ax.plot(f / fps, 1.45, marker="x", color="black", markersize=5)
    ax.set_yticks(list(rows.values()), list(rows))
    ax.set_ylim(-0.6, 3.6)
    ax.set_title(f"{name}  ({role}; {info['frames']} frames, {fps:g} fps)   "
                 f"v onset raised, x onset cancelled, | peak / apex", fontsize=9)
    ax.legend(handles=[Patch(color=c, label=k) for k, c in KIND_COLOURS.items()], fontsize=7, ncol=5,
              loc="upper right", bbox_to_anchor=(1.0, 1.32), frameon=False)
    c = engine_run["curve"]
    if len(c):
        cx.plot(c[:, 0] / fps, c[:, 1], color="tab:red", lw=1, label="engine I(t) (GIM)")
        cx.plot(c[:, 0] / fps, c[:, 2], color="tab:green", lw=1, label="engine expression level")
    b = baseline_run["curve"]
    cx.plot(b[:, 0] / fps, b[:, 1], color="tab:blue", lw=1, label="baseline max |blendshape - mean|")
    cx.axhline(0.25, color="tab:blue", lw=0.5, ls=":")
    cx.set_ylim(0, 1.05)
    cx.set_xlim(0, dur)
    cx.set_xlabel("seconds")
    cx.legend(fontsize=7, loc="upper right", frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------- report

SPOTTERS = ("engine", "baseline")


def find_face_model(data: Path, given: str | None) -> Path | None:
    import os
    for cand in (given, os.environ.get("FES_FACE_MODEL"),
                 Path(data).parents[1] / "models" / "face_landmarker_v2_with_blendshapes.task"):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def benchmark(engine_path: str | Path | None = None, data: Path = DEFAULT_DATA, out: Path | None = None,
              cache: Path = DEFAULT_CACHE, overrides: Path | None = DEFAULT_OVERRIDES,
              face_model: str | None = None, clips: list[str] | None = None,
              fedn_threshold: float | None = None) -> dict:
    """Run the engine and the baseline on the dev clips, score both; write report.md/.json and plots into `out`
    (`fedn_threshold`: the engine at another operating point, as `fes-live --fedn-threshold` runs it)."""
    from fes_live.stream.engine import load_engine
    data = Path(data)
    labels, applied = load_labels(data, overrides)
    unknown = sorted(set(clips or []) - set(labels))
    if unknown:
        raise RealDevError(f"unknown clips {unknown}; labelled: {sorted(labels)}")
    engine = load_engine(engine_path, fedn_threshold=fedn_threshold)
    fm = find_face_model(data, face_model)
    version = feature_code_version(fm)
    roles, scores, clip_rows = {}, {s: {} for s in SPOTTERS}, {}
    samples = {c: {0: [], 1: [], 2: []} for c in CURVES}  # curve values on scored clips' face frames, by kind
    for name in clips or sorted(labels):
        info = labels[name]
        roles[name] = role = clip_role(name, info)
        feats = clip_features(data / "clips" / f"{name}.mp4", cache, fm, version)
        runs = {"engine": run_engine(engine, feats), "baseline": run_baseline(feats)}
        row = {"role": role, "usable": info.get("usable"), "identity": identity(name), "fps": float(feats["fps"]),
               "frames": int(len(feats["frame_index"])), "face_frames": int(feats["face_present"].sum()),
               "labelled_frames": int(info["frames"]),
               "events": {s: runs[s]["events"] for s in SPOTTERS},
               "onsets_cancelled": len(runs["engine"]["cancels"])}
        if role != "skipped":
            for s in SPOTTERS:
                scores[s][name] = score_clip(info, runs[s]["events"], role, runs[s].get("onsets"))
            row["score"] = {s: scores[s][name] for s in SPOTTERS}
        if role == "scored":
            _sample_curves(samples, info, feats, runs)
        if out is not None:
            plot_clip(Path(out) / "timelines" / f"{name}.png", name, info, runs["engine"], runs["baseline"], role)
        clip_rows[name] = row
    scored_roles = {n: r for n, r in roles.items() if r != "skipped"}
    fedn_data = (engine.manifest.get("training_data") or {}).get("fedn") or {}
    report = {"engine": {"path": _shown(engine.folder), "version": engine.manifest["version"],
                         "emotions": engine.labels["emotions"], "fine_tuned_on": fedn_data.get("fine_tuned_on"),
                         "fedn_threshold": engine.spotter_config().fedn_only_threshold},
              "data": _shown(data), "feature_version": version, "overrides": applied,
              "totals": {s: totals(scores[s], scored_roles) for s in SPOTTERS},
              "curves": curve_separation(samples),
              "skipped": {n: labels[n].get("usable") for n, r in roles.items() if r == "skipped"},
              "clips": clip_rows}
    if out is not None:
        import json
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "report.json").write_text(json.dumps(report, indent=1, default=float))
        (Path(out) / "report.md").write_text(markdown(report))
    return report


def _sample_curves(samples: dict, info: dict, feats: dict, runs: dict) -> None:
    """Add a scored clip's per-frame curves, on its face frames, to `samples` by frame kind (`frame_kinds`)."""
    import numpy as np
    frames = np.asarray(feats["frame_index"], np.int64)
    face = np.asarray(feats["face_present"], bool)
    kind = frame_kinds(info, int(frames.max()) + 1 if len(frames) else 0)
    curve = runs["engine"]["curve"]
    at = {int(f): i for i, f in enumerate(curve[:, 0])}
    engine_rows = np.array([at.get(int(f), -1) for f in frames])
    values = {"gim": curve[engine_rows, 1], "level": curve[engine_rows, 2], "baseline": runs["baseline"]["curve"][:, 1]}
    use = face & (engine_rows >= 0)
    for c, v in values.items():
        for k in (0, 1, 2):
            samples[c][k] += [float(x) for x in v[use & (kind[frames] == k)]]


def _shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository (../shared/...), so reports do not name machines."""
    import os
    return os.path.relpath(Path(path).absolute(), REPO)


def fmt(x, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def markdown(report: dict) -> str:
    t = report["totals"]
    e, b = t["engine"], t["baseline"]
    goal = {"recall_03": ">= 0.8", "precision": ">= 0.8", "emotion_acc": ">= 0.75"}
    lines = [
        "# Real development clips: the bundled engine vs the blendshape baseline", "",
        f"Engine `{report['engine']['path']}` v{report['engine']['version']} "
        f"(emotions {', '.join(report['engine']['emotions'])}; FEDN threshold "
        f"{report['engine'].get('fedn_threshold')}); baseline `train/real_baseline.py` (the ~40-line "
        f"MediaPipe-blendshape spotter of issue 10). Both see the same features, computed exactly as the live ingest "
        f"computes them (feature code version `{report['feature_version']}`), every frame, through the same online "
        f"path. Labels: `{report['data']}/labels.json` with {len(report['overrides'])} correction(s) from "
        f"`configs/real_dev_overrides.json`. Regenerate with `scripts/real_report.sh`; rules in `docs/real_dev.md`.",
        *([f"", f"**This engine was fine-tuned on these clips** ({report['engine']['fine_tuned_on']}): the figures "
           f"below are training-set figures, a regression guard and a picture of what it does, not a measure of "
           f"real-face performance. The held-out figures (leave one identity out) are in [loio.md](loio.md)."]
          if report["engine"].get("fine_tuned_on") else []),
        "", f"## Boundaries: {e['clips']} clips ({e['minutes']:.1f} min), {e['expressions']} labelled expressions", "",
        "| figure | engine | baseline | goal |", "|---|---|---|---|"]
    rows = [("recall, IoU >= 0.3", "recall_03"), ("recall, IoU >= 0.5", "recall_05"),
            (f"recall at 0.3, high-confidence labels ({e['high']})", "recall_03_high"),
            ("precision (IoU >= 0.3)", "precision")]
    for label, k in rows:
        lines.append(f"| {label} | **{fmt(e[k])}** | {fmt(b[k])} | {goal.get(k, '')} |")
    lines.append(f"| precision, one event per expression (a second event for one already found is a false "
                 f"alarm, MEGC's one-to-one rule) | **{fmt(e['precision_one_to_one'])}** "
                 f"| {fmt(b['precision_one_to_one'])} | >= 0.8 |")
    lines.append(f"| predictions: TP (of them duplicates) / FP / on other facial actions only | {e['tp']} "
                 f"({e['duplicates']}) / {e['fp']} / {e['ignored']} | {b['tp']} ({b['duplicates']}) / {b['fp']} / "
                 f"{b['ignored']} | |")
    lines.append(f"| false alarms per minute, overall | **{fmt(e['fa_per_min'])}** | {fmt(b['fa_per_min'])} | |")
    for g in NUISANCES:
        ne, nb = e["nuisance"][g], b["nuisance"][g]
        lines.append(f"| false alarms per minute of {g} ({ne['spans']} spans, {ne['minutes']:.2f} min); spans "
                     f"reported | **{fmt(ne['fa_per_min'])}**; {ne['spans_reported']} | {fmt(nb['fa_per_min'])}; "
                     f"{nb['spans_reported']} | <= 0.5 |")
    if e.get("apex") and b.get("apex"):
        lines.append(f"| apex: event's apex from the labelled peak, p50 / p90 (s); share within 0.2 s "
                     f"({e['apex']['found']} / {b['apex']['found']} found with a labelled peak) | "
                     f"**{apex_cell(e['apex'])}** | {apex_cell(b['apex'])} | |")
    lines.append(f"| emotion right, found expressions with an emotion | **{fmt(e['emotion_acc'])}** "
                 f"({e['emotion_found']}) | — (no emotion) | >= 0.75 |")
    lines.append(f"| emotion right, held-emotion clips (eamm_*) | **{fmt(e['held_acc'])}** ({e['held_clips']}) "
                 f"| — | |")
    lines.append(f"| emotion right, both together | **{fmt(e['emotion_acc_all'])}** | — | >= 0.75 |")
    if e.get("timing"):
        m = e["timing"]
        lines += ["", "## Live timing against the labels (engine; the baseline runs offline)", "",
                  "When a live stream would hear it, from the frame whose push made each update known. The labels' "
                  "starts and ends are weak (read off the curves), so a few frames either way are the labels'.", "",
                  "| figure | engine | goal |", "|---|---|---|",
                  f"| onsets announced (`expression.onset`) | {m['onsets']} ({fmt(m['onsets_per_min'], 1)} a minute) "
                  f"| |",
                  f"| of them, followed by their expression event | **{fmt(m['onsets_to_events'])}** | |",
                  f"| found expressions ({m['found']}) whose onset was announced before their event "
                  f"| **{fmt(m['announced'])}** | |",
                  f"| onset announced after the labelled start, p50 / p90 (s) | {fmt(m['onset_delay_p50'])} / "
                  f"{fmt(m['onset_delay_p90'])} | p99 <= 0.5 |",
                  f"| expression event after the labelled end, p50 / p90 / p99 (s) | {fmt(m['final_delay_p50'])} / "
                  f"{fmt(m['final_delay_p90'])} / {fmt(m['final_delay_p99'])} | p99 <= 1 |"]
    if report.get("curves"):
        lines += ["", "## Per-frame curves on the scored clips' face frames", "",
                  "How well each curve tells the frames of labelled expressions from unlabelled frames and from "
                  "talking, blink and gaze frames (AUROC: 0.5 is chance; a frame of an expression said while "
                  "talking counts as expression). GIM's I(t) is learnt from synthetic frame-to-frame ROI flow; the "
                  "expression level is the largest rise of an expression blendshape (speech's mouth movements left "
                  "out) above the person's causal neutral (`models.emotion.expression_level`); the baseline's is "
                  "its own deviation from a 5 s running mean.",
                  "", "| curve | median: expression / unlabelled / talking, blink, gaze | AUROC against unlabelled | "
                  "against talking, blink, gaze |", "|---|---|---|---|"]
        for c, label in CURVES.items():
            v = report["curves"][c]
            lines.append(f"| {label} | {fmt(v['median_expression'])} / {fmt(v['median_background'])} / "
                         f"{fmt(v['median_nuisance'])} | **{fmt(v['auroc_background'], 3)}** | "
                         f"**{fmt(v['auroc_nuisance'], 3)}** |")
    lines += ["", "## Per clip", "",
              "| clip | role | expressions found at 0.3 (engine / baseline) | engine events (FP) | baseline events (FP) "
              "| engine emotions |", "|---|---|---|---|---|---|"]
    for name, c in report["clips"].items():
        if c["role"] == "skipped":
            continue
        se, sb = c["score"]["engine"], c["score"]["baseline"]
        emo = ", ".join(p["emotion"] or "?" for p in c["events"]["engine"]) or "—"
        if c["role"] == "held":
            h = se["held"]
            found = f"held {h['label']}: said {h['said'] or 'nothing'} ({'right' if h['correct'] else 'wrong'})"
            lines.append(f"| [{name}](timelines/{name}.png) | held | {found} | {se['predictions']} | "
                         f"{sb['predictions']} | {emo} |")
            continue
        n = len(se["expressions"])
        fe = sum(f["iou"] >= 0.3 for f in se["expressions"])
        fb = sum(f["iou"] >= 0.3 for f in sb["expressions"])
        lines.append(f"| [{name}](timelines/{name}.png) | scored | {fe} / {fb} of {n} | {se['predictions']} "
                     f"({se['fp']}) | {sb['predictions']} ({sb['fp']}) | {emo} |")
    lines += ["", "## Skipped (listed, not scored)", ""]
    for name, why in report["skipped"].items():
        c = report["clips"].get(name, {})
        lines.append(f"- `{name}` (usable: \"{why}\"): its labels name one of several faces, the product reports "
                     f"the primary face only; engine events {len(c.get('events', {}).get('engine', []))}, "
                     f"baseline {len(c.get('events', {}).get('baseline', []))} (timeline plotted)")
    lines += ["", "## Label corrections applied", ""]
    lines += [f"- `{o['clip']}` {o['action']} {o.get('match', '')} -> {o.get('event', '')}: {o['reason']}"
              for o in report["overrides"]] or ["- none"]
    lines += ["", "## Timelines", "",
              "Top: labelled spans (green expressions, grey other facial actions, orange talking, purple blinks and "
              "eye closures, brown gaze), the engine's events (red, with emotion; v = onset raised, x = onset "
              "cancelled) and the baseline's (blue); black ticks mark the labelled peaks and the events' apexes. "
              "Bottom: the engine's intensity I(t) and the baseline's deviation (its 0.25 opening threshold dotted).",
              ""]
    lines += [f"![{name}](timelines/{name}.png)" for name in report["clips"]]
    return "\n".join(lines) + "\n"


def apex_cell(a: dict) -> str:
    """`totals()["apex"]` as a table cell: p50 / p90 seconds from the labelled peak; share within 0.2 s."""
    return f"{fmt(a['p50'])} / {fmt(a['p90'])}; {fmt(a['within_02'])}"


def add_arguments(p) -> None:
    from fes_live.stream.pipeline_config import THRESHOLD_HELP
    p.add_argument("--engine", default=None, help="engine folder (default: the bundled stream/engines/default)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the real_dev folder (clips/, labels.json)")
    p.add_argument("--overrides", default=str(DEFAULT_OVERRIDES), help="label corrections ('' for none)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="feature cache folder (outside the repository)")
    p.add_argument("--face-model", default=None, help="MediaPipe face_landmarker .task file")
    p.add_argument("--clip", action="append", default=None, help="only this clip (repeatable)")
    p.add_argument("--fedn-threshold", type=float, default=None, metavar="T", help=THRESHOLD_HELP)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: the engine's small per-frame calls run fastest on one)")
    p.add_argument("--out", required=True, help="report folder (report.md, report.json, timelines/)")


def main(args) -> int:
    import torch

    from fes_live.stream.engine import EngineError
    torch.set_num_threads(max(1, args.threads))
    try:
        report = benchmark(args.engine, Path(args.data), Path(args.out), Path(args.cache),
                           Path(args.overrides) if args.overrides else None, args.face_model, args.clip,
                           args.fedn_threshold)
    except (RealDevError, FileNotFoundError, ValueError, EngineError) as err:
        log.error("%s", err)
        return 1
    for s in SPOTTERS:
        t = report["totals"][s]
        print(f"{s:8s} recall@0.3 {fmt(t['recall_03'])} recall@0.5 {fmt(t['recall_05'])} precision "
              f"{fmt(t['precision'])} FA/min {fmt(t['fa_per_min'])} talking {fmt(t['nuisance']['talking']['fa_per_min'])} "
              f"blink {fmt(t['nuisance']['blink']['fa_per_min'])} gaze {fmt(t['nuisance']['gaze']['fa_per_min'])} "
              f"emotion {fmt(t['emotion_acc'])} held {fmt(t['held_acc'])}")
    print(f"-> {args.out}/report.md")
    return 0
