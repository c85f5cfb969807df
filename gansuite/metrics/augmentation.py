"""Classification accuracy score and augmentation gain: what a classifier learns from a class-conditional generator.

**CAS** (Ravuri & Vinyals 2019, "Classification Accuracy Score for Conditional Generative Models"): a
fresh classifier is trained only on N generated images per class, each labelled with the class it was
generated for, and ``cas`` is its accuracy on the data's real held-out split. ``cas_real`` is the same
classifier, recipe and seed trained on N real training images per class instead: the ceiling.

**Augmentation gain** for k real images per class (``eval.aug_real_per_class``, default 10, 50, 100): the
held-out accuracy of the classifier trained on k real images per class plus the N generated ones
(``aug_acc_mixed_k<k>``) minus that of the classifier trained on the k real ones alone
(``aug_acc_real_k<k>``) is ``aug_gain_k<k>``. Positive: the generated images help a classifier that has
few real ones.

The classifier is the domain classifier's network (:class:`gansuite.metrics.classifier.DomainClassifier`)
and recipe (AdamW with a cosine decay, random shifts, batches of 128), trained afresh from ``seed``. Every
classifier of one evaluation trains the same number of optimizer steps: the recipe's EPOCHS passes over the
N K generated images (:func:`classifier_steps`). With the recipe's 8 *epochs* instead, 100 real digits
would get 8 steps against 250 for 4,000 generated ones, and the gain would measure the budget, not the
images. The real images are the first N (or k) of each class in the training split's fixed order
(:meth:`gansuite.data.base.GANDataModule.train_split`), so the k = 10 images are among the k = 50 ones.

Generated images are rounded to 8 bits as every other metric's samples are. The real-data accuracies
(``cas_real``, ``aug_acc_real_*``) do not depend on the generator: they are computed once per process and
cached under the evaluation cache (``cas/``), keyed by everything that fixes them.

Which class a sample has: a class-conditional family (cGAN, ACGAN, projection, SNGAN projection: inputs
``(z, labels)``) is asked for classes 0, 1, ..., K-1 in turn. InfoGAN is asked for the values of its first
categorical code in turn, and at every evaluation each value is matched one-to-one to a class: the
assignment under which the domain classifier most often reads the samples as their value's class, found
exactly by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``; scipy is installed with
scikit-learn, a gansuite dependency). The matching and the classifier's agreement with it are reported
beside the values.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gansuite.errors import ConfigError, NonFiniteLossError
from gansuite.metrics import classifier as domain
from gansuite.metrics.classifier import BATCH_SIZE, EPOCHS, DomainClassifier, predict
from gansuite.metrics.evaluator import NONFINITE_SAMPLES, labels_of
from gansuite.metrics.inception import quantize

METRICS = ("cas", "aug_gain")  # the names eval.metrics takes
AUG_REAL_PER_CLASS = (10, 50, 100)
FAMILIES = "cgan, cgan_mlp, acgan, projection, sngan_projection, or infogan with one categorical value per class"


# ----------------------------------------------------------------------------- generated images
def check_data(datamodule: Any) -> None:
    """One ConfigError sentence unless ``datamodule`` holds labelled images, which cas and aug_gain train and test on."""
    shape = tuple(getattr(datamodule, "shape", ()))
    if not getattr(datamodule, "num_classes", None) or len(shape) != 3 or getattr(datamodule, "kind", None):
        raise ConfigError(f"eval.metrics: cas and aug_gain train a classifier on labelled images, and "
                          f"{datamodule.name} holds no labelled images; remove cas and aug_gain from eval.metrics, "
                          "or pick labelled images (data=mnist_offline, mnist, cifar10).")


def label_source(module: nn.Module, num_classes: int) -> str:
    """How ``module``'s samples get a class: ``"requested"`` (its inputs carry the class: ``make_inputs`` gives
    ``(z, labels)``) or ``"code"`` (InfoGAN: its first categorical code, matched to classes); ConfigError else."""
    if hasattr(module, "make_code_inputs"):
        categorical = list(getattr(module, "categorical", ()))
        if not categorical or categorical[0] != num_classes:
            values = categorical[0] if categorical else "no"
            raise ConfigError(f"eval.metrics: cas and aug_gain read InfoGAN's first categorical code as the class, and "
                              f"it has {values} values for the data's {num_classes} classes; set "
                              f"model.categorical=[{num_classes}] or remove cas and aug_gain from eval.metrics.")
        return "code"
    try:
        labels = labels_of(module.make_inputs(num_classes, torch.Generator().manual_seed(0)))
    except (NotImplementedError, AttributeError, TypeError):
        labels = None
    if labels is None:
        raise ConfigError(f"eval.metrics: cas and aug_gain need a class-conditional model ({FAMILIES}), and "
                          f"{type(module).__name__} is not asked for a class; remove cas and aug_gain from eval.metrics "
                          "for this model.")
    return "requested"


def _rows(inputs: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of generator inputs: a tensor, or a tuple or list of them."""
    if isinstance(inputs, Tensor):
        return inputs[start:stop]
    return type(inputs)(_rows(part, start, stop) for part in inputs)


