"""Class-conditional families: cGAN (MLP and convolutional), ACGAN and the DCGAN-sized projection cGAN."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from torch import nn

from gansuite.config.build import build
from gansuite.errors import ConfigError
from gansuite.losses import Objective, bce_d, nonsaturating_g
from gansuite.models import acgan
from gansuite.models.gan import ConditionalGAN
from gansuite.nets import acgan as nets_acgan
from gansuite.nets import cgan, projection
from gansuite.nets.resnet import CategoricalConditionalBatchNorm2d
from gansuite.training.run import train

from .conftest import assert_trained, make_cfg, trains

SHAPE = (1, 28, 28)
CONDITIONAL = ["cgan", "cgan_mlp", "acgan", "projection"]


def _generators():
    torch.manual_seed(0)
    return [cgan.MLPGenerator(shape=SHAPE, num_classes=10, latent_dim=8, z_width=16, y_width=16, joint_width=32),
            cgan.ConvGenerator(shape=SHAPE, num_classes=10, latent_dim=8, width=4)]


@pytest.mark.parametrize("net", _generators(), ids=["mlp", "conv"])
def test_the_generator_output_depends_on_the_label(net):
    net.eval()
    z = torch.randn(1, 8).expand(10, 8)
    out = net(z, torch.arange(10))
    assert out.shape == (10, *SHAPE)
    # Same z, different labels: every pair of outputs differs.
    distances = torch.cdist(out.flatten(1), out.flatten(1))
    assert (distances + torch.eye(10) > 1e-4).all()


def _discriminators():
    torch.manual_seed(0)
    return [cgan.MLPDiscriminator(shape=SHAPE, num_classes=10, x_width=16, y_width=8, joint_width=16, dropout=0.0),
            cgan.ConvDiscriminator(shape=SHAPE, num_classes=10, width=4, norm="none"),
            projection.Discriminator(shape=SHAPE, num_classes=10, width=4, hidden=16)]


@pytest.mark.parametrize("net", _discriminators(), ids=["mlp", "conv", "projection"])
def test_the_discriminator_output_depends_on_the_label(net):
    net.eval()
    x = torch.randn(16, *SHAPE)
    y = torch.arange(16) % 10
    shuffled = (y + 1) % 10
    out, out_shuffled = net(x, y), net(x, shuffled)
    assert out.shape == (16,)
    assert ((out - out_shuffled).abs() > 1e-6).all()


def test_the_projection_generator_starts_class_blind_and_its_labels_act_through_the_norms():
    torch.manual_seed(0)
    g = projection.Generator(shape=SHAPE, num_classes=10, latent_dim=8, width=4).eval()
    z = torch.randn(1, 8).expand(2, 8)
    y = torch.tensor([3, 7])
    out = g(z, y)
    assert out.shape == (2, *SHAPE)
    # Every class starts with gain 1 and bias 0: the label changes nothing yet.
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)
    norms = [m for m in g.modules() if isinstance(m, CategoricalConditionalBatchNorm2d)]
    assert len(norms) == 2  # 7 -> 14 -> 28 px: two hidden blocks, each with its conditional norm
    for m in norms:
        nn.init.normal_(m.gain.weight, 1.0, 0.3)
        nn.init.normal_(m.bias.weight, 0.0, 0.3)
    out = g(z, y)
    assert (out[0] - out[1]).abs().max() > 1e-3


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_the_projection_score_moves_by_the_embedding_difference_times_the_features(spectral_norm):
    torch.manual_seed(0)
    # eval(): a spectrally normalized weight is then the same on every access (no power iteration).
    d = projection.Discriminator(shape=SHAPE, num_classes=10, width=4, hidden=16, spectral_norm=spectral_norm).eval()
    x = torch.randn(3, *SHAPE)
    phi = d.features(x)
    assert phi.shape == (3, 16)
    e = d.embed.weight
    # D(x, y) = head(phi) + <e_y, phi>: changing only y moves the score by <e_y1 - e_y0, phi>.
    y0, y1 = torch.tensor([0, 1, 2]), torch.tensor([5, 1, 9])
    expected = ((e[y1] - e[y0]) * phi).sum(dim=1)
    torch.testing.assert_close(d(x, y1) - d(x, y0), expected, rtol=1e-4, atol=1e-5)
    if spectral_norm:
        # The normalized embedding's largest singular value is 1 (to the power iteration's accuracy).
        torch.testing.assert_close(torch.linalg.matrix_norm(e, ord=2), torch.tensor(1.0), rtol=0, atol=0.05)


def test_conditional_networks_refuse_data_without_classes():
    with pytest.raises(ConfigError, match="model.generator.*num_classes"):
        cgan.ConvGenerator(shape=SHAPE, num_classes=None)
    with pytest.raises(ConfigError, match="model.discriminator.*num_classes"):
        nets_acgan.Discriminator(shape=SHAPE, num_classes=1)


def test_make_inputs_cycles_through_the_classes_and_fakes_follow_the_batch_labels():
    module = ConditionalGAN(generator=cgan.ConvGenerator(shape=SHAPE, num_classes=10, latent_dim=8, width=4),
                            discriminator=nn.Identity(), g_optimizer=None, d_optimizer=None,
                            objective=Objective(bce_d, nonsaturating_g), latent_dim=8, num_classes=10)
    z, y = module.make_inputs(25, torch.Generator().manual_seed(0))
    assert z.shape == (25, 8)
    assert y.tolist() == [i % 10 for i in range(25)]
    labels = torch.tensor([3, 3, 7, 1])
    fake, fake_labels = module.generate((torch.zeros(4, *SHAPE), labels))
    assert fake.shape == (4, *SHAPE)
    assert fake_labels is labels


class _FixedHeads(nn.Module):
    """A stand-in ACGAN discriminator: score 0 and class logits 0 for every image."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        zeros = x.flatten(1)[:, :1] * 0 + self.anchor
        return zeros[:, 0], zeros.expand(-1, self.num_classes)


