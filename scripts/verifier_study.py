"""Study (session 26, not kept): an event verifier, a logistic regression on what the blendshapes do over each
spotted event (FEDN score, length, smile / brow / squint / jaw levels, jaw cycles a second, smile steadiness,
smile-jaw correlation), learnt from the held-out events of the kept LOIO folds and evaluated nested: identity k's
events are judged by a verifier, and at a probability threshold, chosen without k's labels (the threshold on
out-of-fold probabilities of the other identities, each from a verifier that saw neither k nor that identity).

    .venv/bin/python scripts/verifier_study.py [--folds runs/real_loio runs/real_loio_s0 runs/real_loio_s2]
        [--pool] [--l2 10]     # every seed's events train the verifier; ridge weight

The events (FEDN-only threshold 0.5, the lowest of the grid) are cached in --cache. "score only" is the same
procedure on the FEDN score alone, the comparison. docs/real_dev.md ("An event verifier") has the figures.
"""
import argparse
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fes_live.models import online
from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES
from fes_live.models.spotting import ExpressionUpdate
from fes_live.models.talking import jaw_cycles
from fes_live.stream.engine import load_engine
from fes_live.train import real_eval, real_train

I = {n: i for i, n in enumerate(MEDIAPIPE_BLENDSHAPES)}
GROUPS = {"smile": ("mouthSmileLeft", "mouthSmileRight"),
          "brows": ("browInnerUp", "browOuterUpLeft", "browOuterUpRight"),
          "browdown": ("browDownLeft", "browDownRight"), "squint": ("eyeSquintLeft", "eyeSquintRight"),
          "cheek": ("cheekSquintLeft", "cheekSquintRight"), "frown": ("mouthFrownLeft", "mouthFrownRight"),
          "sneer": ("noseSneerLeft", "noseSneerRight"), "round": ("mouthFunnel", "mouthPucker"),
          "wide": ("eyeWideLeft", "eyeWideRight"), "stretch": ("mouthStretchLeft", "mouthStretchRight")}


def features(raw: np.ndarray, delta: np.ndarray, fps: float, score: float) -> dict:
    g = {k: delta[:, [I[n] for n in v]].mean(1) for k, v in GROUPS.items()}
    jaw = delta[:, I["jawOpen"]]
    jaw_raw = raw[:, I["jawOpen"]]
    seconds = len(raw) / fps
    f = {"score": score, "log_seconds": np.log(seconds)}
    for k, v in g.items():
        f[f"{k}_p90"] = float(np.percentile(v, 90))
    f["smile_raw_med"] = float(np.median(raw[:, [I["mouthSmileLeft"], I["mouthSmileRight"]]].mean(1)))
    f["jaw_p90"] = float(np.percentile(jaw, 90))
    f["jaw_std"] = float(jaw.std())
    f["jaw_cps"] = jaw_cycles(jaw_raw, 0.08) / seconds
    f["jaw_cps4"] = jaw_cycles(jaw_raw, 0.04) / seconds
    s = g["smile"]
    f["smile_steady"] = float((s > 0.5 * max(s.max(), 1e-3)).mean())
    moving = len(s) > 2 and s.std() > 1e-6 and jaw.std() > 1e-6
    f["smile_jaw_corr"] = float(np.corrcoef(s, jaw)[0, 1]) if moving else 0.0
    return f


def patch() -> None:
    original = online.OnlineSpotter._evidence

    def evidence(self, p, extras):
        judged = original(self, p, extras)
        if judged is None:
            return None
        rows = [(raw, d) for t, raw, d in self._shapes if p.onset <= t <= p.offset]
        raw, delta = np.array([r for r, _ in rows]), np.array([d for _, d in rows])
        q, ex = judged
        return q, {**ex, "verify": features(raw, delta, self.cfg.fps, float(q.score)) if rows else None}
    online.OnlineSpotter._evidence = evidence


def collect(folds: list[str], threshold: float, out: Path) -> dict:
    patch()
    torch.set_num_threads(1)
    engine = load_engine("runs/start_engine", backend="export", device="cpu")
    clips, labels = real_train.load_clips(engine, real_eval.DEFAULT_DATA, real_eval.DEFAULT_CACHE,
                                          real_eval.DEFAULT_OVERRIDES, None)
    cfg = real_train.RealTrainConfig()
    spotter = real_train.spotter_overrides(replace(cfg, fedn_only_threshold=threshold))
    emotions = engine.labels["emotions"]
    data = {"labels": labels, "clips": {c.name: c.identity for c in clips}, "seeds": {}}
    for d in folds:
        per = {}
        for c in clips:
            model = real_train.base_fedn(engine, cfg.fedn_inputs)
            model.load_state_dict(torch.load(Path(d) / f"{c.identity}.pt", weights_only=True)["state_dict"])
            runner = real_train.fedn_runner(model.eval())
            sp = real_eval.engine_spotter(engine, float(c.feats["fps"]), runner, spotter)
            events = []
            for u in online.stream_updates(sp, c.feats):
                if isinstance(u, ExpressionUpdate):
                    p = u.proposal
                    events.append({"onset": p.onset, "offset": p.offset, "score": float(p.score),
                                   "emotion": emotions[p.emotion] if 0 <= p.emotion < len(emotions) else None,
                                   "f": u.extras.get("verify")})
            per[c.name] = sorted(events, key=lambda e: (e["onset"], e["offset"]))
            print(d, c.name, len(events), flush=True)
        data["seeds"][d] = per
    out.write_bytes(pickle.dumps(data))
    return data


