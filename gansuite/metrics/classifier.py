"""The domain classifier for labelled image data: a small CNN trained once per data set and cached on disk.

A :class:`DomainClassifier` learns a data set's real training labels (:func:`load_or_train`), is
scored on its held-out split, and is kept under the evaluation cache, keyed by everything that
determines its weights. :func:`classifier_for` gives the classifier a data module needs (for the
offline MNIST, the one that ships with gansuite, :mod:`gansuite.metrics.shipped`) and
:func:`predict` its predicted labels. Its feature space gives FID without Inception weights
(:class:`gansuite.metrics.inception.ClassifierExtractor`); the metrics on its predictions (class
coverage, conditional accuracy, Stacked MNIST modes) are in :mod:`gansuite.metrics.classes`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Bump when the architecture or the training recipe changes: every cached classifier retrains.
VERSION = 1
EPOCHS = 8
# The training recipe, part of every cache key. Measured on the 4,000 offline MNIST training
# digits: 8 epochs reach 98.0-98.5 % held-out accuracy (seeds 0-3) in 50-70 s on one shared CPU
# core; 10 epochs, a larger shift, more dropout or a higher LR did not do better.
BATCH_SIZE = 128
LR = 2e-3  # AdamW, cosine decay to 0 over the run
DROPOUT = 0.25
SHIFT = 2  # random translations of up to this many pixels, the background filled in
EVAL_BATCH = 500
# Hash at most this many data elements per split for the cache key (a strided subset of whole samples).
_FINGERPRINT_ELEMENTS = 1 << 24


def default_cache_dir() -> Path:
    """``$GANSUITE_CACHE``, else ``~/.cache/gansuite`` (as ``paths.cache_dir`` in the config)."""
    return Path(os.environ.get("GANSUITE_CACHE", "~/.cache/gansuite")).expanduser()


class DomainClassifier(nn.Module):
    """Small CNN; input float images in [-1, 1] (the data modules' normalisation), shape (N, C, H, W).

    Three stages of 3x3 conv, batch norm, ReLU and 2x2 max-pool (``width``, 2 ``width``,
    4 ``width`` channels), then a linear layer to ``feature_dim`` features and, after ReLU and
    dropout, a linear layer to the logits. Images larger than 32 px are average-pooled to 32 px
    or less first: MNIST at 64 px is an upsampled 28-px digit, so this loses nothing and costs a
    quarter of the compute.
    """

    def __init__(self, *, in_channels: int, resolution: int, num_classes: int, width: int = 32,
                 feature_dim: int = 128):
        super().__init__()
        self.in_channels, self.resolution, self.num_classes = in_channels, resolution, num_classes
        self.width, self.feature_dim = width, feature_dim
        layers: list[nn.Module] = []
        size = resolution
        while size > 32:
            layers.append(nn.AvgPool2d(2))
            size //= 2
        channels = in_channels
        for out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(),
                       nn.MaxPool2d(2)]
            channels, size = out, size // 2
        if size < 1:
            raise ValueError(f"DomainClassifier: resolution {resolution} is too small (needs at least 8 px)")
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.embed = nn.Linear(channels * size * size, feature_dim)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(DROPOUT), nn.Linear(feature_dim, num_classes))

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Penultimate features (N, feature_dim) and logits (N, num_classes).

        The features are the penultimate layer before its ReLU: dense and roughly Gaussian, with
        no coordinate that is exactly zero for most inputs, which would make a Fréchet
        distance's covariance singular.
        """
        features = self.embed(self.body(x))
        return features, self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.features_and_logits(x)[1]

    def hparams(self) -> dict[str, int]:
        return {"in_channels": self.in_channels, "resolution": self.resolution, "num_classes": self.num_classes,
                "width": self.width, "feature_dim": self.feature_dim}


@dataclass(frozen=True)
class ClassifierInfo:
    """Which classifier a metric used: its data set, weights file and held-out accuracy."""

    dataset: str  # e.g. "mnist_offline-28px"
    path: Path  # the cached weights file
    sha256: str  # of the weights file
    heldout_accuracy: float
    num_train: int
    num_heldout: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the path as a string)."""
        return {"dataset": self.dataset, "path": str(self.path), "sha256": self.sha256,
                "heldout_accuracy": self.heldout_accuracy, "num_train": self.num_train,
                "num_heldout": self.num_heldout}


# ----------------------------------------------------------------------------- cache and training
def _fingerprint(x: Tensor, y: Tensor) -> str:
    """A cheap hash of a labelled split: all labels, and every k-th sample's bytes (k keeps it to ~16M values)."""
    x, y = x.detach().cpu().contiguous(), y.detach().cpu().long().contiguous()
    h = hashlib.sha256(repr((tuple(x.shape), str(x.dtype), tuple(y.shape))).encode())
    per_sample = max(1, x[0].numel()) if len(x) else 1
    stride = max(1, math.ceil(len(x) * per_sample / _FINGERPRINT_ELEMENTS))
    h.update(x[::stride].contiguous().numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()


def _cache_key(**parts: Any) -> tuple[dict[str, Any], str]:
    key = {"version": VERSION, "batch_size": BATCH_SIZE, "lr": LR, "dropout": DROPOUT, "shift": SHIFT, **parts}
    return key, hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _shift(x: Tensor, max_shift: int, g: torch.Generator) -> Tensor:
    """Translate each image by its own random offset in [-max_shift, max_shift]^2, filling with -1 (background)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def _train(model: DomainClassifier, x: Tensor, y: Tensor, *, epochs: int, seed: int, device: torch.device,
           steps: int | None = None) -> None:
    """The recipe: AdamW at LR with a cosine decay to 0, batches of BATCH_SIZE with random shifts, ``epochs`` passes.

    ``steps`` instead stops after that many optimizer steps, passing over ``x`` as often as it takes (the
    cosine decay spans ``steps``): classifiers trained on sets of different sizes then get the same budget
    (:mod:`gansuite.metrics.augmentation`). A set smaller than a batch is one batch, whole.
    """
    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(x) // BATCH_SIZE)  # full batches only; a partial one would upset batch norm
    total = epochs * steps_per_epoch if steps is None else steps
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    model.train()
    step = 0
    while step < total:
        order = torch.randperm(len(x), generator=g)
        for i in range(min(steps_per_epoch, total - step)):
            idx = order[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]
            xb = _shift(x[idx], SHIFT, g) if SHIFT else x[idx]
            for group in opt.param_groups:
                group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(xb.to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1


def _save(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, then rename: no reader ever sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _load(path: Path, key: dict[str, Any], model: DomainClassifier) -> float:
    """Load cached weights into ``model``; the stored held-out accuracy. Raises on any mismatch."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("key") != key:
        raise ValueError("it was written for other data or settings")
    model.load_state_dict(payload["state_dict"])
    accuracy = float(payload["heldout_accuracy"])
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"its held-out accuracy {accuracy!r} is not in [0, 1]")
    return accuracy


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "data"


