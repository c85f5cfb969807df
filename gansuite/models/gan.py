"""The unconditional z -> x GAN and the class-conditional (z, y) -> x GAN whose D also sees the label.

:class:`UnconditionalGAN` trains ``model=gan``, ``dcgan``, ``pacgan_mlp``, ``resnet_wgan_gp`` and ``sngan``;
:class:`ConditionalGAN` trains ``model=cgan``, ``cgan_mlp``, ``projection`` and ``sngan_projection``.
Both run the schedule of :class:`gansuite.models.schedule.AdversarialModule`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gansuite.models.schedule import AdversarialModule


class UnconditionalGAN(AdversarialModule):
    """z -> x: the vanilla GAN, DCGAN and every unconditional family.

    Args:
        latent_dim: size of the noise vector z ~ N(0, I).
        (the rest: see :class:`AdversarialModule`)
    """

    def __init__(self, *, latent_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.latent_dim = latent_dim

    def make_inputs(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device, self.dtype)

    def generate(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        real = batch[0]
        z = torch.randn(real.shape[0], self.latent_dim, device=real.device, dtype=real.dtype)
        return self.generator(z)

    def discriminator_loss(self, batch, fake: Tensor, regularize: bool) -> dict[str, Tensor]:
        return self._d_terms(self.discriminator, batch[0], fake.detach(), regularize)

    def generator_loss(self, batch, fake: Tensor) -> dict[str, Tensor]:
        return {"loss": self._g_adversarial(self.discriminator, batch[0], fake)}


class ConditionalGAN(AdversarialModule):
    """(z, y) -> x: class-conditional families whose D also sees the label (cGAN, projection cGAN).

    The generator is called as ``generator(z, y)`` and the discriminator as ``discriminator(x, y)``
    with integer labels ``y`` (B,). Fakes of a batch are made for that batch's real labels, so the
    fake class histogram follows the data's and each real sample has a fake of its own class (the
    gradient penalty interpolates between same-class pairs). Grids and metrics ask for classes
    ``0, 1, ..., K-1, 0, 1, ...`` in turn, so a grid with K columns has one class per column.

    Args:
        latent_dim: size of the noise vector z ~ N(0, I).
        num_classes: K, from the data (``gansuite-train`` passes it in).
        (the rest: see :class:`AdversarialModule`)
    """

    def __init__(self, *, latent_dim: int, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.num_classes = num_classes

    def make_inputs(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        z = torch.randn(n, self.latent_dim, generator=generator).to(self.device, self.dtype)
        return z, torch.arange(n, device=self.device) % self.num_classes

    def run_generator(self, net: nn.Module, inputs: tuple[Tensor, Tensor]) -> Tensor:
        z, y = inputs
        return net(z, y)

    def score(self, samples: Tensor, inputs: tuple[Tensor, Tensor]) -> Tensor:
        return self.discriminator(samples, inputs[1])

    def generate(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        real, y = batch
        z = torch.randn(real.shape[0], self.latent_dim, device=real.device, dtype=real.dtype)
        return self.generator(z, y), y

    def discriminator_loss(self, batch, fake: tuple[Tensor, Tensor], regularize: bool) -> dict[str, Tensor]:
        real, y = batch
        return self._d_terms(lambda x: self.discriminator(x, y), real, fake[0].detach(), regularize)

    def generator_loss(self, batch, fake: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        fake_x, y = fake
        return {"loss": self._g_adversarial(lambda x: self.discriminator(x, y), batch[0], fake_x)}
