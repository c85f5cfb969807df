"""StyleGAN2's generator and discriminator (Karras et al. 2020), as in NVlabs/stylegan2-ada-pytorch.

The layout, initialisation and gains follow ``training/networks.py`` of stylegan2-ada-pytorch (Karras et
al. 2020, "Training Generative Adversarial Networks with Limited Data"), which reimplements config F of
StyleGAN2 ("Analyzing and Improving the Image Quality of StyleGAN"). That code runs two custom CUDA ops;
here they are plain PyTorch, written after its reference implementations:

- ``upfirdn2d`` (``torch_utils/ops/upfirdn2d.py``, ``_upfirdn2d_ref``): zero insertion, padding or
  cropping, a depthwise convolution with the flipped FIR filter, and a stride for the down-sampling.
- ``bias_act`` (``torch_utils/ops/bias_act.py``, ``_bias_act_ref``): bias, activation, gain, clamp.
- ``conv2d_resample`` (``torch_utils/ops/conv2d_resample.py``): its fast paths, a transposed convolution
  before the FIR filter to up-sample and the FIR filter before a strided convolution to down-sample.

G: z [, one-hot label -> FC embedding], each normalized to unit second moment and concatenated -> mapping
MLP (equalized learning rate, lr multiplier 0.01, lrelu with gain sqrt(2)) -> w, broadcast to ``num_ws``
copies -> synthesis: a learned 4x4 constant, then per resolution a block of two modulated 3x3
convolutions (the first up-sampling 2x with the [1, 3, 3, 1] filter; weight demodulation, per-pixel noise
scaled by a learned strength that starts at 0, bias, lrelu) and a ToRGB layer (modulated 1x1, no
demodulation) whose images are summed after up-sampling ("skip", StyleGAN2's default G architecture).
D: FromRGB at full resolution, then per resolution a residual block (two 3x3 convolutions, the second
down-sampling with the FIR filter; a 1x1 shortcut; both scaled by sqrt(0.5)) down to 4x4, then the
epilogue: minibatch standard deviation, a 3x3 convolution, two fully connected layers. A conditional D
projects its output onto a mapping of the label (``cmap``), as ADA's ``DiscriminatorEpilogue`` does.

Style mixing lives in ``Generator.forward`` (in ADA it is in ``training/loss.py``'s ``run_G``) so that a
plain ``G(z)`` in training mode does what ADA's loss does, without a host sync; the path-length
regularizer of that loss is ``path_length_penalty``.

Parameter counts at ADA's CIFAR-10 settings (``--cfg=cifar --cond=1``: 32 px, 3 channels, 10 classes,
channel_base 32768 so 512 channels everywhere, z and w 512, a 2-layer G mapping, D's label mapping at
ADA's default 8 layers), measured with ``sum(p.numel() for p in net.parameters())``: G 20,215,315;
D 23,089,664 with ``architecture="orig"`` (the cifar config) and 23,876,096 with ``"resnet"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gansuite.errors import ConfigError
from gansuite.nets.checks import check_classes, check_int

RESAMPLE_FILTER = (1, 3, 3, 1)  # StyleGAN2's low-pass filter for every up- and down-sampling
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2)  # bias_act's def_gain for lrelu: keeps the activations' scale through the net
RESIDUAL_GAIN = math.sqrt(0.5)  # residual branch and shortcut each scaled, so their sum keeps the variance
NoiseMode = Literal["random", "const", "none"]

# --------------------------------------------------------------------------------------------------
# Low-level ops: plain-PyTorch versions of ADA's upfirdn2d, bias_act and conv2d_resample.


def setup_filter(taps: Sequence[float] = RESAMPLE_FILTER) -> Tensor:
    """The separable 2-D FIR filter ``outer(taps, taps)``, normalized to sum 1 (ADA's ``setup_filter``)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim != 1 or f.numel() == 0:
        raise ValueError(f"filter taps must be a non-empty 1-D sequence (got {taps!r})")
    f = torch.outer(f, f)
    return f / f.sum()


def _padding4(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from an int or a 4-sequence, F.pad's order for the last two dimensions."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    x0, x1, y0, y1 = padding
    return x0, x1, y0, y1


def upfirdn2d(x: Tensor, f: Tensor | None, *, up: int = 1, down: int = 1,
              padding: int | Sequence[int] = 0, gain: float = 1.0) -> Tensor:
    """Up-sample by zero insertion, pad (negative: crop), convolve with the FIR filter ``f``, down-sample.

    ADA's ``_upfirdn2d_ref`` with ``flip_filter=False``: ``f`` is convolved, not correlated, so the
    filter is flipped before ``conv2d``. Down-sampling is the convolution's stride, which keeps the same
    pixels as ADA's ``x[:, :, ::down, ::down]`` after a full convolution without computing the others.

    Args:
        x: (B, C, H, W), any float dtype; the filter is cast to it.
        f: 2-D filter (from ``setup_filter``), or None for no filtering.
        up, down: integer factors.
        padding: with respect to the up-sampled image, an int or (x0, x1, y0, y1).
        gain: overall scale of the output (4 for a 2x up-sampling keeps the mean of the signal).
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x0, x1, y0, y1 = _padding4(padding)
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    if f is None:
        f = torch.ones(1, 1, dtype=x.dtype, device=x.device)
    kernel = (f * gain).to(x.dtype).flip([0, 1])
    kernel = kernel[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, kernel, stride=down, groups=c)


def upsample2d(x: Tensor, f: Tensor, up: int = 2) -> Tensor:
    """(B, C, H, W) -> (B, C, up H, up W) through ``f`` with gain up^2 (ADA's ``upsample2d``)."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def downsample2d(x: Tensor, f: Tensor, down: int = 2) -> Tensor:
    """(B, C, H, W) -> (B, C, H / down, W / down) through ``f`` (ADA's ``downsample2d``)."""
    fw = f.shape[-1]
    p0, p1 = (fw - down + 1) // 2, (fw - down) // 2
    return upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))


def bias_act(x: Tensor, b: Tensor | None = None, *, act: Literal["linear", "lrelu"] = "linear",
             gain: float | None = None, clamp: float | None = None, dim: int = 1) -> Tensor:
    """Add ``b`` along ``dim``, apply ``act``, scale by ``gain``, clamp to [-clamp, clamp]: ``_bias_act_ref``.

    ``gain=None`` is the activation's default: sqrt(2) for lrelu (slope 0.2), 1 for linear.
    """
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
        gain = LRELU_GAIN if gain is None else gain
    elif act != "linear":
        raise ValueError(f"act must be linear or lrelu (got {act!r})")
    if gain is not None and gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def conv2d_resample(x: Tensor, weight: Tensor, f: Tensor | None = None, *, up: int = 1, down: int = 1,
                    padding: int = 0) -> Tensor:
    """Correlate ``x`` with ``weight`` (O, I, k, k), up- or down-sampling by 2 through the FIR filter ``f``.

    ADA's ``conv2d_resample`` fast paths. Up-sampling runs a stride-``up`` transposed convolution and then
    the filter: the same as zero insertion, the filter and a correlation with the *flipped* kernel
    (``tests/test_stylegan2_nets.py`` checks it), the flip being only a parametrization of random weights.
    Down-sampling filters first and then runs a strided convolution, or for a 1x1 kernel down-samples
    first. ``padding`` is the convolution's own, ``k // 2`` to keep the size.
    """
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample up-samples or down-samples, not both")
    weight = weight.to(x.dtype)
    kw = weight.shape[-1]
    if up == 1 and down == 1:
        return F.conv2d(x, weight, padding=padding)
    fw = f.shape[-1]
    if up > 1:
        if kw == 1:  # a 1x1 kernel commutes with the resampling: convolve at the low resolution
            return upsample2d(F.conv2d(x, weight), f, up)
        p0 = padding + (fw + up - 1) // 2 - (kw - 1)
        p1 = padding + (fw - up) // 2 - (kw - up)
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=up)
        return upfirdn2d(x, f, padding=(p0, p1, p0, p1), gain=up * up)
    if kw == 1:
        return F.conv2d(downsample2d(x, f, down), weight)
    p0 = padding + (fw - down + 1) // 2
    p1 = padding + (fw - down) // 2
    return F.conv2d(upfirdn2d(x, f, padding=(p0, p1, p0, p1)), weight, stride=down)


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """x / sqrt(mean(x^2) + eps) along ``dim`` (ADA's ``normalize_2nd_moment``)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, *, demodulate: bool = True, up: int = 1,
                     padding: int = 0, resample_filter: Tensor | None = None) -> Tensor:
    """StyleGAN2's modulated convolution, the non-fused way (ADA's ``fused_modconv=False``).

    The per-sample weight is ``w'[b, o, i] = weight[o, i] * styles[b, i]``, demodulated to unit norm over
    (i, kh, kw) for each output channel (StyleGAN2 eq. 3). Instead of a grouped convolution with the B
    weights, the activations are scaled by the styles, convolved with the shared weight and scaled by the
    demodulation coefficients: the same linear map, and one plain convolution for the whole batch.

    Args:
        x: (B, I, H, W).
        weight: (O, I, k, k).
        styles: (B, I).
        demodulate: divide each output channel by ``sqrt(sum w'^2 + 1e-8)``.
        up: 1, or 2 to up-sample through ``resample_filter`` as ``conv2d_resample`` does.
        padding: the convolution's, ``k // 2``.
    """
    b = x.shape[0]
    if x.dtype == torch.float16 and demodulate:
        # ADA's pre-normalization against float16 overflow; demodulation undoes any such scaling.
        weight = weight * (1 / math.sqrt(weight[0].numel()) / weight.norm(float("inf"), dim=[1, 2, 3],
                                                                           keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    x = x * styles.to(x.dtype).reshape(b, -1, 1, 1)
    x = conv2d_resample(x, weight, resample_filter, up=up, padding=padding)
    if demodulate:
        # The sum over (i, kh, kw) of (weight * style)^2 as one (B, I) x (I, O) product, not a (B, O, I, k, k)
        # tensor; in float32 even under autocast, whose float16 output the sum could overflow.
        with torch.autocast(x.device.type, enabled=False):
            dcoefs = (styles.float().square() @ weight.float().square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()
        x = x * dcoefs.to(x.dtype).reshape(b, -1, 1, 1)
    return x


# --------------------------------------------------------------------------------------------------
# Layers with equalized learning rate (Karras et al. 2018): weights drawn from N(0, 1), scaled at run time.


class FullyConnectedLayer(nn.Module):
    """``act(x @ (W * lr / sqrt(in))^T + b * lr)``: ADA's ``FullyConnectedLayer``.

    The weight is drawn from N(0, 1 / lr^2) so that ``W * lr`` starts at N(0, 1) whatever the learning rate
    multiplier; with Adam, whose steps do not depend on the gradient's scale, the effective learning rate
    of the layer is then lr times the optimizer's.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 activation: Literal["linear", "lrelu"] = "linear", lr_multiplier: float = 1.0,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(nn.Module):
    """A convolution with equalized learning rate, optional FIR up/down-sampling, bias, activation, clamp.

    ADA's ``Conv2dLayer``; ``forward``'s ``gain`` scales the output and the clamp (sqrt(0.5) in residual
    blocks).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activation: Literal["linear", "lrelu"] = "linear", up: int = 1, down: int = 1,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = LRELU_GAIN if activation == "lrelu" else 1.0
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        x = conv2d_resample(x, self.weight * self.weight_gain, self.resample_filter, up=self.up,
                            down=self.down, padding=self.padding)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


# --------------------------------------------------------------------------------------------------
# Generator.


class MappingNetwork(nn.Module):
    """z (B, latent_dim) [, y (B,)] -> w (B, w_dim), or broadcast (B, num_ws, w_dim): ``MappingNetwork``.

    A label is one-hot encoded and embedded by a fully connected layer (ADA's ``embed``, learning rate
    multiplier 1); z and the embedding are each normalized to unit second moment and concatenated. Tracks
    ``w_avg``, the moving average of w, in training mode, for the truncation trick. With
    ``latent_dim=0`` it maps labels only (D's ``cmap``).
    """

    def __init__(self, *, latent_dim: int, num_classes: int | None, w_dim: int, num_ws: int | None,
                 num_layers: int = 8, lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995) -> None:
        super().__init__()
        self.latent_dim, self.num_classes, self.w_dim, self.num_ws = latent_dim, num_classes, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if num_classes else 0
        self.embed = FullyConnectedLayer(num_classes, embed_features) if num_classes else None
        features = [latent_dim + embed_features] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            FullyConnectedLayer(features[i], features[i + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            for i in range(num_layers)
        )
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor | None, y: Tensor | None = None, truncation_psi: float = 1.0,
                update_w_avg: bool = True) -> Tensor:
        """w; ``truncation_psi`` < 1 pulls it towards ``w_avg``; ``update_w_avg=False`` for extra samples."""
        parts = []
        if self.latent_dim:
            parts.append(normalize_2nd_moment(z))
        if self.embed is not None:
            one_hot = F.one_hot(y, self.num_classes).to(self.embed.weight.dtype)
            parts.append(normalize_2nd_moment(self.embed(one_hot)))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for layer in self.layers:
            x = layer(x)
        if self.w_avg_beta is not None and self.training and update_w_avg:
            self.w_avg.copy_(x.detach().mean(dim=0).to(self.w_avg.dtype).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            x = self.w_avg.to(x.dtype).lerp(x, truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally up-sampling 2x), noise, bias, lrelu: ADA's ``SynthesisLayer``.

    The affine layer's bias starts at 1, so the styles start around 1 (ADA's ``bias_init=1``).
    """

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, resolution: int, up: int = 1,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor, noise_mode: NoiseMode = "random", gain: float = 1.0) -> Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up, padding=1,
                             resample_filter=self.resample_filter)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device,
                                dtype=x.dtype)
            x = x + noise * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, act="lrelu", gain=LRELU_GAIN * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, not demodulated, plus a bias: ADA's ``ToRGBLayer``."""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)  # not demodulated: equalized lr goes in the styles

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: ADA's ``SynthesisBlock``.

    The first block (``in_channels == 0``) starts from the learned 4x4 constant and has one convolution;
    the others up-sample in their first. Architectures: ``orig`` (ToRGB only at the end), ``skip`` (every
    block adds its ToRGB to the up-sampled image so far) and ``resnet`` (a 1x1 up-sampling shortcut, both
    branches scaled by sqrt(0.5)).
    """

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str, conv_clamp: float | None) -> None:
        super().__init__()
        self.in_channels, self.resolution, self.architecture = in_channels, resolution, architecture
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.num_conv = self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        conv_clamp=conv_clamp)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp)
        self.num_conv += 1
        self.torgb = None
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        self.skip = None
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, up=2)

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor,
                noise_mode: NoiseMode = "random") -> tuple[Tensor, Tensor | None]:
        """ws: (B, num_conv + num_torgb, w_dim); the ToRGB's w is the next block's first (ADA's sharing)."""
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(ws.dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, next(w_iter), noise_mode)
        elif self.skip is not None:
            y = self.skip(x, gain=RESIDUAL_GAIN)
            x = self.conv0(x, next(w_iter), noise_mode)
            x = y + self.conv1(x, next(w_iter), noise_mode, gain=RESIDUAL_GAIN)
        else:
            x = self.conv0(x, next(w_iter), noise_mode)
            x = self.conv1(x, next(w_iter), noise_mode)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.torgb is not None:
            y = self.torgb(x, next(w_iter))
            img = y if img is None else img + y
        return x, img


def _channels(channel_base: int, channel_max: int, resolution: int) -> dict[int, int]:
    """ADA's ``channels_dict``: min(channel_base // res, channel_max) at every res from 4 up."""
    return {4 * 2 ** i: min(channel_base // (4 * 2 ** i), channel_max)
            for i in range(int(math.log2(resolution)) - 1)}


class SynthesisNetwork(nn.Module):
    """ws (B, num_ws, w_dim) -> images (B, C, R, R): ADA's ``SynthesisNetwork`` (without float16 blocks)."""

    def __init__(self, *, w_dim: int, resolution: int, img_channels: int, channel_base: int, channel_max: int,
                 architecture: str, conv_clamp: float | None) -> None:
        super().__init__()
        self.w_dim = w_dim
        channels = _channels(channel_base, channel_max, resolution)
        self.blocks = nn.ModuleList()
        self.num_ws = 0
        for res in channels:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
                                   resolution=res, img_channels=img_channels, is_last=res == resolution,
                                   architecture=architecture, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv + (block.num_torgb if res == resolution else 0)
            self.blocks.append(block)

    def forward(self, ws: Tensor, noise_mode: NoiseMode = "random") -> Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"synthesis takes ws of shape (B, {self.num_ws}, {self.w_dim}), "
                             f"got {tuple(ws.shape)}")
        x = img = None
        w_idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), noise_mode)
            w_idx += block.num_conv
        return img


