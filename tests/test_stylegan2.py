"""The StyleGAN2 family: one D and one G update, the lazy path-length penalty, the EMA by images, exact resume."""

import pytest
import torch
from torch.testing import assert_close

from gansuite.errors import ConfigError
from gansuite.models.stylegan2 import StyleGAN2
from tests.conftest import assert_resume_is_bit_exact, build_tiny, trains

SG2 = ("model=stylegan2", "data.resolution=32", "loss/regularizer=r1")


@pytest.mark.parametrize("model", ["stylegan2", "stylegan2_conditional"])
def test_one_step_of_each_stylegan2(tmp_path, model):
    result = trains(tmp_path, f"model={model}", "data.resolution=32", "loss/regularizer=r1",
                    "loss.regularizer.every=1", "model.module.pl_every=1", extra=("train/g_pl", "train/d_reg"))
    assert float(result["module"].pl_mean) > 0  # the running length moved off its start


@pytest.mark.parametrize("step, due", [(0, True), (1, False), (3, False), (4, True)])
def test_the_path_length_penalty_joins_every_pl_every_th_g_update(tmp_path, monkeypatch, step, due):
    _, _, module = build_tiny(tmp_path, *SG2, "model.module.pl_every=4", "model.module.pl_weight=3")
    monkeypatch.setattr(StyleGAN2, "step", property(lambda self: step))
    real = torch.rand(4, 1, 32, 32) * 2 - 1
    fake = module.generate((real, None))
    torch.manual_seed(0)
    terms = module.generator_loss((real, None), fake)
    assert ("pl" in terms) == due
    if due:
        torch.manual_seed(0)
        adversarial = module._g_adversarial(module.discriminator, real, fake)
        assert_close(terms["loss"], adversarial + 3 * 4 * terms["pl"], rtol=1e-5, atol=1e-6)


def test_ema_decay_halves_over_ema_kimg_capped_by_the_ramp(tmp_path, monkeypatch):
    _, _, module = build_tiny(tmp_path, *SG2, "model.module.ema_kimg=0.1", "model.module.ema_rampup=0.05")
    monkeypatch.setattr(StyleGAN2, "_batch_size", lambda self: 8)
    # 400 images seen: the ramp caps the half-life at 0.05 * 400 = 20 images, so decay = 0.5 ** (8 / 20).
    monkeypatch.setattr(StyleGAN2, "samples_consumed", property(lambda self: 400))
    assert_close(module.ema_decay_now(0), 0.5 ** (8 / 20))
    # 10,000 images: the ramp's 500 passes ema_kimg's 100 images, so decay = 0.5 ** (8 / 100).
    monkeypatch.setattr(StyleGAN2, "samples_consumed", property(lambda self: 10_000))
    assert_close(module.ema_decay_now(0), 0.5 ** (8 / 100))


@pytest.mark.parametrize("option, value", [("pl_every", "0"), ("ema_kimg", "0"), ("pl_weight", "-1")])
def test_bad_options_name_their_key(tmp_path, option, value):
    with pytest.raises(ConfigError, match=f"model.module.{option}"):
        build_tiny(tmp_path, *SG2, f"model.module.{option}={value}")


def test_resume_is_bit_exact_with_ada_and_both_lazy_regularizers(tmp_path):
    assert_resume_is_bit_exact(tmp_path, *SG2, "loss.regularizer.every=2", "model.module.pl_every=2",
                               "augment=ada", "augment.fn.interval=1", "augment.fn.speed_kimg=0.02",
                               "trainer.checkpoint_every=2", "callbacks=none")
