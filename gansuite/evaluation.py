"""Evaluate a generator: the metrics of :mod:`gansuite.metrics`, with their protocol, during and after training.

:class:`Evaluator` owns everything that fixes a number — extractor, reference features,
sample count, seed, batch size — so the training callback (:class:`EvalCallback`) and
``gansuite-eval`` produce the same value for the same generator. Metric keys carry the
sample count and, for the domain classifier's feature space, a ``_clf`` tag:
``fid_10k`` (Inception) vs ``fid_clf_10k`` (classifier).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

import gansuite
from gansuite.errors import ConfigError, NonFiniteLossError
from gansuite.logging import record, run_folder
from gansuite.metrics import fidelity
from gansuite.metrics.fidelity import count_tag

MIN_SAMPLES = 4  # k = 3 nearest neighbours need 4 points

# Which way is better, per short metric name.
HIGHER_IS_BETTER = {"is", "precision", "recall", "cond_acc", "classes_covered", "stacked_modes"}
LOWER_IS_BETTER = {"fid", "kid", "class_kl", "stacked_kl"}


@dataclass
class EvalResult:
    """Metric values (``{"fid_clf_10k": 3.2, ...}``) with the protocol that produced them."""

    values: dict[str, float]
    protocol: dict[str, Any]
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "values": self.values, "protocol": self.protocol, **self.extra}

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write atomically: a temporary file renamed into place, never a half-written JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def read_json(cls, path: str | os.PathLike) -> EvalResult:
        try:
            data = json.loads(Path(path).read_text())
            return cls(values=dict(data["values"]), protocol=dict(data["protocol"]), step=data.get("step"))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{path} is not a gansuite-eval result ({type(err).__name__}); pass a JSON written by "
                              "gansuite-eval or by the training run's evaluation.") from None

    def table(self) -> str:
        width = max((len(k) for k in self.values), default=6)
        lines = [f"{'metric':<{width}}  value"]
        lines += [f"{key:<{width}}  {_fmt(value)}" for key, value in self.values.items()]
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def short_name(key: str) -> str:
    """``fid_clf_10k`` -> ``fid``; ``kid_std_10k`` -> ``kid_std``."""
    parts = key.split("_")[:-1]  # drop the count
    if parts and parts[-1] == "clf":
        parts = parts[:-1]
    return "_".join(parts)


def is_better(key: str, new: float, old: float | None) -> bool:
    if old is None or (isinstance(old, float) and math.isnan(old)):
        return not math.isnan(new)
    return new > old if short_name(key) in HIGHER_IS_BETTER else new < old


class Evaluator:
    """Generates ``num_samples`` images from fixed seeded inputs and measures them.

    Args:
        extractor: feature extractor for FID / IS / KID / precision-recall, or None.
        reference: real features from the same extractor (needed with ``extractor``).
        metrics: which of ``fid``, ``is``, ``kid``, ``prc`` to compute with ``extractor``.
        num_samples: generated images per evaluation (in every key: ``fid_10k``).
        batch_size: images generated and embedded at once; part of the protocol, since it
            decides how the seeded inputs are drawn.
        seed: seeds the generator inputs (a private RNG: training's RNG is untouched).
        classifier: a domain classifier for class coverage and conditional accuracy (its
            logits are ``extractor``'s when that is the classifier), or for Stacked MNIST modes.
        stacked: the data is Stacked MNIST: report modes and KL over its 1,000 modes.
        protocol: recorded facts about the reference and extractor (dataset, split, hashes).
    """

    def __init__(
        self,
        *,
        extractor: Callable[[Tensor], dict[str, Tensor]] | None,
        reference: fidelity.Reference | None,
        metrics: Iterable[str] = fidelity.METRICS,
        num_samples: int = 10000,
        batch_size: int = 250,
        seed: int = 0,
        classifier: torch.nn.Module | None = None,
        num_classes: int | None = None,
        stacked: bool = False,
        protocol: dict[str, Any] | None = None,
    ) -> None:
        self.metrics = tuple(metrics) if extractor is not None else ()
        unknown = sorted(set(self.metrics) - set(fidelity.METRICS))
        if unknown:
            raise ConfigError(f"eval.metrics: {unknown[0]!r} is not a metric; use some of {', '.join(fidelity.METRICS)}.")
        if not isinstance(num_samples, int) or num_samples < MIN_SAMPLES:
            raise ConfigError(f"eval.num_samples: {num_samples!r} is too small (precision/recall needs "
                              f"{MIN_SAMPLES}); set eval.num_samples=10000 or similar.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"eval.batch_size: {batch_size!r} is not a positive integer; set eval.batch_size=250.")
        if extractor is not None and reference is None:
            raise ValueError("Evaluator: an extractor needs reference features")
        self.extractor, self.reference = extractor, reference
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.classifier, self.num_classes, self.stacked = classifier, num_classes, stacked
        self.tag = "_clf" if extractor is not None and getattr(extractor, "name", "").startswith("classifier:") else ""
        self.protocol = self._protocol(protocol or {})
        # The extractor outputs kept whole for the metrics that need every row; FID needs only the
        # running moments, so FID alone keeps no features.
        self._keep = set()
        if {"kid", "prc"} & set(self.metrics):
            self._keep.add("features")
        if "is" in self.metrics or self._class_metrics():
            self._keep.add("logits")

    def _class_metrics(self) -> bool:
        """Class coverage (and conditional accuracy): the domain classifier's logits with labelled reference data."""
        return bool(self.tag) and self.reference is not None and self.reference.labels is not None

    # ------------------------------------------------------------------ names
    def key(self, name: str) -> str:
        tag = self.tag if name in {"fid", "is", "is_std", "kid", "kid_std", "precision", "recall",
                                   "classes_covered", "class_kl", "cond_acc"} else ""
        return f"{name}{tag}_{count_tag(self.num_samples)}"

    def main_key(self, name: str) -> str | None:
        """The key a short name (``fid``, ``is``, ...) is logged under; for ``eval.keep_best``.

        ``auto`` is FID when it is computed, else Stacked MNIST's KL, else nothing.
        """
        names = self._names()
        if name == "auto":
            name = next((n for n in ("fid", "stacked_kl") if n in names), None)
            if name is None:
                return None
        if name not in names:
            raise ConfigError(f"eval.keep_best: {name!r} is not computed by this evaluation (it computes "
                              f"{', '.join(names) or 'nothing'}); pick one of those or set eval.keep_best=null.")
        return self.key(name)

    def _names(self) -> list[str]:
        names = []
        for m in self.metrics:
            names += {"fid": ["fid"], "is": ["is", "is_std"], "kid": ["kid", "kid_std"],
                      "prc": ["precision", "recall"]}[m]
        if self._class_metrics():
            names += ["classes_covered", "class_kl"]
        if self.stacked:
            names += ["stacked_modes", "stacked_kl"]
        return names

    def _protocol(self, extra: dict[str, Any]) -> dict[str, Any]:
        from importlib.metadata import version

        p: dict[str, Any] = {
            "implementation": f"torch-fidelity {version('torch-fidelity')}",
            # FID's matrix square root: the same number as torch-fidelity's up to float rounding (1e-12 relative
            # with more samples than feature dimensions), so recorded but not part of comparability.
            "fid_solver": "float64 symmetric eigenvalues of F^T S1 F (S2 = F F^T) on the evaluation device",
            "gansuite_version": gansuite.__version__,
            "num_generated": self.num_samples,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "quantization": "uint8: round((x + 1) * 127.5), as an 8-bit image file stores it",
        }
        if self.extractor is not None:
            ref = self.reference
            p.update({
                "feature_extractor": self.extractor.name,
                "feature_extractor_sha256": self.extractor.weights_sha256,
                "feature_layer": self.extractor.feature_layer,
                "logits_layer": self.extractor.logits_layer,
                "resize": self.extractor.resize,
                "feature_precision": getattr(self.extractor, "precision", "exact"),
                "num_real": ref.num_samples,
                "reference": {"dataset": ref.key["dataset"], "split": ref.key["split"], "sha256": ref.sha256},
                "isc_splits": fidelity.isc_splits(self.num_samples),
                "kid_subsets": fidelity.KID_SUBSETS,
                "kid_subset_size": fidelity.kid_subset_size(self.num_samples, ref.num_samples),
                "prc_neighborhood": fidelity.PRC_NEIGHBORHOOD,
            })
        p.update(extra)
        return p

    # ------------------------------------------------------------ generation
    def inputs(self, module: L.LightningModule) -> Iterator[Any]:
        """The generator inputs, batch by batch: the same for every run with this seed and batch size."""
        rng = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.num_samples, self.batch_size):
            yield module.make_inputs(min(self.batch_size, self.num_samples - start), rng)

    @torch.no_grad()
    def evaluate(self, module: L.LightningModule, step: int | None = None, ema: bool = True,
                 rank: int = 0, world: int = 1) -> EvalResult | None:
        """Metrics of ``module``'s (EMA) generator; the global RNGs are left as they were.

        With ``world`` > 1 processes (a distributed run; every rank must call this) rank ``r``
        generates and embeds input batches ``r, r + world, ...``; rank 0 gathers them, puts them back
        in batch order and computes the metrics, so they equal one process's for the same samples.
        Ranks may hold one batch more or fewer. Only rank 0 gets the result; the others get None.
        """
        cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda):
            def embedded() -> Iterator[tuple[int, dict[str, Any]]]:
                for index, inputs in enumerate(self.inputs(module)):
                    if index % world != rank:
                        continue
                    # A generator that draws noise of its own (dropout kept on) draws it from a seed per
                    # batch: the same samples in every evaluation, on any number of ranks.
                    torch.manual_seed(self.seed * 1_000_003 + index)
                    yield index, self._embed(module.sample(inputs, ema=ema).float(), _labels_of(inputs))

            if world == 1:
                # Batch by batch into the running statistics: nothing waits on the device until the end.
                result = self._measure(item for _, item in embedded())
            else:
                batches = _gather_to_all([(index, _to_cpu(item)) for index, item in embedded()])
                if rank != 0:
                    if not all(item["finite"] for _, item in batches):
                        raise NonFiniteLossError(_NONFINITE_SAMPLES)  # every rank stops, none waits
                    return None
                batches.sort(key=lambda pair: pair[0])
                result = self._measure(item for _, item in batches)
        result.step = step
        return result

    @torch.no_grad()
    def evaluate_images(self, batches: Iterable[Tensor]) -> EvalResult:
        """Metrics of given images (floats in [-1, 1]), e.g. a folder; exactly ``num_samples`` are used."""
        return self._measure(self._embed(x) for x in _take(batches, self.num_samples))

    def to(self, device: torch.device | str) -> Evaluator:
        """Move the extractor and classifier (e.g. to the training device)."""
        for net in (self.extractor, self.classifier):
            if net is not None:
                net.to(device)
        return self

    def _embed(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Any]:
        """One batch's features, count, requested labels and whether it is finite, all left on the device.

        Nothing here waits on the device (no ``.cpu()``, no Python bool of a tensor): a non-finite batch
        is embedded like any other and :meth:`_measure` raises after the last one.
        """
        embedded: dict[str, Any] = {"n": len(x), "finite": torch.isfinite(x).all(), "labels": labels}
        if self.extractor is not None:
            embedded["features"] = self.extractor(x.to(_device_of(self.extractor)))
        if self.stacked:
            embedded["stacked"] = fidelity.quantize(x)
        return embedded

    def _measure(self, items: Iterable[dict[str, Any]]) -> EvalResult:
        """Metrics of embedded batches (in batch order); the device is read once, after the last batch."""
        moments = fidelity.FeatureMoments() if self.extractor is not None and "fid" in self.metrics else None
        kept: dict[str, list[Tensor]] = {}
        finite, stacked_parts, requested = [], [], []
        n = 0
        for item in items:
            n += item["n"]
            finite.append(torch.as_tensor(item["finite"]))
            if self.extractor is not None:
                feats = item["features"]
                if moments is not None:  # gathered batches come from the CPU: back to where one process has them
                    moments.update(feats["features"].to(_device_of(self.extractor)))
                for key in self._keep:
                    kept.setdefault(key, []).append(feats[key])
            if item["labels"] is not None:
                requested.append(item["labels"])
            if self.stacked:
                stacked_parts.append(item["stacked"])
        if finite and not bool(torch.stack([f.to(finite[0].device) for f in finite]).all()):
            raise NonFiniteLossError(_NONFINITE_SAMPLES)
        if n != self.num_samples:
            raise ConfigError(f"eval.num_samples is {self.num_samples} but only {n} images were given; "
                              f"provide at least {self.num_samples} images or lower eval.num_samples.")
        values: dict[str, float] = {}
        if self.extractor is not None:
            # One copy to the host: KID, precision/recall and IS run on the CPU, as they always did.
            feats = {key: torch.cat(parts).cpu() for key, parts in kept.items()}
            stats = moments.mean_and_cov() if moments is not None else None  # FID on the device, too
            for name, value in fidelity.compute_metrics(feats, self.reference, self.metrics, seed=self.seed,
                                                        stats=stats).items():
                values[self.key(name)] = value
            if self._class_metrics():
                from gansuite.metrics.classifier import class_coverage, conditional_accuracy

                pred = feats["logits"].argmax(dim=1)
                cov = class_coverage(pred, self.num_classes, self.reference.labels)
                values[self.key("classes_covered")] = float(cov["classes_covered"])
                values[self.key("class_kl")] = float(cov["class_kl"])
                if requested:
                    labels = torch.cat(requested).cpu()
                    values[self.key("cond_acc")] = float(conditional_accuracy(pred, labels))
        if self.stacked:
            from gansuite.metrics.classifier import stacked_mnist_modes

            images_u8 = torch.cat([part.to(_device_of(self.classifier)) for part in stacked_parts])
            x = images_u8.float().div(127.5).sub(1)
            stats = stacked_mnist_modes(self.classifier, x)
            values[self.key("stacked_modes")] = float(stats["modes"])
            values[self.key("stacked_kl")] = float(stats["kl"])
        return EvalResult(values=values, protocol=self.protocol)


