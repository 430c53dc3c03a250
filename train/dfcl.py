"""PWES's distribution-guided feature contrastive learning (DFCL, §3.4-3.5), for GIM's point-supervised training.

GIM's intensity-aware contrastive loss compares frames of one crop only. DFCL adds what one crop cannot see: the
same kind of expression in other videos and other people. Per crop, the frames of each pseudo-label class
(0 background, 1 macro, 2 micro: `train.targets.contrast_classes`) are cut in temporal order into K_c equal
region-level spaces plus one main space holding them all (distribution-guided sampling: most for the dense
background, fewest for the rare micro-expressions); each space is mean-pooled into a region vector. Those vectors
go into a memory bank (a FIFO queue per class) across crops, videos and epochs, and each foreground vector of
the current crop is pulled towards the bank's vectors of its own class and pushed from the rest (InfoNCE, eq. 17):

    L = -1/N sum_h log( sum_{q in P+(h)} exp(u_h . q / tau) / sum_{q in bank} exp(u_h . q / tau) )

Values PWES leaves to us are fields of `DFCLConfig`: the bank size, and that the bank is not saved with a
checkpoint (a resumed run refills it within an epoch).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor
CLASSES = 3  # background, macro, micro


@dataclass(frozen=True)
class DFCLConfig:
    weight: float = 0.0                   # lambda_3; 0 switches DFCL off (GIM's own losses only)
    temperature: float = 1.0              # PWES tau = 1.0 (CAS(ME)^2 and SAMM-LV)
    regions: tuple[int, int, int] = (10, 3, 2)  # K_c for background, macro, micro (PWES, CAS(ME)^2)
    bank_size: int = 256                  # region vectors kept per class (ours; PWES does not say)


def region_vectors(features: Tensor, classes: np.ndarray, regions: tuple[int, ...]) -> tuple[Tensor, np.ndarray]:
    """(N, D) mean-pooled region vectors (with gradients) and their (N,) classes from one crop.

    features (T, D); classes (T,) in {-1 ignored, 0, 1, 2}. For each class present: the main space (all its frames)
    and then min(K_c, n) temporally contiguous spaces of (nearly) equal size over its n frames.
    """
    classes = np.asarray(classes).reshape(-1)
    if len(classes) != features.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows but {len(classes)} classes")
    vectors, labels = [], []
    for c, k in enumerate(regions):
        idx = np.flatnonzero(classes == c)
        if len(idx) == 0:
            continue
        spaces = [idx] + [s for s in np.array_split(idx, min(k, len(idx))) if len(s)]
        for s in spaces:
            vectors.append(features[torch.from_numpy(s)].mean(dim=0))
            labels.append(c)
    if not vectors:
        return features.new_zeros((0, features.shape[1])), np.zeros(0, dtype=np.int64)
    return torch.stack(vectors), np.array(labels, dtype=np.int64)


class MemoryBank:
    """Normalised, detached region vectors per class, oldest dropped first."""

    def __init__(self, dim: int, size: int):
        if size < 1:
            raise ValueError(f"memory bank size must be >= 1, got {size}")
        self.size = size
        self.queues = [torch.zeros((0, dim)) for _ in range(CLASSES)]

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues)

    def push(self, vectors: Tensor, labels: np.ndarray) -> None:
        v = F.normalize(vectors.detach().float(), dim=1)
        for c in range(CLASSES):
            new = v[torch.from_numpy(np.asarray(labels) == c)]
            if len(new):
                self.queues[c] = torch.cat([self.queues[c], new])[-self.size:]

    def contents(self) -> tuple[Tensor, Tensor]:
        """(M, D) vectors and (M,) classes."""
        labels = torch.cat([torch.full((len(q),), c, dtype=torch.long) for c, q in enumerate(self.queues)])
        return torch.cat(self.queues), labels


def feature_contrastive(vectors: Tensor, labels: np.ndarray, bank: MemoryBank, temperature: float = 1.0) -> Tensor:
    """Eq. 17 over the crop's foreground region vectors against the bank (before this crop is pushed).

    An anchor whose class has no vector in the bank yet is skipped; with none left the loss is 0.
    """
    keys, key_labels = bank.contents()
    fg = torch.from_numpy(np.asarray(labels) > 0)
    if len(keys) == 0 or not bool(fg.any()):
        return vectors.new_zeros(())
    u = F.normalize(vectors[fg], dim=1)
    u_labels = torch.from_numpy(np.asarray(labels))[fg]
    logits = u @ keys.to(u.dtype).T / temperature                   # (N, M)
    positive = u_labels[:, None] == key_labels[None, :]
    has = positive.any(dim=1)
    if not bool(has.any()):
        return vectors.new_zeros(())
    logits, positive = logits[has], positive[has]
    pos = torch.logsumexp(logits.masked_fill(~positive, -torch.inf), dim=1)
    return (torch.logsumexp(logits, dim=1) - pos).mean()
