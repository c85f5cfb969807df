"""DiffAugment (Zhao, Liu, Lin, Zhu & Han 2020): differentiable augmentations of every image D sees.

D is shown augmented reals *and* augmented fakes, and G's gradient flows back through the augmentation,
so every op here is differentiable with respect to the images. Three policies, as in the paper's code:

- ``color``: brightness ``x + b`` with b ~ U(-0.5, 0.5); saturation ``m_c + s (x - m_c)`` with s ~ U(0, 2)
  and m_c each pixel's mean over the channels; contrast ``m + c (x - m)`` with c ~ U(0.5, 1.5) and m the
  sample's mean over all channels and pixels. One b, s, c per sample, applied in that order.
- ``translation``: each sample moved by an integer number of pixels along each axis, uniform in [-r, r]
  with r = round(size / 8); zeros move in where nothing does.
- ``cutout``: a square of side round(size / 2) set to zero, its centre uniform over the image, clipped at
  the borders (at least half of each side stays inside).

Images are in [-1, 1], as everywhere in gansuite and as in the paper's code (its StyleGAN2 port feeds
``uint8 / 127.5 - 1`` reals and [-1, 1] fakes to DiffAugment). On that range b ~ U(-0.5, 0.5) shifts a
sample by at most a quarter of the range, half the relative strength the same numbers would have on
[0, 1] images. Nothing is clamped: augmented images may leave [-1, 1]. Saturation and contrast scale
deviations from a mean, so they mean the same on any range.

Parameters are drawn once (:func:`draw`) and applied (:func:`apply`) separately, so a config can give the
real and the fake batch the same parameters or each its own. Nothing here reads a tensor back to the host:
the shifts and squares become index arithmetic and masks on the images' device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

POLICIES = ("color", "translation", "cutout")
DEFAULT_POLICY = "color,translation,cutout"
TRANSLATION_RATIO = 1 / 8  # the largest shift, as a fraction of the side
CUTOUT_RATIO = 1 / 2  # the side of the zeroed square, as a fraction of the side


@dataclass(frozen=True, eq=False)
class AugmentParams:
    """The random parameters of one batch: one entry per sample, on the images' device.

    Args:
        policy: the ops to apply, in order.
        brightness, saturation, contrast: ``B`` float32 values (``color``).
        shift: ``B x 2`` int64, rows down and columns right (``translation``).
        cutout: ``B x 4`` int64, the square ``[top, bottom) x [left, right)`` as (top, left, bottom,
            right); it may reach past the borders (``cutout``).
    """

    policy: tuple[str, ...]
    brightness: Tensor | None = None
    saturation: Tensor | None = None
    contrast: Tensor | None = None
    shift: Tensor | None = None
    cutout: Tensor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", parse_policy(self.policy))
        needs = {
            "color": ("brightness", "saturation", "contrast"),
            "translation": ("shift",),
            "cutout": ("cutout",),
        }
        missing = [field for name in self.policy for field in needs[name] if getattr(self, field) is None]
        if missing:
            raise ValueError(
                f"DiffAugment parameters for policy {','.join(self.policy)!r} lack {', '.join(missing)}"
            )


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """``"color,translation"`` (or a sequence of names) as a tuple of names; ``""`` is no augmentation."""
    names = policy.split(",") if isinstance(policy, str) else list(policy)
    names = tuple(name.strip() for name in names if name.strip())
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"unknown DiffAugment policy {name!r}; the policies are {', '.join(POLICIES)}")
    if len(set(names)) < len(names):
        raise ValueError(
            f"DiffAugment policy {','.join(names)!r} names a policy twice; name each at most once"
        )
    return names


def scaled_size(size: int, ratio: float) -> int:
    """round(ratio * size) with halves rounded up, as the paper's code does (Python's round() goes to even)."""
    return int(size * ratio + 0.5)


# ----------------------------------------------------------------------------- drawing
@dataclass(frozen=True)
class _Rng:
    """Per-sample random numbers for a batch of ``n`` on ``device``."""

    n: int
    device: torch.device
    generator: torch.Generator | None

    def uniform(self, low: float, high: float) -> Tensor:
        """``n`` float32 values in [low, high)."""
        return torch.rand(self.n, generator=self.generator, device=self.device) * (high - low) + low

    def integers(self, low: int, high: int) -> Tensor:
        """``n`` int64 values in [low, high], both ends included."""
        return torch.randint(low, high + 1, (self.n,), generator=self.generator, device=self.device)


def _draw_color(rng: _Rng, h: int, w: int, ratio: float) -> dict[str, Tensor]:
    return {
        "brightness": rng.uniform(-0.5, 0.5),
        "saturation": rng.uniform(0.0, 2.0),
        "contrast": rng.uniform(0.5, 1.5),
    }


def _draw_translation(rng: _Rng, h: int, w: int, ratio: float) -> dict[str, Tensor]:
    rh, rw = scaled_size(h, ratio), scaled_size(w, ratio)
    return {"shift": torch.stack([rng.integers(-rh, rh), rng.integers(-rw, rw)], dim=1)}


def _draw_cutout(rng: _Rng, h: int, w: int, ratio: float) -> dict[str, Tensor]:
    # The centre is any pixel for an odd side, any pixel corner (0..size) for an even one.
    sh, sw = scaled_size(h, ratio), scaled_size(w, ratio)
    top = rng.integers(0, h - sh % 2) - sh // 2
    left = rng.integers(0, w - sw % 2) - sw // 2
    return {"cutout": torch.stack([top, left, top + sh, left + sw], dim=1)}


_DRAW = {"color": _draw_color, "translation": _draw_translation, "cutout": _draw_cutout}


def draw(
    policy: str | Sequence[str],
    x: Tensor,
    generator: torch.Generator | None = None,
    *,
    translation_ratio: float = TRANSLATION_RATIO,
    cutout_ratio: float = CUTOUT_RATIO,
) -> AugmentParams:
    """Random parameters for the ``B x C x H x W`` batch ``x``, drawn on ``x.device`` in the policy's order.

    Only ``x``'s shape and device are used. ``generator`` must live on ``x``'s device (a CUDA batch
    needs ``torch.Generator(device="cuda")``); without one, the device's global RNG is used.
    """
    names = parse_policy(policy)
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"the generator is on {generator.device} but the images are on {x.device}")
    b, _, h, w = x.shape
    rng = _Rng(b, x.device, generator)
    ratios = {"translation": translation_ratio, "cutout": cutout_ratio}
    params: dict[str, Tensor] = {}
    for name in names:
        params.update(_DRAW[name](rng, h, w, ratios.get(name, 0.0)))
    return AugmentParams(policy=names, **params)


# ----------------------------------------------------------------------------- the ops
def _per_sample(values: Tensor, x: Tensor) -> Tensor:
    """``B`` values shaped ``B x 1 x 1 x 1`` in x's dtype, so half-precision images stay half precision."""
    return values.to(x.dtype).view(-1, 1, 1, 1)


