"""ADA (Karras, Aittala, Hellsten, Laine, Lehtinen & Aila 2020): ``bgc`` augmentation of every image D sees.

Adaptive discriminator augmentation shows D only augmented images, reals and fakes alike, each op applied
to each sample with probability ``p``; training raises or lowers ``p`` by how much D overfits. The ops of
the paper's ``bgc`` pipeline, with the strengths of NVlabs' stylegan2-ada-pytorch (``training/augment.py``),
in the order ADA applies them:

- blit: ``xflip`` (x-flip), ``rotate90`` (k quarter turns, k uniform in 0..3), ``xint`` (integer
  translation, uniform up to 0.125 of the size along each axis, rounded to whole pixels);
- geom: ``scale`` (isotropic, 2^N(0, 0.2²)), ``rotate`` (uniform in [-pi, pi], once before and once after
  ``aniso``, each with probability ``1 - sqrt(1 - p)`` so that at least one happens with probability p),
  ``aniso`` (x by s, y by 1/s, s = 2^N(0, 0.2²)), ``xfrac`` (translation, N(0, 0.125²) of the size);
- color: ``brightness`` (N(0, 0.2²) added), ``contrast`` (times 2^N(0, 0.5²)), ``lumaflip`` (Householder
  reflection about the luma axis (1, 1, 1) / sqrt(3)), ``hue`` (rotation about that axis, uniform in
  [-pi, pi]), ``saturation`` (the part orthogonal to that axis times 2^N(0, 1)).

As in ADA, an op that is "on" for a sample still draws its value, so ``xflip`` and ``lumaflip`` flip half
the samples they are on for (p / 2 in all) and ``rotate90`` turns three quarters of them (3 p / 4). ``p``
is the overall multiplier; every op's own multiplier is ADA's default of 1, and ``ops`` picks which ops
run at all (a multiplier of 0 for the rest). The random numbers are drawn op by op in ADA's order, the
op's value first and then whether it is on, with the shapes ADA uses.

Geometric ops compose one 3x3 homogeneous matrix per sample, color ops one 4x4 matrix per sample, as in
ADA. The geometric matrix maps each *output* pixel to the *input* position it samples (the inverse of what
the image undergoes), in pixels from the image centre, x to the right and y down; the color matrix maps an
input (r, g, b, 1) to the output color. A grey (1-channel) image is treated as ADA treats it: the mean of
the matrix's three rows is applied, so brightness adds, contrast scales, lumaflip negates (x -> -x), and
hue and saturation, which leave the luma axis where it is, would do nothing: they are not drawn at all.

Resampling differs from ADA, so results are *not* bit-identical to NVlabs': ADA pads by reflection, upsamples
2x with a sym6 wavelet filter, samples bilinearly and downsamples, to keep rotations and zooms from
aliasing; here the matrix goes to ``F.affine_grid`` and ``F.grid_sample`` (bilinear, reflection padding,
``align_corners=False``) at the image's own resolution. That needs no custom ops (NVlabs' upfirdn2d and
grid-sample gradient fix), is differentiable through PyTorch's own ``grid_sample``, and is much simpler; the
price is more aliasing when a sample is shrunk and some blur at fractional positions. The reflection is
about the image's border, so the pixel one step outside is the edge pixel itself (ADA's ``reflect`` padding
mirrors about the edge pixel's centre and takes its neighbour). ``align_corners=False`` puts pixel centres at
``j - (size - 1) / 2`` from the centre, so flips, quarter turns (of square images) and whole-pixel shifts land
on pixel centres and copy pixels exactly, and an all-off sample comes back unchanged up to float error.
Resampling is done in float32 (float64 for float64 images): half-precision grid coordinates would place
samples up to a tenth of a pixel off at 256 px.

Images are in [-1, 1], as in gansuite and in ADA, so contrast scales about mid-grey 0 and lumaflip mirrors
through it. Nothing is clamped. ``p`` is a 0-dim tensor on the images' device (ADA adapts it on the device);
nothing here reads it or any other tensor back to the host: every "is this op on" is a ``torch.where`` on
per-sample draws, and both stages always run for the ops named, whatever was drawn.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

BLIT = ("xflip", "rotate90", "xint")
GEOM = ("scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
OPS = BLIT + GEOM + COLOR  # ADA's order, which is always the order applied
GROUPS = {"blit": BLIT, "geom": GEOM, "color": COLOR}
LETTERS = {"b": "blit", "g": "geom", "c": "color"}
DEFAULT_OPS = "bgc"

# ADA's default strengths (stylegan2-ada-pytorch's AugmentPipe arguments).
XINT_MAX = 0.125  # the largest integer translation, as a fraction of the size
SCALE_STD = 0.2  # of log2 of the isotropic scale
ROTATE_MAX = math.pi  # the largest rotation angle
ANISO_STD = 0.2  # of log2 of the anisotropic scale
XFRAC_STD = 0.125  # of the fractional translation, as a fraction of the size
BRIGHTNESS_STD = 0.2  # of the offset added
CONTRAST_STD = 0.5  # of log2 of the contrast factor
HUE_MAX = math.pi  # the largest hue rotation angle
SATURATION_STD = 1.0  # of log2 of the saturation factor


@dataclass(frozen=True, eq=False)
class AdaParams:
    """The random parameters of one batch: one matrix per sample and stage, on the images' device.

    Args:
        geometric: ``B x 3 x 3`` float32, each output pixel's (x, y, 1) to the input position it samples, in
            pixels from the image centre; ``None`` when no geometric op was named (the stage is skipped).
        color: ``B x 4 x 4`` float32, an input (r, g, b, 1) to the output color; ``None`` when no color op
            was named.
    """

    geometric: Tensor | None = None
    color: Tensor | None = None

    def __post_init__(self) -> None:
        for name, size in (("geometric", 3), ("color", 4)):
            matrix = getattr(self, name)
            if matrix is not None and (matrix.ndim != 3 or matrix.shape[1:] != (size, size)):
                raise ValueError(f"ADA's {name} matrices are B x {size} x {size}, not {tuple(matrix.shape)}")


def parse_ops(ops: str | Sequence[str]) -> tuple[str, ...]:
    """The op names that ``ops`` selects, in ADA's order.

    ``ops`` is letters of ``"bgc"`` (blit, geom, color), or comma-separated op names, group names or
    letters (``"xflip,rotate90"``, ``"blit,hue"``, ``"b,saturation"``), or a sequence of them; ``""`` is no
    augmentation. Naming an op twice, or in another order, changes nothing.
    """
    if isinstance(ops, str):
        text = ops.strip()
        names = [LETTERS[c] for c in text] if text and set(text) <= set(LETTERS) else text.split(",")
    else:
        names = list(ops)
    chosen: set[str] = set()
    for name in (LETTERS.get(n.strip(), n.strip()) for n in names):
        if name in GROUPS:
            chosen.update(GROUPS[name])
        elif name in OPS:
            chosen.add(name)
        elif name:
            raise ValueError(
                f"unknown ADA op {name!r}; the ops are {', '.join(OPS)}, the groups {', '.join(GROUPS)}, "
                f"or letters of {DEFAULT_OPS!r}"
            )
    return tuple(op for op in OPS if op in chosen)


# ----------------------------------------------------------------------------- matrices
def _matrix(rows: Sequence[Sequence[Tensor | float]], like: Tensor) -> Tensor:
    """``B x R x C`` from rows of per-sample ``B`` tensors and constants, in like's dtype and device."""
    entries = [e if isinstance(e, Tensor) else like.new_full(like.shape, e) for row in rows for e in row]
    return torch.stack(entries, dim=-1).view(*like.shape, len(rows), len(rows[0]))


