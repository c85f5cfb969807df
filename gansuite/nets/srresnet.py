"""SRResNet and SRGAN (Ledig et al. 2017, arXiv:1609.04802): x2/x4 single-image super-resolution.

The module is :class:`gansuite.models.translation.PairedTranslationGAN` on ``(low-res, high-res)``
batches: SRResNet is G alone on a pixel (MSE) loss (``discriminator: null``); SRGAN adds the
VGG-style D with ``content + 1e-3 * adversarial`` and starts from an SRResNet checkpoint
(``model.init_generator``), as in the paper. This file holds the networks and the VGG content
loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gansuite.errors import ConfigError

log = logging.getLogger("gansuite")

# torchvision's VGG-19 file name in torch's hub cache (~/.cache/torch/hub/checkpoints).
VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/" + VGG19_FILE
# Index in torchvision's vgg19().features of the ReLU after conv2_2 ("22") and after conv5_4 ("54").
_VGG_LAYERS = {"22": 8, "54": 35}
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _scale_stages(source_shape: tuple[int, ...], shape: tuple[int, ...], key: str) -> int:
    if len(shape) != 3 or len(source_shape) != 3:
        raise ConfigError(f"{key}: super-resolution needs images; the data gives {tuple(source_shape)} -> {tuple(shape)}.")
    scale = shape[-1] // source_shape[-1]
    if scale not in (2, 4, 8) or source_shape[-1] * scale != shape[-1] or source_shape[-2] * scale != shape[-2]:
        raise ConfigError(f"{key}: the data maps {tuple(source_shape)} to {tuple(shape)}, not an x2, x4 or x8 "
                          "upscaling; set data.scale to 2, 4 or 8.")
    return int(math.log2(scale))


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.PReLU(width),
            nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """Low-res (B, C, h, w) -> high-res (B, C, s*h, s*w) in [-1, 1]: the SRGAN paper's generator.

    k9n64 + PReLU; ``blocks`` residual blocks (k3n64, BN, PReLU, k3n64, BN, skip); k3n64 + BN and
    a skip from the first layer; per factor 2 a k3n256 convolution, pixel shuffle and PReLU; k9nC.
    The output goes through tanh, as the data is in [-1, 1] (the paper's HR range).

    Args:
        shape, source_shape: high- and low-resolution (C, H, W), from the data; the ratio is the scale.
        width: channels (64 in the paper).
        blocks: residual blocks (16 in the paper).
    """

    def __init__(self, *, shape: tuple[int, ...], source_shape: tuple[int, ...], width: int = 64,
                 blocks: int = 16) -> None:
        super().__init__()
        stages = _scale_stages(source_shape, shape, "model.generator")
        if not isinstance(blocks, int) or blocks < 1:
            raise ConfigError(f"model.generator.blocks must be a positive integer (got {blocks!r}).")
        self.head = nn.Sequential(nn.Conv2d(source_shape[0], width, 9, 1, 4), nn.PReLU(width))
        self.body = nn.Sequential(*[_Residual(width) for _ in range(blocks)],
                                  nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width))
        self.upsample = nn.Sequential(*[
            layer for _ in range(stages)
            for layer in (nn.Conv2d(width, width * 4, 3, 1, 1), nn.PixelShuffle(2), nn.PReLU(width))
        ])
        self.tail = nn.Conv2d(width, shape[0], 9, 1, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = self.head(x)
        return self.tail(self.upsample(h + self.body(h))).tanh()


class VGGDiscriminator(nn.Module):
    """High-res images (B, C, H, W) -> one raw score per image (B,): the SRGAN paper's D.

    Eight 3x3 convolutions, 64 -> 512 channels doubling every second one, strides 1, 2, 1, 2, ...,
    LeakyReLU 0.2, batch norm on all but the first; then dense 1024, LeakyReLU, dense 1 (the
    sigmoid is in the loss). The paper's 96 px crops leave a 6x6 map; other sizes size the dense
    layer from the data.

    Args:
        shape: high-resolution (C, H, W), from the data.
        width: channels of the first convolutions (64 in the paper).
        hidden: units of the first dense layer (1024 in the paper).
    """

    def __init__(self, *, shape: tuple[int, ...], source_shape: tuple[int, ...] | None = None, width: int = 64,
                 hidden: int = 1024) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ConfigError(f"model.discriminator: SRGAN's D needs images but the data gives {tuple(shape)}.")
        layers: list[nn.Module] = []
        ch, size_h, size_w = shape[0], shape[1], shape[2]
        for i in range(8):
            out = width * 2 ** (i // 2)
            stride = 1 if i % 2 == 0 else 2
            layers.append(nn.Conv2d(ch, out, 3, stride, 1))
            if i:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            ch = out
            if stride == 2:
                size_h, size_w = (size_h + 1) // 2, (size_w + 1) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(ch * size_h * size_w, hidden), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(1)


def resolve_vgg19_weights(weights: str | None) -> Path | None:
    """The VGG-19 weights file to use: ``weights`` if given (it must exist), else torch's hub cache, else None."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.module.content_loss.weights: {weights} does not exist; point it at torchvision's "
                              f"{VGG19_FILE} (from {VGG19_URL}) or set it to null.")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
    return cached if cached.is_file() else None


