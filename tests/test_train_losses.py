"""Loss terms against values worked out by hand."""
import math

import pytest
import torch

from fes_live.train.losses import (diou_loss_1d, fedn_loss, focal_apex, intensity_aware_contrastive, intensity_regression,
                          reward, smoothness, sparsity)


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


def test_intensity_regression():
    inten = t(0.5, 1.0, 0.2, 0.0)
    y = torch.tensor([[1.0, 0], [0.5, 0], [0, 0], [0, 0]])
    neg = torch.tensor([False, False, True, True])
    # macro: ((0.5-1)^2 + (1-0.5)^2)/2 = 0.25; micro: none -> 0; negatives: (0.04 + 0)/2 = 0.02
    assert intensity_regression(inten, y, neg).item() == pytest.approx(0.27)


def test_smoothness_absolute_not_telescoping():
    up_down = t(0, 1, 0, 1, 0)
    assert smoothness(up_down).item() == pytest.approx(1.0)  # the signed mean would give 0
    assert smoothness(t(0.3)).item() == 0


def test_reward_and_sparsity():
    inten = t(0.8, 0.6, 0.2)
    y = torch.tensor([[0.9, 0], [0, 0.7], [0.4, 0]])
    assert reward(inten, y).item() == pytest.approx(-0.4 * 0.8 - 0.6 * 0.6)
    assert sparsity(inten).item() == pytest.approx(1.6 / 3)


def test_focal_apex_by_hand():
    z = torch.zeros(3, 2)  # p = 0.5 everywhere
    target = torch.tensor([[1.0, -1], [0, -1], [-1, -1]])
    got = focal_apex(z, target, alpha=(0.9, 0.9), weight=(1.0, 1.0), gamma=1.0, smoothing=0.0)
    # pos: 0.9 * 0.5 * ln2; neg: 0.1 * 0.5 * ln2; mean of two; micro channel has nothing -> 0
    assert got.item() == pytest.approx((0.45 + 0.05) * math.log(2) / 2, rel=1e-5)
    smooth = focal_apex(z[:1], torch.tensor([[0.0, -1]]), alpha=(0.9, 0.9), gamma=1.0, smoothing=0.25)
    assert smooth.item() == pytest.approx(0.1 * 0.5 * math.log(2), rel=1e-5)  # p = .5: smoothing leaves log terms equal
    with pytest.raises(ValueError, match="shape"):
        focal_apex(z, target[:1])


def test_contrastive_by_hand():
    f = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0]])
    c = torch.tensor([1, 1, 0])
    q = torch.tensor([1.0, 1.0, 0.0])
    T = 0.5
    got = intensity_aware_contrastive(f, c, q, temperature=T, base_temperature=T)
    # anchors 0 and 1: positive the other (w = 1, s = 2), negative frame 2 (w = |1-0| = 1, s = 0):
    # l = -(2 - log(e^2 + e^0)); anchor 2 has no positive -> left out
    expected = -(2 - math.log(math.exp(2) + 1))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # ignored frames do not count; a single frame gives 0
    assert intensity_aware_contrastive(f, torch.tensor([1, -1, -1]), q).item() == 0


def test_contrastive_pulls_same_class_together():
    f = torch.tensor([[1.0, 0.2], [0.2, 1.0], [1.0, 0.1], [0.1, 1.0]], requires_grad=True)
    c = torch.tensor([1, 1, 0, 0])
    q = torch.tensor([1.0, 1.0, 0.0, 0.0])
    before = intensity_aware_contrastive(f, c, q).item()
    opt = torch.optim.SGD([f], lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        intensity_aware_contrastive(f, c, q).backward()
        opt.step()
    assert intensity_aware_contrastive(f, c, q).item() < before


def test_diou_1d_by_hand():
    # pred [0,9], target [5,14]: inter 5, union 15, hull 15, centres 4.5 vs 9.5 -> 1 - 1/3 + (5/15)^2
    got = diou_loss_1d(t(0, 9)[None], t(5, 14)[None])
    assert got.item() == pytest.approx(1 - 1 / 3 + 1 / 9, rel=1e-6)
    assert diou_loss_1d(t(3, 7)[None], t(3, 7)[None]).item() == pytest.approx(0.0)
    # disjoint: [0,4] vs [10,14]: IoU 0, centres 2 vs 12, hull 15 -> 1 + (10/15)^2
    assert diou_loss_1d(t(0, 4)[None], t(10, 14)[None]).item() == pytest.approx(1 + 4 / 9, rel=1e-6)


def test_fedn_loss():
    logits = torch.zeros(3, 2)
    inter = torch.tensor([[0.0, 9], [5, 14], [0, 1]])
    cls_t = torch.tensor([[1.0, 0], [0, 0], [0, 0]])
    int_t = torch.tensor([[0.0, 9], [0, 0], [0, 0]])
    pos = torch.tensor([True, False, False])
    valid = torch.tensor([True, True, False])
    reg, bce = fedn_loss(logits, inter, cls_t, int_t, pos, valid)
    assert reg.item() == pytest.approx(0.0)
    assert bce.item() == pytest.approx(4 * math.log(2), rel=1e-5)  # 4 logits at 0 over 1 positive
