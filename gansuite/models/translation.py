"""Paired image-to-image translation: pix2pix, SRResNet and SRGAN, trained on aligned (source, target) pairs.

G's loss is a content term against the target plus an adversarial one; SRResNet, without a D, keeps the
content term alone. Unpaired translation (CycleGAN) is :mod:`gansuite.models.cyclegan`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from gansuite.errors import ConfigError
from gansuite.models.schedule import AdversarialModule


def draw_indices(size: int, n: int, generator: torch.Generator) -> Tensor:
    """``n`` indices into ``size`` held-out examples: distinct when there are enough; a seeded generator
    gives the same ones in every run."""
    if n <= size:
        return torch.randperm(size, generator=generator)[:n]
    return torch.randint(size, (n,), generator=generator)


class PairedTranslationGAN(AdversarialModule):
    """x_a -> x_b learned from aligned pairs: pix2pix, SRResNet and SRGAN. Batches are ``(a, b)``.

    G's loss is ``content_weight * content_loss(G(a), b) + adversarial_weight * objective.g_loss``;
    with ``discriminator=None`` it is the content term alone. A conditional D judges the pair
    ``discriminator(a, b)`` (pix2pix); otherwise ``discriminator(b)`` (SRGAN).

    Grids, the dry run and evaluation draw their inputs from ``examples``, held-out pairs that
    the data module hands over (kept with the module, not in checkpoints). ``make_inputs``
    returns ``(a, b)``, so a grid can show the target beside the output.

    Args:
        examples: ``(a, b)`` held-out source and target images.
        content_loss: ``(output, target) -> scalar``, e.g. ``torch.nn.L1Loss()``; None for none.
        content_weight, adversarial_weight: the weights of G's two terms.
        conditional_d: D sees the source image as well as the (real or generated) target.
        (the rest: see :class:`AdversarialModule`)
    """

    augmentable = False  # a conditional D takes the source image first; augmenting the pair consistently is not built

    def __init__(self, *, examples: tuple[Tensor, Tensor], content_loss: Callable[[Tensor, Tensor], Tensor] | None,
                 content_weight: float = 1.0, adversarial_weight: float = 1.0, conditional_d: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.discriminator is None and content_loss is None:
            raise ConfigError("model.module.content_loss is null and there is no discriminator, so G has no loss; "
                              "set model.module.content_loss or model.discriminator.")
        if self.discriminator is None and (self.regularizer is not None or self.n_critic != 1):
            raise ConfigError("loss: a model without a discriminator (SRResNet) has no D to regularize or update "
                              "n_critic times; use loss=nonsaturating (its regularizer none, n_critic 1).")
        a, b = examples
        if len(a) != len(b) or len(a) == 0:
            raise ValueError(f"PairedTranslationGAN: examples must be non-empty aligned pairs, got {len(a)} and {len(b)}")
        self.register_buffer("examples_a", a, persistent=False)
        self.register_buffer("examples_b", b, persistent=False)
        self.content_loss = content_loss
        self.content_weight = content_weight
        self.adversarial_weight = adversarial_weight
        self.conditional_d = conditional_d

    def make_inputs(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = draw_indices(len(self.examples_a), n, generator).to(self.examples_a.device)
        return self.examples_a[idx], self.examples_b[idx]

    def run_generator(self, net: nn.Module, inputs: tuple[Tensor, Tensor]) -> Tensor:
        return net(inputs[0])

    def _judge(self, source: Tensor, target: Tensor) -> Tensor:
        return self.discriminator(source, target) if self.conditional_d else self.discriminator(target)

    def score(self, samples: Tensor, inputs: tuple[Tensor, Tensor]) -> Tensor:
        return self._judge(inputs[0], samples)

    def generate(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        return self.generator(batch[0])

    def discriminator_loss(self, batch, fake: Tensor, regularize: bool) -> dict[str, Tensor]:
        source, real = batch
        return self._d_terms(lambda x: self._judge(source, x), real, fake.detach(), regularize)

    def generator_loss(self, batch, fake: Tensor) -> dict[str, Tensor]:
        source, real = batch
        terms: dict[str, Tensor] = {}
        loss = fake.new_zeros(())
        if self.content_loss is not None:
            terms["content"] = self.content_loss(fake, real)
            loss = loss + self.content_weight * terms["content"]
        if self.discriminator is not None:
            terms["adversarial"] = self._g_adversarial(lambda x: self._judge(source, x), real, fake)
            loss = loss + self.adversarial_weight * terms["adversarial"]
        terms["loss"] = loss
        return terms
