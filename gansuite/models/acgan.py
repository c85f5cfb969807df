"""ACGAN (Odena, Olah & Shlens 2017): D does not see the label; it predicts it.

G is conditional, ``generator(z, y)`` (the convolutional cGAN generator: z joined with the
one-hot label). D has one body and two heads: the usual real/fake score and K class logits.
Both networks also minimise the class cross-entropy: D on real and on fake images, G on its
fakes (the paper's L_C, added to L_S for D and to the generator's adversarial loss for G).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from gansuite.errors import ConfigError
from gansuite.models.gan import ConditionalGAN


class ACGAN(ConditionalGAN):
    """The ACGAN schedule: adversarial loss plus ``class_weight`` times the class cross-entropy.

    Args:
        class_weight: weight of the class loss L_C in both updates (the paper: 1).
        fake_class_loss: D's L_C also covers the fakes, labelled with the classes they were made
            for (the paper). False trains D's class head on real images only, so it never learns
            to read G's ambiguous digits as the class G asked for; G's L_C is unchanged.
        (the rest: see :class:`gansuite.models.gan.ConditionalGAN`)
    """

    def __init__(self, *, class_weight: float = 1.0, fake_class_loss: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not class_weight >= 0:
            raise ConfigError(f"model.module.class_weight must be >= 0 (got {class_weight!r}); the paper uses 1.0.")
        self.class_weight = class_weight
        self.fake_class_loss = bool(fake_class_loss)

    def score(self, samples: Tensor, inputs: Any) -> Tensor:
        return self.discriminator(samples)[0]

    def discriminator_loss(self, batch, fake: tuple[Tensor, Tensor], regularize: bool) -> dict[str, Tensor]:
        real, y = batch
        fake_x, fake_y = fake[0].detach(), fake[1]
        real_out, real_logits = self.discriminator(real)
        fake_out, fake_logits = self.discriminator(fake_x)
        self._observe_real(real_out)
        adversarial = self.objective.d_loss(real_out, fake_out)
        class_loss = F.cross_entropy(real_logits, y)
        if self.fake_class_loss:
            class_loss = class_loss + F.cross_entropy(fake_logits, fake_y)
        terms = {
            "loss": adversarial + self.class_weight * class_loss,
            "adv": adversarial,
            "class": class_loss,
            "real_acc": (real_logits.argmax(1) == y).float().mean(),
            "real_score": real_out.mean(),
            "fake_score": fake_out.mean(),
        }
        if regularize:
            terms["reg"] = self._regularize(lambda x: self.discriminator(x)[0], real, fake_x, real_out, fake_out)
        return terms

    def generator_loss(self, batch, fake: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        fake_x, y = fake
        out, logits = self.discriminator(fake_x)
        adversarial = self.objective.generator(out, self._real_scores(lambda x: self.discriminator(x)[0], batch[0]))
        class_loss = F.cross_entropy(logits, y)
        return {"loss": adversarial + self.class_weight * class_loss, "adv": adversarial, "class": class_loss}
