"""Paired restoration metrics (PSNR / SSIM on Y, L1, baselines) against closed forms and hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from gansuite.metrics.paired import (
    bicubic_downsample,
    bicubic_upsample,
    compare,
    crop_border,
    l1,
    psnr_y,
    rgb_to_y,
    ssim_y,
)

C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def grey(value: float, batch: int = 1, size: int = 16) -> torch.Tensor:
    """A constant single-channel image in [-1, 1], in float64 so closed forms hold to 1e-9."""
    return torch.full((batch, 1, size, size), value, dtype=torch.float64)


# torchmetrics takes log(data_range) in float32 whatever the inputs' dtype: PSNR is good to ~2e-6 dB.
PSNR_ATOL = 1e-5


def shift(d: float) -> float:
    """A difference of ``d`` on the 0-255 scale, expressed on the [-1, 1] scale."""
    return 2 * d / 255


def keys_cubic(t: float, a: float = -0.5) -> float:
    """Keys' cubic convolution kernel; a = -0.5 is MATLAB's imresize ``cubic``."""
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a if t < 2 else 0.0


def reference_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM by Wang et al.'s definition, one (B, 1, H, W) image at a time, over every whole 11x11 window."""
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    w = (g[:, None] * g[None, :]).flatten() / g.sum() ** 2
    px, py = F.unfold(x, 11), F.unfold(y, 11)  # (B, 121, windows)
    mx, my = (w[:, None] * px).sum(1), (w[:, None] * py).sum(1)
    vx = (w[:, None] * px * px).sum(1) - mx**2
    vy = (w[:, None] * py * py).sum(1) - my**2
    cxy = (w[:, None] * px * py).sum(1) - mx * my
    s = (2 * mx * my + C1) * (2 * cxy + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2))
    return s.mean(1)


