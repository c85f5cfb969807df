"""augment=diffaugment|ada in training: what D sees and when, ADA's p by hand, exact resume, and refusals."""

import pytest
import torch
from torch.testing import assert_close

from gansuite.augment import diffaugment
from gansuite.augment.pipeline import AdaptiveAugment, DiffAugment
from gansuite.config.build import build
from gansuite.errors import ConfigError
from tests.conftest import assert_resume_is_bit_exact, build_tiny, make_cfg, trains

IDENTITY = lambda t: t  # noqa: E731  (one process: summing over ranks changes nothing)


def test_d_sees_augmented_images_inside_a_training_step_only(tmp_path):
    _, _, module = build_tiny(tmp_path, "augment=diffaugment")
    seen = []
    module.discriminator.register_forward_pre_hook(lambda m, args: seen.append(args[0]))  # after augment's hook
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    module.discriminator(x)
    assert seen[-1] is x  # evaluation, sampling, the dry run: images as they are
    module._augmenting = True
    torch.manual_seed(0)
    module.discriminator(x)
    torch.manual_seed(0)
    expected = diffaugment.apply(x, diffaugment.draw(diffaugment.DEFAULT_POLICY, x))
    assert_close(seen[-1], expected, rtol=0, atol=0)
    assert not torch.equal(seen[-1], x)


@pytest.mark.parametrize("same", [True, False])
def test_same_for_real_and_fake_shares_parameters_within_an_update(same):
    augment = DiffAugment(same_for_real_and_fake=same)
    torch.manual_seed(0)
    x = torch.rand(6, 3, 8, 8)
    first, second = augment(x), augment(x)  # "real" and "fake" of one update (same input, to compare)
    assert torch.equal(first, second) == same
    augment.new_update()
    assert not torch.equal(augment(x), first)  # the next update draws again


def test_gradient_reaches_g_through_the_augmentation(tmp_path):
    _, _, module = build_tiny(tmp_path, "augment=diffaugment", "augment.fn.policy=translation")
    module._augmenting = True
    z = torch.randn(4, module.latent_dim)
    module.discriminator(module.generator(z)).sum().backward()
    grads = [p.grad for p in module.generator.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_ada_p_moves_by_the_papers_step_every_interval():
    augment = AdaptiveAugment(interval=2, speed_kimg=0.1, target=0.6)
    # Step = images * interval / (speed_kimg * 1000) = 8 * 2 / 100 = 0.16.
    augment.observe_real(torch.tensor([1.0, 2.0, -1.0, 3.0]))  # signs: mean 0.5 over the 4 + 4 below
    assert_close(augment.after_d_update(1, 8, IDENTITY)["p"], torch.tensor(0.0))  # not an adjustment update
    augment.observe_real(torch.tensor([1.0, 1.0, 1.0, 0.5]))
    logged = augment.after_d_update(2, 8, IDENTITY)
    assert_close(logged["rt"], torch.tensor(0.75))  # (2 + 4) / 8 > 0.6: D is too sure of the reals
    assert_close(augment.p, torch.tensor(0.16))
    augment.observe_real(torch.tensor([-1.0, 1.0]))  # r_t = 0 < 0.6: p comes down, no lower than 0
    augment.after_d_update(3, 8, IDENTITY)
    augment.after_d_update(4, 8, IDENTITY)
    assert_close(augment.p, torch.tensor(0.0))
    assert set(augment.state_dict()) == {"p", "sign_sum", "sign_count", "last_rt"}


def test_ada_without_adaptation_keeps_p():
    augment = AdaptiveAugment(initial_p=0.3, adaptive=False, interval=1)
    augment.observe_real(torch.ones(4))
    augment.after_d_update(1, 4, IDENTITY)
    assert_close(augment.p, torch.tensor(0.3))


def test_ada_trains_and_logs_p_and_rt(tmp_path):
    result = trains(tmp_path, "augment=ada", "augment.fn.interval=1", "augment.fn.speed_kimg=0.001", steps=3,
                    extra=("train/augment_p", "train/augment_rt"))
    p = result["module"].augment.p
    # Each update moves p by +-8 / 1 = 8 and never below 0: p is a multiple of 8 in [0, 24].
    assert_close(torch.remainder(p, 8.0), torch.tensor(0.0))
    assert 0 <= float(p) <= 24


def test_resume_with_ada_is_bit_exact_including_p(tmp_path):
    # speed_kimg tiny and interval 1: p moves on every update, so a lost p or statistic shows in the weights.
    assert_resume_is_bit_exact(tmp_path, "augment=ada", "augment.fn.interval=1", "augment.fn.speed_kimg=0.02",
                               "augment.fn.initial_p=0.5", "trainer.checkpoint_every=2", "callbacks=none")


def test_resume_with_diffaugment_is_bit_exact(tmp_path):
    assert_resume_is_bit_exact(tmp_path, "augment=diffaugment", "trainer.checkpoint_every=2", "callbacks=none")


@pytest.mark.parametrize("model, data", [
    ("model=lapgan", "data=mnist_offline"),
    ("model=pix2pix", "data=edges2digits"),
    ("model=cyclegan", "data=digit_styles"),
    ("model=gan", "data=ring8"),
])
def test_families_whose_d_does_not_judge_images_of_the_data_are_refused(tmp_path, model, data):
    cfg = make_cfg(tmp_path, model, data, "augment=diffaugment")
    with pytest.raises(ConfigError, match="augment=diffaugment: model=.*use augment=none"):
        build(cfg)


@pytest.mark.parametrize("option, value", [("pipeline", "bgx"), ("target", "1.5"), ("interval", "0")])
def test_bad_ada_options_name_their_key(tmp_path, option, value):
    with pytest.raises(ConfigError, match=f"augment.fn.{option}"):
        build(make_cfg(tmp_path, "augment=ada", f"augment.fn.{option}={value}"))


@pytest.mark.parametrize("overrides", [
    ("model=acgan", "augment=ada", "loss=ragan"),
    ("model=infogan", "augment=diffaugment", "loss=ralsgan"),
    ("model=gan_int_cls", "data=captioned_digits", "augment=diffaugment", "loss=rpgan"),
    ("model=projection", "augment=ada", "loss=hinge", "loss/regularizer=lecam"),
])
def test_augmentations_and_relativistic_losses_train_in_other_families(tmp_path, overrides):
    trains(tmp_path, *overrides)
