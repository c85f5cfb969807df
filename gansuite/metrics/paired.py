"""Image-restoration metrics for paired outputs (super-resolution, pix2pix), with their baselines.

The protocol is the one the super-resolution literature reports (SRGAN, Ledig et al. 2017, and
the MATLAB scripts behind it):

- images enter as floats in [-1, 1], shape (B, C, H, W); values outside are clamped, as saving
  the image would;
- PSNR and SSIM are measured on the **luma channel Y** of MATLAB's ``rgb2ycbcr`` (ITU-R BT.601,
  16-235 on the 0-255 scale, :func:`rgb_to_y`), after **cropping** ``border`` pixels from each side
  (:func:`crop_border`; by convention the scale factor, 0 for pix2pix);
- both are computed **per image** and a set's score is the mean of the per-image values, as papers
  report; it is not the PSNR of the pooled MSE, which weights badly restored images less;
- each number is reported beside the same number for a **baseline** on the same images
  (:func:`compare`): bicubic upsampling for super-resolution (:func:`bicubic_upsample`), the input
  itself for paired translation.

PSNR and SSIM are torchmetrics' implementations, with data range 255 and SSIM's standard
constants written out below. Two known differences from MATLAB numbers: Y is not rounded to
uint8 here (MATLAB's ``rgb2ycbcr`` of a uint8 image returns a rounded uint8 Y; BasicSR, like us,
keeps it unrounded), and low-resolution inputs made by :func:`bicubic_downsample` are close to,
not bit-identical with, MATLAB's ``imresize``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

DATA_RANGE = 255.0  # PSNR and SSIM on the 0-255 scale of Y
# SSIM as Wang et al. 2004 define it, and torchmetrics' defaults, written out so a change of
# defaults upstream cannot change our numbers: an 11x11 Gaussian window of sigma 1.5, K1, K2.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# BT.601 luma for RGB in [0, 1], as MATLAB's rgb2ycbcr: Y in [16, 235] (65.481 + 128.553 + 24.966 = 219).
Y_OFFSET = 16.0
Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(x: Tensor) -> Tensor:
    """The luma channel Y of (B, 3, H, W) RGB in [-1, 1], as (B, 1, H, W) on the 0-255 scale (16-235).

    Unrounded floats (MATLAB rounds Y to uint8; see the module docstring). A (B, 1, H, W) image is
    taken as already grey (MNIST-like data) and only rescaled to 0-255, with no Y conversion, so
    its values span 0-255 rather than 16-235.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"rgb_to_y expects (B, 3, H, W) RGB or (B, 1, H, W) grey images, got shape {tuple(x.shape)}.")
    x = (x.clamp(-1, 1) + 1) / 2  # [0, 1]
    if x.shape[1] == 1:
        return x * 255
    weights = torch.tensor(Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return Y_OFFSET + (x * weights).sum(dim=1, keepdim=True)


def crop_border(x: Tensor, border: int) -> Tensor:
    """``x`` (..., H, W) without ``border`` pixels on each side; the SR convention is border = scale."""
    if border < 0:
        raise ValueError(f"The border to crop must be 0 or more pixels, got {border}.")
    if border == 0:
        return x
    height, width = x.shape[-2:]
    if 2 * border >= min(height, width):
        raise ValueError(
            f"Cropping {border} pixels from each side of a {height}x{width} image leaves nothing to measure; "
            f"the border must be less than half the smaller side ({min(height, width)})."
        )
    return x[..., border:-border, border:-border]


def _pair(output: Tensor, target: Tensor, border: int) -> tuple[Tensor, Tensor]:
    """Cropped Y channels of ``output`` and ``target``, in float64 and without gradients."""
    if output.shape != target.shape:
        raise ValueError(f"output and target must have the same shape, got {tuple(output.shape)} and "
                         f"{tuple(target.shape)}.")
    # float64: SSIM's variances are E[x^2] - E[x]^2 on the 0-255 scale, which cancels badly in float32.
    output, target = output.detach().double(), target.detach().double()
    return crop_border(rgb_to_y(output), border), crop_border(rgb_to_y(target), border)


def psnr_y(output: Tensor, target: Tensor, border: int) -> Tensor:
    """Per-image PSNR in dB, shape (B,), on Y (0-255, data range 255) after cropping ``border`` pixels.

    10 log10(255^2 / MSE) with the MSE of each image alone. Identical images have MSE 0 and an
    infinite PSNR, which is returned as ``inf`` (and makes the mean over a set ``inf``).
    """
    output, target = _pair(output, target, border)
    return peak_signal_noise_ratio(output, target, data_range=DATA_RANGE, reduction="none", dim=(1, 2, 3))


def ssim_y(output: Tensor, target: Tensor, border: int) -> Tensor:
    """Per-image SSIM, shape (B,), on Y (0-255, data range 255) after cropping ``border`` pixels.

    The mean of the SSIM map over the windows that lie wholly inside the (cropped) image, as the
    authors' MATLAB code (``filter2(..., 'valid')``), scikit-image and BasicSR do. torchmetrics
    (1.9; since its PR #2721 of 2024) averages over every pixel instead, the windows near the edge
    seeing a reflected image; its full map is cropped here to the valid windows. So the cropped image must be at least
    11x11, the window.
    """
    output, target = _pair(output, target, border)
    height, width = output.shape[-2:]
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least one whole {SSIM_WINDOW}x{SSIM_WINDOW} window, but the image is "
                         f"{height}x{width} after cropping a border of {border}.")
    _, ssim_map = structural_similarity_index_measure(
        output, target, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_WINDOW, reduction="none",
        data_range=DATA_RANGE, k1=SSIM_K1, k2=SSIM_K2, return_full_image=True,
    )
    # torchmetrics sizes the Gaussian from sigma, not kernel_size: int(3.5 sigma + 0.5) * 2 + 1 = 11.
    valid = crop_border(ssim_map, SSIM_WINDOW // 2)
    return valid.flatten(1).mean(dim=1)


def l1(output: Tensor, target: Tensor) -> Tensor:
    """Per-image mean absolute error, shape (B,), on the [-1, 1] scale (pix2pix's held-out criterion)."""
    if output.shape != target.shape:
        raise ValueError(f"output and target must have the same shape, got {tuple(output.shape)} and "
                         f"{tuple(target.shape)}.")
    return (output.detach() - target.detach()).abs().flatten(1).mean(dim=1)


def compare(output: Tensor, target: Tensor, baseline: Tensor, border: int) -> dict[str, float]:
    """Mean PSNR, SSIM and L1 of ``output`` and of ``baseline`` against ``target``, over the batch.

    Keys ``psnr``, ``ssim``, ``l1`` and ``baseline_psnr``, ``baseline_ssim``, ``baseline_l1``. The
    baseline is bicubic upsampling for super-resolution and the input for paired translation. L1
    is measured on the same cropped pixels as PSNR and SSIM, so all six numbers see one region.
    Batch means: to score a set split into batches of unequal size, average the per-image values
    of :func:`psnr_y`, :func:`ssim_y` and :func:`l1` over the whole set instead.
    """
    result = {}
    for prefix, images in (("", output), ("baseline_", baseline)):
        result[f"{prefix}psnr"] = float(psnr_y(images, target, border).mean())
        result[f"{prefix}ssim"] = float(ssim_y(images, target, border).mean())
        result[f"{prefix}l1"] = float(l1(crop_border(images, border), crop_border(target, border)).mean())
    return result


def _check_scale(scale: int) -> None:
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"The scale factor must be a whole number of 1 or more, got {scale!r}.")


