"""Mode-collapse metrics for 2D Gaussian mixtures, with the VEEGAN / PacGAN protocol.

For ``n`` generated samples x_i (2,500 in the papers), a mixture with means mu_1..mu_K and
common standard deviation sigma:

- each sample's nearest mode is k_i = argmin_k |x_i - mu_k| (Euclidean);
- a sample is **high quality** if |x_i - mu_{k_i}| <= 3 sigma;
- a mode is **captured** if it is the nearest mode of at least one high-quality sample;
- the **reverse KL** compares q, the histogram of the high-quality samples over their nearest
  modes (q_k = #{i high quality, k_i = k} / #{i high quality}), with the uniform mode
  distribution u_k = 1/K of the true mixture:
  KL(q || u) = sum over k with q_k > 0 of q_k log(K q_k). It is 0 when every mode receives the
  same share and log K when all high-quality samples sit on one mode; with no high-quality
  sample at all it is reported as infinite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ModeStats:
    """Result of :func:`mode_metrics` for one set of samples."""

    modes: int  # captured modes, out of num_modes
    high_quality: float  # fraction of samples within `threshold` std of their nearest mode
    reverse_kl: float  # KL(q || uniform) over the high-quality samples' modes, in nats
    num_modes: int
    num_samples: int

    def as_log(self, prefix: str = "val/") -> dict[str, float]:
        """Metric keys that carry the sample count, e.g. ``val/modes_2500``."""
        n = self.num_samples
        return {
            f"{prefix}modes_{n}": float(self.modes),
            f"{prefix}high_quality_{n}": self.high_quality,
            f"{prefix}reverse_kl_{n}": self.reverse_kl,
        }


def mode_metrics(samples: Tensor, means: Tensor, std: float, threshold: float = 3.0) -> ModeStats:
    """Modes captured, high-quality fraction and reverse KL of ``samples`` (n x 2) for a mixture."""
    samples, means = samples.detach().double().cpu(), means.double().cpu()
    distance, nearest = torch.cdist(samples, means).min(dim=1)
    good = distance <= threshold * std
    counts = torch.bincount(nearest[good], minlength=len(means)).double()
    total = counts.sum().item()
    if total == 0:
        reverse_kl = math.inf
    else:
        q = counts[counts > 0] / total
        reverse_kl = float((q * torch.log(q * len(means))).sum())
    return ModeStats(
        modes=int((counts > 0).sum()),
        high_quality=float(good.double().mean()),
        reverse_kl=reverse_kl,
        num_modes=len(means),
        num_samples=len(samples),
    )
