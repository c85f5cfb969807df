"""ADA's bgc pipeline: its matrices against values computed by hand, resampling against torch's own flips
and turns, the probabilities and distributions it draws, gradients, and no reads back to the host."""

import math

import pytest
import torch
from torch.testing import assert_close

from gansuite.augment import ada
from gansuite.augment.ada import AdaParams, ada_augment, apply, draw

EXACT = {"rtol": 0.0, "atol": 0.0}
PIXEL = {"rtol": 0.0, "atol": 1e-5}  # float error of resampling at pixel centres
ROOT3 = math.sqrt(3)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def image(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def geometric(matrix: torch.Tensor) -> AdaParams:
    return AdaParams(geometric=matrix)


def params_equal(a: AdaParams, b: AdaParams) -> bool:
    return torch.equal(a.geometric, b.geometric) and torch.equal(a.color, b.color)


# ----------------------------------------------------------------------------- the identity
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("p", [0.0, torch.tensor(0.0)])
def test_p_zero_leaves_images_unchanged(channels, p):
    x = image(4, channels, 8, 6)
    params = draw(x, p, torch.Generator().manual_seed(0))
    assert torch.equal(params.geometric, torch.eye(3).expand(4, 3, 3))
    assert torch.equal(params.color, torch.eye(4).expand(4, 4, 4))
    assert_close(apply(x, params), x, **PIXEL)


def test_no_ops_is_no_augmentation():
    x = image(2, 3, 4, 4)
    params = draw(x, 1.0, ops="")
    assert params.geometric is None and params.color is None
    assert ada_augment(x, 1.0, ops="") is x


# ----------------------------------------------------------------------------- resampling, by hand
@pytest.mark.parametrize("size", [4, 5])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_quarter_turns_equal_torch_rot90(size, k):
    x = image(2, 3, size, size)
    out = apply(x, geometric(ada.quarter_turn_matrix(t(k, k))))
    assert_close(out, torch.rot90(x, k, dims=(2, 3)), **PIXEL)


def test_a_rotation_by_a_float_right_angle_equals_torch_rot90():
    x = image(1, 3, 4, 4)
    assert_close(apply(x, geometric(ada.rotation_matrix(t(math.pi / 2)))), torch.rot90(x, 1, (2, 3)), **PIXEL)


def test_xflip_equals_torch_flip_on_a_non_square_image():
    x = image(2, 3, 4, 6)
    out = apply(x, geometric(ada.scale_matrix(t(-1, -1), t(1, 1))))
    assert_close(out, torch.flip(x, dims=(3,)), **PIXEL)


def test_flip_then_turn_composes_as_ada_does():
    """ADA multiplies each op's inverse on the right, so the first op is the first the image undergoes."""
    x = image(1, 3, 4, 4)
    matrix = ada.scale_matrix(t(-1), t(1)) @ ada.quarter_turn_matrix(t(1))
    assert_close(apply(x, geometric(matrix)), torch.rot90(torch.flip(x, (3,)), 1, (2, 3)), **PIXEL)


def test_integer_translation_moves_pixels_and_reflects_about_the_border():
    x = torch.arange(1.0, 1 + 5 * 6).view(1, 1, 5, 6)
    # Content two pixels right and one up: each output pixel samples the input 2 left and 1 down of it.
    out = apply(x, geometric(ada.translation_matrix(t(-2), t(1))))
    assert_close(out[0, 0, :4, 2:], x[0, 0, 1:, :4], **PIXEL)
    # Reflection about the image's edge: one pixel outside is the edge pixel, two outside its neighbour.
    assert_close(out[0, 0, :4, 1], x[0, 0, 1:, 0], **PIXEL)
    assert_close(out[0, 0, :4, 0], x[0, 0, 1:, 1], **PIXEL)
    assert_close(out[0, 0, 4, 2:], x[0, 0, 4, :4], **PIXEL)


@pytest.mark.parametrize(
    "matrix",
    [
        ada.scale_matrix(t(0.5), t(0.5)),  # zoom in 2x
        ada.scale_matrix(t(1 / 1.3), t(1.3)),  # anisotropic
        ada.rotation_matrix(t(0.1)),
        ada.translation_matrix(t(0.25), t(-0.4)),  # fractional
    ],
)
def test_transforms_of_a_linear_ramp_are_the_ramp_at_the_sampled_positions(matrix):
    """Bilinear sampling reproduces a linear image exactly, so every inner pixel holds a x_in + b y_in."""
    h, w = 8, 8
    rows, cols = torch.meshgrid(torch.arange(h) - 3.5, torch.arange(w) - 3.5, indexing="ij")
    ramp = (0.1 * cols - 0.05 * rows).view(1, 1, h, w)
    out = apply(ramp, geometric(matrix))
    m = matrix[0]
    x_in = m[0, 0] * cols + m[0, 1] * rows + m[0, 2]
    y_in = m[1, 0] * cols + m[1, 1] * rows + m[1, 2]
    inner = slice(1, -1)  # every sampled position of the inner 6x6 lies inside the image
    assert x_in[inner, inner].abs().max() < 3.5 and y_in[inner, inner].abs().max() < 3.5
    assert_close(out[0, 0, inner, inner], (0.1 * x_in - 0.05 * y_in)[inner, inner], **PIXEL)


# ----------------------------------------------------------------------------- color matrices, by hand
def test_brightness_and_contrast_matrices():
    assert_close(
        ada.brightness_matrix(t(0.3))[0],
        torch.tensor([[1, 0, 0, 0.3], [0, 1, 0, 0.3], [0, 0, 1, 0.3], [0, 0, 0, 1]]),
        **EXACT,
    )
    assert_close(ada.contrast_matrix(t(1.5))[0], torch.diag(t(1.5, 1.5, 1.5, 1)), **EXACT)


def test_lumaflip_negates_the_luma_axis_and_keeps_the_colors_orthogonal_to_it():
    m = ada.lumaflip_matrix(t(1, 0))
    third = 1 / 3
    hand = torch.tensor([[third, -2 * third, -2 * third, 0], [-2 * third, third, -2 * third, 0],
                         [-2 * third, -2 * third, third, 0], [0, 0, 0, 1]])
    assert_close(m[0], hand)
    assert_close(m[0] @ t(1, 1, 1, 0), t(-1, -1, -1, 0))
    assert_close(m[0] @ t(0.5, -0.5, 0, 1), t(0.5, -0.5, 0, 1))
    assert_close(m[0] @ t(1, 1, -2, 0), t(1, 1, -2, 0))
    assert_close(m[1], torch.eye(4), **EXACT)


def test_hue_rotation_of_pure_red():
    red = t(1, 0, 0, 1)
    quarter = ada.hue_matrix(t(math.pi / 2))[0] @ red
    # Rodrigues by hand: (v x r) sin + v (v . r)(1 - cos) with v = (1, 1, 1) / sqrt 3, r = red.
    assert_close(quarter, t(1 / 3, 1 / 3 + 1 / ROOT3, 1 / 3 - 1 / ROOT3, 1))
    assert_close(ada.hue_matrix(t(2 * math.pi / 3))[0] @ red, t(0, 1, 0, 1))  # a third of a turn: green
    assert_close(ada.hue_matrix(t(-2 * math.pi / 3))[0] @ red, t(0, 0, 1, 1))  # and back: blue
    assert_close(ada.hue_matrix(t(1.2))[0] @ t(0.3, 0.3, 0.3, 1), t(0.3, 0.3, 0.3, 1))  # grey stays


def test_saturation_zero_is_the_grey_of_the_same_luma():
    m = ada.saturation_matrix(t(0, 1, 2))
    third = 1 / 3
    assert_close(m[0], torch.tensor([[third] * 3 + [0]] * 3 + [[0, 0, 0, 1]]))
    assert_close(m[0] @ t(1, -1, 0.5, 1), t(1 / 6, 1 / 6, 1 / 6, 1))
    assert_close(m[1], torch.eye(4))
    # s = 2: the mean kept, each deviation from it doubled.
    assert_close(m[2] @ t(1, -1, 0.5, 1), t(1 / 6 + 2 * 5 / 6, 1 / 6 - 2 * 7 / 6, 1 / 6 + 2 * 2 / 6, 1))


def test_color_matrices_act_on_every_pixel():
    x = image(2, 3, 2, 3)
    matrix = torch.stack([ada.hue_matrix(t(0.7))[0] @ ada.brightness_matrix(t(0.2))[0], torch.eye(4)])
    out = apply(x, AdaParams(color=matrix))
    pixels = torch.cat([x[0].reshape(3, -1), torch.ones(1, 6)])  # 4 x 6 homogeneous colors
    assert_close(out[0].reshape(3, -1), (matrix[0] @ pixels)[:3])
    assert_close(out[1], x[1], **EXACT)


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        (ada.brightness_matrix(t(0.25)), lambda x: x + 0.25),
        (ada.contrast_matrix(t(1.5)), lambda x: 1.5 * x),
        (ada.lumaflip_matrix(t(1)), lambda x: -x),
        (ada.hue_matrix(t(1.0)), lambda x: x),  # grey lies on the luma axis: nothing to rotate
        (ada.saturation_matrix(t(0.2)), lambda x: x),  # and nothing to desaturate
    ],
)
def test_grey_images_take_the_mean_of_the_rows(matrix, expected):
    x = image(1, 1, 3, 3)
    assert_close(apply(x, AdaParams(color=matrix)), expected(x), rtol=0.0, atol=1e-6)