def load_or_train(*, dataset: str, train: tuple[Tensor, Tensor], heldout: tuple[Tensor, Tensor],
                  cache_dir: str | os.PathLike | None, num_classes: int, seed: int = 0, epochs: int = EPOCHS,
                  width: int = 32, feature_dim: int = 128, device: torch.device | str = "cpu",
                  log: Callable[[str], None] = print) -> tuple[DomainClassifier, ClassifierInfo]:
    """The classifier for ``dataset``: loaded from ``cache_dir/classifiers`` or trained and saved there.

    Args:
        dataset: names the data in the cache file name and in :class:`ClassifierInfo` (a data
            module's ``name``, e.g. ``"mnist_offline-28px"``).
        train, heldout: real images in [-1, 1] (N, C, H, W) and their int labels; the classifier
            learns from ``train`` and is scored on ``heldout``.
        cache_dir: the evaluation cache (None: :func:`default_cache_dir`).
        seed: fixes the initialisation, batch order, augmentation and dropout, so training on
            the CPU gives the same weights every time; the caller's global RNG state is left
            as it was.
        epochs, width, feature_dim: the training length and the network's size.
        device: where to train. A classifier trained on the GPU differs in the last bits from
            one trained on the CPU (and cuDNN need not repeat itself), so the device type is
            part of the cache key.

    The cache file's name hashes everything that determines the weights: ``dataset``, image
    shape, ``num_classes``, split sizes, a fingerprint of both splits' tensors, ``seed``,
    ``epochs``, the architecture, the training recipe, the device type and :data:`VERSION`.
    A file that cannot be read or does not match is trained again (with a one-line log).
    Returns the classifier in eval mode without gradients, and its info.
    """
    (x_train, y_train), (x_held, y_held) = train, heldout
    if len(x_train) == 0 or len(x_held) == 0:
        raise ValueError(f"load_or_train: {dataset} needs training and held-out images "
                         f"(got {len(x_train)} and {len(x_held)})")
    if x_train.ndim != 4 or x_train.shape[1:] != x_held.shape[1:] or x_train.shape[2] != x_train.shape[3]:
        raise ValueError(f"load_or_train: images must be square (N, C, H, W) alike in both splits, got "
                         f"{tuple(x_train.shape)} and {tuple(x_held.shape)}")
    for y in (y_train, y_held):
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"load_or_train: labels must lie in [0, {num_classes}), got {int(y.min())}..{int(y.max())}")
    device = torch.device(device)
    c, r = x_train.shape[1], x_train.shape[2]
    hparams = {"in_channels": c, "resolution": r, "num_classes": num_classes, "width": width,
               "feature_dim": feature_dim}
    key, digest = _cache_key(
        dataset=dataset, shape=[c, r, r], num_classes=num_classes, num_train=len(x_train), num_heldout=len(x_held),
        train_fingerprint=_fingerprint(x_train, y_train), heldout_fingerprint=_fingerprint(x_held, y_held),
        seed=seed, epochs=epochs, width=width, feature_dim=feature_dim, device=device.type,
    )
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    path = cache_dir / "classifiers" / f"{_safe(dataset)}-{digest}.pt"

    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        model = DomainClassifier(**hparams)
        accuracy = None
        if path.exists():
            try:
                accuracy = _load(path, key, model)
                log(f"domain classifier: {dataset} from {path} (held-out accuracy {accuracy:.4f})")
            except Exception as err:  # noqa: BLE001 - any unreadable file is trained again
                log(f"domain classifier: {path} is unusable ({type(err).__name__}: {err}); training it again")
                torch.manual_seed(seed)
                model = DomainClassifier(**hparams)
        if accuracy is None:
            log(f"domain classifier: training on {dataset} ({len(x_train)} images, {epochs} epochs, seed {seed}, "
                f"{device.type})")
            start = time.perf_counter()
            model.to(device)
            # Deterministic cuDNN on a GPU: the ranks of a distributed run each train this classifier and
            # must end with the same weights (one feature space).
            with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False, deterministic=True):
                _train(model, x_train, y_train, epochs=epochs, seed=seed, device=device)
            model.eval()
            accuracy = float((predict(model, x_held) == y_held.cpu()).double().mean())
            model.cpu()
            _save(path, {"key": key, "hparams": hparams, "state_dict": model.state_dict(),
                         "heldout_accuracy": accuracy, "num_train": len(x_train), "num_heldout": len(x_held)})
            log(f"domain classifier: {dataset} held-out accuracy {accuracy:.4f} on {len(x_held)} images "
                f"({time.perf_counter() - start:.0f} s) -> {path}")
    info = ClassifierInfo(dataset=dataset, path=path, sha256=_file_sha256(path), heldout_accuracy=accuracy,
                          num_train=len(x_train), num_heldout=len(x_held))
    return model.eval().requires_grad_(False), info


