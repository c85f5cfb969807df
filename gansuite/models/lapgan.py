"""LAPGAN (Denton, Chintala, Szlam & Fergus 2015, arXiv:1506.05751): a Laplacian pyramid of GANs.

An image I_0 of R px is split into a Laplacian pyramid: Gaussian levels I_k = d(I_{k-1}) of
R / 2^k px, band-pass images h_k = I_k - u(I_{k+1}) for k < K, and the low-pass residual I_K at
the coarsest level K = levels - 1. Levels are indexed as in the paper: **level 0 is the full-resolution
band, level K the coarse GAN**; log keys (``train/d_loss_l0`` ...) and ``train_levels`` use this index.

- Level K is a plain GAN on I_K: MLP G_K(z_K) and MLP D_K (paper, CIFAR-10: 2 hidden ReLU layers,
  1200 units in G, 600 with dropout in D, z_K 100-d uniform in [-1, 1]).
- Level k < K is a conditional GAN on the band h_k given the upsampled coarser image l_k = u(I_{k+1}):
  G_k(z_k, l_k) -> h_k is a convnet whose noise z_k is one extra plane stacked on l_k (the paper's
  "4th colour plane"); D_k(h_k, l_k) is a convnet on l_k + h_k (the paper adds l_k "before the first
  convolution layer"; ``d_input="stack"`` also stacks l_k as extra channels). Both follow the authors'
  CIFAR code (facebookarchive/eyescream, ``train_cifar_coarse_to_fine.lua``): G = conv 7x7, ReLU,
  conv 7x7, ReLU, conv 5x5, all size-preserving, linear output (a band is signed); D = conv 5x5,
  ReLU, conv 5x5 stride 2, ReLU, dropout, linear; 128 channels there, ``width`` here.
- Training conditions every level on the **real** l_k, so the levels share nothing and could be
  trained apart; sampling runs coarse to fine on the generated images:
  Ĩ_K = G_K(z_K), Ĩ_k = u(Ĩ_{k+1}) + G_k(z_k, u(Ĩ_{k+1})).

d is a 2x2 average and u bilinear upsampling. Any d, u give an exact pyramid, because each band is
defined as what u(d(.)) misses: reconstruct(laplacian_pyramid(x)) == x up to float rounding.

Not the paper's: tanh on G_K's output (the paper does not say; I_K lies in [-1, 1] like the data),
PyTorch's default weight init, and CIFAR-10 at 8 -> 16 -> 32 px (the paper trained on 28 px crops,
8 -> 14 -> 28). The class-conditional LAPGAN is not implemented.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gansuite.callbacks import _PeriodicSamples, atomic_path
from gansuite.errors import ConfigError
from gansuite.models.base import AdversarialModule

MIN_COARSE = 5  # D_{K-1} (two valid 5x5 convolutions, one strided) needs at least 10 px at its level


# ----------------------------------------------------------------------------- the pyramid
def downsample(x: Tensor) -> Tensor:
    """d(.): halve the size by averaging 2x2 blocks (B, C, H, W) -> (B, C, H/2, W/2)."""
    return F.avg_pool2d(x, 2)


def upsample(x: Tensor) -> Tensor:
    """u(.): double the size by bilinear interpolation (B, C, H, W) -> (B, C, 2H, 2W)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def gaussian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """[I_0 = x, I_1 = d(x), ..., I_{levels-1}]."""
    images = [x]
    for _ in range(levels - 1):
        images.append(downsample(images[-1]))
    return images


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """[h_0, ..., h_{levels-2}, I_{levels-1}]: the bands, finest first, then the coarsest image."""
    images = gaussian_pyramid(x, levels)
    return [images[k] - upsample(images[k + 1]) for k in range(levels - 1)] + [images[-1]]