@pytest.mark.parametrize(("class_weight", "fake_class_loss"), [(1.0, True), (0.5, True), (2.0, False)])
def test_acgan_losses_add_the_class_cross_entropy(class_weight, fake_class_loss):
    k = 10
    module = acgan.ACGAN(generator=nn.Identity(), discriminator=_FixedHeads(k), g_optimizer=None, d_optimizer=None,
                         objective=Objective(bce_d, nonsaturating_g), latent_dim=8, num_classes=k,
                         class_weight=class_weight, fake_class_loss=fake_class_loss, ema_decay=None)
    batch = (torch.zeros(4, *SHAPE), torch.tensor([0, 1, 2, 3]))
    fake = (torch.zeros(4, *SHAPE), torch.tensor([4, 5, 6, 7]))
    d_terms = module.discriminator_loss(batch, fake, regularize=False)
    g_terms = module.generator_loss(batch, fake)
    # Zero logits: each cross-entropy is log K; the BCE pair at score 0 is 2 log 2, the G term log 2.
    # D's L_C has two cross-entropies (real and fake), or one (real) without the fake term.
    tol = dict(rtol=0.0, atol=1e-6)
    terms = 2 if fake_class_loss else 1
    torch.testing.assert_close(d_terms["class"], torch.tensor(terms * math.log(k)), **tol)
    torch.testing.assert_close(d_terms["loss"], torch.tensor(2 * math.log(2) + class_weight * terms * math.log(k)),
                               **tol)
    torch.testing.assert_close(g_terms["loss"], torch.tensor(math.log(2) + class_weight * math.log(k)), **tol)


def test_acgan_discriminator_has_a_score_and_a_class_head():
    net = nets_acgan.Discriminator(shape=SHAPE, num_classes=10, width=4, dropout=0.5)
    score, logits = net(torch.randn(3, *SHAPE))
    assert score.shape == (3,) and logits.shape == (3, 10)
    assert any(isinstance(m, nn.Dropout) for m in net.modules())


@pytest.mark.parametrize("model", CONDITIONAL)
def test_conditional_models_train_and_draw_one_class_per_column(tmp_path, model):
    result = train(make_cfg(tmp_path, f"model={model}", "trainer.max_steps=2",
                            "callbacks.sample_grid.num_samples=20"))
    assert_trained(result, 2, *(["train/d_class", "train/g_class"] if model == "acgan" else []))
    with Image.open(tmp_path / "samples" / "step_000002.png") as grid:
        # save_image pads 2 px around 28 px cells: 10 columns (classes) by 2 rows.
        assert grid.size == (10 * 30 + 2, 2 * 30 + 2)


def test_the_gradient_penalty_of_a_conditional_critic_sees_the_labels(tmp_path):
    trains(tmp_path, "model=cgan", "loss=wgan_gp", "model.discriminator.norm=layer", steps=1, extra=("train/d_reg",))


def test_a_conditional_model_refuses_unlabelled_data(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        Image.fromarray((torch.rand(32, 32, 3) * 255).byte().numpy()).save(folder / f"{i}.png")
    with pytest.raises(ConfigError, match="class-conditional but the data has no labels"):
        build(make_cfg(tmp_path, "model=cgan", "data=image_folder", f"data.root={folder}", "data.resolution=32"))


def test_the_mlp_cgan_conditions_on_the_mode_of_2d_data(tmp_path):
    # A 2D mixture labels each point with its mode, so the MLP cGAN draws points of a requested mode.
    result = train(make_cfg(tmp_path, "model=cgan_mlp", "data=ring8", "trainer.max_steps=2", "callbacks=none"))
    module = result["module"]
    z, y = module.make_inputs(16, torch.Generator().manual_seed(0))
    assert module.num_classes == 8 and module.sample((z, y)).shape == (16, 2)


@pytest.mark.parametrize("sample_dropout", [True, False])
def test_the_mlp_cgan_keeps_its_dropout_noise_when_sampling_only_if_asked(sample_dropout):
    g = cgan.MLPGenerator(shape=(1, 4, 4), num_classes=3, latent_dim=5, z_width=6, y_width=6, joint_width=32,
                          sample_dropout=sample_dropout).eval()
    z, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        a, b = g(z, y), g(z, y)
    assert torch.equal(a, b) is not sample_dropout  # on: two calls draw different masks; off: deterministic
