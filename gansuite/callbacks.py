"""Training callbacks: sample grids, 2D scatter plots and the progress bar.

All "every N steps" here count gansuite steps (``pl_module.step``, generator
updates), not Lightning's ``global_step``, which counts every optimizer step.
The sampling callbacks need from the module: ``step``, ``make_inputs(n, generator)``
and ``sample(inputs, ema=...)``. They work with any logger: the PNG on disk is the
record, and W&B / TensorBoard get a copy when attached.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from gansuite.data import denormalize
from gansuite.errors import ConfigError
from gansuite.logging import record as history
from gansuite.logging import run_folder
from gansuite.metrics.modes import ModeStats, mode_metrics

__all__ = ["GANProgressBar", "SampleGrid", "Scatter2D"]


@contextmanager
def _private_rng(seed: int):
    """Run the block on torch's RNGs seeded with ``seed``, then put their states back."""
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        yield


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds.

    The temporary name ends in ``.tmp`` so a crash mid-write never leaves a file that looks
    like a finished PNG, and ``os.replace`` within one folder is atomic on POSIX and Windows.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _EveryNSteps(L.Callback):
    """Call ``_snapshot(trainer, module, step)`` every N gansuite steps and once more at the end of training."""

    config_key = ""  # the entry in conf/callbacks/default.yaml, for error messages

    def __init__(self, *, every_n_steps: int) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ConfigError(
                f"callbacks.{self.config_key}.every_n_steps is {every_n_steps}; set it to a positive number of steps."
            )
        self.every_n_steps = every_n_steps
        self._last_step = 0
        self._last_saved: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run starts at its restored step; don't redo the snapshot it already has.
        self._last_step = pl_module.step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = pl_module.step
        # Several batches share one step value when D trains n_critic times per G step;
        # comparing multiples fires once per crossing, even if a step is ever skipped.
        if step // self.every_n_steps > self._last_step // self.every_n_steps:
            self._snapshot(trainer, pl_module, step)
        self._last_step = step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.step != self._last_saved:
            self._snapshot(trainer, pl_module, pl_module.step)

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        raise NotImplementedError