class VGGLoss(nn.Module):
    """The SRGAN paper's VGG content loss: MSE between VGG-19 feature maps of output and target.

    ``layer="54"`` is phi_{5,4} (after the ReLU of conv5_4, SRGAN-VGG54), ``"22"`` phi_{2,2}.
    Features are divided by 12.75, the paper's rescaling that brings the loss to the MSE's
    range. Images in [-1, 1] are mapped to ImageNet's normalisation; grey images are repeated
    to 3 channels. The network is frozen and kept out of the module's state dict.
    """

    def __init__(self, weights: Path, layer: str = "54", rescale: float = 1 / 12.75) -> None:
        super().__init__()
        from torchvision.models import vgg19

        if layer not in _VGG_LAYERS:
            raise ConfigError(f"model.module.content_loss.layer: {layer!r} is unknown; use 54 or 22.")
        net = vgg19()
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        features = net.features[: _VGG_LAYERS[layer] + 1].eval().requires_grad_(False)
        self._vgg = [features]  # a list keeps it out of state_dict() and parameters()
        self.rescale = rescale
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, x: Tensor) -> Tensor:
        net = self._vgg[0]
        if next(net.parameters()).device != x.device:
            net.to(x.device)
        x = (x + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return net((x - self.mean) / self.std) * self.rescale

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            want = self.features(target)
        return F.mse_loss(self.features(output), want)


def content_loss(kind: str = "mse", weights: str | None = None, layer: str = "54") -> Callable[[Tensor, Tensor], Tensor]:
    """The content loss ``kind`` names: ``mse`` (SRResNet-MSE) or ``vgg`` (SRGAN-VGG54).

    ``vgg`` needs torchvision's VGG-19 weights: ``weights`` (a path) or torch's hub cache. It
    never downloads: without the file it says so in one line and uses the pixel MSE instead
    (fetch it with ``python -c "import torchvision; torchvision.models.vgg19(weights='DEFAULT')"``).
    """
    if kind == "mse":
        return nn.MSELoss()
    if kind != "vgg":
        raise ConfigError(f"model.module.content_loss.kind: {kind!r} is unknown; use mse or vgg.")
    path = resolve_vgg19_weights(weights)
    if path is None:
        log.warning(f"VGG-19 weights not found (no {VGG19_FILE} in {torch.hub.get_dir()}/checkpoints and no "
                    "model.module.content_loss.weights): the content loss is the pixel MSE instead of VGG54.")
        return nn.MSELoss()
    return VGGLoss(path, layer=layer)
