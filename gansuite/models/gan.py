"""The vanilla GAN (Goodfellow et al. 2014): fully connected G and D.

The paper's D used maxout units and dropout; here both nets are plain MLPs with
LeakyReLU, as in most re-implementations, with width and depth as arguments.
Works on any sample shape: images (C, H, W) or 2D points (2,).
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from gansuite.errors import ConfigError


def _mlp(sizes: list[int], act: nn.Module, dropout: float = 0.0, sn: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
        linear = nn.Linear(d_in, d_out)
        layers += [_sn(linear) if sn else linear, act]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return layers


class Generator(nn.Module):
    """z -> sample. Images end in tanh (data lives in [-1, 1]); 2D points end linear (unbounded).

    Args:
        shape: shape of one sample, from the data module.
        latent_dim: size of z.
        width: units per hidden layer.
        depth: number of hidden layers.
    """

    def __init__(self, *, shape: tuple[int, ...], latent_dim: int = 100, width: int = 256, depth: int = 3) -> None:
        super().__init__()
        self.shape = tuple(shape)
        out = math.prod(self.shape)
        self.net = nn.Sequential(
            *_mlp([latent_dim] + [width] * depth, nn.LeakyReLU(0.2)),
            nn.Linear(width, out),
            nn.Tanh() if len(self.shape) == 3 else nn.Identity(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.shape)


class Discriminator(nn.Module):
    """sample -> one raw score per sample (B,).

    Args:
        shape: shape of one sample, from the data module.
        width: units per hidden layer.
        depth: number of hidden layers.
        dropout: dropout after each hidden layer (the paper used 0.5 with maxout).
        spectral_norm: spectral normalization on every linear layer (Miyato et al. 2018).
        pack: PacGAN packing (Lin et al. 2018): D judges ``pack`` samples concatenated, returning
            one score per group of ``pack`` consecutive samples; the batch size must divide by it.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...],
        width: int = 256,
        depth: int = 3,
        dropout: float = 0.0,
        spectral_norm: bool = False,
        pack: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(pack, int) or pack < 1:
            raise ConfigError(f"model.discriminator.pack must be a positive integer (got {pack!r}); use 1 for no packing.")
        self.pack = pack
        head = nn.Linear(width, 1)
        self.net = nn.Sequential(
            *_mlp([math.prod(shape) * pack] + [width] * depth, nn.LeakyReLU(0.2), dropout, spectral_norm),
            _sn(head) if spectral_norm else head,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0] // self.pack, -1)).squeeze(1)
