"""BigGAN (Brock, Donahue & Simonyan 2019): the class-conditional GAN with BigGAN's two training-side details.

The networks (shared class embedding, hierarchical z, conditional batch norm, self-attention, spectral norm
in G and D, projection D) are :mod:`gansuite.nets.biggan`'s; the hinge loss and D steps per G step come from
``loss=hinge loss.n_critic=4``. What the module adds to :class:`gansuite.models.gan.ConditionalGAN`:

- **orthogonal regularisation** of G's weights, BigGAN's modified form ``beta * 0.5 ||W W^T (1 - I)||_F^2``
  (``ortho_weight`` = beta; its gradient is the one BigGAN-PyTorch's ``utils.ortho`` adds), in G's update,
  the shared class embedding left out as the code leaves it out;
- **an EMA that starts late**: before ``ema_start`` G updates the EMA copy follows G exactly (decay 0), then
  decays by ``ema_decay`` (BigGAN-PyTorch's ``--ema_start 1000 --ema_decay 0.9999``).

``UnconditionalBigGAN`` is the same for unlabelled data (image folders), its batch norms conditioned on z alone.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gansuite.errors import ConfigError
from gansuite.models.gan import ConditionalGAN, UnconditionalGAN
from gansuite.nets.biggan import orthogonal_penalty


class _BigGANTraining:
    """Orthogonal regularisation and the late-starting EMA, mixed in before the conditional or unconditional base.

    Args:
        ortho_weight: beta of the orthogonal regularisation (0 turns it off).
        ema_start: G updates before the EMA starts to decay.
        (the rest: see the base class)
    """

    def __init__(self, *, ortho_weight: float = 0.0, ema_start: int = 1000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not ortho_weight >= 0:
            raise ConfigError(f"model.module.ortho_weight must be >= 0 (got {ortho_weight!r}); BigGAN uses 1e-4, "
                              "its CIFAR-10 script 0.")
        if not isinstance(ema_start, int) or ema_start < 0:
            raise ConfigError(f"model.module.ema_start must be a whole number of G updates >= 0 (got {ema_start!r}); "
                              "BigGAN-PyTorch uses 1000.")
        self.ortho_weight = float(ortho_weight)
        self.ema_start = ema_start

    def ema_decay_now(self, step: int) -> float:
        return 0.0 if step < self.ema_start else self.ema_decay

    def generator_loss(self, batch, fake) -> dict[str, Tensor]:
        terms = super().generator_loss(batch, fake)
        if self.ortho_weight:  # (the penalty leaves G's shared class embedding out by itself)
            terms["ortho"] = orthogonal_penalty(self.generator)
            terms["loss"] = terms["loss"] + self.ortho_weight * terms["ortho"]
        return terms


class BigGAN(_BigGANTraining, ConditionalGAN):
    """Class-conditional BigGAN: ``generator(z, y)``, ``discriminator(x, y)``; arguments as :class:`_BigGANTraining`."""


class UnconditionalBigGAN(_BigGANTraining, UnconditionalGAN):
    """BigGAN without labels: ``generator(z)``, ``discriminator(x)``; arguments as :class:`_BigGANTraining`."""
