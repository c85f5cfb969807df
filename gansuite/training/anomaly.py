"""``callbacks.anomaly_metrics``: how well an anomaly detector separates the held-out anomalies, during training.

Every N steps and at the end, for a module with ``anomaly_score`` on data with ``is_anomaly``
(``model=ganomaly data=mnist_anomaly``): every test image is scored, AUROC and AUPRC are logged as
``val/auroc`` and ``val/auprc`` and written with their protocol (score definition, split sizes, anomaly
class) to ``<run>/eval/anomaly_step_XXXXXX.json``, and ``samples/anomaly_step_XXXXXX.png`` shows the
highest-scoring test images over their reconstructions, then the lowest-scoring ones. Nothing is selected
on these numbers: they are the test split's. Silent for other families and data, and while a module says
its scores are not ready (``scores_ready``: f-AnoGAN before its encoder has trained).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from gansuite.data.base import denormalize
from gansuite.history import record as history
from gansuite.history import run_folder
from gansuite.metrics.anomaly import anomaly_metrics
from gansuite.training.callbacks import EveryNSteps, write_json


class AnomalyMetrics(EveryNSteps):
    """Args:
        every_n_steps: gansuite steps between measurements.
        ema: score with the EMA generator when the module keeps one.
        batch_size: test images scored at once.
        num_examples: images per row of the picture (highest and lowest scores).
    """

    config_key = "anomaly_metrics"

    def __init__(self, *, every_n_steps: int = 500, ema: bool = True, batch_size: int = 250,
                 num_examples: int = 10) -> None:
        super().__init__(every_n_steps=every_n_steps)
        self.ema, self.batch_size, self.num_examples = ema, batch_size, num_examples
        self.last: dict[str, Any] | None = None
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        self._last_saved = step
        datamodule = getattr(trainer, "datamodule", None)
        if not trainer.is_global_zero or not hasattr(pl_module, "anomaly_score") \
                or not hasattr(datamodule, "is_anomaly") or not getattr(pl_module, "scores_ready", True):
            return
        if self._test is None:  # the same 1,000 images at every measurement: taken from the data once
            self._test = datamodule.heldout()
        x, y = self._test
        scores = score_images(pl_module, x, ema=self.ema, batch_size=self.batch_size)
        values = anomaly_metrics(scores, datamodule.is_anomaly(y))
        ema = bool(self.ema and pl_module.generator_ema is not None)
        record = {"step": step, "values": {"auroc": values["auroc"], "auprc": values["auprc"]},
                  "protocol": {"score": pl_module.score_definition, "generator": "EMA" if ema else "trained",
                               "split": "test (the held-out split; nothing is selected on it)",
                               "chance_auprc": values["anomaly_share"], **datamodule.protocol()}}
        self.last = record
        logged = {f"val/{k}": v for k, v in record["values"].items()}
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=step)
        history(step, logged, run_folder(pl_module))
        root = Path(trainer.default_root_dir)
        write_json(root / "eval" / f"anomaly_step_{step:06d}.json", record)
        self._picture(pl_module, x, scores, root / "samples" / f"anomaly_step_{step:06d}.png")

    def _picture(self, module: L.LightningModule, x: torch.Tensor, scores: torch.Tensor, path: Path) -> None:
        from gansuite.outputs import atomic_path, save_png

        k = min(self.num_examples, len(x) // 2)
        order = scores.argsort(descending=True)
        rows = []
        for idx in (order[:k], order[-k:].flip(0)):  # the highest scores, then the lowest (lowest first)
            images = x[idx].to(module.device, module.dtype)
            rows += [images.float().cpu(), module.reconstruct(images, ema=self.ema).float().cpu()]
        with atomic_path(path) as tmp:
            save_png(denormalize(torch.cat(rows)), tmp, nrow=k, padding=2, pad_value=1.0)


@torch.no_grad()
def score_images(module: L.LightningModule, x: torch.Tensor, *, ema: bool = True, batch_size: int = 250) -> torch.Tensor:
    """``module.anomaly_score`` of every image of ``x`` (CPU), in batches on the module's device; CPU scores."""
    parts = [module.anomaly_score(x[i:i + batch_size].to(module.device, module.dtype), ema=ema).float().cpu()
             for i in range(0, len(x), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0)