@torch.no_grad()
def generate_per_class(module: nn.Module, per_class: int, num_classes: int, *, seed: int, batch_size: int = 250,
                       ema: bool = True) -> tuple[Tensor, Tensor]:
    """``per_class`` samples of each class: uint8 images (per_class * K, C, H, W) and what each was generated for.

    The second tensor holds the class each sample was asked for (InfoGAN: the value of its first categorical
    code), 0, 1, ..., K-1, 0, 1, ... in turn, both on the CPU. The inputs are drawn at once from a private
    generator seeded with ``seed``, so they do not depend on ``batch_size``; a generator that draws noise
    of its own (dropout kept on) draws it from a seed per batch, as the Evaluator's does. The global RNGs
    are left as they were, and no batch waits on the device: the samples are read after the last one.
    """
    n = per_class * num_classes
    rng = torch.Generator().manual_seed(seed)
    if label_source(module, num_classes) == "code":
        inputs, labels = module.make_code_inputs(n, rng)
    else:
        inputs = module.make_inputs(n, rng)
        labels = labels_of(inputs)
    labels = labels.cpu().long()
    counts = torch.bincount(labels, minlength=num_classes)
    if len(counts) != num_classes or not bool((counts == per_class).all()):
        raise ValueError(f"generate_per_class: {type(module).__name__}.make_inputs({n}) asked for the classes "
                         f"{counts.tolist()} times, not {per_class} times each; it must ask for 0..K-1 in turn")
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    parts, finite = [], []
    with torch.random.fork_rng(devices=cuda):
        for index, start in enumerate(range(0, n, batch_size)):
            torch.manual_seed(seed * 1_000_003 + index)
            x = module.sample(_rows(inputs, start, start + batch_size), ema=ema)
            finite.append(torch.isfinite(x).all())
            parts.append(quantize(x))
    if not bool(torch.stack(finite).all()):
        raise NonFiniteLossError(NONFINITE_SAMPLES)
    return torch.cat(parts).cpu(), labels


def match_codes(codes: Tensor, predicted: Tensor, num_classes: int) -> tuple[Tensor, float]:
    """The one-to-one code value -> class map under which ``predicted`` classes agree most with it, and that agreement.

    With counts[v, c] the number of samples of code value v read as class c, the map maximises
    sum_v counts[v, map[v]] over all permutations (the Hungarian algorithm, exact; taking the largest count
    first can do worse). Returns ``map`` (K,) int64, so that ``map[codes]`` are the samples' classes, and
    the agreement sum_v counts[v, map[v]] / len(codes).
    """
    from scipy.optimize import linear_sum_assignment

    k = num_classes
    codes, predicted = codes.detach().cpu().long().flatten(), predicted.detach().cpu().long().flatten()
    if codes.shape != predicted.shape or len(codes) == 0:
        raise ValueError(f"match_codes: codes and predicted must be non-empty and alike, got {tuple(codes.shape)} "
                         f"and {tuple(predicted.shape)}")
    counts = torch.bincount(codes * k + predicted, minlength=k * k).view(k, k)
    rows, cols = linear_sum_assignment(counts.numpy(), maximize=True)  # rows come back as 0..K-1
    mapping = torch.empty(k, dtype=torch.long)
    mapping[torch.as_tensor(rows, dtype=torch.long)] = torch.as_tensor(cols, dtype=torch.long)
    return mapping, float(counts[torch.arange(k), mapping].sum()) / len(codes)


