"""GANomaly (Akçay, Atapour-Abarghouei & Breckon 2018, arXiv:1805.06725): anomaly detection by an
adversarially trained encoder-decoder-encoder.

Trained on normal images only, G encodes x to z, decodes z to x_hat and encodes x_hat again to z_hat
(:class:`gansuite.nets.ganomaly.EncoderDecoderEncoder`). Its loss is the paper's weighted sum

    w_adv * ||f(x) - f(x_hat)||^2  +  w_con * |x - x_hat|_1  +  w_enc * ||z - z_hat||^2

(means over elements; f: D's last hidden features, :class:`gansuite.nets.ganomaly.FeatureDiscriminator`),
and D is trained to tell x from x_hat with the configured objective (the paper's BCE:
``loss=nonsaturating``). An image's anomaly score is ``mean((z - z_hat)^2)``: an anomaly, never seen in
training, is encoded less consistently. The schedule is :class:`gansuite.models.schedule.AdversarialModule`'s.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gansuite.errors import ConfigError
from gansuite.models.schedule import AdversarialModule

# Grids and gansuite-sample reconstruct these many held-out images, kept in the checkpoint.
EXAMPLES = 64


class GANomaly(AdversarialModule):
    """Args:
        adversarial_weight, contextual_weight, encoder_weight: w_adv, w_con, w_enc (the paper: 1, 50, 1).
        score: ``latent``, the paper's ``mean((z - z_hat)^2)``, or ``reconstruction``, ``mean((x - x_hat)^2)``:
            the score of the baseline without a GAN (``model=conv_autoencoder``: no D, no second encoder).
        (the rest: see :class:`AdversarialModule`)
    """

    def __init__(self, *, adversarial_weight: float = 1.0, contextual_weight: float = 50.0,
                 encoder_weight: float = 1.0, score: str = "latent", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if score not in ("latent", "reconstruction"):
            raise ConfigError(f"model.module.score: {score!r} is unknown; use latent or reconstruction.")
        self.score_kind = score
        self.weights = {"adversarial": adversarial_weight, "contextual": contextual_weight, "encoder": encoder_weight}
        # Filled with held-out images when training starts (zeros until then: the start-up dry run).
        self.register_buffer("examples", torch.zeros(EXAMPLES, *self.generator.shape))

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and not self.examples.abs().sum():
            x, _ = datamodule.heldout(EXAMPLES)
            self.examples[: len(x)] = x.to(self.examples)

    def make_inputs(self, n: int, generator: torch.Generator) -> Tensor:
        idx = torch.randint(len(self.examples), (n,), generator=generator).to(self.examples.device)
        return self.examples[idx].to(self.dtype)

    def generate(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        return self.generator.codes(batch[0])

    def discriminator_loss(self, batch, fake, regularize: bool) -> dict[str, Tensor]:
        return self._d_terms(self.discriminator, batch[0], fake[0].detach(), regularize)

    def generator_loss(self, batch, fake) -> dict[str, Tensor]:
        features = self.discriminator.features if self.discriminator is not None else None
        return ganomaly_terms(batch[0], *fake, features, self.weights)

    @property
    def score_definition(self) -> str:
        return {"latent": "mean((z - z_hat)^2) over the latent dimensions",
                "reconstruction": "mean((x - x_hat)^2) over the pixels"}[self.score_kind]

    @torch.no_grad()
    def reconstruct(self, x: Tensor, ema: bool = True) -> Tensor:
        """x_hat for images ``x``, from the (EMA) generator in eval mode."""
        return self.sample(x, ema=ema)

    @torch.no_grad()
    def anomaly_score(self, x: Tensor, ema: bool = True) -> Tensor:
        """One score per image (higher: more anomalous), of the (EMA) generator in eval mode: see ``score``."""
        with self.evaluating(ema) as net:
            x_hat, z, z_hat = net.codes(x)
        diff = (z - z_hat) if self.score_kind == "latent" else (x - x_hat)
        return diff.pow(2).flatten(1).mean(1)


def ganomaly_terms(x: Tensor, x_hat: Tensor, z: Tensor, z_hat: Tensor, features, weights: dict[str, float]
                   ) -> dict[str, Tensor]:
    """G's loss and its terms for real ``x`` and G's ``(x_hat, z, z_hat)``; ``features``: D's hidden layer, or
    None without a D (the autoencoder baseline: no adversarial term)."""
    terms = {"contextual": F.l1_loss(x_hat, x), "encoder": F.mse_loss(z_hat, z)}
    if features is not None:
        terms["adversarial"] = F.mse_loss(features(x_hat), features(x).detach())
    terms["loss"] = sum(weights[name] * value for name, value in terms.items())
    return terms
