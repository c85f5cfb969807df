"""Callbacks for image-to-image models: input | output | target grids, and held-out measurements.

``callbacks.translation_grid`` and ``callbacks.translation_metrics``. Paired models (pix2pix, SR) are
measured with PSNR, SSIM and L1 beside a baseline; unpaired ones (CycleGAN) with the cycle error and,
with ``classify``, whether a translation keeps the digit. Both stay silent for other families.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from gansuite.data.base import denormalize
from gansuite.history import record as history
from gansuite.history import run_folder
from gansuite.training.callbacks import EveryNSteps, PeriodicSamples, private_rng, write_json


class TranslationGrid(PeriodicSamples):
    """Save rows of input | output | target for an image-to-image model as ``samples/pairs_step_XXXXXX.png``.

    The inputs are fixed held-out examples (``make_inputs`` of a paired or unpaired family,
    which returns ``(source, target)``). Sources smaller than the output (super-resolution) are
    enlarged with nearest-neighbour so their pixels stay visible; grey sources beside colour
    outputs are repeated to three channels. For unpaired data the third column is an unrelated
    image of the target domain, shown for its style. Silent for other families.

    Args: as for :class:`gansuite.training.callbacks.SampleGrid`; ``num_samples`` is the number of rows.
    """

    config_key = "translation_grid"
    default_num_samples = 8
    file_prefix = "pairs_"
    _probe_inputs: Any = None

    def _accepts(self, samples: torch.Tensor) -> bool:
        module_inputs = self._probe_inputs
        return samples.ndim == 4 and isinstance(module_inputs, tuple) and len(module_inputs) == 2 \
            and module_inputs[1].is_floating_point() and module_inputs[0].ndim == 4

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        if self._applies is None:
            self._probe_inputs = pl_module.make_inputs(1, torch.Generator().manual_seed(self.seed))
        super()._snapshot(trainer, pl_module, step)

    def _render(self, samples: torch.Tensor, path: Path, trainer: L.Trainer, step: int) -> None:
        from gansuite.outputs import save_png

        source, target = (t.detach().float().cpu() for t in self._inputs)
        columns = [to_canvas(source, samples), samples, to_canvas(target, samples)]
        rows = torch.stack(columns, dim=1).flatten(0, 1)
        save_png(denormalize(rows), path, nrow=3, padding=2, pad_value=1.0)


def to_canvas(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` resized (nearest) and channel-matched to ``like``'s (C, H, W), to sit beside it in a grid."""
    if tuple(x.shape[-2:]) != tuple(like.shape[-2:]):
        x = torch.nn.functional.interpolate(x, size=like.shape[-2:], mode="nearest")
    if x.shape[1] != like.shape[1]:
        x = x.mean(dim=1, keepdim=True).expand(-1, like.shape[1], -1, -1)
    return x


