"""pix2pix (Isola et al. 2017): a U-Net generator for image-to-image translation of aligned pairs.

G maps a source image a to a target image b. An encoder of 4x4 stride-2 convolutions halves the
map down to a bottleneck (1x1 at full depth), a decoder of 4x4 stride-2 transposed convolutions
doubles it back, and each decoder map is concatenated with the encoder map of the same size. The
skips let what a and b share (edges, layout) bypass the bottleneck, which then only has to carry
what changes. D is :class:`gansuite.nets.patchgan.PatchDiscriminator` judging (a, b) pairs; the
losses and schedule are :class:`gansuite.models.translation.PairedTranslationGAN`'s (see conf/model/pix2pix.yaml).

Layout (the paper's appendix, with the authors' code where the paper is silent): encoder
C64-C128-C256-C512-C512-..., LeakyReLU 0.2, batch norm on every layer but the first and the
innermost; decoder mirrored with ReLU, batch norm and dropout 0.5 in its three innermost blocks;
a tanh output; weights N(0, 0.02). There is no z: the paper found G ignored one, so dropout is
G's only noise, kept on at test time.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gansuite.errors import ConfigError
from gansuite.nets.init import init_gaussian

DROPOUT_BLOCKS = 3  # the paper's decoder: CD512-CD512-CD512-C512-...


class NoiseDropout(nn.Module):
    """Dropout that stays on in eval mode: pix2pix's only source of randomness.

    The paper applies dropout "at both training and test time" as G's noise, where
    ``nn.Dropout`` would turn off under ``eval()``, which gansuite uses for sample grids, evaluation
    and gansuite-sample. So samples of the same source differ between calls, and each call draws
    from the global torch RNG.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _check_shapes(shape: tuple[int, ...], source_shape: tuple[int, ...] | None) -> None:
    if len(shape) != 3:
        raise ConfigError(f"model.generator: pix2pix's U-Net needs images but the data gives samples of shape "
                          f"{tuple(shape)}; use paired image data.")
    if source_shape is None:
        raise ConfigError("model.generator: pix2pix translates source images into targets but the data has no "
                          "source images; pick a paired data config (data_kind: paired).")
    if len(source_shape) != 3 or tuple(source_shape[1:]) != tuple(shape[1:]):
        raise ConfigError(f"model.generator: pix2pix needs aligned pairs of the same size but the data gives "
                          f"sources of shape {tuple(source_shape)} and targets of shape {tuple(shape)}; "
                          "resize both sides of the paired data to the same resolution.")
    if shape[1] != shape[2]:
        raise ConfigError(f"model.generator: pix2pix's U-Net needs square images but the data gives "
                          f"{shape[1]}x{shape[2]} px; set the data resolution to a square size such as 256.")


class UNetGenerator(nn.Module):
    """Source images (B, C_a, H, H) -> target images (B, C_b, H, H) in [-1, 1].

    Activations open each block, as in the authors' code: a skip hands the decoder an encoder map
    before its activation, the next encoder block applies LeakyReLU to it and the decoder block
    that receives it applies ReLU to the whole concatenation. That equals the paper's post-activation
    description except that the decoder sees ReLU, not LeakyReLU, of the skipped maps.

    In eval mode batch norm uses its running statistics, the usual protocol. The paper instead
    normalises with the test batch's own statistics; with its batch size of 1 that is instance
    norm, which ``norm="instance"`` gives in train and eval mode alike.

    Args:
        shape: (C_b, H, H) of the target images, from the data module; C_b output channels.
        source_shape: (C_a, H, H) of the source images; C_a may differ from C_b (labels -> photo).
        width: channels of the first encoder layer; each deeper layer doubles them, up to 8x.
        depth: stride-2 layers in the encoder (and transposed ones in the decoder); None for as
            deep as the size allows, log2 H for a power of two: 8 at 256 px (the paper's net,
            bottleneck 1x1), 5 at 32 px.
        dropout: drop rate of the three innermost decoder blocks, in train and eval mode alike
            (see :class:`NoiseDropout`); 0 turns it off and makes G deterministic.
        norm: ``batch`` (the paper's) or ``instance`` (affine-free, with conv biases, as the authors' code).
    """

    def __init__(self, *, shape: tuple[int, ...], source_shape: tuple[int, ...] | None = None, width: int = 64,
                 depth: int | None = None, dropout: float = 0.5,
                 norm: Literal["batch", "instance"] = "batch") -> None:
        super().__init__()
        _check_shapes(shape, source_shape)
        if norm not in ("batch", "instance"):
            raise ConfigError(f"model.generator.norm: {norm!r} is unknown; use batch or instance.")
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ConfigError(f"model.generator.width must be a positive integer (got {width!r}); the paper uses 64.")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.generator.dropout must be in [0, 1) (got {dropout!r}); use 0.5 (the paper's) "
                              "or 0 for a deterministic generator.")
        side = shape[1]
        if depth is None:
            depth = (side & -side).bit_length() - 1  # how often the side halves exactly
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ConfigError(f"model.generator.depth must be a positive integer or null (got {depth!r}).")
        if side % 2**depth:
            raise ConfigError(f"model.generator.depth={depth} needs the image side to be a multiple of {2**depth} "
                              f"but the data gives {side} px; set model.generator.depth=null (the deepest that "
                              f"fits) or the data resolution to a multiple of {2**depth}.")
        self.depth = depth
        instance = norm == "instance"

        def make_norm(c: int) -> nn.Module:
            return nn.InstanceNorm2d(c, affine=False) if instance else nn.BatchNorm2d(c)

        channels = [width * min(2**k, 8) for k in range(depth)]
        self.down = nn.ModuleList()
        c_in = source_shape[0]
        for k, c in enumerate(channels):
            # No norm on the first layer (the paper) nor on the innermost (the authors' code): batch
            # norm of a 1x1 map of one image would zero it. Biases only where no batch norm follows.
            normed = 0 < k < depth - 1
            # Not in place: this block's input is also a skip, which must reach the decoder unchanged.
            layers: list[nn.Module] = [] if k == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(c_in, c, 4, 2, 1, bias=instance or not normed))
            if normed:
                layers.append(make_norm(c))
            self.down.append(nn.Sequential(*layers))
            c_in = c

        self.up = nn.ModuleList()
        for k in reversed(range(depth)):  # innermost first; block k outputs the size of encoder map k - 1
            # In place is safe: the input is a concatenation or the bottleneck, needed by no backward.
            layers = [nn.ReLU(inplace=True)]
            c_in = channels[k] if k == depth - 1 else 2 * channels[k]  # the skip doubles the channels
            if k == 0:
                layers += [nn.ConvTranspose2d(c_in, shape[0], 4, 2, 1), nn.Tanh()]
            else:
                layers += [nn.ConvTranspose2d(c_in, channels[k - 1], 4, 2, 1, bias=instance),
                           make_norm(channels[k - 1])]
                if dropout > 0 and depth - 1 - k < DROPOUT_BLOCKS:
                    layers.append(NoiseDropout(dropout))
            self.up.append(nn.Sequential(*layers))

        init_gaussian(self)

    def forward(self, a: Tensor) -> Tensor:
        skips = []
        h = a
        for down in self.down:
            h = down(h)
            skips.append(h)
        skips.pop()  # the bottleneck goes straight on, without a skip of its own
        h = self.up[0](h)
        for up in self.up[1:]:
            h = up(torch.cat([skips.pop(), h], dim=1))  # skip first, as in the authors' code
        return h
