"""The PatchGAN discriminator of pix2pix (Isola et al. 2017) and CycleGAN (Zhu et al. 2017).

A fully convolutional D that scores every overlapping patch of its input as real or fake: one
raw score per position of a (B, 1, h, w) map, which the losses average. With ``n_layers=3``
(the papers' default) each score sees a 70x70 patch. Layout, as in the authors' code:
C64 (no norm) - C128 - C256 (stride 2) - C512 (stride 1) - a 1-channel convolution, all 4x4,
LeakyReLU 0.2, weights N(0, 0.02).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from gansuite.errors import ConfigError
from gansuite.nets.init import init_gaussian


def receptive_field(n_layers: int) -> int:
    """Side of the input patch one output score sees."""
    size = 1
    # Walk back from the output: the two stride-1 4x4 convolutions, then n_layers stride-2 ones.
    for stride in [1, 1] + [2] * n_layers:
        size = (size - 1) * stride + 4
    return size


class PatchDiscriminator(nn.Module):
    """(images, ...) -> (B, 1, h, w) raw patch scores; several inputs are stacked on channels.

    Args:
        shape: (C, H, W) of the target images, from the data module.
        source_shape: (C, H, W) of the source images; with ``conditional`` D sees them too.
        conditional: judge ``(source, target)`` pairs (pix2pix) instead of targets alone (CycleGAN).
        width: channels of the first layer; each stride-2 layer doubles them, up to 8x.
        n_layers: stride-2 layers (3 gives 70x70 patches; 1 gives 16x16, the "PixelGAN" is not offered).
        norm: ``batch`` (pix2pix) or ``instance`` (CycleGAN) after every layer but the first and last.
    """

    def __init__(self, *, shape: tuple[int, ...], source_shape: tuple[int, ...] | None = None,
                 conditional: bool = False, width: int = 64, n_layers: int = 3,
                 norm: Literal["batch", "instance"] = "batch") -> None:
        super().__init__()
        if len(shape) != 3:
            raise ConfigError(f"model.discriminator: PatchGAN needs images but the data gives samples of shape "
                              f"{tuple(shape)}.")
        if norm not in ("batch", "instance"):
            raise ConfigError(f"model.discriminator.norm: {norm!r} is unknown; use batch or instance.")
        if not isinstance(n_layers, int) or n_layers < 1:
            raise ConfigError(f"model.discriminator.n_layers must be a positive integer (got {n_layers!r}).")
        smallest = 3 * 2**n_layers  # each stride-2 layer halves; the two stride-1 ones need 3 px left
        if min(shape[1:]) < smallest:
            raise ConfigError(f"model.discriminator.n_layers={n_layers} needs images of at least {smallest} px but the "
                              f"data gives {shape[1]}x{shape[2]}; lower model.discriminator.n_layers or raise "
                              "data.resolution.")
        channels = shape[0]
        if conditional:
            if source_shape is None:
                raise ConfigError("model.discriminator.conditional=true needs paired data with source images; "
                                  "use a paired data config or set model.discriminator.conditional=false.")
            channels += source_shape[0]
        self.conditional = conditional

        def make_norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if norm == "batch" else nn.InstanceNorm2d(c, affine=False)

        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        ch = width
        for i in range(1, n_layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            # Bias is redundant before batch norm; instance norm without affine keeps it, as the authors do.
            layers += [nn.Conv2d(ch, out, 4, stride, 1, bias=norm == "instance"), make_norm(out),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        init_gaussian(self)

    def forward(self, *images: Tensor) -> Tensor:
        return self.net(torch.cat(images, dim=1) if len(images) > 1 else images[0])