def reconstruct(pyramid: Sequence[Tensor]) -> Tensor:
    """The image whose :func:`laplacian_pyramid` is ``pyramid``: I_k = u(I_{k+1}) + h_k from the coarsest up."""
    image = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        image = upsample(image) + band
    return image


def _check_layout(shape: tuple[int, ...], levels: int, key: str) -> tuple[int, int]:
    """(channels, resolution) of images that a pyramid of ``levels`` levels fits."""
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2:
        raise ConfigError(f"model.levels must be an integer of at least 2 (got {levels!r}); the paper's "
                          "CIFAR-10 and MNIST-size pyramids use model.levels=3.")
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ConfigError(f"{key}: LAPGAN needs square images but the data gives samples of shape {tuple(shape)}; "
                          "use model=gan for 2D points.")
    size, factor = shape[1], 2 ** (levels - 1)
    if size % factor or size // factor < MIN_COARSE:
        raise ConfigError(
            f"model.levels={levels} needs images whose size divides by {factor} down to at least {MIN_COARSE} px, "
            f"but the data gives {size} px; use data.resolution=28 or 32 with model.levels=3 "
            "(or 64 with model.levels=4)."
        )
    return shape[0], size


# ----------------------------------------------------------------------------- one level's nets
class CoarseGenerator(nn.Module):
    """G_K: z (B, latent_dim) -> the coarsest image (B, C, s, s) in [-1, 1]; an MLP with 2 hidden ReLU layers."""

    def __init__(self, *, channels: int, size: int, latent_dim: int, width: int) -> None:
        super().__init__()
        self.shape = (channels, size, size)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, width), nn.ReLU(),
            nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, math.prod(self.shape)), nn.Tanh(),
        )

    def forward(self, z: Tensor, low: Tensor | None = None) -> Tensor:
        return self.net(z).view(-1, *self.shape)


class BandGenerator(nn.Module):
    """G_k: (noise plane (B, 1, S, S), l_k (B, C, S, S)) -> band h_k (B, C, S, S), unbounded."""

    def __init__(self, *, channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels + 1, width, 7, padding=3), nn.ReLU(),
            nn.Conv2d(width, width, 7, padding=3), nn.ReLU(),
            nn.Conv2d(width, channels, 5, padding=2),
        )

    def forward(self, z: Tensor, low: Tensor) -> Tensor:
        return self.net(torch.cat([low, z], dim=1))


class CoarseDiscriminator(nn.Module):
    """D_K: the coarsest image (B, C, s, s) -> raw score (B,); 2 hidden ReLU layers with dropout."""

    def __init__(self, *, channels: int, size: int, width: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * size * size, width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(width, 1),
        )

    def forward(self, x: Tensor, low: Tensor | None = None) -> Tensor:
        return self.net(x).squeeze(1)


class BandDiscriminator(nn.Module):
    """D_k: (band h_k, l_k), both (B, C, S, S) -> raw score (B,); a convnet on l_k + h_k.

    Args:
        d_input: "sum" judges l_k + h_k (the paper); "stack" judges [l_k + h_k, l_k] stacked as channels,
            so D also sees the conditioning on its own.
    """

    def __init__(self, *, channels: int, size: int, width: int, dropout: float,
                 d_input: Literal["sum", "stack"] = "sum") -> None:
        super().__init__()
        self.stack = d_input == "stack"
        out = ((size - 4) - 5) // 2 + 1  # after the valid 5x5 conv and the valid strided 5x5 conv
        self.net = nn.Sequential(
            nn.Conv2d(channels * (2 if self.stack else 1), width, 5), nn.ReLU(),
            nn.Conv2d(width, width, 5, stride=2), nn.ReLU(),
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(width * out * out, 1),
        )

    def forward(self, band: Tensor, low: Tensor) -> Tensor:
        image = low + band
        return self.net(torch.cat([image, low], dim=1) if self.stack else image).squeeze(1)


