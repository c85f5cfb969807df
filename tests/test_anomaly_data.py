"""The anomaly-detection splits of every source, by hand-countable facts: no anomaly in training, validation
anomalies only from training-split images (or the validation folder), nothing of the test split in training
or selection; and one GANomaly step on an MVTec-style folder through the suite."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gansuite.data.anomaly import AnomalyCIFAR10, AnomalyFolder, AnomalyMNIST
from gansuite.data.digits import OfflineMNIST
from gansuite.errors import ConfigError

from .conftest import build_tiny, trains


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.flatten(1)}


def _assert_apart(*splits: torch.Tensor) -> None:
    rows = [_rows(x) for x in splits]
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            assert not a & b


# ----------------------------------------------------------------------------- MNIST, one class out
def test_mnist_validation_anomalies_are_training_split_digits_of_the_anomaly_class_and_training_is_unchanged():
    plain = AnomalyMNIST(anomaly_class=3, validation_size=90)
    data = AnomalyMNIST(anomaly_class=3, validation_size=90, validation_anomalies=20)
    train_x, train_y = data.train_split()
    val_x, val_y = data.validation()
    test_x, _ = data.heldout()
    # Asking for validation anomalies takes nothing from training.
    assert torch.equal(train_x, plain.train_split()[0]) and (train_y != 3).all()
    assert torch.bincount(val_y, minlength=10).tolist() == [10, 10, 10, 20, 10, 10, 10, 10, 10, 10]
    assert int(data.is_anomaly(val_y).sum()) == 20
    offline_x, offline_y = OfflineMNIST(resolution=28).train_split()  # the training split every offline run uses
    assert _rows(val_x[val_y == 3]) <= _rows(offline_x[offline_y == 3])
    assert torch.equal(val_x[val_y != 3], plain.validation()[0])  # the same normals, the anomalies after them
    _assert_apart(train_x, val_x, test_x)
    assert data.name == "mnist_anomaly3-28px-val90-valanomalies20" and plain.name == "mnist_anomaly3-28px-val90"
    assert data.protocol() == {"data": data.name, "anomaly_class": 3, "train": 3510, "validation": 110,
                               "validation_anomalies": 20, "test": 1000, "test_anomalies": 100}


def test_mnist_validation_anomalies_are_capped_by_the_400_training_digits_of_the_class():
    assert len(AnomalyMNIST(anomaly_class=5, validation_size=0, validation_anomalies=400).validation()[1]) == 400
    with pytest.raises(ConfigError, match=r"^data\.validation_anomalies: 401 is more than the 400 training images "
                                          r"of class 5 .*at most 400\.$"):
        AnomalyMNIST(anomaly_class=5, validation_anomalies=401).setup()


@pytest.mark.parametrize("value", [-1, True, 2.5])
def test_a_bad_validation_anomalies_value_is_one_sentence_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^data\.validation_anomalies: .* set data\.validation_anomalies=0\.$"):
        AnomalyMNIST(anomaly_class=0, validation_anomalies=value)


# ----------------------------------------------------------------------------- CIFAR-10, one class out
PER_BATCH = 2  # images per class in each of the five training batches: 10 per class, 100 in all
PER_CLASS_TEST = 3  # 30 test images


def _fake_cifar10(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A tiny CIFAR-10 in torchvision's pickle layout (distinct random images): (train x, y, test x, y), N x 3072."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(name: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.tile(np.arange(10), per_class)
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist()}, f)
        return data, labels

    train = [batch(f"data_batch_{i}", PER_BATCH) for i in range(1, 6)]
    test_x, test_y = batch("test_batch", PER_CLASS_TEST)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                     "truck"]}, f)
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), test_x, test_y


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """The fake under tmp_path/cifar10; torchvision reads it as it reads the real one, with its MD5 checks (of
    the real files' sums) reduced to "the file is there"."""
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    root = tmp_path / "cifar10"
    return root, _fake_cifar10(root)


def _signed(rows: np.ndarray) -> torch.Tensor:
    """Pickled rows (channel planes) as the module's images: 3 x 32 x 32 in [-1, 1]."""
    return torch.from_numpy(rows).reshape(-1, 3, 32, 32).float().div(127.5).sub(1)


def test_cifar10_trains_on_the_other_nine_classes_and_tests_on_the_whole_test_split(fake_cifar10):
    root, (train_rows, train_labels, test_rows, _) = fake_cifar10
    data = AnomalyCIFAR10(root=str(root), download=False, anomaly_class=2, validation_size=9, validation_anomalies=4)
    train_x, train_y = data.train_split()
    val_x, val_y = data.validation()
    test_x, test_y = data.heldout()
    assert len(train_y) == 90 - 9 and (train_y != 2).all()  # 100 training images less the 10 birds, less validation
    assert torch.bincount(val_y, minlength=10).tolist() == [1, 1, 4, 1, 1, 1, 1, 1, 1, 1]
    assert len(test_y) == 30 and int(data.is_anomaly(test_y).sum()) == 3
    birds, test = _rows(_signed(train_rows[train_labels == 2])), _rows(_signed(test_rows))
    assert _rows(val_x[val_y == 2]) <= birds and not _rows(val_x) & test  # selection: training-split images only
    assert _rows(test_x) == test
    _assert_apart(train_x, val_x, test_x)
    assert data.protocol() == {"data": "cifar10_anomaly2-32px-val9-valanomalies4", "anomaly_class": 2, "train": 81,
                               "validation": 13, "validation_anomalies": 4, "test": 30, "test_anomalies": 3}
    with pytest.raises(ConfigError, match=r"data\.validation_anomalies: 11 is more than the 10 .*at most 10\."):
        AnomalyCIFAR10(root=str(root), download=False, anomaly_class=2, validation_size=9,
                       validation_anomalies=11).setup()


def test_cifar10_anomaly_config_builds_with_ganomaly(tmp_path, fake_cifar10):
    root, _ = fake_cifar10
    _, datamodule, _ = build_tiny(tmp_path / "run", "model=ganomaly", "data=cifar10_anomaly", f"data.root={root}",
                                  "data.download=false", "data.anomaly_class=9", "data.validation_size=18")
    assert datamodule.shape == (3, 32, 32)
    assert datamodule.protocol()["train"] == 72 and datamodule.protocol()["test_anomalies"] == 3


def test_cifar10_missing_without_download_is_one_sentence_naming_data_root(tmp_path):
    data = AnomalyCIFAR10(root=str(tmp_path / "nowhere"), download=False, anomaly_class=0)
    with pytest.raises(ConfigError, match=r"^data\.root: no CIFAR10 under .*data\.download=true"):
        data.setup()


@pytest.mark.parametrize("options", [{"anomaly_class": 10}, {"anomaly_class": 0, "validation_size": 22501}])
def test_bad_cifar10_split_options_are_one_sentence_naming_the_key(options):
    with pytest.raises(ConfigError, match=r"^data\.(anomaly_class|validation_size): "):
        AnomalyCIFAR10(root="unused", **options)


# ----------------------------------------------------------------------------- an MVTec-style folder
# (folder, images): 6 normal training images, 2 + 2 + 1 test images, 2 + 1 labelled validation anomalies.
LAYOUT = {"train/good": 6, "test/good": 2, "test/crack": 2, "test/scratch": 1, "validation/crack": 2,
          "validation/scratch": 1}


def _mvtec(root: Path, layout: dict[str, int] = LAYOUT, size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / folder / f"{i:03d}.png")
    return root


def _images(root: Path, *folders: str, resolution: int = 8) -> set[bytes]:
    """The folders' images read the way the module reads them (one set of rows)."""
    from gansuite.data.folders import read_resized

    files = [p for f in folders for p in sorted((root / f).glob("*.png"))]
    return _rows(torch.stack([read_resized(p, (resolution, resolution), 3) for p in files]))


def test_folder_splits_follow_the_mvtec_layout(tmp_path):
    root = _mvtec(tmp_path / "bottle")
    data = AnomalyFolder(root=str(root), resolution=8, validation_size=2, validation_anomalies=2)
    train_x, train_y = data.train_split()
    val_x, val_y = data.validation()
    test_x, test_y = data.heldout()
    assert len(train_y) == 4 and (train_y == 0).all()  # 6 good less 2 for validation
    assert sorted(val_y.tolist()) == [0, 0, 1, 2]  # 2 good, then one crack and one scratch (balanced over types)
    assert sorted(test_y.tolist()) == [0, 0, 1, 1, 2] and data.is_anomaly(test_y).tolist().count(1) == 3
    assert test_y[:3].tolist() == [0, 1, 2]  # the test split interleaves the kinds, so heldout(3) shows each
    assert _rows(train_x) | _rows(val_x[val_y == 0]) == _images(root, "train/good")
    assert _rows(val_x[val_y != 0]) <= _images(root, "validation/crack", "validation/scratch")
    assert _rows(test_x) == _images(root, "test/good", "test/crack", "test/scratch")
    _assert_apart(train_x, val_x, test_x)
    assert data.shape == (3, 8, 8) and data.num_classes is None
    assert data.protocol() == {"data": data.name, "defects": ["crack", "scratch"], "train": 4, "validation": 4,
                               "validation_anomalies": 2, "test": 5, "test_anomalies": 3}
    assert data.name.endswith("bottle-8px-3ch-val2-valanomalies2")


def test_folder_without_validation_anomalies_never_reads_the_validation_folder(tmp_path):
    root = _mvtec(tmp_path / "bottle")
    (root / "validation" / "not_a_defect_of_test").mkdir()  # would be refused if it were read
    data = AnomalyFolder(root=str(root), resolution=8, channels=1, validation_size=1)
    val_x, val_y = data.validation()
    assert val_y.tolist() == [0] and val_x.shape == (1, 1, 8, 8) and len(data.train_split()[1]) == 5
    assert "validation_anomalies" not in data.protocol()


def _copy_test_image(root: Path, into: str) -> None:
    shutil.copy(root / "test" / "crack" / "000.png", root / into / "copy.png")


@pytest.mark.parametrize("change, options, says", [
    (lambda root: shutil.rmtree(root), {}, r"data\.root: .*bottle does not exist; point data\.root at a folder of "
                                           r"images laid out as train/good/"),
    (lambda root: shutil.rmtree(root / "train"), {}, r"data\.root: .*bottle has no train/ folder; lay data\.root out "
                                                     r"as train/good/"),
    (lambda root: (shutil.rmtree(root / "test" / "crack"), shutil.rmtree(root / "test" / "scratch")), {},
     r"data\.root: .*test needs good/ and at least one defect folder"),
    (lambda root: shutil.copytree(root / "validation" / "crack", root / "train" / "crack"), {},
     r"data\.root: .*train must hold just the folder good/ \(training sees normal images only; found: crack\)"),
    (lambda root: (root / "test" / "empty").mkdir(), {}, r"data\.root: .*empty has no images"),
    (lambda root: shutil.copy(root / "test" / "good" / "000.png", root / "test" / "loose.png"), {},
     r"data\.root: .*loose\.png is not in a class folder"),
    (lambda root: shutil.rmtree(root / "validation"), {"validation_anomalies": 1},
     r"data\.validation_anomalies: 1 asks for labelled anomalies but .*validation does not exist"),
    (lambda root: (root / "validation" / "dent").mkdir() or shutil.copy(root / "test" / "good" / "000.png",
                                                                        root / "validation" / "dent"),
     {"validation_anomalies": 1}, r"data\.root: .*validation has dent, which is not a defect type of test/ "
                                  r"\(crack, scratch\)"),
    (lambda root: None, {"validation_anomalies": 4},
     r"data\.validation_anomalies: 4 is more than the 3 images under .*at most 3\.$"),
    (lambda root: None, {"validation_size": 6}, r"data\.validation_size: 6 leaves none of the 6 normal training "
                                                r"images for training; set data\.validation_size below 6\.$"),
    (lambda root: _copy_test_image(root, "validation/crack"), {"validation_anomalies": 1},
     r"data\.root: .*validation/crack/copy\.png is the same image as the test image .*test/crack/000\.png"),
    (lambda root: _copy_test_image(root, "train/good"), {},
     r"data\.root: .*train/good/copy\.png is the same image as the test image"),
])
def test_a_folder_that_breaks_the_protocol_is_one_sentence_naming_the_key(tmp_path, change, options, says):
    root = _mvtec(tmp_path / "bottle")
    change(root)
    data = AnomalyFolder(root=str(root), resolution=8, validation_size=options.pop("validation_size", 1), **options)
    with pytest.raises(ConfigError, match=says) as error:
        data.setup()
    assert "\n" not in str(error.value)


def test_ganomaly_trains_a_step_on_a_folder_and_reports_test_and_selection_numbers(tmp_path):
    root = _mvtec(tmp_path / "bottle", size=40)
    result = trains(tmp_path / "run", "model=ganomaly", "data=anomaly_folder", f"data.root={root}",
                    "data.resolution=32", "data.batch_size=4", "data.validation_size=2", "data.validation_anomalies=2",
                    "callbacks=default", "callbacks.anomaly_metrics.every_n_steps=1",
                    "callbacks.anomaly_metrics.num_examples=2", "callbacks.progress_bar=null", steps=1)
    assert result["module"].examples.abs().sum() > 0
    record = json.loads((tmp_path / "run" / "eval" / "anomaly_step_000001.json").read_text())
    assert record["protocol"]["defects"] == ["crack", "scratch"] and record["protocol"]["test"] == 5
    assert record["protocol"]["test_anomalies"] == 3 and record["protocol"]["validation_anomalies"] == 2
    assert record["selection"]["normals"] == 2 and record["selection"]["anomalies"] == 2
