"""FID, Inception Score, KID and precision/recall from features, with torch-fidelity's implementations.

Every number here is computed from two sets of features: those of generated images and those of
a real reference set (:class:`Reference`, computed once per key and then read from a cache by
:func:`load_or_compute_reference`). The features, and the images' 8-bit quantization and the
precision (exact or tf32) they are computed in, come from :mod:`gansuite.metrics.inception`.

The protocol that produced a number (implementation, extractor and a hash of its weights,
resize, sample counts, reference split and a hash of its statistics) travels with it as a
plain dict; :func:`protocol_differences` says what differs between two of them.

FID is the TTUR formula, torch-fidelity's number up to float rounding, computed by
:func:`frechet_distance_to` in float64 on the device that holds the generated statistics
(:class:`FeatureMoments` sums them there batch by batch) with a symmetric eigensolver, in place
of torch-fidelity's numpy eigenvalues on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

# torch-fidelity's defaults, written out so that they are recorded in the protocol.
ISC_SPLITS = 10
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PRC_NEIGHBORHOOD = 3
# Precision/recall distances in blocks of this many rows (torch-fidelity's save_cpu_ram path): memory
# grows with PRC_BATCH x num_real, not num_real^2 (50,000 CIFAR-10 images would need 10 GB at once).
PRC_BATCH = 2000

METRICS = ("fid", "is", "kid", "prc")


def count_tag(n: int) -> str:
    """How a sample count appears in a metric key: 10000 -> '10k', 2500 -> '2500'."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def tensor_sha256(*tensors: Tensor | np.ndarray) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        a = t.detach().cpu().contiguous().numpy() if isinstance(t, Tensor) else np.ascontiguousarray(t)
        digest.update(str(a.dtype).encode() + str(a.shape).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- metrics
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½): torch-fidelity's implementation (eigenvalues of Σ1 Σ2)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    as64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    stats1 = {"mu": as64(mu1), "sigma": as64(sigma1)}
    stats2 = {"mu": as64(mu2), "sigma": as64(sigma2)}
    return float(fid_statistics_to_metric(stats1, stats2, verbose=False)[KEY_METRIC_FID])


def frechet_distance_to(reference: Reference, mu: Tensor, sigma: Tensor) -> float:
    """:func:`frechet_distance` from N(mu, sigma) to the reference's Gaussian, in float64 on ``sigma``'s device.

    The same formula and the same number up to float rounding, but the trace term Σ sqrt(eigenvalues
    of Σ1 Σ2) comes from a symmetric matrix with those eigenvalues, Fᵀ Σ1 F where Σ2 = F Fᵀ (F made
    once per reference): a symmetric eigensolver on the device instead of numpy's general one on the
    CPU, which takes seconds at 2048 dimensions. Negative rounding-noise eigenvalues count as 0, as the
    real part of their complex square root does in torch-fidelity. With full-rank covariances the two
    agree to ~1e-12 relative; with fewer samples than dimensions the square roots of noise eigenvalues
    show (1e-6 relative in torch-fidelity's, 1e-8 in this one; see benchmarks/README.md).
    """
    mu2, sigma2, factor = reference.moments_on(sigma.device)
    mu, sigma = mu.to(sigma2), sigma.to(sigma2)
    diff = mu - mu2
    eigenvalues = torch.linalg.eigvalsh(factor.T @ sigma @ factor)
    tr_covmean = eigenvalues.clamp_min(0).sqrt().sum()
    return float(diff @ diff + sigma.trace() + sigma2.trace() - 2 * tr_covmean)


