"""A residual MLP generator and discriminator for 2D points: what a user's own networks look like.

gansuite passes ``shape`` (one sample's shape, from the data) and the options of the config node.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ResidualGenerator(nn.Module):
    """z -> sample, through ``blocks`` residual MLP blocks."""

    def __init__(self, *, shape: tuple[int, ...], latent_dim: int, width: int = 64, blocks: int = 2) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.inp = nn.Linear(latent_dim, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(width, width)) for _ in range(blocks))
        self.out = nn.Linear(width, math.prod(self.shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.inp(z)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).view(-1, *self.shape)


class ResidualDiscriminator(nn.Module):
    """sample -> one raw score per sample."""

    def __init__(self, *, shape: tuple[int, ...], width: int = 64, blocks: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(math.prod(shape), width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(width, width)) for _ in range(blocks))
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).squeeze(1)
