"""DiffAugment's ops against values computed by hand, its gradients, and the parameters it draws."""

import dataclasses

import pytest
import torch
from torch.testing import assert_close

from gansuite.augment import diffaugment as da
from gansuite.augment.diffaugment import AugmentParams, apply, diff_augment, draw

EXACT = {"rtol": 0.0, "atol": 0.0}

# One 2-channel 2x2 image: channel 0 over channel 1, rows top to bottom.
C0 = [[1.0, -1.0], [0.5, 0.0]]
C1 = [[-1.0, -1.0], [0.5, 1.0]]
IMAGE = torch.tensor([[C0, C1]])  # 1 x 2 x 2 x 2; its mean over all 8 values is 0
# 1..16, so the zeros that move in cannot be mistaken for a pixel.
GRID = torch.arange(1.0, 17.0).view(1, 1, 4, 4)


def grid_with(zeroed: list[tuple[int, int]]) -> torch.Tensor:
    expected = GRID.clone()
    for i, j in zeroed:
        expected[0, 0, i, j] = 0
    return expected


def params_equal(a: AugmentParams, b: AugmentParams) -> bool:
    if a.policy != b.policy:
        return False
    return all(
        torch.equal(getattr(a, f.name), getattr(b, f.name))
        for f in dataclasses.fields(a)
        if f.name != "policy" and getattr(a, f.name) is not None
    )


def fixed_params(batch: int = 2) -> AugmentParams:
    """Every op's parameters, none of them the identity."""
    return AugmentParams(
        policy=("color", "translation", "cutout"),
        brightness=torch.tensor([0.3, -0.2])[:batch],
        saturation=torch.tensor([0.5, 1.7])[:batch],
        contrast=torch.tensor([1.25, 0.75])[:batch],
        shift=torch.tensor([[1, -1], [0, 2]])[:batch],
        cutout=torch.tensor([[-1, 2, 1, 4], [1, 0, 3, 2]])[:batch],
    )


# ----------------------------------------------------------------------------- color, by hand
def test_brightness_adds_exactly_the_drawn_offset():
    x = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    params = draw("color", x, torch.Generator().manual_seed(1))
    out = da.brightness(x, params.brightness)
    for i in range(2):
        assert_close(out[i], x[i] + params.brightness[i], **EXACT)
    assert not torch.equal(out, x)


def test_saturation_scales_each_pixels_deviation_from_its_mean_over_the_channels():
    x = torch.cat([IMAGE, IMAGE])
    out = da.saturation(x, torch.tensor([0.5, 0.0]))
    # Per-pixel means over the channels: [[0, -1], [0.5, 0.5]]; deviations of channel 0: [[1, 0], [0, -0.5]].
    half = torch.tensor([[[0.5, -1.0], [0.5, 0.25]], [[-0.5, -1.0], [0.5, 0.75]]])
    grey = torch.tensor([[[0.0, -1.0], [0.5, 0.5]], [[0.0, -1.0], [0.5, 0.5]]])
    assert_close(out, torch.stack([half, grey]))


def test_contrast_scales_the_deviation_from_the_samples_mean():
    x = torch.cat([IMAGE, IMAGE + 1])  # sample means 0 and 1
    out = da.contrast(x, torch.tensor([1.5, 0.5]))
    first = torch.tensor([[[1.5, -1.5], [0.75, 0.0]], [[-1.5, -1.5], [0.75, 1.5]]])  # 1.5 x
    second = torch.tensor([[[1.5, 0.5], [1.25, 1.0]], [[0.5, 0.5], [1.25, 1.5]]])  # 1 + 0.5 x
    assert_close(out, torch.stack([first, second]))


def test_color_is_brightness_then_saturation_then_contrast():
    x = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    p = fixed_params()
    expected = da.contrast(da.saturation(x + p.brightness.view(2, 1, 1, 1), p.saturation), p.contrast)
    assert_close(apply(x, dataclasses.replace(p, policy=("color",))), expected)