def _check_shape(shape: Sequence[int], key: str) -> tuple[int, int]:
    """(channels, resolution) after checking for square 1- or 3-channel images, a power of two from 8 up."""
    shape = tuple(shape)  # instantiate hands a list over
    res = shape[1] if len(shape) == 3 else 0
    if len(shape) != 3 or not isinstance(res, int) or shape[2] != res or res < 8 or res & (res - 1):
        raise ConfigError(
            f"{key}: StyleGAN2 needs square images whose side is a power of two from 8 up, but the data "
            f"gives samples of shape {shape}; set data.resolution to 8, 16, 32, 64, 128 or 256."
        )
    if shape[0] not in (1, 3):
        raise ConfigError(f"{key}: StyleGAN2 makes 1- or 3-channel images but the data has {shape[0]} "
                          "channels; use grayscale or RGB data.")
    return shape[0], res


def _check_common(key: str, resolution: int, num_classes: int | None, channel_base: int, channel_max: int,
                  architecture: str, choices: tuple[str, ...], conv_clamp: float | None) -> None:
    check_classes(num_classes, key)
    check_int(channel_max, f"{key}.channel_max", 1, "ADA uses 512.")
    check_int(channel_base, f"{key}.channel_base", resolution,
              f"at {resolution} px each layer needs channel_base // {resolution} >= 1 channels "
              "(ADA: 16384 or 32768).")
    if architecture not in choices:
        raise ConfigError(f"{key}.architecture must be one of {', '.join(choices)} (got {architecture!r}).")
    if conv_clamp is not None and (isinstance(conv_clamp, bool) or not isinstance(conv_clamp, (int, float))
                                   or not conv_clamp > 0):
        raise ConfigError(f"{key}.conv_clamp must be null or a positive number (got {conv_clamp!r}); "
                          "ADA uses 256 with float16.")