def classifier_for(datamodule: Any, cache_dir: str | os.PathLike | None, log: Callable[[str], None] = print,
                   shipped: bool = True, **kwargs: Any) -> tuple[DomainClassifier, ClassifierInfo] | None:
    """The domain classifier for a data module, or None for data without classes (images or 2D points).

    The offline MNIST at 28, 32 or 64 px uses the classifier that ships with gansuite
    (:mod:`gansuite.metrics.shipped`; ``shipped=False`` trains one instead), the same bits on every
    machine. Other labelled images (MNIST, CIFAR10) get a classifier trained on their whole train
    split and scored on their held-out split. Stacked MNIST gets the 1-channel offline MNIST
    classifier at the same resolution, applied to each channel by
    :func:`gansuite.metrics.classes.stacked_mnist_modes`. Captioned digits, the same digits and split, get the
    offline MNIST's classifier too.
    ``kwargs`` go to :func:`load_or_train` (``seed``, ``epochs``, ``device``).
    """
    from gansuite.data.captions import CaptionedDigits
    from gansuite.data.digits import OfflineMNIST, StackedMNIST

    if isinstance(datamodule, (StackedMNIST, CaptionedDigits)):  # the offline MNIST's digits and split
        datamodule = OfflineMNIST(resolution=datamodule.resolution)
    if datamodule.num_classes is None or len(datamodule.shape) != 3:
        return None
    if shipped and not kwargs.keys() & {"seed", "epochs", "width", "feature_dim"}:
        from gansuite.metrics import shipped as shipped_classifiers

        found = shipped_classifiers.load(datamodule, log=log)
        if found is not None:
            return found
    return load_or_train(dataset=datamodule.name, train=datamodule.train_split(), heldout=datamodule.heldout(),
                         cache_dir=cache_dir, num_classes=datamodule.num_classes, log=log, **kwargs)


# ----------------------------------------------------------------------------- predictions
@torch.no_grad()
def predict(classifier: nn.Module, images: Tensor, batch_size: int = EVAL_BATCH) -> Tensor:
    """Predicted labels (N,) int64 on the CPU, in eval mode, in batches on the classifier's device."""
    device = next(iter(classifier.parameters()), torch.empty(0)).device
    was_training = classifier.training
    classifier.eval()
    try:
        parts = [classifier(x.to(device)).argmax(dim=1).cpu() for x in images.split(batch_size)]
    finally:
        classifier.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