def gaussian_stats(features: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, as torch-fidelity and the TTUR reference compute them), float64."""
    f = features.double().cpu().numpy()
    return f.mean(axis=0), np.cov(f, rowvar=False)


class FeatureMoments:
    """Mean and covariance of feature rows fed batch by batch, summed in float64 on the features' device.

    What :func:`gaussian_stats` gives for the concatenated rows (up to float rounding), without
    keeping the rows (50,000 x 2048 for FID-50k) or copying them to the host: only the 2048-d sum
    and the 2048x2048 sum of outer products live on the device, and :meth:`mean_and_cov` returns
    the statistics there (:meth:`stats` copies them to the host).
    The sums are taken around the first batch's mean, so that the covariance does not lose digits
    to cancellation when the mean is large against the spread.
    """

    def __init__(self) -> None:
        self.n = 0
        self.shift: Tensor | None = None
        self.total: Tensor | None = None
        self.outer: Tensor | None = None

    @torch.no_grad()
    def update(self, features: Tensor) -> None:
        x = features.detach().double()
        if self.shift is None:
            self.shift = x.mean(dim=0)
            self.total = torch.zeros_like(self.shift)
            self.outer = x.new_zeros(x.shape[1], x.shape[1])
        x = x - self.shift
        self.total += x.sum(dim=0)
        self.outer.addmm_(x.T, x)  # float64: TF32 settings do not apply
        self.n += len(x)

    @torch.no_grad()
    def mean_and_cov(self) -> tuple[Tensor, Tensor]:
        """(mean, unbiased covariance), float64 on the features' device."""
        if self.n < 2:
            raise ValueError(f"FeatureMoments: a covariance needs 2 rows, not {self.n}")
        mean = self.total / self.n
        cov = (self.outer - torch.outer(self.total, mean)) / (self.n - 1)
        cov = (cov + cov.T) / 2  # exactly symmetric, whatever order the matmul summed in
        return self.shift + mean, cov

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, unbiased covariance) as float64 numpy arrays, like :func:`gaussian_stats`."""
        mean, cov = self.mean_and_cov()
        return mean.cpu().numpy(), cov.cpu().numpy()


def compute_metrics(
    generated: dict[str, Tensor],
    reference: Reference,
    metrics: tuple[str, ...] | list[str],
    *,
    seed: int = 0,
    stats: tuple[Tensor | np.ndarray, Tensor | np.ndarray] | None = None,
) -> dict[str, float]:
    """The requested metrics of generated features against a reference set, keyed by short name.

    Names: ``fid``; ``is`` and ``is_std`` (over 10 splits); ``kid`` and ``kid_std`` (100 subsets of
    up to 1,000); ``precision``, ``recall`` (k = 3 nearest neighbours, Kynkäänniemi et al. 2019).

    Args:
        generated: ``features`` (needed by FID without ``stats``, KID, precision/recall) and
            ``logits`` (needed by IS) of the generated images.
        stats: the generated features' (mean, covariance), e.g. from :class:`FeatureMoments`;
            FID then needs no features, and is computed on the device they are on.
    """
    out: dict[str, float] = {}
    if "fid" in metrics:
        mu, sigma = stats if stats is not None else gaussian_stats(generated["features"])
        out["fid"] = frechet_distance_to(reference, torch.as_tensor(mu), torch.as_tensor(sigma))
    if "is" in metrics:
        from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

        splits = isc_splits(len(generated["logits"]))
        isc = isc_features_to_metric(generated["logits"], splits=splits, shuffle=True, rng_seed=seed)
        out["is"], out["is_std"] = isc[KEY_METRIC_ISC_MEAN], isc[KEY_METRIC_ISC_STD]
    if "kid" in metrics:
        from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

        feats = generated["features"]
        kid = kid_features_to_metric(feats, reference.features, kid_subsets=KID_SUBSETS, verbose=False,
                                     kid_subset_size=kid_subset_size(len(feats), len(reference.features)),
                                     rng_seed=seed)
        out["kid"], out["kid_std"] = kid[KEY_METRIC_KID_MEAN], kid[KEY_METRIC_KID_STD]
    if "prc" in metrics:
        from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

        prc = prc_features_to_metric(generated["features"], reference.features, prc_neighborhood=PRC_NEIGHBORHOOD,
                                     prc_batch_size=PRC_BATCH, save_cpu_ram=True, verbose=False)
        out["precision"], out["recall"] = prc[KEY_METRIC_PRECISION], prc[KEY_METRIC_RECALL]
    return out


def isc_splits(n_generated: int) -> int:
    return min(ISC_SPLITS, n_generated)


def kid_subset_size(n_generated: int, n_real: int) -> int:
    return min(KID_SUBSET_SIZE, n_generated, n_real)


# ----------------------------------------------------------------------------- reference statistics
@dataclass
class Reference:
    """Features of a real reference set and their Gaussian statistics, with what produced them."""

    key: dict[str, Any]
    features: Tensor
    logits: Tensor
    labels: Tensor | None
    mu: np.ndarray = field(repr=False)
    sigma: np.ndarray = field(repr=False)
    # F with sigma = F Fᵀ (see frechet_distance_to): cached with the reference; made on demand when None.
    sigma_factor: np.ndarray | None = field(default=None, repr=False)
    _on_device: dict[str, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict, repr=False, compare=False)

    def moments_on(self, device: torch.device | str) -> tuple[Tensor, Tensor, Tensor]:
        """(mu, sigma, F with sigma = F Fᵀ) as float64 tensors on ``device``, moved there once."""
        key = str(torch.device(device))
        if key not in self._on_device:
            mu = torch.from_numpy(np.asarray(self.mu, dtype=np.float64)).to(device)
            sigma = torch.from_numpy(np.asarray(self.sigma, dtype=np.float64)).to(device)
            factor = (torch.from_numpy(self.sigma_factor).to(device) if self.sigma_factor is not None
                      else covariance_factor(sigma))
            self._on_device[key] = (mu, sigma, factor)
        return self._on_device[key]

    @property
    def sha256(self) -> str:
        """Hash of the statistics and features: two references with equal hashes give equal metrics."""
        return tensor_sha256(self.mu, self.sigma, self.features)

    @property
    def num_samples(self) -> int:
        return len(self.features)


def covariance_factor(sigma: Tensor) -> Tensor:
    """F with sigma = F Fᵀ, from sigma's eigendecomposition (negative rounding noise taken as 0), float64."""
    eigenvalues, vectors = torch.linalg.eigh(sigma.double())
    return vectors * eigenvalues.clamp_min(0).sqrt()


