"""MimicMotion's pose network: pose maps → features on the UNet's first latent grid.

Eight 3×3 / 4×4 convolutions with SiLU (3 → 3 → 16 → 16 → 32 → 32 → 64 → 64 → 128 channels,
three of them stride 2, so 8× smaller: the VAE's latent grid), a zero-initialised 1×1
projection to the UNet's first block width, and a learnable scale (initially 2). The module
names (conv_layers.0 … conv_layers.14, final_proj, scale) are those of MimicMotion's checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

# (in, out, kernel, stride) of each convolution; padding 1 keeps or halves the size
CONVOLUTIONS = ((3, 3, 3, 1), (3, 16, 4, 2), (16, 16, 3, 1), (16, 32, 4, 2), (32, 32, 3, 1),
                (32, 64, 4, 2), (64, 64, 3, 1), (64, 128, 3, 1))


class PoseNet(nn.Module):
    def __init__(self, channels: int = 320) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for inputs, outputs, kernel, stride in CONVOLUTIONS:
            layers += [nn.Conv2d(inputs, outputs, kernel, stride=stride, padding=1), nn.SiLU()]
        self.conv_layers = nn.Sequential(*layers)
        self.final_proj = nn.Conv2d(CONVOLUTIONS[-1][1], channels, 1)
        nn.init.zeros_(self.final_proj.weight)  # training starts from the plain UNet
        nn.init.zeros_(self.final_proj.bias)
        self.scale = nn.Parameter(torch.full((1,), 2.0))

    def forward(self, pose_maps: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] → (N, channels, H / 8, W / 8)."""
        return self.final_proj(self.conv_layers(pose_maps)) * self.scale
