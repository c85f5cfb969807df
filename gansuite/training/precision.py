"""Mixed precision for GANs: one gradient scaler per optimizer under manual optimization.

Lightning's ``16-mixed`` keeps one ``GradScaler`` for every optimizer. A GAN's two networks
overflow at different times, and with one scaler an overflow in D's backward pass halves the
scale G's next step uses too (and vice versa), so each network's loss scale drifts with the other's
troubles. :class:`PerOptimizerMixedPrecision` gives each optimizer its own scaler: the module
names the optimizer before each backward pass (:meth:`use_scaler_of`, called by
``AdversarialModule._update``), the loss is scaled by that optimizer's scaler, and that scaler
alone unscales, steps and updates. The scalers' states are saved in checkpoints, in optimizer order.

``bf16-mixed`` needs no scaler and uses Lightning's plugin unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.precision import MixedPrecision


class PerOptimizerMixedPrecision(MixedPrecision):
    """``16-mixed`` with one ``torch.amp.GradScaler`` per optimizer.

    Args:
        device: ``"cuda"`` or ``"cpu"``, where autocast and the scalers run.
        scaler_kwargs: passed to every ``GradScaler`` (``init_scale``, ``growth_interval``, ...).
    """

    def __init__(self, device: str = "cuda", **scaler_kwargs: Any) -> None:
        self._scaler_kwargs = scaler_kwargs
        self._scalers: list[torch.amp.GradScaler] = []
        self._optimizers: list[Any] = []
        self._active = 0
        self._pending: list[dict[str, Any]] | None = None
        super().__init__("16-mixed", device, scaler=torch.amp.GradScaler(device, **scaler_kwargs))

    # MixedPrecision reads and writes self.scaler; here it is the active optimizer's scaler.
    @property
    def scaler(self) -> torch.amp.GradScaler:
        return self._scalers[self._active]

    @scaler.setter
    def scaler(self, value: torch.amp.GradScaler) -> None:
        if self._scalers:
            self._scalers[self._active] = value
        else:
            self._scalers.append(value)

    def use_scaler_of(self, optimizer: Any) -> None:
        """Scale the next backward pass, and step ``optimizer``, with ``optimizer``'s own scaler."""
        optimizer = getattr(optimizer, "optimizer", optimizer)  # a LightningOptimizer wraps the optimizer
        for i, known in enumerate(self._optimizers):
            if known is optimizer:
                self._active = i
                return
        self._optimizers.append(optimizer)
        index = len(self._optimizers) - 1
        while len(self._scalers) <= index:
            self._scalers.append(torch.amp.GradScaler(self.device, **self._scaler_kwargs))
        if self._pending is not None and index < len(self._pending):
            self._scalers[index].load_state_dict(self._pending[index])
        self._active = index

    def optimizer_step(self, optimizer, model, closure, **kwargs: Any) -> Any:
        if not any(p.grad is not None for group in optimizer.param_groups for p in group["params"]):
            # A step with nothing to update (f-AnoGAN's D in its encoder phase, which keeps the step count):
            # the scaler has no gradients to check, and torch's GradScaler refuses to step without them.
            return closure()
        self.use_scaler_of(optimizer)
        return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {"scalers": [scaler.state_dict() for scaler in self._scalers[:max(1, len(self._optimizers))]]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "scalers" not in state_dict:  # a checkpoint of Lightning's single-scaler plugin
            state_dict = {"scalers": [state_dict]}
        self._pending = list(state_dict["scalers"])
        for i, state in enumerate(self._pending[:len(self._scalers)]):
            self._scalers[i].load_state_dict(state)
