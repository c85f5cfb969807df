"""LAPGAN's networks (Denton et al. 2015): the Laplacian pyramid, and one G and one D per pyramid level.

An image I_0 of R px is split into a Laplacian pyramid (:func:`laplacian_pyramid`): Gaussian levels
I_k = d(I_{k-1}) of R / 2^k px, band-pass images h_k = I_k - u(I_{k+1}) for k < K, and the low-pass
residual I_K at the coarsest level K = levels - 1. Levels are indexed as in the paper: level 0 is the
full-resolution band, level K the coarse GAN. d is a 2x2 average and u bilinear upsampling. Any d, u
give an exact pyramid, because each band is defined as what u(d(.)) misses:
reconstruct(laplacian_pyramid(x)) == x up to float rounding.

- Level K is a plain GAN on I_K: MLP G_K(z_K) and MLP D_K (:class:`CoarseGenerator`,
  :class:`CoarseDiscriminator`; paper, CIFAR-10: 2 hidden ReLU layers, 1200 units in G, 600 with
  dropout in D, z_K 100-d uniform in [-1, 1]).
- Level k < K is a conditional GAN on the band h_k given the upsampled coarser image l_k = u(I_{k+1}):
  G_k(z_k, l_k) -> h_k (:class:`BandGenerator`) is a convnet whose noise z_k is one extra plane
  stacked on l_k (the paper's "4th colour plane"); D_k(h_k, l_k) (:class:`BandDiscriminator`) is a
  convnet on l_k + h_k (the paper adds l_k "before the first convolution layer"; ``d_input="stack"``
  also stacks l_k as extra channels). Both follow the authors' CIFAR code (facebookarchive/eyescream,
  ``train_cifar_coarse_to_fine.lua``): G = conv 7x7, ReLU, conv 7x7, ReLU, conv 5x5, all
  size-preserving, linear output (a band is signed); D = conv 5x5, ReLU, conv 5x5 stride 2, ReLU,
  dropout, linear; 128 channels there, ``width`` here.

:class:`LaplacianGenerator` and :class:`LaplacianDiscriminator` hold every level for ``model=lapgan``
(:class:`gansuite.models.lapgan.LAPGAN`, which trains each level on the real l_k). The generator
samples coarse to fine on its own images: Ĩ_K = G_K(z_K), Ĩ_k = u(Ĩ_{k+1}) + G_k(z_k, u(Ĩ_{k+1})).

Not the paper's: tanh on G_K's output (the paper does not say; I_K lies in [-1, 1] like the data)
and PyTorch's default weight init.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gansuite.errors import ConfigError

MIN_COARSE = 5  # D_{K-1} (two valid 5x5 convolutions, one strided) needs at least 10 px at its level


# ----------------------------------------------------------------------------- the pyramid
def downsample(x: Tensor) -> Tensor:
    """d(.): halve the size by averaging 2x2 blocks (B, C, H, W) -> (B, C, H/2, W/2)."""
    return F.avg_pool2d(x, 2)


def upsample(x: Tensor) -> Tensor:
    """u(.): double the size by bilinear interpolation (B, C, H, W) -> (B, C, 2H, 2W)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def gaussian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """[I_0 = x, I_1 = d(x), ..., I_{levels-1}]."""
    images = [x]
    for _ in range(levels - 1):
        images.append(downsample(images[-1]))
    return images


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """[h_0, ..., h_{levels-2}, I_{levels-1}]: the bands, finest first, then the coarsest image."""
    images = gaussian_pyramid(x, levels)
    return [images[k] - upsample(images[k + 1]) for k in range(levels - 1)] + [images[-1]]


def reconstruct(pyramid: Sequence[Tensor]) -> Tensor:
    """The image whose :func:`laplacian_pyramid` is ``pyramid``: I_k = u(I_{k+1}) + h_k from the coarsest up."""
    image = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        image = upsample(image) + band
    return image


def _check_layout(shape: tuple[int, ...], levels: int, key: str) -> tuple[int, int]:
    """(channels, resolution) of images that a pyramid of ``levels`` levels fits."""
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2:
        raise ConfigError(f"model.levels must be an integer of at least 2 (got {levels!r}); the paper's "
                          "CIFAR-10 and MNIST-size pyramids use model.levels=3.")
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ConfigError(f"{key}: LAPGAN needs square images but the data gives samples of shape {tuple(shape)}; "
                          "use model=gan for 2D points.")
    size, factor = shape[1], 2 ** (levels - 1)
    if size % factor or size // factor < MIN_COARSE:
        raise ConfigError(
            f"model.levels={levels} needs images whose size divides by {factor} down to at least {MIN_COARSE} px, "
            f"but the data gives {size} px; use data.resolution=28 or 32 with model.levels=3 "
            "(or 64 with model.levels=4)."
        )
    return shape[0], size


# ----------------------------------------------------------------------------- one level's nets
class CoarseGenerator(nn.Module):
    """G_K: z (B, latent_dim) -> the coarsest image (B, C, s, s) in [-1, 1]; an MLP with 2 hidden ReLU layers."""

    def __init__(self, *, channels: int, size: int, latent_dim: int, width: int) -> None:
        super().__init__()
        self.shape = (channels, size, size)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, width), nn.ReLU(),
            nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, math.prod(self.shape)), nn.Tanh(),
        )

    def forward(self, z: Tensor, low: Tensor | None = None) -> Tensor:
        return self.net(z).view(-1, *self.shape)


