"""How well a text-to-image model follows its captions, on captioned digits (:mod:`gansuite.data.captions`).

For each held-out digit's captions (in the training phrasings, and separately in the held-out phrasings no
training caption uses), one image is drawn per caption from seeded noise, and:

- ``digit_acc``: the fraction the offline MNIST's shipped domain classifier reads as the digit the caption
  names;
- ``rank_corr_<attribute>``: over the captions that name the attribute, Spearman's rank correlation between
  the level asked for (0, 1, 2) and the value measured on the drawn image, as its percentile among the
  training digits of the named class (:func:`gansuite.data.captions.measure`; levels are per-class tertiles,
  so the percentile is the scale they were cut on).

Keys of the held-out phrasings end in ``_heldout_phrasing``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gansuite.data.captions import ATTRIBUTES, measure
from gansuite.metrics.classifier import predict
from gansuite.metrics.inception import quantize


def rank_correlation(a: Tensor, b: Tensor) -> float:
    """Spearman's rho: the Pearson correlation of the ranks, tied values sharing their mean rank (0 if either is
    constant)."""
    ra, rb = _ranks(a.double()), _ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = (ra.pow(2).sum() * rb.pow(2).sum()).sqrt()
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0


def _ranks(x: Tensor) -> Tensor:
    """Ranks from 1, tied values sharing their mean rank (scipy's ``rankdata``)."""
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(x.numpy(), method="average")).to(x.dtype)


def percentile(values: Tensor, digits: Tensor, reference: Tensor, reference_digits: Tensor) -> Tensor:
    """Each value's fraction of the reference values of its digit's class lying below it (N x A)."""
    out = torch.zeros_like(values)
    for k in digits.unique().tolist():
        rows = digits == k
        ref = reference[reference_digits == k]  # (M, A)
        out[rows] = (ref.unsqueeze(0) < values[rows].unsqueeze(1)).float().mean(1)
    return out


@torch.no_grad()
def caption_metrics(module: Any, datamodule: Any, classifier: torch.nn.Module, *, seed: int = 0,
                    batch_size: int = 250, ema: bool = True) -> dict[str, float]:
    """The metrics above for ``module`` (a text-to-image family: ``sample((z, tokens))``) on ``datamodule``'s
    held-out captions; the global RNGs are left as they were."""
    reference, reference_digits = datamodule.train_values()
    values: dict[str, float] = {}
    rng = torch.Generator().manual_seed(seed)
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        for heldout, suffix in ((False, ""), (True, "_heldout_phrasing")):
            captions = datamodule.test_captions(heldout_phrasings=heldout)
            tokens, digits = captions["tokens"], captions["digit"]
            parts = []
            for start in range(0, len(tokens), batch_size):
                z = torch.randn(min(batch_size, len(tokens) - start), module.latent_dim, generator=rng)
                inputs = (z.to(module.device, module.dtype), tokens[start:start + batch_size].to(module.device))
                parts.append(quantize(module.sample(inputs, ema=ema)))
            images = torch.cat(parts).cpu()  # uint8
            if images.shape[-1] != 28:  # measured and classified at the digits' native 28 px
                images = quantize(torch.nn.functional.interpolate(images.float() / 127.5 - 1, size=28, mode="area"))
            signed = images.float() / 127.5 - 1
            values[f"digit_acc{suffix}"] = float((predict(classifier, signed) == digits).float().mean())
            measured = percentile(measure(images), digits, reference, reference_digits)
            for a, name in enumerate(ATTRIBUTES):
                named = captions["mentions"][:, a]
                values[f"rank_corr_{name}{suffix}"] = rank_correlation(captions["levels"][named, a].float(),
                                                                       measured[named, a])
    return values