def translation_matrix(tx: Tensor, ty: Tensor) -> Tensor:
    """``B x 3 x 3``: (x, y) -> (x + tx, y + ty)."""
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def scale_matrix(sx: Tensor, sy: Tensor) -> Tensor:
    """``B x 3 x 3``: (x, y) -> (sx x, sy y), about the image centre."""
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def rotation_matrix(theta: Tensor) -> Tensor:
    """``B x 3 x 3``: (x, y) rotated by theta about the image centre (x right, y down)."""
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta)


def quarter_turn_matrix(k: Tensor) -> Tensor:
    """:func:`rotation_matrix` of ``k pi / 2`` for whole ``k`` in 0..3, built exactly (cos(pi / 2) is not 0
    in floating point, and a turn that is off by 1e-8 would blend neighbouring pixels)."""
    cos = (k == 0).to(k.dtype) - (k == 2).to(k.dtype)
    sin = (k == 1).to(k.dtype) - (k == 3).to(k.dtype)
    return _matrix([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], k)


def brightness_matrix(b: Tensor) -> Tensor:
    """``B x 4 x 4``: every channel plus b."""
    return _matrix([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]], b)


def contrast_matrix(c: Tensor) -> Tensor:
    """``B x 4 x 4``: every channel times c (about 0, mid-grey on [-1, 1])."""
    return _matrix([[c, 0, 0, 0], [0, c, 0, 0], [0, 0, c, 0], [0, 0, 0, 1]], c)