class TranslationMetrics(EveryNSteps):
    """Held-out PSNR, SSIM and L1 of a paired model's outputs, beside a baseline's, every N steps and at the end.

    Measures every pair of ``trainer.datamodule.heldout_pairs()`` (for SR from photos: whole
    held-out images) with :mod:`gansuite.metrics.paired`: PSNR and SSIM on Y (grey images as they
    are), ``border`` pixels cropped. The baseline is bicubic upsampling when the source is smaller
    than the target (super-resolution; then the border is the scale, as in the SR papers) and the
    source itself when both have one shape (pix2pix's "return the input"). Logs ``val/psnr``,
    ``val/ssim``, ``val/l1`` and ``val/baseline_psnr`` ... and writes them with their protocol to
    ``<run>/eval/translation_step_XXXXXX.json``. Silent for data without held-out pairs or
    of kind other than paired.

    Args:
        every_n_steps: gansuite steps between measurements.
        ema: measure the EMA generator when the module keeps one.
        seed: seeds any noise G draws at test time (pix2pix's dropout), so a measurement repeats.
    """

    config_key = "translation_metrics"

    def __init__(self, *, every_n_steps: int = 500, ema: bool = True, seed: int = 0, classify: bool = False,
                 cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__(every_n_steps=every_n_steps)
        self.ema, self.seed = ema, seed
        self.classify, self.cache_dir = classify, cache_dir
        self._classifier = None
        self.last: dict[str, Any] | None = None

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        self._last_saved = step
        datamodule = getattr(trainer, "datamodule", None)
        kind = getattr(datamodule, "kind", None)
        if not trainer.is_global_zero:
            return
        if kind == "paired":
            record = measure_pairs(pl_module, datamodule.heldout_pairs(), ema=self.ema, seed=self.seed)
        elif kind == "unpaired" and hasattr(pl_module, "translate"):
            record = measure_cycle(pl_module, datamodule, self._domain_classifier(datamodule), ema=self.ema)
        else:
            return
        record.update(step=step, data=datamodule.name, ema=bool(self.ema and pl_module.generator_ema is not None))
        self.last = record
        for logger in trainer.loggers:
            logger.log_metrics({f"val/{k}": v for k, v in record["values"].items()}, step=step)
        history(step, {f"val/{k}": v for k, v in record["values"].items()}, run_folder(pl_module))
        write_json(Path(trainer.default_root_dir) / "eval" / f"translation_step_{step:06d}.json", record)


    def _domain_classifier(self, datamodule: Any):
        """With ``classify``: the domain classifier of domain B, trained once and cached (None without labels)."""
        if not self.classify or not hasattr(datamodule, "domain_b_data"):
            return None
        if self._classifier is None:
            from gansuite.metrics.classifier import classifier_for

            with torch.random.fork_rng(devices=[]):
                found = classifier_for(datamodule.domain_b_data(), self.cache_dir)
            self._classifier = found[0] if found else None
        return self._classifier


@torch.no_grad()
def measure_cycle(module: L.LightningModule, datamodule: Any, classifier: torch.nn.Module | None = None, *,
                  ema: bool = True) -> dict[str, Any]:
    """Held-out cycle error of an unpaired model and, given B's domain classifier and A's labels, whether
    translations A -> B keep the class.

    ``cycle_l1_a`` is the mean |F(G(a)) - a| over the held-out A images ([-1, 1] scale), ``cycle_l1_b``
    the same for B. ``class_kept_a2b`` is the fraction of G(a) that B's classifier reads as a's label,
    beside ``baseline_class_kept_a2b``: the same classifier on the untranslated a.
    """
    from gansuite.metrics.classifier import predict

    a, b = datamodule.heldout_a, datamodule.heldout_b
    values: dict[str, float] = {}
    translated = {}
    for name, x, there, back in (("a", a, "a2b", "b2a"), ("b", b, "b2a", "a2b")):
        moved = torch.cat([module.translate(part, there, ema=ema).float() for part in x.split(250)])
        returned = torch.cat([module.translate(part, back, ema=ema).float() for part in moved.split(250)])
        values[f"cycle_l1_{name}"] = float((returned.cpu() - x).abs().mean())
        translated[name] = moved.cpu()
    protocol: dict[str, Any] = {"num_a": len(a), "num_b": len(b)}
    labels = getattr(datamodule, "labels_a", None)
    if classifier is not None and labels is not None:
        values["class_kept_a2b"] = float((predict(classifier, translated["a"]) == labels).float().mean())
        values["baseline_class_kept_a2b"] = float((predict(classifier, a) == labels).float().mean())
        protocol["classifier"] = "domain classifier of B (gansuite.metrics.classifier)"
    return {"values": values, "protocol": protocol}


@torch.no_grad()
def measure_pairs(module: L.LightningModule, pairs: list[tuple[torch.Tensor, torch.Tensor]], *, ema: bool = True,
                  seed: int = 0) -> dict[str, Any]:
    """PSNR / SSIM / L1 of ``module``'s outputs on ``(source, target)`` batches and of the baseline; see
    :class:`TranslationMetrics`. Returns ``{"values": {...}, "protocol": {...}}``; the RNG is left as it was."""
    from gansuite.metrics import paired

    sums: dict[str, torch.Tensor] = {}  # on the device, read once at the end
    count, protocol = 0, None
    with private_rng(seed):
        for a, b in pairs:
            a, b = a.to(module.device), b.to(module.device)
            out = module.sample((a, b), ema=ema).float()
            scale = b.shape[-1] // a.shape[-1]
            if scale > 1:
                baseline, border, kind = paired.bicubic_upsample(a, scale), scale, "bicubic"
            elif a.shape == b.shape:
                baseline, border, kind = a, 0, "input"
            else:
                baseline, border, kind = None, 0, None
            protocol = {"y_channel": b.shape[1] == 3, "border": border, "baseline": kind,
                        "ssim": {"window": paired.SSIM_WINDOW, "sigma": paired.SSIM_SIGMA}}
            for prefix, images in (("", out), ("baseline_", baseline)):
                if images is None:
                    continue
                values = {"psnr": paired.psnr_y(images, b, border), "ssim": paired.ssim_y(images, b, border),
                          "l1": paired.l1(paired.crop_border(images, border), paired.crop_border(b, border))}
                for name, v in values.items():
                    total = v.double().sum()
                    sums[prefix + name] = total if prefix + name not in sums else sums[prefix + name] + total
            count += len(b)
    protocol = dict(protocol or {}, num_images=count, per_image_mean=True)
    totals = torch.stack(list(sums.values())).tolist() if sums else []
    return {"values": {k: v / count for k, v in zip(sums, totals, strict=True)}, "protocol": protocol}
