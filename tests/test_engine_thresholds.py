"""Threshold calibration against hand-counted cases."""
import pytest

from fes_live.calibration.thresholds import calibrate, merge_spotter
from fes_live.models.spotting import MACRO, MICRO, Proposal


def P(on, off, kind, score, source="gim"):
    return Proposal(on, 0, off, kind, score, source=source)


def test_calibrate_picks_the_separating_thresholds():
    gt = {"a": [(10, 40, MACRO), (100, 110, MICRO)], "b": [(5, 30, MACRO)]}
    preds = {"a": [P(10, 40, MACRO, 0.9), P(60, 90, MACRO, 0.3),          # TP 0.9, FP 0.3
                   P(100, 110, MICRO, 0.4), P(200, 210, MICRO, 0.2),      # TP 0.4, FP 0.2
                   P(300, 330, MACRO, 0.5, "fedn")],                      # FEDN-only FP 0.5
             "b": [P(5, 30, MACRO, 0.35), P(50, 52, MICRO, 0.1)]}         # TP 0.35, FP 0.1
    r = calibrate(gt, preds, grid=[0.0, 0.25, 0.325, 0.5, 0.75])
    # best: macro 0.325 keeps both macro TPs and drops the 0.3 FP; micro 0.25 or 0.325 keep the 0.4 TP and drop
    # both micro FPs (the tie goes to the higher one); fedn 0.75 drops the FEDN-only FP
    assert (r["gim_macro"], r["gim_micro"], r["fedn_only"]) == (0.325, 0.325, 0.75)
    assert r["val_f1"] == pytest.approx(2 * 3 / (3 + 3))
    assert r["spotter"] == {"proposals": {"score_threshold": [0.325, 0.325]}, "fedn_only_threshold": 0.75}


def test_calibrate_without_predictions():
    r = calibrate({"a": [(0, 10, MACRO)]}, {"a": []}, grid=[0.0, 0.5])
    assert r["val_f1"] == 0 and r["gim_macro"] == 0.5  # ties go to the higher threshold


def test_merge_spotter_one_level():
    base = {"proposals": {"score_threshold": [0.5, 0.5], "outer_ratio": 0.2}, "fedn_stride": 16}
    out = merge_spotter(base, {"proposals": {"score_threshold": [0.1, 0.2]}, "fedn_only_threshold": 0.3})
    assert out == {"proposals": {"score_threshold": [0.1, 0.2], "outer_ratio": 0.2}, "fedn_stride": 16,
                   "fedn_only_threshold": 0.3}
    assert base["proposals"]["score_threshold"] == [0.5, 0.5]
