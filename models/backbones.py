"""FEDN's per-frame backbones: (B, W, ...) frames -> (B, W, C) features. A plain `{name: class}` choice.

- `face-geometry` (default): the 1008-d geometry vector of `fes_live.stream.features` (52 blendshapes + 478 aligned
  landmarks x 2), minus the person's neutral baseline (fes_live.models.baseline), through a small learned encoder.
  Needs no torchvision and costs ~0.1 MFLOP per frame.
- `resnet18`: the paper's backbone, torchvision's ResNet-18 on 224x224 aligned crops, frozen, with weights the
  user brings (e.g. AffectNet-trained). torchvision is an optional extra (on a CPU-only machine it pulls the CUDA
  build of torch), so it is imported only here, only when chosen.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FaceGeometryEncoder(nn.Module):
    """(B, W, F) geometry deltas -> (B, W, out_dim): per-feature standardisation, Linear, LayerNorm, GELU, Linear.

    The input is a *delta* to the neutral face and is ~0 most of the time; a LayerNorm straight on it would blow
    that noise up to unit scale, so the input is standardised per feature (BatchNorm statistics learnt in training)
    and the LayerNorm sits on the hidden layer, where the bias keeps it well conditioned.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.in_dim = in_dim
        self.scale = nn.BatchNorm1d(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, W, Fd = x.shape
        x = self.scale(x.reshape(B * W, Fd)).view(B, W, Fd)
        return self.fc2(F.gelu(self.norm(self.fc1(x))))


class ResNet18Encoder(nn.Module):
    """(B, W, 3, 224, 224) float crops (normalised like the weights expect) -> (B, W, 512); always frozen, eval."""

    def __init__(self, state_dict: dict | None = None):
        super().__init__()
        try:
            import torchvision  # noqa: PLC0415  (optional extra)
        except Exception as e:  # ImportError, or torchvision built for another torch
            raise RuntimeError(
                "the resnet18 backbone needs torchvision, which is an optional extra: "
                "pip install -e '.[resnet]' (note: it installs the CUDA build of torch); "
                f"import failed with: {e}") from None
        net = torchvision.models.resnet18(weights=None)
        net.fc = nn.Identity()
        if state_dict is not None:
            state = {k.removeprefix("module."): v for k, v in state_dict.items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(f"resnet18 state dict does not fit torchvision's ResNet-18: missing "
                                 f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        self.net = net
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> "ResNet18Encoder":
        super().train(mode)
        self.net.eval()  # frozen: BatchNorm statistics never move
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, W = x.shape[:2]
        return self.net(x.reshape(B * W, *x.shape[2:])).view(B, W, -1)


def build_backbone(name: str, in_dim: int, hidden: int, out_dim: int,
                   state_dict: dict | None = None) -> tuple[nn.Module, int]:
    """The backbone called `name` and its output width."""
    if name == "face-geometry":
        return FaceGeometryEncoder(in_dim, hidden, out_dim), out_dim
    if name == "resnet18":
        return ResNet18Encoder(state_dict), 512
    raise ValueError(f"unknown FEDN backbone {name!r}; choose from {sorted(BACKBONES)}")


BACKBONES = {"face-geometry": FaceGeometryEncoder, "resnet18": ResNet18Encoder}