def _luma_matrix(diagonal: Tensor, off: Tensor) -> Tensor:
    """``B x 4 x 4`` acting on colors as ``diagonal`` on the diagonal and ``off`` elsewhere: every matrix
    that commutes with permuting r, g, b, which is what the ops about the luma axis v = (1, 1, 1) / sqrt(3)
    are (v vᵀ is 1/3 everywhere)."""
    rows = [[diagonal, off, off, 0], [off, diagonal, off, 0], [off, off, diagonal, 0], [0, 0, 0, 1]]
    return _matrix(rows, off)


def lumaflip_matrix(flip: Tensor) -> Tensor:
    """``B x 4 x 4``: I - 2 flip v vᵀ, the Householder reflection that negates luma and keeps chroma where
    ``flip`` is 1, and the identity where it is 0."""
    return _luma_matrix(1 - 2 * flip / 3, -2 * flip / 3)


def hue_matrix(theta: Tensor) -> Tensor:
    """``B x 4 x 4``: colors rotated by theta about the luma axis v, right-handed (2 pi / 3 takes red to
    green): Rodrigues' cos I + sin [v]x + (1 - cos) v vᵀ."""
    c, s = torch.cos(theta), torch.sin(theta)
    a, b = (1 - c) / 3, s / math.sqrt(3)
    rows = [[a + c, a - b, a + b, 0], [a + b, a + c, a - b, 0], [a - b, a + b, a + c, 0], [0, 0, 0, 1]]
    return _matrix(rows, theta)


def saturation_matrix(s: Tensor) -> Tensor:
    """``B x 4 x 4``: v vᵀ + s (I - v vᵀ) on colors, grey kept and the rest scaled by s: s = 0 is the grey
    of the same luma, s = 1 the identity. (ADA's matrix also scales the homogeneous corner by s, which no
    output reads; here it stays 1.)"""
    return _luma_matrix((1 + 2 * s) / 3, (1 - s) / 3)


# ----------------------------------------------------------------------------- drawing
@dataclass(frozen=True)
class _Rng:
    """Per-sample random numbers for a batch of ``n`` on ``device``, and the gate that turns an op on."""

    n: int
    device: torch.device
    generator: torch.Generator | None

    def uniform(self, *shape: int) -> Tensor:
        """``n x shape`` float32 values in [0, 1)."""
        return torch.rand(self.n, *shape, generator=self.generator, device=self.device)

    def normal(self, *shape: int) -> Tensor:
        """``n x shape`` float32 standard normal values."""
        return torch.randn(self.n, *shape, generator=self.generator, device=self.device)

    def gated(self, value: Tensor, probability: Tensor, identity: float) -> Tensor:
        """``value`` where a fresh uniform draw is below ``probability``, else ``identity``: the op is on for
        each sample with that probability, drawn after its value as ADA draws it."""
        on = self.uniform(*([1] * (value.ndim - 1))) < probability
        return torch.where(on, value, torch.full_like(value, identity))


