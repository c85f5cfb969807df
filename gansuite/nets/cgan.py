"""Conditional GAN (Mirza & Osindero 2014): the class label goes into both G and D.

Two versions, both trained by :class:`gansuite.models.gan.ConditionalGAN`:

- the paper's MLP (``MLPGenerator`` / ``MLPDiscriminator``): in G, z and the one-hot label each
  pass a ReLU layer of their own and are joined in a third; in D, the image and the label each
  pass a maxout layer and are joined in a third maxout layer;
- a convolutional one on DCGAN's networks (``ConvGenerator`` / ``ConvDiscriminator``): G's input
  is z joined with the one-hot label, and D's input stacks the image with K label planes
  (plane y all ones, the others zero), the usual conditional-DCGAN construction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gansuite.errors import ConfigError
from gansuite.nets import dcgan
from gansuite.nets.mlp import MaxoutLinear
from gansuite.nets.unet import NoiseDropout


def _one_hot(y: Tensor, num_classes: int, like: Tensor) -> Tensor:
    return F.one_hot(y.long(), num_classes).to(like.dtype)


def check_classes(num_classes: int | None, key: str) -> int:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"{key}: a conditional network needs num_classes >= 2 from the data (got {num_classes!r}); "
                          "train it on labelled data such as data=mnist_offline.")
    return num_classes


class MLPGenerator(nn.Module):
    """(z, y) -> sample: the paper's MNIST generator.

    Args:
        shape: shape of one sample, from the data module.
        num_classes: K, from the data module.
        latent_dim: size of z.
        z_width: units of the ReLU layer on z (paper: 200).
        y_width: units of the ReLU layer on the one-hot label (paper: 1000).
        joint_width: units of the ReLU layer on both (paper: 1200).
        dropout: dropout after the joint layer (the paper applied 0.5 during training).
        sample_dropout: keep that dropout on when sampling too (as pix2pix does). Trained with
            dropout, this G takes its variety from the dropout masks and ignores z: with dropout off
            at sampling, every sample of a class was the same image (measured on the offline digits:
            pixel std within a class 0.006 with it off, 0.24 with it on).
    """

    def __init__(self, *, shape: tuple[int, ...], num_classes: int, latent_dim: int = 100, z_width: int = 200,
                 y_width: int = 1000, joint_width: int = 1200, dropout: float = 0.5,
                 sample_dropout: bool = True) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.num_classes = check_classes(num_classes, "model.generator")
        self.z_branch = nn.Sequential(nn.Linear(latent_dim, z_width), nn.ReLU())
        self.y_branch = nn.Sequential(nn.Linear(num_classes, y_width), nn.ReLU())
        self.joint = nn.Sequential(
            nn.Linear(z_width + y_width, joint_width), nn.ReLU(),
            NoiseDropout(dropout) if sample_dropout else nn.Dropout(dropout),
            # The paper's sigmoid output, rescaled to the data's [-1, 1]: tanh; 2D points stay linear.
            nn.Linear(joint_width, math.prod(self.shape)), nn.Tanh() if len(self.shape) == 3 else nn.Identity(),
        )

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = torch.cat([self.z_branch(z), self.y_branch(_one_hot(y, self.num_classes, z))], dim=1)
        return self.joint(h).view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    """(sample, y) -> one raw score per sample (B,): the paper's maxout discriminator.

    Args:
        shape: shape of one sample, from the data module.
        num_classes: K, from the data module.
        x_width, x_pieces: maxout units and pieces on the sample (paper: 240 units, 5 pieces).
        y_width, y_pieces: maxout units and pieces on the one-hot label (paper: 50, 5).
        joint_width, joint_pieces: the joint maxout layer (paper: 240, 4).
        dropout: dropout on every maxout layer's output (paper: 0.5).
    """

    def __init__(self, *, shape: tuple[int, ...], num_classes: int, x_width: int = 240, x_pieces: int = 5,
                 y_width: int = 50, y_pieces: int = 5, joint_width: int = 240, joint_pieces: int = 4,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.num_classes = check_classes(num_classes, "model.discriminator")
        self.x_branch = nn.Sequential(MaxoutLinear(math.prod(shape), x_width, pieces=x_pieces), nn.Dropout(dropout))
        self.y_branch = nn.Sequential(MaxoutLinear(num_classes, y_width, pieces=y_pieces), nn.Dropout(dropout))
        self.joint = nn.Sequential(MaxoutLinear(x_width + y_width, joint_width, pieces=joint_pieces),
                                   nn.Dropout(dropout), nn.Linear(joint_width, 1))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = torch.cat([self.x_branch(x.flatten(1)), self.y_branch(_one_hot(y, self.num_classes, x))], dim=1)
        return self.joint(h).squeeze(1)


class ConvGenerator(nn.Module):
    """(z, y) -> images: DCGAN's generator whose input is z joined with the one-hot label.

    Args:
        shape: (C, R, R) of one sample, R in 28, 32, 64.
        num_classes: K, from the data module.
        latent_dim: size of z.
        width: channels of DCGAN's last hidden block.
    """

    def __init__(self, *, shape: tuple[int, ...], num_classes: int, latent_dim: int = 100, width: int = 64) -> None:
        super().__init__()
        self.num_classes = check_classes(num_classes, "model.generator")
        self.dcgan = dcgan.Generator(shape=shape, latent_dim=latent_dim + num_classes, width=width)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        return self.dcgan(torch.cat([z, _one_hot(y, self.num_classes, z)], dim=1))


class ConvDiscriminator(nn.Module):
    """(images, y) -> one raw score per image (B,): DCGAN's discriminator on the image and K label planes.

    Args:
        shape: (C, R, R) of one sample.
        num_classes: K, from the data module.
        width, norm, spectral_norm: as for :class:`gansuite.nets.dcgan.Discriminator`.
    """

    def __init__(self, *, shape: tuple[int, ...], num_classes: int, width: int = 64, norm: str = "batch",
                 spectral_norm: bool = False) -> None:
        super().__init__()
        self.num_classes = check_classes(num_classes, "model.discriminator")
        if len(shape) != 3:
            raise ConfigError(f"model.discriminator: the convolutional cGAN needs images but the data gives samples "
                              f"of shape {tuple(shape)}; use model=cgan_mlp for 2D points.")
        channels, *size = shape
        self.dcgan = dcgan.Discriminator(shape=(channels + num_classes, *size), width=width, norm=norm,
                                         spectral_norm=spectral_norm)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        planes = _one_hot(y, self.num_classes, x)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.dcgan(torch.cat([x, planes], dim=1))