# ----------------------------------------------------------------------------- translation and cutout, by hand
def test_translation_moves_pixels_and_shifts_zeros_in():
    x = torch.cat([GRID, GRID])
    out = da.translate(x, torch.tensor([[1, 0], [0, -1]]))  # one row down; one column left
    down = [[0, 0, 0, 0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    left = [[2, 3, 4, 0], [6, 7, 8, 0], [10, 11, 12, 0], [14, 15, 16, 0]]
    assert_close(out, torch.tensor([[down], [left]], dtype=torch.float32), **EXACT)


def test_translation_along_both_axes_and_off_the_image():
    out = da.translate(torch.cat([GRID, GRID]), torch.tensor([[-2, 3], [4, 0]]))
    expected = torch.zeros(2, 1, 4, 4)
    expected[0, 0, :2, 3] = torch.tensor([9.0, 13.0])  # x[i + 2, j - 3]: only column 0 of rows 2, 3 stays
    assert_close(out, expected, **EXACT)


def test_cutout_zeroes_exactly_the_square():
    box = torch.tensor([[1, 1, 3, 3]])  # rows 1-2, columns 1-2
    assert_close(da.cut_out(GRID, box), grid_with([(1, 1), (1, 2), (2, 1), (2, 2)]), **EXACT)


@pytest.mark.parametrize(
    ("box", "zeroed"),
    [
        ((-1, -1, 1, 1), [(0, 0)]),  # a 2x2 square centred on the top-left corner
        ((3, 2, 5, 4), [(3, 2), (3, 3)]),  # one sticking out at the bottom
        ((2, 3, 4, 5), [(2, 3), (3, 3)]),  # and at the right
    ],
)
def test_cutout_is_clipped_at_the_borders(box, zeroed):
    assert_close(da.cut_out(GRID, torch.tensor([box])), grid_with(zeroed), **EXACT)


def test_cutout_acts_per_sample_and_on_every_channel():
    x = torch.ones(2, 3, 4, 4)
    out = da.cut_out(x, torch.tensor([[0, 0, 2, 2], [2, 2, 4, 4]]))
    assert torch.equal(out[0, :, :2, :2], torch.zeros(3, 2, 2))
    assert torch.equal(out[1, :, 2:, 2:], torch.zeros(3, 2, 2))
    assert out.sum() == 2 * 3 * (16 - 4)


# ----------------------------------------------------------------------------- shapes, dtypes, gradients
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_shape_and_dtype_are_kept(dtype):
    x = torch.rand(3, 3, 8, 6, dtype=dtype) * 2 - 1
    out = diff_augment(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype


def test_dtype_is_kept_under_autocast():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert diff_augment(x).dtype == torch.float32
        assert diff_augment(x.bfloat16()).dtype == torch.bfloat16


def test_gradcheck_through_the_whole_chain():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p = fixed_params()
    assert torch.autograd.gradcheck(lambda images: apply(images, p), (x.requires_grad_(),))


def test_no_value_is_read_back_to_the_host():
    """Meta tensors have no values: any .item(), bool() or .tolist() on them would raise."""
    x = torch.empty(4, 3, 16, 16, device="meta", dtype=torch.float16)
    out = diff_augment(x)
    assert out.device.type == "meta" and out.shape == x.shape and out.dtype == x.dtype


# ----------------------------------------------------------------------------- sharing and seeding
def test_shared_parameters_move_two_batches_identically():
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(8, 3, 16, 16, generator=gen) + 0.5  # no zeros of its own
    fake = real**3
    p = draw("translation,cutout", real, torch.Generator().manual_seed(1))
    # Moving and zeroing pixels commutes with cubing them: equal only if both went the same way.
    assert_close(apply(fake, p), apply(real, p) ** 3)
    own = draw("translation,cutout", fake, torch.Generator().manual_seed(2))
    assert not torch.equal(apply(fake, own), apply(real, p) ** 3)


def test_shared_color_parameters_give_the_same_offsets():
    real = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    p = draw("color", real, torch.Generator().manual_seed(1))
    # Brightness, saturation and contrast all carry a constant offset of the input through unchanged.
    assert_close(apply(real + 0.25, p), apply(real, p) + 0.25)


def test_same_seed_same_parameters_other_seed_others():
    x = torch.empty(16, 3, 32, 32)
    a = draw("color,translation,cutout", x, torch.Generator().manual_seed(7))
    b = draw("color,translation,cutout", x, torch.Generator().manual_seed(7))
    c = draw("color,translation,cutout", x, torch.Generator().manual_seed(8))
    assert params_equal(a, b)
    assert not params_equal(a, c)
    for name in ("brightness", "saturation", "contrast", "shift", "cutout"):
        assert not torch.equal(getattr(a, name), getattr(c, name)), name


def test_global_rng_when_no_generator():
    x = torch.empty(16, 3, 32, 32)
    torch.manual_seed(3)
    a = draw("color,translation,cutout", x)
    torch.manual_seed(3)
    assert params_equal(a, draw("color,translation,cutout", x))


# ----------------------------------------------------------------------------- ranges
N = 4096


def test_translation_shifts_cover_exactly_minus_r_to_r():
    x = torch.empty(N, 3, 32, 20)  # r = round(32 / 8) = 4 rows, round(20 / 8) = round(2.5) = 3 columns
    shift = draw("translation", x, torch.Generator().manual_seed(0)).shift
    assert shift.dtype == torch.int64 and shift.shape == (N, 2)
    assert set(shift[:, 0].tolist()) == set(range(-4, 5))
    assert set(shift[:, 1].tolist()) == set(range(-3, 4))


def test_color_parameters_lie_in_their_ranges():
    p = draw("color", torch.empty(N, 3, 8, 8), torch.Generator().manual_seed(0))
    for values, low, high in ((p.brightness, -0.5, 0.5), (p.saturation, 0.0, 2.0), (p.contrast, 0.5, 1.5)):
        assert values.dtype == torch.float32
        assert low <= values.min() < low + 0.01 and high - 0.01 < values.max() <= high
    assert p.brightness.max() < 0.5


@pytest.mark.parametrize(("size", "side"), [(32, 16), (28, 14), (6, 3)])
def test_cutout_square_has_side_half_the_size_and_stays_half_inside(size, side):
    box = draw("cutout", torch.empty(N, 1, size, size), torch.Generator().manual_seed(0)).cutout
    assert torch.equal(box[:, 2:] - box[:, :2], torch.full((N, 2), side))
    centre = box[:, :2] + side // 2  # a pixel for odd sides, a pixel corner for even ones
    for axis in (0, 1):
        assert set(centre[:, axis].tolist()) == set(range(size + 1 - side % 2))


# ----------------------------------------------------------------------------- policies
def test_policies_apply_in_the_order_named_and_empty_is_the_identity():
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    p = fixed_params()
    one = apply(x, dataclasses.replace(p, policy=("cutout", "color")))
    assert_close(one, apply(da.cut_out(x, p.cutout), dataclasses.replace(p, policy=("color",))))
    assert diff_augment(x, policy="") is x
    assert draw(" color , cutout ", x).policy == ("color", "cutout")


def test_unknown_policy_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'colour'.*color, translation, cutout"):
        diff_augment(torch.zeros(1, 3, 4, 4), policy="colour,cutout")
    with pytest.raises(ValueError, match="twice"):
        draw("cutout,cutout", torch.zeros(1, 3, 4, 4))


def test_missing_parameters_and_a_generator_on_another_device_are_refused():
    with pytest.raises(ValueError, match="shift"):
        AugmentParams(policy=("translation",))
    with pytest.raises(ValueError, match="generator"):
        draw("color", torch.empty(2, 3, 4, 4, device="meta"), torch.Generator().manual_seed(0))
