"""CycleGAN's networks (Zhu et al. 2017): two ResNet generators and two PatchGAN discriminators.

They are the authors' ``resnet_9blocks`` generator and ``basic`` D (junyanz/pytorch-CycleGAN-and-pix2pix).
The generator is Johnson et al. 2016's: c7s1-64, d128, d256, ``n_blocks`` residual blocks of 256
channels at 1/4 size, u128, u64, c7s1-C with tanh (at the default ``width=64``); reflection padding,
instance norm without affine parameters, conv biases (redundant only before batch norm), weights
N(0, 0.02) and biases 0. Any height and width that divide by 4 (8 px or more) work. The D is
:class:`gansuite.nets.patchgan.PatchDiscriminator`, the 70x70 PatchGAN with instance norm.

``model.generator`` builds :class:`Generators` and ``model.discriminator`` :class:`Discriminators`:
each an ``nn.ModuleDict`` holding a pair, one per direction or domain, for
:class:`gansuite.models.cyclegan.CycleGAN` (``model=cyclegan``), which trains both Gs with one Adam
and both Ds with another, as the authors' code does.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from gansuite.errors import ConfigError
from gansuite.nets.init import init_gaussian
from gansuite.nets.patchgan import PatchDiscriminator

DOWNSAMPLING = 2  # d128, d256: the generator works at 1/4 of the image size


# ----------------------------------------------------------------------------- networks
def _check_images(shape: tuple[int, ...] | None, source_shape: tuple[int, ...] | None, key: str) -> None:
    if source_shape is None:
        raise ConfigError(f"{key}: CycleGAN translates between two image domains but the data gives one; "
                          "pick data of two unpaired image domains.")
    if len(shape) != 3 or len(source_shape) != 3:
        raise ConfigError(f"{key}: CycleGAN needs images but the data gives samples of shapes "
                          f"{tuple(source_shape)} (A) and {tuple(shape)} (B); pick image data.")
    if tuple(shape[1:]) != tuple(source_shape[1:]):
        raise ConfigError(f"{key}: CycleGAN's generators keep the image size but domain A is "
                          f"{source_shape[1]}x{source_shape[2]} and domain B {shape[1]}x{shape[2]} px; "
                          "set data.resolution so that both domains have the same size.")
    height, width = shape[1:]
    factor = 2**DOWNSAMPLING
    # Reflection padding needs at least 2 px at the bottleneck, hence 8.
    if height % factor or width % factor or min(height, width) < 2 * factor:
        raise ConfigError(f"{key}: the ResNet generator needs a height and width that divide by {factor} "
                          f"(at least {2 * factor} px) but the data gives {height}x{width}; "
                          "set data.resolution to a multiple of 4 such as 128 or 256.")


def non_negative_int(value: Any, key: str, advice: str, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive integer" if minimum > 0 else "a non-negative integer"
        raise ConfigError(f"{key} must be {kind} (got {value!r}); {advice}")


class ResnetBlock(nn.Module):
    """x + (reflection pad, 3x3 conv, instance norm, ReLU, reflection pad, 3x3 conv, instance norm)(x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """Source images (B, C_src, H, W) -> target images (B, C, H, W) in [-1, 1] (Johnson et al. 2016's net).

    Args:
        shape: (C, H, W) of the images it makes.
        source_shape: (C_src, H, W) of the images it translates; None for the same as ``shape``.
        width: channels of the first layer (64); the two downsampling layers double them twice.
        n_blocks: residual blocks at 1/4 resolution: the paper uses 9 at 256 px, 6 at 128 px and below.
    """

    def __init__(self, *, shape: tuple[int, ...], source_shape: tuple[int, ...] | None = None,
                 width: int = 64, n_blocks: int = 9) -> None:
        super().__init__()
        source_shape = shape if source_shape is None else source_shape
        _check_images(tuple(shape), tuple(source_shape), "model.generator")
        non_negative_int(width, "model.generator.width", "the paper uses 64.", minimum=1)
        non_negative_int(n_blocks, "model.generator.n_blocks", "the paper uses 9 at 256 px and 6 at 128 px.")

        def down(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, 2, 1), nn.InstanceNorm2d(c_out), nn.ReLU(True)]

        def up(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(c_in, c_out, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(c_out),
                    nn.ReLU(True)]

        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(source_shape[0], width, 7),
                                   nn.InstanceNorm2d(width), nn.ReLU(True)]
        for i in range(DOWNSAMPLING):
            layers += down(width * 2**i, width * 2 ** (i + 1))
        layers += [ResnetBlock(width * 2**DOWNSAMPLING) for _ in range(n_blocks)]
        for i in range(DOWNSAMPLING, 0, -1):
            layers += up(width * 2**i, width * 2 ** (i - 1))
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, shape[0], 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_gaussian(self)

    def forward(self, x: Tensor) -> Tensor:
        factor = 2**DOWNSAMPLING
        if x.shape[-2] % factor or x.shape[-1] % factor:
            # A transposed convolution would silently return another size.
            raise ValueError(f"ResnetGenerator: images must divide by {factor} in height and width, "
                             f"got {tuple(x.shape[-2:])}")
        return self.net(x)


class Generators(nn.ModuleDict):
    """Both generators: ``["a2b"]`` (G: A -> B) and ``["b2a"]`` (F: B -> A); what ``model.generator`` builds.

    Args:
        shape: (C, H, W) of domain B, from the data module.
        source_shape: (C, H, W) of domain A.
        width, n_blocks: see :class:`ResnetGenerator`.
    """

    def __init__(self, *, shape: tuple[int, ...], source_shape: tuple[int, ...] | None = None,
                 width: int = 64, n_blocks: int = 9) -> None:
        _check_images(shape, source_shape, "model.generator")
        super().__init__({
            "a2b": ResnetGenerator(shape=shape, source_shape=source_shape, width=width, n_blocks=n_blocks),
            "b2a": ResnetGenerator(shape=source_shape, source_shape=shape, width=width, n_blocks=n_blocks),
        })


class Discriminators(nn.ModuleDict):
    """Both PatchGAN discriminators: ``["a"]`` (D_A judges domain A) and ``["b"]`` (D_B judges domain B).

    Args:
        shape: (C, H, W) of domain B, from the data module.
        source_shape: (C, H, W) of domain A.
        width, n_layers, norm: see :class:`~gansuite.nets.patchgan.PatchDiscriminator`
            (64, 3 and instance norm are the paper's 70x70 PatchGAN).
    """

    def __init__(self, *, shape: tuple[int, ...], source_shape: tuple[int, ...] | None = None,
                 width: int = 64, n_layers: int = 3, norm: Literal["batch", "instance"] = "instance") -> None:
        _check_images(shape, source_shape, "model.discriminator")
        options = dict(width=width, n_layers=n_layers, norm=norm)
        super().__init__({"a": PatchDiscriminator(shape=source_shape, **options),
                          "b": PatchDiscriminator(shape=shape, **options)})