class _PeriodicSamples(_EveryNSteps):
    """Generate from fixed inputs every N gansuite steps and at the end of training; save and log a PNG."""

    default_num_samples = 64
    file_prefix = ""  # PNGs are <file_prefix>step_XXXXXX.png

    def __init__(
        self,
        *,
        every_n_steps: int = 500,
        num_samples: int | None = None,
        seed: int = 1234,
        ema: bool = True,
        dirpath: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(every_n_steps=every_n_steps)
        num_samples = self.default_num_samples if num_samples is None else num_samples
        if num_samples < 1:
            raise ConfigError(
                f"callbacks.{self.config_key}.num_samples is {num_samples}; set it to a positive number of samples."
            )
        self.num_samples = num_samples
        self.seed = seed
        self.ema = ema
        self.dirpath = dirpath
        self._inputs: Any = None
        # Decided at the first snapshot: a grid callback on 2D data (or the reverse) stays silent.
        self._applies: bool | None = None

    def fixed_inputs(self, pl_module: L.LightningModule) -> Any:
        """The generator inputs used for every snapshot, made once from ``seed``.

        A private ``torch.Generator`` keeps the global RNG (and so training) untouched, and
        the same seed gives the same inputs in every run, so grids compare across runs.
        """
        if self._inputs is None:
            self._inputs = pl_module.make_inputs(self.num_samples, torch.Generator().manual_seed(self.seed))
        return self._inputs

    def output_dir(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath is not None else Path(trainer.default_root_dir) / "samples"

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        self._last_saved = step
        if not trainer.is_global_zero:
            return
        # A private RNG stream: a generator with noise at sampling time (pix2pix's dropout) draws the
        # same noise in every snapshot, and training's random stream is left as it was (exact resume).
        with _private_rng(self.seed):
            if self._applies is None:
                # One sample tells images from points without generating the full batch of the wrong kind.
                probe = pl_module.make_inputs(1, torch.Generator().manual_seed(self.seed))
                self._applies = self._accepts(pl_module.sample(probe, ema=self.ema))
            if not self._applies:
                return
            torch.manual_seed(self.seed)
            samples = pl_module.sample(self.fixed_inputs(pl_module), ema=self.ema)
        path = self.output_dir(trainer) / f"{self.file_prefix}step_{step:06d}.png"
        with atomic_path(path) as tmp:
            self._render(samples.detach().float().cpu(), tmp, trainer, step)
        _send_to_loggers(trainer, path, step)

    def _accepts(self, samples: torch.Tensor) -> bool:
        raise NotImplementedError

    def _render(self, samples: torch.Tensor, path: Path, trainer: L.Trainer, step: int) -> None:
        """Write ``samples`` as a PNG to ``path`` (whose suffix is not .png)."""
        raise NotImplementedError


def _send_to_loggers(trainer: L.Trainer, path: Path, step: int) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key="samples", images=[str(path)], step=step, caption=[f"step {step}"])
        elif isinstance(logger, TensorBoardLogger):
            from torchvision.io import ImageReadMode, read_image

            # Reading the PNG back gives the same pixels for grids and matplotlib figures alike.
            logger.experiment.add_image("samples", read_image(str(path), ImageReadMode.RGB), global_step=step)


class SampleGrid(_PeriodicSamples):
    """Save a grid of generated images as ``samples/step_XXXXXX.png`` every N gansuite steps.

    Args:
        every_n_steps: snapshot period in generator updates; a final snapshot is taken at the end.
        num_samples: images in the grid, laid out ceil(sqrt(n)) per row, or one class per column
            for a conditional module (one with ``num_classes``).
        seed: seeds the fixed generator inputs, shared across runs.
        ema: sample from the EMA generator when the module keeps one.
        dirpath: folder for the PNGs; defaults to ``<trainer.default_root_dir>/samples``.
    """

    config_key = "sample_grid"
    default_num_samples = 64

    def _accepts(self, samples: torch.Tensor) -> bool:
        return samples.ndim == 4

    def _render(self, samples: torch.Tensor, path: Path, trainer: L.Trainer, step: int) -> None:
        from gansuite.outputs import save_png

        # A conditional module asks for classes 0..K-1 in turn: K per row puts one class in each column.
        module = getattr(trainer, "lightning_module", None)
        nrow = getattr(module, "num_classes", None) or math.ceil(math.sqrt(len(samples)))
        save_png(denormalize(samples), path, nrow=nrow)


class Scatter2D(_PeriodicSamples):
    """Save a scatter plot of generated 2D points over the true mode centres every N gansuite steps.

    The centres come from ``trainer.datamodule.means`` (K×2) with a 2σ circle from
    ``trainer.datamodule.std``; without them the points are plotted alone. With them, the
    VEEGAN / PacGAN mode metrics of the same samples (:mod:`gansuite.metrics.modes`; 2,500
    samples by default, as in the papers) go into the title and to every logger as
    ``val/modes_2500``, ``val/high_quality_2500`` and ``val/reverse_kl_2500``; the latest
    are kept in ``last_stats`` and written, with their protocol, the data, the packing and the
    seed, to ``<trainer.default_root_dir>/eval/modes.json`` (replaced at every plot, so after
    training it holds the final evaluation; ``gansuite-aggregate`` reads it). Arguments as for
    :class:`SampleGrid`.
    """

    last_stats = None
    # The protocol of gansuite.metrics.modes, recorded with every result.
    protocol = "veegan-pacgan-modes"
    threshold = 3.0  # high quality: within this many std of the nearest mode

    config_key = "scatter_2d"
    default_num_samples = 2500

    def _accepts(self, samples: torch.Tensor) -> bool:
        return samples.ndim == 2 and samples.shape[1] == 2

    def _render(self, samples: torch.Tensor, path: Path, trainer: L.Trainer, step: int) -> None:
        # Figure + Agg canvas instead of pyplot: no global figure registry to leak and no
        # dependence on the process-wide backend (which may be interactive on a desktop).
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Circle

        fig = Figure(figsize=(5, 5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        points = samples.numpy()
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, color="tab:blue", linewidths=0)

        title = f"step {step}"
        datamodule = getattr(trainer, "datamodule", None)
        means = getattr(datamodule, "means", None)
        if means is not None:
            means = torch.as_tensor(means, dtype=torch.float32).cpu()
            std = float(getattr(datamodule, "std", 0.0) or 0.0)
            ax.scatter(means[:, 0].numpy(), means[:, 1].numpy(), s=30, marker="x", color="tab:red")
            for x, y in means.tolist():
                ax.add_patch(Circle((x, y), 2 * std, fill=False, color="tab:red", alpha=0.4, linewidth=0.8))
            # Fixed limits from the true modes keep frames comparable across steps;
            # points that fly off are clipped rather than rescaling the view.
            limit = 1.1 * means.abs().max().item() + 4 * std
            ax.set_xlim(-limit, limit)
            ax.set_ylim(-limit, limit)
            outside = (samples.abs() > limit).any(dim=1).float().mean().item()
            if outside >= 0.005:
                title += f" ({outside:.0%} outside the view)"
            stats = self.last_stats = mode_metrics(samples, means, std, self.threshold)
            self._write_result(trainer, step, stats, datamodule, std)
            title += (f"\n{stats.modes}/{stats.num_modes} modes, {stats.high_quality:.1%} high quality, "
                      f"reverse KL {stats.reverse_kl:.2f}")
            for logger in trainer.loggers:
                logger.log_metrics(stats.as_log(), step=step)
            history(step, stats.as_log(), run_folder(trainer.lightning_module))
        ax.set_aspect("equal")
        ax.set_title(title)
        fig.savefig(path, format="png")

    def _write_result(self, trainer: L.Trainer, step: int, stats: ModeStats, datamodule: Any, std: float) -> None:
        module = getattr(trainer, "lightning_module", None)
        record = {
            "protocol": self.protocol,
            "step": step,
            "modes": stats.modes,
            "high_quality": stats.high_quality,
            # JSON has no infinity: null means no sample was high quality.
            "reverse_kl": stats.reverse_kl if math.isfinite(stats.reverse_kl) else None,
            "num_modes": stats.num_modes,
            "num_samples": stats.num_samples,
            "threshold": self.threshold,
            "sample_seed": self.seed,
            "ema": bool(self.ema and getattr(module, "generator_ema", None) is not None),
            "data": {"modes": getattr(datamodule, "modes", None), "std": std},
            "pack": getattr(getattr(module, "discriminator", None), "pack", None),
            "seed": getattr(datamodule, "seed", None),
        }
        _write_json(Path(trainer.default_root_dir) / "eval" / "modes.json", record)


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically: a reader sees the old file or the new one, never half of one."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


class GANProgressBar(RichProgressBar):
    """Rich progress bar sized to the whole run, showing the gansuite step and steps per second.

    The train loader is infinite, so Lightning cannot size the bar; if the module has
    ``total_batches(trainer) -> int | None`` (training batches in the whole run), that is
    the total. The module's ``progress_metrics`` (floats) and metrics logged with ``prog_bar=True`` are shown,
    without Lightning's ``v_num``.

    Args:
        rate_window_s: seconds between updates of the steps/s reading, which is then
            smoothed; short windows flicker at n_critic > 1, where most batches add no step.
        refresh_rate: redraws per second.
        **kwargs: passed to :class:`~lightning.pytorch.callbacks.RichProgressBar`.
    """

    def __init__(self, *, rate_window_s: float = 2.0, refresh_rate: int = 4, **kwargs: Any) -> None:
        # Lightning's default redraws 100 times a second in a thread that holds the GIL: about
        # 3 ms of CPU per training step of a small DCGAN (benchmarks/overhead.py).
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.rate_window_s = rate_window_s
        self._anchor: tuple[float, int] | None = None
        self._steps_per_s: float | None = None

    @property
    def total_train_batches(self) -> int | float:
        total_fn = getattr(self.trainer.lightning_module, "total_batches", None)
        total = total_fn(self.trainer) if callable(total_fn) else None
        # A finite loader runs several epochs and Lightning's per-epoch count is right.
        if total is None or math.isfinite(self.trainer.num_training_batches):
            return super().total_train_batches
        return total

    def configure_columns(self, trainer: L.Trainer) -> list:
        # Without Lightning's batches/s (steps/s is shown with the metrics; a batch is not a step at n_critic > 1)
        # and with a shorter bar, the bar and its metrics fit one line of an 80-column terminal.
        columns = [c for c in super().configure_columns(trainer) if type(c).__name__ != "ProcessingSpeedColumn"]
        for column in columns:
            if hasattr(column, "bar_width"):
                column.bar_width = 12
        return columns

    def _get_train_description(self, current_epoch: int) -> str:
        # One endless epoch (max_epochs=-1) would read "Epoch 0/-2"; the bar alone says it is training.
        if self.trainer.max_epochs in (None, -1):
            return ""
        return super()._get_train_description(current_epoch)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        step = getattr(pl_module, "step", None)
        self._anchor = (time.monotonic(), step) if step is not None else None
        self._steps_per_s = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._update_rate(pl_module)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _update_rate(self, pl_module: L.LightningModule) -> None:
        if self._anchor is None:
            return
        now, step = time.monotonic(), pl_module.step
        start_time, start_step = self._anchor
        if now - start_time < self.rate_window_s:
            return
        rate = (step - start_step) / (now - start_time)
        self._steps_per_s = rate if self._steps_per_s is None else 0.7 * self._steps_per_s + 0.3 * rate
        self._anchor = (now, step)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        metrics.pop("step", None)  # shown below as an integer, whatever the module logs under that name
        shown: dict[str, Any] = {}
        # Strings skip the bar's ".3f" formatting: a step count is an integer.
        # The step with its rate, and the losses of the last logged batch (already floats: reading them never
        # waits on the GPU) as D and G with 3 digits: the bar and these fit one line of an 80-column terminal.
        if (step := getattr(pl_module, "step", None)) is not None:
            rate = f" ({self._steps_per_s:.3g}/s)" if self._steps_per_s is not None else ""
            shown["step"] = f"{int(step)}{rate}"
        shown.update(metrics)
        for key, value in getattr(pl_module, "progress_metrics", {}).items():
            name = {"train/d_loss": "D", "train/g_loss": "G"}.get(key, key.removeprefix("train/"))
            shown[name] = f"{value:.3g}" if isinstance(value, float) else value
        return shown


class TranslationGrid(_PeriodicSamples):
    """Save rows of input | output | target for an image-to-image model as ``samples/pairs_step_XXXXXX.png``.

    The inputs are fixed held-out examples (``make_inputs`` of a paired or unpaired family,
    which returns ``(source, target)``). Sources smaller than the output (super-resolution) are
    enlarged with nearest-neighbour so their pixels stay visible; grey sources beside colour
    outputs are repeated to three channels. For unpaired data the third column is an unrelated
    image of the target domain, shown for its style. Silent for other families.

    Args: as for :class:`SampleGrid`; ``num_samples`` is the number of rows.
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


class TranslationMetrics(_EveryNSteps):
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
        _write_json(Path(trainer.default_root_dir) / "eval" / f"translation_step_{step:06d}.json", record)


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
    with _private_rng(seed):
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