def test_rgb_to_y_of_primaries_black_and_white():
    pixels = torch.tensor([[-1, -1, -1], [1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    y = rgb_to_y(pixels.view(5, 3, 1, 1))
    assert y.shape == (5, 1, 1, 1)
    expected = torch.tensor([16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966], dtype=torch.float64)
    assert_close(y.flatten(), expected, rtol=0, atol=1e-9)


def test_rgb_to_y_of_grey_images_is_a_rescale_and_out_of_range_values_are_clamped():
    x = torch.tensor([-1.0, 0.0, 1.0, 1.5, -3.0], dtype=torch.float64).view(1, 1, 1, 5)
    assert_close(rgb_to_y(x).flatten(), torch.tensor([0, 127.5, 255, 255, 0], dtype=torch.float64),
                 rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="RGB or"):
        rgb_to_y(torch.zeros(1, 2, 4, 4))


def test_crop_border():
    x = torch.arange(4 * 6).view(1, 1, 4, 6)
    assert crop_border(x, 0) is x
    assert_close(crop_border(x, 1), torch.tensor([[[[7, 8, 9, 10], [13, 14, 15, 16]]]]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="Cropping 2 pixels from each side of a 4x6 image leaves nothing"):
        crop_border(x, 2)
    with pytest.raises(ValueError, match="0 or more"):
        crop_border(x, -1)


def test_psnr_of_a_constant_offset():
    for d in (1.0, 5.0, 40.0):
        value = psnr_y(grey(shift(d), batch=2), grey(0.0, batch=2), border=0)
        assert_close(value, torch.full((2,), 10 * math.log10(255**2 / d**2), dtype=torch.float64),
                     rtol=0, atol=PSNR_ATOL)
    # RGB: a shift of 0.1 in every channel moves Y by 219 * 0.1 / 2 on the 0-255 scale.
    target = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    assert_close(psnr_y(target + 0.1, target, border=0),
                 torch.tensor([20 * math.log10(255 / (219 * 0.05))], dtype=torch.float64), rtol=0, atol=PSNR_ATOL)


def test_psnr_of_identical_images_is_inf():
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    assert torch.isinf(psnr_y(x, x.clone(), border=0)).all()
    assert compare(x, x, x, border=0)["psnr"] == math.inf


def test_an_error_only_in_the_border_is_cropped_away():
    target = grey(0.0)
    frame = torch.ones_like(target, dtype=torch.bool)
    frame[..., 2:-2, 2:-2] = False
    output = target + shift(10) * frame
    assert torch.isinf(psnr_y(output, target, border=2)).all()
    wrong = 16 * 16 - 12 * 12  # pixels in the 2-pixel frame, each off by 10
    expected = 10 * math.log10(255**2 / (wrong * 10**2 / (16 * 16)))
    assert_close(psnr_y(output, target, border=0), torch.tensor([expected], dtype=torch.float64),
                 rtol=0, atol=PSNR_ATOL)
    assert compare(output, target, output, border=2)["l1"] == 0.0


def test_psnr_is_per_image_and_averaged_not_pooled():
    d = torch.tensor([2.0, 20.0], dtype=torch.float64)
    target = grey(0.0, batch=2)
    output = target + shift(1) * d.view(2, 1, 1, 1)
    per_image = 20 * torch.log10(255 / d)
    assert_close(psnr_y(output, target, border=0), per_image, rtol=0, atol=PSNR_ATOL)
    mean = compare(output, target, output, border=0)["psnr"]
    assert_close(mean, per_image.mean().item(), rtol=0, atol=PSNR_ATOL)
    pooled = 10 * math.log10(255**2 / float((d**2).mean()))
    assert abs(mean - pooled) > 5  # 27.9 dB against 20.9 dB: the convention matters


def test_ssim_of_identical_images_is_one():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1
    assert_close(ssim_y(x, x.clone(), border=0), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_ssim_of_constant_images_has_the_closed_form():
    # Variances and covariance vanish, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) with a, b the grey levels.
    a, b = 127.5, 153.0  # 0.0 and 0.2 on the [-1, 1] scale
    expected = (2 * a * b + C1) / (a**2 + b**2 + C1)
    assert_close(ssim_y(grey(0.2, batch=2), grey(0.0, batch=2), border=2),
                 torch.full((2,), expected, dtype=torch.float64), rtol=0, atol=1e-9)


def test_ssim_averages_the_whole_windows_only():
    torch.manual_seed(0)
    for size in ((11, 11), (13, 17)):
        target = torch.rand(2, 1, *size, dtype=torch.float64) * 2 - 1
        output = (target + 0.3 * torch.randn_like(target)).clamp(-1, 1)
        expected = reference_ssim(rgb_to_y(output), rgb_to_y(target))
        assert_close(ssim_y(output, target, border=0), expected, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="whole 11x11 window"):
        ssim_y(grey(0.0, size=16), grey(0.0, size=16), border=3)


def test_l1_is_the_per_image_mean_absolute_error():
    target = grey(0.0, batch=2, size=4)
    output = target.clone()
    output[0] += 0.1
    output[1, :, :2] -= 0.5  # half the pixels off by 0.5
    assert_close(l1(output, target), torch.tensor([0.1, 0.25], dtype=torch.float64), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        l1(output, target[:, :, :2])


def test_compare_puts_the_baseline_beside_the_output():
    target = grey(0.0, batch=2)
    result = compare(target.clone(), target, target + 0.2, border=0)
    assert set(result) == {"psnr", "ssim", "l1", "baseline_psnr", "baseline_ssim", "baseline_l1"}
    a, b = 127.5, 153.0
    assert result["psnr"] == math.inf and result["l1"] == 0.0
    assert_close(result["ssim"], 1.0, rtol=0, atol=1e-12)
    expected = {"baseline_psnr": 20 * math.log10(255 / 25.5), "baseline_l1": 0.2,
                "baseline_ssim": (2 * a * b + C1) / (a**2 + b**2 + C1)}
    for key, value in expected.items():
        assert_close(result[key], value, rtol=0, atol=PSNR_ATOL if key == "baseline_psnr" else 1e-9, msg=key)


def test_a_perfect_super_resolution_beats_bicubic():
    torch.manual_seed(0)
    target = F.avg_pool2d(torch.rand(2, 3, 64, 64) * 2 - 1, 2)  # (2, 3, 32, 32), smooth enough to restore
    baseline = bicubic_upsample(bicubic_downsample(target, 2), 2)
    result = compare(target + 0.01 * torch.randn_like(target), target, baseline, border=2)
    assert result["psnr"] > result["baseline_psnr"] and math.isfinite(result["baseline_psnr"])
    assert result["ssim"] > result["baseline_ssim"]
    assert result["l1"] < result["baseline_l1"]


def test_bicubic_keeps_constant_images_and_round_trips_them():
    x = torch.full((2, 3, 16, 16), 0.3)
    up = bicubic_upsample(x, 4)
    assert up.shape == (2, 3, 64, 64)
    assert_close(up, torch.full_like(up, 0.3), rtol=0, atol=1e-6)
    down = bicubic_downsample(x, 2)
    assert down.shape == (2, 3, 8, 8)
    assert_close(down, torch.full_like(down, 0.3), rtol=0, atol=1e-6)
    assert_close(bicubic_upsample(down, 2), x, rtol=0, atol=1e-6)


def test_bicubic_upsample_clamps_the_overshoot_and_downsample_needs_a_multiple():
    edge = torch.ones(1, 1, 8, 8)
    edge[..., 4:] = -1
    raw = F.interpolate(edge, scale_factor=4, mode="bicubic", align_corners=False)
    assert raw.max() > 1.05  # the bicubic kernel rings at a step...
    up = bicubic_upsample(edge, 4)
    assert up.max() == 1.0 and up.min() == -1.0  # ...which the baseline clamps, as a saved image would
    edge = torch.ones(1, 1, 16, 16)
    edge[..., 7:] = -1  # a step between output pixels: the stretched kernel rings when shrinking too
    assert F.interpolate(edge, size=(8, 8), mode="bicubic", align_corners=False, antialias=True).max() > 1.01
    down = bicubic_downsample(edge, 2)
    assert down.max() == 1.0 and down.min() == -1.0
    with pytest.raises(ValueError, match="crop it to a multiple of 3"):
        bicubic_downsample(torch.zeros(1, 3, 16, 16), 3)
    with pytest.raises(ValueError, match="whole number of 1 or more"):
        bicubic_upsample(edge, 0)


def test_bicubic_uses_matlabs_kernel():
    # The response to one bright pixel, away from the edges, is the kernel sampled at the output
    # pixels' positions in input coordinates, (j + 0.5) / scale - 0.5 (align_corners=False).
    impulse = torch.zeros(1, 1, 1, 12, dtype=torch.float64)
    impulse[..., 6] = 1
    up = bicubic_upsample(impulse, 2)[0, 0, 0]
    assert_close(up, torch.tensor([keys_cubic((j + 0.5) / 2 - 0.5 - 6) for j in range(24)], dtype=torch.float64),
                 rtol=0, atol=1e-12)
    # Shrinking stretches the kernel by the scale and divides it by the scale (MATLAB's antialiasing).
    impulse = torch.zeros(1, 1, 2, 24, dtype=torch.float64)
    impulse[..., 12] = 1  # a bright column: constant along H, so each output row is the 1D response
    down = bicubic_downsample(impulse, 2)[0, 0, 0]
    expected = [keys_cubic(((j + 0.5) * 2 - 0.5 - 12) / 2) / 2 for j in range(12)]
    assert_close(down, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
