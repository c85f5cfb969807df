"""ResNet G and D for 32 px images: WGAN-GP's CIFAR-10 ResNet, SNGAN's, and the projection cGAN.

One pair of networks covers three papers, which share the layout and differ in width,
normalization and the head:

- Gulrajani et al. 2017 (WGAN-GP), ``gan_cifar_resnet.py`` of their code: G 128 channels, D 128
  channels without normalization, global mean pooling, a linear head with a bias.
- Miyato et al. 2018 (SNGAN), Appendix B and ``gen_models/resnet_32.py`` /
  ``dis_models/snresnet_32.py`` of pfnet-research/sngan_projection: G 256 channels, D 128
  channels with spectral norm on every layer, global *sum* pooling, a head without bias.
- Miyato & Koyama 2018 (projection cGAN), the same code with ``n_classes > 0``: G's batch norms
  become class-conditional (a gain and a bias per class) and D adds the projection
  ``<embed(y), phi(x)>`` to its unconditional output ``linear(phi(x))``.

G: z -> linear -> 4x4 map -> three up-sampling residual blocks (BN, ReLU, 2x nearest, 3x3 conv,
BN, ReLU, 3x3 conv; shortcut 2x nearest then 1x1 conv) -> BN, ReLU, 3x3 conv -> tanh.
D: an "optimized" first block (3x3 conv, ReLU, 3x3 conv, 2x2 mean pool; shortcut pool then 1x1
conv), one down-sampling block, two plain blocks (ReLU, conv, ReLU, conv, identity shortcut),
ReLU, global pooling over the 8x8 map -> phi(x).
Both codes initialise the same way: Glorot-uniform with gain sqrt(2) on the residual 3x3
convolutions (tflib's ``he_init`` is exactly that) and gain 1 on shortcuts, G's input linear and
G's output convolution, zero biases.
"""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from gansuite.errors import ConfigError
from gansuite.nets.checks import check_classes

RESOLUTION = 32  # the papers' CIFAR-10 nets; their 48 / 64 / 128 px nets change the widths per block
BOTTOM = 4  # G's first feature map; three 2x up-samplings reach 32 px


def _check_shape(shape: tuple[int, ...], key: str) -> int:
    """Image channels, after checking that the data is 32 px square images."""
    shape = tuple(shape)  # instantiate hands a list over
    if len(shape) != 3 or shape[1:] != (RESOLUTION, RESOLUTION):
        raise ConfigError(
            f"{key}: the ResNet GAN is built for {RESOLUTION} px images but the data gives samples of shape "
            f"{tuple(shape)}; set data.resolution={RESOLUTION} (or use model=dcgan for 28 / 64 px)."
        )
    return shape[0]


def _check_width(width: int, key: str) -> int:
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ConfigError(f"{key}.width must be a positive integer (got {width!r}); the papers use 128 or 256.")
    return width