def reference_cache_file(cache_dir: Path, key: dict[str, Any]) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / "reference" / f"{name}.pt"


def load_or_compute_reference(
    key: dict[str, Any],
    compute: Callable[[], tuple[dict[str, Tensor], Tensor | None]],
    cache_dir: Path | None,
    log: Callable[[str], None] = print,
) -> Reference:
    """Reference features for ``key`` (dataset, split, resolution, count, extractor and its weights hash).

    Computed by ``compute() -> (features dict, labels or None)`` once, then read from
    ``cache_dir/reference/<hash of key>.pt``; any change in the key is a different file. The
    file holds the features' mean and covariance (and the covariance's factor that
    :func:`frechet_distance_to` uses) too, so loading it computes nothing; a file written before
    they were stored gets them added, computed as they always were.
    """
    path = reference_cache_file(cache_dir, key) if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored["key"] == json.loads(json.dumps(key)):
                ref = _reference(key, stored["features"], stored["logits"], stored.get("labels"),
                                 stored.get("mu"), stored.get("sigma"), stored.get("sigma_factor"))
                if stored.get("sigma_factor") is None:
                    with suppress(OSError):  # a read-only cache still serves its features
                        _save_reference(path, ref)
                return ref
            log(f"eval: {path} belongs to another reference; recomputing it")
        except Exception as err:
            log(f"eval: {path} is unreadable ({type(err).__name__}); recomputing it")
    log(f"eval: computing reference features for {key['dataset']} ({key['split']}, {key['num_samples']} images, "
        f"{key['extractor']})")
    feats, labels = compute()
    ref = _reference(key, feats["features"].cpu(), feats["logits"].cpu(), labels)
    if path is not None:
        _save_reference(path, ref)
    return ref


def _reference(key: dict[str, Any], features: Tensor, logits: Tensor, labels: Tensor | None,
               mu: Tensor | None = None, sigma: Tensor | None = None, factor: Tensor | None = None) -> Reference:
    # The statistics are always those of gaussian_stats (float64 numpy), whether just computed or
    # read back: the reference's hash, recorded in every protocol, stays what it was.
    if mu is None or sigma is None:
        mu, sigma = gaussian_stats(features)
        factor = None
    else:
        mu, sigma = mu.numpy(), sigma.numpy()
    if factor is None:
        factor = covariance_factor(torch.from_numpy(sigma))
    return Reference(key=dict(key), features=features, logits=logits, labels=labels, mu=mu, sigma=sigma,
                     sigma_factor=factor.numpy())


def _save_reference(path: Path, ref: Reference) -> None:
    """Write atomically: a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"key": ref.key, "features": ref.features, "logits": ref.logits, "labels": ref.labels,
                    "mu": torch.from_numpy(ref.mu), "sigma": torch.from_numpy(ref.sigma),
                    "sigma_factor": torch.from_numpy(ref.sigma_factor)}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- protocol
def protocol_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable differences between two protocols (empty when the numbers are comparable)."""
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in _IGNORED:
            continue
        va, vb = a.get(key, _ABSENT_MEANS.get(key)), b.get(key, _ABSENT_MEANS.get(key))
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += [f"{key}.{d}" for d in protocol_differences(va, vb)]
        elif va != vb:
            diffs.append(f"{key}: {va!r} vs {vb!r}")
    return diffs


# Recorded for the reader, but not part of what makes two numbers comparable.
_IGNORED = {"seed", "classifier_path", "gansuite_version", "fid_solver"}
# Keys added to the protocol later, with the value that results written before them were measured with.
_ABSENT_MEANS = {"feature_precision": "exact"}
