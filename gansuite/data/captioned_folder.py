"""Captioned photographs in the layout of Reed et al.'s caption releases: ``data=captioned_folder``.

CUB-200-2011 and Oxford-102 flowers with the ten captions per image of Reed, Akata, Lee & Schiele 2016
("Learning deep representations of fine-grained visual descriptions"), as GAN-INT-CLS trains on them:

- ``<root>/text_c10/<class>/<image>.txt``: one caption per line (usually 10);
- the images under ``<root>/<images>``, found by file stem, searched recursively (CUB:
  ``images/<class>/<image>.jpg``; Oxford-102: a flat ``jpg/image_06734.jpg``);
- the class splits as text files of class folder names, one a line (``trainvalclasses.txt`` and
  ``testclasses.txt`` in those releases): training sees the training classes only, and the test classes are
  unseen, as in the paper.

Batches are ``(x, y, tokens, wrong)`` as for :mod:`gansuite.data.captions`: every (training image, caption) pair
once a pass, ``y`` the class index (training classes first, in their file's order, then the test classes),
``tokens`` the caption, ``wrong`` a caption of an image of another training class (the paper's mismatch), drawn
once with a fixed seed. What a caption is in a batch depends on the text encoder
(:mod:`gansuite.data.text_sources`): word ids of the training captions' vocabulary (words seen at least
``min_word_count`` times; ids 0 padding and 1 ``<unk>`` as in :mod:`gansuite.data.captions`), or fixed embeddings.
Images are resized on their shorter side to ``resolution`` and centre-cropped, as ``data=image_folder`` does, and
decoded once, into memory. ``heldout()`` gives the test classes' images, classes interleaved;
:meth:`CaptionedFolder.test_captions` their captions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gansuite.data.base import (
    SPLIT_SEED,
    TRAIN_SUBSET,
    GANDataModule,
    TensorBatches,
    seeded_generator,
    stratified_split,
    to_signed,
)
from gansuite.data.captions import MISMATCH_SEED, PAD, UNK, encode, words
from gansuite.data.folders import IMAGE_SUFFIXES, read_readable, read_u8
from gansuite.errors import ConfigError

TEXT = "text_c10"
LAYOUT = (f"{TEXT}/<class>/<image>.txt (one caption a line), the images under data.images, and the class lists "
          "data.train_classes and data.test_classes")


@dataclass(frozen=True)
class _Image:
    label: int  # index into train classes + test classes
    key: str  # "<class>/<stem>": how the StackGAN embeddings name it
    path: Path
    captions: tuple[str, ...]


class _Pairs(Dataset):
    """Item i is training caption i with its image: ``(x, y, tokens, wrong)``, a batch at a time."""

    def __init__(self, x: Tensor, y: Tensor, image: Tensor, table: Tensor, wrong: Tensor):
        self.x, self.y, self.image, self.table, self.wrong = x, y, image, table, wrong

    def __len__(self) -> int:
        return len(self.image)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        image = self.image[idx]
        return to_signed(self.x[image]), self.y[image], self.table[idx], self.table[self.wrong[idx]]


class CaptionedFolder(GANDataModule):
    """Captioned images in the layout of Reed et al.'s CUB and Oxford-102 caption releases (module docstring).

    Args:
        root: the release's folder (holding ``text_c10/`` and the class lists).
        images: the folder under ``root`` (or an absolute path) holding the images, searched recursively (CUB:
            ``images``, Oxford-102: ``jpg``).
        train_classes, test_classes: files (under ``root``) naming the training and the unseen test classes.
        resolution: side of the square images (the paper: 64).
        min_word_count: a training-caption word enters the vocabulary when it occurs this often.
        max_words: word ids per caption; longer captions are cut.
    """

    def __init__(self, *, root: str, images: str = "images", train_classes: str = "trainvalclasses.txt",
                 test_classes: str = "testclasses.txt", resolution: int = 64, min_word_count: int = 2,
                 max_words: int = 30, batch_size: int = 64, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        for key, value in (("resolution", resolution), ("min_word_count", min_word_count), ("max_words", max_words)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{key}: {value!r} is not a positive integer; set data.{key} to a positive "
                                  "integer (see conf/data/captioned_folder.yaml).")
        self.root, self.images = str(root), str(images)
        self.train_classes, self.test_classes = str(train_classes), str(test_classes)
        self.resolution, self.min_word_count, self.max_words = resolution, min_word_count, max_words
        self.shape = (3, resolution, resolution)
        self.text_encoder = None  # set by the build before setup (gansuite.data.text_sources)
        self._listed: tuple[list[str], list[str], list[_Image], dict[str, int]] | None = None
        self._files: list[Path] | None = None

    @property
    def name(self) -> str:
        classes = "" if (self.train_classes, self.test_classes) == ("trainvalclasses.txt", "testclasses.txt") \
            else f"-{Path(self.train_classes).stem}-{Path(self.test_classes).stem}"
        return f"captioned_folder-{Path(self.root).resolve()}-{self.resolution}px{classes}"

    @property
    def num_classes(self) -> int:
        """Training classes plus test classes (labels: the training classes first)."""
        train, test, _, _ = self._list()
        return len(train) + len(test)

    @property
    def vocab(self) -> dict[str, int]:
        """Word ids: 0 padding, 1 ``<unk>``, then the training captions' words seen at least ``min_word_count``
        times, most frequent first (ties alphabetically)."""
        return self._list()[3]

    @property
    def class_names(self) -> list[str]:
        train, test, _, _ = self._list()
        return train + test

    def check(self) -> None:
        """List the layout and read the captions (no image is decoded): every problem is one sentence."""
        self._list()

    # ------------------------------------------------------------------ listing
    def _list(self) -> tuple[list[str], list[str], list[_Image], dict[str, int]]:
        if self._listed is not None:
            return self._listed
        root = Path(self.root)
        if not root.is_dir():
            raise ConfigError(f"data.root: {root} does not exist; point data.root at a folder in the layout of Reed "
                              f"et al.'s caption releases: {LAYOUT}.")
        text = root / TEXT
        if not text.is_dir():
            raise ConfigError(f"data.root: {root} has no {TEXT}/ folder of captions; point data.root at a folder in "
                              f"the layout of Reed et al.'s caption releases: {LAYOUT}.")
        train = self._classes("data.train_classes", self.train_classes, text)
        test = self._classes("data.test_classes", self.test_classes, text)
        shared = sorted(set(train) & set(test))
        if shared:
            raise ConfigError(f"data.test_classes: {root / self.test_classes} shares {len(shared)} classes with "
                              f"data.train_classes (e.g. {shared[0]}); the test classes must be unseen in training, so "
                              "list each class in one of the two files only.")
        if len(train) < 2:
            raise ConfigError(f"data.train_classes: {root / self.train_classes} names {len(train)} class; the "
                              "mismatched captions come from other classes, so name at least two.")
        folder = root / self.images
        if not folder.is_dir():
            raise ConfigError(f"data.images: {folder} does not exist; set data.images to the folder under data.root "
                              "that holds the images (CUB: images, Oxford-102: jpg).")
        by_stem: dict[str, list[Path]] = {}
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                by_stem.setdefault(path.stem, []).append(path)
        images: list[_Image] = []
        captioned: set[Path] = set()
        for label, name in enumerate(train + test):
            files = sorted(p for p in (text / name).glob("*.txt") if p.is_file())
            if not files:
                raise ConfigError(f"data.root: {text / name} holds no caption files (<image>.txt); put the class's "
                                  f"captions there, or remove {name} from its class list.")
            for file in files:
                path = _image_of(file, name, by_stem, folder)
                lines = tuple(line.strip() for line in file.read_text(encoding="utf-8", errors="replace").splitlines()
                              if line.strip())
                if not lines:
                    raise ConfigError(f"data.root: {file} holds no caption; write the image's captions into it, one a "
                                      "line.")
                images.append(_Image(label, f"{name}/{file.stem}", path, lines))
                captioned.add(path)
        # CUB's layout puts an image in its class's folder: an image there without captions is a missing caption file.
        listed = set(train + test)
        for paths in by_stem.values():
            for path in paths:
                if path.parent.name in listed and path not in captioned:
                    raise ConfigError(f"data.root: the image {path} of the class {path.parent.name} has no captions "
                                      f"({text / path.parent.name / (path.stem + '.txt')}); add its caption file, or "
                                      "remove the image.")
        counts = Counter(w for im in images if im.label < len(train) for line in im.captions for w in words(line))
        kept = sorted((w for w, c in counts.items() if c >= self.min_word_count), key=lambda w: (-counts[w], w))
        vocab = {"<pad>": PAD, "<unk>": UNK, **{w: i + 2 for i, w in enumerate(kept)}}
        self._listed = (train, test, images, vocab)
        self._files = [im.path for im in images]  # the evaluation's reference cache is keyed by the files under root
        return self._listed

    def _classes(self, key: str, name: str, text: Path) -> list[str]:
        path = Path(self.root) / name
        if not path.is_file():
            raise ConfigError(f"{key}: {path} does not exist; write the class folder names of {TEXT}/ into it, one a "
                              f"line, or set {key} to such a file under data.root.")
        classes = list(dict.fromkeys(line.strip() for line in path.read_text().splitlines() if line.strip()))
        if not classes:
            raise ConfigError(f"{key}: {path} names no class; write the class folder names of {TEXT}/ into it, one "
                              "a line.")
        missing = [c for c in classes if not (text / c).is_dir()]
        if missing:
            raise ConfigError(f"{key}: {path} names {missing[0]}, which has no folder {text / missing[0]}"
                              f"{f' ({len(missing)} such classes)' if len(missing) > 1 else ''}; fix the class list, "
                              "or point data.root at the release it belongs to.")
        return classes

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        train_classes, _, listed, vocab = self._list()
        size = self.resolution

        def read(image: _Image) -> tuple[_Image, Tensor]:
            return image, _square(read_u8(image.path, 3, key="data.images"), size)

        decoded = read_readable(listed, read, "data.images")  # an unreadable image is skipped with its captions
        images = [im for im, _ in decoded]
        x = torch.stack([t for _, t in decoded]) if decoded else torch.empty(0, *self.shape, dtype=torch.uint8)
        y = torch.tensor([im.label for im in images], dtype=torch.long)
        is_train = y < len(train_classes)
        if not is_train.any() or is_train.all():
            side = "training" if not is_train.any() else "test"
            raise ConfigError(f"data.images: none of the {side} classes' images could be read; point data.images at "
                              "the release's images.")
        # Every caption once: training images' first (class by class, as listed), then the test images'.
        order = torch.cat([torch.nonzero(is_train).flatten(), torch.nonzero(~is_train).flatten()])
        texts, keys, owner = [], [], []
        for i in order.tolist():
            for j, line in enumerate(images[i].captions):
                texts.append(line)
                keys.append((images[i].key, j))
                owner.append(i)
        owner_t = torch.tensor(owner, dtype=torch.long)
        if getattr(self.text_encoder, "fixed", False):
            table = self.text_encoder.embeddings(texts, keys, data=f"data={self.name}")
        else:
            table = encode(texts, vocab, self.max_words)
        n_train = int(is_train[owner_t].sum())  # the training images' captions come first
        wrong = _mismatches(y[owner_t[:n_train]])
        self._table, self._texts, self._owner, self._n_train = table, texts, owner_t, n_train
        self._line = torch.tensor([j for _, j in keys], dtype=torch.long)
        self._train = _Pairs(x, y, owner_t[:n_train], table[:n_train], wrong)
        train_index = torch.nonzero(is_train).flatten()
        test_index = torch.nonzero(~is_train).flatten()
        self._train_images = TensorBatches(x[train_index], y[train_index], to_signed)
        # Classes interleaved, so that heldout(n) shows many of them.
        test_index = test_index[stratified_split(y[test_index], len(test_index))[1]]
        self._heldout = TensorBatches(x[test_index], y[test_index], to_signed)

    def train_split(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        """Up to ``n`` training images ``(x, y)``, one per image (not per caption), as every data module gives."""
        self.setup()
        order = torch.randperm(len(self._train_images), generator=seeded_generator(SPLIT_SEED, TRAIN_SUBSET))
        k = len(order) if n is None else min(n, len(order))
        return self._take(self._train_images, order[:k].tolist())

    def test_captions(self, heldout_phrasings: bool = False) -> dict[str, Tensor | list[str]]:
        """Every caption of the test classes' images, spread over the classes (the first caption of every class's
        first image, then of its second image, ...; then the second captions), so that any prefix shows many
        classes: ``tokens`` (word ids, or fixed embeddings), ``digit`` (the class index), ``texts``.

        There are no held-out phrasings here: ``heldout_phrasings=True`` is refused.
        """
        if heldout_phrasings:
            raise ConfigError(f"data={self.name} has no held-out phrasings (its captions are people's, not "
                              "templates); ask for test_captions(heldout_phrasings=False).")
        self.setup()
        rows = torch.arange(self._n_train, len(self._texts))
        owner, line = self._owner[rows], self._line[rows]
        label = self._train.y[owner]
        # Rank within the class by (caption number, image), then interleave the classes by that rank.
        image_rank = torch.zeros_like(rows)
        for c in label.unique().tolist():
            members = torch.nonzero(label == c).flatten()
            _, image_rank[members] = torch.unique(owner[members], return_inverse=True)
        key = ((line * (int(image_rank.max()) + 1) + image_rank) * (int(label.max()) + 1)) + label
        order = torch.argsort(key, stable=True)
        chosen = rows[order]
        return {"tokens": self._table[chosen], "digit": label[order], "texts": [self._texts[i] for i in chosen.tolist()]}


def _square(image: Tensor, size: int) -> Tensor:
    """(C, H, W) uint8 resized so its shorter side is ``size`` (bilinear, antialiased), then centre-cropped."""
    from torchvision.transforms import functional as TF

    if min(image.shape[-2:]) != size:
        image = TF.resize(image, size, antialias=True)
    return TF.center_crop(image, [size, size]).contiguous()


def _image_of(file: Path, name: str, by_stem: dict[str, list[Path]], folder: Path) -> Path:
    """The image a caption file describes: the one of its stem under ``folder`` (in its class's folder, if several)."""
    candidates = by_stem.get(file.stem, [])
    if len(candidates) > 1:
        candidates = [p for p in candidates if p.parent.name == name] or candidates
    if not candidates:
        raise ConfigError(f"data.images: no image named {file.stem} under {folder} for the captions {file}; put the "
                          "image there, or remove its caption file.")
    if len(candidates) > 1:
        raise ConfigError(f"data.images: {len(candidates)} images under {folder} are named {file.stem} "
                          f"({candidates[0]}, {candidates[1]}), so the captions {file} fit either; keep one.")
    return candidates[0]


def _mismatches(y: Tensor) -> Tensor:
    """For each training caption (of class ``y[i]``, captions grouped by class), the row of a caption of another
    class, uniform over those captions and drawn once with :data:`~gansuite.data.captions.MISMATCH_SEED`."""
    classes, counts = torch.unique_consecutive(y, return_counts=True)
    if len(classes) < 2:
        raise ConfigError("data.images: the images of only one training class could be read, and the mismatched "
                          "captions come from other classes; point data.images at the release's images.")
    starts = torch.cumsum(counts, 0) - counts
    group = torch.repeat_interleave(torch.arange(len(classes)), counts)
    g = torch.Generator().manual_seed(MISMATCH_SEED)
    others = len(y) - counts[group]
    k = (torch.rand(len(y), generator=g, dtype=torch.float64) * others).long().clamp_max(others - 1)
    return k + (k >= starts[group]).long() * counts[group]
