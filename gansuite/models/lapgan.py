"""LAPGAN (Denton, Chintala, Szlam & Fergus 2015, arXiv:1506.05751): a Laplacian pyramid of GANs.

The pyramid and the networks of every level (an MLP GAN on the coarsest image, a conditional convnet GAN
on each finer band) are in :mod:`gansuite.nets.laplacian`. Levels are indexed as in the paper: **level 0
is the full-resolution band, level K = levels - 1 the coarse GAN**; log keys (``train/d_loss_l0`` ...)
and ``train_levels`` use this index.

:class:`LAPGAN` trains the levels under one schedule. Training conditions every level on the **real**
upsampled coarser image l_k = u(I_{k+1}), so the levels share nothing and could be trained apart;
``train_levels`` trains some of them and freezes the rest. Sampling runs coarse to fine on the
generated images. The noise is uniform in [-1, 1] as in the paper: z_K for the coarse GAN and one
plane of level k's size for each band.

:func:`make_optimizer` gives the paper's SGD with momentum, or Adam, from one config key.
:func:`save_levels` writes every level of a few samples as one PNG, and the :class:`LevelGrid`
callback (``callbacks.lapgan_levels``) does so every N steps.

Not the paper's: CIFAR-10 at 8 -> 16 -> 32 px (the paper trained on 28 px crops, 8 -> 14 -> 28).
The class-conditional LAPGAN is not implemented.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from gansuite.errors import ConfigError
from gansuite.models.schedule import AdversarialModule
from gansuite.nets.laplacian import downsample, gaussian_pyramid, upsample
from gansuite.outputs import atomic_path
from gansuite.training.callbacks import PeriodicSamples


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
        (the rest: see :class:`~gansuite.models.schedule.AdversarialModule`)
    """

    augmentable = False  # D judges each level's band-pass residual, not an image of the data

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
            self._observe_real(real_out)
            loss = loss + terms[f"loss_l{k}"]
            real_scores.append(real_out.mean())
            fake_scores.append(fake_out.mean())
            if regularize:
                reg = reg + self._regularize(lambda x, k=k, low=low: self.discriminator(x, low, level=k), real_k, fake_k,
                                             real_out, fake_out)
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
            critic = lambda x, k=k: self.discriminator(x, fake["low"][k], level=k)  # noqa: E731
            terms[f"loss_l{k}"] = self._g_adversarial(critic, fake["real"][k], fake["fake"][k])
            loss = loss + terms[f"loss_l{k}"]
        terms["loss"] = loss
        return terms

    @torch.no_grad()
    def sample_levels(self, inputs: Sequence[Tensor], ema: bool = True) -> list[Tensor]:
        """Every level's image (indexed by level, 0 = full resolution) from the EMA generator, in eval mode."""
        with self.evaluating(ema) as net:
            return net.forward_levels(inputs)


# ----------------------------------------------------------------------------- pictures of the levels
def save_levels(module: LAPGAN, inputs: Sequence[Tensor], path: str | os.PathLike, ema: bool = True) -> None:
    """Write one PNG with a row per sample and a column per level, coarse to fine, each shown at full size.

    The file appears complete or not at all: it is written to a hidden temporary file and renamed.
    """
    from gansuite.data.base import denormalize
    from gansuite.outputs import save_png

    images = module.sample_levels(inputs, ema=ema)
    size = images[0].shape[-1]
    # Nearest-neighbour enlargement shows each level's pixels as they are.
    columns = [F.interpolate(x.float().cpu(), size=size, mode="nearest") for x in reversed(images)]
    grid = torch.stack(columns, dim=1).flatten(0, 1)  # sample-major, so a row is one sample's levels
    with atomic_path(Path(path)) as tmp:
        save_png(denormalize(grid), tmp, nrow=len(images))


class LevelGrid(PeriodicSamples):
    """Save :func:`save_levels` of fixed noise as ``samples/levels_step_XXXXXX.png`` every N steps and at the end.

    The schedule, fixed inputs and argument checks are the sample grid's (``PeriodicSamples``).

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
