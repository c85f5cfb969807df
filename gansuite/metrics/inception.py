"""Feature extractors for FID, IS, KID and precision/recall: torch-fidelity's Inception-v3 or a classifier.

Also where the Inception weights come from (``eval.inception_weights``, torch hub's cache, or a download
that fails in one sentence) and how exactly features are computed (``eval.precision``: exact or tf32).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from gansuite.errors import ConfigError

INCEPTION = "inception-v3-compat"
# The one file the Inception extractor needs; torch-fidelity downloads it into torch hub's cache.
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]
# How features are computed: "exact" (full float32) or "tf32" (TF32 in cuDNN convolutions, as torch-fidelity
# on Ampere+ GPUs with torch's defaults; faster, and not bit-comparable with "exact").
PRECISIONS = ("exact", "tf32")
DOWNLOAD_TIMEOUT_S = 60


class MissingWeightsError(ConfigError):
    """Feature-extractor weights are needed and cannot be had (no file, no cache, no download)."""


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"eval.precision: {precision!r} is unknown; use {' or '.join(PRECISIONS)}.")
    return precision


def quantize(x: Tensor) -> Tensor:
    """Floats in [-1, 1] to uint8 in [0, 255] with torchvision's ``save_image`` arithmetic.

    So the samples of a checkpoint and the same samples saved as PNGs (which is how a folder
    of samples is usually written) quantize to the same bytes.
    """
    return ((x.detach().float() + 1) / 2).clamp(0, 1).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- extractors
class FeatureExtractor(Protocol):
    """Maps images (floats in [-1, 1], N×C×H×W) to ``{"features": N×D, "logits": N×K}``."""

    name: str
    weights_sha256: str
    resize: str
    feature_layer: str
    logits_layer: str
    precision: str

    def __call__(self, images: Tensor) -> dict[str, Tensor]: ...


def inception_cache_path() -> Path:
    """Where torch-fidelity (through torch.hub) looks for the Inception weights: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def fetch_inception_weights(dest: Path | None = None, progress: bool = True) -> Path:
    """Download the Inception weights into ``dest`` (default: torch hub's cache); return the file."""
    dest = Path(dest) if dest is not None else inception_cache_path()
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    try:
        # A node whose traffic is silently dropped fails after this long instead of hanging.
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        # Writes to a temporary file and renames it, so an interrupted download leaves nothing behind.
        torch.hub.download_url_to_file(INCEPTION_URL, str(dest), progress=progress)
    except Exception as err:
        raise MissingWeightsError(
            f"eval: could not download the Inception weights from {INCEPTION_URL} ({type(err).__name__}); "
            f"run `gansuite-fetch-weights` on a machine with network and copy {dest.name} to {dest.parent}, "
            "or pass eval.inception_weights=/path/to/it."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return dest


def resolve_inception_weights(weights: str | os.PathLike | None, *, download: bool) -> Path:
    """The Inception weights file: ``weights`` if given, else torch hub's cache, else a download if allowed."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingWeightsError(
                f"eval.inception_weights: {path} does not exist; pass the path of {INCEPTION_FILE} "
                "(`gansuite-fetch-weights --dest DIR` downloads it on a machine with network)."
            )
        return path
    cached = inception_cache_path()
    if cached.is_file():
        return cached
    if not download:
        raise MissingWeightsError(
            f"eval: the Inception weights are not in {cached.parent} and eval.download=false; run "
            "`gansuite-fetch-weights` on a machine with network (it fills that cache), "
            f"or pass eval.inception_weights=/path/to/{INCEPTION_FILE}."
        )
    return fetch_inception_weights(cached)


class InceptionExtractor(nn.Module):
    """torch-fidelity's Inception-v3 (the TF-compatible port): 2048-d pool features and 1008 logits.

    Args:
        weights: the weights file (see :func:`resolve_inception_weights`).
        precision: ``exact`` (full float32) or ``tf32`` (see :data:`PRECISIONS`).
    """

    name = INCEPTION
    resize = "torch-fidelity TF1-compatible bilinear resize of uint8 images to 299x299"
    feature_layer = "2048"
    logits_layer = "logits_unbiased"

    def __init__(self, weights: str | os.PathLike, *, precision: str = "exact") -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.precision = check_precision(precision)
        self.weights_sha256 = file_sha256(weights)
        try:
            # torch-fidelity unpickles the file with weights_only=False, and the path may come from a checkpoint
            # someone else wrote: load it safely first, so a file that is more than tensors never reaches that.
            torch.load(weights, map_location="cpu", weights_only=True)
            self.net = FeatureExtractorInceptionV3(
                INCEPTION, [self.feature_layer, self.logits_layer], feature_extractor_weights_path=str(weights)
            )
        except Exception as err:
            raise MissingWeightsError(
                f"eval.inception_weights: {weights} is not a weights file for torch-fidelity's Inception-v3 "
                f"({type(err).__name__}); pass {INCEPTION_FILE} as fetched by `gansuite-fetch-weights`."
            ) from None

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = quantize(images)
        if x.shape[1] == 1:  # grayscale: the same plane in R, G and B
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ConfigError(f"eval: Inception takes 1- or 3-channel images, not {x.shape[1]}; use eval.extractor=classifier.")
        with extraction_precision(self.precision):
            features, logits = self.net(x)
        return {"features": features.float(), "logits": logits.float()}


class ClassifierExtractor(nn.Module):
    """A domain classifier's penultimate features and logits, at the data's own resolution.

    Args:
        classifier: a trained :class:`gansuite.metrics.classifier.DomainClassifier`.
        dataset: what it was trained on (its cache name), part of the extractor's name.
        weights_sha256: hash of its cached weights file.
        precision: ``exact`` (full float32) or ``tf32`` (see :data:`PRECISIONS`).
    """

    resize = "none (native resolution)"
    feature_layer = "penultimate"
    logits_layer = "logits"

    def __init__(self, classifier: nn.Module, *, dataset: str, weights_sha256: str, precision: str = "exact") -> None:
        super().__init__()
        self.classifier = classifier.eval()
        self.name = f"classifier:{dataset}"
        self.weights_sha256 = weights_sha256
        self.precision = check_precision(precision)

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = quantize(images).float() / 127.5 - 1  # the same 8-bit values a saved image would give
        with extraction_precision(self.precision):
            features, logits = self.classifier.features_and_logits(x)
        return {"features": features.float(), "logits": logits.float()}


@contextmanager
def extraction_precision(precision: str = "exact"):
    """cuDNN and matmul settings while extracting features; the previous ones are restored after.

    ``exact``: no TF32 anywhere, so the card changes nothing beyond float rounding, and only deterministic
    cuDNN algorithms. ``tf32``: TF32 in cuDNN convolutions only, which is what torch-fidelity runs with on
    Ampere+ GPUs under torch's defaults. Both autotune cuDNN (the extractor sees one input shape over and
    over); the algorithm it picks changes the features only by float rounding.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    # Plain assignments rather than cudnn.flags(), which would also reset `benchmark` to False.
    previous = (cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic, matmul.allow_tf32)
    exact = check_precision(precision) == "exact"
    # exact: autotuning among deterministic algorithms only. The same algorithm gives the same features every
    # time; another process may pick another one, which changes them by float rounding only.
    cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic, matmul.allow_tf32 = not exact, True, exact, False
    try:
        yield
    finally:
        cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic, matmul.allow_tf32 = previous


def extract(extractor: Callable[[Tensor], dict[str, Tensor]], batches, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Run ``extractor`` over an iterable of image batches; concatenated features and logits on the CPU."""
    parts: dict[str, list[Tensor]] = {}
    for images in batches:
        for key, value in extractor(images.to(device)).items():
            parts.setdefault(key, []).append(value)  # on the device: one copy at the end, not one sync per batch
    if not parts:
        raise ValueError("extract: no images")
    return {key: torch.cat(values).cpu() for key, values in parts.items()}
