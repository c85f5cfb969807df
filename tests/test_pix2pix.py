"""pix2pix: the U-Net's shapes, skips and test-time dropout, its config, and one step of D and G."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torch.testing import assert_close
from torch.utils.data import DataLoader, TensorDataset

from gansuite.errors import ConfigError
from gansuite.losses import Objective, bce_d, nonsaturating_g
from gansuite.models.translation import PairedTranslationGAN
from gansuite.nets.patchgan import PatchDiscriminator
from gansuite.nets.unet import NoiseDropout, UNetGenerator

from .conftest import assert_finite, make_cfg

SOURCE, TARGET = (1, 32, 32), (3, 32, 32)  # channel counts differ, as for label maps -> photos


def _pairs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SOURCE, generator=rng) * 2 - 1, torch.rand(n, *TARGET, generator=rng) * 2 - 1


def _module(dropout: float = 0.0) -> PairedTranslationGAN:
    torch.manual_seed(0)
    return PairedTranslationGAN(
        generator=UNetGenerator(shape=TARGET, source_shape=SOURCE, width=4, dropout=dropout),
        discriminator=PatchDiscriminator(shape=TARGET, source_shape=SOURCE, conditional=True, width=4),
        g_optimizer=partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999)),
        d_optimizer=partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999)),
        objective=Objective(bce_d, nonsaturating_g),
        examples=_pairs(4, seed=1),
        content_loss=nn.L1Loss(),
        content_weight=100.0,
        conditional_d=True,
        ema_decay=None,
    )


@pytest.mark.parametrize(("side", "width", "depth"), [(32, 4, 5), (256, 2, 8)])
def test_the_unet_maps_sources_to_targets_of_the_same_size_through_a_1x1_bottleneck(side, width, depth):
    torch.manual_seed(0)
    g = UNetGenerator(shape=(3, side, side), source_shape=(1, side, side), width=width)
    assert g.depth == depth  # depth=None: log2 of the side
    bottleneck = []
    g.down[-1].register_forward_hook(lambda module, args, out: bottleneck.append(out.shape))
    out = g(torch.randn(2, 1, side, side))
    assert out.shape == (2, 3, side, side)
    assert out.abs().max() <= 1  # tanh
    # Channels double per layer up to 8x width; the innermost map is 1x1.
    assert bottleneck == [torch.Size([2, width * 8, 1, 1])]


def test_a_side_that_is_not_a_power_of_two_gets_as_many_layers_as_it_halves():
    g = UNetGenerator(shape=(1, 28, 28), source_shape=(1, 28, 28), width=2)
    assert g.depth == 2  # 28 -> 14 -> 7
    assert g(torch.randn(2, 1, 28, 28)).shape == (2, 1, 28, 28)


def test_the_skips_carry_the_source_past_a_cut_bottleneck():
    torch.manual_seed(0)
    g = UNetGenerator(shape=TARGET, source_shape=SOURCE, width=4, dropout=0.0).eval()
    # The outermost decoder block sees its own map and the first encoder's, stacked on channels.
    (outer,) = [m for m in g.up[-1] if isinstance(m, nn.ConvTranspose2d)]
    assert outer.in_channels == 2 * 4
    # With the innermost layer's weights zeroed the bottleneck is the same for every input, so
    # without skips G's output could not depend on its input.
    (inner,) = [m for m in g.down[-1] if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        inner.weight.zero_()
        inner.bias.zero_()
    a, _ = _pairs(2)
    bottleneck = []
    g.down[-1].register_forward_hook(lambda module, args, out: bottleneck.append(out))
    out = g(a)
    assert_close(bottleneck[0][0], bottleneck[0][1], rtol=0, atol=0)
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_dropout_stays_on_in_eval_mode_and_zero_turns_it_off():
    torch.manual_seed(0)
    a, _ = _pairs(2)
    noisy = UNetGenerator(shape=TARGET, source_shape=SOURCE, width=4, dropout=0.5).eval()
    # The paper's decoder: CD512-CD512-CD512-C512-...: the three innermost blocks drop.
    assert [any(isinstance(m, NoiseDropout) for m in block) for block in noisy.up] == [True] * 3 + [False] * 2
    dropped = []
    noisy.up[0][-1].register_forward_hook(lambda module, args, out: dropped.append(out))
    with torch.no_grad():
        first, second = noisy(a), noisy(a)
    # In eval mode about half of the innermost block's units are zeroed, a different half each call.
    for out in dropped:
        assert 0.3 < (out == 0).float().mean() < 0.7
    assert not torch.equal(dropped[0] == 0, dropped[1] == 0)
    # Weights N(0, 0.02) make the effect on the output small at first, but it is there.
    assert not torch.equal(first, second)
    plain = UNetGenerator(shape=TARGET, source_shape=SOURCE, width=4, dropout=0.0).eval()
    assert not any(isinstance(m, (NoiseDropout, nn.Dropout)) for m in plain.modules())
    with torch.no_grad():
        assert_close(plain(a), plain(a), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("shape", "source_shape", "options", "message"),
    [
        ((3, 28, 28), (3, 28, 28), {"depth": 5}, r"model\.generator\.depth=5 .* multiple of 32 .* 28 px"),
        ((3, 32, 64), (3, 32, 64), {}, r"model\.generator: .*square"),
        ((3, 32, 32), (3, 64, 64), {}, r"model\.generator: pix2pix needs aligned pairs of the same size"),
        ((3, 32, 32), None, {}, r"model\.generator: .*paired data"),
        ((3, 32, 32), (3, 32, 32), {"depth": 0}, r"model\.generator\.depth must be a positive integer"),
        ((3, 32, 32), (3, 32, 32), {"dropout": 1.0}, r"model\.generator\.dropout must be in \[0, 1\)"),
        ((3, 32, 32), (3, 32, 32), {"norm": "layer"}, r"model\.generator\.norm: 'layer' is unknown"),
    ],
    ids=["depth", "non-square", "unaligned", "unpaired", "zero-depth", "dropout", "norm"],
)
def test_bad_sizes_and_options_name_their_key(shape, source_shape, options, message):
    with pytest.raises(ConfigError, match=message):
        UNetGenerator(shape=shape, source_shape=source_shape, width=2, **options)


def test_the_generator_loss_is_100_l1_plus_the_nonsaturating_gan_loss():
    module = _module(dropout=0.0)
    module.generator.eval()
    module.discriminator.eval()  # running statistics: each forward gives the same answer
    a, b = _pairs(4)
    with torch.no_grad():
        fake = module.generate((a, b))
        terms = module.generator_loss((a, b), fake)
        g_a = module.generator(a)
        expected = 100 * F.l1_loss(g_a, b) + nonsaturating_g(module.discriminator(a, g_a))
    assert_close(terms["content"], F.l1_loss(g_a, b), rtol=1e-6, atol=1e-7)
    assert_close(terms["loss"], expected, rtol=1e-6, atol=1e-6)


def test_the_discriminator_judges_the_target_given_its_source():
    module = _module()
    module.discriminator.eval()
    a1, b = _pairs(4, seed=0)
    a2, _ = _pairs(4, seed=2)
    with torch.no_grad():
        s1, s2 = module.score(b, (a1, b)), module.score(b, (a2, b))
    assert s1.shape == (4, 1, 2, 2)  # 32 px: a 2x2 map of 70x70-patch scores
    assert ((s1 - s2).abs() > 1e-6).all()


def test_one_step_updates_d_and_g_with_finite_losses():
    module = _module(dropout=0.5)
    d_before = [p.detach().clone() for p in module.discriminator.parameters()]
    g_before = [p.detach().clone() for p in module.generator.parameters()]
    trainer = L.Trainer(max_steps=module.optimizer_steps_per_step, max_epochs=-1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, DataLoader(TensorDataset(*_pairs(8)), batch_size=4))
    assert module.step == 1 and trainer.global_step == 2  # one D and one G update
    metrics = trainer.callback_metrics
    assert_finite(metrics, "train/d_loss", "train/g_loss", "train/g_content", "train/g_adversarial")
    assert_close(metrics["train/g_loss"], 100 * metrics["train/g_content"] + metrics["train/g_adversarial"],
                 rtol=1e-5, atol=1e-5)
    assert any(not torch.equal(p, q) for p, q in zip(module.discriminator.parameters(), d_before, strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(module.generator.parameters(), g_before, strict=True))


def test_the_config_builds_the_papers_pix2pix(tmp_path):
    cfg = make_cfg(tmp_path, "model=pix2pix", "model.generator.width=4", "model.discriminator.width=4", tiny=False)
    assert cfg.model.data_kind == "paired" and not cfg.model.conditional
    g = instantiate(cfg.model.generator, shape=TARGET, source_shape=SOURCE)
    d = instantiate(cfg.model.discriminator, shape=TARGET, source_shape=SOURCE)
    module = instantiate(cfg.model.module, generator=g, discriminator=d,
                         g_optimizer=instantiate(cfg.model.g_optimizer),
                         d_optimizer=instantiate(cfg.model.d_optimizer),
                         objective=instantiate(cfg.loss.objective), examples=_pairs(2))
    assert isinstance(module, PairedTranslationGAN) and module.conditional_d and module.generator_ema is None
    assert isinstance(module.content_loss, nn.L1Loss) and module.content_weight == 100
    assert module.objective.d_loss.func is bce_d and module.objective.g_loss.func is nonsaturating_g
    assert g.depth == 5 and sum(isinstance(m, NoiseDropout) for m in g.modules()) == 3
    opt_g, opt_d = module.configure_optimizers()[0]
    for opt in (opt_g, opt_d):
        assert isinstance(opt, torch.optim.Adam)
        assert opt.defaults["lr"] == 2e-4 and tuple(opt.defaults["betas"]) == (0.5, 0.999)
    a, b = module.make_inputs(2, torch.Generator().manual_seed(0))
    assert module.sample((a, b), ema=False).shape == (2, *TARGET)