# ----------------------------------------------------------------------------- all levels
class LaplacianGenerator(nn.Module):
    """Every G_k in one module; ``nets[k]`` is level k (0 = full resolution, ``levels - 1`` = the coarse GAN).

    Called on the tuple from :meth:`LAPGAN.make_inputs` (noise per level, indexed by level), it samples
    coarse to fine and returns the full-resolution image.

    Args:
        shape: (C, R, R) of one sample, from the data module.
        levels: pyramid levels; R must divide by 2^(levels-1) down to at least 5 px.
        latent_dim: size of the coarse GAN's z (the paper: 100).
        coarse_width: units per hidden layer of G_K (the paper: 1200).
        width: channels of the band generators' hidden layers (the authors' CIFAR code: 128).
    """

    def __init__(self, *, shape: tuple[int, ...], levels: int = 3, latent_dim: int = 100,
                 coarse_width: int = 1200, width: int = 128) -> None:
        super().__init__()
        channels, size = _check_layout(tuple(shape), levels, "model.generator")
        self.levels, self.latent_dim, self.shape = levels, latent_dim, tuple(shape)
        coarse = size // 2 ** (levels - 1)
        self.nets = nn.ModuleList(
            [BandGenerator(channels=channels, width=width) for _ in range(levels - 1)]
            + [CoarseGenerator(channels=channels, size=coarse, latent_dim=latent_dim, width=coarse_width)]
        )

    def level(self, k: int, z: Tensor, low: Tensor | None = None) -> Tensor:
        """G_k's output: the coarsest image for k = levels - 1, else the band h_k given l_k = ``low``."""
        return self.nets[k](z, low)

    def forward_levels(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        """[Ĩ_0, ..., Ĩ_K]: every level's image, indexed by level, each built on the generated coarser one."""
        top = self.levels - 1
        images: list[Tensor] = [None] * self.levels  # type: ignore[list-item]
        images[top] = self.level(top, inputs[top])
        for k in range(top - 1, -1, -1):
            low = upsample(images[k + 1])
            images[k] = low + self.level(k, inputs[k], low)
        return images

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.forward_levels(inputs)[0]


class LaplacianDiscriminator(nn.Module):
    """Every D_k in one module; ``discriminator(x, low, level=k)`` scores level k's band (or coarsest image).

    Args:
        shape: (C, R, R) of one sample, from the data module.
        levels: as for :class:`LaplacianGenerator`.
        coarse_width: units per hidden layer of D_K (the paper: 600).
        width: channels of the band discriminators (the authors' CIFAR code: 128).
        dropout: dropout before every D's last layer(s) (the paper and its code: 0.5).
        d_input: what a band D judges, see :class:`BandDiscriminator`.
    """

    def __init__(self, *, shape: tuple[int, ...], levels: int = 3, coarse_width: int = 600, width: int = 128,
                 dropout: float = 0.5, d_input: Literal["sum", "stack"] = "sum") -> None:
        super().__init__()
        if d_input not in ("sum", "stack"):
            raise ConfigError(f"model.discriminator.d_input must be sum or stack (got {d_input!r}); "
                              "sum is the paper's.")
        channels, size = _check_layout(tuple(shape), levels, "model.discriminator")
        self.levels = levels
        self.nets = nn.ModuleList(
            [BandDiscriminator(channels=channels, size=size // 2**k, width=width, dropout=dropout, d_input=d_input)
             for k in range(levels - 1)]
            + [CoarseDiscriminator(channels=channels, size=size // 2 ** (levels - 1), width=coarse_width,
                                   dropout=dropout)]
        )

    def forward(self, x: Tensor, low: Tensor | None = None, level: int = 0) -> Tensor:
        return self.nets[level](x, low)


# ----------------------------------------------------------------------------- the GAN
def make_optimizer(params, *, kind: Literal["sgd", "adam"] = "sgd", lr: float, momentum: float = 0.5,
                   betas: Sequence[float] = (0.5, 0.999)) -> torch.optim.Optimizer:
    """The paper's SGD with momentum, or Adam, chosen by one config key (``model.g_optimizer.kind``).

    One factory for both, so a preset switches with ``kind: adam`` instead of replacing the node:
    Hydra merges config nodes and cannot drop SGD's ``momentum`` that Adam would refuse.
    """
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas))
    raise ConfigError(f"model.g_optimizer.kind / model.d_optimizer.kind: {kind!r} is unknown; use sgd or adam.")


