"""2D Gaussian mixtures, the mode-collapse benchmarks of VEEGAN and PacGAN: ``data=ring8`` / ``data=grid25``.

8 modes on the unit circle (std 0.01) or a 5x5 grid (std 0.05), equally likely; ``y`` is the mode index.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gansuite.data.base import HELDOUT_DRAW, TRAIN_DRAW, GANDataModule, TensorBatches, seeded_generator
from gansuite.errors import ConfigError


def ring_means(k: int = 8, radius: float = 1.0) -> Tensor:
    # Angles 2*pi*i/k for i < k; linspace(0, 2*pi, k) would put the last mode on top of the first.
    angles = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def grid_means(values: tuple[float, ...] = (-4, -2, 0, 2, 4)) -> Tensor:
    v = torch.tensor(values, dtype=torch.float32)
    return torch.cartesian_prod(v, v)


# The PacGAN / VEEGAN benchmarks: geometry and per-mode std.
MIXTURES = {"ring8": (ring_means, 0.01), "grid25": (grid_means, 0.05)}


class Mixture2D(GANDataModule):
    """A 2D Gaussian mixture with equally likely modes; ``y`` is the mode index.

    Args:
        modes: ``"ring8"`` (8 modes on the unit circle, std 0.01) or ``"grid25"`` (5x5 grid, std 0.05).
        std: per-mode standard deviation; None uses the geometry's published value.
        num_samples: points pre-drawn for the train stream (the held-out set is as large, drawn apart).
    """

    def __init__(self, *, modes: str, std: float | None = None, num_samples: int = 100_000,
                 batch_size: int = 100, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if modes not in MIXTURES:
            raise ConfigError(f"data.modes: {modes!r} is unknown; use one of {', '.join(MIXTURES)}.")
        make_means, default_std = MIXTURES[modes]
        self.modes = modes
        self.means: Tensor = make_means()
        self.std = float(default_std if std is None else std)
        if not self.std > 0:
            raise ConfigError(f"data.std: {std!r} is not positive; set data.std to a positive float or null.")
        if num_samples < 1:
            raise ConfigError(f"data.num_samples: {num_samples!r} is not positive; set data.num_samples=100000.")
        self.num_samples = num_samples
        self.shape = (2,)
        self.num_classes = len(self.means)

    @property
    def name(self) -> str:
        # The published std is part of the geometry's name; another std is another data set.
        return self.modes if self.std == MIXTURES[self.modes][1] else f"{self.modes}-std{self.std:g}"

    def _draw(self, n: int, purpose: int) -> TensorBatches:
        g = seeded_generator(self.seed, purpose)
        y = torch.randint(len(self.means), (n,), generator=g)
        x = self.means[y] + self.std * torch.randn(n, 2, generator=g)
        return TensorBatches(x, y)

    def _load(self) -> None:
        self._train = self._draw(self.num_samples, TRAIN_DRAW)
        self._heldout = self._draw(self.num_samples, HELDOUT_DRAW)
