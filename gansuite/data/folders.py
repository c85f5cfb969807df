"""Images from folders on disk: ``data=image_folder``, and the file reading the other folder modules share.

A file that cannot be decoded is skipped with one warning naming it, so one bad file never stops a run.
"""

from __future__ import annotations

import itertools
import struct
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from gansuite.data.base import SPLIT_SEED, GANDataModule, seeded_generator, to_signed
from gansuite.errors import ConfigError

IMAGE_SUFFIXES = {".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}
# What PIL raises for a file that is not an image or is cut short (UnidentifiedImageError and "image file is
# truncated" are OSErrors; some decoders raise SyntaxError, ValueError, EOFError or struct.error).
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, struct.error)


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
        root = existing_folder(self.root, "data.root")
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
        order = torch.randperm(len(self._files), generator=seeded_generator(SPLIT_SEED)).tolist()
        shuffled = [self._files[i] for i in order]
        held, train = shuffled[: self.heldout_size], shuffled[self.heldout_size:]
        self._train = _ImageFiles(train, transform, mode)
        self._heldout = _ImageFiles(held, transform, mode) if held else self._train
        self._train.first_readable("training")
        if held:
            self._heldout.first_readable("held-out")


def existing_folder(root: str, key: str, what: str = "images") -> Path:
    """``root`` as a path, or one sentence naming ``key`` when it is not a folder."""
    path = Path(root)
    if not path.is_dir():
        raise ConfigError(f"{key}: {root} does not exist; point {key} at a folder of {what}.")
    return path


def load_folder(root: str, key: str, channels: int) -> list[Path]:
    path = existing_folder(root, key)
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


def read_resized(path: Path, size: tuple[int, int], channels: int) -> Tensor:
    return resize_tensor(read_u8(path, channels), size)


def resize_tensor(img: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(img.shape[-2:]) != size:
        img = F.interpolate(img[None].float(), size=size, mode="bicubic", antialias=True,
                            align_corners=False).clamp(0, 255)[0]
    return to_signed(img)