_NONFINITE_SAMPLES = ("the generator produced non-finite samples during evaluation; the weights have diverged: "
                      "resume from an earlier checkpoint with a lower learning rate or model.module.grad_clip=1.0.")


def _to_cpu(item: dict[str, Any]) -> dict[str, Any]:
    """An embedded batch with plain CPU values, to travel between ranks (pickled)."""
    out = dict(item, finite=bool(item["finite"]))
    if item["labels"] is not None:
        out["labels"] = item["labels"].cpu()
    if "features" in item:
        out["features"] = {key: value.cpu() for key, value in item["features"].items()}
    if "stacked" in item:
        out["stacked"] = item["stacked"].cpu()
    return out


def _gather_to_all(items: list[Any]) -> list[Any]:
    """Every rank's list, joined (any lengths; pickled, so CPU tensors travel as they are)."""
    import torch.distributed as dist

    gathered: list[list[Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def _files_fingerprint(datamodule: Any) -> str | None:
    """Hash of an image folder's file names, sizes and modification times; None for other data."""
    root = getattr(datamodule, "root", None)
    if root is None or not hasattr(datamodule, "_files"):
        return None
    from gansuite.data import IMAGE_SUFFIXES

    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _device_of(net: torch.nn.Module) -> torch.device:
    return next(iter(net.parameters()), torch.empty(0)).device


def _labels_of(inputs: Any) -> Tensor | None:
    """Requested class labels when a conditional family's inputs are ``(z, labels)``."""
    if isinstance(inputs, (tuple, list)) and len(inputs) >= 2 and isinstance(inputs[1], Tensor):
        if not inputs[1].is_floating_point() and inputs[1].ndim == 1:
            return inputs[1]
    return None


def _take(batches: Iterable[Tensor], n: int) -> Iterator[Tensor]:
    left = n
    for x in batches:
        if left <= 0:
            return
        x = x[:left]
        left -= len(x)
        yield x


# ----------------------------------------------------------------------------- construction
def make_evaluator(
    datamodule: Any,
    *,
    extractor: str = "auto",
    metrics: Iterable[str] = fidelity.METRICS,
    num_samples: int = 10000,
    num_real: int | None = None,
    reference_split: str = "train",
    batch_size: int = 250,
    seed: int = 0,
    precision: str = "exact",
    inception_weights: str | None = None,
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
) -> Evaluator | None:
    """The evaluation a data module calls for, with its reference features ready (cached on disk).

    ``extractor="auto"`` picks the domain classifier for 1-channel labelled images (MNIST
    variants), the Stacked MNIST mode count for Stacked MNIST, Inception for other images,
    and nothing for 2D points (their mode metrics come from the scatter callback).
    ``precision`` is how the extractor computes features (``exact`` or ``tf32``, see
    :data:`gansuite.metrics.fidelity.PRECISIONS`), for the reference as for the samples.
    Fails here, before any training, when weights are needed and cannot be had.
    """
    from gansuite.data import StackedMNIST

    if extractor not in ("auto", "inception", "classifier"):
        raise ConfigError(f"eval.extractor: {extractor!r} is unknown; use auto, inception or classifier.")
    if reference_split not in ("train", "heldout"):
        raise ConfigError(f"eval.reference_split: {reference_split!r} is unknown; use train or heldout.")
    if num_real is not None and (not isinstance(num_real, int) or num_real < 2):
        raise ConfigError(f"eval.num_real: {num_real!r} is too small; set it to null (the whole split) or >= 2.")
    fidelity.check_precision(precision)
    shape = tuple(datamodule.shape)
    if len(shape) != 3:
        return None
    if getattr(datamodule, "kind", None) and extractor == "auto":
        # Image pairs: callbacks.translation_metrics measures PSNR / SSIM / L1 against the targets;
        # FID of the translations against the target domain is opt-in (eval.extractor=inception).
        return None
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
    stacked = isinstance(datamodule, StackedMNIST)
    if extractor == "auto":
        extractor = "none" if stacked else ("classifier" if shape[0] == 1 and datamodule.num_classes else "inception")

    classifier, protocol = None, {}
    if extractor == "classifier" or stacked:
        from gansuite.metrics.classifier import classifier_for

        # The offline MNIST's classifier ships with gansuite; other data trains its own on the run's device.
        found = classifier_for(datamodule, cache_dir, log=log, device=device)
        if found is None:
            raise ConfigError(f"eval.extractor=classifier needs labelled data, and {datamodule.name} has no labels; "
                              "use eval.extractor=inception.")
        classifier, info = found
        classifier = classifier.to(device).eval()
        protocol.update({"classifier_dataset": info.dataset, "classifier_heldout_accuracy": info.heldout_accuracy,
                         "classifier_sha256": info.sha256, "classifier_path": str(info.path)})

    ext = None
    if extractor == "classifier" and not stacked:
        ext = fidelity.ClassifierExtractor(classifier, dataset=info.dataset, weights_sha256=info.sha256,
                                           precision=precision).to(device)
    elif extractor == "inception":
        weights = fidelity.resolve_inception_weights(inception_weights, download=download)
        ext = fidelity.InceptionExtractor(weights, precision=precision).to(device)

    reference = None
    if ext is not None:
        split = datamodule.train_split if reference_split == "train" else datamodule.heldout
        key = {"dataset": datamodule.name, "split": reference_split, "num_samples": num_real or "all",
               "extractor": ext.name, "extractor_sha256": ext.weights_sha256, "resize": ext.resize}
        files = _files_fingerprint(datamodule)
        if files is not None:  # a folder's contents can change under the same name
            key["files"] = files
        if ext.precision != "exact":  # only then: the caches written before the option existed stay valid
            key["precision"] = ext.precision

        def compute() -> tuple[dict[str, Tensor], Tensor]:
            x, y = split(num_real)
            if len(x) < 2:
                raise ConfigError(f"eval.reference_split={reference_split} holds {len(x)} images; "
                                  "use eval.reference_split=train.")
            feats = fidelity.extract(ext, x.split(batch_size), device=device)
            return feats, y

        reference = fidelity.load_or_compute_reference(key, compute, cache_dir, log=log)
    return Evaluator(extractor=ext, reference=reference, metrics=metrics, num_samples=num_samples,
                     batch_size=batch_size, seed=seed, classifier=classifier, num_classes=datamodule.num_classes,
                     stacked=stacked, protocol=protocol)


# ----------------------------------------------------------------------------- callback
class EvalCallback(L.Callback):
    """Evaluate the EMA generator every N gansuite steps and at the end; log, record, keep the best.

    Logs ``val/<key>`` (e.g. ``val/fid_clf_10k``) and ``best/<key>`` with ``best/<key>_step``
    (so a W&B summary holds the best value), writes ``checkpoints/eval_step_XXXXXX.json`` with
    the protocol, and with ``keep_best`` saves ``checkpoints/best.ckpt`` (and ``best.json``)
    whenever that metric improves. The best values survive a resume.

    Args:
        evaluator: what to measure (see :func:`make_evaluator`).
        every_n_steps: gansuite steps between evaluations.
        keep_best: short metric name (``fid``, ``is``, ...) whose best checkpoint is kept, ``auto``
            (FID when computed, else Stacked MNIST's KL), or None.
        dirpath: where the JSON files and best.ckpt go (default: the run's checkpoints/).
    """

    def __init__(self, evaluator: Evaluator, *, every_n_steps: int = 1000, keep_best: str | None = "auto",
                 dirpath: str | os.PathLike | None = None) -> None:
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ConfigError(f"eval.every_n_steps: {every_n_steps!r} is not a positive integer; set eval.every_n_steps=1000.")
        self.evaluator = evaluator
        self.every_n_steps = every_n_steps
        self.monitor = evaluator.main_key(keep_best) if keep_best else None
        self.resumed_protocol: dict[str, Any] | None = None
        self.dirpath = dirpath
        self.best: dict[str, dict[str, float]] = {}  # key -> {"value", "step"}
        self.last: EvalResult | None = None
        self._last_step = 0
        self._last_evaluated: int | None = None

    def output_dir(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath is not None else Path(trainer.default_root_dir) / "checkpoints"

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "protocol": self.evaluator.protocol}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = dict(state_dict.get("best", {}))
        self.resumed_protocol = state_dict.get("protocol")
        if self.resumed_protocol is not None and fidelity.protocol_differences(self.resumed_protocol,
                                                                                self.evaluator.protocol):
            # Best values measured another way are not comparable with this run's.
            self.best = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = pl_module.step
        self._last_evaluated = pl_module.step  # a resumed run has its step's evaluation already
        self.evaluator.to(pl_module.device)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_hyperparams({"eval_protocol": self.evaluator.protocol})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = pl_module.step
        # The last batch is evaluated here rather than in on_train_end, so that the checkpoint
        # saved after this batch already holds the final best values.
        last = 0 < trainer.max_steps <= trainer.global_step
        crossed = step // self.every_n_steps > self._last_step // self.every_n_steps
        if (crossed or last) and step != self._last_evaluated:
            self.run(trainer, pl_module, step)
        self._last_step = step

    # No evaluation in on_train_end: a run stopped by Ctrl-C saves last.ckpt at once, and
    # `gansuite-eval` measures it later.

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> EvalResult | None:
        self._last_evaluated = step
        result, save_best = None, False
        # Every rank generates and embeds its share of the samples; rank 0 computes, logs and writes.
        measured = self.evaluator.evaluate(pl_module, step=step, rank=trainer.global_rank, world=trainer.world_size)
        if trainer.is_global_zero:
            result, save_best = self._record(trainer, measured, step)
        # Every rank joins save_checkpoint (it ends in a barrier), so every rank learns the decision.
        if trainer.world_size > 1:
            save_best = trainer.strategy.broadcast(save_best, src=0)
        if save_best:
            # A full checkpoint (optimizers and callbacks too), said explicitly: Lightning notes the default each time.
            trainer.save_checkpoint(self.output_dir(trainer) / "best.ckpt", weights_only=False)
            if result is not None:
                result.write_json(self.output_dir(trainer) / "best.json")
        return result

    def _record(self, trainer: L.Trainer, result: EvalResult, step: int) -> tuple[EvalResult, bool]:
        self.last = result
        logged = {f"val/{k}": v for k, v in result.values.items()}
        improved = []
        for key, value in result.values.items():
            if short_name(key) not in HIGHER_IS_BETTER | LOWER_IS_BETTER:
                continue  # spreads (is_std, kid_std) have no "best"
            old = self.best.get(key, {}).get("value")
            if is_better(key, value, old):
                self.best[key] = {"value": value, "step": step}
                improved.append(key)
            if key in self.best:
                logged[f"best/{key}"] = self.best[key]["value"]
                logged[f"best/{key}_step"] = self.best[key]["step"]
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=step)
        if trainer.is_global_zero:
            record(step, {k: v for k, v in logged.items() if k.startswith("val/")}, run_folder(trainer.lightning_module))
        out = self.output_dir(trainer)
        result.extra = {"best": self.best}
        result.write_json(out / f"eval_step_{step:06d}.json")
        return result, self.monitor is not None and self.monitor in improved
