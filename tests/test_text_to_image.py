"""GAN-INT-CLS: the interpolation term against hand values, one training step with every term, exact resume,
and captions required of the data."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from gansuite.errors import ConfigError
from gansuite.models.text_to_image import interpolate

from .conftest import assert_resume_is_bit_exact, build_tiny, trains

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
    assert_resume_is_bit_exact(tmp_path, *common)


def test_rank_correlation_matches_hand_values_with_ties():
    from gansuite.metrics.captions import rank_correlation

    assert_close(rank_correlation(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([10.0, 20.0, 30.0])), 1.0)
    assert_close(rank_correlation(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([3.0, 2.0, 1.0])), -1.0)
    # ranks (1.5, 1.5, 3) against (1, 2, 3): centred (-0.5, -0.5, 1) . (-1, 0, 1) = 1.5;
    # norms sqrt(1.5) and sqrt(2): rho = 1.5 / sqrt(3) = 0.8660
    assert_close(rank_correlation(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 2.0, 3.0])), 3 ** 0.5 / 2,
                 rtol=0, atol=1e-12)
    assert rank_correlation(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0])) == 0.0


def test_percentiles_are_within_the_named_class():
    from gansuite.metrics.captions import percentile

    reference = torch.tensor([[1.0], [2.0], [3.0], [4.0], [10.0], [20.0]])
    reference_digits = torch.tensor([0, 0, 0, 0, 1, 1])
    values = torch.tensor([[2.5], [2.5], [15.0]])
    out = percentile(values, torch.tensor([0, 1, 1]), reference, reference_digits)
    assert_close(out, torch.tensor([[0.5], [0.0], [0.5]]))  # 2 of 4 below; none of (10, 20); 1 of 2


def test_the_caption_metrics_are_logged_with_their_protocol(tmp_path):
    import json

    trains(tmp_path, *COMMON, "callbacks=default", "callbacks.caption_metrics.every_n_steps=1",
           "callbacks.progress_bar=null", steps=1)
    record = json.loads((tmp_path / "eval" / "captions_step_000001.json").read_text())
    keys = {"digit_acc", "digit_acc_heldout_phrasing"} | {
        f"rank_corr_{a}{s}" for a in ("thickness", "slant", "size") for s in ("", "_heldout_phrasing")}
    assert set(record["values"]) == keys
    assert all(-1.0 <= v <= 1.0 for v in record["values"].values())
    assert f"1,val/digit_acc,{record['values']['digit_acc']!r}" in (tmp_path / "history.csv").read_text()


def test_the_joint_loss_pairs_digits_or_captions(tmp_path):
    from gansuite.nets.text import joint_embedding_loss

    for joint_classes in ("digit", "caption", "both"):
        _, datamodule, module = build_tiny(tmp_path / joint_classes, *COMMON, f"model.module.joint_classes={joint_classes}")
        datamodule.setup()
        # the first training digit of classes 0 to 7 (400 a class, in class order), each with its first phrasing
        x, y, tokens, wrong = datamodule._train.__getitems__([k * 400 * 8 for k in range(8)])
        assert y.tolist() == list(range(8))
        module.discriminator.eval()
        terms = module.discriminator_loss((x, y, tokens, wrong), {"fake": torch.zeros_like(x)}, regularize=False)
        d = module.discriminator
        image, text = d.embed_images(x), d.embed_text(tokens)
        by_digit = joint_embedding_loss(image, text, y, 10)
        by_caption = joint_embedding_loss(image, text, torch.arange(8), 8)  # eight different captions
        expected = {"digit": by_digit, "caption": by_caption, "both": by_digit + by_caption}[joint_classes]
        assert_close(terms["joint"], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="model.module.joint_classes"):
        build_tiny(tmp_path / "bad", *COMMON, "model.module.joint_classes=word")


def test_identical_captions_are_one_class_in_the_caption_level_joint_loss():
    from gansuite.models.text_to_image import caption_classes

    tokens = torch.tensor([[5, 6, 0], [7, 6, 0], [5, 6, 0], [5, 6, 8], [7, 6, 0]])
    assert caption_classes(tokens).tolist() == [0, 1, 0, 3, 1]
