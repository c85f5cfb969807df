"""StyleGAN2 (Karras et al. 2020) as trained by stylegan2-ada-pytorch, on gansuite's schedule.

The networks (mapping, modulated convolutions, noise, skip G, residual D, minibatch stddev, style mixing inside
G's forward in training) are :mod:`gansuite.nets.stylegan2`'s, in plain PyTorch. The loss is
``loss=nonsaturating`` (the logistic loss) with lazy R1 (``loss/regularizer=r1``, every 16 D updates). What the
module adds:

- **path-length regularisation** (G's lazy regulariser): every ``pl_every``-th G update, ``pl_weight *
  pl_every`` times the penalty of :func:`gansuite.nets.stylegan2.path_length_penalty` on half a batch of new
  latents is added to G's loss. ADA's code runs it as a separate optimizer step of its own (the ``Greg``
  phase); here it joins the G update it falls on, as gansuite's D regularizers join D's. The running mean
  ``pl_mean`` is a buffer, so checkpoints carry it.
- **the EMA by images seen**: after each G update, decay = 0.5 ** (images per update / ema_nimg) with
  ema_nimg = ``ema_kimg`` * 1000, capped by ``ema_rampup`` * images seen so far when a ramp is set (ADA's
  ``G_ema_kimg`` and ``G_ema_rampup``; CIFAR-10: 500 and 0.05).

``ConditionalStyleGAN2`` feeds the label to G's mapping network and D's projection (ADA's CIFAR-10 setting).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gansuite.errors import ConfigError
from gansuite.models.gan import ConditionalGAN, UnconditionalGAN
from gansuite.nets.stylegan2 import path_length_penalty


class _StyleGAN2Training:
    """Path-length regularisation and the EMA by images, mixed in before the conditional or unconditional base.

    Args:
        pl_weight: weight of the path-length penalty (ADA: 2; 0 for CIFAR-10, which turns it off).
        pl_every: G updates between path-length penalties (lazy regularisation; 4).
        pl_decay: how fast the penalty's target length follows the observed lengths (0.01).
        pl_shrink: the penalty runs on batch_size // pl_shrink new latents (2).
        ema_kimg: thousand images over which the EMA's weight halves (ADA: batch * 10 / 32; CIFAR-10 500).
        ema_rampup: cap that half-life at this fraction of the images seen so far (CIFAR-10 0.05), or null.
        (the rest: see the base class)
    """

    def __init__(self, *, pl_weight: float = 2.0, pl_every: int = 4, pl_decay: float = 0.01, pl_shrink: int = 2,
                 ema_kimg: float = 10.0, ema_rampup: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        checks = (("pl_weight", pl_weight, pl_weight >= 0, "2 (0 for CIFAR-10)"),
                  ("pl_every", pl_every, isinstance(pl_every, int) and pl_every >= 1, "4"),
                  ("pl_decay", pl_decay, 0 < pl_decay <= 1, "0.01"),
                  ("pl_shrink", pl_shrink, isinstance(pl_shrink, int) and pl_shrink >= 1, "2"),
                  ("ema_kimg", ema_kimg, ema_kimg > 0, "10 (500 for CIFAR-10)"),
                  ("ema_rampup", ema_rampup, ema_rampup is None or ema_rampup > 0, "null (0.05 for CIFAR-10)"))
        for key, value, ok, default in checks:
            if not ok:
                raise ConfigError(f"model.module.{key}={value!r} is out of range; ADA's code uses {default}.")
        self.pl_weight, self.pl_every, self.pl_decay, self.pl_shrink = float(pl_weight), pl_every, pl_decay, pl_shrink
        self.ema_kimg, self.ema_rampup = float(ema_kimg), ema_rampup
        self.register_buffer("pl_mean", torch.zeros(()))

    def ema_decay_now(self, step: int) -> float:
        world = self.trainer.world_size if self._trainer else 1
        per_update = max(self._batch_size(), 1) * world * self.n_critic  # reals D saw per G update
        ema_nimg = self.ema_kimg * 1000
        if self.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.samples_consumed * self.ema_rampup)
        return 0.5 ** (per_update / max(ema_nimg, 1e-8))

    def generator_loss(self, batch, fake) -> dict[str, Tensor]:
        """The base's G terms plus the path-length penalty on the G updates it falls on (every ``pl_every``-th)."""
        terms = super().generator_loss(batch, fake)
        if not self.pl_weight or self.step % self.pl_every:
            return terms
        real = batch[0]
        n = max(real.shape[0] // self.pl_shrink, 1)
        z = torch.randn(n, self.latent_dim, device=real.device, dtype=real.dtype)
        y = batch[1][:n] if getattr(self, "num_classes", None) else None
        penalty, pl_mean = path_length_penalty(self.generator, z, y, self.pl_mean, decay=self.pl_decay, shrink=1)
        self.pl_mean.copy_(pl_mean.detach())
        terms["pl"] = penalty
        terms["loss"] = terms["loss"] + self.pl_weight * self.pl_every * penalty
        return terms


class StyleGAN2(_StyleGAN2Training, UnconditionalGAN):
    """Unconditional StyleGAN2: ``generator(z)``, ``discriminator(x)``; arguments as :class:`_StyleGAN2Training`."""


class ConditionalStyleGAN2(_StyleGAN2Training, ConditionalGAN):
    """Class-conditional StyleGAN2: ``generator(z, y)``, ``discriminator(x, y)``; arguments as
    :class:`_StyleGAN2Training`."""
