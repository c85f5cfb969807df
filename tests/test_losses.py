"""Every loss and regularizer against a value computed by hand."""

import math

import pytest
import torch
from torch.testing import assert_close

from gansuite import losses
from gansuite.errors import ConfigError
from gansuite.regularizers import GradientPenalty, LeCam, R1Penalty, R1R2Penalty, R2Penalty

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


# ------------------------------------------------------------------ relativistic losses
# REAL = (1, -2) has mean -0.5; FAKE = (0.5, 3) has mean 1.75.
def log_sigmoid(x: float) -> float:
    return math.log(sigmoid(x))


def test_ragan_against_the_papers_formulas():
    # D: -mean(log s(r - 1.75)) - mean(log(1 - s(f + 0.5)))
    d = mean(-log_sigmoid(r - 1.75) for r in (1.0, -2.0)) + mean(-math.log(1 - sigmoid(f + 0.5)) for f in (0.5, 3.0))
    assert_close(losses.ragan_d(REAL, FAKE), t(d), **TOL)
    # G: -mean(log s(f + 0.5)) - mean(log(1 - s(r - 1.75)))
    g = mean(-log_sigmoid(f + 0.5) for f in (0.5, 3.0)) + mean(-math.log(1 - sigmoid(r - 1.75)) for r in (1.0, -2.0))
    assert_close(losses.ragan_g(FAKE, REAL), t(g), **TOL)


def test_ralsgan_against_the_papers_formulas():
    # D: mean((r - 1.75 - 1)^2) + mean((f + 0.5 + 1)^2) = mean(3.0625, 22.5625) + mean(4, 20.25)
    assert_close(losses.ralsgan_d(REAL, FAKE), t(12.8125 + 12.125), **TOL)
    # G: mean((f + 0.5 - 1)^2) + mean((r - 1.75 + 1)^2) = mean(0, 6.25) + mean(0.0625, 7.5625)
    assert_close(losses.ralsgan_g(FAKE, REAL), t(3.125 + 3.8125), **TOL)


def test_rpgan_pairs_each_real_with_its_fake():
    # D: mean(softplus(-(r - f))) over the pairs (1, 0.5) and (-2, 3)
    d = mean(math.log1p(math.exp(-(r - f))) for r, f in ((1.0, 0.5), (-2.0, 3.0)))
    assert_close(losses.rpgan_d(REAL, FAKE), t(d), **TOL)
    g = mean(math.log1p(math.exp(-(f - r))) for r, f in ((1.0, 0.5), (-2.0, 3.0)))
    assert_close(losses.rpgan_g(FAKE, REAL), t(g), **TOL)
    with pytest.raises(ValueError, match="as many fakes as reals"):
        losses.rpgan_d(REAL, FAKE[:1])


def test_relativistic_generator_gradient_reaches_the_fakes_through_the_real_term():
    # RaLSGAN's G loss: d/df_i of mean((r_j - mean(f) + 1)^2) alone is -2 * mean_j(r_j - mean(f) + 1) / 2.
    fake = FAKE.clone().requires_grad_(True)
    (losses.ralsgan_g(fake, REAL) - 0.5 * ((fake - (-0.5) - 1) ** 2).sum()).backward()
    assert_close(fake.grad, torch.full((2,), -(-0.5 - 1.75 + 1)), **TOL)


def test_objective_hands_the_real_scores_only_to_a_loss_that_reads_them():
    plain = losses.Objective(d_loss=losses.hinge_d, g_loss=losses.hinge_g)
    assert_close(plain.generator(FAKE, REAL), losses.hinge_g(FAKE), **TOL)
    relativistic = losses.Objective(d_loss=losses.ralsgan_d, g_loss=losses.ralsgan_g, g_uses_real=True)
    assert_close(relativistic.generator(FAKE, REAL), t(3.125 + 3.8125), **TOL)


# ------------------------------------------------------------------ R2, R1 + R2, LeCam
def test_r2_is_r1_on_the_fakes_and_r1r2_their_sum():
    real = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # D = sum(x^2): squared gradient norms 4 and 16
    fake = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # 36 and 1
    square = lambda x: (x**2).sum(1)  # noqa: E731
    assert_close(R2Penalty(gamma=2.0)(square, real, fake), t(mean([36.0, 1.0])), **TOL)
    assert_close(R1R2Penalty(gamma=2.0)(square, real, fake), t(mean([4.0, 16.0]) + mean([36.0, 1.0])), **TOL)


def test_lecam_penalty_and_its_running_averages_by_hand():
    lecam = LeCam(weight=0.5, decay=0.9, start=1)
    real, fake = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.5])
    # Averages start at 0: 0.5 * (mean(relu(1 - 0)^2, relu(2 - 0)^2) + mean(relu(0 + 1)^2, relu(0 - 0.5)^2)).
    assert_close(lecam.from_scores(real, fake), t(0.5 * (2.5 + 0.5)), **TOL)
    # Before `start` updates the averages take the latest means (1.5, -0.25) ...
    assert_close(lecam.real_average, t(1.5), **TOL)
    assert_close(lecam.fake_average, t(-0.25), **TOL)
    # ... then decay 0.9: the penalty uses the averages from before this update.
    real2, fake2 = torch.tensor([0.0, 3.0]), torch.tensor([2.0, 0.0])
    # relu(real2 + 0.25)^2 = (0.0625, 10.5625); relu(1.5 - fake2)^2 = (0, 2.25)
    assert_close(lecam.from_scores(real2, fake2), t(0.5 * (5.3125 + 1.125)), **TOL)
    assert_close(lecam.real_average, t(0.9 * 1.5 + 0.1 * 1.5), **TOL)
    assert_close(lecam.fake_average, t(0.9 * -0.25 + 0.1 * 1.0), **TOL)
    assert int(lecam.updates) == 2
    # Its averages are buffers, so checkpoints carry them.
    assert set(lecam.state_dict()) == {"real_average", "fake_average", "updates"}


def test_lecam_as_a_regularizer_scores_the_batch_itself():
    lecam = LeCam(weight=1.0, decay=0.99)
    x = torch.tensor([[1.0], [2.0]])
    assert_close(lecam(lambda v: v.squeeze(1), x, -x), t(mean([1.0, 4.0]) + mean([1.0, 4.0])), **TOL)