def _parse_levels(train_levels: Any, levels: int) -> list[int]:
    if train_levels == "all":
        return list(range(levels))
    chosen = [train_levels] if isinstance(train_levels, int) else train_levels
    try:
        chosen = sorted(set(chosen))
    except TypeError:
        chosen = None
    if not chosen or not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k < levels for k in chosen):
        raise ConfigError(
            f"model.module.train_levels must be all, a level or a list of levels in 0..{levels - 1} "
            f"(got {train_levels!r}); level 0 is full resolution and {levels - 1} the coarse GAN."
        )
    return chosen


class LAPGAN(AdversarialModule):
    """The pyramid of GANs trained under one schedule: each step updates every trained level's D, then its G.

    D's loss is the sum over trained levels of the objective on level k's real and fake band, each judged
    by D_k given the real l_k; G's loss is the sum of the levels' generator terms. As the levels share no
    parameters, training them together with a per-parameter optimizer (SGD, Adam) updates each exactly as
    a run of its own would on the same batches (a global-norm ``grad_clip`` couples them).

    ``train_levels`` other than "all" **freezes** the other levels: their G_k and D_k get
    ``requires_grad=False`` and are not run in training at all (no gradients, no compute), but stay in
    the optimizers, which skip parameters without gradients. The optimizer layout is therefore the same
    for every choice, so levels can be trained one at a time by resuming one run with another level:
    ``resume=<run> model.module.train_levels=1 trainer.max_steps=<more>``. (WGAN's weight clipping
    still clamps frozen critics.)

    Args:
        train_levels: "all", a level, or a list of levels to train.
        (the rest: see :class:`~gansuite.models.base.AdversarialModule`)
    """

    def __init__(self, *, train_levels: int | Sequence[int] | str = "all", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.levels = self.generator.levels
        self.train_levels = _parse_levels(train_levels, self.levels)
        for k in range(self.levels):
            if k not in self.train_levels:
                self.generator.nets[k].requires_grad_(False)
                self.discriminator.nets[k].requires_grad_(False)

    @property
    def top(self) -> int:
        return self.levels - 1

    def noise(self, n: int, generator: torch.Generator | None = None, device=None, dtype=None) -> tuple[Tensor, ...]:
        """Noise for every level, indexed by level: a 1-channel plane of level k's size, and z_K for the coarse
        GAN; uniform in [-1, 1] as in the paper."""
        size = self.generator.shape[1]
        shapes = [(n, 1, size // 2**k, size // 2**k) for k in range(self.top)] + [(n, self.generator.latent_dim)]
        return tuple((torch.rand(s, generator=generator, device=device, dtype=dtype) * 2 - 1) for s in shapes)

    def make_inputs(self, n: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        return tuple(z.to(self.device, self.dtype) for z in self.noise(n, generator))

    def score(self, samples: Tensor, inputs: Any) -> Tensor:
        """D_0 on the finest band of ``samples``, given their own upsampled coarser version."""
        low = upsample(downsample(samples))
        return self.discriminator(samples - low, low, level=0)

    def generate(self, batch: tuple[Tensor, Tensor]) -> dict[str, Any]:
        real = batch[0]
        images = gaussian_pyramid(real, self.levels)
        lows = [upsample(images[k + 1]) for k in range(self.top)] + [None]
        bands = [images[k] - lows[k] for k in range(self.top)] + [images[self.top]]
        z = self.noise(real.shape[0], device=real.device, dtype=real.dtype)
        fake = {k: self.generator.level(k, z[k], lows[k]) for k in self.train_levels}
        return {"real": bands, "low": lows, "fake": fake}

    def discriminator_loss(self, batch, fake: dict[str, Any], regularize: bool) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        loss, reg, real_scores, fake_scores = 0.0, 0.0, [], []
        for k in self.train_levels:
            real_k, fake_k, low = fake["real"][k], fake["fake"][k].detach(), fake["low"][k]
            real_out = self.discriminator(real_k, low, level=k)
            fake_out = self.discriminator(fake_k, low, level=k)
            terms[f"loss_l{k}"] = self.objective.d_loss(real_out, fake_out)
            loss = loss + terms[f"loss_l{k}"]
            real_scores.append(real_out.mean())
            fake_scores.append(fake_out.mean())
            if regularize:
                reg = reg + self.regularizer(lambda x, k=k, low=low: self.discriminator(x, low, level=k), real_k, fake_k)
        terms["loss"] = loss
        terms["real_score"] = torch.stack(real_scores).mean()
        terms["fake_score"] = torch.stack(fake_scores).mean()
        if regularize:
            terms["reg"] = reg
        return terms

    def generator_loss(self, batch, fake: dict[str, Any]) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        loss = 0.0
        for k in self.train_levels:
            out = self.discriminator(fake["fake"][k], fake["low"][k], level=k)
            terms[f"loss_l{k}"] = self.objective.g_loss(out)
            loss = loss + terms[f"loss_l{k}"]
        terms["loss"] = loss
        return terms

    @torch.no_grad()
    def sample_levels(self, inputs: Sequence[Tensor], ema: bool = True) -> list[Tensor]:
        """Every level's image (indexed by level, 0 = full resolution) from the EMA generator, in eval mode."""
        net = self.generator_ema if ema and self.generator_ema is not None else self.generator
        was_training = net.training
        net.eval()
        try:
            return net.forward_levels(inputs)
        finally:
            net.train(was_training)


# ----------------------------------------------------------------------------- pictures of the levels
def save_levels(module: LAPGAN, inputs: Sequence[Tensor], path: str | os.PathLike, ema: bool = True) -> None:
    """Write one PNG with a row per sample and a column per level, coarse to fine, each shown at full size.

    The file appears complete or not at all: it is written to a hidden temporary file and renamed.
    """
    from gansuite.data import denormalize
    from gansuite.outputs import save_png

    images = module.sample_levels(inputs, ema=ema)
    size = images[0].shape[-1]
    # Nearest-neighbour enlargement shows each level's pixels as they are.
    columns = [F.interpolate(x.float().cpu(), size=size, mode="nearest") for x in reversed(images)]
    grid = torch.stack(columns, dim=1).flatten(0, 1)  # sample-major, so a row is one sample's levels
    with atomic_path(Path(path)) as tmp:
        save_png(denormalize(grid), tmp, nrow=len(images))


class LevelGrid(_PeriodicSamples):
    """Save :func:`save_levels` of fixed noise as ``samples/levels_step_XXXXXX.png`` every N steps and at the end.

    The schedule, fixed inputs and argument checks are the sample grid's (``_PeriodicSamples``).

    Args:
        every_n_steps: period in gansuite steps (generator updates).
        num_samples: rows (samples) in the picture.
        seed: seeds the fixed noise, so pictures compare across steps and runs.
        ema: draw from the EMA generator when there is one.
    """

    config_key = "lapgan_levels"
    default_num_samples = 8

    def _snapshot(self, trainer: L.Trainer, pl_module: LAPGAN, step: int) -> None:
        self._last_saved = step
        if trainer.is_global_zero:
            save_levels(pl_module, self.fixed_inputs(pl_module), self.output_dir(trainer) / f"levels_step_{step:06d}.png",
                        ema=self.ema)
