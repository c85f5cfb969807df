"""Every-N-steps training callbacks: their bases, sample grids, and 2D scatter plots.

:class:`EveryNSteps` and :class:`PeriodicSamples` are the bases (also of the callbacks in
:mod:`gansuite.training.translation` and of :class:`gansuite.models.lapgan.LevelGrid`);
:class:`SampleGrid` saves grids of generated images and :class:`Scatter2D` plots generated 2D
points with their mode metrics.

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from gansuite.data.base import denormalize
from gansuite.errors import ConfigError
from gansuite.history import record as history
from gansuite.history import run_folder
from gansuite.metrics.modes import ModeStats, mode_metrics
from gansuite.outputs import atomic_path

__all__ = ["SampleGrid", "Scatter2D"]


@contextmanager
def private_rng(seed: int):
    """Run the block on torch's RNGs seeded with ``seed``, then put their states back."""
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        yield


class EveryNSteps(L.Callback):
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


class PeriodicSamples(EveryNSteps):
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
        with private_rng(self.seed):
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


class SampleGrid(PeriodicSamples):
    """Save a grid of generated images as ``samples/step_XXXXXX.png`` every N gansuite steps.

    Args:
        every_n_steps: snapshot period in generator updates; a final snapshot is taken at the end.
        num_samples: images in the grid, laid out ceil(sqrt(n)) per row, or one class per column
            for a conditional module (one with ``num_classes``); for a text-to-image module (one with
            ``caption_texts(inputs)``) 8 per row, each with its caption underneath.
        seed: seeds the fixed generator inputs, shared across runs.
        ema: sample from the EMA generator when the module keeps one.
        dirpath: folder for the PNGs; defaults to ``<trainer.default_root_dir>/samples``.
    """

    config_key = "sample_grid"
    default_num_samples = 64

    def _accepts(self, samples: torch.Tensor) -> bool:
        return samples.ndim == 4

    def _render(self, samples: torch.Tensor, path: Path, trainer: L.Trainer, step: int) -> None:
        from gansuite.outputs import CAPTIONS_PER_ROW, save_captioned_png, save_png

        module = getattr(trainer, "lightning_module", None)
        caption_texts = getattr(module, "caption_texts", None)
        if caption_texts is not None:  # a text-to-image module: each image over the caption it was drawn for
            captions = caption_texts(self.fixed_inputs(module))
            save_captioned_png(denormalize(samples), captions, path, nrow=CAPTIONS_PER_ROW)
            return
        # A conditional module asks for classes 0..K-1 in turn: K per row puts one class in each column.
        nrow = getattr(module, "num_classes", None) or math.ceil(math.sqrt(len(samples)))
        save_png(denormalize(samples), path, nrow=nrow)


class Scatter2D(PeriodicSamples):
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
        write_json(Path(trainer.default_root_dir) / "eval" / "modes.json", record)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically: a reader sees the old file or the new one, never half of one."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
