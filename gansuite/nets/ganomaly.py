"""GANomaly's networks (Akçay, Atapour-Abarghouei & Breckon 2018): an encoder-decoder-encoder generator and
a discriminator whose last hidden features the generator matches.

The encoders are DCGAN's discriminator body (:class:`gansuite.nets.dcgan.Discriminator`) with a
``latent_dim``-channel head in place of the score, the decoder is DCGAN's generator, as in the authors'
code; all weights start from DCGAN's Gaussian init.
"""

from __future__ import annotations

from torch import Tensor, nn

from gansuite.nets import dcgan


class Encoder(nn.Module):
    """images (B, C, R, R) -> codes (B, latent_dim)."""

    def __init__(self, *, shape: tuple[int, ...], latent_dim: int, width: int) -> None:
        super().__init__()
        body = dcgan.Discriminator(shape=shape, width=width, norm="batch")
        head = body.net[-1]
        self.net = nn.Sequential(*body.net[:-1], nn.Conv2d(head.in_channels, latent_dim, head.kernel_size, 1, 0,
                                                           bias=False))
        dcgan._init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


class EncoderDecoderEncoder(nn.Module):
    """G: x -> z = G_E(x) -> x_hat = G_D(z) -> z_hat = E(x_hat). Called on images, it returns ``x_hat``
    (so grids and ``gansuite-sample`` show reconstructions); :meth:`codes` returns all three.

    Args:
        shape: (C, R, R) of one image, from the data module; R in 28, 32, 64.
        latent_dim: size of the bottleneck z (the paper: 100).
        width: channels of the encoders' first block and the decoder's last (the paper: 64).
    """

    def __init__(self, *, shape: tuple[int, ...], latent_dim: int = 100, width: int = 64) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.encoder = Encoder(shape=shape, latent_dim=latent_dim, width=width)
        self.decoder = dcgan.Generator(shape=shape, latent_dim=latent_dim, width=width)
        self.reencoder = Encoder(shape=shape, latent_dim=latent_dim, width=width)

    def codes(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(x_hat, z, z_hat)`` for images ``x``."""
        z = self.encoder(x)
        x_hat = self.decoder(z)
        return x_hat, z, self.reencoder(x_hat)

    def forward(self, x: Tensor) -> Tensor:
        return self.codes(x)[0]


class FeatureDiscriminator(nn.Module):
    """images -> one raw score each (B,), and :meth:`features`, the last hidden layer the score is read from.

    Args: as for :class:`gansuite.nets.dcgan.Discriminator`.
    """

    def __init__(self, *, shape: tuple[int, ...], width: int = 64, norm: str = "batch",
                 spectral_norm: bool = False) -> None:
        super().__init__()
        self.dcgan = dcgan.Discriminator(shape=shape, width=width, norm=norm, spectral_norm=spectral_norm)

    def features(self, x: Tensor) -> Tensor:
        return self.dcgan.net[:-1](x)

    def forward(self, x: Tensor) -> Tensor:
        return self.dcgan.net[-1](self.features(x)).flatten()


class ConvAutoencoder(nn.Module):
    """GANomaly's generator without its second encoder: x -> z -> x_hat, the baseline that uses no GAN
    (``model=conv_autoencoder``). :meth:`codes` returns ``(x_hat, z, z)``, so GANomaly's encoder term is 0.

    Args: as for :class:`EncoderDecoderEncoder`.
    """

    def __init__(self, *, shape: tuple[int, ...], latent_dim: int = 100, width: int = 64) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.encoder = Encoder(shape=shape, latent_dim=latent_dim, width=width)
        self.decoder = dcgan.Generator(shape=shape, latent_dim=latent_dim, width=width)

    def codes(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z = self.encoder(x)
        return self.decoder(z), z, z

    def forward(self, x: Tensor) -> Tensor:
        return self.codes(x)[0]
