"""What a checkpoint holds beyond the weights, so that a resumed run continues bit for bit.

The RNG states (restored at the first batch after the resume, since loading and data-loader start-up
draw random numbers), the gansuite step, and the samples consumed, from which the data stream
continues on any number of devices. No checkpoint is written after a non-finite loss or weight.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from gansuite.errors import NonFiniteLossError


class ExactResume:
    """Mixed into :class:`gansuite.models.schedule.AdversarialModule`: Lightning's checkpoint hooks."""

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # RNG states are restored at the first batch after a resume, not at load time: loading,
        # data-loader start-up and callbacks may draw random numbers in between.
        if self._rng_to_restore is not None:
            state, self._rng_to_restore = self._rng_to_restore, None
            torch.set_rng_state(state["torch"])
            if torch.cuda.is_available() and state.get("cuda"):
                torch.cuda.set_rng_state_all(state["cuda"])
            kind, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            random.setstate(state["python"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Never write weights after a non-finite loss, nor after a finite loss followed by an overflowing
        # update: the losses since the last check and every weight tensor's finiteness in one transfer.
        weights = [(name, v) for name, v in checkpoint["state_dict"].items() if v.is_floating_point()]
        _, sums, finite = self._host_values([torch.isfinite(v).all() for _, v in weights])
        self._raise_if_non_finite(sums, self.step)
        bad = next((name for (name, _), ok in zip(weights, finite, strict=True) if not ok), None)
        if bad is not None:
            raise NonFiniteLossError(f"weights {bad} became non-finite at step {self.step}; {self._nan_advice()}")
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # numpy's key array as a tensor keeps the checkpoint loadable with weights_only=True.
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "python": random.getstate(),
        }
        checkpoint["gansuite_step"] = self.step
        checkpoint["gansuite_samples"] = self.samples_consumed

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("rng_states")
        # Continue the data stream where the run stopped; this runs before the train iterator exists.
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        batches = self._batches_at(checkpoint.get("global_step", 0))
        samples = checkpoint.get("gansuite_samples")
        if samples is None:  # written before gansuite counted samples: one process
            samples = batches * self._batch_size()
        self._resumed_at = (batches, samples)
        if datamodule is not None and hasattr(datamodule, "skip_samples"):
            datamodule.skip_samples(samples)
