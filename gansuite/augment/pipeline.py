"""What ``augment=diffaugment|ada`` builds: the augmentation of every image a discriminator sees in training.

The schedule (:class:`gansuite.models.schedule.AdversarialModule`) runs an :class:`Augment` on the first
argument of every discriminator call made inside a training step: reals and fakes in D's update, the
regularizer's inputs (R1's gradient is taken with respect to the un-augmented reals, as in ADA's code),
and the fakes in G's update, whose gradient flows back through the augmentation. Outside a training step
(evaluation, ``gansuite-sample``, the check a run does before it starts) D sees images as they are.

Parameters come from the device's global RNG, which checkpoints already carry, so a resumed run draws the
same augmentations; ADA's probability ``p`` and its running statistics are buffers, so they travel in the
checkpoint's ``state_dict`` (``augment.p``) and come back exactly.

``same_for_real_and_fake``: with it, the calls of one update share their parameters (the i-th fake gets the
i-th real's), drawn at the update's first call; without it (the papers' setting) every call draws its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from gansuite.augment import ada, diffaugment
from gansuite.errors import ConfigError


class Augment(nn.Module):
    """The augmentation of what D sees. Subclasses define :meth:`draw` and :meth:`apply`."""

    def __init__(self, *, same_for_real_and_fake: bool = False) -> None:
        super().__init__()
        self.same_for_real_and_fake = bool(same_for_real_and_fake)
        self._shared: dict[tuple[int, ...], Any] = {}

    def draw(self, x: Tensor) -> Any:
        raise NotImplementedError

    def apply(self, x: Tensor, params: Any) -> Tensor:
        raise NotImplementedError

    def new_update(self) -> None:
        """An update (D's or G's) begins: shared parameters are drawn again at its first call."""
        self._shared = {}

    def forward(self, x: Tensor) -> Tensor:
        if not self.same_for_real_and_fake:
            return self.apply(x, self.draw(x))
        key = tuple(x.shape)
        if key not in self._shared:
            self._shared[key] = self.draw(x)
        return self.apply(x, self._shared[key])

    def observe_real(self, scores: Tensor) -> None:
        """D's raw outputs on the (augmented) reals of a D update; ADA adapts p from them."""

    def after_d_update(self, d_updates: int, images: int, reduce: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
        """Called after D's ``d_updates``-th update of ``images`` reals (over all ranks); ``reduce`` sums a tensor
        over the ranks. Returns values to log (on the device)."""
        return {}


class DiffAugment(Augment):
    """DiffAugment (Zhao et al. 2020): :mod:`gansuite.augment.diffaugment`'s ops on every image D sees.

    Args:
        policy: the ops, comma-separated, in order: ``color``, ``translation``, ``cutout`` (the paper's
            CIFAR-10 setting uses all three).
        translation_ratio, cutout_ratio: the largest shift and the cutout's side, as fractions of the side.
    """

    def __init__(self, *, policy: str = diffaugment.DEFAULT_POLICY, translation_ratio: float = 1 / 8,
                 cutout_ratio: float = 1 / 2, same_for_real_and_fake: bool = False) -> None:
        super().__init__(same_for_real_and_fake=same_for_real_and_fake)
        try:
            self.policy = diffaugment.parse_policy(policy)
        except ValueError as err:
            raise ConfigError(f"augment.fn.policy: {err}; use a comma-separated list of "
                              f"{', '.join(diffaugment.POLICIES)}.") from None
        for key, value in (("translation_ratio", translation_ratio), ("cutout_ratio", cutout_ratio)):
            if not 0 <= value <= 1:
                raise ConfigError(f"augment.fn.{key} must be in [0, 1] (got {value!r}); the paper uses "
                                  f"{'0.125' if key == 'translation_ratio' else '0.5'}.")
        self.translation_ratio, self.cutout_ratio = float(translation_ratio), float(cutout_ratio)

    def draw(self, x: Tensor) -> diffaugment.AugmentParams:
        return diffaugment.draw(self.policy, x, translation_ratio=self.translation_ratio,
                                cutout_ratio=self.cutout_ratio)

    def apply(self, x: Tensor, params: diffaugment.AugmentParams) -> Tensor:
        return diffaugment.apply(x, params)


class AdaptiveAugment(Augment):
    """ADA (Karras et al. 2020): the ``bgc`` pipeline applied with probability ``p``, which adapts.

    Every ``interval`` D updates, r_t = E[sign(D(x))] over the reals D saw since the last adjustment (all
    ranks), and p += sign(r_t - target) * images / (speed_kimg * 1000), where images is the reals seen in
    those updates: p can go from 0 to 1 in ``speed_kimg`` thousand images. p stays >= 0 (ADA's code bounds
    it below only; above 1 every op is on, as at 1). Nothing is read back to the host: p and r_t live on the
    device, and the logged values go out with the other losses.

    Args:
        pipeline: which ops: ADA's letters (``b`` blit, ``g`` geometric, ``c`` color: ``bgc``) or op names
            (:func:`gansuite.augment.ada.parse_ops`).
        target: the r_t ADA aims at (0.6; the paper found 0.5-0.7 good for all data sizes).
        interval: D updates between adjustments (4).
        speed_kimg: thousand reals over which p can sweep from 0 to 1 (500; ADA's ``ada_kimg``).
        initial_p: p at the start.
        adaptive: false keeps p at ``initial_p`` (a fixed-p run, as the paper's Figure 3 ablation).
    """

    def __init__(self, *, pipeline: str = "bgc", target: float = 0.6, interval: int = 4, speed_kimg: float = 500,
                 initial_p: float = 0.0, adaptive: bool = True, same_for_real_and_fake: bool = False) -> None:
        super().__init__(same_for_real_and_fake=same_for_real_and_fake)
        try:
            ada.parse_ops(pipeline)
        except ValueError as err:
            raise ConfigError(f"augment.fn.pipeline: {err}; ADA's default is bgc.") from None
        checks = (("target", target, 0 < target < 1, "0.6"), ("interval", interval, interval >= 1, "4"),
                  ("speed_kimg", speed_kimg, speed_kimg > 0, "500"), ("initial_p", initial_p, 0 <= initial_p <= 1, "0"))
        for key, value, ok, default in checks:
            if not ok:
                raise ConfigError(f"augment.fn.{key}={value!r} is out of range; ADA uses {default}.")
        self.pipeline, self.target, self.interval = pipeline, float(target), int(interval)
        self.speed_kimg, self.adaptive = float(speed_kimg), bool(adaptive)
        self.register_buffer("p", torch.tensor(float(initial_p)))
        # Sum of sign(D(x)) and the number of scores since the last adjustment, float32 on the device.
        self.register_buffer("sign_sum", torch.zeros(()))
        self.register_buffer("sign_count", torch.zeros(()))
        self.register_buffer("last_rt", torch.zeros(()))  # r_t at the latest adjustment, for the logs

    def draw(self, x: Tensor) -> ada.AdaParams:
        return ada.draw(x, self.p, ops=self.pipeline)

    def apply(self, x: Tensor, params: ada.AdaParams) -> Tensor:
        return ada.apply(x, params)

    def observe_real(self, scores: Tensor) -> None:
        if self.adaptive:
            self.sign_sum.add_(scores.detach().float().sign().sum())
            self.sign_count.add_(scores.numel())

    def after_d_update(self, d_updates: int, images: int, reduce: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
        if self.adaptive and d_updates % self.interval == 0:
            stats = reduce(torch.stack([self.sign_sum, self.sign_count]))
            self.last_rt.copy_(stats[0] / stats[1].clamp(min=1))
            step = images * self.interval / (self.speed_kimg * 1000)
            self.p.add_(torch.sign(self.last_rt - self.target) * step).clamp_(min=0)
            self.sign_sum.zero_()
            self.sign_count.zero_()
        return {"p": self.p, "rt": self.last_rt} if self.adaptive else {"p": self.p}
