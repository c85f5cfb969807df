"""FID / IS / KID / PR from features: closed forms, agreement with torchmetrics, caching, protocol, weights."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from gansuite.errors import ConfigError
from gansuite.metrics import fidelity
from gansuite.metrics import inception as metrics_inception
from gansuite.metrics.fidelity import (
    Reference,
    compute_metrics,
    count_tag,
    frechet_distance,
    gaussian_stats,
    load_or_compute_reference,
    protocol_differences,
)
from gansuite.metrics.inception import MissingWeightsError, quantize


def _reference(features: torch.Tensor, labels=None) -> Reference:
    mu, sigma = gaussian_stats(features)
    key = {"dataset": "test", "split": "train", "num_samples": len(features), "extractor": "x"}
    return Reference(key=key, features=features, logits=features, labels=labels, mu=mu, sigma=sigma)


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    # Σ1 = R diag(a) Rᵀ and Σ2 = R diag(b) Rᵀ commute, so Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) = Σ (√a − √b)².
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    a, b = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 9.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()  # 5 + (1+1+0+0.25)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert_close(got, 7.25, rtol=0, atol=1e-9)
    assert_close(got, float(expected), rtol=0, atol=1e-9)


def test_fid_of_a_set_against_itself_is_zero():
    feats = torch.randn(500, 16, generator=torch.Generator().manual_seed(1)) * 3 + 1
    values = compute_metrics({"features": feats, "logits": feats}, _reference(feats), ["fid"])
    assert_close(values["fid"], 0.0, rtol=0, atol=1e-6)


def test_fid_of_a_shifted_set_is_the_squared_shift():
    feats = torch.randn(400, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0, 0, 0, 0, 0, 0.5], dtype=torch.float64)
    values = compute_metrics({"features": feats + shift, "logits": feats}, _reference(feats), ["fid"])
    assert_close(values["fid"], 5.25, rtol=0, atol=1e-6)  # 1 + 4 + 0.25, same covariance


class _Identity(nn.Module):
    num_features = 32

    def forward(self, x):
        return x


def test_torchmetrics_and_torch_fidelity_agree_on_the_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance

    g = torch.Generator().manual_seed(3)
    real = torch.randn(600, 32, generator=g, dtype=torch.float64)
    fake = 0.8 * torch.randn(700, 32, generator=g, dtype=torch.float64) + 0.3
    ours = compute_metrics({"features": fake, "logits": fake}, _reference(real), ["fid"])["fid"]
    tm = FrechetInceptionDistance(feature=_Identity())
    tm.update(real, real=True)
    tm.update(fake, real=False)
    theirs = float(tm.compute())
    assert ours > 1.0  # a real difference to agree on
    assert_close(ours, theirs, rtol=1e-3, atol=0)


def test_inception_score_of_confident_uniform_predictions_is_the_number_of_classes(monkeypatch):
    # Each sample is certain of one class and the classes are used equally: IS = exp(H(y)) = K.
    # One split, so that the shuffled splits' class counts do not enter.
    monkeypatch.setattr(fidelity, "ISC_SPLITS", 1)
    k, n = 10, 1000
    logits = torch.full((n, k), -1e4, dtype=torch.float64)
    logits[torch.arange(n), torch.arange(n) % k] = 0
    values = compute_metrics({"features": logits, "logits": logits}, _reference(logits), ["is"])
    assert_close(values["is"], float(k), rtol=1e-6, atol=0)
    # Every sample equally unsure: p(y|x) = p(y), so IS = 1 in every split.
    unsure = torch.randn(1, k, dtype=torch.float64).expand(n, k)
    monkeypatch.setattr(fidelity, "ISC_SPLITS", 10)
    values = compute_metrics({"features": unsure, "logits": unsure}, _reference(logits), ["is"])
    assert_close(values["is"], 1.0, rtol=0, atol=1e-9)
    assert_close(values["is_std"], 0.0, rtol=0, atol=1e-9)


def test_precision_recall_and_kid_on_identical_sets():
    feats = torch.randn(300, 8, generator=torch.Generator().manual_seed(4))
    values = compute_metrics({"features": feats, "logits": feats}, _reference(feats), ["kid", "prc"])
    assert values["precision"] == 1.0 and values["recall"] == 1.0
    # The unbiased MMD estimate of identical subsets averages to ~0; far below a shifted set's.
    shifted = compute_metrics({"features": feats + 2, "logits": feats}, _reference(feats), ["kid", "prc"])
    assert abs(values["kid"]) < 0.05 * shifted["kid"]
    assert shifted["precision"] < 0.5


def test_quantize_rounds_like_an_image_file():
    x = torch.tensor([-1.0, -0.999, 0.0, 1.0, 1.5, -3.0])
    assert quantize(x).tolist() == [0, 0, 128, 255, 255, 0]
    pixels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(quantize(pixels.float() / 127.5 - 1), pixels)  # data round-trips exactly


@pytest.mark.parametrize("n,tag", [(10000, "10k"), (50000, "50k"), (2500, "2500"), (64, "64")])
def test_count_tags(n, tag):
    assert count_tag(n) == tag


def test_reference_is_cached_and_recomputed_when_its_key_changes(tmp_path):
    calls = []
    feats = torch.randn(50, 4, generator=torch.Generator().manual_seed(5))

    def compute():
        calls.append(1)
        return {"features": feats, "logits": feats}, torch.zeros(50, dtype=torch.long)

    key = {"dataset": "d", "split": "train", "num_samples": 50, "extractor": "e", "extractor_sha256": "aa"}
    first = load_or_compute_reference(key, compute, tmp_path, log=lambda m: None)
    second = load_or_compute_reference(dict(key), compute, tmp_path, log=lambda m: None)
    assert len(calls) == 1
    assert first.sha256 == second.sha256
    assert_close(second.features, feats)
    for change in ({"split": "heldout"}, {"extractor_sha256": "bb"}, {"num_samples": 40}, {"dataset": "d2"}):
        load_or_compute_reference({**key, **change}, compute, tmp_path, log=lambda m: None)
    assert len(calls) == 5
    # A corrupt cache file is recomputed, with a message, not a crash.
    path = fidelity.reference_cache_file(tmp_path, key)
    path.write_bytes(b"not a tensor file")
    messages = []
    load_or_compute_reference(key, compute, tmp_path, log=messages.append)
    assert len(calls) == 6 and "unreadable" in messages[0]
    assert not list(path.parent.glob(".*tmp"))  # no temporary file left behind


def test_protocol_differences_name_what_differs():
    a = {"feature_extractor": "inception-v3-compat", "num_generated": 10000, "seed": 0,
         "reference": {"dataset": "cifar10-32px", "split": "train", "sha256": "x"}}
    assert protocol_differences(a, dict(a, seed=3)) == []  # another draw, same protocol
    b = dict(a, num_generated=50000, reference=dict(a["reference"], split="heldout"))
    diffs = protocol_differences(a, b)
    assert diffs == ["num_generated: 10000 vs 50000", "reference.split: 'train' vs 'heldout'"]


def test_missing_weights_fail_with_one_sentence_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-home"))
    with pytest.raises(MissingWeightsError, match="gansuite-fetch-weights") as err:
        metrics_inception.resolve_inception_weights(None, download=False)
    assert "eval.inception_weights" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(MissingWeightsError, match="eval.inception_weights: .* does not exist"):
        metrics_inception.resolve_inception_weights(tmp_path / "nope.pth", download=True)
    assert issubclass(MissingWeightsError, ConfigError)


def test_weights_in_the_hub_cache_are_found(tmp_path, monkeypatch, inception_weights):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    cached = metrics_inception.inception_cache_path()
    assert cached == tmp_path / "home" / "hub" / "checkpoints" / metrics_inception.INCEPTION_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(inception_weights.read_bytes())
    assert metrics_inception.resolve_inception_weights(None, download=False) == cached


def test_a_failed_download_leaves_nothing_and_names_the_fix(tmp_path):
    def no_network(url, dst, **kwargs):
        raise OSError("network is unreachable")

    with mock.patch.object(torch.hub, "download_url_to_file", no_network):
        with pytest.raises(MissingWeightsError, match="gansuite-fetch-weights"):
            metrics_inception.fetch_inception_weights(tmp_path / "w.pth")
    assert not (tmp_path / "w.pth").exists()


def test_inception_extractor_with_random_weights(inception_weights):
    extractor = metrics_inception.InceptionExtractor(inception_weights)
    assert extractor.weights_sha256 == metrics_inception.file_sha256(inception_weights)
    gray = torch.rand(3, 1, 28, 28) * 2 - 1
    out = extractor(gray)
    assert out["features"].shape == (3, 2048) and out["logits"].shape == (3, 1008)
    assert torch.isfinite(out["features"]).all()
    # Grayscale is the same plane in R, G and B.
    assert_close(extractor(gray.expand(-1, 3, -1, -1))["features"], out["features"], rtol=0, atol=0)


def test_a_foreign_weights_file_is_one_sentence(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(MissingWeightsError, match="not a weights file for torch-fidelity's Inception-v3"):
        metrics_inception.InceptionExtractor(path)


def test_compute_metrics_reports_only_what_was_asked():
    feats = torch.randn(40, 4, generator=torch.Generator().manual_seed(6))
    values = compute_metrics({"features": feats, "logits": feats}, _reference(feats), ["fid", "kid"])
    assert set(values) == {"fid", "kid", "kid_std"}
    assert all(math.isfinite(v) for v in values.values())


# ----------------------------------------------------------------------------- streaming statistics, precision
def test_streamed_moments_equal_numpy_float64_mean_and_cov():
    # float32 features far from zero against their spread (as post-ReLU pool features can be), fed in
    # uneven batches: the shifted float64 sums must keep np.cov's digits, not lose them to cancellation.
    g = torch.Generator().manual_seed(7)
    feats = (torch.randn(1003, 24, generator=g) * 0.01 + 1000).float()
    feats[:, 3] *= 100  # one wide dimension, so the covariance spans orders of magnitude
    moments = fidelity.FeatureMoments()
    for batch in feats.split(250):
        moments.update(batch)
    mu, sigma = moments.stats()
    f64 = feats.double().numpy()
    assert mu.dtype == sigma.dtype == np.float64 and moments.n == 1003
    assert_close(torch.from_numpy(mu), torch.from_numpy(f64.mean(axis=0)), rtol=1e-12, atol=0)
    assert_close(torch.from_numpy(sigma), torch.from_numpy(np.cov(f64, rowvar=False)), rtol=1e-9, atol=1e-12)
    assert np.array_equal(sigma, sigma.T)


def test_streamed_moments_need_two_rows():
    moments = fidelity.FeatureMoments()
    moments.update(torch.ones(1, 3))
    with pytest.raises(ValueError, match="2 rows"):
        moments.stats()


def test_fid_from_streamed_moments_equals_fid_from_the_features():
    g = torch.Generator().manual_seed(8)
    real = torch.rand(600, 64, generator=g)
    fake = torch.rand(500, 64, generator=g) ** 2 * 1.5 + 0.2
    ref = _reference(real)
    moments = fidelity.FeatureMoments()
    for batch in fake.split(64):
        moments.update(batch)
    old = compute_metrics({"features": fake, "logits": fake}, ref, ["fid"])["fid"]
    new = compute_metrics({}, ref, ["fid"], stats=moments.stats())["fid"]  # FID alone needs no features
    assert old > 1.0
    assert_close(new, old, rtol=1e-9, atol=0)


def test_extraction_precision_sets_and_restores_the_backend_flags():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul

    def flags():
        return cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic, matmul.allow_tf32

    before = flags()
    try:
        cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic, matmul.allow_tf32 = True, False, False, True
        with metrics_inception.extraction_precision("exact"):  # no TF32, autotuned among deterministic algorithms
            assert flags() == (False, True, True, False)
        assert flags() == (True, False, False, True)
        cudnn.allow_tf32 = False
        with metrics_inception.extraction_precision("tf32"):  # TF32 convolutions, as torch-fidelity under torch's defaults
            assert flags() == (True, True, False, False)
        assert flags() == (False, False, False, True)
        with pytest.raises(ConfigError, match="eval.precision: 'bf17' is unknown"):
            with metrics_inception.extraction_precision("bf17"):
                pass
        assert flags() == (False, False, False, True)
    finally:
        cudnn.allow_tf32, cudnn.benchmark, cudnn.deterministic, matmul.allow_tf32 = before


def test_reference_statistics_are_cached_with_the_features(tmp_path, monkeypatch):
    feats = torch.randn(60, 5, generator=torch.Generator().manual_seed(9))
    key = {"dataset": "d", "split": "train", "num_samples": 60, "extractor": "e", "extractor_sha256": "aa"}

    def compute():
        return {"features": feats, "logits": feats}, None

    first = load_or_compute_reference(key, compute, tmp_path, log=lambda m: None)
    path = fidelity.reference_cache_file(tmp_path, key)
    stored = torch.load(path, weights_only=True)
    assert_close(stored["sigma"], torch.from_numpy(first.sigma), rtol=0, atol=0)

    def no_statistics(features):
        raise AssertionError("the cached reference's statistics were recomputed")

    with monkeypatch.context() as m:
        m.setattr(fidelity, "gaussian_stats", no_statistics)
        m.setattr(fidelity, "covariance_factor", no_statistics)
        second = load_or_compute_reference(key, compute, tmp_path, log=lambda m: None)
    assert second.sha256 == first.sha256
    factor = torch.from_numpy(second.sigma_factor)
    assert_close(factor @ factor.T, torch.from_numpy(second.sigma), rtol=0, atol=1e-12)
    # A file written before the statistics were stored: the same reference (same hash), and it is upgraded.
    torch.save({"key": key, "features": feats, "logits": feats, "labels": None}, path)
    old = load_or_compute_reference(key, compute, tmp_path, log=lambda m: None)
    assert old.sha256 == first.sha256
    assert {"mu", "sigma", "sigma_factor"} <= set(torch.load(path, weights_only=True))


def test_feature_precision_is_part_of_the_protocol_and_absent_means_exact():
    a = {"feature_extractor": "inception-v3-compat", "num_generated": 10000}
    assert protocol_differences(a, dict(a, feature_precision="exact")) == []  # results written before the option
    assert protocol_differences(dict(a, feature_precision="exact"), dict(a, feature_precision="tf32")) == [
        "feature_precision: 'exact' vs 'tf32'"]
    assert protocol_differences(a, dict(a, feature_precision="tf32")) == ["feature_precision: 'exact' vs 'tf32'"]


def test_inception_extractor_records_its_precision(inception_weights):
    assert metrics_inception.InceptionExtractor(inception_weights).precision == "exact"
    assert metrics_inception.InceptionExtractor(inception_weights, precision="tf32").precision == "tf32"
    with pytest.raises(ConfigError, match="eval.precision"):
        metrics_inception.InceptionExtractor(inception_weights, precision="fp8")


@pytest.mark.parametrize("n,rtol", [(400, 1e-11), (40, 1e-7)])  # full rank; fewer samples than dimensions
def test_frechet_distance_from_the_symmetric_form_equals_torch_fidelitys(n, rtol):
    g = torch.Generator().manual_seed(10)
    mix = torch.randn(64, 64, generator=g, dtype=torch.float64) / 8
    real = (torch.randn(2000, 64, generator=g, dtype=torch.float64) @ mix).relu()
    fake = (torch.randn(n, 64, generator=g, dtype=torch.float64) @ mix + 0.1).relu()
    ref = _reference(real)
    mu, sigma = gaussian_stats(fake)
    expected = frechet_distance(mu, sigma, ref.mu, ref.sigma)  # torch-fidelity: numpy eigvals of Σ1 Σ2
    got = fidelity.frechet_distance_to(ref, torch.from_numpy(mu), torch.from_numpy(sigma))
    assert expected > 0.1
    assert_close(got, expected, rtol=rtol, atol=0)