# ----------------------------------------------------------------------------- the classifiers
def classifier_steps(train_size: int, epochs: int = EPOCHS) -> int:
    """Optimizer steps of every classifier of an evaluation: ``epochs`` passes over ``train_size`` (N K) images."""
    return epochs * max(1, train_size // BATCH_SIZE)


def _floats(images: Tensor) -> Tensor:
    """uint8 images (0..255) or floats in [-1, 1] -> floats in [-1, 1] on the CPU."""
    images = images.cpu()
    return images.float().div(127.5).sub(1) if images.dtype == torch.uint8 else images.float()


def train_classifier(images: Tensor, labels: Tensor, *, num_classes: int, steps: int, seed: int,
                     device: torch.device | str = "cpu") -> DomainClassifier:
    """A fresh :class:`DomainClassifier` trained ``steps`` optimizer steps on (images, labels) with its recipe.

    ``images``: (N, C, H, W) uint8, or floats in [-1, 1]; ``labels``: (N,) ints in [0, ``num_classes``).
    The initialisation, batch order, shifts and dropout come from ``seed``; the global RNGs are left as
    they were. Returned in eval mode without gradients, on ``device``.
    """
    x, y = _floats(images), labels.cpu().long()
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"train_classifier: needs as many labels as images, and some (got {len(x)} and {len(y)})")
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.enable_grad():
        torch.manual_seed(seed)
        model = DomainClassifier(in_channels=x.shape[1], resolution=x.shape[2], num_classes=num_classes).to(device)
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False, deterministic=True):
            domain._train(model, x, y, epochs=0, seed=seed, device=device, steps=steps)
    return model.eval().requires_grad_(False)


def accuracy(classifier: nn.Module, images: Tensor, labels: Tensor) -> float:
    """The fraction of ``images`` (uint8, or floats in [-1, 1]) that ``classifier`` puts in their class ``labels``."""
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"accuracy: needs as many labels as images, and some (got {len(images)} and {len(labels)})")
    return float((predict(classifier, _floats(images)) == labels.cpu().long()).double().mean())


def first_per_class(labels: Tensor, k: int, num_classes: int) -> Tensor:
    """Indices of the first ``k`` samples of each class in ``labels``' order (ascending); ValueError if a class has fewer."""
    labels = labels.cpu().long()
    counts = torch.bincount(labels, minlength=num_classes)
    if bool((counts < k).any()):
        raise ValueError(f"first_per_class: every class needs {k} samples, and the smallest has {int(counts.min())}")
    order = torch.argsort(labels, stable=True)  # grouped by class, the given order kept within each
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels)) - starts[labels[order]]
    return order[rank < k].sort().values


def real_accuracies(real: tuple[Tensor, Tensor], heldout: tuple[Tensor, Tensor], *, num_classes: int,
                    per_class: int, real_per_class: Sequence[int], steps: int, seed: int,
                    device: torch.device | str = "cpu") -> dict[str, float]:
    """The real-data side: ``cas_real`` (trained on the first ``per_class`` real images of each class) and
    ``aug_acc_real_k<k>`` (the first k of each class alone), each a held-out accuracy."""
    (x, y), (x_held, y_held) = real, heldout
    values = {}
    for name, k in [("cas_real", per_class), *((f"aug_acc_real_k{k}", k) for k in real_per_class)]:
        keep = first_per_class(y, k, num_classes)
        net = train_classifier(x[keep], y[keep], num_classes=num_classes, steps=steps, seed=seed, device=device)
        values[name] = accuracy(net, x_held, y_held)
    return values


