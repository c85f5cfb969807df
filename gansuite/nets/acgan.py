"""ACGAN's discriminator (Odena, Olah & Shlens 2017): DCGAN's body with a real/fake head and a class head.

Only D is ACGAN's own: ``model=acgan`` takes its G from :class:`gansuite.nets.cgan.ConvGenerator`.
"""

from __future__ import annotations

from torch import Tensor, nn

from gansuite.nets import dcgan
from gansuite.nets.cgan import check_classes


class Discriminator(nn.Module):
    """images -> (score (B,), class logits (B, K)) from DCGAN's discriminator body.

    Args:
        shape: (C, R, R) of one sample, R in 28, 32, 64.
        num_classes: K, from the data module.
        width, norm, spectral_norm, dropout: as for :class:`gansuite.nets.dcgan.Discriminator`;
            ``dropout`` follows every hidden block (the paper's CIFAR-10 D used 0.5).
    """

    def __init__(self, *, shape: tuple[int, ...], num_classes: int, width: int = 64, norm: str = "batch",
                 spectral_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        check_classes(num_classes, "model.discriminator")
        self.dcgan = dcgan.Discriminator(shape=shape, width=width, norm=norm, spectral_norm=spectral_norm)
        if dropout:
            layers = []
            for layer in self.dcgan.net:
                layers.append(layer)
                if isinstance(layer, nn.LeakyReLU):
                    layers.append(nn.Dropout(dropout))
            self.dcgan.net = nn.Sequential(*layers)
        score_head = self.dcgan.net[-1]
        # The class head reads the same last feature map as the score head, with the same kernel.
        self.classes = nn.Conv2d(score_head.in_channels, num_classes, score_head.kernel_size)
        nn.init.normal_(self.classes.weight, 0.0, 0.02)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.dcgan.net[:-1](x)
        return self.dcgan.net[-1](h).flatten(), self.classes(h).flatten(1)
