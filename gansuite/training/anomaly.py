"""``callbacks.anomaly_metrics``: how well an anomaly detector separates the held-out anomalies, during training.

Every N steps and at the end, for a module with ``anomaly_score`` on data with ``is_anomaly``
(``model=ganomaly data=mnist_anomaly``): every test image is scored, AUROC and AUPRC are logged as
``val/auroc`` and ``val/auprc`` and written with their protocol (score definition, split sizes, anomaly
class) to ``<run>/eval/anomaly_step_XXXXXX.json``, and ``samples/anomaly_step_XXXXXX.png`` shows the
highest-scoring test images over their reconstructions, then the lowest-scoring ones. Nothing is selected
on these numbers: they are the test split's. Silent for other families and data, and while a module says
its scores are not ready (``scores_ready``: f-AnoGAN before its encoder has trained).

Model selection uses the validation split only. When it holds labelled anomalies (the user asked for some:
``data.validation_anomalies``), every measurement also scores it, logs ``sel/auroc`` and ``sel/auprc``, and
``eval/anomaly_selected.json`` names the measurement with the highest validation AUROC (the earliest of
ties) and the test numbers it had then: the number a selected model reports, chosen without the test split.
Without validation anomalies nothing is selected and the last measurement is the run's number.
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
        self.selected: dict[str, Any] | None = None  # the measurement with the best validation AUROC so far
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None
        self._validation: tuple[torch.Tensor, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"selected": self.selected}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.selected = state_dict.get("selected")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # A resumed run writes into a folder of its own: the selection so far goes there too, and a stale file
        # left in the same folder by an earlier attempt is replaced.
        if self.selected is not None and trainer.is_global_zero:
            write_json(Path(trainer.default_root_dir) / "eval" / "anomaly_selected.json", self.selected)

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        self._last_saved = step
        datamodule = getattr(trainer, "datamodule", None)
        if not trainer.is_global_zero or not hasattr(pl_module, "anomaly_score") \
                or not hasattr(pl_module, "reconstruct") or not hasattr(datamodule, "is_anomaly") or not getattr(pl_module, "scores_ready", True):
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
        logged = {f"val/{k}": v for k, v in record["values"].items()}
        selection = self._selection(pl_module, datamodule)
        if selection is not None:
            record["selection"] = selection
            logged.update({f"sel/{k}": selection[k] for k in ("auroc", "auprc")})
        self.last = record
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=step)
        history(step, logged, run_folder(pl_module))
        root = Path(trainer.default_root_dir)
        write_json(root / "eval" / f"anomaly_step_{step:06d}.json", record)
        if selection is not None and (self.selected is None or selection["auroc"] > self.selected["selection"]["auroc"]):
            self.selected = {**record, "rule": "the measurement with the highest validation AUROC (sel/auroc); "
                                               "the test split is not looked at"}
            write_json(root / "eval" / "anomaly_selected.json", self.selected)
        self._picture(pl_module, x, scores, root / "samples" / f"anomaly_step_{step:06d}.png")

    def _selection(self, module: L.LightningModule, datamodule: Any) -> dict[str, Any] | None:
        """AUROC and AUPRC on the validation split, when it holds labelled anomalies; else None."""
        if not hasattr(datamodule, "validation"):
            return None
        if self._validation is None:
            self._validation = datamodule.validation()
        x, y = self._validation
        labels = datamodule.is_anomaly(y)
        anomalies = int(labels.sum())
        if not anomalies or anomalies == len(labels):
            return None
        values = anomaly_metrics(score_images(module, x, ema=self.ema, batch_size=self.batch_size), labels)
        return {"split": "validation", "auroc": values["auroc"], "auprc": values["auprc"],
                "normals": len(labels) - anomalies, "anomalies": anomalies}

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