def fit(X: np.ndarray, y: np.ndarray, l2: float) -> tuple:
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z = (X - mu) / sd
    w = np.zeros(Z.shape[1]); b = 0.0
    for _ in range(300):  # Newton steps
        p = 1 / (1 + np.exp(-(Z @ w + b)))
        gw = Z.T @ (p - y) + l2 * w
        gb = (p - y).sum()
        h = p * (1 - p)
        H = np.zeros((len(w) + 1, len(w) + 1))
        H[:-1, :-1] = Z.T @ (Z * h[:, None]) + l2 * np.eye(len(w))
        H[:-1, -1] = H[-1, :-1] = Z.T @ h
        H[-1, -1] = h.sum() + 1e-9
        step = np.linalg.solve(H, np.concatenate([gw, [gb]]))
        w -= step[:-1]; b -= step[-1]
        if np.abs(step).max() < 1e-8:
            break
    return mu, sd, w, b


def predict(model, X):
    mu, sd, w, b = model
    return 1 / (1 + np.exp(-(((X - mu) / sd) @ w + b)))


def verdicts(data, seed):
    return {n: real_eval.score_clip(data["labels"][n], evs, "scored")["verdicts"]
            for n, evs in data["seeds"][seed].items()}


def matrix(data, seed_list, names, verd, keys):
    X, y = [], []
    for s in seed_list:
        for n in names:
            for e, v in zip(data["seeds"][s][n], verd[s][n]):
                if v == "other" or e["f"] is None:
                    continue
                X.append([e["f"][k] for k in keys]); y.append(1.0 if v == "tp" else 0.0)
    return np.array(X), np.array(y)


def probs(model, data, seed, names, keys):
    rows = {n: np.array([[e["f"][k] for k in keys] for e in data["seeds"][seed][n]]).reshape(-1, len(keys))
            for n in names}
    return {n: predict(model, rows[n])
            if data["seeds"][seed][n] else np.zeros(0) for n in names}


def f1_of(tot):
    r, p = tot["recall_03"] or 0, tot["precision"] or 0
    return 2 * p * r / (p + r) if p + r else 0


def kept(data, seed, names, pr, tau):
    return {n: [e for e, q in zip(data["seeds"][seed][n], pr[n]) if q >= tau] for n in names}


def evaluate(data, seed, train_seeds, keys, l2, grid):
    clips = data["clips"]
    ids = sorted(set(clips.values()))
    verd = {s: verdicts(data, s) for s in data["seeds"]}
    out_events = {}
    chosen = {}
    for k in ids:
        test = [n for n in clips if clips[n] == k]
        others = [n for n in clips if clips[n] != k]
        # tau: out-of-fold probabilities on the other identities, each from a verifier that saw neither k nor j
        oof = {}
        for j in sorted({clips[n] for n in others}):
            tr = [n for n in others if clips[n] != j]
            m = fit(*matrix(data, train_seeds, tr, verd, keys), l2)
            oof.update(probs(m, data, seed, [n for n in others if clips[n] == j], keys))
        best = max(grid, key=lambda t: (f1_of(real_eval.totals(
            {n: real_eval.score_clip(data["labels"][n], ev, "scored")
             for n, ev in kept(data, seed, others, oof, t).items()},
            {n: "scored" for n in others})), -t))
        chosen[k] = best
        m = fit(*matrix(data, train_seeds, others, verd, keys), l2)
        out_events.update(kept(data, seed, test, probs(m, data, seed, test, keys), best))
    scores = {n: real_eval.score_clip(data["labels"][n], ev, "scored") for n, ev in out_events.items()}
    return real_eval.totals(scores, {n: "scored" for n in scores}), chosen, scores


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", nargs="+", default=["runs/real_loio", "runs/real_loio_s0", "runs/real_loio_s2"])
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--cache", default="/tmp/verifier_events.pkl")
    ap.add_argument("--keys", default="")
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--pool", action="store_true", help="train the verifier on every seed's events")
    a = ap.parse_args()
    cache = Path(a.cache)
    data = pickle.loads(cache.read_bytes()) if cache.exists() else collect(a.folds, a.threshold, cache)
    any_f = next(e["f"] for evs in data["seeds"][a.folds[0]].values() for e in evs if e["f"])
    keys = a.keys.split(",") if a.keys else list(any_f)
    grid = [round(x, 2) for x in np.arange(0.0, 0.95, 0.05)]
    for seed in a.folds:
        train_seeds = a.folds if a.pool else [seed]
        for name, ks in (("score only", ["score"]), ("verifier", keys)):
            tot, chosen, _ = evaluate(data, seed, train_seeds, ks, a.l2, grid)
            n = tot["nuisance"]
            print(f"{seed} {name}: recall {real_eval.fmt(tot['recall_03'])} "
                  f"precision {real_eval.fmt(tot['precision'])} "
                  f"(TP {tot['tp']} FP {tot['fp']}) talking {real_eval.fmt(n['talking']['fa_per_min'])} blink "
                  f"{real_eval.fmt(n['blink']['fa_per_min'])} taus {sorted(set(chosen.values()))}", flush=True)


if __name__ == "__main__":
    main()