class Generator(nn.Module):
    """z (B, latent_dim) [, y (B,)] -> images (B, C, R, R): no tanh (as StyleGAN2), for data in [-1, 1].

    ``mapping(z, y)`` gives the broadcast ws (B, num_ws, w_dim), ``synthesis(ws)`` the images;
    ``make_ws`` adds style mixing in training mode and ``forward`` is ``synthesis(make_ws(...))``.

    Args:
        shape: (C, R, R) of one sample, from the data module: C 1 or 3, R a power of two from 8 up.
        latent_dim: size of z (ADA: 512).
        num_classes: None for an unconditional G called as ``G(z)``; K for ``G(z, y)`` with labels in [0, K).
        w_dim: size of w (ADA: 512).
        mapping_layers: depth of the mapping MLP (StyleGAN2: 8; ADA's cifar and auto configs: 2).
        channel_base, channel_max: min(channel_base // res, channel_max) channels at resolution res.
        style_mixing_prob: in training mode, the probability that the ws from a cutoff on come from a
            second z (ADA: 0.9; its cifar config: 0).
        architecture: ``skip`` (StyleGAN2's G), ``orig`` or ``resnet``.
        conv_clamp: clamp every convolution's output to +-conv_clamp (ADA: 256 with float16), or None.
        w_avg_beta: decay of the moving average of w used by the truncation trick.
        mapping_lr_multiplier: the mapping layers' learning-rate multiplier (StyleGAN: 0.01).
    """

    def __init__(
        self,
        *,
        shape: Sequence[int],
        latent_dim: int = 512,
        num_classes: int | None = None,
        w_dim: int = 512,
        mapping_layers: int = 8,
        channel_base: int = 32768,
        channel_max: int = 512,
        style_mixing_prob: float = 0.9,
        architecture: Literal["orig", "skip", "resnet"] = "skip",
        conv_clamp: float | None = None,
        w_avg_beta: float = 0.995,
        mapping_lr_multiplier: float = 0.01,
    ) -> None:
        super().__init__()
        key = "model.generator"
        img_channels, resolution = _check_shape(shape, key)
        _check_common(key, resolution, num_classes, channel_base, channel_max, architecture,
                      ("orig", "skip", "resnet"), conv_clamp)
        check_int(latent_dim, f"{key}.latent_dim", 1, "ADA uses 512.")
        check_int(w_dim, f"{key}.w_dim", 1, "ADA uses 512.")
        check_int(mapping_layers, f"{key}.mapping_layers", 1, "StyleGAN2 uses 8, ADA's cifar config 2.")
        if isinstance(style_mixing_prob, bool) or not isinstance(style_mixing_prob, (int, float)) \
                or not 0 <= style_mixing_prob <= 1:
            raise ConfigError(f"{key}.style_mixing_prob must be in [0, 1] (got {style_mixing_prob!r}); "
                              "ADA uses 0.9, its cifar config 0.")
        if isinstance(w_avg_beta, bool) or not isinstance(w_avg_beta, (int, float)) \
                or not 0 <= w_avg_beta <= 1:
            raise ConfigError(f"{key}.w_avg_beta must be in [0, 1] (got {w_avg_beta!r}); ADA uses 0.995.")
        if isinstance(mapping_lr_multiplier, bool) or not isinstance(mapping_lr_multiplier, (int, float)) \
                or not mapping_lr_multiplier > 0:
            raise ConfigError(f"{key}.mapping_lr_multiplier must be positive "
                              f"(got {mapping_lr_multiplier!r}); "
                              "StyleGAN uses 0.01.")
        self.latent_dim, self.num_classes, self.w_dim = latent_dim, num_classes, w_dim
        self.style_mixing_prob = float(style_mixing_prob)
        self.synthesis = SynthesisNetwork(w_dim=w_dim, resolution=resolution, img_channels=img_channels,
                                          channel_base=channel_base, channel_max=channel_max,
                                          architecture=architecture, conv_clamp=conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(latent_dim=latent_dim, num_classes=num_classes, w_dim=w_dim,
                                      num_ws=self.num_ws, num_layers=mapping_layers,
                                      lr_multiplier=mapping_lr_multiplier, w_avg_beta=float(w_avg_beta))

    def make_ws(self, z: Tensor, y: Tensor | None = None, truncation_psi: float = 1.0) -> Tensor:
        """ws (B, num_ws, w_dim) for ``synthesis``: the mapping, with style mixing in training mode.

        ADA's ``run_G``: a cutoff drawn uniformly from [1, num_ws), replaced by num_ws (no mixing) with
        probability 1 - style_mixing_prob, and the ws from the cutoff on taken from a second z with the
        same labels. Here the replacement is a mask on the ws index, so no value goes back to the host.
        """
        if (y is None) != (self.num_classes is None):
            raise TypeError("a conditional StyleGAN2 generator is called as G(z, y), "
                            "an unconditional one as G(z)")
        ws = self.mapping(z, y, truncation_psi)
        if self.training and self.style_mixing_prob > 0:
            cutoff = torch.randint(1, self.num_ws, (), device=ws.device)
            mixing = torch.rand((), device=ws.device) < self.style_mixing_prob
            cutoff = torch.where(mixing, cutoff, torch.full_like(cutoff, self.num_ws))
            other = self.mapping(torch.randn_like(z), y, truncation_psi, update_w_avg=False)
            later = torch.arange(self.num_ws, device=ws.device).reshape(1, -1, 1) >= cutoff
            ws = torch.where(later, other, ws)
        return ws

    def forward(self, z: Tensor, y: Tensor | None = None, truncation_psi: float = 1.0,
                noise_mode: NoiseMode = "random") -> Tensor:
        """Images; ``noise_mode`` ``const`` uses each layer's fixed noise map, ``none`` no noise."""
        return self.synthesis(self.make_ws(z, y, truncation_psi), noise_mode)


# --------------------------------------------------------------------------------------------------
# Discriminator.


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convolutions at one resolution, the second down-sampling 2x: ADA's ``DiscriminatorBlock``.

    The first block (``in_channels == 0``), and every block of ``skip``, reads the image through a 1x1
    FromRGB. ``resnet`` adds a 1x1 down-sampling shortcut without bias, both branches scaled by sqrt(0.5).
    """

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, *, img_channels: int,
                 architecture: str, conv_clamp: float | None) -> None:
        super().__init__()
        self.in_channels, self.architecture = in_channels, architecture
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.fromrgb = None
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu",
                                       conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2,
                                 conv_clamp=conv_clamp)
        self.skip = None
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Tensor | None, img: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.fromrgb is not None:
            y = self.fromrgb(img)
            x = y if x is None else x + y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.skip is not None:
            y = self.skip(x, gain=RESIDUAL_GAIN)
            x = y + self.conv1(self.conv0(x), gain=RESIDUAL_GAIN)
        else:
            x = self.conv1(self.conv0(x))
        return x, img


def mbstd_group_size(batch_size: int, group_size: int | None) -> int:
    """The largest divisor of the batch that is at most ``group_size`` (None: the whole batch).

    ADA uses min(group_size, batch) and asserts that it divides the batch; the batch size is a Python int
    here, so a batch that it does not divide (a last partial batch, a shrunk one) gets smaller groups.
    """
    g = batch_size if group_size is None else min(group_size, batch_size)
    while batch_size % g:
        g -= 1
    return g


class MinibatchStdLayer(nn.Module):
    """Appends ``num_channels`` feature maps: the standard deviation over a group of samples, averaged.

    ADA's ``MinibatchStdLayer`` (Karras et al. 2018): sample ``n`` belongs to group ``n % (B / G)``; the
    C channels are split into ``num_channels`` slices, and each slice's per-pixel standard deviation over
    the group (population, plus 1e-8 under the root) is averaged over its channels and pixels.
    """

    def __init__(self, group_size: int | None, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g, f = mbstd_group_size(n, self.group_size), self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (n / g, f)
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 features -> minibatch stddev -> 3x3 conv -> FC -> FC to 1 or cmap_dim: ``DiscriminatorEpilogue``.

    A conditional D returns ``<out, cmap> / sqrt(cmap_dim)``, the projection onto the mapped label.
    """

    def __init__(self, in_channels: int, *, cmap_dim: int, img_channels: int, architecture: str,
                 mbstd_group_size: int | None, mbstd_num_channels: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.cmap_dim = cmap_dim
        self.fromrgb = None
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation="lrelu")
        self.mbstd = None
        if mbstd_num_channels > 0:
            self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * 16, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, cmap_dim or 1)

    def forward(self, x: Tensor, img: Tensor | None, cmap: Tensor | None) -> Tensor:
        if self.fromrgb is not None:
            x = x + self.fromrgb(img)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if cmap is not None:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """images (B, C, R, R) [, y (B,)] -> one raw score per image (B,): ADA's ``Discriminator``.

    Args:
        shape: (C, R, R) of one sample, from the data module.
        num_classes: None for an unconditional D called as ``D(x)``; K for ``D(x, y)``, projected onto a
            mapping of the label.
        channel_base, channel_max: min(channel_base // res, channel_max) channels at resolution res.
        architecture: ``resnet`` (StyleGAN2's D), ``orig`` (ADA's cifar config) or ``skip``.
        mbstd_group_size: samples per minibatch-stddev group (ADA: 4, its cifar config 32), None = the batch.
        mbstd_num_channels: feature maps the minibatch-stddev layer adds (0 disables it); must divide the
            4x4 channels.
        cmap_dim: size of the mapped label, None = the 4x4 channels (ADA's default).
        conv_clamp: clamp every convolution's output to +-conv_clamp, or None.
        mapping_layers: depth of the label mapping (ADA passes D no mapping arguments: 8).
        mapping_lr_multiplier: its learning-rate multiplier (ADA's default 0.01).
    """

    def __init__(
        self,
        *,
        shape: Sequence[int],
        num_classes: int | None = None,
        channel_base: int = 32768,
        channel_max: int = 512,
        architecture: Literal["orig", "skip", "resnet"] = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        cmap_dim: int | None = None,
        conv_clamp: float | None = None,
        mapping_layers: int = 8,
        mapping_lr_multiplier: float = 0.01,
    ) -> None:
        super().__init__()
        key = "model.discriminator"
        img_channels, resolution = _check_shape(shape, key)
        _check_common(key, resolution, num_classes, channel_base, channel_max, architecture,
                      ("orig", "skip", "resnet"), conv_clamp)
        channels = _channels(channel_base, channel_max, resolution)
        if mbstd_group_size is not None:
            check_int(mbstd_group_size, f"{key}.mbstd_group_size", 1,
                      "ADA uses 4, its cifar config 32 (null: the whole batch).")
        check_int(mbstd_num_channels, f"{key}.mbstd_num_channels", 0, "ADA uses 1 (0 disables the layer).")
        if mbstd_num_channels and channels[4] % mbstd_num_channels:
            raise ConfigError(f"{key}.mbstd_num_channels must divide the {channels[4]} channels at 4x4 "
                              f"(got {mbstd_num_channels}); ADA uses 1.")
        if cmap_dim is not None:
            check_int(cmap_dim, f"{key}.cmap_dim", 1, "null uses the 4x4 channels, as ADA.")
        check_int(mapping_layers, f"{key}.mapping_layers", 1, "ADA's D uses 8.")
        if isinstance(mapping_lr_multiplier, bool) or not isinstance(mapping_lr_multiplier, (int, float)) \
                or not mapping_lr_multiplier > 0:
            raise ConfigError(f"{key}.mapping_lr_multiplier must be positive "
                              f"(got {mapping_lr_multiplier!r}); "
                              "ADA uses 0.01.")
        self.num_classes = num_classes
        cmap_dim = (cmap_dim or channels[4]) if num_classes else 0
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(channels[res] if res < resolution else 0, channels[res], channels[res // 2],
                               img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
            for res in sorted(channels, reverse=True) if res > 4
        )
        self.mapping = None
        if num_classes:
            self.mapping = MappingNetwork(latent_dim=0, num_classes=num_classes, w_dim=cmap_dim, num_ws=None,
                                          num_layers=mapping_layers, lr_multiplier=mapping_lr_multiplier,
                                          w_avg_beta=None)
        self.epilogue = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, img_channels=img_channels,
                                              architecture=architecture, mbstd_group_size=mbstd_group_size,
                                              mbstd_num_channels=mbstd_num_channels, conv_clamp=conv_clamp)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if (y is None) != (self.mapping is None):
            raise TypeError("a conditional StyleGAN2 discriminator is called as D(x, y), "
                            "an unconditional one as D(x)")
        h, img = None, x
        for block in self.blocks:
            h, img = block(h, img)
        cmap = None if self.mapping is None else self.mapping(None, y)
        return self.epilogue(h, img, cmap).squeeze(1)


