"""Every loss and regularizer against a value computed by hand."""

import math

import pytest
import torch
from torch.testing import assert_close

from gansuite import losses
from gansuite.errors import ConfigError
from gansuite.regularizers import GradientPenalty, R1Penalty

REAL = torch.tensor([1.0, -2.0])
FAKE = torch.tensor([0.5, 3.0])


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def t(x: float) -> torch.Tensor:
    return torch.tensor(x)


TOL = {"rtol": 1e-6, "atol": 1e-6}


def test_bce_discriminator_is_cross_entropy_with_real_1_fake_0():
    expected = mean(-math.log(sigmoid(r)) for r in REAL.tolist()) + mean(
        -math.log(1 - sigmoid(f)) for f in FAKE.tolist()
    )
    assert_close(losses.bce_d(REAL, FAKE), t(expected), **TOL)


def test_minimax_and_nonsaturating_generator():
    assert_close(losses.minimax_g(FAKE), t(mean(math.log(1 - sigmoid(f)) for f in FAKE.tolist())), **TOL)
    assert_close(losses.nonsaturating_g(FAKE), t(mean(-math.log(sigmoid(f)) for f in FAKE.tolist())), **TOL)


def test_bce_is_stable_for_large_logits():
    big = torch.tensor([200.0, -200.0])
    assert torch.isfinite(losses.bce_d(big, -big))
    assert_close(losses.bce_d(torch.tensor([200.0]), torch.tensor([-200.0])), t(0.0), **TOL)


def test_lsgan():
    # 0.5 * mean((1-1)^2, (-2-1)^2) + 0.5 * mean(0.5^2, 3^2) = 0.5*4.5 + 0.5*4.625
    assert_close(losses.lsgan_d(REAL, FAKE), t(2.25 + 2.3125), **TOL)
    # 0.5 * mean((0.5-1)^2, (3-1)^2) = 0.5 * 2.125
    assert_close(losses.lsgan_g(FAKE), t(1.0625), **TOL)


def test_wasserstein():
    assert_close(losses.wasserstein_d(REAL, FAKE), t(1.75 - (-0.5)), **TOL)
    assert_close(losses.wasserstein_g(FAKE), t(-1.75), **TOL)


def test_hinge():
    # mean(relu(1-1), relu(1+2)) + mean(relu(1+0.5), relu(1+3)) = 1.5 + 2.75
    assert_close(losses.hinge_d(REAL, FAKE), t(4.25), **TOL)
    assert_close(losses.hinge_g(FAKE), t(-1.75), **TOL)


def test_weight_clip_must_be_positive():
    with pytest.raises(ConfigError, match="loss.objective.weight_clip"):
        losses.Objective(d_loss=losses.wasserstein_d, g_loss=losses.wasserstein_g, weight_clip=-0.01)


def linear_critic(w: torch.Tensor):
    return lambda x: x.flatten(1) @ w


def test_gradient_penalty_of_a_linear_critic():
    # grad D = w everywhere, so the penalty is weight * (|w| - 1)^2 = 10 * (5 - 1)^2 wherever x_hat lands.
    w = torch.tensor([3.0, 4.0])
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    assert_close(GradientPenalty(weight=10.0)(linear_critic(w), real, fake), t(160.0), **TOL)


def test_gradient_penalty_interpolates_between_real_and_fake():
    # D(x) = sum(x^2) has grad 2x; with real == fake every x_hat equals that point.
    real = torch.tensor([[0.3, 0.4], [1.5, 2.0]])  # norms 0.5 and 2.5 -> grad norms 1 and 5
    penalty = GradientPenalty(weight=1.0)(lambda x: (x**2).sum(1), real, real.clone())
    assert_close(penalty, t(mean([(1 - 1) ** 2, (5 - 1) ** 2])), **TOL)


def test_r1_penalty():
    w = torch.tensor([3.0, 4.0])
    assert_close(R1Penalty(gamma=10.0)(linear_critic(w), torch.randn(4, 2), None), t(0.5 * 10 * 25), **TOL)
    real = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # grad 2x: squared norms 4 and 16
    assert_close(R1Penalty(gamma=2.0)(lambda x: (x**2).sum(1), real, None), t(mean([4.0, 16.0])), **TOL)


def test_penalties_keep_the_graph_for_the_discriminator_update():
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    GradientPenalty(weight=1.0)(linear_critic(w), torch.randn(4, 2), torch.randn(4, 2)).backward()
    # d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    assert_close(w.grad, 2 * 4 * torch.tensor([3.0, 4.0]) / 5, **TOL)
