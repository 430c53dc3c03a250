"""MEGC F1 and mAP: the official MEGC 2020 baseline numbers, hand-worked cases, variants, reports and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import DATA, need
from fes_live.models.spotting import MACRO, MICRO, Proposal
from fes_live.train.evaluate import (EvalError, Segment, detection_map, evaluate, evaluate_loso, iou_matrix, main, megc_f1,
                            parse_len_range, read_megc_gt, read_megc_predictions)

BASELINE = DATA / "megc2020_baseline"


def test_megc2020_baseline_reproduces_official_numbers(capsys):
    gt_file = need(BASELINE / "ground_truth_all_Info.txt")
    rc = main(["megc2020", "--gt", str(gt_file), "--pred-dir", str(BASELINE / "predictions"),
               "--micro-len", "7:16", "--macro-len", "17:", "--json", "-"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rule"] == "megc-official"
    expected = {"micro": (5035, 21, 57, 0.0082), "macro": (1523, 109, 300, 0.1196), "overall": (6558, 130, 357, 0.0376)}
    for cls, (n_pred, tp, n_gt, f1) in expected.items():
        r = report[cls]
        assert (r["predictions"], r["tp"], r["ground_truth"]) == (n_pred, tp, n_gt), cls
        assert round(r["f1"], 4) == f1, cls
        assert r["recall"] == pytest.approx(tp / n_gt) and r["precision"] == pytest.approx(tp / n_pred)
    assert report["videos"] == 98


def test_megc2020_baseline_variants_differ_as_published():
    gt = read_megc_gt(need(BASELINE / "ground_truth_all_Info.txt"))
    preds = read_megc_predictions(BASELINE / "predictions", (7, 16), (17, None))
    # reference_notes 5.2: one-to-one inclusive 104 / 21, one-to-one exclusive 101 / 20 (CAS(ME)^2 MaE / ME)
    r = megc_f1(gt, preds, matching="one-to-one")
    assert (r["macro"]["tp"], r["micro"]["tp"]) == (104, 21)
    r = megc_f1(gt, preds, matching="one-to-one", iou="exclusive")
    assert (r["macro"]["tp"], r["micro"]["tp"]) == (101, 20)
    assert r["rule"] == "exclusive-iou+one-to-one+per-class@0.5"
    # without the length filter the counts change: the filter is the baseline's, not the metric's
    assert megc_f1(gt, read_megc_predictions(BASELINE / "predictions"))["micro"]["predictions"] > 5035


def test_inclusive_and_exclusive_iou_by_hand():
    a, b = [Segment(0, 9, MACRO)], [Segment(5, 14, MACRO)]
    assert iou_matrix(a, b)[0, 0] == pytest.approx(5 / 15)       # frames 5..9 shared, 0..14 in the union
    assert iou_matrix(a, b, "exclusive")[0, 0] == pytest.approx(4 / 14)
    assert iou_matrix([Segment(3, 3, MICRO)], [Segment(3, 3, MICRO)])[0, 0] == 1.0
    assert iou_matrix([Segment(0, 4, MICRO)], [Segment(5, 9, MICRO)])[0, 0] == 0.0


def test_official_counting_rules_by_hand():
    gt = {"v1": [(10, 19, "micro"), (12, 21, "micro"), (100, 199, "macro")], "v2": []}
    preds = {
        "v1": [Proposal(11, 15, 20, MICRO, 0.9),      # finds both micro GTs (IoU 9/11 each)
               Proposal(10, 14, 19, MICRO, 0.8),      # duplicate on a found GT: costs precision only
               (100, 199, "micro", 0.7),                 # right place, wrong class: no macro TP
               (0, 5, MACRO, 0.1)],
        "v2": [(0, 9, "macro", 0.5)],                    # video without GT: still a prediction
        "v3": [(0, 9, "micro", 0.5)],                    # video absent from GT: still a prediction
    }
    r = megc_f1(gt, preds)
    assert (r["micro"]["predictions"], r["micro"]["tp"], r["micro"]["ground_truth"]) == (4, 2, 2)
    assert (r["macro"]["predictions"], r["macro"]["tp"], r["macro"]["ground_truth"]) == (2, 0, 1)
    assert r["overall"]["f1"] == pytest.approx(2 * 2 / (6 + 3))
    assert r["per_video"]["v3"]["micro"] == [1, 0, 0]
    # one-to-one: the first prediction takes one GT, the duplicate the other
    assert megc_f1(gt, preds, matching="one-to-one")["micro"]["tp"] == 2
    only_first = {"v1": preds["v1"][:1]}
    assert megc_f1(gt, only_first)["micro"]["tp"] == 2
    assert megc_f1(gt, only_first, matching="one-to-one")["micro"]["tp"] == 1
    # class-agnostic with duration split: the 100-frame "micro" prediction now finds the macro GT
    d = megc_f1(gt, preds, classes="duration", micro_max_len=15)
    assert d["macro"]["tp"] == 1 and d["micro"]["tp"] == 2
    assert d["rule"].startswith("inclusive-iou+gt-found+class-agnostic-duration-split")
    assert megc_f1(gt, preds, classes="duration", micro_max_len=15, matching="one-to-one")["macro"]["tp"] == 1


def test_detection_map_by_hand():
    gt = {"v": [(0, 9, MACRO), (50, 59, MACRO)]}
    perfect = detection_map(gt, {"v": [(0, 9, MACRO, 0.9), (50, 59, MACRO, 0.8)]})
    assert perfect["map"]["macro"] == 1.0 and perfect["ap"]["micro"] is None
    assert perfect["map"]["overall"] == 1.0 and len(perfect["iou_thresholds"]) == 10
    # best-scored prediction is a false positive, the second finds one of two GTs: AP = 0.5 recall * 0.5 precision
    half = detection_map(gt, {"v": [(20, 29, MACRO, 0.9), (0, 9, MACRO, 0.8)]})
    assert half["ap"]["macro"] == pytest.approx([0.25] * 10)
    # IoU 0.6 (inclusive: 0..9 vs 0..5 -> 6/10) is a TP up to threshold 0.6 only
    partial = detection_map({"v": [(0, 9, MACRO)]}, {"v": [(0, 5, MACRO, 1.0)]})
    assert partial["ap"]["macro"] == pytest.approx([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert partial["map"]["macro"] == pytest.approx(0.3)


def test_evaluate_writes_report_and_plots(tmp_path):
    rng = np.random.default_rng(0)
    gt, preds = {}, {}
    for v in range(5):
        starts = sorted(rng.choice(np.arange(0, 900, 60), 4, replace=False))
        gt[f"v{v}"] = [(int(s), int(s) + (10 if k % 2 else 40), k % 2) for k, s in enumerate(starts)]
        preds[f"v{v}"] = [Proposal(s + int(rng.integers(-3, 4)), s, e + int(rng.integers(-3, 4)), k, float(rng.random()))
                          for s, e, k in gt[f"v{v}"]] + [(5, 20, MICRO, 0.05)]
    report = evaluate(gt, preds, tmp_path, micro_max_len=15)
    for name in ("report.json", "pr_curves.png", "ap_vs_iou.png"):
        assert (tmp_path / name).stat().st_size > 1000
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["megc"]["overall"]["ground_truth"] == 20
    assert saved["megc"]["overall"]["predictions"] == 25
    assert set(saved["variants"]) == {"inclusive-iou+one-to-one+per-class@0.5", "exclusive-iou+gt-found+per-class@0.5",
                                      "exclusive-iou+one-to-one+per-class@0.5",
                                      "inclusive-iou+gt-found+class-agnostic-duration-split@0.5"}
    assert 0 < report["map"]["map"]["overall"] <= 1


def test_loso_pools_counts_over_folds():
    folds = {"s1": ({"a": [(0, 9, MICRO)]}, {"a": [(0, 9, MICRO, 1.0)]}),
             "s2": ({"b": [(0, 99, MACRO)]}, {"b": [(200, 299, MACRO, 1.0), (300, 399, MACRO, 1.0)]})}
    r = evaluate_loso(folds)
    assert (r["megc"]["overall"]["tp"], r["megc"]["overall"]["predictions"], r["megc"]["overall"]["ground_truth"]) == (1, 3, 2)
    assert r["megc"]["overall"]["f1"] == pytest.approx(2 / 5)   # pooled, not the mean of fold F1s (0.5)
    assert r["fold_overall_f1"]["mean"] == pytest.approx(0.5)
    with pytest.raises(EvalError, match="another fold"):
        evaluate_loso({"x": ({"a": []}, {}), "y": ({"a": []}, {})})


def test_score_cli_with_native_files(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "clip1.json").write_text(json.dumps({
        "video_id": "clip1", "subject": "p1", "fps": 30.0, "n_frames": 300, "source_face": "x", "seed": 0,
        "intervals": [{"onset": 10, "apex": 15, "offset": 20, "kind": "micro", "emotion": "happiness", "aus": [12]},
                      {"onset": 100, "apex": 130, "offset": 160, "kind": "macro", "emotion": "anger", "aus": [4]}]}))
    (tmp_path / "pred.csv").write_text("video_id,onset,offset,kind,score\nclip1,10,20,micro,0.9\nclip1,0,5,macro,0.3\n")
    rc = main(["score", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred.csv"), "--out", str(tmp_path / "o"),
               "--json", "-"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["megc"]["micro"]["tp"] == 1 and out["megc"]["macro"]["tp"] == 0
    assert out["megc"]["overall"]["f1"] == pytest.approx(2 * 1 / (2 + 2))
    assert (tmp_path / "o" / "ap_vs_iou.png").is_file()
    (tmp_path / "pred.json").write_text(json.dumps({"clip1": [{"onset": 100, "offset": 160, "kind": 0, "score": 1}]}))
    assert main(["score", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred.json"), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["megc"]["macro"]["tp"] == 1
    (tmp_path / "report.json").write_text(json.dumps({"fold_details": {  # a fes-train report
        "p1": {"predictions": {"clip1": [{"onset": 11, "apex": 15, "offset": 20, "kind": 1, "score": 0.8,
                                          "emotion": -1, "source": "gim"}]}}}}))
    assert main(["score", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "report.json"), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["megc"]["micro"]["tp"] == 1


def test_bad_input_gives_clear_errors(tmp_path, capsys):
    bad_gt = tmp_path / "all_Info.txt"
    bad_gt.write_text("s15 0401 macro-expression 557\n")
    assert main(["megc2020", "--gt", str(bad_gt), "--pred-dir", str(tmp_path)]) == 2
    assert "expected 'folder code class onset apex offset'" in capsys.readouterr().err
    bad_gt.write_text("s15 0401 giant-expression 1 2 3\n")
    with pytest.raises(EvalError, match="unknown expression class"):
        read_megc_gt(bad_gt)
    bad_gt.write_text("s15 0401 micro-expression 1 2 3\n")
    assert main(["megc2020", "--gt", str(bad_gt), "--pred-dir", str(tmp_path)]) == 2
    assert "no micro/ or macro/ folder" in capsys.readouterr().err
    (tmp_path / "p.json").write_text("{not json")
    assert main(["score", "--gt", str(bad_gt), "--pred", str(tmp_path / "p.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    with pytest.raises(EvalError, match="MIN:MAX"):
        parse_len_range("7-16")
    with pytest.raises(EvalError, match="offset 3 before onset 5"):
        megc_f1({"v": [(5, 3, "micro")]}, {})
    with pytest.raises(EvalError, match="micro_max_len"):
        megc_f1({}, {}, classes="duration")


def test_dataset_table_scores_like_the_megc_file(tmp_path):
    """GT from the CAS(ME)^2 adapter gives the official numbers too; MEGC writer and reader round-trip."""
    from fes_live.train.datasets import load_casme2
    from fes_live.train.evaluate import write_megc_predictions
    gt = load_casme2(need(DATA / "annotations" / "CASME_sq_gt.xlsx")).by_video()
    preds = read_megc_predictions(need(BASELINE / "predictions"), (7, 16), (17, None))
    r = megc_f1(gt, preds)
    assert (r["overall"]["predictions"], r["overall"]["tp"], r["overall"]["ground_truth"]) == (6558, 130, 357)
    write_megc_predictions(preds, tmp_path / "sub")
    again = read_megc_predictions(tmp_path / "sub")
    key = lambda segs: sorted((s.onset, s.offset, s.kind, s.score) for s in segs)  # noqa: E731
    assert {v: key(s) for v, s in again.items() if s} == {v: key(s) for v, s in preds.items() if s}
    perfect = evaluate(gt, {v: [(i.onset, i.offset, i.kind, 1.0) for i in items] for v, items in gt.items()})
    assert perfect["megc"]["overall"]["f1"] == 1.0 and perfect["map"]["map"]["overall"] == 1.0


def test_megc2020_cli_variant_options_and_out(tmp_path, capsys):
    gt_file = need(BASELINE / "ground_truth_all_Info.txt")
    args = ["megc2020", "--gt", str(gt_file), "--pred-dir", str(BASELINE / "predictions"),
            "--micro-len", "7:16", "--macro-len", "17:", "--json", "-"]
    assert main(args + ["--matching", "one-to-one", "--iou", "exclusive", "--out", str(tmp_path)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["rule"] == "exclusive-iou+one-to-one+per-class@0.5" and r["macro"]["tp"] == 101
    assert json.loads((tmp_path / "report.json").read_text())["megc"]["overall"]["tp"] == 130
    assert (tmp_path / "pr_curves.png").is_file()
    assert main(args + ["--classes", "duration", "--micro-max-len", "15"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["rules"]["classes"] == "duration" and d["overall"]["ground_truth"] == 357
    assert d["overall"]["predictions"] == 6558 and d["overall"]["tp"] >= 130  # any class may find a GT
    assert main(args + ["--classes", "duration"]) == 2
    assert "needs micro_max_len" in capsys.readouterr().err
