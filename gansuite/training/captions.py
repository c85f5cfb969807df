"""``callbacks.caption_metrics``: how well a text-to-image model follows its captions, during training.

Every N steps and at the end, for a module that draws for captions (``model=gan_int_cls``) on captioned
digits (``data=captioned_digits``): :func:`gansuite.metrics.captions.caption_metrics` on the held-out digits'
captions, logged as ``val/digit_acc``, ``val/rank_corr_thickness``, ... (held-out phrasings:
``..._heldout_phrasing``) and written with their protocol to ``<run>/eval/captions_step_XXXXXX.json``.
Silent for other families and data (``data=captioned_folder`` included: its captions name no measured attribute).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from gansuite.history import record as history
from gansuite.history import run_folder
from gansuite.training.callbacks import EveryNSteps, write_json


class CaptionMetrics(EveryNSteps):
    """Args:
        every_n_steps: gansuite steps between measurements.
        ema: draw with the EMA generator when the module keeps one.
        seed: seeds the noise of the drawn images (the same images in every measurement of a run).
    """

    config_key = "caption_metrics"

    def __init__(self, *, every_n_steps: int = 500, ema: bool = True, seed: int = 0) -> None:
        super().__init__(every_n_steps=every_n_steps)
        self.ema, self.seed = ema, seed
        self.last: dict[str, Any] | None = None
        self._classifier = None

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        self._last_saved = step
        datamodule = getattr(trainer, "datamodule", None)
        if not trainer.is_global_zero or not hasattr(pl_module, "captions") \
                or not hasattr(datamodule, "train_values"):  # captioned digits only (measured attributes)
            return
        from gansuite.data.digits import OfflineMNIST
        from gansuite.metrics.captions import caption_metrics
        from gansuite.metrics.classifier import classifier_for

        if self._classifier is None:  # the offline MNIST's (shipped) classifier: the same digits, the same split
            self._classifier = classifier_for(OfflineMNIST(resolution=28), cache_dir=None, log=lambda _: None)
        classifier, info = self._classifier
        values = caption_metrics(pl_module, datamodule, classifier.to(pl_module.device).eval(), seed=self.seed,
                                 ema=self.ema)
        record = {"step": step, "values": values, "protocol": {
            "data": datamodule.name, "seed": self.seed,
            "generator": "trained" if pl_module.sampling_generator(self.ema) is pl_module.generator else "EMA",
            "captions": "the held-out digits' captions, one image each: training phrasings, and held-out phrasings "
                        "(keys ending _heldout_phrasing)",
            "digit_acc": "fraction read as the named digit by the offline MNIST's domain classifier (shipped)",
            "rank_corr": "Spearman's rho between the level asked for and the measured value's percentile among the "
                         "named class's training digits, over the captions naming the attribute",
            "classifier": info.as_dict()}}
        self.last = record
        logged = {f"val/{k}": v for k, v in values.items()}
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=step)
        history(step, logged, run_folder(pl_module))
        write_json(Path(trainer.default_root_dir) / "eval" / f"captions_step_{step:06d}.json", record)