def test_grey_images_draw_no_hue_or_saturation():
    """As ADA: the color matrix of a grey batch is the one of an RGB batch without hue and saturation."""
    gray = draw(torch.empty(6, 1, 4, 4), 1.0, torch.Generator().manual_seed(0), ops="c")
    rgb = draw(torch.empty(6, 3, 4, 4), 1.0, torch.Generator().manual_seed(0), ops=ada.COLOR[:3])
    assert torch.equal(gray.color, rgb.color)


# ----------------------------------------------------------------------------- what draw composes
def test_draw_composes_adas_ops_in_adas_order():
    """Replays the random numbers in ADA's order (each op's value, then whether it is on) and builds the
    matrices independently: G = flip rot90 xint scale rotate aniso rotate xfrac (each an inverse), and
    C = saturation hue lumaflip contrast brightness."""
    n, h, w = 5, 16, 12
    got = draw(torch.empty(n, 3, h, w), 1.0, torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(4)

    def uniform(*shape):
        return torch.rand(n, *shape, generator=gen).double()

    def normal(*shape):
        return torch.randn(n, *shape, generator=gen).double()

    def value_then_gate(value, *gate_shape):
        uniform(*gate_shape)  # p = 1: every op on
        return value

    flip = value_then_gate(torch.floor(uniform() * 2))
    k = value_then_gate(torch.floor(uniform() * 4))
    shift = value_then_gate((uniform(2) * 2 - 1) * 0.125, 1)
    scale = value_then_gate(torch.exp2(normal() * 0.2))
    pre = value_then_gate((uniform() * 2 - 1) * math.pi)
    aniso = value_then_gate(torch.exp2(normal() * 0.2))
    post = value_then_gate((uniform() * 2 - 1) * math.pi)
    frac = value_then_gate(normal(2) * 0.125, 1)
    bright = value_then_gate(normal() * 0.2)
    contrast = value_then_gate(torch.exp2(normal() * 0.5))
    lumaflip = value_then_gate(torch.floor(uniform() * 2))
    hue = value_then_gate((uniform() * 2 - 1) * math.pi)
    sat = value_then_gate(torch.exp2(normal() * 1.0))

    def m3(rows):
        return torch.tensor(rows, dtype=torch.float64)

    def rot(a):
        return m3([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])

    v = torch.tensor([1, 1, 1, 0], dtype=torch.float64) / ROOT3
    vv, eye4 = torch.outer(v, v), torch.eye(4, dtype=torch.float64)
    cross = torch.zeros(4, 4, dtype=torch.float64)
    cross[:3, :3] = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / ROOT3  # [v]x
    for i in range(n):
        tx, ty = round(float(shift[i, 0]) * w), round(float(shift[i, 1]) * h)
        s, a = float(scale[i]), float(aniso[i])
        g = m3([[1 - 2 * float(flip[i]), 0, 0], [0, 1, 0], [0, 0, 1]]) @ rot(float(k[i]) * math.pi / 2)
        g = g @ m3([[1, 0, -tx], [0, 1, -ty], [0, 0, 1]])
        g = g @ m3([[1 / s, 0, 0], [0, 1 / s, 0], [0, 0, 1]]) @ rot(float(pre[i]))
        g = g @ m3([[1 / a, 0, 0], [0, a, 0], [0, 0, 1]]) @ rot(float(post[i]))
        g = g @ m3([[1, 0, -float(frac[i, 0]) * w], [0, 1, -float(frac[i, 1]) * h], [0, 0, 1]])
        assert_close(got.geometric[i].double(), g, rtol=0.0, atol=1e-5)

        c = eye4.clone()
        c[:3, 3] = bright[i]
        c = torch.diag(torch.tensor([contrast[i], contrast[i], contrast[i], 1.0])).double() @ c
        c = (eye4 - 2 * vv * lumaflip[i]) @ c
        angle = float(hue[i])
        hue_rot = eye4 * math.cos(angle) + cross * math.sin(angle) + vv * (1 - math.cos(angle))
        hue_rot[3, 3] = 1
        c = hue_rot @ c
        saturate = vv + (eye4 - vv) * sat[i]
        saturate[3, 3] = 1
        c = saturate @ c
        assert_close(got.color[i].double(), c, rtol=0.0, atol=1e-5)


# ----------------------------------------------------------------------------- probabilities, distributions
N = 20_000
P = 0.3


def _off_identity(matrix: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(matrix.shape[-1])
    return (matrix - eye).abs().amax(dim=(1, 2)) > 1e-6


@pytest.mark.parametrize(
    ("op", "changed"),
    [
        ("xflip", P / 2),  # on with p, then a coin decides whether to flip
        ("rotate90", P * 3 / 4),  # on with p, then k = 0 a quarter of the time
        ("xint", P * 15 / 16),  # 16 px: uniform in [-2, 2) rounded, so 0 along an axis 1/4 of the time
        ("scale", P),
        ("rotate", P),  # pre- and post-rotation, each on with 1 - sqrt(1 - p)
        ("aniso", P),
        ("xfrac", P),
        ("brightness", P),
        ("contrast", P),
        ("lumaflip", P / 2),
        ("hue", P),
        ("saturation", P),
    ],
)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_each_op_is_on_with_probability_p(op, changed, as_tensor):
    p = torch.tensor(P) if as_tensor else P
    params = draw(torch.empty(N, 3, 16, 16), p, torch.Generator().manual_seed(1), ops=op)
    matrix = params.color if op in ada.COLOR else params.geometric
    assert (params.geometric is None) == (op in ada.COLOR) and (params.color is None) == (op not in ada.COLOR)
    assert abs(_off_identity(matrix).double().mean().item() - changed) < 0.02


def test_tensor_and_float_p_draw_the_same():
    x = torch.empty(64, 3, 8, 8)
    a = draw(x, 0.6, torch.Generator().manual_seed(3))
    b = draw(x, torch.tensor(0.6, dtype=torch.float64), torch.Generator().manual_seed(3))
    assert params_equal(a, b)


def _log2_std(values: torch.Tensor) -> float:
    return torch.log2(values).std().item()


def test_distributions_at_p_one():
    size = 16
    gen = torch.Generator().manual_seed(2)
    x = torch.empty(N, 3, size, size)

    def one(op: str) -> torch.Tensor:
        params = draw(x, 1.0, gen, ops=op)
        return params.color if op in ada.COLOR else params.geometric

    flips = one("xflip")[:, 0, 0]
    assert set(flips.tolist()) == {-1.0, 1.0} and abs((flips < 0).double().mean().item() - 0.5) < 0.02
    quarter = one("rotate90")
    turns = torch.round(torch.atan2(quarter[:, 1, 0], quarter[:, 0, 0]) / (math.pi / 2)) % 4
    for k in range(4):
        assert abs((turns == k).double().mean().item() - 0.25) < 0.02
    shifts = one("xint")[:, :2, 2]
    assert set(shifts.flatten().tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}  # 0.125 of 16 px
    scale = one("scale")
    assert torch.equal(scale[:, 0, 0], scale[:, 1, 1]) and abs(_log2_std(scale[:, 0, 0]) - 0.2) < 0.01
    aniso = one("aniso")
    assert_close(aniso[:, 0, 0] * aniso[:, 1, 1], torch.ones(N))
    assert abs(_log2_std(aniso[:, 1, 1]) - 0.2) < 0.01
    rotate = one("rotate")  # the sum of two uniform angles, uniform again around the circle
    angle = torch.atan2(rotate[:, 1, 0], rotate[:, 0, 0])
    assert_close(rotate[:, :2, :2] @ rotate[:, :2, :2].transpose(1, 2), torch.eye(2).expand(N, 2, 2))
    assert abs(angle.std().item() - math.pi / ROOT3) < 0.05
    frac = one("xfrac")[:, :2, 2]
    assert abs(frac.std().item() - 0.125 * size) < 0.05 and frac.mean().abs().item() < 0.05
    assert abs(one("brightness")[:, 0, 3].std().item() - 0.2) < 0.005
    assert abs(_log2_std(one("contrast")[:, 0, 0]) - 0.5) < 0.01
    hue = one("hue")
    # The trace of the 3x3 block is 1 + 2 cos, and the antisymmetric part 2 sin / sqrt 3 (Rodrigues).
    cos = (hue[:, :3, :3].diagonal(dim1=1, dim2=2).sum(1) - 1) / 2
    hue_angle = torch.atan2(ROOT3 * (hue[:, 1, 0] - hue[:, 0, 1]) / 2, cos)
    assert hue_angle.abs().max().item() > 3.1 and abs(hue_angle.std().item() - math.pi / ROOT3) < 0.05
    saturation = (3 * one("saturation")[:, 0, 0] - 1) / 2  # the diagonal is (1 + 2 s) / 3
    assert abs(_log2_std(saturation) - 1.0) < 0.02


# ----------------------------------------------------------------------------- seeding
def test_same_seed_same_parameters_other_seed_others():
    x = torch.empty(16, 3, 8, 8)
    a = draw(x, 0.5, torch.Generator().manual_seed(7))
    b = draw(x, 0.5, torch.Generator().manual_seed(7))
    c = draw(x, 0.5, torch.Generator().manual_seed(8))
    assert params_equal(a, b)
    assert not torch.equal(a.geometric, c.geometric) and not torch.equal(a.color, c.color)


def test_global_rng_when_no_generator():
    x = torch.empty(16, 3, 8, 8)
    torch.manual_seed(3)
    a = draw(x, 0.5)
    torch.manual_seed(3)
    assert params_equal(a, draw(x, 0.5))


# ----------------------------------------------------------------------------- shapes, dtypes, gradients
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_and_dtype_are_kept(dtype, channels):
    x = image(3, channels, 8, 6).to(dtype)
    out = ada_augment(x, 0.8, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype


def test_autocast_changes_nothing():
    """Autocast would compose the matrices and build the grid in bfloat16; both stay float32."""
    x = image(4, 3, 8, 8)
    expected = ada_augment(x, 1.0, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_close(ada_augment(x, 1.0, torch.Generator().manual_seed(0)), expected, **EXACT)
        assert ada_augment(x.bfloat16(), 1.0).dtype == torch.bfloat16


def test_gradcheck_through_both_stages():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = ada.rotation_matrix(t(0.3, -1.1)) @ ada.scale_matrix(t(0.8, 1.2), t(1.1, 0.9))
    g = g @ ada.translation_matrix(t(0.4, -0.7), t(0.2, 1.3))
    c = ada.saturation_matrix(t(0.5, 1.7)) @ ada.hue_matrix(t(0.9, -2.0))
    c = c @ ada.brightness_matrix(t(0.1, -0.3))
    params = AdaParams(geometric=g, color=c)
    assert torch.autograd.gradcheck(lambda images: apply(images, params), (x.requires_grad_(),))


# ----------------------------------------------------------------------------- no reads back to the host
def test_no_value_is_read_back_on_meta_tensors():
    """Meta tensors have no values: any .item(), bool() or .tolist() on them would raise."""
    for channels in (1, 3):
        x = torch.empty(4, channels, 16, 16, device="meta", dtype=torch.float16)
        out = ada_augment(x, torch.tensor(0.4, device="meta"))
        assert out.device.type == "meta" and out.shape == x.shape and out.dtype == x.dtype


def test_no_value_is_read_back_on_the_cpu(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read back to the host")

    x = image(4, 3, 8, 8)
    p = torch.tensor(0.5)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    out = apply(x, draw(x, p))
    monkeypatch.undo()
    assert out.shape == x.shape


# ----------------------------------------------------------------------------- ops and refusals
def test_ops_select_by_letters_groups_and_names_in_adas_order():
    assert ada.parse_ops("bgc") == ada.OPS
    assert ada.parse_ops("gb") == ada.BLIT + ada.GEOM
    assert ada.parse_ops("saturation, b") == ada.BLIT + ("saturation",)
    assert ada.parse_ops(["hue", "geom"]) == ada.GEOM + ("hue",)
    params = draw(torch.empty(2, 3, 4, 4), 1.0, ops="xflip")
    assert params.color is None and params.geometric.shape == (2, 3, 3)


def test_refusals_name_what_is_allowed():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"'colour'.*xflip"):
        draw(x, 0.5, ops="b,colour")
    with pytest.raises(ValueError, match="3 channels"):
        draw(torch.zeros(2, 2, 4, 4), 0.5)
    draw(torch.zeros(2, 2, 4, 4), 0.5, ops="bg")  # geometry alone takes any channels
    with pytest.raises(ValueError, match="0-dim"):
        draw(x, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="at least 0"):
        draw(x, -0.1)
    with pytest.raises(ValueError, match="meta"):
        draw(x, torch.tensor(0.5, device="meta"))
    with pytest.raises(ValueError, match="generator"):
        draw(torch.empty(2, 3, 4, 4, device="meta"), 0.5, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="B x 3 x 3"):
        AdaParams(geometric=torch.eye(4).expand(2, 4, 4))
