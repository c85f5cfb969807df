"""BigGAN's G and D and its orthogonal penalty: tiny networks on the CPU, hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.testing import assert_close

from gansuite.errors import ConfigError
from gansuite.nets.biggan import (
    ConditionalBatchNorm2d,
    Discriminator,
    Generator,
    SelfAttention,
    orthogonal_penalty,
)

W, B = 4, 2  # width, batch: tiny nets, milliseconds per call
SLOTS = {32: 4, 64: 5, 128: 6}  # z chunks with hierarchical z: one for the input linear, one per block


def _labels(num_classes):
    return None if num_classes is None else torch.arange(B) % num_classes


@pytest.mark.parametrize("resolution", [32, 64, 128])
@pytest.mark.parametrize("num_classes", [None, 10])
def test_shapes(resolution, num_classes):
    torch.manual_seed(0)
    shape = (3, resolution, resolution)
    latent = 2 * SLOTS[resolution]
    g = Generator(shape=shape, latent_dim=latent, num_classes=num_classes, width=W, shared_dim=8)
    d = Discriminator(shape=shape, num_classes=num_classes, width=W)
    # The default attention at 64 x 64 maps, as the code's D_arch: G has them at 64 and 128 px, D (whose
    # first block already halves the image) only at 128 px.
    assert len(g.attention) == (resolution > 32)
    assert any(isinstance(m, SelfAttention) for m in d.modules()) == (resolution == 128)
    y = _labels(num_classes)
    x = g(torch.randn(B, latent), y)
    assert x.shape == (B, *shape)
    assert x.abs().max() <= 1.0  # tanh
    assert d(x, y).shape == (B,)


@pytest.mark.parametrize("num_classes", [None, 10])
@pytest.mark.parametrize("hierarchical", [True, False])
def test_one_channel_32_px_without_shared_embedding_or_hierarchical_z(num_classes, hierarchical):
    shape = (1, 32, 32)
    g = Generator(shape=shape, latent_dim=8, num_classes=num_classes, width=W, hierarchical=hierarchical,
                  shared_dim=None if num_classes and not hierarchical else 8, attention=None)
    plain = num_classes is None and not hierarchical  # nothing to condition the norms on
    assert type(g.blocks[0].bn1) is (nn.BatchNorm2d if plain else ConditionalBatchNorm2d)
    x = g(torch.randn(B, 8), _labels(num_classes))
    assert x.shape == (B, *shape)
    assert Discriminator(shape=shape, width=W, num_classes=num_classes)(x, _labels(num_classes)).shape == (B,)


@pytest.mark.parametrize("num_classes", [None, 10])
def test_gradients_reach_every_parameter_of_g_and_d(num_classes):
    torch.manual_seed(0)
    g = Generator(shape=(3, 32, 32), latent_dim=8, num_classes=num_classes, width=W, shared_dim=8, attention=(16,))
    d = Discriminator(shape=(3, 32, 32), num_classes=num_classes, width=W, attention=(16,))
    for m in [*g.modules(), *d.modules()]:
        if isinstance(m, SelfAttention):
            nn.init.constant_(m.gamma, 0.5)  # at its initial 0 the attention's convolutions get zero gradients
    y = _labels(num_classes)
    d(g(torch.randn(B, 8), y), y).sum().backward()
    for name, p in [*g.named_parameters(prefix="G"), *d.named_parameters(prefix="D")]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_conditional_batch_norm_with_zero_weights_is_batch_norm_and_otherwise_gain_one_plus_linear():
    gain, bias = nn.Linear(2, 1, bias=False), nn.Linear(2, 1, bias=False)
    nn.init.zeros_(gain.weight)
    nn.init.zeros_(bias.weight)
    cbn = ConditionalBatchNorm2d(1, gain=gain, bias=bias, eps=1e-5)
    x = torch.tensor([[[[1.0, 3.0]]], [[[5.0, 7.0]]]])  # mean 4, biased variance 5
    c = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    normed = (x - 4.0) / math.sqrt(5.0 + 1e-5)
    assert_close(cbn(x, c), normed)
    with torch.no_grad():
        gain.weight.copy_(torch.tensor([[0.5, 1.0]]))  # gains 1 + 2.5 and 1 + 0
        bias.weight.copy_(torch.tensor([[2.0, 0.0]]))  # biases 2 and -2
    expected = normed * torch.tensor([3.5, 1.0])[:, None, None, None] + torch.tensor([2.0, -2.0])[:, None, None, None]
    assert_close(cbn(x, c), expected)


def test_the_norms_take_the_shared_embedding_then_the_z_chunk():
    g = Generator(shape=(3, 32, 32), latent_dim=8, num_classes=10, width=W, shared_dim=6)
    assert g.z_chunk == 2 and g.linear.in_features == 2
    norm = g.blocks[0].bn1
    assert norm.gain.in_features == 6 + 2 and parametrize.is_parametrized(norm.gain, "weight")
    assert not parametrize.is_parametrized(g.shared, "weight")  # G's embedding is never normalized


def test_the_class_embedding_changes_g_and_the_projection_changes_d():
    torch.manual_seed(0)
    g = Generator(shape=(3, 32, 32), latent_dim=8, num_classes=10, width=W, shared_dim=8).eval()
    z = torch.randn(1, 8).expand(2, 8)
    out = g(z, torch.tensor([3, 7]))
    assert (out[0] - out[1]).abs().max() > 1e-4
    with torch.no_grad():
        g.shared.weight[7] = g.shared.weight[3]  # the label acts through its embedding only
    out = g(z, torch.tensor([3, 7]))
    assert_close(out[0], out[1], rtol=0, atol=1e-6)
    d = Discriminator(shape=(3, 32, 32), num_classes=10, width=W).eval()
    x = torch.randn(B, 3, 32, 32)
    phi = d.features(x)
    y = torch.tensor([0, 9])
    assert_close(d(x, y) - d.linear(phi).squeeze(1), (d.embed.weight[y] * phi).sum(1), rtol=1e-4, atol=1e-5)


def test_a_conditional_network_needs_labels_and_an_unconditional_one_refuses_them():
    g = Generator(shape=(3, 32, 32), latent_dim=8, num_classes=10, width=W, shared_dim=8)
    d = Discriminator(shape=(3, 32, 32), width=W)
    with pytest.raises(TypeError, match=r"G\(z, y\)"):
        g(torch.randn(B, 8))
    with pytest.raises(TypeError, match=r"D\(x\)"):
        d(torch.randn(B, 3, 32, 32), torch.zeros(B, dtype=torch.long))


def test_self_attention_with_gamma_zero_is_the_identity():
    torch.manual_seed(0)
    for channels in (1, 16):  # 1: the inner channels are clamped to 1
        attn = SelfAttention(channels)
        x = torch.randn(B, channels, 4, 4)
        assert_close(attn(x), x, rtol=0, atol=0)


def test_self_attention_matches_a_hand_computation():
    attn = SelfAttention(2, spectral_norm=False)  # queries, keys and values of 1 channel each
    with torch.no_grad():
        attn.theta.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
        attn.phi.weight.copy_(torch.tensor([0.0, 1.0]).view(1, 2, 1, 1))
        attn.g.weight.copy_(torch.tensor([1.0, 1.0]).view(1, 2, 1, 1))
        attn.o.weight.copy_(torch.tensor([1.0, -2.0]).view(2, 1, 1, 1))
        attn.gamma.fill_(0.5)
    # A 2x4 map pools to two key positions, columns 0-1 and 2-3.
    a = [[0.0, 1.0, -1.0, 2.0], [0.5, 0.0, 1.0, -0.5]]
    b = [[1.0, -1.0, 0.0, 0.5], [2.0, 0.0, -2.0, 1.0]]
    x = torch.tensor([a, b]).unsqueeze(0)
    keys = [max(b[r][c] for r in (0, 1) for c in cols) for cols in ((0, 1), (2, 3))]  # phi = channel b
    values = [max(a[r][c] + b[r][c] for r in (0, 1) for c in cols) for cols in ((0, 1), (2, 3))]  # g = a + b
    expected = torch.zeros(1, 2, 2, 4)
    for r in range(2):
        for c in range(4):
            scores = [a[r][c] * k for k in keys]  # theta = channel a
            weights = [math.exp(s) / sum(math.exp(t) for t in scores) for s in scores]
            attended = sum(w * v for w, v in zip(weights, values, strict=True))
            expected[0, 0, r, c] = a[r][c] + 0.5 * attended
            expected[0, 1, r, c] = b[r][c] + 0.5 * -2.0 * attended
    assert_close(attn(x), expected)


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_spectral_norm_is_everywhere_but_on_gs_embeddings_exactly_when_asked(spectral_norm):
    g = Generator(shape=(3, 32, 32), latent_dim=8, num_classes=10, width=W, shared_dim=8, attention=(16,),
                  spectral_norm=spectral_norm)
    d = Discriminator(shape=(3, 32, 32), num_classes=10, width=W, attention=(16,), spectral_norm=spectral_norm)
    for net, embeddings_too in ((g, False), (d, True)):
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) or (embeddings_too and isinstance(m, nn.Embedding)):
                assert parametrize.is_parametrized(m, "weight") == spectral_norm
    assert not parametrize.is_parametrized(g.shared, "weight")


def test_weights_start_as_the_cifar_scripts_n02_or_orthogonal():
    torch.manual_seed(0)
    d = Discriminator(shape=(3, 32, 32), width=16)
    raw = d.blocks[1].conv1.parametrizations.weight.original  # 64 x 64 x 3 x 3
    assert abs(raw.std().item() - 0.02) < 1e-3 and abs(raw.mean().item()) < 1e-3
    d = Discriminator(shape=(3, 32, 32), width=16, init="ortho", spectral_norm=False)
    w = d.blocks[1].conv1.weight.flatten(1)  # 64 x 576: orthonormal rows
    assert_close(w @ w.T, torch.eye(64), rtol=0, atol=1e-5)


def test_orthogonal_penalty_matches_a_hand_value_and_the_codes_gradient():
    layer = nn.Linear(3, 2)  # its bias (1-D) is left out
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]]))
    penalty = orthogonal_penalty(layer)
    assert_close(penalty, torch.tensor(4.0))  # W W^T = [[5, 2], [2, 2]]: 0.5 * (2^2 + 2^2)
    penalty.backward()
    assert_close(layer.weight.grad, torch.tensor([[0.0, 4.0, 4.0], [4.0, 8.0, 0.0]]))
    assert layer.bias.grad is None


def test_orthogonal_penalty_gradient_is_utils_ortho_on_every_raw_weight_and_skips_the_shared_embedding():
    torch.manual_seed(0)
    g = Generator(shape=(3, 32, 32), latent_dim=8, num_classes=10, width=W, shared_dim=8, attention=(16,))
    orthogonal_penalty(g).backward()
    assert g.shared.weight.grad is None  # the code's blacklist
    raw = g.blocks[0].conv1.parametrizations.weight.original
    assert raw.grad is not None  # the raw weight, not the spectrally normalized one
    for name, p in g.named_parameters():
        if p.ndim < 2 or name.startswith("shared."):
            continue
        w = p.detach().flatten(1)
        # BigGAN-PyTorch utils.ortho: grad += 2 * ((W W^T) * (1 - I)) W
        expected = 2 * ((w @ w.T) * (1.0 - torch.eye(w.shape[0]))) @ w
        assert_close(p.grad.flatten(1), expected, rtol=1e-5, atol=1e-7, msg=name)


def test_orthogonal_penalty_skips_what_it_is_told():
    net = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 4, bias=False))
    both, first = orthogonal_penalty(net), orthogonal_penalty(net[0])
    assert both > first > 0
    assert_close(orthogonal_penalty(net, skip=[net[1]]), first)
    assert_close(orthogonal_penalty(net, skip=[net[1].weight]), first)
    assert orthogonal_penalty(net, skip=[net]) == 0


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 48, 48), (3, 32, 64), (3, 256, 256), (2,)])
def test_other_shapes_are_refused_naming_the_key(shape):
    with pytest.raises(ConfigError, match=r"^model\.generator: .*32, 64 or 128.*data\.resolution"):
        Generator(shape=shape, width=W)
    with pytest.raises(ConfigError, match=r"^model\.discriminator: .*data\.resolution=32 for 28 px"):
        Discriminator(shape=shape, width=W)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"width": 0}, r"model\.generator\.width"),
    ({"num_classes": 1}, r"model\.generator: num_classes"),
    ({"latent_dim": 128, "shape": (3, 64, 64)}, r"model\.generator\.latent_dim .* 125 or 130"),
    ({"num_classes": 10, "shared_dim": None}, r"model\.generator\.shared_dim"),
    ({"attention": (24,)}, r"model\.generator\.attention"),
    ({"attention": "64"}, r"model\.generator\.attention"),
    ({"init": "kaiming"}, r"model\.generator\.init"),
    ({"bn_eps": 0}, r"model\.generator\.bn_eps"),
])
def test_bad_generator_options_are_refused_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        Generator(**{"shape": (3, 32, 32), "latent_dim": 8, "width": W, **kwargs})


def test_bad_discriminator_options_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.discriminator\.width"):
        Discriminator(shape=(3, 32, 32), width=-1)
    with pytest.raises(ConfigError, match=r"model\.discriminator\.attention"):
        Discriminator(shape=(3, 32, 32), attention=[True])


def test_the_cifar_scripts_networks_have_the_documented_parameter_counts():
    # BigGAN-PyTorch's launch_cifar_ema.sh: G_ch = D_ch = 64, no --G_shared, no --hier, no attention.
    g = Generator(shape=(3, 32, 32), num_classes=10, shared_dim=None, hierarchical=False, attention=())
    d = Discriminator(shape=(3, 32, 32), num_classes=10, attention=())
    assert sum(p.numel() for p in g.parameters()) == 4_304_387
    assert sum(p.numel() for p in d.parameters()) == 4_207_361
    assert sum(p.numel() for p in Generator(shape=(3, 32, 32), num_classes=10).parameters()) == 4_373_251
