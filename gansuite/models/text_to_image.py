"""GAN-INT-CLS (Reed, Akata, Yan, Logeswaran, Schiele & Lee 2016, arXiv:1605.05396): text-to-image synthesis.

G(z, phi(t)) draws an image for a caption's embedding phi(t); D(x, phi(t)) scores image and caption together
(:mod:`gansuite.nets.text_to_image`). Batches are ``(x, y, tokens, wrong)``: images, their classes, their
captions' word ids and mismatched captions' (:mod:`gansuite.data.captions`, :mod:`gansuite.data.captioned_folder`),
or with fixed embeddings (``text_encoder=precomputed`` or ``sentence_transformers``,
:mod:`gansuite.data.text_sources`) the captions' embeddings in place of word ids.

- **GAN-CLS**, the matching-aware D (Algorithm 1): real images with their captions are real; real images
  with mismatched captions and generated images with their captions are fake, half each
  (:func:`gansuite.losses.matching_aware_d`).
- **GAN-INT**, the interpolation term: G also draws for ``beta * phi(t1) + (1 - beta) * phi(t2)`` of two
  captions of the batch (the paper: beta 0.5), and its loss adds ``interpolation_weight`` times the
  generator loss of D's scores of those images with the mixed embeddings. D never sees them as real or fake.
- Not the paper's, off by default: MSGAN's mode-seeking term (``mode_seeking_weight``), against a G that draws
  one image per caption whatever z is.
- The caption encoder lives in D and trains with D's optimizer: by the matching-aware loss and, weighted
  ``joint_weight``, DS-SJE's joint embedding loss between D's image embeddings of the real images and their
  captions (:func:`gansuite.nets.text.joint_embedding_loss`). G reads the embeddings as given (detached).

Grids, evaluations and gansuite-sample draw for 1,000 held-out captions kept in the checkpoint (``captions``:
word ids, or fixed embeddings), taken in turn: the data's ``eval_captions()`` (captioned digits: one caption per
held-out digit, in blocks of eight digits of one class, the classes in turn, so an 8-wide grid shows a class a
row and 10,000 evaluation samples cover every held-out digit ten times) or the first of its ``test_captions()``
(captioned folders: spread over the unseen test classes). The checkpoint also
records the text side the run was trained with (the vocabulary in id order, or the fixed embeddings' encoder and
path, and the held-out captions' texts): loading it where the data now gives another vocabulary is refused
(:meth:`GANINTCLS.check_checkpoint`), never read with shifted word ids. :meth:`GANINTCLS.caption_texts` gives the
text each sample is drawn for, and :meth:`GANINTCLS.encode_caption` a new caption (``gansuite-sample --text``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gansuite.data.captions import PAD, check_caption
from gansuite.errors import ConfigError
from gansuite.losses import matching_aware_d
from gansuite.models.schedule import AdversarialModule, eval_mode
from gansuite.nets.text import joint_embedding_loss

JOINT_CLASSES = ("digit", "caption", "both")
# Grids, evaluations and gansuite-sample draw for these many held-out captions, kept in the checkpoint.
CAPTIONS = 1000


class GANINTCLS(AdversarialModule):
    """Args:
        latent_dim: size of z ~ N(0, I).
        num_classes: the data's classes (DS-SJE's structure); from the data.
        max_words: word ids per caption; from the data.
        vocabulary: the data's words in id order (``<pad>``, ``<unk>``, ...); from the data.
        text_encoder: the built ``text_encoder`` group (:mod:`gansuite.data.text_sources`); with fixed embeddings the
            ``captions`` buffer holds embeddings (1,000 x E float) instead of word ids. None: word ids.
        matching_aware: GAN-CLS's D loss; False gives the plain conditional GAN loss.
        interpolation_weight: weight of GAN-INT's term in G's loss (0: no interpolation).
        beta: the interpolation's mixing weight.
        joint_weight: weight of the joint embedding loss in D's loss (0: the encoder learns from D's loss alone).
        joint_classes: DS-SJE's classes: ``digit`` (the data's classes), ``caption`` (each image against the batch's
            other captions, identical captions one class: :func:`caption_classes`) or ``both`` (the sum).
        mode_seeking_weight: weight of MSGAN's mode-seeking term in G's loss (0: off; :func:`mode_seeking`): G also
            draws every caption from a second z and is penalised when the two images differ less than the noise.
        (the rest: see :class:`~gansuite.models.schedule.AdversarialModule`)
    """

    def __init__(self, *, latent_dim: int, num_classes: int, max_words: int, vocabulary: Sequence[str] | None = None,
                 text_encoder: Any = None, matching_aware: bool = True,
                 interpolation_weight: float = 1.0, beta: float = 0.5, joint_weight: float = 1.0,
                 mode_seeking_weight: float = 0.0,
                 joint_classes: str = "both", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for key, value, fix in (("interpolation_weight", interpolation_weight, 1), ("joint_weight", joint_weight, 1),
                                ("mode_seeking_weight", mode_seeking_weight, 0.1)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"model.module.{key} must be a number, 0 or more (got {value!r}); "
                                  f"set model.module.{key}={fix}.")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta <= 1:
            raise ConfigError(f"model.module.beta must be in [0, 1] (got {beta!r}); set model.module.beta=0.5.")
        if joint_classes not in JOINT_CLASSES:
            raise ConfigError(f"model.module.joint_classes: {joint_classes!r} is unknown; use one of "
                              f"{', '.join(JOINT_CLASSES)}.")
        self.joint_classes = joint_classes
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.matching_aware = bool(matching_aware)
        self.interpolation_weight, self.beta, self.joint_weight = float(interpolation_weight), float(beta), float(joint_weight)
        self.mode_seeking_weight = float(mode_seeking_weight)
        self.vocabulary = list(vocabulary) if vocabulary is not None else None
        self.text_encoder = text_encoder
        self.fixed_text = bool(getattr(text_encoder, "fixed", False))
        # Filled with held-out captions when training starts (padding until then: the start-up dry run).
        if self.fixed_text:
            self.register_buffer("captions", torch.zeros(CAPTIONS, text_encoder.dim))
        else:
            self.register_buffer("captions", torch.zeros(CAPTIONS, max_words, dtype=torch.long))
        self.caption_list: list[str] = []  # the texts of the captions rows
        self._new_captions: list[tuple[Tensor, str]] = []  # fixed embeddings of encode_caption's texts

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and not self.captions.any():
            pick = getattr(datamodule, "eval_captions", None)
            test = pick() if pick is not None else datamodule.test_captions(heldout_phrasings=False)
            tokens, texts = test["tokens"][: len(self.captions)], list(test["texts"][: len(self.captions)])
            repeats = -(-len(self.captions) // len(tokens))  # fewer captions than rows: repeated in order
            self.captions.copy_(tokens.repeat(repeats, 1)[: len(self.captions)].to(self.captions))
            self.caption_list = (texts * repeats)[: len(self.captions)]

    # ------------------------------------------------------------------ the text side in the checkpoint
    def text_record(self) -> dict[str, Any]:
        """What the captions were read with: the vocabulary in id order, or the fixed embeddings' kind and path."""
        if self.fixed_text:
            return self.text_encoder.record()
        return {"kind": "word_gru", "words": self.vocabulary}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["gansuite_text"] = {**self.text_record(), "captions": list(self.caption_list)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.check_checkpoint(checkpoint, "the checkpoint")

    def check_checkpoint(self, checkpoint: dict[str, Any], path: Path | str) -> None:
        """Refuse, in one sentence, a checkpoint trained with another vocabulary (or other fixed embeddings) than the
        data gives now, before its weights are read; take its held-out captions' texts. A checkpoint written before
        the text side was recorded is taken as it is."""
        stored = checkpoint.get("gansuite_text")
        if not isinstance(stored, dict):
            return
        mine = self.text_record()
        if stored.get("kind") != mine["kind"]:
            raise ConfigError(f"{path} was trained with text_encoder={stored.get('kind')} but this config reads "
                              f"captions with text_encoder={mine['kind']}; use the run's own text_encoder.")
        if mine["kind"] == "word_gru":
            then, now = stored.get("words"), mine["words"]
            if then is not None and now is not None and list(then) != list(now):
                i = next((k for k, (a, b) in enumerate(zip(then, now, strict=False)) if a != b), min(len(then), len(now)))
                detail = (f"word id {i} was {then[i]!r} and is now {now[i]!r}" if i < min(len(then), len(now))
                          else f"{len(then)} words then, {len(now)} now")
                raise ConfigError(f"{path} was trained with another vocabulary than the data gives now ({detail}), "
                                  "so its word ids would read other words; use the captions the run was trained on "
                                  "(data.root, data.min_word_count as they were), or train a new run.")
        elif (stored.get("path"), stored.get("dim")) != (mine.get("path"), mine.get("dim")):
            raise ConfigError(f"{path} was trained with the embeddings of {stored.get('path')} ({stored.get('dim')} "
                              f"numbers each) but this config reads {mine.get('path')} ({mine.get('dim')}); set "
                              f"text_encoder.path={stored.get('path')} as the run had it.")
        self.caption_list = [str(t) for t in stored.get("captions") or []]

    def caption_texts(self, inputs: tuple[Tensor, Tensor]) -> list[str]:
        """The caption each sample of :meth:`make_inputs`-style inputs ``(z, captions)`` is drawn for: word ids
        decoded by the vocabulary (padding dropped), or for fixed embeddings the text of the held-out caption (or
        the :meth:`encode_caption` text) whose embedding the row is ("" for an embedding of neither)."""
        rows = inputs[1]
        if not rows.is_floating_point():
            words = self.vocabulary or []
            return [" ".join(words[i] if i < len(words) else "<unk>" for i in row if i != PAD)
                    for row in rows.tolist()]
        known = [(self.captions[k], text) for k, text in enumerate(self.caption_list[: len(self.captions)])]
        known += self._new_captions
        if not known:
            return [""] * len(rows)
        table = torch.stack([emb.to(rows.device, rows.dtype) for emb, _ in known])
        same = (rows.unsqueeze(1) == table.unsqueeze(0)).all(-1)  # rows x known
        found, index = same.any(1).tolist(), same.to(torch.int8).argmax(1).tolist()
        return [known[k][1] if hit else "" for hit, k in zip(found, index, strict=True)]

    def encode_caption(self, text: str) -> Tensor:
        """A new caption as one row of generator input (1 x ``max_words`` word ids, or 1 x E): by the vocabulary
        (:func:`gansuite.data.captions.check_caption`: refused when it holds no known word), or by the text
        encoder's model (``sentence_transformers``); ``precomputed`` embeddings cannot embed new text."""
        if self.fixed_text:
            embedding = self.text_encoder.embed_new(text).to(self.captions)
            self._new_captions.append((embedding[0], text))
            return embedding
        vocab = {word: i for i, word in enumerate(self.vocabulary or [])}
        return check_caption(text, vocab, self.captions.shape[1])

    # ------------------------------------------------------------------ sampling
    def make_inputs(self, n: int, generator: torch.Generator, start: int = 0) -> tuple[Tensor, Tensor]:
        """z, and the held-out captions from row ``start`` on, in turn (an evaluation's later batches go on where
        the earlier ones stopped: :func:`gansuite.sampling.batch_inputs`)."""
        z = torch.randn(n, self.latent_dim, generator=generator).to(self.device, self.dtype)
        rows = (start + torch.arange(n, device=self.captions.device)) % len(self.captions)
        return z, self.captions[rows]

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
        if self.mode_seeking_weight:  # a second image of every caption, from other noise
            z_other = torch.randn_like(z)
            made.update(z=z, z_other=z_other, other_fake=self.generator(z_other, text))
        return made

    def discriminator_loss(self, batch, made: dict[str, Tensor], regularize: bool) -> dict[str, Tensor]:
        x, y, tokens, wrong = batch
        text = self.discriminator.embed_text(tokens)
        fake = made["fake"].detach()
        real_out, fake_out = self.discriminator(x, text), self.discriminator(fake, text)
        self._observe_real(real_out)
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
            terms["reg"] = self._regularize(lambda v: self.discriminator(v, text_fixed), x, fake, real_out, fake_out)
        return terms

    def generator_loss(self, batch, made: dict[str, Tensor]) -> dict[str, Tensor]:
        # A relativistic loss compares with the reals under their own captions, for the interpolated captions too.
        real = self._real_scores(lambda v: self.discriminator(v, made["text"]), batch[0])
        terms = {"matched": self.objective.generator(self.discriminator(made["fake"], made["text"]), real)}
        loss = terms["matched"]
        if self.interpolation_weight:
            terms["interpolated"] = self.objective.generator(self.discriminator(made["mixed_fake"], made["mixed"]), real)
            loss = loss + self.interpolation_weight * terms["interpolated"]
        if self.mode_seeking_weight:
            terms["mode_seeking"] = mode_seeking(made["fake"], made["other_fake"], made["z"], made["z_other"])
            loss = loss + self.mode_seeking_weight * terms["mode_seeking"]
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


def mode_seeking(a: Tensor, b: Tensor, z_a: Tensor, z_b: Tensor, eps: float = 1e-5) -> Tensor:
    """MSGAN's mode-seeking term (Mao, Lee, Tseng, Ma & Yang 2019): ``1 / (mean|a - b| / mean|z_a - z_b| + eps)``
    for images ``a``, ``b`` of the same conditions drawn from noise ``z_a``, ``z_b``; small when the images differ
    as much as their noise does, so G cannot ignore z."""
    # In float32: under 16-bit precision a collapsed G's 1 / eps = 1e5 would overflow half precision.
    return 1.0 / ((a.float() - b.float()).abs().mean() / (z_a.float() - z_b.float()).abs().mean() + eps)
