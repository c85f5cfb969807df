"""Metrics on a domain classifier's predictions: class coverage, conditional accuracy, Stacked MNIST modes.

Each function's docstring gives its formula and conventions (natural log, empty classes skipped), so
the numbers can be set beside the papers'.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gansuite.metrics.classifier import EVAL_BATCH, predict

STACKED_MODES = 1000


def _histogram(labels: Tensor, num_classes: int, what: str) -> Tensor:
    labels = labels.detach().cpu().long().flatten()
    if len(labels) == 0:
        raise ValueError(f"{what} is empty")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{what} must lie in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    counts = torch.bincount(labels, minlength=num_classes).double()
    return counts / counts.sum()


# The real histogram's floor in class_kl: only ever reached by a class missing from the reference.
KL_EPS = 1e-10


def class_coverage(pred: Tensor, num_classes: int, reference: Tensor) -> dict[str, float | int]:
    """How many classes the samples cover, and KL(p_gen || p_real) of the class histograms.

    ``p_gen[k]`` is the fraction of ``pred`` (predicted labels of generated samples) equal to k,
    ``p_real[k]`` the fraction of ``reference`` (real labels) equal to k, and, in nats,

        class_kl = sum over k with p_gen[k] > 0 of  p_gen[k] * log(p_gen[k] / max(p_real[k], KL_EPS)).

    This is the direction of the mode-collapse papers (samples against the data, as in the
    Stacked MNIST KL): it is 0 when the histograms agree and grows as the samples pile onto
    fewer classes (half of 10 balanced classes, evenly: log 2). Classes the generator never
    makes are terms with p_gen = 0, which are 0 by the convention 0 log 0 = 0: no epsilon is
    needed on that side. The epsilon sits only in the denominator and only matters where the
    reference lacks a class the samples have (the exact value is then infinite); for any class
    the reference has, p_real >= 1 / len(reference) >> KL_EPS and the value is exact.

    Returns ``{"classes_covered": int, "class_kl": float}``.
    """
    p = _histogram(pred, num_classes, "pred")
    q = _histogram(reference, num_classes, "reference").clamp_min(KL_EPS)
    seen = p > 0
    return {"classes_covered": int(seen.sum()), "class_kl": float((p[seen] * (p[seen] / q[seen]).log()).sum())}


def conditional_accuracy(pred: Tensor, requested: Tensor) -> float:
    """Fraction of samples whose predicted class ``pred`` is the class they were asked for, ``requested``."""
    pred, requested = pred.detach().cpu().flatten(), requested.detach().cpu().flatten()
    if pred.shape != requested.shape or len(pred) == 0:
        raise ValueError(f"conditional_accuracy: pred and requested must be non-empty and alike, "
                         f"got {tuple(pred.shape)} and {tuple(requested.shape)}")
    return float((pred.long() == requested.long()).double().mean())


def stacked_mnist_modes(classifier: nn.Module, images: Tensor, batch_size: int = EVAL_BATCH) -> dict[str, float | int]:
    """Modes hit and KL to uniform for Stacked MNIST samples (VEEGAN / PacGAN protocol).

    ``images`` (N, 3, H, W) in [-1, 1]; ``classifier`` is the 1-channel MNIST classifier at that
    resolution. Each channel c is classified on its own, d_c = argmax of its logits; the sample's
    mode is 100 d0 + 10 d1 + d2. With p[m] the fraction of samples in mode m (in nats),

        modes = #{m : p[m] > 0}          (out of 1,000)
        kl    = KL(p || uniform) = sum over m with p[m] > 0 of p[m] * log(1000 p[m]),

    0 when every mode has the same share, log 1000 = 6.91 when all samples share one mode.
    The papers use N = 26,000 samples: PacGAN's code (github.com/fjxmlzn/PacGAN,
    stacked_MNIST_experiments/VEEGAN_experiment: ``num_test_sample: 26000`` in config.py,
    ``log_metrics`` in model.py) classifies each channel with a pre-trained MNIST CNN and
    computes exactly this sum (natural log, zero-count modes skipped) against q = 1/1000;
    VEEGAN reports mode counts and this KL "using a total of 26000 samples", averaged over five
    runs. With 26,000 samples a perfect generator still misses no mode in expectation
    (1000 (1 - 1/1000)^26000 = 5e-9) but has KL about 0.019 from sampling noise alone.

    Returns ``{"modes": int, "kl": float}``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"stacked_mnist_modes: images must be (N, 3, H, W), got {tuple(images.shape)}")
    digits = torch.stack([predict(classifier, images[:, c:c + 1], batch_size) for c in range(3)], dim=1)
    if digits.numel() and (digits.min() < 0 or digits.max() > 9):
        raise ValueError("stacked_mnist_modes: the classifier must predict digits 0..9")
    p = _histogram(digits @ torch.tensor([100, 10, 1]), STACKED_MODES, "images")
    hit = p[p > 0]
    return {"modes": len(hit), "kl": float((hit * (hit * STACKED_MODES).log()).sum())}
