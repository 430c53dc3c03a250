"""GIM: a SpotFormer-style spatio-temporal transformer over 17-frame ROI-flow windows, with GIM's two heads.

Per output frame t the input is the flow of the selected ROIs over frames t-8 .. t+8 (reference_notes §1.2-1.3):
token embedding -> [spatial attention over ROI nodes, temporal attention] -> graph pooling into region groups ->
stride-2 temporal conv (17 -> 9) -> [spatial attention over regions, temporal attention] -> max over regions ->
conv (9 -> 5) -> temporal attention -> conv (5 -> 3) -> temporal attention -> conv (3 -> 1) = frame feature f_t.
Heads (reference `CO2`, all per frame): g_t = LeakyReLU(W f_t) (the embedding GIM's pseudo-labels measure
distances in), intensity I(t) = sigmoid(w . g_t) (class-agnostic), apex logits = W_a f_t (macro, micro).

The reference runs dim 256 / depth 4 (~3.2 M parameters); our defaults are CPU-sized (dim 64, depth 1) because the
live side runs several 30 fps streams on 2 cores. The structure is unchanged, only widths and depths shrink.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from fes_live.models.blocks import TransformerBlock


@dataclass(frozen=True)
class GIMConfig:
    window: int = 17                 # flows of t-8 .. t+8 (SpotFormer RECEPTIVE_FILED 17, centred)
    n_rois: int = 12                 # ROIs in the input (stream.features.ROI_NAMES: brows 3+3, nose 2, mouth 4)
    # The reference keeps 10 of 12 ROIs (slots [1,2,3,5,6,7,9,10,11,12] of its 1-based list): both brows and the
    # mouth, dropping the two nose ROIs whose flow is mostly residual head motion. In our 0-based ROI order:
    rois: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 8, 9, 10, 11)
    # Region groups over the *selected* nodes (reference: left brow 0-2, right brow 3-5, mouth 6-9).
    groups: tuple[tuple[int, ...], ...] = ((0, 1, 2), (3, 4, 5), (6, 7, 8, 9))
    dim: int = 64                    # reference 256; CPU-sized
    heads: int = 4                   # reference 4
    dim_head: int = 16               # reference 64; dim / heads here
    mlp_dim: int = 128               # reference 256 (= dim); 2 x dim here
    depth: int = 1                   # transformer blocks per attention stage; reference 4
    dropout: float = 0.0             # reference 0.0 inside the backbone
    emb_dropout: float = 0.1         # reference 0.1 after the token embedding
    head_dropout: float = 0.3        # reference 0.7 on its 256-d heads; lower for a 64-d feature
    leaky_slope: float = 0.2         # reference LeakyReLU(0.2) in the embedding head


class GIMOutput(NamedTuple):
    intensity: torch.Tensor    # (B,) I(t) in [0, 1]
    apex_logits: torch.Tensor  # (B, 2) [macro, micro] apex-classifier logits (sigmoid -> probabilities)
    feature: torch.Tensor      # (B, D) backbone frame feature f_t (the contrastive loss uses it)
    embed: torch.Tensor        # (B, D) g_t, the embedding pseudo-label distances are measured in


def _stack(n: int, cfg: GIMConfig) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(cfg.dim, cfg.heads, cfg.dim_head, cfg.mlp_dim, cfg.dropout)
                           for _ in range(n)])


class GIM(nn.Module):
    def __init__(self, cfg: GIMConfig = GIMConfig()):
        super().__init__()
        if cfg.window != 17:
            raise ValueError(f"GIMConfig.window must be 17 (the conv stack reduces 17 -> 9 -> 5 -> 3 -> 1), got {cfg.window}")
        if any(not 0 <= r < cfg.n_rois for r in cfg.rois):
            raise ValueError(f"GIMConfig.rois {cfg.rois} outside 0..{cfg.n_rois - 1}")
        flat = sorted(i for g in cfg.groups for i in g)
        if flat != list(range(len(cfg.rois))):
            raise ValueError(f"GIMConfig.groups {cfg.groups} must partition the {len(cfg.rois)} selected nodes")
        self.cfg = cfg
        D, V = cfg.dim, len(cfg.rois)
        self.register_buffer("roi_index", torch.tensor(cfg.rois, dtype=torch.long), persistent=False)
        group_of = [next(k for k, g in enumerate(cfg.groups) if v in g) for v in range(V)]
        self.register_buffer("group_of", torch.tensor(group_of, dtype=torch.long), persistent=False)

        self.embed = nn.Linear(2, D)
        # BatchNorm, not LayerNorm: a LayerNorm of a linear map of a 2-d flow would normalise its magnitude away.
        self.embed_norm = nn.BatchNorm1d(D)
        self.pos_time = nn.Parameter(torch.randn(cfg.window, D) * 0.02)
        self.pos_region = nn.Parameter(torch.randn(len(cfg.groups), D) * 0.02)
        self.emb_drop = nn.Dropout(cfg.emb_dropout)
        # stage 1: ROI nodes, 17 steps
        self.spatial1, self.temporal1 = _stack(cfg.depth, cfg), _stack(cfg.depth, cfg)
        self.down1 = nn.Conv1d(D, D, 3, stride=2, padding=1)     # 17 -> 9
        # stage 2: region nodes, 9 steps
        self.spatial2, self.temporal2 = _stack(cfg.depth, cfg), _stack(cfg.depth, cfg)
        self.down2 = nn.Conv1d(D, D, 3, stride=2, padding=1)     # 9 -> 5
        # stage 3: one node
        self.temporal3 = _stack(cfg.depth, cfg)
        self.down3 = nn.Conv1d(D, D, 3, stride=2, padding=1)     # 5 -> 3
        self.temporal4 = _stack(cfg.depth, cfg)
        self.down4 = nn.Conv1d(D, D, 3, stride=2, padding=0)     # 3 -> 1
        # heads (reference CO2: 1x1 convs == per-frame linears)
        self.embed_head = nn.Linear(D, D)
        self.intensity_head = nn.Linear(D, 1)
        self.apex_head = nn.Linear(D, 2)
        self.head_drop = nn.Dropout(cfg.head_dropout)
        for m in (self.embed_head, self.intensity_head, self.apex_head):  # reference: Kaiming-uniform, zero bias
            nn.init.kaiming_uniform_(m.weight, a=cfg.leaky_slope)
            nn.init.zeros_(m.bias)

    def _pool_groups(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, V, D) -> (B, T, G, D): max over the nodes of each region group."""
        return torch.stack([x[:, :, list(g)].amax(dim=2) for g in self.cfg.groups], dim=2)

    @staticmethod
    def _temporal(blocks: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Attention over time per node: (B, T, V, D) -> same."""
        B, T, V, D = x.shape
        y = blocks(x.permute(0, 2, 1, 3).reshape(B * V, T, D))
        return y.view(B, V, T, D).permute(0, 2, 1, 3)

    @staticmethod
    def _spatial(blocks: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Attention over nodes per time step: (B, T, V, D) -> same."""
        B, T, V, D = x.shape
        return blocks(x.reshape(B * T, V, D)).view(B, T, V, D)

    @staticmethod
    def _down(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        """Strided temporal conv per node: (B, T, V, D) -> (B, T', V, D)."""
        B, T, V, D = x.shape
        y = conv(x.permute(0, 2, 3, 1).reshape(B * V, D, T))  # (B*V, D, T')
        return y.view(B, V, D, -1).permute(0, 3, 1, 2)

    def forward(self, windows: torch.Tensor) -> GIMOutput:
        """windows (B, 17, n_rois, 2) ROI flow of frames t-8..t+8 -> GIMOutput for frame t of each window."""
        x = windows.index_select(2, self.roi_index)                        # (B, 17, V, 2)
        B, T, V, _ = x.shape
        x = self.embed(x)                                                  # (B, 17, V, D)
        x = self.embed_norm(x.reshape(B * T * V, -1)).view(B, T, V, -1)
        x = x + self.pos_time[:, None, :] + self.pos_region[self.group_of][None, None]
        x = self.emb_drop(x)
        x = self._temporal(self.temporal1, self._spatial(self.spatial1, x))
        x = self._down(self.down1, self._pool_groups(x))                   # (B, 9, G, D)
        x = self._temporal(self.temporal2, self._spatial(self.spatial2, x))
        x = self._down(self.down2, x.amax(dim=2, keepdim=True))            # (B, 5, 1, D)
        x = self._down(self.down3, self._temporal(self.temporal3, x))      # (B, 3, 1, D)
        x = self._down(self.down4, self._temporal(self.temporal4, x))      # (B, 1, 1, D)
        f = x.reshape(B, -1)                                               # (B, D)
        g = F.leaky_relu(self.embed_head(self.head_drop(f)), self.cfg.leaky_slope)
        intensity = torch.sigmoid(self.intensity_head(self.head_drop(g))).squeeze(1)
        apex_logits = self.apex_head(self.head_drop(f))
        return GIMOutput(intensity, apex_logits, f, g)