def _draw_geometric(rng: _Rng, p: Tensor, ops: tuple[str, ...], h: int, w: int) -> Tensor:
    """The ``B x 3 x 3`` output-to-input matrices: each op's inverse multiplied on the right, as ADA does."""
    g = torch.eye(3, device=rng.device).repeat(rng.n, 1, 1)
    if "xflip" in ops:
        flip = rng.gated(torch.floor(rng.uniform() * 2), p, 0.0)
        g = g @ scale_matrix(1 - 2 * flip, torch.ones_like(flip))  # a flip is its own inverse
    if "rotate90" in ops:
        k = rng.gated(torch.floor(rng.uniform() * 4), p, 0.0)
        g = g @ quarter_turn_matrix(k)  # ADA's inverse of a turn by -k pi / 2
    if "xint" in ops:
        t = rng.gated((rng.uniform(2) * 2 - 1) * XINT_MAX, p, 0.0)
        g = g @ translation_matrix(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h))
    if "scale" in ops:
        s = rng.gated(torch.exp2(rng.normal() * SCALE_STD), p, 1.0)
        g = g @ scale_matrix(1 / s, 1 / s)
    # Two rotations, each on with this probability, so that one or both are on with probability p.
    p_rot = 1 - torch.sqrt((1 - p).clamp(0, 1))
    if "rotate" in ops:
        theta = rng.gated((rng.uniform() * 2 - 1) * ROTATE_MAX, p_rot, 0.0)
        g = g @ rotation_matrix(theta)  # ADA's inverse of a rotation by -theta; the angle is symmetric
    if "aniso" in ops:
        s = rng.gated(torch.exp2(rng.normal() * ANISO_STD), p, 1.0)
        g = g @ scale_matrix(1 / s, s)
    if "rotate" in ops:
        theta = rng.gated((rng.uniform() * 2 - 1) * ROTATE_MAX, p_rot, 0.0)
        g = g @ rotation_matrix(theta)
    if "xfrac" in ops:
        t = rng.gated(rng.normal(2) * XFRAC_STD, p, 0.0)
        g = g @ translation_matrix(-t[:, 0] * w, -t[:, 1] * h)
    return g


def _draw_color(rng: _Rng, p: Tensor, ops: tuple[str, ...], channels: int) -> Tensor:
    """The ``B x 4 x 4`` color matrices: each op's matrix multiplied on the left, as ADA does."""
    m = torch.eye(4, device=rng.device).repeat(rng.n, 1, 1)
    if "brightness" in ops:
        m = brightness_matrix(rng.gated(rng.normal() * BRIGHTNESS_STD, p, 0.0)) @ m
    if "contrast" in ops:
        m = contrast_matrix(rng.gated(torch.exp2(rng.normal() * CONTRAST_STD), p, 1.0)) @ m
    if "lumaflip" in ops:
        m = lumaflip_matrix(rng.gated(torch.floor(rng.uniform() * 2), p, 0.0)) @ m
    if "hue" in ops and channels > 1:
        m = hue_matrix(rng.gated((rng.uniform() * 2 - 1) * HUE_MAX, p, 0.0)) @ m
    if "saturation" in ops and channels > 1:
        m = saturation_matrix(rng.gated(torch.exp2(rng.normal() * SATURATION_STD), p, 1.0)) @ m
    return m


