"""Pseudo-labels and anchor assignment against hand-computed cases."""
import math

import numpy as np
import pytest

from fes_live.models.proposals import iou_1d

from fes_live.train.targets import (AssignConfig, PseudoLabelConfig, assign_anchor_targets, estimated_half_duration,
                           feature_gaussian, gim_targets, mine_negatives, mplg_attention, mplg_foreground,
                           pseudo_apex, reliability_threshold)

CFG = PseudoLabelConfig()


def test_epoch0_hard_boxes():
    T = 40
    t = gim_targets([10, 30], [0, 1], np.zeros(T), np.zeros((T, 4)), epoch=0)
    assert np.flatnonzero(t.y[:, 0]).tolist() == list(range(5, 15))     # [10-5, 10+5)
    assert np.flatnonzero(t.y[:, 1]).tolist() == list(range(27, 33))    # [30-3, 30+3)
    assert t.apex_frames.tolist() == [10, 30]
    assert t.apex[10, 0] == 1 and t.apex[12, 0] == 1 and t.apex[13, 0] == 0  # +-2 macro, 0 within 6 of y>0.5
    assert t.apex[31, 1] == 1 and t.apex[32, 1] == 0                          # +-1 micro
    assert t.apex[10, 1] == 0                                                  # other channel: negative
    # 16 labelled frames -> 16 negatives among the 24 unlabelled (all I = 0 -> stable order: the first ones)
    assert t.negative.sum() == 16 and not (t.negative & (t.y.max(1) > 0)).any()
    assert t.contrast[10] == 1 and t.contrast[30] == 2 and t.contrast[t.negative].tolist() == [0] * 16


def test_hard_mode_keeps_boxes_every_epoch():
    T = 40
    cfg = PseudoLabelConfig(mode="hard")
    t = gim_targets([10], [0], np.random.rand(T), np.random.rand(T, 3), epoch=50, cfg=cfg)
    assert np.flatnonzero(t.y[:, 0]).tolist() == list(range(5, 15)) and set(t.y[:, 0]) == {0.0, 1.0}


def test_feature_gaussian_by_hand():
    g = np.array([[0.0], [1.0], [3.0]])
    # distances^2 to centre 0: 0, 1, 9 -> sigma^2 = 10/3
    v = feature_gaussian(g, 0, 0, 2)
    s2 = 10 / 3
    assert np.allclose(v, [1.0, math.exp(-1 / (2 * s2)), math.exp(-9 / (2 * s2))], atol=1e-6)
    assert np.allclose(feature_gaussian(np.zeros((3, 2)), 1, 0, 2), 1.0)


def test_soft_labels_around_point_then_wider():
    T = 30
    g = np.arange(T, dtype=np.float32)[:, None]
    t1 = gim_targets([15], [0], np.zeros(T), g, epoch=1)
    assert np.flatnonzero(t1.y[:, 0]).tolist() == [13, 14, 15, 16, 17]  # radius 2
    # d^2 = 4,1,0,1,4 -> sigma^2 = 2 -> exp(-1/4) at distance 1, exp(-1) at distance 2
    assert np.allclose(t1.y[13:18, 0], [math.exp(-1), math.exp(-0.25), 1, math.exp(-0.25), math.exp(-1)], atol=1e-6)
    t3 = gim_targets([15], [1], np.zeros(T), g, epoch=3)
    assert np.flatnonzero(t3.y[:, 1]).tolist() == [13, 14, 15, 16, 17]  # micro wide radius 2


def test_gim_instance_adaptive():
    T = 100
    intensity = np.zeros(T, dtype=np.float32)
    intensity[40:60] = 0.9      # 20 reliable frames
    intensity[52] = 1.0         # the apex
    # pseudo-apex: argmax within 45 +- 8 -> 52
    assert pseudo_apex(intensity, 45, 0, CFG) == 52
    assert reliability_threshold(5, CFG) == pytest.approx(0.8)
    assert reliability_threshold(17, CFG) == pytest.approx(0.65)
    assert reliability_threshold(60, CFG) == pytest.approx(0.5)
    # n = frames in [36, 68] with I > 0.8 = 20 -> round(24) -> min(36, max(16, 24)) = 24 -> h = 12
    assert estimated_half_duration(intensity, 52, 0, 0.8, CFG) == 12
    g = np.random.default_rng(0).normal(size=(T, 8)).astype(np.float32)
    t = gim_targets([45], [0], intensity, g, epoch=5)
    assert np.flatnonzero(t.y[:, 0]).tolist() == list(range(40, 65))
    assert t.y[52, 0] == 1.0 and t.apex_frames.tolist() == [52]
    # micro: D_max 16 caps the duration: h = 8 at most
    assert estimated_half_duration(intensity, 52, 1, 0.5, CFG) == 8


def test_mine_negatives_lowest_intensity():
    y = np.zeros((10, 2), dtype=np.float32)
    y[0:2, 0] = 1
    inten = np.array([0, 0, 0.9, 0.1, 0.5, 0.05, 0.7, 0.3, 0.2, 0.6], dtype=np.float32)
    assert np.flatnonzero(mine_negatives(y, inten)).tolist() == [3, 5]              # 2 positives -> 2 lowest
    neg = mine_negatives(y, inten, PseudoLabelConfig(mining="mplg"))
    assert np.flatnonzero(neg).tolist() == [3, 5, 7, 8]                               # 2x positives


