"""StyleGAN2 G and D (ADA's networks.py in plain PyTorch): ops against closed forms, tiny nets on the CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from gansuite.errors import ConfigError
from gansuite.nets.stylegan2 import (
    Conv2dLayer,
    Discriminator,
    FullyConnectedLayer,
    Generator,
    MinibatchStdLayer,
    bias_act,
    conv2d_resample,
    downsample2d,
    mbstd_group_size,
    modulated_conv2d,
    path_length_penalty,
    setup_filter,
    upfirdn2d,
    upsample2d,
)

B, Z = 4, 8  # batch, latent size
TINY = dict(channel_base=64, channel_max=8)  # 8 channels at 4 and 8 px, 4 at 16, 2 at 32
TINY_G = dict(latent_dim=Z, w_dim=8, mapping_layers=2, **TINY)
TOL = dict(rtol=1e-5, atol=1e-5)


def _g(res: int = 8, channels: int = 3, num_classes: int | None = None, **kwargs) -> Generator:
    torch.manual_seed(0)
    return Generator(shape=(channels, res, res), num_classes=num_classes, **{**TINY_G, **kwargs})


def _d(res: int = 8, channels: int = 3, num_classes: int | None = None, **kwargs) -> Discriminator:
    torch.manual_seed(0)
    return Discriminator(shape=(channels, res, res), num_classes=num_classes, **{**TINY, **kwargs})


# --- upfirdn2d, bias_act, conv2d_resample -------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_upsampling_an_impulse_gives_the_normalized_filter_times_4(channels):
    f = setup_filter()
    assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    x = torch.zeros(2, channels, 5, 5)
    x[1, -1, 2, 3] = 1.0
    out = upsample2d(x, f)
    assert out.shape == (2, channels, 10, 10)
    expected = torch.zeros_like(out)
    # The impulse at (2, 3) lands on (4, 6) after zero insertion; the 4 taps reach one pixel up, two down.
    expected[1, -1, 3:7, 5:9] = 4 * f
    assert_close(out, expected, rtol=0, atol=1e-7)


def test_upfirdn2d_convolves_so_an_impulse_gives_the_filter_unflipped():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0
    out = upfirdn2d(x, f, padding=(1, 0, 1, 0))
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 1:3, 1:3] = f
    assert_close(out, expected, rtol=0, atol=0)


def test_upfirdn2d_with_a_unit_filter_and_no_resampling_is_the_identity():
    x = torch.randn(2, 3, 6, 6)
    assert_close(upfirdn2d(x, torch.ones(1, 1)), x, rtol=0, atol=0)
    assert_close(upfirdn2d(x, None), x, rtol=0, atol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_resampling_a_constant_image_keeps_the_constant_away_from_the_borders(channels):
    f = setup_filter()
    x = torch.full((2, channels, 8, 8), 0.7)
    down = downsample2d(x, f)
    assert down.shape == (2, channels, 4, 4)
    assert_close(down[:, :, 1:-1, 1:-1], torch.full((2, channels, 2, 2), 0.7), **TOL)
    assert (down[:, :, 0, 0] < 0.7 - 1e-3).all()  # zero padding at the border
    up = upsample2d(x, f)
    assert up.shape == (2, channels, 16, 16)
    assert_close(up[:, :, 2:-2, 2:-2], torch.full((2, channels, 12, 12), 0.7), **TOL)


def test_bias_act_against_hand_values():
    x = torch.tensor([[-1.0, 0.5], [2.0, -3.0]])  # (B=2, C=2), bias along dim 1
    b = torch.tensor([0.25, -1.0])
    s = math.sqrt(2)
    # x + b = [[-0.75, -0.5], [2.25, -4.0]]; lrelu with slope 0.2, then the gain sqrt(2)
    lrelu = torch.tensor([[-0.15 * s, -0.1 * s], [2.25 * s, -0.8 * s]])
    assert_close(bias_act(x, b, act="lrelu"), lrelu, **TOL)
    assert_close(bias_act(x, b, act="lrelu", gain=1.0), lrelu / s, **TOL)
    # -0.8 sqrt(2) = -1.13 and 2.25 sqrt(2) clamp to -1 and 1
    clamped = torch.tensor([[-0.15 * s, -0.1 * s], [1.0, -1.0]])
    assert_close(bias_act(x, b, act="lrelu", clamp=1.0), clamped, **TOL)
    assert_close(bias_act(x, b), torch.tensor([[-0.75, -0.5], [2.25, -4.0]]), **TOL)
    assert_close(bias_act(x, None, gain=2.0, clamp=3.0), torch.tensor([[-2.0, 1.0], [3.0, -3.0]]), **TOL)


@pytest.mark.parametrize("lr", [1.0, 0.01])
def test_the_equalized_fully_connected_layer_scales_weight_and_bias_at_run_time(lr):
    torch.manual_seed(0)
    fc = FullyConnectedLayer(5, 3, lr_multiplier=lr, bias_init=0.5)
    torch.nn.init.normal_(fc.bias)
    x = torch.randn(4, 5)
    gain = 1 / math.sqrt(5)
    expected = x @ (fc.weight * gain * lr).t() + fc.bias * lr
    assert_close(fc(x), expected, **TOL)
    # The stored weight is N(0, 1 / lr^2), so the effective one starts at N(0, 1 / in) whatever lr.
    assert abs((fc.weight * lr).std().item() - 1) < 0.6
    lrelu = FullyConnectedLayer(5, 3, activation="lrelu", lr_multiplier=lr)
    pre = x @ (lrelu.weight * gain * lr).t() + lrelu.bias * lr
    assert_close(lrelu(x), F.leaky_relu(pre, 0.2) * math.sqrt(2), **TOL)


def test_up_sampling_convolution_is_zero_insertion_filter_and_the_flipped_kernel():
    torch.manual_seed(0)
    f = setup_filter()
    x, w = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3)
    out = conv2d_resample(x, w, f, up=2, padding=1)
    # ADA's generic path: up-sample by zero insertion and filter (padding 1 + 2, 1 + 1), then convolve.
    reference = F.conv2d(upfirdn2d(x, f, up=2, padding=(3, 2, 3, 2), gain=4), w.flip([2, 3]))
    assert out.shape == (2, 4, 10, 10)
    assert_close(out, reference, **TOL)


def test_down_sampling_convolution_matches_ada_generic_path():
    torch.manual_seed(0)
    f = setup_filter()
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    out = conv2d_resample(x, w, f, down=2, padding=1)
    # ADA's generic path: pad by 1 + 1, convolve at full resolution, then filter and keep every 2nd pixel.
    full = F.conv2d(F.pad(x, [2, 2, 2, 2]), w)
    reference = F.conv2d(full, f.flip([0, 1]).expand(4, 1, 4, 4), groups=4)[:, :, ::2, ::2]
    assert out.shape == (2, 4, 4, 4)
    assert_close(out, reference, **TOL)
    # A 1x1 kernel down-samples first; it commutes with the filter.
    w1 = torch.randn(4, 3, 1, 1)
    assert_close(conv2d_resample(x, w1, f, down=2), downsample2d(F.conv2d(x, w1), f), **TOL)
    assert_close(conv2d_resample(x, w1, f, up=2), upsample2d(F.conv2d(x, w1), f), **TOL)


# --- modulated convolution ----------------------------------------------------------------------------------


def _explicit_modulated_weights(weight, styles, demodulate):
    """(B, O, I, k, k): weight * style per input channel, divided by its norm per output channel."""
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w / (w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).sqrt()
    return w


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_non_fused_modulated_conv_equals_the_grouped_convolution_with_per_sample_weights(up, demodulate):
    torch.manual_seed(0)
    b, i, o, res = 3, 4, 5, 6
    x, weight, styles = torch.randn(b, i, res, res), torch.randn(o, i, 3, 3), torch.randn(b, i) + 1
    f = setup_filter()
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, padding=1, resample_filter=f)
    w = _explicit_modulated_weights(weight, styles, demodulate).reshape(b * o, i, 3, 3)
    flat = x.reshape(1, b * i, res, res)
    if up == 1:
        grouped = F.conv2d(flat, w, padding=1, groups=b)
    else:  # zero insertion and the filter, then the flipped kernel (see the up-sampling test above)
        grouped = F.conv2d(upfirdn2d(flat, f, up=2, padding=(3, 2, 3, 2), gain=4), w.flip([2, 3]), groups=b)
    assert out.shape == (b, o, res * up, res * up)
    assert_close(out, grouped.reshape(b, o, res * up, res * up), **TOL)


def test_demodulation_gives_every_output_channel_a_unit_norm_kernel():
    # By hand: one output channel, weight (3, 4) on two inputs, styles (2, 1): w' = (6, 4) / sqrt(52).
    weight = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1)
    x = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    out = modulated_conv2d(x, weight, torch.tensor([[2.0, 1.0]]))
    assert_close(out.flatten(), torch.tensor([6 / math.sqrt(52)]), **TOL)
    # Black box on a 3x3 kernel: impulses in each input channel read the effective kernel back.
    torch.manual_seed(0)
    b, i, o = 2, 3, 4
    weight, styles = torch.randn(o, i, 3, 3), torch.rand(b, i) + 0.5
    impulses = torch.zeros(b * i, i, 3, 3)
    impulses[torch.arange(b * i), torch.arange(b * i) % i, 1, 1] = 1.0
    kernels = modulated_conv2d(impulses, weight, styles.repeat_interleave(i, dim=0), padding=1)
    norms = kernels.reshape(b, i, o, 9).square().sum(dim=(1, 3))
    assert_close(norms, torch.ones(b, o), **TOL)
    undemodulated = modulated_conv2d(impulses, weight, styles.repeat_interleave(i, dim=0), padding=1,
                                     demodulate=False)
    assert (undemodulated.reshape(b, i, o, 9).square().sum(dim=(1, 3)) - 1).abs().min() > 1e-2


# --- minibatch standard deviation ---------------------------------------------------------------------------


def test_minibatch_stddev_against_hand_values():
    # 4 samples, groups of 2: samples {0, 2} and {1, 3} (ADA's reshape puts sample n in group n % 2).
    x = torch.zeros(4, 2, 1, 1)
    x[:, 0, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 5.0])
    x[:, 1, 0, 0] = 1.0
    out = MinibatchStdLayer(group_size=2)(x)
    assert out.shape == (4, 3, 1, 1)
    assert_close(out[:, :2], x, rtol=0, atol=0)
    eps_std = math.sqrt(1e-8)  # a constant channel's "standard deviation"
    # group {0, 2}: std of (0, 2) is 1; group {1, 3}: std of (1, 5) is 2; averaged with the constant channel
    expected = torch.tensor([(1 + eps_std) / 2, (2 + eps_std) / 2, (1 + eps_std) / 2, (2 + eps_std) / 2])
    assert_close(out[:, 2, 0, 0], expected, **TOL)


def test_minibatch_stddev_groups_divide_the_batch():
    assert [mbstd_group_size(n, 4) for n in (1, 2, 3, 4, 6, 7, 8, 12)] == [1, 2, 3, 4, 3, 1, 4, 4]
    assert mbstd_group_size(6, None) == 6
    # A batch of 6 with group size 4 uses groups of 3: samples {0, 2, 4} and {1, 3, 5}.
    x = torch.tensor([0.0, 10.0, 3.0, 10.0, 6.0, 13.0]).reshape(6, 1, 1, 1)
    out = MinibatchStdLayer(group_size=4)(x)[:, 1, 0, 0]
    std_a = math.sqrt(6 + 1e-8)  # population variance of (0, 3, 6) is 6
    std_b = math.sqrt(2 + 1e-8)  # of (10, 10, 13) is 2
    assert_close(out, torch.tensor([std_a, std_b] * 3), **TOL)


# --- the networks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("res", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("num_classes", [None, 10])
def test_shapes(res, channels, num_classes):
    g, d = _g(res, channels, num_classes), _d(res, channels, num_classes)
    y = None if num_classes is None else torch.arange(B) % num_classes
    assert g.num_ws == 2 * int(math.log2(res)) - 2  # one conv at 4 px, two per block after, one last ToRGB
    x = g(torch.randn(B, Z), y)
    assert x.shape == (B, channels, res, res)
    assert torch.isfinite(x).all()
    scores = d(x, y)
    assert scores.shape == (B,)


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
def test_every_architecture_gives_the_shapes(architecture):
    g = _g(16, architecture=architecture)
    d = _d(16, architecture=architecture)
    x = g(torch.randn(B, Z))
    assert x.shape == (B, 3, 16, 16)
    assert d(x).shape == (B,)


def test_the_cifar_settings_have_the_documented_parameter_counts():
    with torch.device("meta"):  # counts without drawing 43M weights
        g = Generator(shape=(3, 32, 32), num_classes=10, mapping_layers=2)
        d_orig = Discriminator(shape=(3, 32, 32), num_classes=10, architecture="orig")
        d_resnet = Discriminator(shape=(3, 32, 32), num_classes=10)
    count = [sum(p.numel() for p in net.parameters()) for net in (g, d_orig, d_resnet)]
    assert count == [20_215_315, 23_089_664, 23_876_096]  # the module docstring quotes these


def test_a_network_needs_labels_exactly_when_conditional():
    g, d = _g(num_classes=10), _d()
    with pytest.raises(TypeError, match=r"G\(z, y\)"):
        g(torch.randn(B, Z))
    with pytest.raises(TypeError, match=r"D\(x\)"):
        d(torch.randn(B, 3, 8, 8), torch.zeros(B, dtype=torch.long))


@pytest.mark.parametrize("num_classes", [None, 10])
def test_gradients_reach_every_parameter(num_classes):
    g, d = _g(16, num_classes=num_classes), _d(16, num_classes=num_classes)
    y = None if num_classes is None else torch.arange(B) % num_classes
    real = torch.randn(B, 3, 16, 16, requires_grad=True)
    (d(g(torch.randn(B, Z), y), y).sum() + d(real, y).sum()).backward()
    for name, p in [*g.named_parameters(), *d.named_parameters()]:
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
    assert torch.count_nonzero(real.grad) > 0


def test_the_mapping_concatenates_the_normalized_latent_and_label_embedding():
    g = _g(num_classes=10).eval()
    z, y = torch.randn(B, Z), torch.tensor([0, 3, 3, 9])

    def unit_2nd_moment(v):
        return v / v.square().mean(dim=1, keepdim=True).sqrt()

    # The embedding has lr multiplier 1, and a one-hot label picks a column of its weight.
    embedding = g.mapping.embed.weight.t()[y] / math.sqrt(10) + g.mapping.embed.bias
    h = torch.cat([unit_2nd_moment(z), unit_2nd_moment(embedding)], dim=1)
    for fc in g.mapping.layers:  # lr multiplier 0.01
        pre = h @ (fc.weight * 0.01 / math.sqrt(fc.weight.shape[1])).t() + fc.bias * 0.01
        h = F.leaky_relu(pre, 0.2) * math.sqrt(2)
    assert_close(g.mapping(z, y), h[:, None].expand(B, g.num_ws, 8), **TOL)


def test_skip_synthesis_sums_the_up_sampled_torgb_images_and_shares_ws_across_blocks():
    g = _g(8).eval()
    ws = torch.randn(B, g.num_ws, 8)  # a different w per index shows which layer reads which
    b4, b8 = g.synthesis.blocks
    x4 = b4.conv1(b4.const.expand(B, -1, -1, -1), ws[:, 0], "const")
    x8 = b8.conv1(b8.conv0(x4, ws[:, 1], "const"), ws[:, 2], "const")
    expected = upsample2d(b4.torgb(x4, ws[:, 1]), setup_filter()) + b8.torgb(x8, ws[:, 3])
    assert_close(g.synthesis(ws, noise_mode="const"), expected, **TOL)


def test_resnet_blocks_scale_both_branches_by_the_square_root_of_one_half():
    h = math.sqrt(0.5)
    d = _d(16, architecture="resnet")
    block = d.blocks[1]  # 8 px in, 8 channels
    x = torch.randn(B, 8, 8, 8)
    expected = h * (block.skip(x) + block.conv1(block.conv0(x)))
    assert_close(block(x, None)[0], expected, **TOL)
    g = _g(8, architecture="resnet").eval()
    block, x, w = g.synthesis.blocks[1], torch.randn(B, 8, 4, 4), torch.randn(B, 3, 8)
    expected = h * (block.skip(x) + block.conv1(block.conv0(x, w[:, 0], "const"), w[:, 1], "const"))
    assert_close(block(x, None, w, "const")[0], expected, **TOL)


@pytest.mark.parametrize("num_classes", [None, 10])
def test_the_score_is_the_epilogue_output_projected_onto_the_mapped_label(num_classes):
    d = _d(num_classes=num_classes)
    seen = []
    d.epilogue.out.register_forward_hook(lambda module, args, out: seen.append(out))
    x, y = torch.randn(B, 3, 8, 8), (None if num_classes is None else torch.tensor([0, 9, 4, 4]))
    scores = d(x, y)
    if num_classes is None:
        assert_close(scores, seen[0][:, 0], rtol=0, atol=0)
        return
    cmap = d.mapping(None, y)
    assert cmap.shape == seen[0].shape == (B, 8)  # cmap_dim defaults to the 4x4 channels
    assert_close(scores, (seen[0] * cmap).sum(dim=1) / math.sqrt(8), **TOL)
    assert (d(x, (y + 1) % 10) - scores).abs().min() > 1e-6


def test_the_conditional_generator_depends_on_the_label():
    g = _g(num_classes=10).eval()
    z = torch.randn(1, Z).expand(2, Z)
    out = g(z, torch.tensor([3, 7]), noise_mode="const")
    assert (out[0] - out[1]).abs().max() > 1e-3


# --- style mixing, w_avg, truncation ------------------------------------------------------------------------


def test_in_eval_mode_the_ws_are_one_w_repeated_and_const_noise_is_deterministic():
    g = _g(16, num_classes=10, style_mixing_prob=1.0).eval()
    z, y = torch.randn(B, Z), torch.arange(B)
    ws = g.make_ws(z, y)
    assert ws.shape == (B, g.num_ws, 8)
    assert_close(ws, ws[:, :1].expand_as(ws), rtol=0, atol=0)
    assert_close(g(z, y, noise_mode="const"), g(z, y, noise_mode="const"), rtol=0, atol=0)
    for layer in g.modules():  # random noise matters once its strength leaves 0
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.data.fill_(0.5)
    assert (g(z, y) - g(z, y)).abs().max() > 1e-4
    assert_close(g(z, y, noise_mode="none"), g(z, y, noise_mode="none"), rtol=0, atol=0)


def test_in_training_mode_style_mixing_takes_the_later_ws_from_a_second_z():
    g = _g(16, num_classes=10, style_mixing_prob=1.0).train()
    z, y = torch.randn(B, Z), torch.arange(B)
    cutoffs = set()
    for seed in range(8):
        torch.manual_seed(seed)
        ws = g.make_ws(z, y)
        # ADA's draws, in its order: the cutoff in [1, num_ws), the coin, the second z.
        torch.manual_seed(seed)
        cutoff = int(torch.randint(1, g.num_ws, ()))
        torch.rand(())
        other = g.mapping(torch.randn_like(z), y)
        own = g.mapping(z, y)
        assert 1 <= cutoff < g.num_ws
        assert_close(ws[:, :cutoff], own[:, :cutoff], rtol=0, atol=0)
        assert_close(ws[:, cutoff:], other[:, cutoff:], rtol=0, atol=0)
        assert (ws[:, -1] - own[:, -1]).abs().max() > 1e-3
        cutoffs.add(cutoff)
    assert len(cutoffs) > 1
    g.style_mixing_prob = 0.0
    assert_close(g.make_ws(z, y), g.mapping(z, y), rtol=0, atol=0)


def test_w_avg_moves_only_in_training_mode_and_only_with_the_first_z():
    g = _g(style_mixing_prob=1.0, w_avg_beta=0.9)
    z = torch.randn(B, Z)
    with torch.no_grad():
        g.eval()
        g(z)
        assert_close(g.mapping.w_avg, torch.zeros(8), rtol=0, atol=0)
        w = g.mapping(z, None)[:, 0]
        g.train()
        g(z)  # mixing maps a second z, which must not count
    assert_close(g.mapping.w_avg, 0.1 * w.mean(dim=0), **TOL)
    previous = g.mapping.w_avg.clone()
    with torch.no_grad():
        g(z)
    assert_close(g.mapping.w_avg, 0.9 * previous + 0.1 * w.mean(dim=0), **TOL)


def test_truncation_pulls_the_ws_towards_w_avg():
    g = _g().eval()
    g.mapping.w_avg.copy_(torch.randn(8))
    z = torch.randn(B, Z)
    ws = g.make_ws(z)
    assert_close(g.make_ws(z, truncation_psi=0.0), g.mapping.w_avg.expand_as(ws), **TOL)
    assert_close(g.make_ws(z, truncation_psi=0.5), (ws + g.mapping.w_avg) / 2, **TOL)


# --- path length --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [None, 10])
def test_path_length_penalty_equals_the_jacobian_computation(num_classes):
    g = _g(8, channels=1, num_classes=num_classes).eval()
    z = torch.randn(B, Z)
    y = None if num_classes is None else torch.arange(B) % num_classes
    pl_mean = torch.tensor(0.3)
    torch.manual_seed(1)
    penalty, new_mean = path_length_penalty(g, z, y, pl_mean, decay=0.1, shrink=2)
    # By hand on the first B // 2 samples, replaying the random draws: G's noise inputs, then the image noise.
    n = B // 2
    ws = g.mapping(z[:n], None if y is None else y[:n]).detach()
    torch.manual_seed(1)
    img = g.synthesis(ws)
    noise = torch.randn_like(img) / math.sqrt(8 * 8)
    # noise_strength starts at 0, so the image is a function of ws alone: its full Jacobian.
    jac = torch.autograd.functional.jacobian(lambda w: g.synthesis(w, noise_mode="none"), ws)
    jac = jac[torch.arange(n), ..., torch.arange(n), :, :]  # (n, C, H, W, num_ws, w_dim), sample by sample
    grads = torch.einsum("bchw,bchwid->bid", noise, jac)
    lengths = grads.square().sum(dim=2).mean(dim=1).sqrt()
    mean = 0.3 + 0.1 * (lengths.mean() - 0.3)
    assert_close(new_mean, mean, **TOL)
    assert_close(penalty, (lengths - mean).square().mean(), **TOL)
    assert penalty > 0 and not new_mean.requires_grad
    penalty.backward()
    for name, p in g.named_parameters():
        assert p.grad is not None, name


def test_path_length_penalty_keeps_at_least_one_sample():
    g = _g().train()
    penalty, new_mean = path_length_penalty(g, torch.randn(1, Z), None, torch.zeros([]))
    assert penalty.shape == () and torch.isfinite(penalty) and new_mean > 0


# --- configuration errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 12, 12), (3, 4, 4), (3, 32, 16), (3, 48, 48), (2,)])
def test_resolutions_other_than_powers_of_two_from_8_are_refused_naming_data_resolution(shape):
    with pytest.raises(ConfigError, match=r"^model\.generator: .*data\.resolution to 8, 16, 32"):
        Generator(shape=shape, **TINY_G)
    with pytest.raises(ConfigError, match=r"^model\.discriminator: .*data\.resolution"):
        Discriminator(shape=shape, **TINY)


def test_bad_options_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"^model\.generator: .*1- or 3-channel.*2 channels"):
        Generator(shape=(2, 8, 8), **TINY_G)
    with pytest.raises(ConfigError, match=r"^model\.discriminator: .*4 channels"):
        Discriminator(shape=(4, 8, 8), **TINY)
    with pytest.raises(ConfigError, match=r"^model\.generator\.channel_base must be an integer >= 32"):
        Generator(shape=(3, 32, 32), **{**TINY_G, "channel_base": 16})
    with pytest.raises(ConfigError, match=r"^model\.discriminator\.channel_max"):
        Discriminator(shape=(3, 8, 8), channel_base=64, channel_max=0)
    with pytest.raises(ConfigError, match=r"^model\.discriminator\.architecture"):
        Discriminator(shape=(3, 8, 8), architecture="dense", **TINY)
    with pytest.raises(ConfigError, match=r"^model\.generator\.style_mixing_prob"):
        Generator(shape=(3, 8, 8), style_mixing_prob=1.5, **TINY_G)
    with pytest.raises(ConfigError, match=r"^model\.generator: num_classes"):
        Generator(shape=(3, 8, 8), num_classes=1, **TINY_G)
    with pytest.raises(ConfigError, match=r"^model\.discriminator\.mbstd_num_channels must divide the 8"):
        Discriminator(shape=(3, 8, 8), mbstd_num_channels=3, **TINY)
    with pytest.raises(ConfigError, match=r"^model\.discriminator\.mbstd_group_size"):
        Discriminator(shape=(3, 8, 8), mbstd_group_size=0, **TINY)
    with pytest.raises(ConfigError, match=r"^model\.generator\.conv_clamp"):
        Generator(shape=(3, 8, 8), conv_clamp=-1, **TINY_G)


def test_conv_clamp_bounds_every_convolution():
    layer = Conv2dLayer(3, 4, 3, activation="lrelu", conv_clamp=0.5)
    out = layer(100 * torch.randn(2, 3, 8, 8))
    assert out.abs().max() <= 0.5
    g = _g(conv_clamp=0.25).eval()
    # Each ToRGB output is clamped, and 'skip' sums two of them at 8 px (the up-sampled 4 px one, gain 1).
    assert g(100 * torch.randn(B, Z)).abs().max() <= 0.5 + 1e-6