def _full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off on ``device``: it would compose the matrices and build ``affine_grid``'s grid (both
    matmuls) in half precision, which puts samples a fraction of a pixel off and blends neighbours."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _probability(p: Tensor | float, x: Tensor) -> Tensor:
    """``p`` as a 0-dim float32 tensor on x's device; a tensor is checked by its metadata only."""
    if isinstance(p, Tensor):
        if p.ndim != 0 or not p.is_floating_point():
            raise ValueError(f"ADA's p is a 0-dim float tensor, not {p.dtype} of shape {tuple(p.shape)}")
        if p.device != x.device:
            raise ValueError(f"ADA's p is on {p.device} but the images are on {x.device}")
        return p.to(torch.float32)
    if not p >= 0:  # also refuses NaN
        raise ValueError(f"ADA's p is a probability multiplier of at least 0, not {p}")
    return torch.full((), float(p), dtype=torch.float32, device=x.device)


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"ADA's color ops need RGB (3 channels) or grey (1 channel) images, not {channels}")


def draw(
    x: Tensor,
    p: Tensor | float,
    generator: torch.Generator | None = None,
    *,
    ops: str | Sequence[str] = DEFAULT_OPS,
) -> AdaParams:
    """Random parameters for the ``B x C x H x W`` batch ``x``, each op on per sample with probability ``p``.

    Only ``x``'s shape and device are used. ``p`` is a 0-dim float tensor on ``x``'s device (or a Python
    float); ``generator`` must live on ``x``'s device, and without one the device's global RNG is used (what
    training uses, so that an exact resume restores it). ``ops`` selects ops as :func:`parse_ops` reads it.
    """
    names = parse_ops(ops)
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"the generator is on {generator.device} but the images are on {x.device}")
    b, c, h, w = x.shape
    p = _probability(p, x)
    if set(names) & set(COLOR):
        _check_channels(c)
    rng = _Rng(b, x.device, generator)
    geometric = color = None
    with _full_precision(x.device):
        if set(names) & set(BLIT + GEOM):
            geometric = _draw_geometric(rng, p, names, h, w)
        if set(names) & set(COLOR):
            color = _draw_color(rng, p, names, c)
    return AdaParams(geometric=geometric, color=color)


# ----------------------------------------------------------------------------- applying
def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def transform_geometric(x: Tensor, matrix: Tensor) -> Tensor:
    """``x`` resampled through the ``B x 3 x 3`` output-to-input pixel matrices (bilinear, reflected)."""
    b, c, h, w = x.shape
    dtype = _compute_dtype(x)
    # affine_grid works in [-1, 1] across the image (align_corners=False): a pixel is 2 / size wide.
    to_unit = torch.tensor([2 / w, 2 / h, 1.0], dtype=dtype, device=x.device)
    theta = matrix.to(dtype) * to_unit[:, None] / to_unit[None, :]
    grid = F.affine_grid(theta[:, :2, :], [b, c, h, w], align_corners=False)
    out = F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.to(x.dtype)


def transform_color(x: Tensor, matrix: Tensor) -> Tensor:
    """``x``'s colors through the ``B x 4 x 4`` matrices; a grey image through the mean of their rows."""
    _check_channels(x.shape[1])
    b, c, h, w = x.shape
    dtype = _compute_dtype(x)
    pixels, m = x.to(dtype).reshape(b, c, h * w), matrix.to(dtype)[:, :3, :]
    if c == 1:
        m = m.mean(dim=1, keepdim=True)  # B x 1 x 4
        out = pixels * m[:, :, :3].sum(dim=2, keepdim=True) + m[:, :, 3:]
    else:
        out = m[:, :, :3] @ pixels + m[:, :, 3:]
    return out.reshape(b, c, h, w).to(x.dtype)


def apply(x: Tensor, params: AdaParams) -> Tensor:
    """``x`` augmented with ``params``, geometry then color; shape and dtype kept, gradients flow to ``x``."""
    with _full_precision(x.device):
        if params.geometric is not None:
            x = transform_geometric(x, params.geometric)
        if params.color is not None:
            x = transform_color(x, params.color)
    return x


def ada_augment(
    x: Tensor,
    p: Tensor | float,
    generator: torch.Generator | None = None,
    *,
    ops: str | Sequence[str] = DEFAULT_OPS,
) -> Tensor:
    """``x`` augmented with parameters of its own: :func:`apply` of :func:`draw`."""
    return apply(x, draw(x, p, generator, ops=ops))