def brightness(x: Tensor, offset: Tensor) -> Tensor:
    """x + b, one b per sample."""
    return x + _per_sample(offset, x)


def saturation(x: Tensor, factor: Tensor) -> Tensor:
    """m_c + s (x - m_c), m_c each pixel's mean over the channels: s = 0 is grey, s = 1 the identity."""
    mean = x.mean(dim=1, keepdim=True)
    return mean + _per_sample(factor, x) * (x - mean)


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """m + c (x - m), m the sample's mean over all channels and pixels."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + _per_sample(factor, x) * (x - mean)


def translate(x: Tensor, shift: Tensor) -> Tensor:
    """out[i, j] = x[i - dy, j - dx] for each sample's shift (dy, dx), and 0 where that is off the image."""
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device) - shift[:, :1]  # B x H: the source row of each output row
    cols = torch.arange(w, device=x.device) - shift[:, 1:]  # B x W
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    source = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # B x H x W, flat
    moved = x.flatten(2).gather(2, source.flatten(1)[:, None, :].expand(b, c, h * w)).view(b, c, h, w)
    return moved.masked_fill(~inside[:, None], 0)


def cut_out(x: Tensor, box: Tensor) -> Tensor:
    """x with [top, bottom) x [left, right) set to 0 in every channel, one box (top, left, bottom, right) per sample."""
    _, _, h, w = x.shape
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (rows >= box[:, 0:1]) & (rows < box[:, 2:3])  # B x H
    in_cols = (cols >= box[:, 1:2]) & (cols < box[:, 3:4])  # B x W
    return x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0)


_OPS: dict[str, Callable[[Tensor, AugmentParams], Tensor]] = {
    "color": lambda x, p: contrast(saturation(brightness(x, p.brightness), p.saturation), p.contrast),
    "translation": lambda x, p: translate(x, p.shift),
    "cutout": lambda x, p: cut_out(x, p.cutout),
}


# ----------------------------------------------------------------------------- applying
def apply(x: Tensor, params: AugmentParams) -> Tensor:
    """``x`` augmented with ``params``; shape and dtype are kept, and gradients flow to ``x``."""
    for name in params.policy:
        x = _OPS[name](x, params)
    return x


def diff_augment(
    x: Tensor, policy: str | Sequence[str] = DEFAULT_POLICY, generator: torch.Generator | None = None
) -> Tensor:
    """``x`` augmented with parameters of its own: :func:`apply` of :func:`draw`."""
    return apply(x, draw(policy, x, generator))
