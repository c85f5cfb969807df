"""Evaluate a generator: the metrics of :mod:`gansuite.metrics`, with their protocol, during and after training.

:class:`Evaluator` owns everything that fixes a number — extractor, reference features,
sample count, seed, batch size — so the training callback
(:class:`gansuite.metrics.eval_callback.EvalCallback`) and ``gansuite-eval`` produce the same
value for the same generator. Metric keys carry the sample count and, for the domain
classifier's feature space, a ``_clf`` tag: ``fid_10k`` (Inception) vs ``fid_clf_10k`` (classifier).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch import Tensor

from gansuite.errors import ConfigError, NonFiniteLossError
from gansuite.metrics import fidelity
from gansuite.metrics import inception as metrics_inception
from gansuite.metrics.results import EvalResult, MetricNaming

if TYPE_CHECKING:
    from gansuite.metrics.augmentation import AugmentationMetrics

MIN_SAMPLES = 4  # k = 3 nearest neighbours need 4 points

class Evaluator(MetricNaming):
    """Generates ``num_samples`` images from fixed seeded inputs and measures them.

    Args:
        extractor: feature extractor for FID / IS / KID / precision-recall, or None.
        reference: real features from the same extractor (needed with ``extractor``).
        metrics: which of ``fid``, ``is``, ``kid``, ``prc`` to compute with ``extractor``, and of ``cas``,
            ``aug_gain`` (classifiers trained on the samples, :mod:`gansuite.metrics.augmentation`), which
            ``augmentation`` computes.
        num_samples: generated images per evaluation (in every key: ``fid_10k``).
        batch_size: images generated and embedded at once; part of the protocol, since it
            decides how the seeded inputs are drawn.
        seed: seeds the generator inputs (a private RNG: training's RNG is untouched).
        classifier: a domain classifier for class coverage and conditional accuracy (its
            logits are ``extractor``'s when that is the classifier), or for Stacked MNIST modes.
        stacked: the data is Stacked MNIST: report modes and KL over its 1,000 modes.
        protocol: recorded facts about the reference and extractor (dataset, split, hashes).
        augmentation: computes ``cas`` and ``aug_gain`` (needed when ``metrics`` names them); its protocol is
            recorded under ``cas``.
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
        augmentation: AugmentationMetrics | None = None,
    ) -> None:
        from gansuite.metrics.augmentation import METRICS as AUGMENTATION_METRICS

        metrics = tuple(metrics)
        unknown = sorted(set(metrics) - set(fidelity.METRICS) - set(AUGMENTATION_METRICS))
        if unknown:
            raise ConfigError(f"eval.metrics: {unknown[0]!r} is not a metric; use some of "
                              f"{', '.join(fidelity.METRICS + AUGMENTATION_METRICS)}.")
        if set(metrics) & set(AUGMENTATION_METRICS) and augmentation is None:
            raise ValueError("Evaluator: cas and aug_gain need augmentation=AugmentationMetrics(...)")
        self.metrics = tuple(m for m in metrics if m in fidelity.METRICS) if extractor is not None else ()
        self.augmentation = augmentation
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

    # ------------------------------------------------------------ generation
    def inputs(self, module: L.LightningModule) -> Iterator[Any]:
        """The generator inputs, batch by batch: the same for every run with this seed and batch size."""
        from gansuite.sampling import batch_inputs

        rng = torch.Generator().manual_seed(self.seed)
        for start in range(0, self.num_samples, self.batch_size):
            yield batch_inputs(module, min(self.batch_size, self.num_samples - start), rng, start)

    def prepare(self, module: L.LightningModule) -> None:
        """Check, before any training, that ``module`` can be measured as asked (``cas`` and ``aug_gain`` need a
        class-conditional model: one ConfigError sentence otherwise), and record how its classes are read."""
        if self.augmentation is not None:
            self.augmentation.prepare(module)

    @torch.no_grad()
    def evaluate(self, module: L.LightningModule, step: int | None = None, ema: bool = True,
                 rank: int = 0, world: int = 1) -> EvalResult | None:
        """Metrics of ``module``'s (EMA) generator; the global RNGs are left as they were.

        With ``world`` > 1 processes (a distributed run; every rank must call this) rank ``r``
        generates and embeds input batches ``r, r + world, ...``; rank 0 gathers them, puts them back
        in batch order and computes the metrics, so they equal one process's for the same samples.
        Ranks may hold one batch more or fewer. Only rank 0 gets the result; the others get None.
        ``cas`` and ``aug_gain`` are computed by rank 0 alone, after the others.
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
                    yield index, self._embed(module.sample(inputs, ema=ema).float(), labels_of(inputs))

            if world == 1:
                # Batch by batch into the running statistics: nothing waits on the device until the end.
                result = self._measure(item for _, item in embedded())
            else:
                batches = _gather_to_all([(index, _to_cpu(item)) for index, item in embedded()])
                if rank != 0:
                    if not all(item["finite"] for _, item in batches):
                        raise NonFiniteLossError(NONFINITE_SAMPLES)  # every rank stops, none waits
                    return None
                batches.sort(key=lambda pair: pair[0])
                result = self._measure(item for _, item in batches)
        if self.augmentation is not None:
            values, extra = self.augmentation.measure(module, ema=ema)
            result.values.update(values)
            result.extra.update(extra)
        result.step = step
        return result

    @torch.no_grad()
    def evaluate_images(self, batches: Iterable[Tensor]) -> EvalResult:
        """Metrics of given images (floats in [-1, 1]), e.g. a folder; exactly ``num_samples`` are used."""
        if self.augmentation is not None:
            raise ConfigError("eval.metrics: cas and aug_gain need the class each image was generated for, which "
                              "a folder of images does not hold; evaluate the checkpoint (gansuite-eval RUN "
                              "eval.metrics=[cas,aug_gain]) or remove them from eval.metrics.")
        return self._measure(self._embed(x) for x in _take(batches, self.num_samples))

    def to(self, device: torch.device | str) -> Evaluator:
        """Move the extractor and classifier (e.g. to the training device)."""
        for net in (self.extractor, self.classifier):
            if net is not None:
                net.to(device)
        if self.augmentation is not None:
            self.augmentation.to(device)
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
            embedded["stacked"] = metrics_inception.quantize(x)
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
            raise NonFiniteLossError(NONFINITE_SAMPLES)
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
                from gansuite.metrics.classes import class_coverage, conditional_accuracy

                pred = feats["logits"].argmax(dim=1)
                cov = class_coverage(pred, self.num_classes, self.reference.labels)
                values[self.key("classes_covered")] = float(cov["classes_covered"])
                values[self.key("class_kl")] = float(cov["class_kl"])
                if requested:
                    labels = torch.cat(requested).cpu()
                    values[self.key("cond_acc")] = float(conditional_accuracy(pred, labels))
        if self.stacked:
            from gansuite.metrics.classes import stacked_mnist_modes

            images_u8 = torch.cat([part.to(_device_of(self.classifier)) for part in stacked_parts])
            x = images_u8.float().div(127.5).sub(1)
            stats = stacked_mnist_modes(self.classifier, x)
            values[self.key("stacked_modes")] = float(stats["modes"])
            values[self.key("stacked_kl")] = float(stats["kl"])
        return EvalResult(values=values, protocol=self.protocol)


NONFINITE_SAMPLES = ("the generator produced non-finite samples during evaluation; the weights have diverged: "
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


def _device_of(net: torch.nn.Module) -> torch.device:
    return next(iter(net.parameters()), torch.empty(0)).device


def labels_of(inputs: Any) -> Tensor | None:
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
