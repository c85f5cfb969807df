"""Evaluation during training (``eval=default``): the evaluator a data set calls for, and its callback.

:func:`make_evaluator` picks the feature space from the data and readies the cached reference features
(``gansuite-eval`` builds its evaluator the same way); :class:`EvalCallback` measures every N gansuite
steps, logs ``val/`` and ``best/`` values and keeps ``checkpoints/best.ckpt``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from gansuite.errors import ConfigError
from gansuite.history import record, run_folder
from gansuite.metrics import fidelity
from gansuite.metrics import inception as metrics_inception
from gansuite.metrics.augmentation import AUG_REAL_PER_CLASS, AugmentationMetrics, check_data
from gansuite.metrics.augmentation import METRICS as AUGMENTATION_METRICS
from gansuite.metrics.evaluator import Evaluator
from gansuite.metrics.results import HIGHER_IS_BETTER, LOWER_IS_BETTER, EvalResult, is_better, short_name


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
    cas_per_class: int | None = None,
    aug_real_per_class: Iterable[int] = AUG_REAL_PER_CLASS,
) -> Evaluator | None:
    """The evaluation a data module calls for, with its reference features ready (cached on disk).

    ``extractor="auto"`` picks the domain classifier for 1-channel labelled images (MNIST
    variants), the Stacked MNIST mode count for Stacked MNIST, Inception for other images,
    and nothing for 2D points (their mode metrics come from the scatter callback).
    ``precision`` is how the extractor computes features (``exact`` or ``tf32``, see
    :data:`gansuite.metrics.inception.PRECISIONS`), for the reference as for the samples.
    ``cas`` and ``aug_gain`` in ``metrics`` train classifiers on ``cas_per_class`` samples per class
    (:mod:`gansuite.metrics.augmentation`); they need labelled images, else one ConfigError sentence.
    Fails here, before any training, when weights are needed and cannot be had.
    """
    from gansuite.data.digits import StackedMNIST

    if extractor not in ("auto", "inception", "classifier"):
        raise ConfigError(f"eval.extractor: {extractor!r} is unknown; use auto, inception or classifier.")
    if reference_split not in ("train", "heldout"):
        raise ConfigError(f"eval.reference_split: {reference_split!r} is unknown; use train or heldout.")
    if num_real is not None and (not isinstance(num_real, int) or num_real < 2):
        raise ConfigError(f"eval.num_real: {num_real!r} is too small; set it to null (the whole split) or >= 2.")
    metrics_inception.check_precision(precision)
    metrics = list(metrics)
    augmented = [m for m in metrics if m in AUGMENTATION_METRICS]
    shape = tuple(datamodule.shape)
    if augmented:
        check_data(datamodule)  # before 2D points and image pairs are let off below
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
        ext = metrics_inception.ClassifierExtractor(classifier, dataset=info.dataset, weights_sha256=info.sha256,
                                           precision=precision).to(device)
    elif extractor == "inception":
        weights = metrics_inception.resolve_inception_weights(inception_weights, download=download)
        ext = metrics_inception.InceptionExtractor(weights, precision=precision).to(device)

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
            feats = metrics_inception.extract(ext, x.split(batch_size), device=device)
            return feats, y

        reference = fidelity.load_or_compute_reference(key, compute, cache_dir, log=log)
    augmentation = None
    if augmented:
        augmentation = AugmentationMetrics(
            datamodule=datamodule, metrics=augmented, per_class=cas_per_class, real_per_class=aug_real_per_class,
            seed=seed, batch_size=batch_size, cache_dir=cache_dir, device=device, log=log,
            classifier=classifier if classifier is not None and not stacked else None,
            classifier_sha256=protocol.get("classifier_sha256"))
    return Evaluator(extractor=ext, reference=reference, metrics=metrics, num_samples=num_samples,
                     batch_size=batch_size, seed=seed, classifier=classifier, num_classes=datamodule.num_classes,
                     stacked=stacked, protocol=protocol, augmentation=augmentation)


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
        result.extra = {**result.extra, "best": self.best}
        result.write_json(out / f"eval_step_{step:06d}.json")
        return result, self.monitor is not None and self.monitor in improved


def _files_fingerprint(datamodule: Any) -> str | None:
    """Hash of an image folder's file names, sizes and modification times; None for other data."""
    root = getattr(datamodule, "root", None)
    if root is None or not hasattr(datamodule, "_files"):
        return None
    from gansuite.data.folders import IMAGE_SUFFIXES

    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
