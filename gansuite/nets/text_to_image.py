"""GAN-INT-CLS's networks (Reed, Akata, Yan, Logeswaran, Schiele & Lee 2016, "Generative adversarial text to
image synthesis"): DCGAN's G and D, conditioned on a caption embedding as the paper does.

Both compress the embedding by a fully connected layer and LeakyReLU(0.2) (the paper: 1,024 -> 128). G joins
it to z and runs DCGAN's generator; D runs DCGAN's convolutions down to the last map (4 x 4 at 32 and
64 px, 7 x 7 at 28), replicates the compressed embedding over that map, joins it depthwise, and scores the
joint map by a 1 x 1 convolution with LeakyReLU and the last map-sized convolution.

The caption encoder (:class:`gansuite.nets.text.WordGRUEncoder`) lives in D, with a linear map of D's pooled
image features into the same embedding space: D's optimizer trains it, by the matching-aware loss and by
DS-SJE's joint embedding loss between those image embeddings and the captions'; G takes its embeddings as
given. With fixed embeddings (``text_encoder=precomputed`` or ``sentence_transformers``) D's encoder is the
identity (:class:`gansuite.nets.text.FixedText`), and the joint embedding loss trains D's image embedding alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from gansuite.nets import dcgan
from gansuite.nets.text import FixedText, WordGRUEncoder


def _compress(text_dim: int, projected: int) -> nn.Module:
    return nn.Sequential(nn.Linear(text_dim, projected), nn.LeakyReLU(0.2, True))


class TextConditionalGenerator(nn.Module):
    """(z (B, latent_dim), caption embeddings (B, text_dim)) -> images (B, C, R, R) in [-1, 1].

    Args:
        shape: (C, R, R) of one image, from the data module; R in 28, 32, 64.
        latent_dim: size of z (the paper: 100).
        text_dim: size of the caption embedding (the text encoder's ``embedding_dim``).
        projected: size the embedding is compressed to (the paper: 128).
        width: DCGAN's width.
    """

    def __init__(self, *, shape: tuple[int, ...], latent_dim: int = 100, text_dim: int = 128, projected: int = 128,
                 width: int = 64) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.compress = _compress(text_dim, projected)
        self.body = dcgan.Generator(shape=shape, latent_dim=latent_dim + projected, width=width)

    def forward(self, z: Tensor, text: Tensor) -> Tensor:
        return self.body(torch.cat([z, self.compress(text)], 1))


class MatchingDiscriminator(nn.Module):
    """(images, caption embeddings) -> one raw score per pair (B,): does the image look real *and* match?

    :meth:`embed_text` encodes word ids (fixed embeddings pass unchanged); :meth:`embed_images` maps images into the
    captions' embedding space.

    Args:
        shape, width, norm, spectral_norm: as for :class:`gansuite.nets.dcgan.Discriminator`.
        vocab_size: word ids of the data's vocabulary (from the data module); None when the captions come as fixed
            embeddings of ``text_dim`` numbers (``text_encoder=precomputed`` or ``sentence_transformers``): then
            :meth:`embed_text` returns them unchanged.
        text_dim, projected: as for :class:`TextConditionalGenerator`.
        word_dim, hidden, word_dropout: the caption encoder's (:class:`gansuite.nets.text.WordGRUEncoder`; set by
            ``text_encoder=word_gru``).
    """

    def __init__(self, *, shape: tuple[int, ...], vocab_size: int | None, text_dim: int = 128, projected: int = 128,
                 width: int = 64, norm: str = "batch", spectral_norm: bool = False, word_dim: int = 64,
                 hidden: int = 128, word_dropout: float = 0.1) -> None:
        super().__init__()
        if vocab_size is None:  # fixed embeddings: nothing to encode or train
            self.text: nn.Module = FixedText()
        else:
            self.text = WordGRUEncoder(vocab_size=vocab_size, embedding_dim=text_dim, word_dim=word_dim, hidden=hidden,
                                       word_dropout=word_dropout)
        body = dcgan.Discriminator(shape=shape, width=width, norm=norm, spectral_norm=spectral_norm)
        last = body.net[-1]
        self.trunk = body.net[:-1]
        self.compress = _compress(text_dim, projected)
        channels = last.in_channels
        joint, head = nn.Conv2d(channels + projected, channels, 1), nn.Conv2d(channels, 1, last.kernel_size)
        if spectral_norm:  # every convolution, as in DCGAN's D
            joint, head = _sn(joint), _sn(head)
        self.joint = nn.Sequential(joint, nn.LeakyReLU(0.2, True))
        self.head = head
        self.image_embedding = nn.Linear(channels, text_dim)
        dcgan._init_weights(self)

    def embed_text(self, tokens: Tensor) -> Tensor:
        return self.text(tokens)

    def embed_images(self, x: Tensor) -> Tensor:
        return self.image_embedding(self.trunk(x).mean((2, 3)))

    def forward(self, x: Tensor, text: Tensor) -> Tensor:
        h = self.trunk(x)
        t = self.compress(text)[:, :, None, None].expand(-1, -1, *h.shape[-2:])
        return self.head(self.joint(torch.cat([h, t], 1))).flatten()
