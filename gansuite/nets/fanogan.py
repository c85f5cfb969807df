"""f-AnoGAN's networks (Schlegl, Seeböck, Waldstein, Langs & Schmidt-Erfurth 2019): a GAN's generator with
an encoder beside it.

The generator is DCGAN's (:class:`gansuite.nets.dcgan.Generator`), the encoder GANomaly's (DCGAN's
discriminator body with a ``latent_dim``-channel head, :class:`gansuite.nets.ganomaly.Encoder`), and the
critic, whose last hidden features the encoder's loss and the anomaly score compare, is GANomaly's
:class:`~gansuite.nets.ganomaly.FeatureDiscriminator`.
"""

from __future__ import annotations

from torch import Tensor, nn

from gansuite.nets import dcgan
from gansuite.nets.ganomaly import Encoder


class GeneratorWithEncoder(nn.Module):
    """G: z -> x (called on codes it is the GAN's generator, so grids show samples) and E: x -> z.

    Args:
        shape: (C, R, R) of one image, from the data module; R in 28, 32, 64.
        latent_dim: size of z.
        width: channels of the encoder's first block and the generator's last.
    """

    def __init__(self, *, shape: tuple[int, ...], latent_dim: int = 100, width: int = 64) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.latent_dim = latent_dim
        self.decoder = dcgan.Generator(shape=shape, latent_dim=latent_dim, width=width)
        self.encoder = Encoder(shape=shape, latent_dim=latent_dim, width=width)

    def forward(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def reconstruct(self, x: Tensor) -> Tensor:
        """G(E(x))."""
        return self.decoder(self.encoder(x))
