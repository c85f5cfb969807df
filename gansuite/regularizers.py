"""Discriminator regularizers: functions of (critic, real, fake) that return a scalar penalty.

``critic`` maps a batch of samples to D's outputs; a conditional model passes a
closure over its labels, so the same regularizer serves every model family.
The training schedule decides how often a regularizer runs (``loss.reg_every``)
and scales the penalty by that interval (lazy regularization, Karras et al. 2020).

:class:`LeCam` is a function of D's outputs, not of its inputs: a family whose D step has the
outputs at hand passes them to :meth:`LeCam.from_scores` instead of scoring the batch again. It
keeps running means of those outputs as buffers, so they travel in checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Critic = Callable[[Tensor], Tensor]


def _input_gradient(critic: Critic, x: Tensor) -> Tensor:
    """d sum(critic(x)) / dx per sample, flattened to B x N, kept in the graph for double backward."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1)


class GradientPenalty:
    """WGAN-GP (Gulrajani et al. 2017): weight * E[(||grad D(x_hat)|| - target)^2].

    x_hat is uniform on the segment between each real sample and a fake one.
    """

    def __init__(self, weight: float = 10.0, target: float = 1.0) -> None:
        self.weight = weight
        self.target = target

    def __call__(self, critic: Critic, real: Tensor, fake: Tensor) -> Tensor:
        alpha = self.interpolation_weights(real)
        # Under mixed precision the fakes can come out in half precision while the reals do not.
        x_hat = torch.lerp(real.detach(), fake.detach().to(real.dtype), alpha)
        norm = _input_gradient(critic, x_hat).norm(2, dim=1)
        return self.weight * ((norm - self.target) ** 2).mean()


    def interpolation_weights(self, real: Tensor) -> Tensor:
        """alpha ~ U(0, 1), one per sample, shaped to broadcast over the sample's dimensions."""
        return torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)


class R1Penalty:
    """R1 (Mescheder et al. 2018): gamma / 2 * E[||grad D(x)||^2] on real samples."""

    def __init__(self, gamma: float = 10.0) -> None:
        self.gamma = gamma

    def __call__(self, critic: Critic, real: Tensor, fake: Tensor) -> Tensor:
        return 0.5 * self.gamma * _input_gradient(critic, real).pow(2).sum(dim=1).mean()


class R2Penalty:
    """R2 (Mescheder et al. 2018): gamma / 2 * E[||grad D(x)||^2] on fake samples."""

    def __init__(self, gamma: float = 10.0) -> None:
        self.gamma = gamma

    def __call__(self, critic: Critic, real: Tensor, fake: Tensor) -> Tensor:
        return 0.5 * self.gamma * _input_gradient(critic, fake).pow(2).sum(dim=1).mean()


class R1R2Penalty:
    """R1 on the reals plus R2 on the fakes, both with ``gamma``: R3GAN's pair (Huang et al. 2024)."""

    def __init__(self, gamma: float = 10.0) -> None:
        self.r1, self.r2 = R1Penalty(gamma), R2Penalty(gamma)

    def __call__(self, critic: Critic, real: Tensor, fake: Tensor) -> Tensor:
        return self.r1(critic, real, fake) + self.r2(critic, real, fake)


class LeCam(nn.Module):
    """LeCam (Tseng, Jiang, Liu, Yang & Yang 2021): weight * (E[relu(D(x) - a_F)^2] + E[relu(a_R - D(G(z)))^2]).

    a_R and a_F are exponential moving averages of D's mean output on reals and on fakes, updated from every
    D step's outputs (``decay`` per update, as the paper's code; averages start at 0). Before ``start`` updates
    the averages follow the latest means (decay 0), as StudioGAN's ``lecam_ema_start_iter`` does. The relu keeps
    only the scores that stray past the other side's average, as the authors' code does.

    Args:
        weight: lambda (StudioGAN's BigGAN / CIFAR-10: 0.3).
        decay: of the two averages (the paper's code 0.99, StudioGAN's CIFAR-10 configs 0.9).
        start: updates before the averages start to decay.
    """

    def __init__(self, weight: float = 0.3, decay: float = 0.99, start: int = 0) -> None:
        super().__init__()
        self.weight, self.decay, self.start = float(weight), float(decay), int(start)
        self.register_buffer("real_average", torch.zeros(()))
        self.register_buffer("fake_average", torch.zeros(()))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def from_scores(self, real: Tensor, fake: Tensor) -> Tensor:
        """The penalty on this step's scores, with the averages as they were; then the averages move on."""
        penalty = self.weight * (F.relu(real - self.fake_average).pow(2).mean()
                                 + F.relu(self.real_average - fake).pow(2).mean())
        with torch.no_grad():
            # Decay 0 until `start` updates, chosen on the device: no host read of the counter.
            decay = torch.where(self.updates >= self.start, self.decay, 0.0)
            self.real_average.lerp_(real.detach().float().mean(), 1 - decay)
            self.fake_average.lerp_(fake.detach().float().mean(), 1 - decay)
            self.updates.add_(1)
        return penalty

    def forward(self, critic: Critic, real: Tensor, fake: Tensor) -> Tensor:
        """As any regularizer: score the reals and fakes (for families that do not pass their scores)."""
        return self.from_scores(critic(real), critic(fake))
