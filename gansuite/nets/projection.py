"""Projection cGAN (Miyato & Koyama 2018) on DCGAN's convolutional networks.

The label enters each network the way the paper puts it in:

- G is DCGAN's generator whose batch norms are class-conditional (a gain and a bias per class,
  :class:`gansuite.nets.resnet.CategoricalConditionalBatchNorm2d`); z alone is its input;
- D is DCGAN's convolutional body, then one fully connected LeakyReLU layer: its output is
  phi(x), and ``D(x, y) = head(phi(x)) + <embed(y), phi(x)>`` (the paper's Eq. 3, psi linear).
  In the paper phi is a deep ResNet's pooled features; DCGAN's two convolutions see about a
  third of a digit, so their pooled features hardly tell the classes apart (on MNIST the label
  moved D's score by 0.1 after 1,500 steps and G never conditioned), while a class kernel on the
  whole last map made D win within 500 steps (D's loss 0.05). The learned layer gives phi the
  whole image in a vector, as a deep net's pooled features do.

The paper's networks are the 32 px ResNets of ``gansuite.nets.resnet`` (``model=sngan_projection``);
these smaller ones train in minutes on a CPU, at 28, 32 or 64 px.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from gansuite.errors import ConfigError
from gansuite.nets import dcgan
from gansuite.nets.cgan import check_classes
from gansuite.nets.resnet import CategoricalConditionalBatchNorm2d


class Generator(nn.Module):
    """(z, y) -> images (B, C, R, R) in [-1, 1]: DCGAN's generator with class-conditional batch norm.

    Args:
        shape: (C, R, R) of one sample, R in 28, 32, 64.
        num_classes: K, from the data module.
        latent_dim: size of z.
        width: channels of the last hidden block; earlier blocks double it.
    """

    def __init__(self, *, shape: tuple[int, ...], num_classes: int, latent_dim: int = 100, width: int = 64) -> None:
        super().__init__()
        self.num_classes = check_classes(num_classes, "model.generator")
        channels, size0, stages = dcgan.layout(shape, "model.generator")
        ch = width * 2 ** (stages - 1)
        self.convs = nn.ModuleList([nn.ConvTranspose2d(latent_dim, ch, size0, 1, 0, bias=False)])
        self.norms = nn.ModuleList([CategoricalConditionalBatchNorm2d(ch, num_classes)])
        for _ in range(stages - 1):
            self.convs.append(nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False))
            self.norms.append(CategoricalConditionalBatchNorm2d(ch // 2, num_classes))
            ch //= 2
        self.out = nn.ConvTranspose2d(ch, channels, 4, 2, 1)
        for m in [*self.convs, self.out]:
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = z[:, :, None, None]
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = norm(conv(h), y).relu()
        return self.out(h).tanh()


class Discriminator(nn.Module):
    """(images, y) -> one raw score per image (B,): DCGAN's discriminator body with a projection head.

    Args:
        shape: (C, R, R) of one sample.
        num_classes: K, from the data module.
        width, norm, spectral_norm: as for :class:`gansuite.nets.dcgan.Discriminator`; spectral
            norm also covers the fully connected layer, the head and the class embedding, as in the paper.
        hidden: units of phi, the fully connected layer after the convolutions.
    """

    def __init__(self, *, shape: tuple[int, ...], num_classes: int, width: int = 64,
                 norm: Literal["batch", "layer", "none"] = "none", spectral_norm: bool = True,
                 hidden: int = 256) -> None:
        super().__init__()
        self.num_classes = check_classes(num_classes, "model.discriminator")
        if len(shape) != 3:
            raise ConfigError(f"model.discriminator: the projection cGAN is convolutional but the data gives samples "
                              f"of shape {tuple(shape)}; use model=cgan_mlp for 2D points.")
        if not isinstance(hidden, int) or hidden < 1:
            raise ConfigError(f"model.discriminator.hidden must be a positive number of units (got {hidden!r}).")
        body = dcgan.Discriminator(shape=shape, width=width, norm=norm, spectral_norm=spectral_norm)
        last = body.net[-1]  # DCGAN's head: a convolution over the whole last map, dropped here
        fc = nn.Linear(last.in_channels * last.kernel_size[0] * last.kernel_size[1], hidden)
        head, embed = nn.Linear(hidden, 1), nn.Embedding(num_classes, hidden)
        for m in (fc, head, embed):
            nn.init.normal_(m.weight, 0.0, 0.02)
        nn.init.zeros_(fc.bias)
        nn.init.zeros_(head.bias)
        if spectral_norm:
            fc, head, embed = _sn(fc), _sn(head), _sn(embed)
        self.phi = nn.Sequential(*body.net[:-1], nn.Flatten(), fc, nn.LeakyReLU(0.2))
        self.head, self.embed = head, embed

    def features(self, x: Tensor) -> Tensor:
        """phi(x) (B, hidden): the features that the head and the projection share."""
        return self.phi(x)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        phi = self.features(x)
        return self.head(phi).squeeze(1) + (self.embed(y) * phi).sum(dim=1)