class BandGenerator(nn.Module):
    """G_k: (noise plane (B, 1, S, S), l_k (B, C, S, S)) -> band h_k (B, C, S, S), unbounded."""

    def __init__(self, *, channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels + 1, width, 7, padding=3), nn.ReLU(),
            nn.Conv2d(width, width, 7, padding=3), nn.ReLU(),
            nn.Conv2d(width, channels, 5, padding=2),
        )

    def forward(self, z: Tensor, low: Tensor) -> Tensor:
        return self.net(torch.cat([low, z], dim=1))


class CoarseDiscriminator(nn.Module):
    """D_K: the coarsest image (B, C, s, s) -> raw score (B,); 2 hidden ReLU layers with dropout."""

    def __init__(self, *, channels: int, size: int, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * size * size, width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(width, 1),
        )

    def forward(self, x: Tensor, low: Tensor | None = None) -> Tensor:
        return self.net(x).squeeze(1)


class BandDiscriminator(nn.Module):
    """D_k: (band h_k, l_k), both (B, C, S, S) -> raw score (B,); a convnet on l_k + h_k.

    Args:
        d_input: "sum" judges l_k + h_k (the paper); "stack" judges [l_k + h_k, l_k] stacked as channels,
            so D also sees the conditioning on its own.
    """

    def __init__(self, *, channels: int, size: int, width: int, dropout: float,
                 d_input: Literal["sum", "stack"] = "sum") -> None:
        super().__init__()
        self.stack = d_input == "stack"
        out = ((size - 4) - 5) // 2 + 1  # after the valid 5x5 conv and the valid strided 5x5 conv
        self.net = nn.Sequential(
            nn.Conv2d(channels * (2 if self.stack else 1), width, 5), nn.ReLU(),
            nn.Conv2d(width, width, 5, stride=2), nn.ReLU(),
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(width * out * out, 1),
        )

    def forward(self, band: Tensor, low: Tensor) -> Tensor:
        image = low + band
        return self.net(torch.cat([image, low], dim=1) if self.stack else image).squeeze(1)


# ----------------------------------------------------------------------------- all levels
class LaplacianGenerator(nn.Module):
    """Every G_k in one module; ``nets[k]`` is level k (0 = full resolution, ``levels - 1`` = the coarse GAN).

    Called on the tuple from :meth:`gansuite.models.lapgan.LAPGAN.make_inputs` (noise per level,
    indexed by level), it samples coarse to fine and returns the full-resolution image.

    Args:
        shape: (C, R, R) of one sample, from the data module.
        levels: pyramid levels; R must divide by 2^(levels-1) down to at least 5 px.
        latent_dim: size of the coarse GAN's z (the paper: 100).
        coarse_width: units per hidden layer of G_K (the paper: 1200).
        width: channels of the band generators' hidden layers (the authors' CIFAR code: 128).
    """

    def __init__(self, *, shape: tuple[int, ...], levels: int = 3, latent_dim: int = 100,
                 coarse_width: int = 1200, width: int = 128) -> None:
        super().__init__()
        channels, size = _check_layout(tuple(shape), levels, "model.generator")
        self.levels, self.latent_dim, self.shape = levels, latent_dim, tuple(shape)
        coarse = size // 2 ** (levels - 1)
        self.nets = nn.ModuleList(
            [BandGenerator(channels=channels, width=width) for _ in range(levels - 1)]
            + [CoarseGenerator(channels=channels, size=coarse, latent_dim=latent_dim, width=coarse_width)]
        )

    def level(self, k: int, z: Tensor, low: Tensor | None = None) -> Tensor:
        """G_k's output: the coarsest image for k = levels - 1, else the band h_k given l_k = ``low``."""
        return self.nets[k](z, low)

    def forward_levels(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        """[Ĩ_0, ..., Ĩ_K]: every level's image, indexed by level, each built on the generated coarser one."""
        top = self.levels - 1
        images: list[Tensor] = [None] * self.levels  # type: ignore[list-item]
        images[top] = self.level(top, inputs[top])
        for k in range(top - 1, -1, -1):
            low = upsample(images[k + 1])
            images[k] = low + self.level(k, inputs[k], low)
        return images

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.forward_levels(inputs)[0]


class LaplacianDiscriminator(nn.Module):
    """Every D_k in one module; ``discriminator(x, low, level=k)`` scores level k's band (or coarsest image).

    Args:
        shape: (C, R, R) of one sample, from the data module.
        levels: as for :class:`LaplacianGenerator`.
        coarse_width: units per hidden layer of D_K (the paper: 600).
        width: channels of the band discriminators (the authors' CIFAR code: 128).
        dropout: dropout before every D's last layer(s) (the paper and its code: 0.5).
        d_input: what a band D judges, see :class:`BandDiscriminator`.
    """

    def __init__(self, *, shape: tuple[int, ...], levels: int = 3, coarse_width: int = 600, width: int = 128,
                 dropout: float = 0.5, d_input: Literal["sum", "stack"] = "sum") -> None:
        super().__init__()
        if d_input not in ("sum", "stack"):
            raise ConfigError(f"model.discriminator.d_input must be sum or stack (got {d_input!r}); "
                              "sum is the paper's.")
        channels, size = _check_layout(tuple(shape), levels, "model.discriminator")
        self.levels = levels
        self.nets = nn.ModuleList(
            [BandDiscriminator(channels=channels, size=size // 2**k, width=width, dropout=dropout, d_input=d_input)
             for k in range(levels - 1)]
            + [CoarseDiscriminator(channels=channels, size=size // 2 ** (levels - 1), width=coarse_width,
                                   dropout=dropout)]
        )

    def forward(self, x: Tensor, low: Tensor | None = None, level: int = 0) -> Tensor:
        return self.nets[level](x, low)