def _glorot(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Glorot-uniform weight with ``gain``, zero bias; call it before spectral norm wraps the weight."""
    nn.init.xavier_uniform_(module.weight, gain)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def _conv(c_in: int, c_out: int, k: int, gain: float, sn: bool = False) -> nn.Module:
    conv = _glorot(nn.Conv2d(c_in, c_out, k, 1, k // 2), gain)
    return _sn(conv) if sn else conv


def _up(x: Tensor) -> Tensor:
    # Nearest neighbour: chainer's unpooling_2d(x, 2) in SNGAN, depth_to_space of 4 copies in WGAN-GP.
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _down(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 2)


class CategoricalConditionalBatchNorm2d(nn.Module):
    """Batch norm whose gain and bias are looked up per class (de Vries et al. 2017; Miyato & Koyama 2018).

    The statistics are shared by all classes; the gains start at 1 and the biases at 0, so at
    initialisation it is a plain batch norm.

    Args:
        num_features: channels.
        num_classes: K.
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_features, affine=False)
        self.gain = nn.Embedding(num_classes, num_features)
        self.bias = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.norm(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class _GBlock(nn.Module):
    """Up-sampling residual block of G; its batch norms are class-conditional when num_classes is set."""

    def __init__(self, c_in: int, c_out: int, num_classes: int | None) -> None:
        super().__init__()

        def norm(ch: int) -> nn.Module:
            return CategoricalConditionalBatchNorm2d(ch, num_classes) if num_classes else nn.BatchNorm2d(ch)

        self.b1, self.b2 = norm(c_in), norm(c_out)
        self.c1 = _conv(c_in, c_out, 3, math.sqrt(2))
        self.c2 = _conv(c_out, c_out, 3, math.sqrt(2))
        self.c_sc = _conv(c_in, c_out, 1, 1.0)

    def _norm(self, bn: nn.Module, h: Tensor, y: Tensor | None) -> Tensor:
        return bn(h) if y is None else bn(h, y)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        h = self.c1(_up(F.relu(self._norm(self.b1, x, y))))
        h = self.c2(F.relu(self._norm(self.b2, h, y)))
        return h + self.c_sc(_up(x))


class Generator(nn.Module):
    """z (B, latent_dim) [, y (B,)] -> images (B, C, 32, 32) in [-1, 1].

    Args:
        shape: (C, 32, 32) of one sample, from the data module.
        latent_dim: size of z (both papers: 128).
        width: channels of every block (WGAN-GP: 128, SNGAN: 256).
        num_classes: None for an unconditional G called as ``G(z)``; K for a class-conditional G
            called as ``G(z, y)`` whose batch norms take a gain and a bias per class.
    """

    def __init__(self, *, shape: tuple[int, ...], latent_dim: int = 128, width: int = 256,
                 num_classes: int | None = None) -> None:
        super().__init__()
        channels = _check_shape(shape, "model.generator")
        width = _check_width(width, "model.generator")
        self.num_classes = check_classes(num_classes, "model.generator")
        self.width = width
        self.linear = _glorot(nn.Linear(latent_dim, BOTTOM * BOTTOM * width))
        self.blocks = nn.ModuleList([_GBlock(width, width, num_classes) for _ in range(3)])
        # The last norm is unconditional in both codes (chainer's b5, tflib's Generator.OutputN).
        self.out_norm = nn.BatchNorm2d(width)
        self.out_conv = _conv(width, channels, 3, 1.0)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if (y is None) != (self.num_classes is None):
            raise TypeError("a conditional ResNet generator is called as G(z, y), an unconditional one as G(z)")
        h = self.linear(z).view(-1, self.width, BOTTOM, BOTTOM)
        for block in self.blocks:
            h = block(h, y)
        return self.out_conv(F.relu(self.out_norm(h))).tanh()


class _DBlock(nn.Module):
    """Residual block of D without normalization; down-samples after its second convolution."""

    def __init__(self, c_in: int, c_out: int, *, down: bool, sn: bool) -> None:
        super().__init__()
        self.down = down
        self.c1 = _conv(c_in, c_in, 3, math.sqrt(2), sn)
        self.c2 = _conv(c_in, c_out, 3, math.sqrt(2), sn)
        self.c_sc = _conv(c_in, c_out, 1, 1.0, sn) if down or c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.c2(F.relu(self.c1(F.relu(x))))
        shortcut = x if self.c_sc is None else self.c_sc(x)
        if self.down:
            h, shortcut = _down(h), _down(shortcut)
        return h + shortcut


class _OptimizedDBlock(nn.Module):
    """D's first block: no ReLU on the image, and the shortcut pools before its 1x1 convolution."""

    def __init__(self, c_in: int, c_out: int, *, sn: bool) -> None:
        super().__init__()
        self.c1 = _conv(c_in, c_out, 3, math.sqrt(2), sn)
        self.c2 = _conv(c_out, c_out, 3, math.sqrt(2), sn)
        self.c_sc = _conv(c_in, c_out, 1, 1.0, sn)

    def forward(self, x: Tensor) -> Tensor:
        return _down(self.c2(F.relu(self.c1(x)))) + self.c_sc(_down(x))


class Discriminator(nn.Module):
    """images (B, C, 32, 32) [, y (B,)] -> one raw score per image (B,).

    The score is ``head(phi(x))``, plus ``<embed(y), phi(x)>`` for a projection discriminator.

    Args:
        shape: (C, 32, 32) of one sample, from the data module.
        width: channels of every block (both papers: 128).
        spectral_norm: spectral normalization on every convolution, the head and the class
            embedding (SNGAN); off for WGAN-GP, whose gradient penalty constrains D instead.
        pooling: over the final 8x8 map, ``mean`` (WGAN-GP) or ``sum`` (SNGAN).
        head_bias: a bias on the linear head (WGAN-GP: yes; SNGAN's 32 px code: no).
        num_classes: None for an unconditional D called as ``D(x)``; K for a projection D called
            as ``D(x, y)`` (Miyato & Koyama 2018).
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...],
        width: int = 128,
        spectral_norm: bool = True,
        pooling: Literal["mean", "sum"] = "sum",
        head_bias: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        channels = _check_shape(shape, "model.discriminator")
        width = _check_width(width, "model.discriminator")
        self.num_classes = check_classes(num_classes, "model.discriminator")
        if pooling not in ("mean", "sum"):
            raise ConfigError(f"model.discriminator.pooling must be mean or sum (got {pooling!r}); "
                              "WGAN-GP used mean, SNGAN sum.")
        self.pooling = pooling
        sn = bool(spectral_norm)
        self.blocks = nn.Sequential(
            _OptimizedDBlock(channels, width, sn=sn),
            _DBlock(width, width, down=True, sn=sn),
            _DBlock(width, width, down=False, sn=sn),
            _DBlock(width, width, down=False, sn=sn),
        )
        head = _glorot(nn.Linear(width, 1, bias=head_bias))
        self.head = _sn(head) if sn else head
        self.embed = None
        if num_classes is not None:
            embed = _glorot(nn.Embedding(num_classes, width))
            self.embed = _sn(embed) if sn else embed

    def features(self, x: Tensor) -> Tensor:
        """phi(x) (B, width): the pooled features that the head and the projection share."""
        h = F.relu(self.blocks(x))
        return h.sum(dim=(2, 3)) if self.pooling == "sum" else h.mean(dim=(2, 3))

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if (y is None) != (self.embed is None):
            raise TypeError("a projection ResNet discriminator is called as D(x, y), an unconditional one as D(x)")
        phi = self.features(x)
        out = self.head(phi).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * phi).sum(dim=1)
        return out