def bicubic_upsample(x: Tensor, scale: int) -> Tensor:
    """``x`` (B, C, h, w) bicubically upsampled to (B, C, scale h, scale w), clamped to [-1, 1]: the SR baseline.

    ``antialias=True`` does not smooth an enlargement; it selects the kernel. torch's plain bicubic
    is Keys' cubic with a = -0.75 (OpenCV's); with ``antialias=True`` it is a = -0.5, the kernel of
    MATLAB's ``imresize`` that the papers' bicubic baselines were made with. Clamped because the
    kernel overshoots at edges, and a saved image would be clamped too.
    """
    _check_scale(scale)
    height, width = x.shape[-2:]
    up = F.interpolate(x, size=(height * scale, width * scale), mode="bicubic", align_corners=False,
                       antialias=True)
    return up.clamp(-1, 1)


def bicubic_downsample(x: Tensor, scale: int) -> Tensor:
    """``x`` (B, C, H, W) downsampled by ``scale`` with antialiased bicubic, clamped to [-1, 1]: SR inputs on the fly.

    MATLAB's ``imresize`` (how SR benchmarks make their inputs) is antialiased bicubic too, with the
    same kernel (Keys, a = -0.5, stretched by ``scale``); torch's result is close to it but not
    bit-identical (the image edges are handled differently). H and W must be multiples of ``scale``
    (crop the high-resolution image first, as SR data sets do), so that upsampling the result gives
    back the original size.
    """
    _check_scale(scale)
    height, width = x.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"A {height}x{width} image cannot be downsampled by {scale}: crop it to a multiple of "
                         f"{scale} first.")
    down = F.interpolate(x, size=(height // scale, width // scale), mode="bicubic", align_corners=False,
                         antialias=True)
    return down.clamp(-1, 1)  # the kernel's negative lobes overshoot at edges too