def generated_accuracies(generated: tuple[Tensor, Tensor], real: tuple[Tensor, Tensor],
                         heldout: tuple[Tensor, Tensor], *, num_classes: int, real_per_class: Sequence[int],
                         steps: int, seed: int, cas: bool = True,
                         device: torch.device | str = "cpu") -> dict[str, float]:
    """The generated side: ``cas`` (trained on ``generated`` alone; when ``cas``) and ``aug_acc_mixed_k<k>``
    (the first k real images of each class plus all of ``generated``), each a held-out accuracy."""
    (x_gen, y_gen), (x, y), (x_held, y_held) = generated, real, heldout
    x_gen, y_gen = _floats(x_gen), y_gen.cpu().long()
    values = {}
    if cas:
        net = train_classifier(x_gen, y_gen, num_classes=num_classes, steps=steps, seed=seed, device=device)
        values["cas"] = accuracy(net, x_held, y_held)
    for k in real_per_class:
        keep = first_per_class(y, k, num_classes)
        mixed_x, mixed_y = torch.cat([_floats(x[keep]), x_gen]), torch.cat([y[keep].cpu().long(), y_gen])
        net = train_classifier(mixed_x, mixed_y, num_classes=num_classes, steps=steps, seed=seed, device=device)
        values[f"aug_acc_mixed_k{k}"] = accuracy(net, x_held, y_held)
    return values


def combine(real: dict[str, float], generated: dict[str, float], real_per_class: Sequence[int]) -> dict[str, float]:
    """The reported values, in print order: cas, cas_real, then per k the real-only and mixed accuracies and
    ``aug_gain_k<k>`` = mixed - real-only."""
    values = {name: source[name] for name, source in (("cas", generated), ("cas_real", real)) if name in source}
    for k in real_per_class:
        only, mixed = real[f"aug_acc_real_k{k}"], generated[f"aug_acc_mixed_k{k}"]
        values.update({f"aug_acc_real_k{k}": only, f"aug_acc_mixed_k{k}": mixed, f"aug_gain_k{k}": mixed - only})
    return values


# ----------------------------------------------------------------------------- for the Evaluator
def _classifiers(n: int) -> str:
    return f"{n} classifier{'s' * (n != 1)}"


