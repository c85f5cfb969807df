"""Data sets that torchvision downloads: ``data=mnist`` / ``data=cifar10``, held in memory as uint8.

The train split is trained on and the test split held out. A data set missing from ``data.root`` with
``data.download=false``, or a failed download, is one sentence naming the key to fix.
"""

from __future__ import annotations

from functools import partial

import torch
from torch.utils.data import Dataset

from gansuite.data.base import GANDataModule, TensorBatches, check_resolution, to_signed
from gansuite.errors import ConfigError


class _TorchvisionData(GANDataModule):
    """A torchvision dataset held in memory as uint8: train split for training, test split held out."""

    _dataset: str  # the class name in torchvision.datasets

    @property
    def name(self) -> str:
        return f"{self._dataset.lower()}-{self.resolution}px"

    def __init__(self, *, root: str, download: bool, resolution: int, batch_size: int, seed: int,
                 num_workers: int):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.root, self.download, self.resolution = str(root), bool(download), resolution
        self._opened: dict[bool, Dataset] = {}

    def _open(self, train: bool) -> Dataset:
        from torchvision import datasets

        if train in self._opened:
            return self._opened[train]
        cls = getattr(datasets, self._dataset)
        try:
            ds = cls(self.root, train=train, download=False)
        except RuntimeError as e:  # torchvision's "Dataset not found"
            if not self.download:
                raise ConfigError(
                    f"data.root: no {self._dataset} under {self.root}; set data.download=true "
                    "or point data.root at a folder that has it."
                ) from e
            try:
                ds = cls(self.root, train=train, download=True)
            except (OSError, RuntimeError) as e:  # URLError is an OSError; MNIST wraps it in RuntimeError
                raise ConfigError(
                    f"data.download: downloading {self._dataset} into {self.root} failed ({e}); "
                    "check the network or point data.root at a folder that already has it."
                ) from e
        self._opened[train] = ds
        return ds

    def check(self) -> None:
        self._open(train=True)
        self._open(train=False)

    def _as_batches(self, train: bool) -> TensorBatches:
        ds = self._opened.pop(train)
        x = torch.as_tensor(ds.data)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
        return TensorBatches(x, torch.as_tensor(ds.targets, dtype=torch.long),
                             partial(to_signed, resolution=self.resolution))

    def _load(self) -> None:
        self._train, self._heldout = self._as_batches(True), self._as_batches(False)


class MNIST(_TorchvisionData):
    """torchvision MNIST (60k train, 10k held out) at 28, 32 or 64 pixels."""

    _dataset = "MNIST"

    def __init__(self, *, root: str, download: bool = True, resolution: int = 28, batch_size: int = 64,
                 seed: int = 0, num_workers: int = 2):
        check_resolution(resolution, (28, 32, 64))
        super().__init__(root=root, download=download, resolution=resolution, batch_size=batch_size,
                         seed=seed, num_workers=num_workers)
        self.shape, self.num_classes = (1, resolution, resolution), 10


class CIFAR10(_TorchvisionData):
    """torchvision CIFAR-10 (50k train, 10k held out), 3 x 32 x 32."""

    _dataset = "CIFAR10"

    def __init__(self, *, root: str, download: bool = True, batch_size: int = 64, seed: int = 0,
                 num_workers: int = 2):
        super().__init__(root=root, download=download, resolution=32, batch_size=batch_size,
                         seed=seed, num_workers=num_workers)
        self.shape, self.num_classes = (3, 32, 32), 10
