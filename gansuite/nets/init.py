"""The Gaussian weight init of DCGAN (Radford et al. 2015), which pix2pix, CycleGAN and InfoGAN's code reuse."""

from __future__ import annotations

from torch import nn


def normal_init(module: nn.Module, layers: tuple[type[nn.Module], ...], norms: tuple[type[nn.Module], ...]) -> nn.Module:
    """N(0, 0.02) weights and zero biases on every ``layers`` layer of ``module``, N(1, 0.02) scales and zero
    shifts on every ``norms`` layer, in the order of ``module.modules()``; returns ``module``."""
    for m in module.modules():
        if isinstance(m, layers):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, norms):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def init_gaussian(module: nn.Module) -> None:
    """The pix2pix / CycleGAN authors' init (DCGAN's): N(0, 0.02) conv weights and zero biases,
    N(1, 0.02) batch-norm scales and zero shifts."""
    normal_init(module, (nn.Conv2d, nn.ConvTranspose2d), (nn.BatchNorm2d,))