class AugmentationMetrics:
    """CAS and the augmentation gain of a class-conditional module on labelled image data, with their protocol.

    Args:
        datamodule: labelled images; its training split gives the real images, its held-out split the test set.
        metrics: some of :data:`METRICS` (``cas``: cas and cas_real; ``aug_gain``: the per-k values and cas_real).
        per_class: N, generated images per class (``eval.cas_per_class``); None: as many as the training
            split's smallest class holds, so the generated and the real classifier see as many images (the
            CAS paper's choice). At most that many, since ``cas_real`` trains on N real images per class.
        real_per_class: the k of the augmentation gain (``eval.aug_real_per_class``).
        seed: seeds the generator inputs and every classifier (``eval.seed``).
        batch_size: images generated at once (``eval.batch_size``).
        cache_dir: where the real-data accuracies are cached (None: the evaluation cache's default).
        device: where the classifiers train (the run's device).
        classifier, classifier_sha256: the domain classifier (and its weights' hash, for the protocol), to match
            InfoGAN's code values to classes; loaded when needed and not given.
        epochs: the recipe's passes over the N K generated images, which fix every classifier's steps.
    """

    def __init__(self, *, datamodule: Any, metrics: Iterable[str], per_class: int | None = None,
                 real_per_class: Iterable[int] = AUG_REAL_PER_CLASS, seed: int = 0, batch_size: int = 250,
                 cache_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                 classifier: nn.Module | None = None, classifier_sha256: str | None = None, epochs: int = EPOCHS,
                 log: Callable[[str], None] = print) -> None:
        self.metrics = tuple(m for m in METRICS if m in set(metrics))
        if not self.metrics:
            raise ValueError(f"AugmentationMetrics: metrics must include some of {', '.join(METRICS)}")
        check_data(datamodule)
        num_classes, shape = datamodule.num_classes, tuple(datamodule.shape)
        self.datamodule, self.num_classes, self.name = datamodule, num_classes, datamodule.name
        x, y = datamodule.train_split()
        smallest = int(torch.bincount(y.long(), minlength=num_classes).min())
        if per_class is None:
            per_class = smallest
        if not isinstance(per_class, int) or isinstance(per_class, bool) or not 1 <= per_class <= smallest:
            raise ConfigError(f"eval.cas_per_class={per_class!r}: cas_real trains on that many real training images "
                              f"per class and the smallest class of {self.name} has {smallest}; set "
                              f"eval.cas_per_class to an integer from 1 to {smallest}, or null for {smallest}.")
        ks = list(real_per_class) if "aug_gain" in self.metrics else []
        if any(not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= smallest for k in ks) \
                or len(set(ks)) != len(ks) or ("aug_gain" in self.metrics and not ks):
            raise ConfigError(f"eval.aug_real_per_class={list(real_per_class)!r} must be distinct integers from 1 to "
                              f"{smallest} (the smallest class of {self.name}); set "
                              "eval.aug_real_per_class=[10,50,100], the default.")
        self.per_class, self.real_per_class, self.seed, self.batch_size = per_class, ks, seed, batch_size
        # Only the real images some classifier trains on: the first max(N, k) of each class.
        keep = first_per_class(y, max([per_class, *ks]), num_classes)
        self.real = (x[keep], y[keep].long())
        self.heldout = datamodule.heldout()
        if len(self.heldout[0]) == 0:
            raise ConfigError(f"eval.metrics: cas and aug_gain are measured on the held-out split, and {self.name} "
                              "holds out no images; set data.heldout_size above 0.")
        self.steps = classifier_steps(per_class * num_classes, epochs)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else domain.default_cache_dir()
        self.device, self.classifier, self.classifier_sha256, self.log = torch.device(device), classifier, \
            classifier_sha256, log
        self.source: str | None = None
        self._real_values: dict[str, float] | None = None
        c, r = shape[0], shape[1]
        self.protocol: dict[str, Any] = {
            "method": "Ravuri & Vinyals 2019: held-out accuracy of a classifier trained on generated images alone "
                      "(cas), on as many real ones (cas_real), on k real per class with (aug_acc_mixed_k) and without "
                      "(aug_acc_real_k) the generated ones; aug_gain_k = mixed - real",
            "classifier": {"network": "gansuite.metrics.classifier.DomainClassifier", "in_channels": c,
                           "resolution": r, "num_classes": num_classes, "width": 32, "feature_dim": 128,
                           "version": domain.VERSION},
            "recipe": {"optimizer": "AdamW, weight decay 0", "lr": domain.LR, "schedule": "cosine to 0 over the steps",
                       "batch_size": BATCH_SIZE, "dropout": domain.DROPOUT, "shift": domain.SHIFT, "epochs": epochs,
                       "steps": self.steps, "steps_rule": "epochs x floor(N K / batch_size), the same for every "
                                                          "classifier; a set smaller than a batch is one batch"},
            "seed": seed,
            "per_class": per_class,
            "real_per_class": ks,
            "num_generated": per_class * num_classes,
            "train_split": {"dataset": self.name, "size": len(y), "smallest_class": smallest,
                            "images": "the first of each class in train_split()'s fixed order"},
            "test_split": {"dataset": self.name, "split": "heldout", "size": len(self.heldout[0])},
            "quantization": "uint8: round((x + 1) * 127.5), as an 8-bit image file stores it",
            "labels": None,  # set by prepare(), which sees the model
        }

    def to(self, device: torch.device | str) -> AugmentationMetrics:
        self.device = torch.device(device)
        if self.classifier is not None:
            self.classifier.to(self.device)
        return self

    def prepare(self, module: nn.Module) -> None:
        """Check that ``module`` is class-conditional (one ConfigError sentence if not) and record how its
        samples get their class; for InfoGAN, ready the domain classifier that matches codes to classes."""
        self.source = label_source(module, self.num_classes)
        if self.source == "requested":
            self.protocol["labels"] = "the class each sample was generated for (classes 0..K-1 in turn)"
            return
        if self.classifier is None:
            found = domain.classifier_for(self.datamodule, self.cache_dir, log=self.log, device=self.device)
            self.classifier, self.classifier_sha256 = found[0].to(self.device).eval(), found[1].sha256
        self.protocol["labels"] = ("InfoGAN's first categorical code, its values matched one-to-one to classes at "
                                   "each evaluation by the Hungarian algorithm on the domain classifier's reading "
                                   "of the same samples")
        self.protocol["labels_classifier_sha256"] = self.classifier_sha256

    def real_values(self) -> dict[str, float]:
        """``cas_real`` and ``aug_acc_real_k<k>``: computed once, then read from memory or the disk cache."""
        if self._real_values is not None:
            return self._real_values
        key, digest = domain._cache_key(
            what="cas_real", dataset=self.name, num_classes=self.num_classes, per_class=self.per_class,
            real_per_class=self.real_per_class, steps=self.steps, seed=self.seed, device=self.device.type,
            real=domain._fingerprint(*self.real), heldout=domain._fingerprint(*self.heldout))
        path = self.cache_dir / "cas" / f"{domain._safe(self.name)}-{digest}.json"
        try:
            stored = json.loads(path.read_text())
            if stored["key"] == key:
                self._real_values = {k: float(v) for k, v in stored["values"].items()}
                return self._real_values
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # absent or unreadable: measured again
        start = time.perf_counter()
        values = real_accuracies(self.real, self.heldout, num_classes=self.num_classes, per_class=self.per_class,
                                 real_per_class=self.real_per_class, steps=self.steps, seed=self.seed,
                                 device=self.device)
        self.log(f"cas: real-data accuracies of {self.name} ({_classifiers(1 + len(self.real_per_class))} of "
                 f"{self.steps} steps, {time.perf_counter() - start:.0f} s) -> {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"key": key, "values": values}, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self._real_values = values
        return values

    def measure(self, module: nn.Module, ema: bool = True) -> tuple[dict[str, float], dict[str, Any]]:
        """The values (``cas``, ``cas_real``, ``aug_*``) of ``module``'s (EMA) generator, and what to report beside
        them (InfoGAN: ``cas_code_to_class``, ``cas_code_agreement``). The global RNGs are left as they were."""
        if self.source is None:
            self.prepare(module)
        start = time.perf_counter()
        images, labels = generate_per_class(module, self.per_class, self.num_classes, seed=self.seed,
                                            batch_size=self.batch_size, ema=ema)
        extra: dict[str, Any] = {}
        if self.source == "code":
            mapping, agreement = match_codes(labels, predict(self.classifier, _floats(images), self.batch_size),
                                             self.num_classes)
            labels = mapping[labels]
            extra = {"cas_code_to_class": mapping.tolist(), "cas_code_agreement": agreement}
        real = self.real_values()
        generated = generated_accuracies((images, labels), self.real, self.heldout, num_classes=self.num_classes,
                                         real_per_class=self.real_per_class, steps=self.steps, seed=self.seed,
                                         cas="cas" in self.metrics, device=self.device)
        values = combine(real, generated, self.real_per_class)
        self.log(f"cas: {self.per_class} generated images per class, {_classifiers(len(generated))} of {self.steps} "
                 f"steps ({time.perf_counter() - start:.0f} s)")
        return values, extra
