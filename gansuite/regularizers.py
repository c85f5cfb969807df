"""Discriminator regularizers: functions of (critic, real, fake) that return a scalar penalty.

``critic`` maps a batch of samples to D's outputs; a conditional model passes a
closure over its labels, so the same regularizer serves every model family.
The training schedule decides how often a regularizer runs (``loss.reg_every``)
and scales the penalty by that interval (lazy regularization, Karras et al. 2020).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

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
