"""FEDN's per-position intervals: one anchor-free and `len(ratios)` anchor-based slots per pyramid position.

Coordinates are **inclusive frame positions inside the window** (float): an interval [s, e] covers frames s..e,
so its length is e - s + 1 and a ground-truth [onset, offset] is its own target (train.losses.diou_loss_1d and
the MEGC IoU use the same convention). Position i of a level with stride S covers frames i*S .. i*S + S - 1; its
centre is c = i*S + (S - 1) / 2.

Layout of the N = sum_l n_l * (1 + len(ratios)) slots: level-major, then position, then slot
(slot 0 anchor-free, slots 1.. anchor-based with length L_l * ratio). All tables are non-persistent buffers,
computed once (ActionFormer's PointGenerator), so checkpoints do not carry them and `.to(device)` moves them.

Decoding (LGSNet / A2Net interval encoding):
  anchor-free  (r0, r1):  start = c - S * softplus(r0),  end = c + S * softplus(r1)
  anchor-based (dc, dw):  centre = c + dc * L,  length = L * exp(dw),  [centre - (length-1)/2, centre + (length-1)/2]
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_LOG_SCALE = 4.0  # exp(4) = 55x an anchor's length: keeps an untrained head from overflowing


class Anchors(nn.Module):
    def __init__(self, window: int, strides: tuple[int, ...], lengths: tuple[float, ...],
                 ratios: tuple[float, ...], regress_ranges: tuple[tuple[float, float], ...]):
        super().__init__()
        if not (len(strides) == len(lengths) == len(regress_ranges)):
            raise ValueError(f"one stride, anchor length and regress range per level: got {len(strides)}, "
                             f"{len(lengths)}, {len(regress_ranges)}")
        if any(window % s for s in strides):
            raise ValueError(f"window {window} must be a multiple of every level stride {strides}")
        self.slots = 1 + len(ratios)
        centres, strides_, lens, free, ranges, level = [], [], [], [], [], []
        for lv, (S, L, rr) in enumerate(zip(strides, lengths, regress_ranges)):
            for i in range(window // S):
                c = i * S + (S - 1) / 2
                for k in range(self.slots):
                    centres.append(c)
                    strides_.append(float(S))
                    lens.append(0.0 if k == 0 else float(L) * float(ratios[k - 1]))
                    free.append(k == 0)
                    ranges.append((float(rr[0]), float(rr[1])))
                    level.append(lv)
        centres_t, lens_t = torch.tensor(centres), torch.tensor(lens)
        half = (lens_t - 1).clamp(min=0) / 2
        self.register_buffer("centres", centres_t, persistent=False)                      # (N,)
        self.register_buffer("strides", torch.tensor(strides_), persistent=False)         # (N,)
        self.register_buffer("lengths", lens_t, persistent=False)                         # (N,) 0 = anchor-free
        self.register_buffer("anchor_free", torch.tensor(free), persistent=False)         # (N,) bool
        self.register_buffer("regress_range", torch.tensor(ranges), persistent=False)     # (N, 2) GT lengths
        self.register_buffer("level", torch.tensor(level), persistent=False)              # (N,)
        # The reference interval of each slot: [c - (L-1)/2, c + (L-1)/2]; anchor-free slots are the point [c, c].
        self.register_buffer("reference", torch.stack([centres_t - half, centres_t + half], 1), persistent=False)

    def __len__(self) -> int:
        return int(self.centres.shape[0])

    def decode(self, offsets: torch.Tensor) -> torch.Tensor:
        """Raw regression outputs (B, N, 2) -> intervals (B, N, 2) [start, end] in inclusive window frames."""
        return offsets_to_intervals(offsets, self.centres, self.strides, self.lengths, self.anchor_free)


def offsets_to_intervals(offsets: torch.Tensor, centres: torch.Tensor, strides: torch.Tensor,
                         lengths: torch.Tensor, anchor_free: torch.Tensor) -> torch.Tensor:
    """Decode (..., N, 2) offsets against per-slot tables (N,); see the module docstring for the encoding."""
    a, b = offsets[..., 0], offsets[..., 1]
    # anchor-free: distances to the start and end, in units of the level's stride
    free_start = centres - strides * F.softplus(a)
    free_end = centres + strides * F.softplus(b)
    # anchor-based: centre shift in anchor lengths, log length ratio
    centre = centres + a * lengths
    length = lengths * torch.exp(b.clamp(max=MAX_LOG_SCALE))
    half = (length - 1) / 2
    start = torch.where(anchor_free, free_start, centre - half)
    end = torch.where(anchor_free, free_end, centre + half)
    return torch.stack([start, end], dim=-1)