def test_mplg_attention_suppresses_dissimilar_context():
    g = np.array([[1, 0], [1, 0.1], [0, 1], [-1, 0]], dtype=np.float32)
    a = mplg_attention(np.ones(4, dtype=np.float32), g, np.array([0]))
    assert a[0] == 1 and a[1] > 0.9 and a[3] == 0 and 0.4 < a[2] < 0.6
    # the high-intensity frame 2 unlike the point loses the pseudo-apex search to frame 1
    inten = np.array([0.5, 0.8, 0.95, 0.1], dtype=np.float32)
    cfg = PseudoLabelConfig(mining="mplg")
    assert pseudo_apex(mplg_attention(inten, g, np.array([0])), 0, 0, cfg) == 1
    assert pseudo_apex(inten, 0, 0, cfg) == 2


def test_mplg_foreground_by_hand():
    g = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 0], [5, 5]], dtype=np.float32)
    probs = np.array([[1.0, 0], [0.95, 0], [0, 1.0], [0, 0.9], [0.99, 0], [0.99, 0]], dtype=np.float32)
    attention = np.array([0.9, 0.1, 0.85, 0.2, 0.3, 0.95], dtype=np.float32)
    cfg = PseudoLabelConfig(mining="mplg", mplg_k_frac=0.5)          # top-3 attention: frames 0, 2, 5
    fg = mplg_foreground(probs, attention, g, np.array([0, 2]), np.array([0, 1]), cfg)
    # frame 0: 1.0 * softmax(-[0, sqrt 2])_0 = 0.804 > 0.8 macro; frame 2 likewise micro; frame 5 is as far from
    # both kinds' points (W = 0.5): 0.495 < 0.8; frames 1, 3, 4 are outside the top-k
    assert np.argwhere(fg).tolist() == [[0, 0], [2, 1]]
    # only macro points in this video: W = (1, 0); frame 5 now passes, micro nowhere
    fg = mplg_foreground(probs, attention, g, np.array([0]), np.array([0]), cfg)
    assert np.argwhere(fg).tolist() == [[0, 0], [5, 0]]
    # in gim_targets from gim_start on: mined frames become intensity targets of 1 (PWES eq. 15)
    fg = mplg_foreground(probs, mplg_attention(attention, g, np.array([0, 2])), g, np.array([0, 2]),
                         np.array([0, 1]), cfg)
    plain = gim_targets([0, 2], [0, 1], attention, g, epoch=cfg.gim_start, cfg=cfg)
    tg = gim_targets([0, 2], [0, 1], attention, g, epoch=cfg.gim_start, cfg=cfg, apex_probs=probs)
    assert fg.any() and (tg.y[fg] == 1).all() and np.array_equal(tg.y[~fg], plain.y[~fg])
    early = gim_targets([0, 2], [0, 1], attention, g, epoch=cfg.soft_start, cfg=cfg, apex_probs=probs)
    assert np.array_equal(early.y, gim_targets([0, 2], [0, 1], attention, g, epoch=cfg.soft_start, cfg=cfg).y)


def test_bad_points_raise():
    with pytest.raises(ValueError, match="outside"):
        gim_targets([50], [0], np.zeros(10), np.zeros((10, 2)), epoch=0)
    with pytest.raises(ValueError, match="kinds"):
        gim_targets([5], [0, 1], np.zeros(10), np.zeros((10, 2)), epoch=0)


def test_anchor_iou_is_inclusive():
    assert iou_1d([[0, 9]], [[5, 14]])[0, 0] == pytest.approx(5 / 15)
    assert iou_1d([[0, 9]], [[10, 19]])[0, 0] == 0
    assert iou_1d([[3, 3]], [[3, 3]])[0, 0] == 1


def test_assign_anchor_based_and_free():
    anchors = np.array([[0, 9], [10, 19], [20, 39], [12, 12], [30, 30]], dtype=np.float32)
    free = np.array([0, 0, 0, 1, 1], dtype=bool)
    strides = np.array([4, 4, 4, 4, 4])
    ranges = np.array([[0, 1e9]] * 3 + [[0, 16], [17, 64]])
    gt = np.array([[10, 18], [22, 41]])
    t = assign_anchor_targets(anchors, free, strides, ranges, gt, [2, 0], num_classes=3)
    # anchor 1 vs gt 0: IoU 9/10 -> positive class 2; anchor 2 vs gt 1: inter 18, union 22 -> 0.82 positive class 0
    assert t.positive.tolist() == [False, True, True, True, True]
    assert t.cls[1].tolist() == [0, 0, 1] and t.cls[2].tolist() == [1, 0, 0]
    assert t.interval[1].tolist() == [10, 18]
    # free at 12: centre of gt0 = 14, |12-14| <= 6, length 9 within [0,16] -> gt0; free at 30: gt1 centre 31.5, length 20
    assert t.interval[3].tolist() == [10, 18] and t.interval[4].tolist() == [22, 41]
    assert t.valid.all()


def test_assign_ignore_band_and_best_anchor():
    anchors = np.array([[0, 9], [0, 20], [40, 49]], dtype=np.float32)
    free = np.zeros(3, dtype=bool)
    t = assign_anchor_targets(anchors, free, np.ones(3), np.zeros((3, 2)), np.array([[0, 13]]), [0], 2,
                              AssignConfig(pos_iou=0.8, neg_iou=0.4))
    # IoU anchor0 = 10/14 = 0.71 (in the ignore band, but best for the GT -> positive); anchor1 = 14/21 = 0.67 ignored
    assert t.positive.tolist() == [True, False, False]
    assert t.valid.tolist() == [True, False, True]
    empty = assign_anchor_targets(anchors, free, np.ones(3), np.zeros((3, 2)), np.zeros((0, 2)), [], 2)
    assert not empty.positive.any() and empty.valid.all()
