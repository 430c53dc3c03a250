"""PWES DFCL (fes_live.train.dfcl): region vectors, the memory bank and eq. 17 against hand-computed values."""
import math

import numpy as np
import pytest
import torch

from fes_live.train.dfcl import MemoryBank, feature_contrastive, region_vectors


def test_region_vectors_by_hand():
    f = torch.arange(16, dtype=torch.float32).reshape(8, 2)      # row t = [2t, 2t + 1]
    classes = np.array([0, 0, 0, 0, 1, 1, -1, 2])
    v, labels = region_vectors(f, classes, (2, 3, 1))
    # background: main [0..3], then [0, 1] and [2, 3]; macro: main [4, 5], then min(3, 2) = 2 spaces [4], [5];
    # micro: main [7] and one space [7]; the ignored frame 6 is in none
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    expected = [[3, 4], [1, 2], [5, 6], [9, 10], [8, 9], [10, 11], [14, 15], [14, 15]]
    assert v.tolist() == expected
    v, labels = region_vectors(f, np.full(8, -1), (2, 3, 1))
    assert v.shape == (0, 2) and len(labels) == 0
    with pytest.raises(ValueError, match="classes"):
        region_vectors(f, classes[:5], (2, 3, 1))


def test_memory_bank_is_normalised_fifo_per_class():
    bank = MemoryBank(dim=2, size=2)
    bank.push(torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [5.0, 0.0]]), np.array([1, 1, 1, 0]))
    keys, labels = bank.contents()
    assert labels.tolist() == [0, 1, 1]                      # macro kept its two newest
    assert keys.tolist() == [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    assert len(bank) == 3
    with pytest.raises(ValueError):
        MemoryBank(dim=2, size=0)


def test_feature_contrastive_by_hand():
    bank = MemoryBank(dim=2, size=8)
    bank.push(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), np.array([1, 2, 0]))
    u = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # anchor 0 macro (normalised [1, 0]): -log(e^1 / (e^1 + e^0 + e^-1)); anchor 1 micro: -log(e^1 / (e^0 + e^1 +
    # e^0)); background vectors are only keys, never anchors
    got = feature_contrastive(u, np.array([1, 2, 0]), bank, temperature=1.0)
    l0 = -(1 - math.log(math.e + 1 + math.exp(-1)))
    l1 = -(1 - math.log(1 + math.e + 1))
    assert got.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    # temperature 0.5 doubles every logit
    got = feature_contrastive(u[:1], np.array([1]), bank, temperature=0.5)
    assert got.item() == pytest.approx(-(2 - math.log(math.exp(2) + 1 + math.exp(-2))), rel=1e-6)


def test_feature_contrastive_empty_cases_are_zero():
    bank = MemoryBank(dim=2, size=8)
    u = torch.tensor([[1.0, 0.0]])
    assert feature_contrastive(u, np.array([1]), bank).item() == 0          # empty bank
    bank.push(torch.tensor([[0.0, 1.0]]), np.array([2]))
    assert feature_contrastive(u, np.array([1]), bank).item() == 0          # no macro key yet
    assert feature_contrastive(u, np.array([0]), bank).item() == 0          # background is never an anchor


def test_feature_contrastive_pulls_classes_apart():
    """Optimising crop features against a bank separates macro from background (the point of DFCL)."""
    bank = MemoryBank(dim=2, size=8)
    bank.push(torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.9, 0.2]]), np.array([1, 0, 1]))
    f = torch.tensor([[0.5, 0.5], [0.4, 0.6]], requires_grad=True)
    labels = np.array([1, 1])
    macro, background = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    cos0 = torch.nn.functional.normalize(f.detach(), dim=1)
    before = feature_contrastive(f, labels, bank, 0.5).item()
    opt = torch.optim.SGD([f], lr=1.0)
    for _ in range(100):
        opt.zero_grad()
        feature_contrastive(f, labels, bank, 0.5).backward()
        opt.step()
    assert feature_contrastive(f, labels, bank, 0.5).item() < before
    cos = torch.nn.functional.normalize(f.detach(), dim=1)
    margin0, margin = cos0 @ macro - cos0 @ background, cos @ macro - cos @ background
    assert (margin > margin0 + 0.5).all() and (margin > 1.0).all()
