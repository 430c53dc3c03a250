"""FEDN (Fang et al., "End-to-End Facial Expression Detection in Long Videos"): one network spots and recognises.

backbone (per frame) -> segment attention & fusion -> sliding-window attention -> two stride-2 conv blocks ->
4-level temporal pyramid -> per-level heads (attention, then decoupled 1-D conv branches for regression and
classification) -> per position 1 anchor-free + 5 anchor-based intervals (fes_live.models.anchors) with emotion logits.
Objectness is the highest sigmoid class score (the paper trains BCE per class, no separate confidence branch).

The paper leaves window, segment length, widths and anchors out; our choices are in `FEDNConfig`, each commented.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn

from fes_live.models.anchors import Anchors
from fes_live.models.backbones import build_backbone
from fes_live.models.blocks import Attention, ConvBlock1d
from fes_live.models.emotion import BLINK_GAZE, MEDIAPIPE_BLENDSHAPES, SPEECH

GEOMETRY_DIM = 1008  # stream.features.GEOMETRY_DIM (models/ imports nothing from stream/)
INPUT_SETS = ("all", "blendshapes", "expression", "no-speech")


def input_mask(inputs: str, in_dim: int = GEOMETRY_DIM) -> torch.Tensor:
    """(in_dim,) 0/1 mask of the geometry columns FEDNConfig.inputs keeps (geometry = 52 blendshapes, landmarks)."""
    mask = torch.ones(in_dim)
    if inputs in ("blendshapes", "expression", "no-speech"):
        mask[len(MEDIAPIPE_BLENDSHAPES):] = 0
    if inputs in ("expression", "no-speech"):
        mask[BLINK_GAZE] = 0
    if inputs == "no-speech":  # nor the mouth's speech movements (models.emotion.SPEECH)
        mask[SPEECH] = 0
    return mask


@dataclass(frozen=True)
class FEDNConfig:
    backbone: str = "face-geometry"  # or "resnet18" (paper; needs torchvision and user-supplied weights)
    in_dim: int = GEOMETRY_DIM        # per-frame input width of the face-geometry backbone
    num_classes: int = 5              # emotions; the engine manifest holds the label map
    # 128 frames = 4.3 s at 30 fps: a macro-expression (CAS(ME)^2 median 35 frames, most < 120) must fit in one
    # window with room for the online stride; LGSNet also uses 128-frame windows. (64 would cut ~2 s smiles.)
    window: int = 128
    segment: int = 8                  # frames per segment of the segment attention (paper: not given)
    backbone_hidden: int = 256        # face-geometry encoder hidden width
    backbone_dim: int = 128           # face-geometry encoder output C0 (resnet18 gives 512)
    dim: int = 128                    # reduced feature C1 after segment fusion, and pyramid width
    heads: int = 4                    # attention heads (segment attention and heads)
    head_dim: int = 128               # hidden width of the head's conv branches
    levels: int = 4                   # pyramid levels; strides 4, 8, 16, 32 frames (two stride-2 blocks first)
    # Anchor lengths per level (frames) x ratios cover 4 .. 128 frames: micro-expressions (9-15 frames at 30 fps)
    # on level 0-1, macro (15-120) on 1-3. Ratios as LGSNet ASPECT_RATIOS.
    anchor_lengths: tuple[float, ...] = (8.0, 16.0, 32.0, 64.0)
    anchor_ratios: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)
    # GT lengths (frames) each level's anchor-free slot is responsible for (overlapping, as LGSNet REGRESS_RANGES).
    regress_ranges: tuple[tuple[float, float], ...] = ((1.0, 16.0), (12.0, 32.0), (24.0, 64.0), (48.0, 10000.0))
    dropout: float = 0.1              # inside attention
    prior_prob: float = 0.01          # initial class probability (focal-loss style bias init): few positives
    # Which geometry columns the face-geometry backbone sees: "all" (52 blendshapes + 956 landmark coordinates),
    # "blendshapes" (landmarks zeroed: on real video head turns and talking move landmarks more than expressions
    # do), or "expression" (blendshapes without the blink and gaze channels, which are never an expression).
    inputs: str = "all"

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(4 * 2 ** lv for lv in range(self.levels))


class FEDNOutput(NamedTuple):
    cls_logits: torch.Tensor  # (B, N, C) emotion logits per interval; objectness = max sigmoid
    intervals: torch.Tensor   # (B, N, 2) [start, end] inclusive, in window frames (float)
    offsets: torch.Tensor     # (B, N, 2) raw regression outputs (fes_live.models.anchors encoding)


class SegmentAttention(nn.Module):
    """(B, W, C0) -> (B, W, C1): per segment a global vector (attention + mean), concatenated to every frame, then
    a scalar score (softmax over the segment's frames) re-weights a reduced per-frame feature."""

    def __init__(self, c_in: int, c_out: int, segment: int, heads: int, dropout: float):
        super().__init__()
        self.segment = segment
        self.norm = nn.LayerNorm(c_in)
        self.attn = Attention(c_in, heads, c_in // heads, dropout)
        self.score = nn.Linear(2 * c_in, 1)
        self.reduce = nn.Linear(2 * c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, W, C = x.shape
        S = self.segment
        s = x.reshape(B * (W // S), S, C)                          # (B*n, S, C0)
        g = (s + self.attn(self.norm(s))).mean(dim=1, keepdim=True)  # (B*n, 1, C0) segment vector
        z = torch.cat([s, g.expand(-1, S, -1)], dim=2)              # (B*n, S, 2*C0)
        w = torch.softmax(self.score(z), dim=1) * S                 # (B*n, S, 1), mean 1 per segment
        return (self.reduce(z) * w).reshape(B, W, -1)               # (B, W, C1)


class SlidingWindowAttention(nn.Module):
    """(B, C, W) -> same: a 1-D conv scores every frame, softmax over the window re-weights the features."""

    def __init__(self, channels: int):
        super().__init__()
        self.score = nn.Conv1d(channels, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.score(x), dim=2) * x.shape[2]  # (B, 1, W), mean 1
        return x * w


class Head(nn.Module):
    """One pyramid level: attention over positions, then decoupled conv branches -> (B, n*slots, 2), (B, n*slots, C)."""

    def __init__(self, dim: int, hidden: int, heads: int, slots: int, num_classes: int, dropout: float,
                 prior_prob: float):
        super().__init__()
        self.slots, self.num_classes = slots, num_classes
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dim // heads, dropout)
        self.reg = nn.Sequential(ConvBlock1d(dim, hidden), ConvBlock1d(hidden, hidden),
                                 nn.Conv1d(hidden, slots * 2, 3, padding=1))
        self.cls = nn.Sequential(ConvBlock1d(dim, hidden), ConvBlock1d(hidden, hidden),
                                 nn.Conv1d(hidden, slots * num_classes, 3, padding=1))
        nn.init.constant_(self.cls[-1].bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.zeros_(self.reg[-1].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, n = x.shape
        t = x.transpose(1, 2)                                     # (B, n, C)
        x = (t + self.attn(self.norm(t))).transpose(1, 2)         # (B, C, n)
        reg = self.reg(x).transpose(1, 2).reshape(B, n * self.slots, 2)
        cls = self.cls(x).transpose(1, 2).reshape(B, n * self.slots, self.num_classes)
        return reg, cls


class FEDN(nn.Module):
    def __init__(self, cfg: FEDNConfig = FEDNConfig(), backbone_state: dict | None = None):
        super().__init__()
        if cfg.window % cfg.segment:
            raise ValueError(f"FEDNConfig.window {cfg.window} must be a multiple of segment {cfg.segment}")
        if cfg.window % cfg.strides[-1]:
            raise ValueError(f"FEDNConfig.window {cfg.window} must be a multiple of the top stride {cfg.strides[-1]}")
        if len(cfg.anchor_lengths) != cfg.levels or len(cfg.regress_ranges) != cfg.levels:
            raise ValueError(f"FEDNConfig: need {cfg.levels} anchor_lengths and regress_ranges (one per level)")
        if cfg.inputs not in INPUT_SETS:
            raise ValueError(f"FEDNConfig.inputs must be one of {INPUT_SETS}, got {cfg.inputs!r}")
        self.cfg = cfg
        if cfg.inputs != "all":
            if cfg.backbone != "face-geometry":
                raise ValueError(f"FEDNConfig.inputs {cfg.inputs!r} needs the face-geometry backbone")
            self.register_buffer("input_mask", input_mask(cfg.inputs, cfg.in_dim))
        self.backbone, c0 = build_backbone(cfg.backbone, cfg.in_dim, cfg.backbone_hidden, cfg.backbone_dim,
                                           backbone_state)
        self.segment_attn = SegmentAttention(c0, cfg.dim, cfg.segment, cfg.heads, cfg.dropout)
        self.window_attn = SlidingWindowAttention(cfg.dim)
        self.down = nn.Sequential(ConvBlock1d(cfg.dim, cfg.dim, stride=2), ConvBlock1d(cfg.dim, cfg.dim, stride=2))
        self.neck = nn.ModuleList([ConvBlock1d(cfg.dim, cfg.dim, stride=2) for _ in range(cfg.levels - 1)])
        self.anchors = Anchors(cfg.window, cfg.strides, cfg.anchor_lengths, cfg.anchor_ratios, cfg.regress_ranges)
        self.heads = nn.ModuleList([Head(cfg.dim, cfg.head_dim, cfg.heads, self.anchors.slots, cfg.num_classes,
                                         cfg.dropout, cfg.prior_prob) for _ in range(cfg.levels)])

    def forward(self, x: torch.Tensor) -> FEDNOutput:
        """x (B, W, in_dim) geometry deltas, or (B, W, 3, 224, 224) crops for resnet18 -> FEDNOutput."""
        if self.cfg.inputs != "all":
            x = x * self.input_mask
        f = self.backbone(x)                                      # (B, W, C0)
        f = self.segment_attn(f).transpose(1, 2)                  # (B, C1, W)
        f = self.down(self.window_attn(f))                        # (B, C1, W/4)
        levels = [f]
        for conv in self.neck:
            levels.append(conv(levels[-1]))                       # W/8, W/16, W/32
        regs, clss = zip(*[head(lv) for head, lv in zip(self.heads, levels)])
        offsets = torch.cat(regs, dim=1)                          # (B, N, 2)
        cls_logits = torch.cat(clss, dim=1)                       # (B, N, C)
        return FEDNOutput(cls_logits, self.anchors.decode(offsets), offsets)
