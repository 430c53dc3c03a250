"""Post-processing against hand-computed cases: IoU, DIoU, NMS, soft-NMS, curve grouping, FEDN decoding."""
import math

import numpy as np
import pytest
import torch

from fes_live.models.proposals import (FEDNDecodeConfig, GIMProposalConfig, diou_1d, fedn_proposals, gim_proposals, iou_1d,
                              inner_outer_score, nms_1d, soft_nms_1d, threshold_runs)
from fes_live.models.spotting import MACRO, MICRO


def test_iou_inclusive():
    # [0,9] and [5,14]: frames 5..9 shared, 15 frames in the union
    assert iou_1d([[0, 9]], [[5, 14]])[0, 0] == pytest.approx(1 / 3)
    assert iou_1d([[0, 3]], [[4, 8]])[0, 0] == 0.0           # adjacent, no shared frame
    assert iou_1d([[2, 2]], [[2, 2]])[0, 0] == pytest.approx(1.0)  # a single frame is length 1


def test_diou_hand_computed():
    pred = torch.tensor([[0.0, 9.0], [3.0, 7.0], [0.0, 3.0]], requires_grad=True)
    target = torch.tensor([[5.0, 14.0], [3.0, 7.0], [10.0, 13.0]])
    d = diou_1d(pred, target)
    # IoU 5/15, centres 4.5 / 9.5, hull 15 -> 1/3 - (5/15)^2
    assert d[0].item() == pytest.approx(1 / 3 - 1 / 9)
    assert d[1].item() == pytest.approx(1.0)
    # disjoint: centres 1.5 / 11.5, hull 14 -> -(10/14)^2
    assert d[2].item() == pytest.approx(-(10 / 14) ** 2)
    (1 - d).sum().backward()  # the loss has a gradient even without overlap
    assert pred.grad is not None and pred.grad[2].abs().sum() > 0


def test_nms_and_soft_nms():
    iv = np.array([[0, 9], [1, 10], [20, 30]])
    sc = np.array([0.9, 0.8, 0.7])
    assert nms_1d(iv, sc, 0.5).tolist() == [0, 2]
    assert nms_1d(iv, sc, 0.9).tolist() == [0, 1, 2]
    assert nms_1d(iv, sc, 0.5, max_keep=1).tolist() == [0]
    order, dec = soft_nms_1d(iv, sc, 0.3)
    iou = 9 / 11
    assert order.tolist() == [0, 2, 1]
    assert dec == pytest.approx([0.9, 0.7, 0.8 * math.exp(-iou ** 2 / 0.3)])


def test_threshold_runs_and_inner_outer():
    curve = np.array([0, 0.5, 0.5, 0, 0, 0.9, 0.1])
    assert threshold_runs(curve, 0.2) == [(1, 2), (5, 5)]
    assert threshold_runs(curve, 0.5) == [(5, 5)]              # strictly above
    # run (1,2): inner 0.5, margin max(1, round(0.4)) = 1 frame each side: frames 0 and 3 -> 0
    assert inner_outer_score(curve, 1, 2, 0.2) == pytest.approx(0.5)
    # run (5,5): margins frames 4 and 6 -> mean 0.05
    assert inner_outer_score(curve, 5, 5, 0.2) == pytest.approx(0.85)


def _hand_curve():
    """A 20-frame macro trapezoid at frames 10..29 and a 12-frame micro bump at 40..51 (60 frames)."""
    curve = np.zeros(60)
    curve[10:12] = 0.3
    curve[12:28] = 0.9
    curve[28:30] = 0.3
    curve[40:52] = 0.8
    apex = np.zeros((60, 2))
    apex[:35] = (0.9, 0.1)
    apex[35:] = (0.2, 0.9)
    return curve, apex


def test_gim_grouping_hand_curve():
    curve, apex = _hand_curve()
    props = gim_proposals(curve, apex, fps=30.0, first_frame=100)
    # macro: theta 0.2 run [10,29]: inner (4*0.3 + 16*0.9)/20 = 0.78, margins 4 frames of zeros -> 0.78 + 0.2*0.9.
    # theta >= 0.3 gives [12,27] (0.88), decayed by soft-NMS (IoU 0.8) to 0.88 * exp(-0.64/0.3) < 0.5: dropped.
    # micro: [40,51] at theta 0.2..0.7: inner 0.8, outer 0 -> 0.8 + 0.2*0.9 = 0.98.
    assert [(p.onset, p.apex, p.offset, p.kind) for p in props] == [(140, 140, 151, MICRO), (110, 112, 129, MACRO)]
    assert props[0].score == pytest.approx(0.98)
    assert props[1].score == pytest.approx(0.96)
    assert props[1].peak_intensity == pytest.approx(0.9)
    assert all(p.source == "gim" for p in props)


def test_gim_filters():
    curve, apex = _hand_curve()
    # apex classifier says neither kind -> nothing
    assert gim_proposals(curve, np.full((60, 2), 0.4), fps=30.0) == []
    # at 60 fps the micro bump (12 frames = 0.2 s) is shorter than 0.3 s and the macro (20 frames) than 0.5 s
    assert gim_proposals(curve, apex, fps=60.0) == []
    # a higher score threshold removes the macro (0.96) but keeps nothing below
    cfg = GIMProposalConfig(score_threshold=(0.97, 0.97))
    assert [p.kind for p in gim_proposals(curve, apex, 30.0, cfg)] == [MICRO]


def test_fedn_decoding():
    # 4 anchors, 3 classes; window 32 starting at stream frame 64
    logits = np.array([[3.0, -3, -3], [2.0, -3, -3], [-3, -3, 1.0], [-5, -5, -5]])
    iv = np.array([[4.2, 20.4], [5.0, 21.0], [25.0, 40.0], [0, 5]])
    props = fedn_proposals(logits, iv, first_frame=64, window=32, fps=30.0, cfg=FEDNDecodeConfig(score_threshold=0.5))
    # anchor 1 overlaps anchor 0 (IoU 16/18) -> suppressed; anchor 2 is clipped to the window end (31); 3 too weak
    assert [(p.onset, p.offset, p.emotion, p.kind) for p in props] == [(68, 84, 0, MACRO), (89, 95, 2, MICRO)]
    assert props[0].score == pytest.approx(1 / (1 + math.exp(-3)))
    assert len(props[0].emotion_probs) == 3 and props[0].source == "fedn"
    with pytest.raises(ValueError, match="mismatch"):
        fedn_proposals(logits, iv[:2], 0, 32, 30.0)
