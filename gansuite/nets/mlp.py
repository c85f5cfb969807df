"""The vanilla GAN (Goodfellow et al. 2014): fully connected G and D.

The paper's D used maxout units and dropout; by default both nets here are plain MLPs with
LeakyReLU, as in most re-implementations, with width and depth as arguments. The options
``batch_norm``/``activation`` (G) and ``maxout_pieces`` (D), with ``init_std`` on both, build
the 2D architecture of VEEGAN / PacGAN instead (``conf/model/pacgan_mlp.yaml``).
Works on any sample shape: images (C, H, W) or 2D points (2,).
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from gansuite.errors import ConfigError

_ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.2), "relu": nn.ReLU}
# Batch norm as in the PacGAN code (Theano/Blocks): Blocks' epsilon 1e-4, and population
# statistics updated as 0.95 * old + 0.05 * batch, i.e. PyTorch's momentum 0.05.
_BN_EPS, _BN_MOMENTUM = 1e-4, 0.05


def _mlp(sizes: list[int], act: nn.Module, dropout: float = 0.0, sn: bool = False,
         init_std: float | None = None) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
        linear = _init(nn.Linear(d_in, d_out), init_std)
        layers += [_sn(linear) if sn else linear, act]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return layers


def _init(module: nn.Module, std: float | None) -> nn.Module:
    """N(0, std^2) weights and zero biases on every linear layer in ``module`` (the VEEGAN / PacGAN code's
    init); ``std=None`` keeps PyTorch's default. Call it before spectral norm parametrizes a weight."""
    if std is not None:
        for m in module.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return module


class MaxoutLinear(nn.Module):
    """A linear layer whose every output unit is the largest of ``pieces`` affine pieces (Goodfellow et al. 2013).

    Unit k takes pieces ``k * pieces`` to ``(k + 1) * pieces - 1`` of the inner linear layer, the
    layout of Blocks' ``LinearMaxout`` that the PacGAN code uses.

    Args:
        in_features: input size.
        out_features: output units.
        pieces: affine pieces per unit; 1 is a plain linear layer.
    """

    def __init__(self, in_features: int, out_features: int, *, pieces: int) -> None:
        super().__init__()
        self.out_features, self.pieces = out_features, pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).unflatten(-1, (self.out_features, self.pieces)).amax(-1)


class Generator(nn.Module):
    """z -> sample. Images end in tanh (data lives in [-1, 1]); 2D points end linear (unbounded).

    Args:
        shape: shape of one sample, from the data module.
        latent_dim: size of z.
        width: units per hidden layer.
        depth: number of hidden layers.
        activation: of the hidden layers, ``leaky_relu`` (slope 0.2) or ``relu``.
        batch_norm: batch-normalize every hidden layer before its activation (its linear layer then has
            no bias, which the norm's shift replaces), as in the VEEGAN / PacGAN 2D generator.
        init_std: if set, linear weights are drawn from N(0, init_std^2) and biases start at 0;
            None keeps PyTorch's default initialization.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...],
        latent_dim: int = 100,
        width: int = 256,
        depth: int = 3,
        activation: Literal["leaky_relu", "relu"] = "leaky_relu",
        batch_norm: bool = False,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"model.generator.activation: {activation!r} is unknown; use one of {', '.join(_ACTIVATIONS)}.")
        self.shape = tuple(shape)
        out = math.prod(self.shape)
        sizes = [latent_dim] + [width] * depth
        if batch_norm:
            hidden: list[nn.Module] = []
            for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
                hidden += [nn.Linear(d_in, d_out, bias=False),
                           nn.BatchNorm1d(d_out, eps=_BN_EPS, momentum=_BN_MOMENTUM), _ACTIVATIONS[activation]()]
        else:
            hidden = _mlp(sizes, _ACTIVATIONS[activation]())
        self.net = nn.Sequential(
            *hidden,
            nn.Linear(width, out),
            nn.Tanh() if len(self.shape) == 3 else nn.Identity(),
        )
        _init(self, init_std)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.shape)


class Discriminator(nn.Module):
    """sample -> one raw score per sample (B,).

    Args:
        shape: shape of one sample, from the data module.
        width: units per hidden layer.
        depth: number of hidden layers.
        dropout: dropout after each hidden layer (the paper used 0.5 with maxout).
        spectral_norm: spectral normalization on every linear layer (Miyato et al. 2018).
        pack: PacGAN packing (Lin et al. 2018): D judges ``pack`` samples concatenated, returning
            one score per group of ``pack`` consecutive samples; the batch size must divide by it.
        maxout_pieces: above 1, every hidden layer is a :class:`MaxoutLinear` with this many pieces
            per unit (and no other activation) instead of linear + LeakyReLU.
        init_std: if set, linear weights are drawn from N(0, init_std^2) and biases start at 0;
            None keeps PyTorch's default initialization.
    """

    # Keyword-only options named like the generator's above (shape, width, depth): configs pass them by name.
    def __init__(
        self,
        *,
        shape: tuple[int, ...],
        width: int = 256,
        depth: int = 3,
        dropout: float = 0.0,
        spectral_norm: bool = False,
        pack: int = 1,
        maxout_pieces: int = 1,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(pack, int) or pack < 1:
            raise ConfigError(f"model.discriminator.pack must be a positive integer (got {pack!r}); use 1 for no packing.")
        if not isinstance(maxout_pieces, int) or maxout_pieces < 1:
            raise ConfigError(f"model.discriminator.maxout_pieces must be a positive integer (got {maxout_pieces!r}); "
                              "use 1 for LeakyReLU units.")
        self.pack = pack
        sizes = [math.prod(shape) * pack] + [width] * depth
        head = _init(nn.Linear(width, 1), init_std)
        if maxout_pieces > 1:
            hidden: list[nn.Module] = []
            for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
                layer = _init(MaxoutLinear(d_in, d_out, pieces=maxout_pieces), init_std)
                if spectral_norm:
                    _sn(layer.linear)
                hidden += [layer, nn.Dropout(dropout)] if dropout else [layer]
        else:
            hidden = _mlp(sizes, nn.LeakyReLU(0.2), dropout, spectral_norm, init_std)
        self.net = nn.Sequential(*hidden, _sn(head) if spectral_norm else head)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0] // self.pack, -1)).squeeze(1)
