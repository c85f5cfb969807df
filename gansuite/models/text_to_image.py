"""GAN-INT-CLS (Reed, Akata, Yan, Logeswaran, Schiele & Lee 2016, arXiv:1605.05396): text-to-image synthesis.

G(z, phi(t)) draws an image for a caption's embedding phi(t); D(x, phi(t)) scores image and caption together
(:mod:`gansuite.nets.text_to_image`). Batches are ``(x, y, tokens, wrong)``: images, their classes, their
captions' word ids and mismatched captions' (:mod:`gansuite.data.captions`).

- **GAN-CLS**, the matching-aware D (Algorithm 1): real images with their captions are real; real images
  with mismatched captions and generated images with their captions are fake, half each
  (:func:`gansuite.losses.matching_aware_d`).
- **GAN-INT**, the interpolation term: G also draws for ``beta * phi(t1) + (1 - beta) * phi(t2)`` of two
  captions of the batch (the paper: beta 0.5), and its loss adds ``interpolation_weight`` times the
  generator loss of D's scores of those images with the mixed embeddings. D never sees them as real or fake.
- The caption encoder lives in D and trains with D's optimizer: by the matching-aware loss and, weighted
  ``joint_weight``, DS-SJE's joint embedding loss between D's image embeddings of the real images and their
  captions (:func:`gansuite.nets.text.joint_embedding_loss`). G reads the embeddings as given (detached).

Grids and metrics draw for held-out captions kept in the checkpoint (``captions``): digit after digit in
the held-out split's order, each in its training phrasings.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gansuite.errors import ConfigError
from gansuite.losses import matching_aware_d
from gansuite.models.schedule import AdversarialModule, eval_mode
from gansuite.nets.text import joint_embedding_loss

JOINT_CLASSES = ("digit", "caption", "both")
# Grids and gansuite-sample draw for these many held-out captions, kept in the checkpoint.
CAPTIONS = 80


class GANINTCLS(AdversarialModule):
    """Args:
        latent_dim: size of z ~ N(0, I).
        num_classes: the data's classes (DS-SJE's structure); from the data.
        max_words: word ids per caption; from the data.
        matching_aware: GAN-CLS's D loss; False gives the plain conditional GAN loss.
        interpolation_weight: weight of GAN-INT's term in G's loss (0: no interpolation).
        beta: the interpolation's mixing weight.
        joint_weight: weight of the joint embedding loss in D's loss (0: the encoder learns from D's loss alone).
        (the rest: see :class:`~gansuite.models.schedule.AdversarialModule`)
    """

    def __init__(self, *, latent_dim: int, num_classes: int, max_words: int, matching_aware: bool = True,
                 interpolation_weight: float = 1.0, beta: float = 0.5, joint_weight: float = 1.0,
                 joint_classes: str = "digit", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for key, value in (("interpolation_weight", interpolation_weight), ("joint_weight", joint_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"model.module.{key} must be a number, 0 or more (got {value!r}); "
                                  f"set model.module.{key}=1.")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
            raise ConfigError(f"model.module.beta must be in [0, 1] (got {beta!r}); set model.module.beta=0.5.")
        if joint_classes not in JOINT_CLASSES:
            raise ConfigError(f"model.module.joint_classes: {joint_classes!r} is unknown; use one of "
                              f"{', '.join(JOINT_CLASSES)}.")
        self.joint_classes = joint_classes
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.matching_aware = bool(matching_aware)
        self.interpolation_weight, self.beta, self.joint_weight = float(interpolation_weight), float(beta), float(joint_weight)
        # Filled with held-out captions when training starts (padding until then: the start-up dry run).
        self.register_buffer("captions", torch.zeros(CAPTIONS, max_words, dtype=torch.long))

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and not self.captions.any():
            tokens = datamodule.test_captions(heldout_phrasings=False)["tokens"][: len(self.captions)]
            self.captions[: len(tokens)] = tokens.to(self.captions)

    # ------------------------------------------------------------------ sampling
    def make_inputs(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        z = torch.randn(n, self.latent_dim, generator=generator).to(self.device, self.dtype)
        return z, self.captions[torch.arange(n, device=self.captions.device) % len(self.captions)]

    def embed(self, tokens: Tensor) -> Tensor:
        """Caption embeddings from D's encoder, in eval mode (no word dropout) and without gradients."""
        with eval_mode(self.discriminator.text), torch.no_grad():
            return self.discriminator.embed_text(tokens)

    def run_generator(self, net: nn.Module, inputs: tuple[Tensor, Tensor]) -> Tensor:
        z, tokens = inputs
        return net(z, self.embed(tokens).to(z.dtype))

    def score(self, samples: Tensor, inputs: tuple[Tensor, Tensor]) -> Tensor:
        return self.discriminator(samples, self.embed(inputs[1]).to(samples.dtype))

    # ------------------------------------------------------------------ one step
    def generate(self, batch) -> dict[str, Tensor]:
        x, _, tokens, _ = batch
        with torch.no_grad():
            text = self.discriminator.embed_text(tokens)
        z = torch.randn(x.shape[0], self.latent_dim, device=x.device, dtype=x.dtype)
        made = {"fake": self.generator(z, text), "text": text}
        if self.interpolation_weight:
            mixed = interpolate(text, self.beta)
            z_mixed = torch.randn_like(z)
            made.update(mixed_fake=self.generator(z_mixed, mixed), mixed=mixed)
        return made

    def discriminator_loss(self, batch, made: dict[str, Tensor], regularize: bool) -> dict[str, Tensor]:
        x, y, tokens, wrong = batch
        text = self.discriminator.embed_text(tokens)
        fake = made["fake"].detach()
        real_out, fake_out = self.discriminator(x, text), self.discriminator(fake, text)
        if self.matching_aware:
            wrong_out = self.discriminator(x, self.discriminator.embed_text(wrong))
            loss = matching_aware_d(self.objective.d_loss, real_out, wrong_out, fake_out)
        else:
            loss = self.objective.d_loss(real_out, fake_out)
        terms = {"real_score": real_out.mean(), "fake_score": fake_out.mean()}
        if self.matching_aware:
            terms["wrong_score"] = wrong_out.mean()
        if self.joint_weight:
            image = self.discriminator.embed_images(x)
            joint = 0.0
            if self.joint_classes in ("digit", "both"):
                joint = joint + joint_embedding_loss(image, text, y, self.num_classes)
            if self.joint_classes in ("caption", "both"):  # each image's caption against the batch's other captions
                joint = joint + joint_embedding_loss(image, text, caption_classes(tokens), len(x))
            terms["joint"] = joint
            loss = loss + self.joint_weight * joint
        terms["loss"] = loss
        if regularize:
            text_fixed = text.detach()
            terms["reg"] = self.regularizer(lambda v: self.discriminator(v, text_fixed), x, fake)
        return terms

    def generator_loss(self, batch, made: dict[str, Tensor]) -> dict[str, Tensor]:
        terms = {"matched": self.objective.g_loss(self.discriminator(made["fake"], made["text"]))}
        loss = terms["matched"]
        if self.interpolation_weight:
            terms["interpolated"] = self.objective.g_loss(self.discriminator(made["mixed_fake"], made["mixed"]))
            loss = loss + self.interpolation_weight * terms["interpolated"]
        terms["loss"] = loss
        return terms


def interpolate(text: Tensor, beta: float) -> Tensor:
    """GAN-INT's embeddings: ``beta * t_i + (1 - beta) * t_{i-1}``, each caption mixed with the batch's previous one."""
    return beta * text + (1 - beta) * text.roll(1, 0)


def caption_classes(tokens: Tensor) -> Tensor:
    """One class per distinct caption of the batch: each row's label is the index of the first row with the
    same word ids, so captions that say the same thing are never each other's negatives."""
    same = (tokens.unsqueeze(1) == tokens.unsqueeze(0)).all(-1)  # B x B
    return same.to(torch.int8).argmax(1)