# --------------------------------------------------------------------------------------------------
# Regularizer.


def path_length_penalty(generator: Generator, z: Tensor, y: Tensor | None, pl_mean: Tensor,
                        decay: float = 0.01, shrink: int = 2) -> tuple[Tensor, Tensor]:
    """StyleGAN2's path-length regularizer, ADA's ``training/loss.py`` phase ``Gpl``: (penalty, new pl_mean).

    On the first ``max(B // shrink, 1)`` samples: ``g = J_w^T n`` with ``n`` Gaussian image noise divided
    by sqrt(H W) (the gradient of ``sum(img * n)`` with respect to ws, kept in the graph), the length
    ``a = sqrt(mean over ws of |g|^2)``, ``pl_mean`` moved towards ``mean(a)`` by ``decay``, and the
    penalty ``mean((a - pl_mean)^2)``; the caller multiplies by pl_weight and the regularization interval.
    As in ADA, the penalty sees the new pl_mean with its gradient, and G runs in its current mode (style
    mixing in training mode). The returned pl_mean is detached, for the caller's buffer.

    Args:
        generator: a ``Generator``.
        z, y: latents and labels (y None for an unconditional G).
        pl_mean: 0-d tensor, the running mean of the lengths (starts at 0).
        decay: of the running mean (ADA: 0.01).
        shrink: the batch divisor (ADA: 2).
    """
    n = max(z.shape[0] // shrink, 1)
    z, y = z[:n], (None if y is None else y[:n])
    ws = generator.make_ws(z, y)
    img = generator.synthesis(ws)
    noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    (grads,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
    lengths = grads.square().sum(dim=2).mean(dim=1).sqrt()
    new_mean = pl_mean.to(lengths.dtype).lerp(lengths.mean(), decay)
    # "+ 0 * img": every parameter is in the graph (ToRGB biases do not move the gradient), as ADA's
    # ``gen_img[:, 0, 0, 0] * 0`` keeps DDP from finding unused parameters.
    penalty = (lengths - new_mean).square().mean() + img[:, 0, 0, 0].sum() * 0
    return penalty, new_mean.detach().to(pl_mean.dtype)
