"""The NaN guard and the loss logging of every family, without a host sync per update.

Each optimized loss is added on the device into its own sum (``AdversarialModule._update``); the sums are
read, with the values logged on that batch, in one device-to-host transfer on logged batches and before
every checkpoint. A sum is finite exactly when every loss since the last check was, so a training step
never waits on the GPU for the check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gansuite.errors import NonFiniteLossError
from gansuite.history import record, run_folder

_NAN_FIX = ("model.module.grad_clip=1.0, or start again with lower model.g_optimizer.lr and model.d_optimizer.lr "
            "(a resumed run keeps the learning rates stored in its checkpoint).")


class LossWatch:
    """Mixed into :class:`gansuite.models.schedule.AdversarialModule`: which batches log, reading the logged
    values and loss sums on the host, and stopping every rank together when a loss diverged."""

    def _logs_this_batch(self) -> bool:
        """Whether this batch's values go to the loggers (every ``log_every_n_steps`` batches, as Lightning counts
        them), or it is the last batch. Only these batches read values on the host (and check for NaN); the
        progress bar's losses change when the logs do."""
        trainer = self._trainer
        loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
        if loop is None:
            return True
        # Lightning's own rule (should_update_logs) without its "or should_stop": a Ctrl-C reaches each rank at
        # its own moment, and the NaN check on logged batches is a collective that every rank must join.
        every = trainer.log_every_n_steps
        total = self.total_batches(trainer)
        last = total is not None and self.batches_consumed + 1 >= total
        return (every > 0 and (loop._batches_that_stepped + 1) % every == 0) or last

    def _log_terms(self, net: str, terms: dict[str, Tensor]) -> None:
        # Keys are train/d_loss, train/d_reg, train/g_loss, ...; they stay on the device until _check_and_log.
        if self._log_now:
            for name, value in terms.items():
                self._pending[f"train/{net}_{name}"] = value.detach()

    def _host_values(self, extra: list[Tensor] = ()) -> tuple[dict[str, float], dict[str, float], list[float]]:
        """The pending logged values, the loss sums and ``extra`` (0-dim tensors) read in one transfer."""
        logged, sums = list(self._pending.items()), list(self._loss_sums.items())
        tensors = [v.reshape(()).float() for _, v in logged] + [v for _, v in sums] + [t.float() for t in extra]
        if not tensors:
            return {}, {}, []
        device = tensors[0].device
        values = torch.stack([t.to(device) for t in tensors]).tolist()
        n, m = len(logged), len(sums)
        return ({k: x for (k, _), x in zip(logged, values[:n], strict=True)},
                {k: x for (k, _), x in zip(sums, values[n:n + m], strict=True)}, values[n + m:])

    def _raise_if_non_finite(self, sums: dict[str, float], step: int) -> None:
        """Stop every rank together when a loss summed since the last check is not finite."""
        bad = next(((key, value) for key, value in sums.items() if not np.isfinite(value)), None)
        if bad is None:
            huge = next(((key, value) for key, value in sums.items() if abs(value) > self.loss_limit), None)
            if huge is not None:
                bad = (huge[0], f"{huge[1]:.3g} in sum, beyond model.module.loss_limit={self.loss_limit:g} (diverged)")
        if self._trainer is not None and self.trainer.world_size > 1:
            # Every rank stops together, rather than one raising while the others wait in an all-reduce.
            if self.trainer.strategy.reduce_boolean_decision(bad is None, all=True):
                return
            bad = bad or ("a loss", "non-finite on another rank")
        if bad is None:
            return
        when = f"at step {step}" if step <= self._unchecked_from else f"between steps {self._unchecked_from} and {step}"
        raise NonFiniteLossError(f"{bad[0]} became {bad[1]} {when}; {self._nan_advice()}")

    def _nan_advice(self) -> str:
        """What to do after a non-finite loss, naming the checkpoint to resume from, if there is one."""
        trainer = self._trainer
        folder = getattr(getattr(trainer, "checkpoint_callback", None), "dirpath", None)
        last = Path(folder) / "last.ckpt" if folder else None
        if last is not None and last.is_file():
            return f"training stopped and the last good checkpoint, {last}, was kept: resume from it with {_NAN_FIX}"
        if trainer is not None and trainer.ckpt_path:
            return (f"training stopped before writing a checkpoint since {trainer.ckpt_path}: resume from that with "
                    f"{_NAN_FIX}")
        return f"training stopped before writing any checkpoint: start again with {_NAN_FIX}"

    def _check_and_log(self, step: int) -> None:
        """On a logged batch: check the losses since the last check and send this batch's values to the loggers,
        with one device-to-host transfer for all of them."""
        logged, sums, _ = self._host_values()
        self._pending = {}
        self._raise_if_non_finite(sums, step)
        for total in self._loss_sums.values():
            total.zero_()
        self._unchecked_from = self.step
        # train/d_loss and train/g_loss: the terms named "loss" (not, say, train/g_cycle_loss).
        self.progress_metrics = {k: v for k, v in logged.items() if k.split("/", 1)[-1].split("_", 1)[-1] == "loss"}
        trainer = self._trainer
        if trainer is None or not logged:
            return
        # Lightning's own callback_metrics, as CPU tensors, for callbacks that monitor a training value.
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in logged.items()})
        connector = getattr(trainer, "_logger_connector", None)
        if trainer.is_global_zero:
            record(step, logged, run_folder(self))  # train.log and history.csv
        if trainer.loggers and connector is not None and trainer.is_global_zero:
            # "step" as the x-axis of every logger (W&B shows it as trainer/global_step): gansuite steps, the unit
            # of max_steps, checkpoint names and sample grids.
            connector.log_metrics(logged, step=step)

    def on_train_start(self) -> None:
        self._unchecked_from = self.step  # a resumed run checks from where it resumed
