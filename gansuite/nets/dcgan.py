"""DCGAN (Radford et al. 2015): strided transposed convolutions in G, strided convolutions in D.

The paper's 64 px architecture, made resolution-generic: G starts from a 4x4
map (7x7 for 28 px) and doubles the size per block while halving channels; D
mirrors it. Batch norm everywhere but G's output and D's input, ReLU in G,
LeakyReLU(0.2) in D, weights initialised from N(0, 0.02) as in the paper.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from gansuite.errors import ConfigError

RESOLUTIONS = {28: 7, 32: 4, 64: 4}  # resolution -> size of the first feature map


def layout(shape: tuple[int, ...], key: str) -> tuple[int, int, int]:
    """(channels, size of the first map, number of 2x up/down-sampling stages) for a sample shape."""
    if len(shape) != 3:
        raise ConfigError(
            f"{key}: DCGAN is convolutional and needs images but the data gives samples of shape "
            f"{tuple(shape)}; use model=gan for 2D points."
        )
    if shape[1] != shape[2] or shape[1] not in RESOLUTIONS:
        raise ConfigError(
            f"{key}: DCGAN supports square images of {', '.join(map(str, RESOLUTIONS))} px but the data "
            f"gives samples of shape {tuple(shape)}; set data.resolution to one of those or use model=gan."
        )
    size0 = RESOLUTIONS[shape[1]]
    return shape[0], size0, (shape[1] // size0).bit_length() - 1


def _init_weights(module: nn.Module) -> None:
    # DCGAN's init, but not gansuite.nets.init.normal_init: the output convs keep torch's default bias init
    # and group norms are included, as these nets have always been made (seeded runs depend on it).
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (B, latent_dim) -> images (B, C, R, R) in [-1, 1].

    Args:
        shape: (C, R, R) of one sample, from the data module; R in 28, 32, 64.
        latent_dim: size of z.
        width: channels of the last hidden block; earlier blocks double it.
    """

    def __init__(self, *, shape: tuple[int, ...], latent_dim: int = 100, width: int = 64) -> None:
        super().__init__()
        channels, size0, stages = layout(shape, "model.generator")
        ch = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, ch, size0, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        _init_weights(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """images (B, C, R, R) -> one raw score per image (B,).

    Args:
        shape: (C, R, R) of one sample, from the data module.
        width: channels of the first block; later blocks double it.
        norm: normalisation of the hidden blocks. "batch" is the paper's; use "layer" or
            "none" with a gradient penalty, which is defined per sample (Gulrajani et al. 2017).
        spectral_norm: spectral normalization on every convolution (Miyato et al. 2018).
    """

    def __init__(
        self,
        *,
        shape: tuple[int, ...],
        width: int = 64,
        norm: Literal["batch", "layer", "none"] = "batch",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if norm not in ("batch", "layer", "none"):
            raise ConfigError(f"model.discriminator.norm must be batch, layer or none (got {norm!r}).")
        channels, size0, stages = layout(shape, "model.discriminator")

        def conv(c_in: int, c_out: int, k: int, s: int, p: int) -> nn.Module:
            layer = nn.Conv2d(c_in, c_out, k, s, p, bias=norm == "none")
            return _sn(layer) if spectral_norm else layer

        def normalise(ch: int) -> nn.Module:
            # GroupNorm with one group normalises each sample over (C, H, W): a layer norm for conv maps.
            return {"batch": nn.BatchNorm2d, "layer": lambda c: nn.GroupNorm(1, c), "none": lambda c: nn.Identity()}[
                norm
            ](ch)

        ch = width
        layers: list[nn.Module] = [conv(channels, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for _ in range(stages - 1):
            layers += [conv(ch, ch * 2, 4, 2, 1), normalise(ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        head = nn.Conv2d(ch, 1, size0, 1, 0)
        layers.append(_sn(head) if spectral_norm else head)
        self.net = nn.Sequential(*layers)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()
