"""GAN-INT-CLS: the interpolation term against hand values, one training step with every term, exact resume,
and captions required of the data."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from gansuite.errors import ConfigError
from gansuite.models.text_to_image import interpolate
from gansuite.training.run import train

from .conftest import build_tiny, make_cfg, trains

COMMON = ("model=gan_int_cls", "data=captioned_digits")


def test_interpolation_mixes_each_caption_with_the_previous_one():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    assert_close(interpolate(text, 0.5), torch.tensor([[1.5, 1.0], [0.5, 0.5], [1.0, 1.5]]))
    assert_close(interpolate(text, 1.0), text)


def test_one_step_logs_every_term(tmp_path):
    result = trains(tmp_path, *COMMON, steps=1,
                    extra=("train/d_wrong_score", "train/d_joint", "train/g_matched", "train/g_interpolated"))
    module = result["module"]
    assert module.captions.any()  # held-out captions to draw for in grids
    x = module.sample(module.make_inputs(4, torch.Generator().manual_seed(0)), ema=False)
    assert x.shape == (4, 1, 28, 28)


def test_the_discriminator_loss_is_the_matching_aware_one(tmp_path):
    _, datamodule, module = build_tiny(tmp_path, *COMMON, "model.module.joint_weight=0")
    datamodule.setup()
    x, y, tokens, wrong = datamodule._train.__getitems__(list(range(4)))
    module.discriminator.eval()  # no word dropout or batch statistics: the same scores twice
    made = {"fake": torch.zeros_like(x)}
    terms = module.discriminator_loss((x, y, tokens, wrong), made, regularize=False)
    d = module.discriminator
    real, wrong_s = d(x, d.embed_text(tokens)), d(x, d.embed_text(wrong))
    fake = d(made["fake"], d.embed_text(tokens))
    softplus = torch.nn.functional.softplus  # the configured objective: nonsaturating BCE
    expected = softplus(-real).mean() + 0.5 * (softplus(wrong_s).mean() + softplus(fake).mean())
    assert_close(terms["loss"], expected, rtol=1e-5, atol=1e-6)


def test_a_model_for_captions_refuses_data_without_them(tmp_path):
    with pytest.raises(ConfigError, match="draws images for captions"):
        build_tiny(tmp_path, "model=gan_int_cls", "data=mnist_offline")


def test_resume_is_bit_exact(tmp_path):
    common = [*COMMON, "callbacks=none", "trainer.checkpoint_every=2"]
    straight = train(make_cfg(tmp_path / "straight", *common, "trainer.max_steps=4"))
    train(make_cfg(tmp_path / "first", *common, "trainer.max_steps=2"))
    resumed = train(make_cfg(tmp_path / "second", *common, "trainer.max_steps=4", f"resume={tmp_path / 'first'}"))
    a, b = straight["module"].state_dict(), resumed["module"].state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
