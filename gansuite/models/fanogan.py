"""f-AnoGAN (Schlegl, Seeböck, Waldstein, Langs & Schmidt-Erfurth 2019, Medical Image Analysis 54): anomaly
detection with a GAN of normal images and an encoder into its latent space.

Two phases, chained in one run as LAPGAN's levels are. Steps ``[0, gan_steps)`` train a GAN on normal images
(the paper's WGAN-GP: ``loss=wgan_gp``). Later steps train the encoder E with G and D fixed, by the paper's
izi_f loss (image -> z -> image, with D's features):

    mean((x - G(E(x)))^2)  +  kappa * mean((f(x) - f(G(E(x))))^2)

(means over pixels and over D's last hidden features f, the paper's 1/n and 1/n_d). An image's anomaly
score is the same sum, with G, E and D in eval mode. The GAN alone is ``trainer.max_steps = gan_steps``;
resuming that run with a larger ``trainer.max_steps`` trains the encoder, as LAPGAN's levels train one at
a time.

What a step is stays the schedule's in both phases, so checkpoints, the progress bar and the data stream
count alike: ``n_critic`` batches and ``n_critic + 1`` optimizer steps. In the encoder phase every batch
updates E through G's optimizer (E's parameters sit in it beside G's, which get no gradients then), and D's
optimizer takes its step of the step with no gradients: it changes nothing and keeps the count.

In the encoder phase ``train/g_loss`` is the izi_f loss (``train/g_image``, ``train/g_feature`` its terms), and
G's learning-rate scheduler, if any, steps on into E's phase. There is no EMA: by the encoder phase its
decay has ramped up, and an EMA encoder would stay near its random start.

Not the paper's: the paper's networks are the 64 px ResNets of WGAN-GP's code with z uniform in [-1, 1]
and a tanh on E; here G is DCGAN's, E GANomaly's encoder, z ~ N(0, I) and E's output linear.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gansuite.errors import ConfigError
from gansuite.models.gan import UnconditionalGAN
from gansuite.models.schedule import eval_mode


class FAnoGAN(UnconditionalGAN):
    """Args:
        gan_steps: steps that train the GAN; the encoder trains after them.
        kappa: weight of the feature residual, in the encoder's loss and the score (the paper: 1).
        (the rest: see :class:`~gansuite.models.gan.UnconditionalGAN`)
    """

    def __init__(self, *, gan_steps: int, kappa: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(gan_steps, bool) or not isinstance(gan_steps, int) or gan_steps < 0:
            raise ConfigError(f"model.module.gan_steps must be a count of steps, 0 or more (got {gan_steps!r}); "
                              f"set model.module.gan_steps=2000.")
        if self.discriminator is None:
            raise ConfigError("model.discriminator: f-AnoGAN needs its GAN's discriminator; keep the one of "
                              "conf/model/fanogan.yaml.")
        if self.generator_ema is not None:
            # The EMA's decay has ramped up over the GAN steps: its encoder would stay near its random start.
            raise ConfigError("model.module.ema_decay: f-AnoGAN scores with the trained G and E (an EMA's encoder "
                              "would lag far behind); set model.module.ema_decay=null.")
        if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or kappa < 0:
            raise ConfigError(f"model.module.kappa must be a number, 0 or more (got {kappa!r}); set model.module.kappa=1.")
        self.gan_steps, self.kappa = gan_steps, float(kappa)

    @property
    def encoder_phase(self) -> bool:
        return self.step >= self.gan_steps

    @property
    def scores_ready(self) -> bool:
        """Whether the encoder has trained at all: before, scores would be those of a random E."""
        return self.step > self.gan_steps

    # ------------------------------------------------------------------ schedule
    def _adversarial_batch(self, batch: Any) -> None:
        if not self.encoder_phase:
            return super()._adversarial_batch(batch)
        opt_g, opt_d = self.optimizers()
        self._fix_gan()
        if (self.batches_consumed + 1) % self.n_critic:
            self.toggle_optimizer(opt_g)
            terms = self.generator_loss(batch, None)
            self._update(opt_g, terms["loss"], "train/g_loss")
            self.untoggle_optimizer(opt_g)
            self._log_terms("g", terms)
        else:  # the step's last batch: D's optimizer counts (first, as D's update comes first in the GAN phase),
            # then the update that steps the schedulers
            opt_d.zero_grad(set_to_none=True)
            opt_d.step()
            self._generator_step(opt_g, batch, None)

    def _fix_gan(self) -> None:
        """G and D fixed for the encoder phase: no gradients, and eval mode, so that batch norm neither
        normalises by the batch nor moves its running statistics. Lightning puts modules back in train mode
        between epochs, hence every batch."""
        for net in (self.generator.decoder, self.discriminator):
            net.requires_grad_(False)
            net.eval()

    def generator_loss(self, batch, fake) -> dict[str, Tensor]:
        if not self.encoder_phase:
            return super().generator_loss(batch, fake)
        x = batch[0]
        return izif_terms(x, self.generator.reconstruct(x), self.discriminator.features, self.kappa)

    # ------------------------------------------------------------------ scoring
    @property
    def score_definition(self) -> str:
        return (f"mean((x - G(E(x)))^2) over the pixels + {self.kappa:g} * mean((f(x) - f(G(E(x))))^2) over D's "
                f"last hidden features f")

    @torch.no_grad()
    def reconstruct(self, x: Tensor, ema: bool = True) -> Tensor:
        """G(E(x)) of the (EMA) generator and encoder, in eval mode."""
        with self.evaluating(ema) as net:
            return net.reconstruct(x)

    @torch.no_grad()
    def anomaly_score(self, x: Tensor, ema: bool = True) -> Tensor:
        """One score per image (higher: more anomalous): the izi_f loss of each image, in eval mode."""
        with self.evaluating(ema) as net, eval_mode(self.discriminator):
            return izif_terms(x, net.reconstruct(x), self.discriminator.features, self.kappa, reduce=False)["loss"]


def izif_terms(x: Tensor, x_hat: Tensor, features, kappa: float, reduce: bool = True) -> dict[str, Tensor]:
    """The izi_f loss and its terms for images ``x`` and their reconstructions ``x_hat = G(E(x))``;
    ``features``: D's hidden layer f. ``reduce=False`` gives one value per image (the anomaly score)."""
    image = (x_hat - x).pow(2).flatten(1).mean(1)
    feature = (features(x_hat) - features(x).detach()).pow(2).flatten(1).mean(1)
    terms = {"image": image, "feature": feature, "loss": image + kappa * feature}
    return {k: v.mean() for k, v in terms.items()} if reduce else terms

