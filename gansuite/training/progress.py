"""The training progress bar (``callbacks.progress_bar``): gansuite steps, their rate, and D and G's losses.

The train loader is endless, so Lightning alone cannot size the bar; the module says how many batches
the run has. Kept to one line of an 80-column terminal, and redrawn 4 times a second, not 100.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


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
