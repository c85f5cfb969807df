"""ResNet G and D (WGAN-GP, SNGAN, projection cGAN): tiny networks on the CPU, and short runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.testing import assert_close

from gansuite.errors import ConfigError
from gansuite.nets.resnet import CategoricalConditionalBatchNorm2d, Discriminator, Generator
from gansuite.training.run import train

from .conftest import assert_trained, make_cfg

W, B, Z = 8, 4, 16  # width, batch, latent size: tiny nets, a few ms per call


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("num_classes", [None, 10])
def test_shapes_at_32_px(channels, num_classes):
    torch.manual_seed(0)
    shape = (channels, 32, 32)
    g = Generator(shape=shape, latent_dim=Z, width=W, num_classes=num_classes)
    d = Discriminator(shape=shape, width=W, num_classes=num_classes)
    y = None if num_classes is None else torch.arange(B) % num_classes
    z = torch.randn(B, Z)
    x = g(z) if y is None else g(z, y)
    assert x.shape == (B, *shape)
    assert x.abs().max() <= 1.0  # tanh output, the data's range
    scores = d(x) if y is None else d(x, y)
    assert scores.shape == (B,)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 64, 64), (2,)])
def test_other_shapes_are_refused_naming_the_key(shape):
    with pytest.raises(ConfigError, match=r"^model\.generator: .*data\.resolution=32"):
        Generator(shape=shape, width=W)
    with pytest.raises(ConfigError, match=r"^model\.discriminator: .*data\.resolution=32"):
        Discriminator(shape=shape, width=W)


def test_bad_options_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.discriminator\.pooling"):
        Discriminator(shape=(3, 32, 32), width=W, pooling="max")
    with pytest.raises(ConfigError, match=r"model\.generator: num_classes"):
        Generator(shape=(3, 32, 32), width=W, num_classes=1)
    with pytest.raises(ConfigError, match=r"model\.generator\.width"):
        Generator(shape=(3, 32, 32), width=0)


def test_a_conditional_network_needs_labels_and_an_unconditional_one_refuses_them():
    g = Generator(shape=(3, 32, 32), latent_dim=Z, width=W, num_classes=10)
    d = Discriminator(shape=(3, 32, 32), width=W)
    with pytest.raises(TypeError, match=r"G\(z, y\)"):
        g(torch.randn(B, Z))
    with pytest.raises(TypeError, match=r"D\(x\)"):
        d(torch.randn(B, 3, 32, 32), torch.zeros(B, dtype=torch.long))


def test_conditional_batch_norm_is_batch_norm_times_the_class_gain_plus_the_class_bias():
    torch.manual_seed(0)
    cbn = CategoricalConditionalBatchNorm2d(5, 3)
    nn.init.normal_(cbn.gain.weight)
    nn.init.normal_(cbn.bias.weight)
    x, y = torch.randn(6, 5, 4, 4), torch.tensor([0, 1, 2, 2, 1, 0])
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    normed = (x - mean) / torch.sqrt(var + cbn.norm.eps)
    expected = normed * cbn.gain.weight[y][:, :, None, None] + cbn.bias.weight[y][:, :, None, None]
    assert_close(cbn(x, y), expected, rtol=1e-5, atol=1e-5)


def test_the_conditional_generator_starts_class_blind_and_its_labels_act_through_the_norms():
    torch.manual_seed(0)
    g = Generator(shape=(3, 32, 32), latent_dim=Z, width=W, num_classes=10).eval()
    z = torch.randn(1, Z).expand(2, Z)
    y = torch.tensor([3, 7])
    # Gains 1 and biases 0 for every class (the code's initialisation): the label changes nothing yet.
    out = g(z, y)
    assert_close(out[0], out[1], rtol=0, atol=0)
    for m in g.modules():
        if isinstance(m, CategoricalConditionalBatchNorm2d):
            nn.init.normal_(m.gain.weight, 1.0, 0.3)
            nn.init.normal_(m.bias.weight, 0.0, 0.3)
    out = g(z, y)
    assert (out[0] - out[1]).abs().max() > 1e-3


def _projection_d(spectral_norm: bool = True) -> Discriminator:
    torch.manual_seed(0)
    return Discriminator(shape=(3, 32, 32), width=W, num_classes=10, spectral_norm=spectral_norm).eval()


def test_the_projection_discriminator_depends_on_the_label():
    d = _projection_d()
    x = torch.randn(16, 3, 32, 32)
    y = torch.arange(16) % 10
    out, shuffled = d(x, y), d(x, (y + 1) % 10)
    assert ((out - shuffled).abs() > 1e-6).all()


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_the_projection_term_is_the_inner_product_of_the_class_embedding_and_the_features(spectral_norm):
    # eval(): a spectrally normalized weight is then the same on every access (no power iteration).
    d = _projection_d(spectral_norm)
    x, y = torch.randn(B, 3, 32, 32), torch.tensor([0, 9, 4, 4])
    phi = d.features(x)
    assert phi.shape == (B, W)
    unconditional = phi @ d.head.weight[0]  # SNGAN's head has no bias
    by_hand = (d.embed.weight[y] * phi).sum(dim=1)
    assert_close(d(x, y) - unconditional, by_hand, rtol=1e-4, atol=1e-4)
    assert by_hand.abs().min() > 1e-4  # the term is really there, not a vanishing one


def test_sum_pooling_is_mean_pooling_times_the_8x8_map():
    torch.manual_seed(0)
    mean_d = Discriminator(shape=(3, 32, 32), width=W, spectral_norm=False, pooling="mean", head_bias=True)
    sum_d = Discriminator(shape=(3, 32, 32), width=W, spectral_norm=False, pooling="sum", head_bias=True)
    sum_d.load_state_dict(mean_d.state_dict())
    x = torch.randn(B, 3, 32, 32)
    assert_close(sum_d.features(x), 64 * mean_d.features(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_spectral_norm_is_on_every_layer_of_d_exactly_when_asked(spectral_norm):
    d = Discriminator(shape=(3, 32, 32), width=W, num_classes=10, spectral_norm=spectral_norm).eval()
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(layers) == 3 + 3 + 2 + 2 + 1 + 1  # optimized and down blocks, 2 plain blocks, head, embedding
    assert all(parametrize.is_parametrized(m, "weight") == spectral_norm for m in layers)
    if spectral_norm:
        for m in layers:
            sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
            assert_close(sigma, torch.tensor(1.0), rtol=0, atol=0.05)


MODELS = {
    "resnet_wgan_gp": ["loss=wgan_gp"],
    "sngan": ["loss=hinge", "loss.n_critic=2"],
    "sngan_projection": ["loss=hinge", "loss.n_critic=2"],
}


@pytest.mark.parametrize("model", MODELS)
def test_a_training_step_on_offline_digits_gives_finite_losses(tmp_path, model):
    cfg = make_cfg(tmp_path, f"model={model}", *MODELS[model], "data.resolution=32", "data.batch_size=4",
                   f"model.generator.width={W}", f"model.discriminator.width={W}", "trainer.max_steps=1",
                   "callbacks=none")
    result = train(cfg)
    assert_trained(result, 1, *(["train/d_reg"] if model == "resnet_wgan_gp" else []))
    if model == "sngan_projection":
        assert result["module"].num_classes == 10
        assert result["module"].discriminator.embed.num_embeddings == 10


def test_the_paper_presets_decay_the_learning_rate_linearly_to_zero_at_max_steps(tmp_path):
    cfg = make_cfg(tmp_path, "experiment=sngan_cifar10", "data=mnist_offline", "data.resolution=32",
                   "data.batch_size=4", f"model.generator.width={W}", f"model.discriminator.width={W}",
                   "loss.n_critic=1", "trainer.max_steps=2", "callbacks=none", "eval=none")
    assert cfg.model.g_scheduler.total_iters == 2
    result = train(cfg)
    g_opt, d_opt = result["module"].optimizers()
    assert g_opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert d_opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert result["module"].generator_ema is None  # the papers score the raw generator
