"""Adversarial losses as pure functions of discriminator outputs.

Each discriminator loss takes the raw (pre-sigmoid) outputs on real and on fake
samples; each generator loss takes the outputs on fake samples, and a relativistic
one (RaGAN, RaLSGAN, RpGAN) the outputs on real samples too: its :class:`Objective`
says ``g_uses_real: true`` and the schedule then scores the batch's reals in G's step
as well. All return the mean over the batch. ``conf/loss/*.yaml`` pairs them into an
:class:`Objective`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gansuite.errors import ConfigError

DLoss = Callable[[Tensor, Tensor], Tensor]
GLoss = Callable[..., Tensor]  # fake -> loss, or (fake, real) -> loss when the objective's g_uses_real


@dataclass(frozen=True)
class Objective:
    """A discriminator loss, the generator loss that goes with it, and WGAN's weight clipping.

    Args:
        d_loss: ``(real_logits, fake_logits) -> scalar`` minimised by D.
        g_loss: ``fake_logits -> scalar`` minimised by G, or ``(fake_logits, real_logits) -> scalar``
            when ``g_uses_real``.
        weight_clip: if set, D's weights are clamped to [-c, c] after every D update
            (WGAN, Arjovsky et al. 2017).
        g_uses_real: G's loss also reads D's outputs on the real batch (the relativistic losses). Those
            outputs carry no gradient (D is frozen in G's step and reals do not depend on G), so the
            schedule computes them without a graph.
    """

    d_loss: DLoss
    g_loss: GLoss
    weight_clip: float | None = None
    g_uses_real: bool = False

    def generator(self, fake: Tensor, real: Tensor | None = None) -> Tensor:
        """G's loss from D's outputs on the fakes (and on the reals, which a relativistic loss needs)."""
        return self.g_loss(fake, real) if self.g_uses_real else self.g_loss(fake)

    def __post_init__(self) -> None:
        if self.weight_clip is not None and self.weight_clip <= 0:
            raise ConfigError(
                f"loss.objective.weight_clip must be positive (got {self.weight_clip}); "
                "use a value like 0.01 or null to turn clipping off."
            )


# Goodfellow et al. 2014: D maximises log D(x) + log(1 - D(G(z))).
def bce_d(real: Tensor, fake: Tensor) -> Tensor:
    """-log sigmoid(real) - log(1 - sigmoid(fake)), written with softplus for stability."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def minimax_g(fake: Tensor) -> Tensor:
    """The original minimax generator loss: minimise log(1 - D(G(z))) (saturates early on)."""
    return -F.softplus(fake).mean()


def nonsaturating_g(fake: Tensor) -> Tensor:
    """The non-saturating generator loss: maximise log D(G(z))."""
    return F.softplus(-fake).mean()


# Mao et al. 2017, with the 0-1 coding (a = 0, b = c = 1).
def lsgan_d(real: Tensor, fake: Tensor) -> Tensor:
    """0.5 (D(x) - 1)^2 + 0.5 D(G(z))^2."""
    return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()


def lsgan_g(fake: Tensor) -> Tensor:
    """0.5 (D(G(z)) - 1)^2."""
    return 0.5 * ((fake - 1) ** 2).mean()


# Arjovsky et al. 2017 and Gulrajani et al. 2017: the critic's outputs are unbounded scores.
def wasserstein_d(real: Tensor, fake: Tensor) -> Tensor:
    """E[D(G(z))] - E[D(x)]: the negated Wasserstein estimate."""
    return fake.mean() - real.mean()


def wasserstein_g(fake: Tensor) -> Tensor:
    """-E[D(G(z))]."""
    return -fake.mean()


# Lim & Ye 2017; Miyato et al. 2018.
def hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()


def hinge_g(fake: Tensor) -> Tensor:
    """-E[D(G(z))]."""
    return -fake.mean()


def matching_aware_d(d_loss: DLoss, real: Tensor, wrong: Tensor, fake: Tensor) -> Tensor:
    """GAN-CLS's discriminator loss (Reed et al. 2016, Algorithm 1) for any separable ``d_loss``: real images with
    their own captions are real; real images with mismatched captions (``wrong``) and generated images with
    their captions (``fake``) are fake, weighted half each. For the paper's BCE this is
    ``-log D(x, h) - (log(1 - D(x, h_wrong)) + log(1 - D(x_gen, h))) / 2``."""
    return 0.5 * (d_loss(real, wrong) + d_loss(real, fake))


# Jolicoeur-Martineau 2019 ("The relativistic discriminator"): the relativistic average losses compare each
# score with the other side's mean, and G's loss is D's with real and fake swapped, so G's gradient also comes
# through the real term (the fakes' mean sits inside it).
def _relative(a: Tensor, b: Tensor) -> Tensor:
    """a - mean(b), in a's shape (over the batch: a ``B`` or ``B x 1`` score)."""
    return a - b.mean()


def ragan_d(real: Tensor, fake: Tensor) -> Tensor:
    """RaSGAN: -E[log sigmoid(D(x) - E D(G(z)))] - E[log(1 - sigmoid(D(G(z)) - E D(x)))]."""
    return F.softplus(-_relative(real, fake)).mean() + F.softplus(_relative(fake, real)).mean()


def ragan_g(fake: Tensor, real: Tensor) -> Tensor:
    """RaSGAN's G: -E[log sigmoid(D(G(z)) - E D(x))] - E[log(1 - sigmoid(D(x) - E D(G(z))))]."""
    return ragan_d(fake, real)


def ralsgan_d(real: Tensor, fake: Tensor) -> Tensor:
    """RaLSGAN: E[(D(x) - E D(G(z)) - 1)^2] + E[(D(G(z)) - E D(x) + 1)^2] (the paper's Eq. 16, no 1/2)."""
    return ((_relative(real, fake) - 1) ** 2).mean() + ((_relative(fake, real) + 1) ** 2).mean()


def ralsgan_g(fake: Tensor, real: Tensor) -> Tensor:
    """RaLSGAN's G: E[(D(G(z)) - E D(x) - 1)^2] + E[(D(x) - E D(G(z)) + 1)^2]."""
    return ralsgan_d(fake, real)


# Huang, Gokaslan, Kuleshov & Tompkin 2024 (R3GAN) after Jolicoeur-Martineau 2019 (RpGAN): each real is paired
# with the fake at the same place in the batch, so the two batches must be equally large.
def _paired(a: Tensor, b: Tensor) -> Tensor:
    if a.shape != b.shape:
        raise ValueError(f"a paired relativistic loss needs as many fakes as reals (got scores of shape "
                         f"{tuple(a.shape)} and {tuple(b.shape)})")
    return a - b


def rpgan_d(real: Tensor, fake: Tensor) -> Tensor:
    """RpGAN: E[softplus(-(D(x) - D(G(z))))] = -E[log sigmoid(D(x) - D(G(z)))] over the pairs."""
    return F.softplus(-_paired(real, fake)).mean()


def rpgan_g(fake: Tensor, real: Tensor) -> Tensor:
    """RpGAN's G: E[softplus(-(D(G(z)) - D(x)))]."""
    return F.softplus(-_paired(fake, real)).mean()
